"""Boot modes v2 on a GPU host: start-up, first burst and steady throughput per mode, from the product's
own engine command (gpt_oss_modal.core.engine.build_command) and warm-up (gpt_oss_modal.server.lifecycle).

    PYTHONPATH=src python3 benchmarks/study_v2.py --gpu 0 --out /root/res eager fast
    PYTHONPATH=src python3 benchmarks/study_v2.py --gpu 1 --out /root/res fast-nowarm compiled

Each RUN (see RUNS) starts `vllm serve` for gpt-oss-20b (or 120b) with `--load-format dummy` and the real
config.json in /root/model (/root/model120), with its own VLLM/Triton/Inductor cache root under /root/vc/,
so a first start of a cache is cold and a later one with the same cache is a warm restart. It times the
start-up to /health, runs the product's warm-up when the run asks for it, then measures:

* the first burst: max_inputs concurrent 1,024-token prompts (64 output tokens), then the same burst again
  (steady state) -- p50/p90/p99 TTFT of both;
* fixed-duration levels (`gpt-oss-modal bench --duration`): random 1,024 in / 512 out, ignore-eos, at the
  concurrency levels of the run, some repeated (the spread is reported);
* vLLM's own memory figures from its log (weights, KV cache GiB and tokens, CUDA-graph pool);
* the kernels compiled after vLLM's own warm-up (its JIT monitor, verbose), counted per phase: during our
  warm-up, the first burst, the second burst, the levels.

Everything lands in OUT/<run>/ (server.log, bench JSON, result.json). A server is always stopped (process
group) before the script returns, also when the deadline (--deadline seconds from the start) comes first:
a server left running would answer the next run's health check.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gpt_oss_modal.core import engine
from gpt_oss_modal.core.config import DeployConfig
from gpt_oss_modal.server import lifecycle, precompile, warmup

MAX_INPUTS = 50  # the default of the original gpt_oss_inference.py
CONTEXT = 32768
H100_TOTAL_MIB = 81559  # what the CUDA driver reports for an H100 80GB
H200_TOTAL_MIB = 143771  # ... and for an H200


LEVEL_S = 60  # long enough for a stable high-concurrency figure; each repeated (the spread is reported)
# vLLM logs every Triton/CuTeDSL kernel compiled after its own warm-up: what our warm-up and bursts compile.
STUDY_ARGS = ["--load-format", "dummy", "--jit-monitor-verbose"]
# Levels of the long runs: max_inputs three times, then 2 x max_inputs, then one client (shorter: stable).
LONG_LEVELS = [(MAX_INPUTS, 3, LEVEL_S), (2 * MAX_INPUTS, 1, LEVEL_S), (1, 1, 30)]


@dataclass
class Run:
    boot: str
    cache: str
    warm_up: bool
    levels: list[tuple] = field(default_factory=list)  # (concurrency, repeats[, seconds])
    model: str = "20b"
    util: float = 0.9
    bursts: bool = True
    extra: tuple[str, ...] = ()  # more vLLM flags
    warm: dict = field(default_factory=dict)  # warmup.warm_up keyword arguments
    seed_from: str | None = None  # start from a copy of this run's caches (warm: flags that add no kernels)
    precompile: int = (
        0  # workers of gpt_oss_modal.server.precompile, run after /health and before the warm-up
    )
    prime: bool = (
        False  # the product's kernel priming (precompile.prime) before the engine starts, as on Modal
    )


RUNS = {
    "eager": Run("eager", "eager", warm_up=False, levels=[(1, 1), (MAX_INPUTS, 1)]),
    "fast": Run("fast", "fast", warm_up=True, levels=[(1, 2), (MAX_INPUTS, 2), (2 * MAX_INPUTS, 1)]),
    "fast-nowarm": Run("fast", "fast-nowarm", warm_up=False),
    "fast-burst": Run("fast", "fast-burst", warm_up=True),
    "fast-levels": Run("fast", "fast-levels", warm_up=True, levels=[(MAX_INPUTS, 2), (2 * MAX_INPUTS, 1)]),
    # After benchmarks/rehearse.py on the same host: the container's own cache paths, now warm.
    "fast-warm-restart": Run("fast", "container", warm_up=True),
    "compiled": Run(
        "compiled", "compiled", warm_up=True, levels=[(1, 2), (MAX_INPUTS, 2), (2 * MAX_INPUTS, 1)]
    ),
    # The warm-up's burst spread (burst_shapes), long levels, the flags that cost no start-up.
    "fast-v3": Run("fast", "fast-v3", warm_up=True, levels=LONG_LEVELS),
    "compiled-v3": Run("compiled", "compiled-v3", warm_up=True, levels=LONG_LEVELS),
    # The same command on the caches fast-v3 left: what a Modal container's second start sees.
    "fast-v3-restart": Run("fast", "fast-v3", warm_up=True, levels=[(MAX_INPUTS, 2, LEVEL_S)]),
    "fast-2rounds": Run("fast", "fast-2rounds", warm_up=True, warm={"rounds": 2}, levels=[(MAX_INPUTS, 2)]),
    "fast-fp8": Run(
        "fast",
        "fast-fp8",
        warm_up=True,
        extra=("--kv-cache-dtype", "fp8"),
        seed_from="fast-v3",
        levels=[(MAX_INPUTS, 2), (1, 1, 30)],
    ),
    "fast-si20": Run(
        "fast",
        "fast-si20",
        warm_up=True,
        extra=("--stream-interval", "20"),
        seed_from="fast-v3",
        levels=[(MAX_INPUTS, 2)],
    ),
    # The first-burst stall is the MoE routing kernels compiled per 32-token bucket (JIT monitor).
    "fast-marlin": Run(
        "fast",
        "fast-marlin",
        warm_up=True,
        extra=("--moe-backend", "marlin"),
        levels=[(MAX_INPUTS, 2), (1, 1, 30)],
    ),
    "fast-precompiled": Run("fast", "fast-precompiled", warm_up=True, precompile=8, levels=[(MAX_INPUTS, 2)]),
    # The default deployment's first start on the container's full lock: priming, start, warm-up, first and
    # second minute at max_inputs (the JIT monitor's counts per phase), one client.
    "fast-lock": Run(
        "fast", "fast-lock", warm_up=True, prime=True, levels=[(MAX_INPUTS, 2, LEVEL_S), (1, 1, 30)]
    ),
    "120b": Run("fast", "120b", warm_up=False, model="120b", bursts=False),
    # vLLM's budget equal to an 80 GB card's at 0.9: does 120b on one H100 hold what `plan` says?
    "120b-as-h100": Run(
        "fast",
        "120b-as-h100",
        warm_up=False,
        model="120b",
        util=round(0.9 * H100_TOTAL_MIB / H200_TOTAL_MIB, 4),
        bursts=False,
    ),
}

LOG_FIGURES = {
    "weights_gib": r"Model loading took ([\d.]+) GiB",
    "load_s": r"Model loading took [\d.]+ GiB(?: memory)? and ([\d.]+) s",
    "kv_cache_gib": r"Available KV cache memory: ([\d.]+) GiB",
    "kv_tokens": r"GPU KV cache size: ([\d,]+) tokens",
    "max_concurrency": r"Maximum concurrency for [\d,]+ tokens per request: ([\d.]+)x",
    "graph_s": r"Graph capturing finished in ([\d.]+) secs",
    "graph_gib": r"Graph capturing finished in [\d.]+ secs, took ([\d.]+) GiB",
    "init_engine_s": r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+)",
    "compile_s": r"torch\.compile took ([\d.]+) s in total",
    "peak_activation_gib": r"peak activation[^\d]*([\d.]+) GiB",
    "non_torch_gib": r"non-torch (?:memory|forward)[^\d]*([\d.]+) GiB",
}
KEEP = re.compile(
    r"KV cache|Model loading|Graph captur|init engine|torch\.compile|memory|CUDA graph|cudagraph|ERROR"
    r"|during inference|JIT monitor|backend",
    re.I,
)
JIT_EVENT = re.compile(
    r"(\w+) (?:kernel JIT compilation|JIT compilation|autotuning\S*) during inference: (\S+)"
)


def jit_events(text: str) -> dict[str, int]:
    """Kernels vLLM's JIT monitor saw compiled (or autotuned) in a stretch of its log: name -> times."""
    counts: dict[str, int] = {}
    for backend, name in JIT_EVENT.findall(text):
        key = f"{backend} {name.rstrip('.')}"
        counts[key] = counts.get(key, 0) + 1
    for name in re.findall(r"Triton autotuning for function (\w+)", text):
        counts[f"autotune {name}"] = counts.get(f"autotune {name}", 0) + 1
    return counts


def gpu_mem_mib(gpu: int) -> int:
    out = subprocess.run(
        ["nvidia-smi", f"--id={gpu}", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip() or -1)


def bench(
    port: int,
    out: Path,
    *,
    concurrency: int,
    input_len: int,
    output_len: int,
    requests=None,
    duration=None,
    seed=0,
):
    """`gpt-oss-modal bench` (vllm bench serve's metric definitions) -> its JSON result, or None."""
    cmd = [sys.executable, "-m", "gpt_oss_modal.cli", "bench", "--url", f"http://127.0.0.1:{port}/v1"]
    cmd += ["--concurrency", str(concurrency), "--input-len", str(input_len), "--output-len", str(output_len)]
    cmd += ["--tokenizer", "/root/model", "--out", str(out), "--seed", str(seed)]
    cmd += ["--requests", str(requests)] if requests else ["--duration", str(duration)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode or not out.exists():
        print(f"  bench failed ({proc.returncode}): {proc.stderr[-800:]}", flush=True)
        return None
    return json.loads(out.read_text())["levels"][0]


def level_summary(lv: dict) -> dict:
    keys = (
        "output_throughput",
        "median_tpot_ms",
        "median_ttft_ms",
        "p99_ttft_ms",
        "completed",
        "errors",
        "duration_s",
    )
    return {k: lv.get(k) for k in keys}


def cubins(triton: Path) -> dict[str, int]:
    """The kernels in a Triton cache, by name: one compiled binary per variant. Counted before the engine
    starts (what the priming put there), once it is ready, and at the end, the differences say what the
    engine itself compiled in each stretch -- unlike the JIT monitor, which also lists loads from the cache."""
    return dict(Counter(f.stem for f in triton.rglob("*.cubin"))) if triton.exists() else {}


def run_one(name: str, spec: Run, gpu: int, port: int, res: Path, deadline: float) -> dict:
    d = res / name
    k = 1
    while d.exists():
        k += 1
        d = res / f"{name}-{k}"
    d.mkdir(parents=True)
    model_dir = "/root/model120" if spec.model == "120b" else "/root/model"
    cfg = DeployConfig(
        model=spec.model,
        gpu="H200",
        boot=spec.boot,
        max_inputs=MAX_INPUTS,
        max_model_len=CONTEXT,
        gpu_memory_utilization=spec.util,
        port=port,
        extra_vllm_args=[*STUDY_ARGS, *spec.extra],
    )
    command = engine.build_command(cfg, target="local-gpu", model_path=model_dir)
    env = {**os.environ, **command.env, "CUDA_VISIBLE_DEVICES": str(gpu)}
    seeded = None
    if spec.cache == "container":
        env |= engine.COMPILE_CACHE_ENV
        cache = Path(engine.COMPILE_CACHE_ENV["VLLM_CACHE_ROOT"])
    else:
        cache = Path("/root/vc") / spec.cache
        seed = Path("/root/vc") / spec.seed_from if spec.seed_from else None
        if seed and seed.exists() and not cache.exists():
            shutil.copytree(seed, cache, symlinks=True)
            seeded = str(seed)
        env |= {
            "VLLM_CACHE_ROOT": str(cache),
            "TRITON_CACHE_DIR": str(cache / "triton"),
            "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
        }
    result: dict = {"run": name, "boot": spec.boot, "model": spec.model, "util": spec.util, "gpu_index": gpu}
    result["cache_was_warm"] = cache.exists()
    result["cache_seeded_from"] = seeded
    result["argv"] = command.argv
    print(f"=== {time.strftime('%T')} {name}: {command.shell()}", flush=True)
    t0 = time.monotonic()
    log_path = d / "server.log"
    marks: list[tuple[str, int]] = []  # (phase that starts here, byte offset of server.log)

    def mark(phase: str) -> None:
        marks.append((phase, log_path.stat().st_size if log_path.exists() else 0))

    if spec.prime:
        t = time.monotonic()
        routing = precompile.moe_kernels_for(cfg)
        lines: list[str] = []
        result["primed"] = bool(routing) and precompile.prime(routing, env, lines.append)
        result["prime_s"] = round(time.monotonic() - t, 1)
        result["prime_log"] = lines[-6:]
        print(f"  prime: {result['primed']} in {result['prime_s']} s: {lines[-2:]}", flush=True)
    result["triton_before_start"] = cubins(cache / "triton")
    # The container's own launcher, with vLLM's log sent to a file.
    launcher = ["bash", "-c", 'exec "$@" >"$0" 2>&1', str(d / "server.log"), *command.argv]
    eng = lifecycle.start_engine(cfg, command, base_env=env, argv=launcher)
    try:
        result["startup_s"] = round(lifecycle.wait_ready(eng, max(30.0, deadline - time.monotonic() - 20)), 1)
        if spec.precompile:
            mark("precompile")
            t = time.monotonic()
            # The product's own shapes for this deployment (experts, top-k, max_num_batched_tokens).
            args = [*precompile.moe_kernels_for(cfg).args(), "--workers", str(spec.precompile)]
            pre = subprocess.run(
                [sys.executable, "-m", "gpt_oss_modal.server.precompile", *args],
                env=env,
                capture_output=True,
                text=True,
            )
            result["precompile_s"] = round(time.monotonic() - t, 1)
            result["precompile"] = (pre.stdout + pre.stderr)[-1500:]
            print(
                f"  precompile ({pre.returncode}) {result['precompile_s']} s: {pre.stdout.strip()}",
                flush=True,
            )
        mark("warm_up")
        if spec.warm_up:
            w = warmup.warm_up(eng, lifecycle.WARM_UP_MAX_S, **spec.warm)
            result["warm_up_s"] = round(w.seconds, 1)
            result["warm_up"] = w.summary()
        result["ready_s"] = round(time.monotonic() - t0, 1)
        result["triton_when_ready"] = cubins(cache / "triton")
        if spec.bursts:
            # The same shape twice, other prompts the second time (prefix caching must not make it cheaper).
            for seed, label in enumerate(("first_burst", "second_burst")):
                mark(label)
                lv = bench(
                    port,
                    d / f"{label}.json",
                    concurrency=MAX_INPUTS,
                    requests=MAX_INPUTS,
                    input_len=1024,
                    output_len=64,
                    seed=seed,
                )
                if lv:
                    result[label] = {
                        k: lv.get(k) for k in ("median_ttft_ms", "p90_ttft_ms", "p99_ttft_ms", "errors")
                    }
                    print(f"  {label}: {result[label]}", flush=True)
        result["levels"] = []
        for c, repeats, *seconds in spec.levels:
            dur = float(seconds[0] if seconds else LEVEL_S)
            for r in range(repeats):
                if time.monotonic() + dur + 25 > deadline:
                    print(f"  skipped c={c} (deadline)", flush=True)
                    continue
                mark(f"c{c}#{r}")
                lv = bench(
                    port, d / f"c{c}_{r}.json", concurrency=c, duration=dur, input_len=1024, output_len=512
                )
                if lv:
                    result["levels"].append({"concurrency": c, "repeat": r} | level_summary(lv))
                    print(f"  c={c} #{r}: {result['levels'][-1]}", flush=True)
        result["gpu_mem_mib_serving"] = gpu_mem_mib(gpu)
    except Exception as e:  # noqa: BLE001 - recorded, and the server is stopped below
        result["error"] = f"{type(e).__name__}: {e}"
        print(f"  error: {result['error']}", flush=True)
    finally:
        mark("end")
        lifecycle.stop(eng)
    result["triton_at_end"] = cubins(cache / "triton")
    raw = log_path.read_bytes()
    result["jit_after_vllm_warm_up"] = {
        phase: jit_events(raw[start:end].decode(errors="replace"))
        for (phase, start), (_, end) in zip(marks, marks[1:], strict=False)
    }
    text = raw.decode(errors="replace").replace("\r", "\n")
    for key, pattern in LOG_FIGURES.items():
        found = re.findall(pattern, text)
        if found:
            result[key] = float(found[-1].replace(",", ""))
    (d / "log_lines.txt").write_text("\n".join(ln for ln in text.split("\n") if KEEP.search(ln))[-40000:])
    if "error" in result:
        (d / "log_tail.txt").write_text("\n".join(text.split("\n")[-80:]))
    sizes = {}
    for sub in ("triton", "inductor", "torch_compile_cache"):
        p = cache / sub
        if p.exists():
            sizes[sub] = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    result["cache_bytes"] = sizes
    (d / "result.json").write_text(json.dumps(result, indent=1))
    print(f"=== {time.strftime('%T')} {name} done", flush=True)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", choices=sorted(RUNS))
    ap.add_argument("--gpu", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("/root/res"))
    ap.add_argument(
        "--deadline", type=float, default=560, help="seconds from now by which every server is gone"
    )
    a = ap.parse_args()
    deadline = time.monotonic() + a.deadline
    a.out.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(a.runs):
        if time.monotonic() > deadline - 60:
            print(f"skipped {name}: deadline", flush=True)
            continue
        run_one(name, RUNS[name], a.gpu, 8100 + 10 * a.gpu + i, a.out, deadline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
