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
class Overhead:
    """Memory vLLM keeps out of the KV cache besides the weights: budget - weights - "Available KV cache
    memory", where budget = driver total x gpu_memory_utilization. It holds the CUDA context, the profile
    run's activation peak and the CUDA-graph pool, so it depends on the boot mode."""

    model: str
    boot: str
    budget_gib: float  # the run's budget, 140.40 GiB x util
    gib: float
    run: str  # the study's run name (its raw result: benchmarks/results_v2/<run>)


@dataclass(frozen=True)
class KvRun:
    """One start-up's settings and vLLM's own KV figures ("Available KV cache memory", "GPU KV cache size"),
    for the planner's calibration test. `runs`: every run that started with these settings and logged them."""

    runs: tuple[str, ...]
    model: str
    boot: str
    util: float
    max_model_len: int
    max_num_seqs: int
    moe_backend: str  # vLLM's --moe-backend: "auto" picks Triton on Hopper
    kv_cache_gib: float
    kv_tokens: int

    @property
    def run(self) -> str:
        return self.runs[0]


@dataclass(frozen=True)
class BootFigures:
    """What one boot mode costs (start-up) and buys (decode), for gpt-oss-20b.

    Start-up: cold caches, process start to /health. Decode: `gpt-oss-modal bench --duration`, random
    1,024 in / 512 out, ignore-eos; several values are repeated runs (the spread is the point)."""

    boot: str
    startup_s: tuple[float, ...]
    single_stream_tok_s: tuple[float, ...]  # concurrency 1, output tokens/s
    tpot_ms: float  # median time per output token at concurrency 1
    max_inputs_tok_s: tuple[float, ...]  # concurrency 50 (max_inputs), output tokens/s
    runs: tuple[str, ...]


def _load() -> dict[str, Any]:
    return tomllib.loads(resources.files(__package__).joinpath("measured.toml").read_text())


_DATA = _load()

SOURCE: str = _DATA["source"]
GPU: str = _DATA["gpu"]  # the class every figure was measured on
WEIGHTS_GIB: dict[str, float] = dict(_DATA["weights_gib"])  # "Model loading took N GiB", per model
OVERHEADS = tuple(Overhead(**o) for o in _DATA["overhead"])
KV_RUNS = tuple(KvRun(**{**r, "runs": tuple(r["runs"])}) for r in _DATA["kv_run"])
BOOT_FIGURES_MODEL: str = _DATA["boot_figures"]["model"]
BOOT_FIGURES = {
    boot: BootFigures(boot=boot, **{k: tuple(v) if isinstance(v, list) else v for k, v in f.items()})
    for boot, f in _DATA["boot_figures"].items()
    if isinstance(f, dict)
}
# A warm restart of `fast` (the caches of its first start kept): what a Modal container after the first sees.
FAST_WARM_STARTUP_S = tuple(_DATA["fast_warm_restart"]["startup_s"])
# gpt-oss-120b (boot fast) was timed to /health only.
STARTUP_120B_FAST_S = tuple(_DATA["startup_120b_fast"]["startup_s"])
