"""Does a model fit a GPU, with how much context and concurrency, on which kernels, at what price.

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

The price of a running container is what Modal bills for it: its GPUs, and the cores and memory it reserves
(`container_resources`, the same `cpu=` and `memory=` the app requests), at the catalog's list prices.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field

from gpt_oss_modal.core import catalog, measured, speculative
from gpt_oss_modal.core.catalog import GiB
from gpt_oss_modal.core.config import ConfigError, DeployConfig

BF16_BYTES = 2
BLOCK_TOKENS = 16  # vLLM's KV block size for gpt-oss's attention backends
# Auto context: the largest of these that leaves room for this many full-length requests at once.
STANDARD_CONTEXTS = (131072, 65536, 32768, 16384, 8192, 4096)
FULL_LENGTH_REQUESTS = 4
# "Concurrency that fits" is also reported for a typical chat request of this many tokens.
TYPICAL_REQUEST_TOKENS = 4096
MEASURED = f"measured on {measured.GPU}"
# vLLM's chunked-prefill step for its API server when not told: 8,192 tokens on cards of 70 GiB or more,
# else 2,048 (vllm/engine/arg_utils.py). The engine command always passes the plan's value, so the KV
# arithmetic here, the kernel priming and vLLM agree whatever vLLM's own heuristic does on a card.
BIG_CARD_GIB = 70
BATCHED_TOKENS_FLAG = "--max-num-batched-tokens"
# Hopper's MoE routing kernels are compiled per step size rounded up to this many tokens, each bucket in
# two specializations (gpt_oss_modal.server.precompile primes them all).
ROUTING_BUCKET = 32


@dataclass(frozen=True)
class BootCost:
    """What a boot mode costs (start-up) and buys (decode) on the planned GPU; None where not known."""

    boot: str
    startup_s: float | None  # process start to /health, cold caches: the fastest run
    single_stream_tok_s: float | None  # output tokens/s at concurrency 1
    tpot_ms: float | None
    max_inputs_tok_s: tuple[float, ...]  # output tokens/s at concurrency 50, each run
    label: str  # "measured on H200" or "estimate"
    source: str  # where the figures come from, or how they were derived
    startup_max_s: float | None = None  # the slowest cold run, where there were several
    # With the caches of an earlier start kept (a Modal container after the first): the fastest and slowest run.
    warm_startup_s: float | None = None
    warm_startup_max_s: float | None = None


@dataclass(frozen=True)
class Plan:
    model: str
    gpu: str
    gpu_count: int
    tensor_parallel: int
    fits: bool
    budget_gib_per_gpu: float
    weights_gib_per_gpu: float
    overhead_gib_per_gpu: float
    kv_cache_gib_per_gpu: float
    memory_source: str  # whether the weights/overhead/KV figures were measured for this case or estimated
    kv_bytes_per_token: int  # per GPU: one token slot of the shared KV pool (both layer groups)
    kv_tokens: int  # vLLM's "GPU KV cache size": full_length_concurrency x max_model_len
    max_context: int  # the longest single request that fits
    max_model_len: int  # what we will pass to vLLM
    max_model_len_source: str  # "config" (a number was given, or the default) or "auto"
    full_length_concurrency: float  # vLLM's "Maximum concurrency" for max_model_len-token requests
    typical_concurrency: int  # requests of TYPICAL_REQUEST_TOKENS that fit at once, counted the same way
    max_inputs: int
    moe_kernel: str
    attention_backend: str
    max_num_batched_tokens: int  # the engine's largest step (--max-num-batched-tokens, always passed)
    boot: str
    boot_costs: list[BootCost]  # every boot mode on this GPU: start-up and decode speed
    cpu: float  # physical cores one container reserves (Modal's cpu=)
    memory_gib: float  # host memory one container reserves (Modal's memory=)
    gpu_usd_per_hour: float  # one container's GPUs
    cpu_usd_per_hour: float  # its reserved cores
    memory_usd_per_hour: float  # its reserved memory
    usd_per_hour: float  # one running container, all of it: GPUs + CPU + memory
    price_date: str  # of the GPU prices; the CPU and memory rates are of catalog.RESOURCE_PRICE_DATE
    min_containers: int
    max_containers: int
    buffer_containers: int
    target_inputs: int  # what Modal's autoscaler aims for per container (max_inputs unless set lower)
    always_on_usd_per_day: float  # min_containers billed around the clock, traffic or not
    max_usd_per_hour: float  # the ceiling: max_containers all running
    notes: list[str] = field(default_factory=list)
    reason: str | None = None  # why it does not fit, with a way out
    # The drafter's memory (counted above when on) and its modelled speed-up; None for a model without one.
    speculative: speculative.SpeculativeEstimate | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Resources:
    """What one serving container reserves beside its GPUs, and what a running one costs per hour."""

    cpu: float  # physical cores
    memory_mib: int
    gpu_usd_per_hour: float
    cpu_usd_per_hour: float
    memory_usd_per_hour: float

    @property
    def usd_per_hour(self) -> float:
        return self.gpu_usd_per_hour + self.cpu_usd_per_hour + self.memory_usd_per_hour


def snapshot_memory_mib(cfg: DeployConfig) -> int | None:
    """Host memory (MiB) a snapshotted engine needs; None without snapshots.

    Sleep level 1 moves the weights into pinned host RAM (60.8 GiB for 120b), and the snapshot holds them:
    the container must have room for them next to the processes themselves.
    """
    model = cfg.model_info
    if not cfg.snapshot or model is None:
        return None
    return math.ceil((model.weights_gib + catalog.SNAPSHOT_HEADROOM_GIB) * 1024)


def container_resources(cfg: DeployConfig) -> Resources:
    """The serving container's `cpu=` and `memory=` for cfg (catalog.CONTAINER_RESOURCES, per extra GPU,
    and a snapshot's sleeping weights), and Modal's price of a running one: GPUs, cores and memory."""
    gpu, count = cfg.gpu_type, cfg.gpu_count
    base = catalog.CONTAINER_RESOURCES.get(cfg.model)
    if base is None:  # the tiny checkpoint never runs on Modal; priced as a 20b container if asked
        base = catalog.CONTAINER_RESOURCES["openai/gpt-oss-20b"]
    extra = count - 1
    cpu = base.cpu + extra * base.cpu_per_extra_gpu
    memory_mib = math.ceil((base.memory_gib + extra * base.memory_gib_per_extra_gpu) * 1024)
    memory_mib = max(memory_mib, snapshot_memory_mib(cfg) or 0)
    return Resources(
        cpu=cpu,
        memory_mib=memory_mib,
        gpu_usd_per_hour=gpu.usd_per_hour * count,
        cpu_usd_per_hour=cpu * catalog.CPU_USD_PER_CORE_HOUR,
        memory_usd_per_hour=memory_mib / 1024 * catalog.MEMORY_USD_PER_GIB_HOUR,
    )


def kv_bytes_per_token(model: catalog.Model, tp: int, drafter: catalog.Drafter | None = None) -> int:
    """One token slot of the KV pool, per GPU. Both layer groups have the same size (half the layers each),
    so the full-attention half's bytes per token is also the page size per token of the shared pool.
    A drafter's layer joins the full-attention group, and vLLM pads the sliding group to the same count
    (12 + 13 for 20b: _get_kv_cache_groups_uniform_page_size), so each group grows by its layers."""
    kv_heads = max(1, model.num_kv_heads // tp)  # vLLM replicates KV heads when TP > KV heads
    layers = model.full_attention_layers + (drafter.num_layers if drafter is not None else 0)
    return layers * 2 * kv_heads * model.head_dim * BF16_BYTES


def default_batched_tokens(gpu: catalog.GPU) -> int:
    """vLLM's own max_num_batched_tokens for its API server on this card (see BIG_CARD_GIB): it compares
    the total torch reports."""
    return 8192 if vllm_vram_gib(gpu)[0] >= BIG_CARD_GIB else 2048


def users_batched_tokens(args: list[str]) -> int | None:
    """The --max-num-batched-tokens the user put in extra_vllm_args (either spelling), or None."""
    for i, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith(BATCHED_TOKENS_FLAG + "=") else None
        if arg == BATCHED_TOKENS_FLAG and i + 1 < len(args):
            value = args[i + 1]
        if value is not None:
            try:
                return int(value)
            except ValueError:
                raise ConfigError(
                    f"extra_vllm_args: {BATCHED_TOKENS_FLAG} takes a whole number of tokens, not {value!r}"
                ) from None
    return None


def max_num_batched_tokens(cfg: DeployConfig) -> int:
    """The engine's largest step: the user's --max-num-batched-tokens, else vLLM's default for the card."""
    return users_batched_tokens(cfg.extra_vllm_args) or default_batched_tokens(cfg.gpu_type)


def routing_token_counts(max_tokens: int) -> list[int]:
    """One token count per MoE routing kernel variant up to `max_tokens`: 1, then each ROUTING_BUCKET's
    top (a multiple of 16) and the count below it (Triton specializes on divisibility by 16)."""
    counts = {1}
    for top in range(ROUTING_BUCKET, max_tokens + ROUTING_BUCKET, ROUTING_BUCKET):
        counts |= {top, top - 1}
    return sorted(n for n in counts if n <= max(max_tokens, 1))


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


def _memory_source(mem: Memory, model: catalog.Model, gpu: catalog.GPU, count: int, drafter: bool) -> str:
    """Which of the plan's memory figures vLLM logged for this case, and what the rest are."""
    vram = (
        ""
        if mem.vram_measured
        else f"; what vLLM sees of {gpu.name}'s {gpu.vram_gib:.2f} GiB is an estimate (less {VRAM_RESERVE_GIB:.2f} GiB)"
    )
    derived = []
    if not mem.weights_measured:
        how = "scaled from 20b's Marlin excess" if mem.kernel == "marlin" else "Hopper's"
        derived.append(f"{model.short}'s weights on {mem.kernel} ({how})")
    if not mem.runtime.measured:
        derived.append(f"runtime on {mem.kernel} at {mem.batched:,} batched tokens, boot {mem.boot}")
    if count > 1:
        derived.append(f"runtime per GPU of {count} taken as on one")
    if drafter:
        derived.append("the drafter's activations not counted")
    if derived:
        return f"estimate: {', '.join(derived)}, from the runs {MEASURED}{vram}"
    if gpu.name == measured.GPU and mem.vram_measured:
        return MEASURED
    run = standing_run(model, gpu, mem.boot, mem.batched)
    if run is not None:
        stands = "" if run.gpu == gpu.name else f", standing for {gpu.name}: the same kernels and total"
        return f"measured ({run.gpu} budget emulated on an {measured.GPU}, run {run.run}{stands}){vram}"
    runs = ", ".join(mem.runtime.runs[:2])
    return f"weights and runtime measured on an {measured.GPU} ({mem.kernel}, {mem.batched:,} batched tokens: {runs}){vram}"


def boot_costs(model: catalog.Model, gpu: catalog.GPU) -> list[BootCost]:
    """Start-up and decode of each boot mode on this GPU: the H200 table, or derived from it."""
    h200 = catalog.GPUS[measured.GPU]
    costs = []
    for boot, f in measured.BOOT_FIGURES.items():
        startup, slowest = min(f.startup_s), max(f.startup_s)
        warm = min(measured.FAST_WARM_STARTUP_S) if boot == "fast" else None
        warm_max = max(measured.FAST_WARM_STARTUP_S) if boot == "fast" else None
        # The mean of the repeated single-stream runs (they agree within 3%); at max_inputs, the spread.
        single, tpot, at_max = statistics.fmean(f.single_stream_tok_s), f.tpot_ms, f.max_inputs_tok_s
        source = f"{MEASURED}: {measured.SOURCE}"
        if model.id != measured.BOOT_FIGURES_MODEL:  # 120b: only boot fast's start-up was timed
            fast = measured.BOOT_FIGURES["fast"]
            startup = min(measured.STARTUP_120B_FAST_S) + startup - min(fast.startup_s)
            slowest, warm, warm_max = startup, None, None
            single = tpot = None
            at_max = ()
            if boot == "fast" and gpu.name == measured.GPU:
                source = (
                    f"start-up {MEASURED} (runs 120b, 120b-as-h100); decode not measured for {model.short}"
                )
            else:
                source = (
                    f"estimate: {model.short}'s fast start-up {MEASURED}, plus 20b's difference between modes; "
                    f"decode not measured for {model.short}"
                )
        elif gpu.name != measured.GPU:
            scale = gpu.memory_tb_s / h200.memory_tb_s
            graphs = measured.BOOT_FIGURES["fast"]
            if boot != "eager":
                single, tpot = single * scale, tpot / scale
            else:  # eager's single stream is launch-bound, but never faster than with graphs
                single = min(single, max(graphs.single_stream_tok_s) * scale)
                tpot = max(tpot, graphs.tpot_ms / scale)
            at_max = tuple(t * scale for t in at_max)
            source = (
                f"estimate: {measured.GPU}'s figures, decode x {scale:.2f} ({gpu.name}'s memory bandwidth "
                f"{gpu.memory_tb_s} vs {h200.memory_tb_s} TB/s), "
                "start-up unchanged"
            )
        costs.append(
            BootCost(
                boot,
                round(startup, 1),
                round(single, 1) if single is not None else None,
                round(tpot, 2) if tpot is not None else None,
                tuple(round(t) for t in at_max),
                "estimate" if source.startswith("estimate") else MEASURED,
                source,
                round(slowest, 1) if slowest > startup else None,
                warm,
                warm_max if warm_max and warm and warm_max > warm else None,
            )
        )
    return costs


def _auto_context(model: catalog.Model, batched: int, blocks: int) -> int | None:
    for ctx in STANDARD_CONTEXTS:
        if ctx <= model.max_context and concurrency(model, batched, blocks, ctx) >= FULL_LENGTH_REQUESTS:
            return ctx
    for ctx in STANDARD_CONTEXTS:  # not even four: one full-length request at a time still works
        if ctx <= model.max_context and concurrency(model, batched, blocks, ctx) >= 1:
            return ctx
    return None


def cheapest_fitting_gpu(
    model: catalog.Model,
    util: float,
    boot: str,
    context: int = min(STANDARD_CONTEXTS),
    drafter: catalog.Drafter | None = None,
    *,
    batched: int | None = None,
) -> catalog.GPU | None:
    """The single GPU with the lowest price (then the least memory) that holds the model with `context`,
    each with `batched` tokens per step (the user's), else its own default. By price, not memory: an
    A100-80GB and an H100 hold within 0.3 GiB of each other, at 60% apart."""
    for gpu in sorted(catalog.GPUS.values(), key=lambda g: (g.usd_per_hour, g.vram_gib)):
        step = batched or default_batched_tokens(gpu)
        mem = memory(model, gpu, 1, util, boot, step, drafter)
        if longest_request(model, step, mem.blocks) >= context:
            return gpu
    return None


def _fitting_count(model: catalog.Model, gpu: catalog.GPU, cfg: DeployConfig) -> int | None:
    """The fewest GPUs of this kind (a power of two, for tensor parallelism) that hold the model."""
    for count in (2, 4, 8):
        batched = max_num_batched_tokens(cfg)
        mem = memory(model, gpu, count, cfg.gpu_memory_utilization, cfg.boot, batched, cfg.drafter)
        if longest_request(model, batched, mem.blocks) >= min(STANDARD_CONTEXTS):
            return count
    return None


def plan(cfg: DeployConfig) -> Plan:
    model = cfg.model_info
    if model is None:
        raise ConfigError(
            f"model: {cfg.model!r} runs on the local CPU engine only; plan a GPU model (20b or 120b)"
        )
    gpu, count = cfg.gpu_type, cfg.gpu_count
    batched = max_num_batched_tokens(cfg)
    mem = memory(model, gpu, count, cfg.gpu_memory_utilization, cfg.boot, batched, cfg.drafter)
    budget, weights, overhead, kv_gib = mem.budget, mem.weights, mem.overhead, mem.kv_gib
    max_context = longest_request(model, batched, mem.blocks)
    notes: list[str] = []
    reason = None

    if cfg.max_model_len != "auto":
        max_len, source = int(cfg.max_model_len), "config"
        if cfg.max_model_len > model.max_context:
            reason = (
                f"max_model_len {cfg.max_model_len} is above {model.id}'s limit of {model.max_context} tokens"
            )
    else:
        max_len, source = _auto_context(model, batched, mem.blocks) or 0, "auto"
    # vLLM's figures for requests of the served length (or the shortest standard one, when none fits).
    full_length = concurrency(model, batched, mem.blocks, max_len or min(STANDARD_CONTEXTS))
    kv_tokens = int(full_length * (max_len or min(STANDARD_CONTEXTS)))
    typical = int(concurrency(model, batched, mem.blocks, TYPICAL_REQUEST_TOKENS))

    where = f"{gpu.name}" + (f" x{count}" if count > 1 else "")
    model_fits = kv_gib > 0 and max_context >= min(STANDARD_CONTEXTS)
    if reason is None and source == "config" and model_fits and max_context < max_len:
        # The model fits; the context asked for (perhaps the default 32768) does not.
        reason = (
            f"max_model_len {max_len} does not fit {model.id} on {where}: its KV cache holds "
            f"{math.floor(full_length * 100) / 100:.2f} requests of that length (vLLM's maximum concurrency); the largest that fits "
            f"is {max_context}: use --max-model-len {max_context} (or auto, the planner's choice)"
        )
        bigger = cheapest_fitting_gpu(
            model,
            cfg.gpu_memory_utilization,
            cfg.boot,
            max_len,
            cfg.drafter,
            batched=users_batched_tokens(cfg.extra_vllm_args),
        )
        if bigger is not None and count == 1:
            reason += f", or --gpu {bigger.name}"
    if reason is None and (kv_gib <= 0 or max_len == 0 or max_context < max_len):
        need = weights + overhead
        if kv_gib <= 0:
            what = (
                f"{model.id} does not fit on {where}: it needs ~{need:.1f} GiB per GPU for weights and runtime, "
                f"and {gpu.name} gives vLLM {budget:.1f} GiB ({mem.vram:.1f} GiB as vLLM sees it x {cfg.gpu_memory_utilization})"
            )
        else:
            what = (
                f"{model.id} on {where} leaves KV cache for one request of at most {max_context} tokens, "
                f"fewer than max_model_len {max_len or min(STANDARD_CONTEXTS)}"
            )
        better = cheapest_fitting_gpu(
            model,
            cfg.gpu_memory_utilization,
            cfg.boot,
            drafter=cfg.drafter,
            batched=users_batched_tokens(cfg.extra_vllm_args),
        )
        if better is not None and better.name != gpu.name:
            what += f"; cheapest GPU that fits: {better.name} (use --gpu {better.name}"
            several = _fitting_count(model, gpu, cfg) if count == 1 else None
            what += f", or --gpu {gpu.name}:{several})" if several else ")"
        elif source == "config":
            what += f"; lower --max-model-len to at most {max_context}"
        reason = what

    fits = reason is None
    resources = container_resources(cfg)
    per_container = resources.usd_per_hour
    if fits:
        if source == "auto" and max_len < model.max_context:
            notes.append(
                f"context reduced to {max_len} tokens (of {model.max_context}) so that "
                f"{full_length:.2f} full-length requests fit at once; set max_model_len up to "
                f"{max_context} to trade concurrency for context"
            )
        if catalog.moe_kernel(gpu) == "marlin":
            notes.append(
                f"{gpu.name} (SM {gpu.compute_capability[0]}.{gpu.compute_capability[1]}) has no native MXFP4: "
                "vLLM runs the experts through Marlin kernels, slower than on Hopper or Blackwell"
            )
        if catalog.moe_kernel(gpu) == "triton":
            notes.append(
                f"{len(routing_token_counts(batched))} MoE routing kernel variants (one per {ROUTING_BUCKET}-token "
                f"step up to {batched:,}) are compiled once into the cache volume, on a GPU, before the first "
                "container starts (~1.5 min), so that no request waits on a compile"
            )
        if cfg.max_inputs > typical >= 1:
            notes.append(
                f"max_inputs {cfg.max_inputs} exceeds the {typical} "
                f"{TYPICAL_REQUEST_TOKENS}-token requests the KV cache holds; vLLM will queue the rest"
            )

    return Plan(
        model=model.id,
        gpu=gpu.name,
        gpu_count=count,
        tensor_parallel=cfg.tensor_parallel,
        fits=fits,
        budget_gib_per_gpu=round(budget, 2),
        weights_gib_per_gpu=round(weights, 2),
        overhead_gib_per_gpu=round(overhead, 2),
        kv_cache_gib_per_gpu=round(max(kv_gib, 0.0), 2),
        memory_source=_memory_source(mem, model, gpu, count, cfg.drafter is not None)
        + (", plus the drafter's weights and KV layer" if cfg.drafter else ""),
        kv_bytes_per_token=mem.slot_bytes,
        kv_tokens=kv_tokens,
        max_context=max_context,
        max_model_len=max_len,
        max_model_len_source=source,
        full_length_concurrency=round(full_length, 2) if max_len else 0.0,
        typical_concurrency=typical,
        max_inputs=cfg.max_inputs,
        moe_kernel=catalog.moe_kernel(gpu),
        attention_backend=catalog.attention_backend(gpu),
        max_num_batched_tokens=batched,
        boot=cfg.boot,
        boot_costs=boot_costs(model, gpu),
        cpu=resources.cpu,
        memory_gib=round(resources.memory_mib / 1024, 2),
        gpu_usd_per_hour=round(resources.gpu_usd_per_hour, 4),
        cpu_usd_per_hour=round(resources.cpu_usd_per_hour, 4),
        memory_usd_per_hour=round(resources.memory_usd_per_hour, 4),
        usd_per_hour=round(per_container, 4),
        price_date=catalog.PRICE_DATE,
        min_containers=cfg.min_containers,
        max_containers=cfg.max_containers,
        buffer_containers=cfg.buffer_containers,
        target_inputs=cfg.target_inputs or cfg.max_inputs,
        always_on_usd_per_day=round(cfg.min_containers * per_container * 24, 2),
        max_usd_per_hour=round(cfg.max_containers * per_container, 2),
        notes=notes,
        reason=reason,
        speculative=speculative.estimate(cfg),
    )


def require_fit(cfg: DeployConfig) -> Plan:
    """The plan, or ConfigError with the one-line reason (so nothing is deployed that cannot start)."""
    p = plan(cfg)
    if not p.fits:
        raise ConfigError(p.reason or "does not fit")
    return p
