"""Does a model fit a GPU, with how much context and concurrency, on which kernels, at what price.

The arithmetic, per GPU of a tensor-parallel group:

    budget   = VRAM x gpu_memory_utilization          (vLLM never takes more than this)
    weights  = checkpoint size / TP                    (MXFP4 experts stay 4-bit on every kernel path)
    overhead = CUDA context + activation peak (+ CUDA graphs when compiled)   -- our estimate, see below
    KV cache = budget - weights - overhead

GPT-OSS alternates full attention with 128-token sliding-window attention, so only half the layers keep a
KV entry for every token of the context; the sliding layers hold at most the window per request.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from . import catalog
from .catalog import GiB
from .config import ConfigError, DeployConfig

BF16_BYTES = 2
# Estimates from vLLM start-up logs of gpt-oss on H100 (non-torch memory ~0.7 GiB, activation peak of the
# profile run ~1.5 GiB with 8k batched tokens); CUDA graphs for the sizes max_inputs needs take < 0.5 GiB.
RUNTIME_OVERHEAD_GIB = 2.2
CUDA_GRAPH_GIB = 0.5
# Auto context: the largest of these that leaves room for this many full-length requests at once.
STANDARD_CONTEXTS = (131072, 65536, 32768, 16384, 8192, 4096)
FULL_LENGTH_REQUESTS = 4
# "Concurrency that fits" is also reported for a typical chat request of this many tokens.
TYPICAL_REQUEST_TOKENS = 4096


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
    kv_bytes_per_token: int  # per GPU, full-attention layers only
    kv_tokens: int  # tokens of context the KV cache holds across all requests
    max_context: int  # the longest single request that fits
    max_model_len: int  # what we will pass to vLLM
    max_model_len_source: str  # "config" (a number was given, or the default) or "auto"
    full_length_concurrency: int  # requests of max_model_len tokens that fit at once
    typical_concurrency: int  # requests of TYPICAL_REQUEST_TOKENS that fit at once
    max_inputs: int
    moe_kernel: str
    attention_backend: str
    boot: str
    usd_per_hour: float  # one container (all its GPUs)
    price_date: str
    min_containers: int
    max_containers: int
    buffer_containers: int
    target_inputs: int  # what Modal's autoscaler aims for per container (max_inputs unless set lower)
    always_on_usd_per_day: float  # min_containers billed around the clock, traffic or not
    max_usd_per_hour: float  # the ceiling: max_containers all running
    notes: list[str] = field(default_factory=list)
    reason: str | None = None  # why it does not fit, with a way out

    def to_dict(self) -> dict:
        return asdict(self)


def kv_bytes_per_token(model: catalog.Model, tp: int) -> int:
    kv_heads = max(1, model.num_kv_heads // tp)  # vLLM replicates KV heads when TP > KV heads
    return model.full_attention_layers * 2 * kv_heads * model.head_dim * BF16_BYTES


def sliding_bytes_per_request(model: catalog.Model, tp: int) -> int:
    kv_heads = max(1, model.num_kv_heads // tp)
    return model.sliding_layers * model.sliding_window * 2 * kv_heads * model.head_dim * BF16_BYTES


def _memory(model: catalog.Model, gpu: catalog.GPU, count: int, util: float, boot: str, max_inputs: int):
    budget = gpu.vram_gib * util
    weights = model.weights_gib / count
    overhead = RUNTIME_OVERHEAD_GIB + (CUDA_GRAPH_GIB if boot != "eager" else 0.0)
    kv_gib = budget - weights - overhead
    per_token = kv_bytes_per_token(model, count)
    sliding = sliding_bytes_per_request(model, count) * max_inputs
    kv_tokens = max(0, int((kv_gib * GiB - sliding) // per_token)) if kv_gib > 0 else 0
    return budget, weights, overhead, kv_gib, per_token, kv_tokens


def _auto_context(model: catalog.Model, kv_tokens: int) -> int | None:
    for ctx in STANDARD_CONTEXTS:
        if ctx <= model.max_context and kv_tokens >= FULL_LENGTH_REQUESTS * ctx:
            return ctx
    for ctx in STANDARD_CONTEXTS:  # not even four: one full-length request at a time still works
        if ctx <= model.max_context and kv_tokens >= ctx:
            return ctx
    return None


def smallest_fitting_gpu(
    model: catalog.Model, util: float, boot: str, max_inputs: int, context: int = min(STANDARD_CONTEXTS)
) -> catalog.GPU | None:
    """The single GPU with the least memory (then the lowest price) that holds the model with `context`."""
    for gpu in sorted(catalog.GPUS.values(), key=lambda g: (g.vram_gib, g.usd_per_hour)):
        *_, kv_tokens = _memory(model, gpu, 1, util, boot, max_inputs)
        if kv_tokens >= context:
            return gpu
    return None


def _fitting_count(model: catalog.Model, gpu: catalog.GPU, cfg: DeployConfig) -> int | None:
    """The fewest GPUs of this kind (a power of two, for tensor parallelism) that hold the model."""
    for count in (2, 4, 8):
        *_, kv_tokens = _memory(model, gpu, count, cfg.gpu_memory_utilization, cfg.boot, cfg.max_inputs)
        if kv_tokens >= min(STANDARD_CONTEXTS):
            return count
    return None


def plan(cfg: DeployConfig) -> Plan:
    model = cfg.model_info
    if model is None:
        raise ConfigError(
            f"model: {cfg.model!r} runs on the local CPU engine only; plan a GPU model (20b or 120b)"
        )
    gpu, count = cfg.gpu_type, cfg.gpu_count
    budget, weights, overhead, kv_gib, per_token, kv_tokens = _memory(
        model, gpu, count, cfg.gpu_memory_utilization, cfg.boot, cfg.max_inputs
    )
    max_context = min(model.max_context, kv_tokens)
    notes: list[str] = []
    reason = None

    if cfg.max_model_len != "auto":
        max_len, source = int(cfg.max_model_len), "config"
        if cfg.max_model_len > model.max_context:
            reason = (
                f"max_model_len {cfg.max_model_len} is above {model.id}'s limit of {model.max_context} tokens"
            )
    else:
        max_len, source = _auto_context(model, kv_tokens) or 0, "auto"

    where = f"{gpu.name}" + (f" x{count}" if count > 1 else "")
    model_fits = kv_gib > 0 and max_context >= min(STANDARD_CONTEXTS)
    if reason is None and source == "config" and model_fits and max_context < max_len:
        # The model fits; the context asked for (perhaps the default 32768) does not.
        reason = (
            f"max_model_len {max_len} does not fit {model.id} on {where}: its KV cache holds {kv_tokens} "
            f"tokens; the largest that fits is {max_context}: use --max-model-len {max_context} (or auto, "
            "the planner's choice)"
        )
        bigger = smallest_fitting_gpu(model, cfg.gpu_memory_utilization, cfg.boot, cfg.max_inputs, max_len)
        if bigger is not None and count == 1:
            reason += f", or --gpu {bigger.name}"
    if reason is None and (kv_gib <= 0 or max_len == 0 or kv_tokens < max_len):
        need = weights + overhead
        if kv_gib <= 0:
            what = (
                f"{model.id} does not fit on {where}: it needs ~{need:.1f} GiB per GPU for weights and runtime, "
                f"and {gpu.name} gives vLLM {budget:.1f} GiB ({gpu.vram_gib:.0f} GiB x {cfg.gpu_memory_utilization})"
            )
        else:
            what = (
                f"{model.id} on {where} leaves KV cache for {kv_tokens} tokens, "
                f"fewer than max_model_len {max_len or min(STANDARD_CONTEXTS)}"
            )
        better = smallest_fitting_gpu(model, cfg.gpu_memory_utilization, cfg.boot, cfg.max_inputs)
        if better is not None and better.name != gpu.name:
            what += f"; smallest GPU that fits: {better.name} (use --gpu {better.name}"
            several = _fitting_count(model, gpu, cfg) if count == 1 else None
            what += f", or --gpu {gpu.name}:{several})" if several else ")"
        elif source == "config":
            what += f"; lower --max-model-len to at most {max_context}"
        reason = what

    fits = reason is None
    per_container = gpu.usd_per_hour * count
    if fits:
        if source == "auto" and max_len < model.max_context:
            notes.append(
                f"context reduced to {max_len} tokens (of {model.max_context}) so that "
                f"{max(1, kv_tokens // max_len)} full-length requests fit at once; set max_model_len up to "
                f"{max_context} to trade concurrency for context"
            )
        if catalog.moe_kernel(gpu) == "marlin":
            notes.append(
                f"{gpu.name} (SM {gpu.compute_capability[0]}.{gpu.compute_capability[1]}) has no native MXFP4: "
                "vLLM runs the experts through Marlin kernels, slower than on Hopper or Blackwell"
            )
        if (
            cfg.max_inputs > kv_tokens // max(1, TYPICAL_REQUEST_TOKENS)
            and kv_tokens >= TYPICAL_REQUEST_TOKENS
        ):
            notes.append(
                f"max_inputs {cfg.max_inputs} exceeds the {kv_tokens // TYPICAL_REQUEST_TOKENS} "
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
        kv_bytes_per_token=per_token,
        kv_tokens=kv_tokens,
        max_context=max_context,
        max_model_len=max_len,
        max_model_len_source=source,
        full_length_concurrency=kv_tokens // max_len if max_len else 0,
        typical_concurrency=kv_tokens // TYPICAL_REQUEST_TOKENS,
        max_inputs=cfg.max_inputs,
        moe_kernel=catalog.moe_kernel(gpu),
        attention_backend=catalog.attention_backend(gpu),
        boot=cfg.boot,
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
    )


def require_fit(cfg: DeployConfig) -> Plan:
    """The plan, or ConfigError with the one-line reason (so nothing is deployed that cannot start)."""
    p = plan(cfg)
    if not p.fits:
        raise ConfigError(p.reason or "does not fit")
    return p
