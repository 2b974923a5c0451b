"""Prime the Triton cache with the MoE kernels vLLM would otherwise compile during the first requests.

On Hopper GPUs vLLM runs gpt-oss's MoE layers with OpenAI's `triton_kernels`. Its routing kernels
(`_topk_forward`, `_sum_bitmatrix_rows`) take the step's token count rounded up to 32 as a compile-time
constant, and Triton specializes the count itself on divisibility by 16; its expert matmuls (`matmul_ogs`,
named `_empty_fn` in vLLM's log) compile once per row block (16-128, by tokens per expert) and per how the
step's integer arguments specialize. So every new size of a step outside the CUDA graphs (prefills, and
decodes mixed with prefill chunks) can compile kernels inside the engine's step -- ~0.5 s for a routing
kernel, more for a matmul -- a stall every request in that step waits for. vLLM's JIT monitor
(`--jit-monitor-verbose`) names them; docs/performance.md has the counts.

This compiles all of them -- vLLM's own MoE forward (`triton_kernel_moe_forward`, on MXFP4 expert weights
converted by vLLM's own code) at one step size per variant (planner.moe_token_counts) up to the engine's
`--max-num-batched-tokens` -- in worker processes, into the Triton cache the engine reads (TRITON_CACHE_DIR:
on the vllm-cache volume for Modal): the engine then loads each from disk in milliseconds. It is a one-shot step on
a GPU of the deployment's class, run before any server starts, with the whole GPU to itself: once per cache
(a marker file there says it is done) from `deploy`/`run` on Modal, and by `serve --local` on a local GPU
(`prime`). On an H200 (16 cores) it ran 653 step sizes in 96 s with 8 workers, after which the engine
compiled no MoE kernel during its first minute at 50 concurrent requests, which ran at 99% of the second
(docs/performance.md). docs/cold-start.md argues the place.

    python -m gpt_oss_modal.server.precompile --experts 32 --top-k 4 --hidden 2880 --intermediate 2880 \
        --max-tokens 8192 --marker PATH
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gpt_oss_modal import files
from gpt_oss_modal.core import catalog
from gpt_oss_modal.core.config import DeployConfig
from gpt_oss_modal.core.planner import Plan, moe_token_counts, plan
from gpt_oss_modal.server import oneshot
from gpt_oss_modal.server.oneshot import Log

MAX_WORKERS = 8  # on an H200 (16 cores) 8 workers took 96 s; beyond that the compiler's CPU work is the limit
# GPU memory per worker: its CUDA context (~0.5 GiB), one MoE layer's MXFP4 experts (0.4 GiB for 20b's 32,
# 1.6 GiB for 120b's 128) and the largest step's activations (~0.3 GiB at 8,192 tokens).
WORKER_GIB = 1.5
EXPERT_GIB_PER_32 = 0.4
# A hang is not a slow compile: 96 s with 8 workers, so even one worker on a fresh cache stays well inside.
PRIME_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class MoeKernels:
    """The MoE kernels a deployment's engine compiles: one layer's shape on one GPU, the largest step, the
    GPU family and the vLLM."""

    experts: int
    top_k: int
    hidden: int
    intermediate: int  # each expert's, on one GPU (tensor parallelism splits it)
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
            "--hidden",
            str(self.hidden),
            "--intermediate",
            str(self.intermediate),
            "--max-tokens",
            str(self.max_tokens),
        ]

    def marker(self, cache_dir: Path) -> Path:
        """The file that says every variant is in `cache_dir`, for this vLLM, GPU family and shape."""
        shape = f"e{self.experts}-k{self.top_k}-h{self.hidden}-i{self.intermediate}-t{self.max_tokens}"
        return cache_dir / "gpt-oss-modal-moe" / f"vllm-{self.vllm}-sm{self.sm}-{shape}.done"


def moe_kernels_for(
    cfg: DeployConfig, p: Plan | None = None, *, vllm: str | None = None
) -> MoeKernels | None:
    """What to prime for `cfg` (its plan `p`, when the caller has it), or None: only Hopper runs these
    kernels (catalog.moe_kernel: below it Marlin, above it FlashInfer, both compiled ahead of time), and only
    the real models do. The step sizes are the plan's max_num_batched_tokens, which the engine is given;
    `vllm` is the release that runs them (default: the Modal image's, cfg.vllm_version)."""
    gpu, model = cfg.gpu_type, cfg.model_info
    if model is None or catalog.moe_kernel(gpu) != "triton":
        return None
    batched = (p or plan(cfg)).max_num_batched_tokens
    return MoeKernels(
        experts=model.num_experts,
        top_k=model.experts_per_token,
        hidden=model.hidden_size,
        intermediate=model.expert_intermediate_size // cfg.tensor_parallel,
        max_tokens=batched,
        sm=gpu.sm,
        vllm=vllm or cfg.vllm_version,
    )


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


def worker_gib(experts: int) -> float:
    """GPU memory one worker holds for a layer of `experts` experts."""
    return WORKER_GIB + EXPERT_GIB_PER_32 * (experts / 32 - 1)


def worker_count(cpus: int, free_gib: float, limit: int = MAX_WORKERS, per_worker: float = WORKER_GIB) -> int:
    """Workers for `cpus` granted CPUs and `free_gib` of free GPU memory: one per CPU and per `per_worker`
    GiB, at most `limit`; 0 when not even one fits on the GPU."""
    return max(0, min(limit, cpus, int(free_gib // per_worker)))


# --- compiling ------------------------------------------------------------------------------------------


def _experts(experts: int, hidden: int, intermediate: int):
    """One MoE layer's MXFP4 expert weights and biases as vLLM's TRITON backend holds them after loading
    (vllm.model_executor.layers.fused_moe.oracle.mxfp4: its own conversion, swizzled for the GPU), and its
    quantization config: (w13, w2, quant_config). Zeros: the values change no kernel."""
    import torch
    from vllm.model_executor.layers.fused_moe.oracle import mxfp4 as oracle

    backend = oracle.Mxfp4MoeBackend.TRITON
    hidden, intermediate = oracle.mxfp4_round_up_hidden_size_and_intermediate_size(
        backend, hidden, intermediate
    )
    block = 32  # MXFP4: one scale per 32 values

    def zeros(*shape: int, dtype=torch.uint8) -> torch.nn.Parameter:
        return torch.nn.Parameter(torch.zeros(*shape, dtype=dtype, device="cuda"), requires_grad=False)

    layer = torch.nn.Module()  # what the conversion takes the loaded tensors from (and frees them on)
    layer.w13_weight = zeros(experts, 2 * intermediate, hidden // 2)
    layer.w2_weight = zeros(experts, hidden, intermediate // 2)
    layer.w13_weight_scale = zeros(experts, 2 * intermediate, hidden // block)
    layer.w2_weight_scale = zeros(experts, hidden, intermediate // block)
    w13, w2, w13_precision, w2_precision, w13_bias, w2_bias = (
        oracle.convert_gpt_oss_weight_to_mxfp4_moe_kernel_format(
            mxfp4_backend=backend,
            layer=layer,
            w13_weight=layer.w13_weight,
            w2_weight=layer.w2_weight,
            w13_weight_scale=layer.w13_weight_scale,
            w2_weight_scale=layer.w2_weight_scale,
            w13_bias=zeros(experts, 2 * intermediate, dtype=torch.bfloat16),
            w2_bias=zeros(experts, hidden, dtype=torch.bfloat16),
        )
    )
    # gpt-oss's SwiGLU constants, as vLLM's Mxfp4MoEMethod passes them.
    quant_config = oracle.make_mxfp4_moe_quant_config(
        mxfp4_backend=backend,
        w1_scale=w13_precision,
        w2_scale=w2_precision,
        w1_bias=w13_bias,
        w2_bias=w2_bias,
        gemm1_alpha=1.702,
        gemm1_beta=1.0,
        swiglu_limit=7.0,
    )
    return w13, w2, quant_config, hidden


def _compile(
    counts: tuple[int, ...], experts: int, top_k: int, hidden: int, intermediate: int
) -> tuple[int, str]:
    """In a worker: run vLLM's MoE forward once per token count (which compiles what is not yet cached).
    (step sizes run, what ran: "moe" -- routing and expert matmuls -- or "routing" alone, where this vLLM's
    expert weights could not be built here; nothing for another vLLM)."""
    import torch

    # Importing vLLM's gpt-oss MoE module sets up the `triton_kernels` alias and vLLM's patches to it: the
    # kernels compiled here are the very ones (same source, same cache key) the engine compiles.
    try:
        from vllm.model_executor.layers.fused_moe.experts import gpt_oss_triton_kernels_moe as moe
    except ImportError:
        return 0, ""  # another vLLM: other kernels
    if not getattr(moe, "use_legacy_triton_kernels", False):
        return 0, ""  # another triton_kernels (or none): other routing kernels, not known to stall
    from triton_kernels.routing import routing

    def forward(n: int) -> None:
        moe.triton_kernel_moe_forward(
            torch.randn(n, hidden, device="cuda", dtype=torch.bfloat16),
            w13,
            w2,
            torch.randn(n, experts, device="cuda", dtype=torch.bfloat16),
            top_k,
            renormalize=True,
            global_num_experts=experts,
            quant_config=quant_config,
        )

    try:
        w13, w2, quant_config, hidden = _experts(experts, hidden, intermediate)
        forward(counts[0])
    except (ImportError, AttributeError, TypeError, ValueError, AssertionError, RuntimeError) as e:
        # Another vLLM's expert layout: its routing kernels are still the ones known to stall.
        print(f"precompile: routing kernels only ({type(e).__name__}: {e})"[:400], flush=True)
        w13 = None
    for n in counts:
        if w13 is None:
            logits = torch.randn(n, experts, device="cuda", dtype=torch.bfloat16)
            routing(logits, top_k, sm_first=False)  # gpt-oss renormalizes: vLLM passes sm_first=False
        else:
            forward(n)
    torch.cuda.synchronize()
    return len(counts), "routing" if w13 is None else "moe"


def precompile(
    *, experts: int, top_k: int, hidden: int, intermediate: int, max_tokens: int, workers: int
) -> tuple[int, str, float]:
    """Run every MoE variant up to `max_tokens` in `workers` processes: (step sizes run, what ran, seconds)."""
    start = time.monotonic()
    counts = moe_token_counts(max_tokens, experts, top_k)
    # Interleaved shares: each worker gets small and large counts alike.
    workers = max(1, min(workers, len(counts)))
    shares = [counts[i::workers] for i in range(workers)]
    ctx = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    shape = [[x] * workers for x in (experts, top_k, hidden, intermediate)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        results = list(pool.map(_compile, shares, *shape))
    done = sum(r[0] for r in results)
    kinds = {r[1] for r in results if r[0]}
    return done, "routing" if "routing" in kinds else "moe" if kinds else "", time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--experts", type=int, required=True, help="experts per MoE layer (num_local_experts)")
    ap.add_argument("--top-k", type=int, required=True, help="experts per token (num_experts_per_tok)")
    ap.add_argument("--hidden", type=int, required=True, help="the model's hidden size")
    ap.add_argument(
        "--intermediate", type=int, required=True, help="each expert's intermediate size, per GPU"
    )
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
    workers = worker_count(cpus, free_gib, a.workers, worker_gib(a.experts))
    print(
        f"precompile: {workers} workers for {cpus} CPUs granted (affinity {affinity}, cgroup quota "
        f"{'none' if quota is None else f'{quota:g}'}) and {free_gib:.1f} GiB of free GPU memory",
        flush=True,
    )
    if workers < 1:
        print(f"precompile: skipped, {free_gib:.1f} GiB of GPU memory free is too little for a worker")
        return 0
    done, kind, seconds = precompile(
        experts=a.experts,
        top_k=a.top_k,
        hidden=a.hidden,
        intermediate=a.intermediate,
        max_tokens=a.max_tokens,
        workers=workers,
    )
    if not done:
        print("precompile: nothing to compile (this vLLM does not use the MoE kernels known to stall)")
        return 0
    what = "MoE step sizes (routing and expert matmuls)" if kind == "moe" else "MoE routing variants"
    line = f"{done} {what} in {seconds:.1f} s ({workers} workers)"
    print(f"precompile: {line}", flush=True)
    if a.marker:
        files.write_atomically(a.marker, line + "\n")
    return 0


# --- from a caller: once per cache ----------------------------------------------------------------------


def prime(kernels: MoeKernels, env: Mapping[str, str], log: Log, *, timeout: float = PRIME_TIMEOUT_S) -> bool:
    """Run this module for `kernels` in a process with the engine's environment `env` (so it writes the
    engine's Triton cache), unless the cache's marker says it is done. Call it before the engine starts:
    the GPU is then free. Failures and a timeout are logged, not raised (the kernels still compile on
    first use). True when every variant is in the cache."""
    marker = kernels.marker(triton_cache_dir(env))
    if marker.exists():
        log(f"MoE kernels already in the cache ({marker})")
        return True
    argv = [sys.executable, "-m", __name__, *kernels.args(), "--marker", str(marker)]
    lines = oneshot.collect(
        oneshot.launch(argv, env), timeout, log, "precompile", "the rest compiles on first use"
    )
    if lines is None:
        return False
    for line in lines:
        log(line)
    return marker.exists()


if __name__ == "__main__":
    sys.exit(main())
