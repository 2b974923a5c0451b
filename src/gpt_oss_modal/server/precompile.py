"""Prime the Triton cache with the MoE routing kernels vLLM would otherwise compile during the first requests.

On Hopper GPUs vLLM runs gpt-oss's MoE layers with OpenAI's `triton_kernels`, whose routing kernels
(`_topk_forward`, `_sum_bitmatrix_rows`) take the step's token count rounded up to 32 as a compile-time
constant, and Triton specializes the count itself on divisibility by 16: every new size of a step outside
the CUDA graphs (prefills, and decodes mixed with prefill chunks) compiles kernels inside the engine's step,
~0.5 s each, a stall every request in that step waits for. vLLM's JIT monitor (`--jit-monitor-verbose`)
names them; docs/performance.md has the count.

This compiles all of them -- each 32-token bucket up to the engine's `--max-num-batched-tokens`, both
specializations -- in worker processes, into the Triton cache the engine reads (TRITON_CACHE_DIR: on the
vllm-cache volume for Modal): the engine then loads each from disk in milliseconds. It is a one-shot step on
a GPU of the deployment's class, run before any server starts, with the whole GPU to itself: once per cache
(a marker file there says it is done) from `deploy`/`run` on Modal, and by `serve --local` on a local GPU
(`prime`). On an H200 (16 cores) it took 91 s with 8 workers, and turned a first burst's p99 time to first
token from 2.5x the steady state into 1.2x (docs/performance.md). docs/cold-start.md argues the place.

    python -m gpt_oss_modal.server.precompile --experts 32 --top-k 4 --max-tokens 8192 --marker PATH
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gpt_oss_modal import files
from gpt_oss_modal.core import catalog
from gpt_oss_modal.core.config import DeployConfig
from gpt_oss_modal.core.planner import Plan, plan, routing_token_counts

MAX_WORKERS = 8  # on an H200 (16 cores) 8 workers took 91 s; beyond that the compiler's CPU work is the limit
WORKER_GIB = 1.0  # GPU memory per worker (its CUDA context, ~0.5 GiB, and room to spare)
# A hang is not a slow compile: 91 s with 8 workers, so even one worker on a fresh cache stays well inside.
PRIME_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class Routing:
    """The routing kernels a deployment's engine compiles: their shapes, the GPU family and the vLLM."""

    experts: int
    top_k: int
    max_tokens: int
    sm: int
    vllm: str  # the release whose kernels these are (they differ between releases)

    def args(self) -> list[str]:
        """This module's command-line arguments for these kernels (all but --workers and --marker)."""
        return [
            "--experts",
            str(self.experts),
            "--top-k",
            str(self.top_k),
            "--max-tokens",
            str(self.max_tokens),
        ]

    def marker(self, cache_dir: Path) -> Path:
        """The file that says every variant is in `cache_dir`, for this vLLM, GPU family and shape."""
        name = f"vllm-{self.vllm}-sm{self.sm}-e{self.experts}-k{self.top_k}-t{self.max_tokens}.done"
        return cache_dir / "gpt-oss-modal-routing" / name


def routing_for(cfg: DeployConfig, p: Plan | None = None, *, vllm: str | None = None) -> Routing | None:
    """What to prime for `cfg` (its plan `p`, when the caller has it), or None: only Hopper runs these
    kernels (catalog.moe_kernel: below it Marlin, above it FlashInfer, both compiled ahead of time), and only
    the real models do. The step sizes are the plan's max_num_batched_tokens, which the engine is given;
    `vllm` is the release that runs them (default: the Modal image's, cfg.vllm_version)."""
    gpu, model = cfg.gpu_type, cfg.model_info
    if model is None or catalog.moe_kernel(gpu) != "triton":
        return None
    batched = (p or plan(cfg)).max_num_batched_tokens
    return Routing(model.num_experts, model.experts_per_token, batched, gpu.sm, vllm or cfg.vllm_version)


def triton_cache_dir(env: Mapping[str, str]) -> Path:
    """Where Triton keeps compiled kernels for a process with this environment."""
    if env.get("TRITON_CACHE_DIR"):
        return Path(env["TRITON_CACHE_DIR"])
    return Path(env.get("TRITON_HOME") or Path.home()) / ".triton" / "cache"


# --- how many workers ------------------------------------------------------------------------------------


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs this container's cgroup may use (quota / period), or None when unlimited or unknown."""
    with contextlib.suppress(OSError, ValueError):
        quota, period = (
            (root / "cpu.max").read_text().split()[:2]
        )  # cgroup v2: "max 100000" or "200000 100000"
        return None if quota == "max" else int(quota) / int(period)
    with contextlib.suppress(OSError, ValueError):  # cgroup v1
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    return None


def granted_cpus(affinity: int, quota: float | None) -> int:
    """The CPUs a process may really use: the `affinity` CPUs it may be scheduled on
    (os.sched_getaffinity), capped by the cgroup's `quota`, rounded up. Not os.cpu_count(), which in a
    container may report the host's."""
    return max(1, affinity if quota is None else min(affinity, math.ceil(quota)))


def worker_count(cpus: int, free_gib: float, limit: int = MAX_WORKERS) -> int:
    """Workers for `cpus` granted CPUs and `free_gib` of free GPU memory: one per CPU and per WORKER_GIB,
    at most `limit`; 0 when not even one fits on the GPU."""
    return max(0, min(limit, cpus, int(free_gib // WORKER_GIB)))


# --- compiling ------------------------------------------------------------------------------------------


def _compile(counts: list[int], experts: int, top_k: int) -> int:
    """In a worker: run vLLM's routing call once per token count (which compiles what is not yet cached)."""
    import torch

    # Importing vLLM's gpt-oss MoE module sets up the `triton_kernels` alias and vLLM's patches to it: the
    # kernels compiled here are the very ones (same source, same cache key) the engine compiles.
    try:
        from vllm.model_executor.layers.fused_moe.experts import gpt_oss_triton_kernels_moe as moe
    except ImportError:
        return 0  # another vLLM: other kernels
    if not getattr(moe, "use_legacy_triton_kernels", False):
        return 0  # another triton_kernels (or none): other routing kernels, not known to stall
    from triton_kernels.routing import routing

    for n in counts:
        logits = torch.randn(n, experts, device="cuda", dtype=torch.bfloat16)
        routing(logits, top_k, sm_first=False)  # gpt-oss renormalizes: vLLM passes sm_first=False
    torch.cuda.synchronize()
    return len(counts)


def precompile(*, experts: int, top_k: int, max_tokens: int, workers: int) -> tuple[int, float]:
    """Compile every routing variant up to `max_tokens` in `workers` processes: (variants run, seconds)."""
    start = time.monotonic()
    counts = routing_token_counts(max_tokens)
    # Interleaved shares: each worker gets small and large counts alike.
    workers = max(1, min(workers, len(counts)))
    shares = [counts[i::workers] for i in range(workers)]
    ctx = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        done = sum(pool.map(_compile, shares, [experts] * workers, [top_k] * workers))
    return done, time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--experts", type=int, required=True, help="experts per MoE layer (num_local_experts)")
    ap.add_argument("--top-k", type=int, required=True, help="experts per token (num_experts_per_tok)")
    ap.add_argument("--max-tokens", type=int, required=True, help="the engine's --max-num-batched-tokens")
    ap.add_argument(
        "--workers",
        type=int,
        default=MAX_WORKERS,
        help="at most this many (fewer with fewer CPUs or GPU memory)",
    )
    ap.add_argument("--marker", type=Path, help="a file to create once every variant is compiled")
    a = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None or not torch.cuda.is_available():
        print("precompile: nothing to compile (no CUDA GPU)", flush=True)
        return 0
    affinity, quota = len(os.sched_getaffinity(0)), cgroup_cpu_quota()
    cpus = granted_cpus(affinity, quota)
    free_gib = torch.cuda.mem_get_info()[0] / 2**30
    workers = worker_count(cpus, free_gib, a.workers)
    print(
        f"precompile: {workers} workers for {cpus} CPUs granted (affinity {affinity}, cgroup quota "
        f"{'none' if quota is None else f'{quota:g}'}) and {free_gib:.1f} GiB of free GPU memory",
        flush=True,
    )
    if workers < 1:
        print(f"precompile: skipped, {free_gib:.1f} GiB of GPU memory free is too little for a worker")
        return 0
    done, seconds = precompile(experts=a.experts, top_k=a.top_k, max_tokens=a.max_tokens, workers=workers)
    if not done:
        print("precompile: nothing to compile (this vLLM does not use the routing kernels known to stall)")
        return 0
    print(f"precompile: {done} MoE routing variants in {seconds:.1f} s ({workers} workers)", flush=True)
    if a.marker:
        files.write_atomically(a.marker, f"{done} variants, {seconds:.1f} s, {workers} workers\n")
    return 0


# --- from a caller: once per cache ----------------------------------------------------------------------

Log = Callable[[str], None]


def prime(routing: Routing, env: Mapping[str, str], log: Log, *, timeout: float = PRIME_TIMEOUT_S) -> bool:
    """Run this module for `routing` in a process with the engine's environment `env` (so it writes the
    engine's Triton cache), unless the cache's marker says it is done. Call it before the engine starts:
    the GPU is then free. Failures and a timeout are logged, not raised (the kernels still compile on
    first use). True when every variant is in the cache."""
    marker = routing.marker(triton_cache_dir(env))
    if marker.exists():
        log(f"MoE routing kernels already in the cache ({marker})")
        return True
    argv = [sys.executable, "-m", __name__, *routing.args(), "--marker", str(marker)]
    # A session of its own: on timeout the workers go with it.
    proc = subprocess.Popen(
        argv,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        log(f"precompile: stopped after {timeout:.0f} s; the rest compiles on first use")
        return False
    lines = [ln for ln in out.splitlines() if ln.strip()]
    if proc.returncode:
        log(f"precompile failed (exit code {proc.returncode}): {' | '.join(lines[-3:])[-400:]}")
        return False
    for line in lines:
        log(line)
    return marker.exists()


if __name__ == "__main__":
    sys.exit(main())
