"""GPU memory as vLLM divides it: what it sees of a card, the weights, its runtime, the KV cache left.

The arithmetic, per GPU of a tensor-parallel group, as vLLM does it (calibrated against its own start-up
logs, on an H200 and on an H200 set to smaller cards' budgets and kernels: gpt_oss_modal.core.measured,
tests/test_planner.py):

    VRAM     = the card's total as vLLM sees it (torch's, a little under nvidia-smi's: vllm_vram_gib)
    budget   = VRAM x gpu_memory_utilization          (vLLM never takes more)
    weights  = what vLLM loads on the card's MXFP4 MoE kernel path, / TP   (Marlin's layout is larger)
    runtime  = activation peak + non-torch memory + CUDA-graph pool, by kernel path, batched tokens and
               boot mode (the profile run pushes max_num_batched_tokens through the model)
    KV cache = budget - weights - runtime

and the KV cache's capacity as vLLM counts it (vllm/v1/core/kv_cache_utils.py, get_kv_cache_capacity):
GPT-OSS alternates full attention with 128-token sliding-window attention. vLLM puts each kind of layer in
its own group (12 + 12 layers for 20b, 18 + 18 for 120b) and the groups draw 16-token blocks from one shared
pool, so a block of pool costs 16 x (layers per group x K and V x KV heads per GPU x head_dim x 2 bytes):
a "slot" is 24,576 bytes for 20b and 36,864 for 120b (kv_bytes_per_token). A request of max_model_len L
takes ceil(L / 16) blocks for the full-attention group, and for the sliding group the window plus every
token scheduled but not yet freed, min(W - 1 + in-flight, L) rounded up to blocks, + 1 block for a window
that starts mid-block (SlidingWindowSpec.max_admission_blocks_per_request). vLLM's maximum concurrency is
pool blocks / blocks per request, and the "GPU KV cache size: N tokens" it logs is that x L: tokens of
full-length requests, not free slots. max_inputs (--max-num-seqs) does not enter: runs with 32 and 50 give
the same pool.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from gpt_oss_modal.core import catalog, measured
from gpt_oss_modal.core.catalog import GiB

BF16_BYTES = 2
BLOCK_TOKENS = 16  # vLLM's KV block size for gpt-oss's attention backends


def kv_bytes_per_token(model: catalog.Model, tp: int, drafter: catalog.Drafter | None = None) -> int:
    """One token slot of the KV pool, per GPU. Both layer groups have the same size (half the layers each),
    so the full-attention half's bytes per token is also the page size per token of the shared pool.
    A drafter's layer joins the full-attention group, and vLLM pads the sliding group to the same count
    (12 + 13 for 20b: _get_kv_cache_groups_uniform_page_size), so each group grows by its layers."""
    kv_heads = max(1, model.num_kv_heads // tp)  # vLLM replicates KV heads when TP > KV heads
    layers = model.full_attention_layers + (drafter.num_layers if drafter is not None else 0)
    return layers * 2 * kv_heads * model.head_dim * BF16_BYTES


def blocks_per_request(model: catalog.Model, batched: int, tokens: int) -> int:
    """Pool blocks one request of `tokens` tokens reserves: full-attention group + sliding-window group.

    The sliding group holds the window plus the tokens scheduled but not yet freed
    (VllmConfig.max_in_flight_tokens): two steps of `batched` tokens with async scheduling, which fits
    every H200 run."""
    full = math.ceil(tokens / BLOCK_TOKENS)
    window = min(model.sliding_window - 1 + 2 * batched, tokens)
    return full + math.ceil(window / BLOCK_TOKENS) + 1


def concurrency(model: catalog.Model, batched: int, blocks: int, tokens: int) -> float:
    """vLLM's maximum concurrency for requests of `tokens` tokens, with `blocks` blocks in the pool."""
    return blocks / blocks_per_request(model, batched, tokens)


def longest_request(model: catalog.Model, batched: int, blocks: int) -> int:
    """The most tokens one request may have with `blocks` pool blocks (vLLM's check at start-up)."""
    lo, hi = 0, model.max_context
    while lo < hi:  # blocks_per_request grows with tokens: the largest that fits, by bisection
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if blocks_per_request(model, batched, mid) <= blocks else (lo, mid - 1)
    return lo


# What the driver keeps out of torch's total, for a card whose total torch was not read on: the larger of
# the gaps measured (H200 0.60 GiB, H100 0.47 GiB), so that no plan promises memory vLLM will not see.
VRAM_RESERVE_GIB = max(v.reserve_gib for v in measured.VRAM.values())
# Runs with every memory part logged: where the weights and the runtime come from.
_PARTS = tuple(r for r in measured.KV_RUNS if r.has_parts)


def vllm_vram_gib(gpu: catalog.GPU) -> tuple[float, bool]:
    """The card's total as vLLM sees it (torch's), and whether it was read on such a card."""
    seen = measured.VRAM.get(gpu.name)
    if seen is not None:
        return seen.vllm_total_gib, True
    return gpu.vram_gib - VRAM_RESERVE_GIB, False


def _logged_weights(model_id: str, kernel: str) -> float | None:
    values = [r.weights_gib for r in _PARTS if r.model == model_id and r.moe_kernel == kernel]
    return statistics.fmean(values) if values else None  # type: ignore[arg-type]


def _expert_count(model: catalog.Model) -> int:
    return model.num_layers * model.num_experts


def weights_gib(model: catalog.Model, kernel: str) -> tuple[float, bool]:
    """What vLLM loads for `model` on one GPU on this MoE kernel path, and whether it was measured.

    Marlin repacks the MXFP4 experts (13.8 GiB for 20b, against 13.03 on Hopper's Triton path). Where a model
    was measured on Hopper's path only, Marlin's excess is another model's scaled by the expert bytes (both
    sizes have experts of one shape, so by layers x experts). Blackwell's path was not measured: Hopper's."""
    logged = _logged_weights(model.id, kernel)
    if logged is not None:
        return logged, True
    hopper = _logged_weights(model.id, "triton")
    if hopper is None:  # a model never started: its checkpoint
        return model.weights_gib, False
    if kernel == "marlin":
        for ref in catalog.MODELS.values():
            marlin, ref_hopper = _logged_weights(ref.id, "marlin"), _logged_weights(ref.id, "triton")
            if marlin is not None and ref_hopper is not None:
                return hopper + (marlin - ref_hopper) * _expert_count(model) / _expert_count(ref), False
    return hopper, False


@dataclass(frozen=True)
class Runtime:
    """What vLLM keeps out of the KV cache besides the weights, in its own three parts (GiB)."""

    activation: float  # the profile run's peak: grows with max_num_batched_tokens
    non_torch: float  # CUDA context, NCCL, cuBLAS workspaces
    graphs: float  # the CUDA-graph pool: the boot mode's
    measured: bool  # logged by vLLM for this kernel path, batched tokens and boot mode
    runs: tuple[str, ...] = ()

    @property
    def gib(self) -> float:
        return self.activation + self.non_torch + self.graphs


def _activation_points(kernel: str) -> dict[int, float]:
    """The activation peak of boot `fast` on this kernel path, per batched-token count measured."""
    by_batched: dict[int, list[float]] = {}
    for r in _PARTS:
        if r.moe_kernel == kernel and r.boot == "fast":
            by_batched.setdefault(r.max_num_batched_tokens, []).append(r.activation_gib)  # type: ignore[arg-type]
    return {b: statistics.fmean(v) for b, v in by_batched.items()}


def _line(points: dict[int, float]) -> tuple[float, float]:
    """Intercept and slope through the smallest and largest batched-token counts of `points`."""
    (b0, a0), (b1, a1) = min(points.items()), max(points.items())
    slope = (a1 - a0) / (b1 - b0)
    return a0 - slope * b0, slope


def _fast_activation(kernel: str, batched: int) -> float:
    """The activation peak of boot `fast`: measured, or along the kernel's line through its measured points;
    a kernel measured at one size only follows the shape of a kernel measured at two (its value scaled)."""
    points = _activation_points(kernel)
    if batched in points:
        return points[batched]
    if len(points) >= 2:
        c, m = _line(points)
        return max(0.0, c + m * batched)
    ((b0, a0),) = points.items()
    shaped = [p for k in sorted({r.moe_kernel for r in _PARTS}) if len(p := _activation_points(k)) >= 2]
    if not shaped:
        return a0 * batched / b0
    c, m = _line(shaped[0])
    return a0 * (c + m * batched) / (c + m * b0)


def runtime_gib(kernel: str, batched: int, boot: str) -> Runtime:
    """vLLM's runtime memory for a kernel path, max_num_batched_tokens and boot mode (model-independent:
    20b and 120b log the same parts on Hopper at 8,192 tokens).

    Measured points are taken as logged. Elsewhere: the kernel path's non-torch memory, the boot mode's graph
    pool and its extra activation (torch.compile's profile run peaks higher), measured on Hopper at 8,192,
    and the activation of boot `fast` along the batched tokens (_fast_activation). Blackwell's FlashInfer
    path was not measured: Hopper's."""
    data_kernel = kernel if any(r.moe_kernel == kernel for r in _PARTS) else "triton"
    exact = [
        r for r in _PARTS if (r.moe_kernel, r.max_num_batched_tokens, r.boot) == (data_kernel, batched, boot)
    ]
    if exact:
        return Runtime(
            statistics.fmean(r.activation_gib for r in exact),  # type: ignore[misc]
            statistics.fmean(r.non_torch_gib for r in exact),  # type: ignore[misc]
            statistics.fmean(r.graphs_gib for r in exact),  # type: ignore[misc]
            measured=data_kernel == kernel,
            runs=tuple(name for r in exact for name in r.runs),
        )
    non_torch = statistics.fmean(r.non_torch_gib for r in _PARTS if r.moe_kernel == data_kernel)  # type: ignore[misc]
    same_boot = [r for r in _PARTS if r.boot == boot] or [r for r in _PARTS if r.boot == "fast"]
    graphs = statistics.fmean(r.graphs_gib for r in same_boot)  # type: ignore[misc]
    # The boot mode's extra activation over fast, where both were measured at one point.
    extra = 0.0
    for r in _PARTS:
        if r.boot == boot and boot != "fast":
            fast = _activation_points(r.moe_kernel).get(r.max_num_batched_tokens)
            if fast is not None:
                extra = r.activation_gib - fast  # type: ignore[operator]
                break
    return Runtime(_fast_activation(data_kernel, batched) + extra, non_torch, graphs, measured=False)


@dataclass(frozen=True)
class Memory:
    vram: float  # the card's total as vLLM sees it
    budget: float
    weights: float
    runtime: Runtime
    kv_gib: float
    slot_bytes: int
    blocks: int  # KV pool blocks per GPU
    kernel: str
    batched: int
    boot: str
    vram_measured: bool  # torch's total read on this card
    weights_measured: bool  # vLLM logged these weights on this kernel path

    @property
    def overhead(self) -> float:
        return self.runtime.gib


def memory(
    model: catalog.Model,
    gpu: catalog.GPU,
    count: int,
    util: float,
    boot: str,
    batched: int,
    drafter: catalog.Drafter | None = None,
    kernel: str | None = None,
) -> Memory:
    """The per-GPU memory of `model` on `count` x `gpu`; `kernel` forces a MoE path (default: the card's)."""
    kernel = kernel or catalog.moe_kernel(gpu)
    vram, vram_measured = vllm_vram_gib(gpu)
    budget = vram * util
    model_weights, weights_measured = weights_gib(model, kernel)
    # The drafter's weights are sharded like the model's; its activations and graphs are not counted.
    weights = (model_weights + (drafter.weights_gib if drafter else 0)) / count
    runtime = runtime_gib(kernel, batched, boot)
    kv_gib = budget - weights - runtime.gib
    slot = kv_bytes_per_token(model, count, drafter)
    blocks = max(0, int(kv_gib * GiB // (slot * BLOCK_TOKENS)))
    return Memory(
        vram,
        budget,
        weights,
        runtime,
        kv_gib,
        slot,
        blocks,
        kernel,
        batched,
        boot,
        vram_measured,
        weights_measured,
    )


def standing_run(model: catalog.Model, gpu: catalog.GPU, boot: str, batched: int) -> measured.KvRun | None:
    """The run that reproduced this card's budget and kernels for this model, boot and batched tokens: the
    card's own, else one of a card with the same kernels and a total within 1% (run A10G stands for L4)."""
    kernel, attention = catalog.moe_kernel(gpu), catalog.attention_backend(gpu)
    candidates = [
        r
        for r in _PARTS
        if (r.model, r.boot, r.max_num_batched_tokens, r.moe_kernel, r.attention)
        == (model.id, boot, batched, kernel, attention)
        and r.gpu in catalog.GPUS
        and abs(catalog.GPUS[r.gpu].vram_gib / gpu.vram_gib - 1) <= 0.01
    ]
    return min(candidates, key=lambda r: r.gpu != gpu.name, default=None)
