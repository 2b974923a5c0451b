"""What importing vLLM's optional `humming` kernels package costs a start-up, and what
`HUMMING_DISABLE_PARALLEL_BUILD=1` (in `engine.GPU_ENGINE_ENV`) saves.

vLLM 0.26 imports `humming` while it resolves the config (its quantization helpers do, for every model, in
the API server and in a spawned engine core), and humming's import starts two background Python processes,
each importing torch again, that build its launcher (a torch C++ extension, g++) and an NVRTC helper into
`$HUMMING_CACHE_DIR` (default `~/.humming/cache`, outside every volume: a fresh container builds them
again). gpt-oss never runs humming's kernels unless asked (`--moe-backend humming`), which builds them on
first use anyway. Those processes compete for the container's few cores during start-up.

Runs `python -c "import <module>"` as a child subreaper, waits for every process it left behind, and
prints the wall time of the importing process, of the whole tree, and the CPU seconds of all of it, for:
the variable unset with humming's cache empty (a fresh container), unset with it warm, and set. Arms
alternate per repeat; each empty-cache run gets a new directory.

    python3 benchmarks/background_builds.py --python /path/to/venv/bin/python --repeats 3
    python3 benchmarks/background_builds.py --module vllm.model_executor.layers.quantization.utils.humming_utils

Needs an environment with vLLM's CUDA wheel and humming-kernels (no GPU: nothing runs on one), g++ and a
CUDA toolkit's headers for the launcher build (the container image has both: it is CUDA's devel image).
"""

from __future__ import annotations

import ctypes
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import probe_runs

PR_SET_CHILD_SUBREAPER = 36
ARMS = ("unset, cache empty", "unset, cache warm", "set")


def run_tree(argv: list[str], env: dict[str, str]) -> dict:
    """Run argv, then reap every process it left behind (this process is their subreaper); times and CPU."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    main_s = time.monotonic() - t0
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break
    all_s = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    return {"main_s": round(main_s, 2), "tree_s": round(all_s, 2), "cpu_s": round(cpu, 2)}


def main() -> None:
    ap = probe_runs.parser(__doc__)
    ap.add_argument("--module", default="humming", help="what to import (a vLLM module that imports humming)")
    ap.set_defaults(repeats=3)
    a = ap.parse_args()
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    argv = [a.python, "-c", f"import {a.module}"]
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp, "warm")
        base = {k: v for k, v in os.environ.items() if k != "HUMMING_DISABLE_PARALLEL_BUILD"}
        base["HUMMING_TMP_DIR"] = str(Path(tmp, "tmp"))
        run_tree(argv, base | {"HUMMING_CACHE_DIR": str(warm)})  # fills the warm cache, and the page cache
        for i in range(a.repeats):
            order = ARMS if i % 2 == 0 else ARMS[::-1]
            for arm in order:
                env = base | {"HUMMING_CACHE_DIR": str(warm)}
                if arm == "unset, cache empty":
                    env["HUMMING_CACHE_DIR"] = str(Path(tmp, f"empty{i}"))
                elif arm == "set":
                    env["HUMMING_DISABLE_PARALLEL_BUILD"] = "1"
                runs[arm].append(run_tree(argv, env))
    print(f"import {a.module}: {a.repeats} runs per arm, {os.cpu_count()} cores; medians (min-max)")
    print("| HUMMING_DISABLE_PARALLEL_BUILD | importing process | whole tree | CPU, all processes |")
    print("| --- | --- | --- | --- |")
    for arm, rs in runs.items():
        cells = [probe_runs.median_cell([r[key] for r in rs], " s") for key in ("main_s", "tree_s", "cpu_s")]
        print(f"| {arm} | " + " | ".join(cells) + " |")
    meta = {"module": a.module, "python": a.python, "cores": os.cpu_count(), "argv": argv}
    probe_runs.write(a.out, {"meta": meta, "runs": runs})


if __name__ == "__main__":
    main()
