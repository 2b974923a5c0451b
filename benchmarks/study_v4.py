"""Study v4 on an H200: where a warm restart's time goes, and the start method of vLLM's engine core.

The product's own engine command (`engine.build_command(cfg, target="local-gpu")`, `fast`, gpt-oss-20b,
dummy weights in /root/model) on one cache root, so every start after the first is a warm restart:

    PYTHONPATH=src python3 benchmarks/study_v4.py sample  --arm spawn --cache diag --out /root/res
    PYTHONPATH=src python3 benchmarks/study_v4.py restart --arms spawn fork product --repeats 2 --cache fast-lock
    PYTHONPATH=src python3 benchmarks/study_v4.py spec --tokens 0 3 5 7 --cache fast-lock
    PYTHONPATH=src python3 benchmarks/study_v4.py cold --boots eager fast --repeats 3 --cache v6

`restart` alternates the arms (A B A B ...), each a warm restart timed to /health with the phases of its
log (study_v3.PHASES), then 20 requests at concurrency 1 (`vllm bench serve`, 1,024 in / 256 out) for
TPOT. Every arm runs the product's engine command and environment (`engine.GPU_ENGINE_ENV`) but for what
it names; the first three keep humming's background builds (`HUMMING_DISABLE_PARALLEL_BUILD=0`), as in
study v5, where the product's environment did not yet turn them off. Arms differ in one thing each:

- spawn: `VLLM_WORKER_MULTIPROC_METHOD=spawn`, what `vllm serve` sets when the variable is unset;
- fork: `VLLM_WORKER_MULTIPROC_METHOD=fork`: the engine core is forked from the API server, so it does not
  import vLLM and torch a second time;
- fork-direct: fork, and `python -m vllm.entrypoints.openai.api_server` instead of the `vllm serve` CLI
  (which imports every subcommand: bench, run-batch, ...);
- product: the environment the product gives every GPU engine (`lifecycle.engine_env`): fork, humming's
  background builds off, and the fixes every engine process runs at start-up first on PYTHONPATH
  (`server/_vllm_site`: vLLM 0.26's CuTe-DSL router-GEMM warm-up for DeepSeek-family shapes, TileLang in
  the JIT monitor and the Jinja chat-template warm-up skipped).
- product-bg-builds: the product with humming's background builds on (`HUMMING_DISABLE_PARALLEL_BUILD=0`,
  what vLLM does without the product's environment);
- product-noprof: the product without vLLM's CUDA-graph memory profiling (`study_site/`), which
  captures throw-away graphs before the KV cache is sized.

Every arm's engine imports only what the container's lock has, when /root/hidden_modules.txt exists (the
`lock` step of run_v4.sh writes it): the host's other packages are hidden (`study_site/`; studies v4 and v5
ran with them visible).

`cold` fills one cache as `deploy` does before the first container (the product's MoE kernels, vLLM's model
inspection), then starts the product's engine on a fresh copy of it per run, boot modes alternating (A B,
B A, ...): the first container after a deploy, repeated. Each run also lists what the start wrote outside
its caches (under /root and /tmp): what a container loses.

Every cache the container keeps on its volume (engine.COMPILE_CACHE_ENV) lives under /root/vc/<cache> here.

`spec` starts the engine once per draft-token count K (0: no drafter) with `speculative = eagle3` and a
stand-in drafter of the catalog's shape (dummy weights, so nothing is ever accepted: each step yields one
token, and TPOT is the cost of one speculative step -- the verify pass of K + 1 tokens per request plus K
draft passes), then measures TPOT at concurrency 1 and at max_inputs.

`sample` starts one server with the start-up sampler (benchmarks/startup_sampler) on every Python process
of the tree and keeps its per-process samples in OUT/sample_<arm>/samples/; `summarise_samples.py`
prints where each process spent its start-up. A first start on a cache is cold.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from study_v3 import (
    BASE_ENV,
    Server,
    bench,
    figures,
    phases,
    port_free,
    run_bench,
    wait_gpu_free,
)

from gpt_oss_modal.core import catalog, engine
from gpt_oss_modal.core.config import DeployConfig
from gpt_oss_modal.server import lifecycle, model_info, precompile

HERE = Path(__file__).resolve().parent
MODEL = "/root/model"
DRAFTER = "/root/drafter"  # a config.json of the catalog drafter's shape (dummy weights)
BG_BUILDS = {"HUMMING_DISABLE_PARALLEL_BUILD": "0"}  # vLLM's default, before the product's environment
ARMS = {  # name -> (environment, API server module instead of the CLI, the product's PYTHONPATH)
    "spawn": ({"VLLM_WORKER_MULTIPROC_METHOD": "spawn", **BG_BUILDS}, False, False),
    "fork": ({"VLLM_WORKER_MULTIPROC_METHOD": "fork", **BG_BUILDS}, False, False),
    "fork-direct": ({"VLLM_WORKER_MULTIPROC_METHOD": "fork", **BG_BUILDS}, True, False),
    "product": ({}, False, True),
    "product-bg-builds": (BG_BUILDS, False, True),
    "product-noprof": ({"VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS": "0"}, False, True),
}
# Made by the `lock` step of run_v4.sh (study_site/hidden_modules.py): the host's packages beyond the lock.
HIDDEN_MODULES = Path("/root/hidden_modules.txt")


def cache_env(name: str) -> dict[str, str]:
    """Every compile cache the container keeps on its vllm-cache volume (engine.COMPILE_CACHE_ENV), under
    /root/vc/<name> instead: a cold start is cold for all of them, as a new volume would be."""
    root = f"/root/vc/{name}"
    return {k: v.replace(engine.VLLM_CACHE_DIR, root, 1) for k, v in engine.COMPILE_CACHE_ENV.items()}


# Where a start may write besides its caches: what a container would lose when it stops (and the next one
# make again). Not counted: the caches, results, transfers, models, installed packages.
WRITES_UNDER = (Path("/root"), Path("/tmp"))
NOT_WRITES = (
    "/root/vc",
    "/root/res",
    "/root/st",
    "/root/lock",
    "/root/model",
    "/root/drafter",
    "/root/took_",
    "/root/pgids",  # run_v4.sh's list of server process groups
)


def writes_since(t0: float) -> dict[str, list[int]]:
    """Files modified since t0 under WRITES_UNDER, outside NOT_WRITES: {path to the third level: [files, bytes]}."""
    found: dict[str, list[int]] = {}
    for top in WRITES_UNDER:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if not f"{dirpath}/{d}".startswith(NOT_WRITES)]
            for f in filenames:
                path = os.path.join(dirpath, f)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if st.st_mtime >= t0 and not path.startswith(NOT_WRITES):
                    key = "/".join(path.split("/")[:4])
                    entry = found.setdefault(key, [0, 0])
                    entry[0] += 1
                    entry[1] += st.st_size
    return dict(sorted(found.items(), key=lambda kv: -kv[1][1]))


def drafter_config(d: catalog.Drafter, model: catalog.Model) -> dict:
    """A vLLM EAGLE3 head of the drafter's shape (its weights are vLLM's dummy ones)."""
    return {
        "architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama", "torch_dtype": "bfloat16",
        "hidden_size": d.hidden_size, "intermediate_size": d.intermediate_size,
        "num_attention_heads": d.num_attention_heads, "num_key_value_heads": d.num_kv_heads,
        "head_dim": d.head_dim, "num_hidden_layers": d.num_layers, "vocab_size": 201088,
        "draft_vocab_size": d.draft_vocab, "max_position_embeddings": model.max_context,
        "rms_norm_eps": 1e-5, "rope_theta": 150000.0, "hidden_act": "silu", "tie_word_embeddings": False,
    }  # fmt: skip


def deploy_config(port: int, k: int = 0, boot: str = "fast") -> DeployConfig:
    return DeployConfig(
        model="20b", gpu="H200", boot=boot, max_inputs=50, max_model_len=32768, port=port,
        extra_vllm_args=["--load-format", "dummy"],
        speculative="eagle3" if k else "off", speculative_tokens=k or 7,
    )  # fmt: skip


def command(
    port: int, arm: str, cache: str, k: int = 0, boot: str = "fast"
) -> tuple[list[str], dict[str, str]]:
    cfg = deploy_config(port, k, boot)
    cmd = engine.build_command(cfg, target="local-gpu", model_path=MODEL)
    arm_env, direct, product = ARMS[arm]
    argv = list(cmd.argv)
    if k:  # the drafter from DRAFTER, which stands in for the pinned repo (no downloads on the GPU host)
        i = argv.index("--speculative-config") + 1
        spec = json.loads(argv[i]) | {"model": DRAFTER}
        spec.pop("revision", None)
        argv[i] = json.dumps(spec)
        Path(DRAFTER).mkdir(parents=True, exist_ok=True)
        model = cfg.model_info
        (Path(DRAFTER) / "config.json").write_text(json.dumps(drafter_config(model.drafter, model), indent=1))
    if direct:
        assert argv[:2] == ["vllm", "serve"], argv[:3]
        argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", *argv[2:]]
    src = str(HERE.parent / "src")
    # study_site's sitecustomize in every arm: after the product's, which runs the next one on the path
    site = f"{lifecycle.VLLM_SITE_DIR}:{HERE / 'study_site'}" if product else str(HERE / "study_site")
    hide = {"STUDY_HIDE_MODULES": str(HIDDEN_MODULES)} if HIDDEN_MODULES.exists() else {}
    env = {**BASE_ENV, **cmd.env, **arm_env, **hide, "PYTHONPATH": f"{site}:{src}", **cache_env(cache)}
    return argv, env


def one_start(
    d: Path,
    arm: str,
    cache: str,
    port: int,
    deadline_at: float,
    *,
    c1: bool,
    extra_env=None,
    k: int = 0,
    c_max: bool = False,
    boot: str = "fast",
    census: bool = False,
) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    assert port_free(port), port
    argv, env = command(port, arm, cache, k, boot)
    env |= extra_env or {}
    res = {"arm": arm, "boot": boot, "cache": cache, "cache_was_warm": Path(f"/root/vc/{cache}").exists(),
           "gpu_free_wait_s": wait_gpu_free(), "argv": argv, "env": env}  # fmt: skip
    t_launch = time.time()
    print(f"=== {time.strftime('%T')} {d.name}: {arm}", flush=True)
    srv = Server(argv, env, d / "server.log", port)
    try:
        h = srv.wait_health(max(30, deadline_at - time.monotonic() - (45 if c1 else 10)))
        res["health_s"] = round(h, 2) if h else None
        res["engine_pid"] = srv.engine_pid()
        res["children_first_seen_s"] = srv.child_seen
        if h and c1:
            cmd = bench(port, d, "c1", concurrency=1, prompts=20 if not k else 10, out_len=256)
            res["c1"] = run_bench(cmd, d, "c1", {})
        if h and c_max:
            cmd = bench(port, d, "c50", concurrency=50, prompts=100, out_len=256, seed=1)
            res["c50"] = run_bench(cmd, d, "c50", {})
    finally:
        srv.stop()
    if census:
        res["written_outside_caches"] = writes_since(t_launch)
    res["phases"] = phases(srv) | ({"health_200": res["health_s"]} if res.get("health_s") else {})
    res |= figures(srv.text())
    res["start_method_lines"] = [ln for _, ln in srv.lines if "spawn" in ln or "fork" in ln][:10]
    (d / "result.json").write_text(json.dumps(res, indent=1))
    print(
        f"  {arm} ({boot}): health {res.get('health_s')} c1 {res.get('c1')} c50 {res.get('c50')}", flush=True
    )
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


def spec(a) -> None:
    """One start per draft-token count, each measured at one stream and at max_inputs."""
    d0 = a.out / f"spec_{a.cache}"
    summary = {"runs": []}
    for k in a.tokens:
        if time.monotonic() + 120 > a.deadline_at:
            print(f"skipped k={k}: deadline", flush=True)
            continue
        res = one_start(d0 / f"k{k}", "product", a.cache, 8400 + k, a.deadline_at, c1=True, c_max=True, k=k)
        summary["runs"].append({"k": k} | {key: res.get(key) for key in ("health_s", "c1", "c50")})
        (d0 / "summary.json").write_text(json.dumps(summary, indent=1))


def cold(a) -> None:
    """Cold first starts of the product's engine, boot modes in alternating order (A B, B A, ...), each on a
    fresh copy of a cache that holds only what `deploy` fills before the first container: the MoE priming
    (the GPU function) and vLLM's model inspection (beside the weights download). Timed to /health."""
    seed = Path(f"/root/vc/prime-{a.cache}")
    if not seed.exists():
        t = time.monotonic()
        inspecting = model_info.start(command(8500, "product", seed.name)[1])
        kernels = precompile.moe_kernels_for(deploy_config(8500))
        lines: list[str] = []
        primed = precompile.prime(kernels, {**os.environ, **cache_env(seed.name)}, lines.append)
        inspected = model_info.finish(inspecting, lines.append)
        print(
            f"  primed {primed}, inspected {inspected} in {time.monotonic() - t:.1f} s: {lines[-2:]}",
            flush=True,
        )
    d0 = a.out / f"cold_{a.cache}"
    summary = {"runs": []}
    order = [b for i in range(a.repeats) for b in (a.boots if i % 2 == 0 else a.boots[::-1])]
    for i, boot in enumerate(order):
        if time.monotonic() + 150 > a.deadline_at:
            print(f"skipped {boot} #{i}: deadline", flush=True)
            continue
        cache = Path(f"/root/vc/cold-{i}-{boot}")
        shutil.rmtree(cache, ignore_errors=True)
        shutil.copytree(seed, cache, symlinks=True)
        res = one_start(
            d0 / f"{i:02d}_{boot}",
            "product",
            cache.name,
            8500 + i,
            a.deadline_at,
            c1=False,
            boot=boot,
            census=True,
        )
        summary["runs"].append(
            {k: res.get(k) for k in ("boot", "health_s", "phases", "written_outside_caches")}
        )
        (d0 / "summary.json").write_text(json.dumps(summary, indent=1))
        shutil.rmtree(cache, ignore_errors=True)


def sample(a) -> None:
    d = a.out / f"sample_{a.arm}_{a.cache}"
    samples = d / "samples"
    extra = {
        "STARTUP_SAMPLES": str(samples),
        "STARTUP_SAMPLE_S": "150",
    }
    # the sampler's sitecustomize first; it runs the arm's own after it
    extra["PYTHONPATH"] = f"{HERE / 'startup_sampler'}:{command(8390, a.arm, a.cache)[1]['PYTHONPATH']}"
    one_start(d, a.arm, a.cache, 8390, a.deadline_at, c1=False, extra_env=extra)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("series", choices=["restart", "sample", "spec", "cold"])
    ap.add_argument("--boots", nargs="+", default=["eager", "fast"], help="cold: the boot modes, alternating")
    ap.add_argument(
        "--tokens", nargs="+", type=int, default=[0, 3, 5, 7], help="spec: draft tokens (0: none)"
    )
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
    {"restart": restart, "sample": sample, "spec": spec, "cold": cold}[a.series](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
