"""What switching on vLLM's kernel JIT monitor costs at the end of an engine's warm-up, with and without the
product's engine fixes (`server/_vllm_site`, first on the engine's PYTHONPATH), which leave TileLang
unimported where no TileLang kernel runs (gpt-oss).

Each run is a fresh interpreter that imports torch, Triton and `vllm.utils.jit_monitor` (on vLLM's CPU
platform: no GPU needed, the monitor's start is the same), then times `activate()`; the arms alternate.

    python3 benchmarks/jit_monitor_start.py --python /path/to/venv/bin/python --repeats 5

Needs an environment with vLLM's CUDA wheel (0.26: its TileLang and TVM come with it).
"""

from __future__ import annotations

import os

import probe_runs

PROBE = r"""
import json, sys, time
import torch, triton
from vllm import platforms
from vllm.platforms.cpu import CpuPlatform
platforms.current_platform = CpuPlatform()
from vllm.utils import jit_monitor
t0 = time.perf_counter()
jit_monitor.activate(mode="warn")
print(json.dumps({"activate_s": time.perf_counter() - t0, "tilelang_imported": "tilelang" in sys.modules}))
"""


def main() -> None:
    a = probe_runs.parser(__doc__).parse_args()
    envs = probe_runs.fixes_envs()
    runs = probe_runs.alternating(
        {arm: ([a.python, "-c", PROBE], env) for arm, env in envs.items()}, a.repeats
    )
    head = ("engine", "`jit_monitor.activate()`", "TileLang imported")
    probe_runs.print_table(runs, head, "activate_s", "tilelang_imported")
    probe_runs.write(a.out, {"python": a.python, "cores": os.cpu_count(), "runs": runs})


if __name__ == "__main__":
    main()
