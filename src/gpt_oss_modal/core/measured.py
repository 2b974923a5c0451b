"""What vLLM measured on a real GPU, as typed data: the planner's memory calibration and each boot mode's cost.

The figures live in `measured.toml` beside this module (shipped with the package); its `source` line says
which study made them and how to repeat it. This module only reads that file into the dataclasses below.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class Vram:
    """A card's memory as vLLM sees it: vLLM budgets gpu_memory_utilization x what torch reports as the
    card's total (torch.cuda.mem_get_info()[1]), a little less than nvidia-smi's memory.total."""

    gpu: str
    driver_total_mib: int  # nvidia-smi's memory.total
    vllm_total_gib: float  # what torch (and so vLLM) sees
    runs: tuple[str, ...]  # where it was read (raw results)

    @property
    def reserve_gib(self) -> float:
        """What the driver keeps out of torch's total."""
        return self.driver_total_mib / 1024 - self.vllm_total_gib


@dataclass(frozen=True)
class KvRun:
    """One start-up's settings and vLLM's own memory figures: its budget, the parts it keeps out of the KV
    cache, "Available KV cache memory", "GPU KV cache size" and "Maximum concurrency". The planner takes its
    weights and runtime from these; its calibration test checks the plan against each. `runs`: every run that
    started with these settings and logged these figures (raw results under `results`)."""

    runs: tuple[str, ...]
    results: str  # the folder holding the runs' raw results ("" where they were not kept)
    model: str
    gpu: str  # the card whose budget and kernels the run reproduced (on an H200), or the H200 itself
    boot: str
    util: float  # --gpu-memory-utilization as passed
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    moe_kernel: str  # the MXFP4 MoE path vLLM logged: "marlin" or "triton"
    attention: str  # the attention backend vLLM logged
    budget_gib: float  # vLLM's "Desired GPU memory utilization is (U, B GiB)": util x what torch sees
    kv_cache_gib: float
    kv_tokens: int
    max_concurrency: float  # for requests of max_model_len tokens
    weights_gib: float | None = None  # "Model loading took N GiB"; None where the run's parts were not kept
    activation_gib: float | None = None  # the profile run's peak activation
    non_torch_gib: float | None = None  # CUDA context, NCCL, cuBLAS workspaces
    graphs_gib: float | None = None  # the CUDA-graph pool

    @property
    def run(self) -> str:
        return self.runs[0]

    @property
    def has_parts(self) -> bool:
        return None not in (self.weights_gib, self.activation_gib, self.non_torch_gib, self.graphs_gib)

    @property
    def runtime_gib(self) -> float | None:
        """Activation peak + non-torch + graph pool: what vLLM keeps out of the KV cache besides the weights."""
        if not self.has_parts:
            return None
        return self.activation_gib + self.non_torch_gib + self.graphs_gib  # type: ignore[operator]


@dataclass(frozen=True)
class BootFigures:
    """What one boot mode costs (start-up) and buys (decode), for gpt-oss-20b.

    Start-up: the product's engine today, process start to /health of the first container after a deploy;
    empty where a mode was not started with it, and compile_s then says what it adds to fast's. Decode:
    `gpt-oss-modal bench --duration`, random 1,024 in / 512 out, ignore-eos; several values are repeated runs
    (the spread is the point)."""

    boot: str
    startup_s: tuple[float, ...]
    single_stream_tok_s: tuple[float, ...]  # concurrency 1, output tokens/s
    tpot_ms: float  # median time per output token at concurrency 1
    max_inputs_tok_s: tuple[float, ...]  # concurrency 50 (max_inputs), output tokens/s
    runs: tuple[str, ...]
    # What torch.compile and the prefill graphs add to fast's start-up on cold caches (modes not started today).
    compile_s: tuple[float, ...] = ()


@dataclass(frozen=True)
class SpeculativeStep:
    """The cost of one speculative step (a verify pass of k + 1 tokens per request and k draft passes) at
    each measured concurrency, beside one decode step of the same engine without a drafter."""

    model: str
    boot: str
    concurrency: tuple[int, ...]
    decode_tpot_ms: tuple[float, ...]  # per concurrency
    tpot_ms: dict[int, tuple[float, ...]]  # draft tokens k -> per concurrency
    runs: tuple[str, ...]


def _load() -> dict[str, Any]:
    return tomllib.loads(resources.files(__package__).joinpath("measured.toml").read_text())


_DATA = _load()

SOURCE: str = _DATA["source"]
GPU: str = _DATA["gpu"]  # the class every figure was measured on
VRAM = {v["gpu"]: Vram(**{**v, "runs": tuple(v["runs"])}) for v in _DATA["vram"]}
KV_RUNS = tuple(KvRun(**{**r, "runs": tuple(r["runs"])}) for r in _DATA["kv_run"])
BOOT_FIGURES_MODEL: str = _DATA["boot_figures"]["model"]
BOOT_FIGURES = {
    boot: BootFigures(boot=boot, **{k: tuple(v) if isinstance(v, list) else v for k, v in f.items()})
    for boot, f in _DATA["boot_figures"].items()
    if isinstance(f, dict)
}
_spec = _DATA["speculative_step"]
SPECULATIVE_STEP = SpeculativeStep(
    model=_spec["model"],
    boot=_spec["boot"],
    concurrency=tuple(_spec["concurrency"]),
    decode_tpot_ms=tuple(_spec["decode_tpot_ms"]),
    tpot_ms={int(k): tuple(v) for k, v in _spec["tpot_ms"].items()},
    runs=tuple(_spec["runs"]),
)
# gpt-oss-120b (boot fast) was timed to /health only.
STARTUP_120B_FAST_S = tuple(_DATA["startup_120b_fast"]["startup_s"])
