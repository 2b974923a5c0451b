"""The warm-up that stands between "healthy" and "ready" -- in every Modal container, and in `serve --local`
on a GPU -- run against the real local engine (the shared tiny CPU server)."""

from __future__ import annotations

import pytest

from gpt_oss_modal.server import warmup

pytestmark = pytest.mark.e2e


def test_the_warm_up_runs_its_ladder_and_burst_on_the_real_engine(server) -> None:
    result = server.warm_up(600)
    assert result.finished and not result.errors, result.summary()
    assert result.burst_ok == result.burst == server.cfg.max_inputs
    # The server's own count: every prompt of the ladder (64 ... half the context) really was that long.
    ladder = warmup.prefill_ladder(server.command.max_model_len // 2)
    assert result.prefill_tokens >= sum(ladder)
    # And the engine serves as before.
    assert server.running
