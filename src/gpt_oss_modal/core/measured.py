"""What vLLM measured on a real GPU, as data: the planner's memory calibration and each boot mode's cost.

Source: scripts/gpu/results_v2/<run>/result.json, written by

    PYTHONPATH=src python3 scripts/gpu/study_v2.py --gpu 0 --out /root/res eager fast 120b
    PYTHONPATH=src python3 scripts/gpu/study_v2.py --gpu 1 --out /root/res fast-nowarm compiled fast-levels 120b-as-h100
    bash scripts/gpu/pair.sh 490 "study fast-v3" "study compiled-v3"        # session 4, then on the same host:
    bash scripts/gpu/pair.sh 565 "study fast-v3-restart fast-fp8" "study fast-2rounds fast-si20"

on the lent H200 (driver total 143,771 MiB), vLLM 0.26.0, `--load-format dummy` with the models' published
config.json, max_model_len 32768, max_num_seqs 50, each mode with its own cold vLLM/Triton/Inductor caches.
Figures for other GPUs are derived from these and reported as estimates.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE = "scripts/gpu/results_v2, from scripts/gpu/study_v2.py on vLLM 0.26.0"
GPU = "H200"  # the class every figure below was measured on

# What vLLM logs as "Model loading took N GiB": the weights as loaded on one GPU (runs eager/fast/compiled
# for 20b, 120b and 120b-as-h100 for 120b; the same in every run of a model).
WEIGHTS_GIB = {"openai/gpt-oss-20b": 13.03, "openai/gpt-oss-120b": 61.43}


@dataclass(frozen=True)
class Overhead:
    """Memory vLLM keeps out of the KV cache besides the weights: budget - weights - "Available KV cache
    memory", where budget = driver total x gpu_memory_utilization. It holds the CUDA context, the profile
    run's activation peak and the CUDA-graph pool, so it depends on the boot mode."""

    model: str
    boot: str
    budget_gib: float  # the run's budget, 140.40 GiB x util
    gib: float
    run: str  # scripts/gpu/results_v2/<run>


OVERHEADS = (
    Overhead("openai/gpt-oss-20b", "eager", 126.36, 1.31, "eager"),  # KV 112.02 GiB
    Overhead("openai/gpt-oss-20b", "fast", 126.36, 1.39, "fast"),  # KV 111.94 GiB, graph pool 0.07 GiB
    Overhead("openai/gpt-oss-20b", "compiled", 126.36, 2.25, "compiled"),  # KV 111.08 GiB, graphs 0.31 GiB
    Overhead("openai/gpt-oss-120b", "fast", 126.36, 1.40, "120b"),  # KV 63.53 GiB
    # util 0.5106: vLLM's budget on an H100 80GB (81,559 MiB) at 0.9, reproduced on the H200.
    Overhead("openai/gpt-oss-120b", "fast", 71.69, 1.16, "120b-as-h100"),  # KV 9.10 GiB
)


@dataclass(frozen=True)
class KvRun:
    """One start-up's settings and vLLM's own KV figures ("Available KV cache memory", "GPU KV cache size",
    "Maximum concurrency"), for the planner's calibration test."""

    run: str
    model: str
    boot: str
    util: float
    max_model_len: int
    max_num_seqs: int
    kv_cache_gib: float
    kv_tokens: int


# An H200 run of the first boot-mode study (issue 12, vLLM 0.26.0, 20b, boot unrecorded there): its KV memory
# is 1.5 GiB above what the later runs leave at the same util, so the planner matches it within 3%, not 1%.
OLDER_KV_RUNS = (KvRun("issue-12", "openai/gpt-oss-20b", "fast", 0.9, 131072, 32, 114.83, 4_455_183),)


@dataclass(frozen=True)
class BootFigures:
    """What one boot mode costs (start-up) and buys (decode), for gpt-oss-20b, from one session.

    Start-up: cold caches, process start to /health. Decode: `gpt-oss-modal bench --duration`, random
    1,024 in / 512 out, ignore-eos; several values are repeated runs (the spread is the point)."""

    boot: str
    startup_s: tuple[float, ...]
    single_stream_tok_s: tuple[float, ...]  # concurrency 1, output tokens/s
    tpot_ms: float  # median time per output token at concurrency 1
    max_inputs_tok_s: tuple[float, ...]  # concurrency 50 (max_inputs), output tokens/s
    runs: tuple[str, ...]


BOOT_FIGURES = {
    f.boot: f
    for f in (
        BootFigures("eager", (116.2,), (18.9,), 52.9, (727.0,), ("eager",)),
        # Start-up: every cold fast start of the sessions, on both GPUs of the host (fast-2rounds and
        # fast-precompiled differ after /health only). At 50 streams: session 4's three 60-s levels, one
        # after another on one server (the first pays for the kernels compiled during it).
        BootFigures(
            "fast",
            (121.1, 127.2, 128.2, 107.1, 97.1, 123.2),
            (308.0, 308.0, 309.5),
            3.09,
            (5358.0, 7754.0, 8033.0),
            ("fast", "fast-nowarm", "fast-levels", "fast-v3", "fast-2rounds", "fast-precompiled"),
        ),
        BootFigures(
            "compiled",
            (145.2, 136.2),
            (323.5, 315.8, 328.8),
            3.03,
            (7909.0, 8753.0, 8780.0),
            ("compiled", "compiled-v3"),
        ),
    )
}
# A warm restart of `fast`: the same command on the caches its first start left (fast-v3-restart; fast-si20,
# whose flag adds no kernel, on a copy of them) -- what a Modal container after the first one sees.
FAST_WARM_STARTUP_S = (54.1, 55.1)
BOOT_FIGURES_MODEL = "openai/gpt-oss-20b"
# gpt-oss-120b (boot fast) was timed to /health only: runs 120b and 120b-as-h100.
STARTUP_120B_FAST_S = (135.2, 133.2)
