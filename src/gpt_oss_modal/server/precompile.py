"""Compile, before the first requests, the MoE routing kernels vLLM would otherwise compile during them.

On Hopper GPUs vLLM runs gpt-oss's MoE layers with OpenAI's `triton_kernels`, whose routing kernels
(`_topk_forward`, `_sum_bitmatrix_rows`) take the step's token count rounded up to 32 as a compile-time
constant, and Triton specializes the count itself on divisibility by 16: every new size of a step outside
the CUDA graphs (prefills, and decodes mixed with prefill chunks) compiles kernels inside the engine's step,
~0.5 s each, a stall every request in that step waits for. vLLM's JIT monitor (`--jit-monitor-verbose`)
names them; docs/performance.md has the count.

This compiles all of them -- each 32-token bucket up to `max_num_batched_tokens`, both specializations --
in worker processes on the same GPU, into the Triton cache the engine reads (TRITON_CACHE_DIR, on the
vllm-cache volume in a Modal container): the engine then loads each from disk in milliseconds, and a marker
file there lets later containers skip the step. On an H200 (16 cores) it took 91 s with 8 workers, and turned a
first burst's p99 time to first token from 2.5x the steady state into 1.2x (docs/performance.md). Run it
after the engine answered /health, so that its memory profile is taken: the workers hold a CUDA context
each (~0.5 GiB) in the memory vLLM leaves free. `gpt_oss_modal.server.lifecycle.precompile_kernels` does that.

    python -m gpt_oss_modal.server.precompile --experts 32 --top-k 4 --max-tokens 8192 --workers 8
"""

from __future__ import annotations

import argparse
import importlib.metadata
import multiprocessing
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gpt_oss_modal.core import catalog
from gpt_oss_modal.core.config import DeployConfig

BUCKET = 32  # rows of the routing bitmatrix are padded to this
# vLLM's chunked-prefill batch for its API server: 8,192 tokens on cards of 70 GiB or more, else 2,048
# (vllm/engine/arg_utils.py, default_max_num_batched_tokens).
BIG_CARD_GIB = 70
MAX_WORKERS = 8  # each holds a CUDA context; more buys little once the CPU is busy
WORKER_GIB = 1.0  # GPU memory per worker (its CUDA context, ~0.5 GiB, and room to spare)


@dataclass(frozen=True)
class Routing:
    """The routing kernels a deployment's engine compiles: their shapes, and the GPU family."""

    experts: int
    top_k: int
    max_tokens: int
    sm: int

    def args(self) -> list[str]:
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
        try:
            vllm = importlib.metadata.version("vllm")
        except importlib.metadata.PackageNotFoundError:
            vllm = "none"
        name = f"vllm-{vllm}-sm{self.sm}-e{self.experts}-k{self.top_k}-t{self.max_tokens}.done"
        return cache_dir / "gpt-oss-modal-routing" / name


def max_num_batched_tokens(cfg: DeployConfig) -> int:
    """The engine's largest step: the user's --max-num-batched-tokens, else vLLM's default for the card."""
    args = cfg.extra_vllm_args
    for i, arg in enumerate(args):
        if arg.startswith("--max-num-batched-tokens="):
            return int(arg.split("=", 1)[1])
        if arg == "--max-num-batched-tokens" and i + 1 < len(args):
            return int(args[i + 1])
    return 8192 if cfg.gpu_type.vram_gib >= BIG_CARD_GIB else 2048


def routing_for(cfg: DeployConfig) -> Routing | None:
    """What to precompile for `cfg`, or None: only Hopper runs these kernels (catalog.moe_kernel: below it
    Marlin, above it FlashInfer, both compiled ahead of time), and only the real models do."""
    gpu, model = cfg.gpu_type, cfg.model_info
    if model is None or catalog.moe_kernel(gpu) != "triton":
        return None
    return Routing(model.num_experts, model.experts_per_token, max_num_batched_tokens(cfg), gpu.sm)


def triton_cache_dir(env: Mapping[str, str]) -> Path:
    """Where Triton keeps compiled kernels for a process with this environment."""
    if env.get("TRITON_CACHE_DIR"):
        return Path(env["TRITON_CACHE_DIR"])
    return Path(env.get("TRITON_HOME") or Path.home()) / ".triton" / "cache"


def token_counts(max_tokens: int) -> list[int]:
    """One token count per compiled variant: each bucket's top (a multiple of 16) and the count below it."""
    counts = {1}
    for top in range(BUCKET, max_tokens + BUCKET, BUCKET):
        counts |= {top, top - 1}
    return sorted(n for n in counts if n <= max(max_tokens, 1))


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
    counts = token_counts(max_tokens)
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
    ap.add_argument("--max-tokens", type=int, default=8192, help="the engine's max_num_batched_tokens")
    ap.add_argument("--workers", type=int, default=MAX_WORKERS)
    ap.add_argument("--marker", type=Path, help="a file to create once every variant is compiled")
    a = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("precompile: nothing to compile (no CUDA GPU)")
        return 0
    # Each worker holds a CUDA context next to the engine: a GiB apiece, out of what vLLM left free.
    free_gib = torch.cuda.mem_get_info()[0] / 2**30
    workers = min(a.workers, int(free_gib - WORKER_GIB))
    if workers < 1:
        print(f"precompile: skipped, {free_gib:.1f} GiB of GPU memory free is too little for a worker")
        return 0
    done, seconds = precompile(experts=a.experts, top_k=a.top_k, max_tokens=a.max_tokens, workers=workers)
    if not done:
        print("precompile: nothing to compile (this vLLM does not use the routing kernels known to stall)")
        return 0
    print(f"precompile: {done} MoE routing variants in {seconds:.1f} s ({workers} workers)", flush=True)
    if a.marker:
        a.marker.parent.mkdir(parents=True, exist_ok=True)
        a.marker.write_text(f"{done} variants, {seconds:.1f} s\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
