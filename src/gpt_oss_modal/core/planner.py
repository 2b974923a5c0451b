"""Does a model fit a GPU, with how much context and concurrency, on which kernels, at what price.

The memory arithmetic -- what vLLM sees of a card, the weights on its MoE kernel path, vLLM's runtime, the
KV cache left and its capacity -- is `gpt_oss_modal.core.vram`'s; the container's cores, memory and price
are `gpt_oss_modal.core.resources`'. This module puts them together for a config: the context and
concurrency that fit, the engine's step size (`--max-num-batched-tokens`, always passed, so the KV
arithmetic, the kernel priming and vLLM agree), each boot mode's start-up and decode speed, the cheapest
card that fits, and the cost of the deployment's scaling settings.
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import asdict, dataclass, field

from gpt_oss_modal.core import catalog, measured, speculative
from gpt_oss_modal.core.config import ConfigError, DeployConfig
from gpt_oss_modal.core.resources import container_resources
from gpt_oss_modal.core.vram import (
    VRAM_RESERVE_GIB,
    Memory,
    concurrency,
    longest_request,
    memory,
    standing_run,
    vllm_vram_gib,
)

# Auto context: the largest of these that leaves room for this many full-length requests at once.
STANDARD_CONTEXTS = (131072, 65536, 32768, 16384, 8192, 4096)
FULL_LENGTH_REQUESTS = 4
# "Concurrency that fits" is also reported for a typical chat request of this many tokens.
TYPICAL_REQUEST_TOKENS = 4096
MEASURED = f"measured on {measured.GPU}"
# vLLM's chunked-prefill step for its API server when not told: 8,192 tokens on cards of 70 GiB or more,
# else 2,048 (vllm/engine/arg_utils.py). The engine command always passes the plan's value, so the KV
# arithmetic (vram), the kernel priming and vLLM agree whatever vLLM's own heuristic does on a card.
BIG_CARD_GIB = 70
BATCHED_TOKENS_FLAG = "--max-num-batched-tokens"
# Hopper's MoE routing kernels are compiled per step size rounded up to this many tokens, each bucket in
# two specializations (gpt_oss_modal.server.precompile primes them all).
ROUTING_BUCKET = 32
# The row-block sizes Hopper's MXFP4 expert matmuls (triton_kernels' matmul_ogs) choose from, by tokens per
# expert: each compiles per block size and per how the step's integer arguments specialize.
MOE_MATMUL_BLOCKS = (16, 32, 64, 128)


@dataclass(frozen=True)
class BootCost:
    """What a boot mode costs (start-up) and buys (decode) on the planned GPU; None where not known."""

    boot: str
    startup_s: float | None  # process start to /health of the first container after deploy: the fastest run
    single_stream_tok_s: float | None  # output tokens/s at concurrency 1
    tpot_ms: float | None
    max_inputs_tok_s: tuple[float, ...]  # output tokens/s at concurrency 50, each run
    label: str  # "measured on H200" or "estimate"
    source: str  # where the figures come from, or how they were derived
    startup_max_s: float | None = None  # the slowest run, where there were several
    startup_estimated: bool = False  # start-up derived (from fast's and what compiling adds), not timed


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


def default_batched_tokens(gpu: catalog.GPU) -> int:
    """vLLM's own max_num_batched_tokens for its API server on this card (see BIG_CARD_GIB): it compares
    the total torch reports."""
    return 8192 if vllm_vram_gib(gpu)[0] >= BIG_CARD_GIB else 2048


def flag_values(args: list[str], *names: str) -> list[str]:
    """The values given to any of the flags `names` in a vLLM argument list, in order (`--flag value` and
    `--flag=value` alike)."""
    values = []
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in names and eq:
            values.append(value)
        elif arg in names and i + 1 < len(args):
            values.append(args[i + 1])
    return values


def users_batched_tokens(args: list[str]) -> int | None:
    """The --max-num-batched-tokens the user put in extra_vllm_args (either spelling), or None."""
    for value in flag_values(args, BATCHED_TOKENS_FLAG)[:1]:
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


def _triton_int(value: int) -> str:
    """How Triton specializes an integer argument: the constant 1, a multiple of 16, or neither."""
    return "1" if value == 1 else "16" if value % 16 == 0 else ""


def _expert_blocks(rows: int, experts: int, block: int) -> int:
    """The expert matmul's row blocks for `rows` routed rows (triton_kernels' RoutingData.n_blocks)."""
    return rows if rows <= experts else -(-(rows - experts + 1) // block) + experts - 1


@functools.cache  # every plan on Hopper counts them for its note: a walk over every step size
def moe_token_counts(max_tokens: int, experts: int, top_k: int) -> tuple[int, ...]:
    """Step sizes up to `max_tokens` that between them meet every variant of Hopper's MoE kernels: the
    routing variants (routing_token_counts) and the expert matmuls'. A matmul variant is fixed by its row
    block (chosen by tokens per expert: one count per power-of-two range is taken) and by how Triton
    specializes the integers that grow with the step -- its tokens, routed rows (tokens x top_k) and row
    blocks at each block size -- so the smallest count of each combination stands for all of it."""
    seen: dict[tuple, int] = {}
    for n in range(1, max(max_tokens, 1) + 1):
        rows = n * top_k
        key = (
            n.bit_length(),
            _triton_int(n),
            _triton_int(rows),
            *(_triton_int(_expert_blocks(rows, experts, b)) for b in MOE_MATMUL_BLOCKS),
        )
        seen.setdefault(key, n)
    return tuple(sorted(set(routing_token_counts(max_tokens)) | set(seen.values())))


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
    fast = measured.BOOT_FIGURES["fast"]
    for boot, f in measured.BOOT_FIGURES.items():
        estimated = not f.startup_s  # not started with today's engine
        if estimated:  # fast's start-up plus what compiling added to it in the same session
            startup, slowest = min(fast.startup_s) + min(f.compile_s), max(fast.startup_s) + max(f.compile_s)
        else:
            startup, slowest = min(f.startup_s), max(f.startup_s)
        # The mean of the repeated single-stream runs (they agree within 3%); at max_inputs, the spread.
        single, tpot, at_max = statistics.fmean(f.single_stream_tok_s), f.tpot_ms, f.max_inputs_tok_s
        source = f"{MEASURED}: {measured.SOURCE}"
        if estimated:
            source += (
                f"; {boot}'s start-up: fast's plus what compiling added to it in study v2 "
                f"({min(f.compile_s):g}-{max(f.compile_s):g} s)"
            )
        if model.id != measured.BOOT_FIGURES_MODEL:  # 120b: only boot fast's start-up was timed
            startup = min(measured.STARTUP_120B_FAST_S) + startup - min(fast.startup_s)
            slowest = startup
            single = tpot = None
            at_max = ()
            if boot == "fast" and gpu.name == measured.GPU:
                source = (
                    f"start-up {MEASURED} in study v2 (runs 120b, 120b-as-h100), before the engine's start-up "
                    f"fixes of study v6; decode not measured for {model.short}"
                )
            else:
                source = (
                    f"estimate: {model.short}'s fast start-up {MEASURED}, plus 20b's difference between modes; "
                    f"decode not measured for {model.short}"
                )
        elif gpu.name != measured.GPU:
            scale = gpu.memory_tb_s / h200.memory_tb_s
            if boot != "eager":
                single, tpot = single * scale, tpot / scale
            else:  # eager's single stream is launch-bound, but never faster than with graphs
                single = min(single, max(fast.single_stream_tok_s) * scale)
                tpot = max(tpot, fast.tpot_ms / scale)
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
                estimated,
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
                f"the MoE kernels of {len(moe_token_counts(batched, model.num_experts, model.experts_per_token))} "
                f"step sizes up to {batched:,} (routing per {ROUTING_BUCKET}-token step, expert matmuls per row "
                "block) are compiled once into the cache volume, on a GPU, before the first container starts "
                "(~1.5 min), so that no request waits on a compile"
            )
        if cfg.max_inputs > typical >= 1:
            notes.append(
                f"max_inputs {cfg.max_inputs} exceeds the {typical} "
                f"{TYPICAL_REQUEST_TOKENS}-token requests the KV cache holds; vLLM will queue the rest"
            )
        if cfg.drafter is not None and cfg.boot != "compiled":
            # vLLM gives the drafter CUDA graphs only where mixed batches have them (piecewise: torch.compile).
            notes.append(
                f"with boot {cfg.boot} the drafter runs without CUDA graphs, one launch-bound pass per draft "
                "token: the measured step cost (docs/performance.md) is this case; boot compiled gives it "
                "piecewise graphs (not measured)"
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
