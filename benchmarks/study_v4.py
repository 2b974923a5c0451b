"""Study v4 on an H200: where a warm restart's time goes, and the start method of vLLM's engine core.

The product's own engine command (`engine.build_command(cfg, target="local-gpu")`, `fast`, gpt-oss-20b,
dummy weights in /root/model) on one cache root, so every start after the first is a warm restart:

    PYTHONPATH=src python3 benchmarks/study_v4.py sample  --arm spawn --cache diag --out /root/res
    PYTHONPATH=src python3 benchmarks/study_v4.py restart --arms spawn fork --repeats 3 --cache fast-lock

`restart` alternates the arms (A B A B ...), each a warm restart timed to /health with the phases of its
log (study_v3.PHASES), then 20 requests at concurrency 1 (`vllm bench serve`, 1,024 in / 256 out) for
TPOT. Arms differ in one thing each:

- spawn: `VLLM_WORKER_MULTIPROC_METHOD=spawn`, what `vllm serve` sets when the variable is unset;
- fork: `VLLM_WORKER_MULTIPROC_METHOD=fork`: the engine core is forked from the API server, so it does not
  import vLLM and torch a second time;
- fork-direct: fork, and `python -m vllm.entrypoints.openai.api_server` instead of the `vllm serve` CLI
  (which imports every subcommand: bench, run-batch, ...);
- fork-noll: fork, without vLLM 0.26's CuTe-DSL router-GEMM warm-up for DeepSeek-family shapes
  (`no_router_gemm_warmup/`; later vLLM releases take the shapes from the model, none for gpt-oss).

`sample` starts one server with the start-up sampler (benchmarks/startup_sampler) on every Python process
of the tree and keeps its per-process samples in OUT/sample_<arm>/samples/; `summarise_samples.py`
prints where each process spent its start-up. A first start on a cache is cold.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from study_v3 import (
    BASE_ENV,
    Server,
    bench,
    cache_env,
    figures,
    phases,
    port_free,
    run_bench,
    wait_gpu_free,
)

from gpt_oss_modal.core import engine
from gpt_oss_modal.core.config import DeployConfig

HERE = Path(__file__).resolve().parent
MODEL = "/root/model"
NO_ROUTER_WARMUP = HERE / "no_router_gemm_warmup"  # its sitecustomize empties vLLM 0.26's list of shapes
ARMS = {  # name -> (environment, API server module instead of the CLI, folders before src on PYTHONPATH)
    "spawn": ({"VLLM_WORKER_MULTIPROC_METHOD": "spawn"}, False, ()),
    "fork": ({"VLLM_WORKER_MULTIPROC_METHOD": "fork"}, False, ()),
    "fork-direct": ({"VLLM_WORKER_MULTIPROC_METHOD": "fork"}, True, ()),
    "fork-noll": ({"VLLM_WORKER_MULTIPROC_METHOD": "fork"}, False, (NO_ROUTER_WARMUP,)),
}


def command(port: int, arm: str, cache: str) -> tuple[list[str], dict[str, str]]:
    cfg = DeployConfig(
        model="20b", gpu="H200", boot="fast", max_inputs=50, max_model_len=32768, port=port,
        extra_vllm_args=["--load-format", "dummy"],
    )  # fmt: skip
    cmd = engine.build_command(cfg, target="local-gpu", model_path=MODEL)
    arm_env, direct, path = ARMS[arm]
    argv = list(cmd.argv)
    if direct:
        assert argv[:2] == ["vllm", "serve"], argv[:3]
        argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", *argv[2:]]
    pythonpath = ":".join(map(str, [*path, HERE.parent / "src"]))
    return argv, {**BASE_ENV, **cmd.env, **arm_env, "PYTHONPATH": pythonpath, **cache_env(cache)}


def one_start(
    d: Path, arm: str, cache: str, port: int, deadline_at: float, *, c1: bool, extra_env=None
) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    assert port_free(port), port
    argv, env = command(port, arm, cache)
    env |= extra_env or {}
    res = {"arm": arm, "cache": cache, "cache_was_warm": Path(f"/root/vc/{cache}").exists(),
           "gpu_free_wait_s": wait_gpu_free(), "argv": argv, "env": env}  # fmt: skip
    print(f"=== {time.strftime('%T')} {d.name}: {arm}", flush=True)
    srv = Server(argv, env, d / "server.log", port)
    try:
        h = srv.wait_health(max(30, deadline_at - time.monotonic() - (45 if c1 else 10)))
        res["health_s"] = round(h, 2) if h else None
        res["engine_pid"] = srv.engine_pid()
        res["children_first_seen_s"] = srv.child_seen
        if h and c1:
            cmd = bench(port, d, "c1", concurrency=1, prompts=20, out_len=256)
            res["c1"] = run_bench(cmd, d, "c1", {})
    finally:
        srv.stop()
    res["phases"] = phases(srv) | ({"health_200": res["health_s"]} if res.get("health_s") else {})
    res |= figures(srv.text())
    res["start_method_lines"] = [ln for _, ln in srv.lines if "spawn" in ln or "fork" in ln][:10]
    (d / "result.json").write_text(json.dumps(res, indent=1))
    print(f"  {arm}: health {res.get('health_s')} c1 {res.get('c1')}", flush=True)
    return res


def restart(a) -> None:
    d0 = a.out / f"restart_{a.cache}"
    d0.mkdir(parents=True, exist_ok=True)
    summary_path = d0 / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {"runs": []}
    done = len(summary["runs"])
    if not Path(f"/root/vc/{a.cache}").exists():
        print(f"cache {a.cache} is cold: one unrecorded start first", flush=True)
        one_start(d0 / "seed", a.arms[0], a.cache, 8300, a.deadline_at, c1=False)
    order = [arm for _ in range(a.repeats) for arm in a.arms]
    for i, arm in enumerate(order):
        if i < done:
            continue
        if time.monotonic() + 110 > a.deadline_at:
            print(f"skipped {arm} #{i}: deadline", flush=True)
            continue
        res = one_start(d0 / f"{i:02d}_{arm}", arm, a.cache, 8310 + i, a.deadline_at, c1=True)
        summary["runs"].append(
            {k: res.get(k) for k in ("arm", "health_s", "phases", "c1", "start_method_lines")}
        )
        summary_path.write_text(json.dumps(summary, indent=1))


def sample(a) -> None:
    d = a.out / f"sample_{a.arm}_{a.cache}"
    samples = d / "samples"
    extra = {
        "STARTUP_SAMPLES": str(samples),
        "STARTUP_SAMPLE_S": "150",
        # the sampler's sitecustomize first (an arm's own sitecustomize would not load beside it)
        "PYTHONPATH": f"{HERE / 'startup_sampler'}:{HERE.parent / 'src'}",
    }
    one_start(d, a.arm, a.cache, 8390, a.deadline_at, c1=False, extra_env=extra)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("series", choices=["restart", "sample"])
    ap.add_argument("--arms", nargs="+", default=["spawn", "fork"], choices=sorted(ARMS))
    ap.add_argument("--arm", default="spawn", choices=sorted(ARMS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache", default="fast-lock")
    ap.add_argument("--out", type=Path, default=Path("/root/res"))
    ap.add_argument(
        "--deadline", type=float, default=540, help="seconds from now by which every server is gone"
    )
    a = ap.parse_args()
    a.deadline_at = time.monotonic() + a.deadline
    a.out.mkdir(parents=True, exist_ok=True)
    (restart if a.series == "restart" else sample)(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
