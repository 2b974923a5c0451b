"""What the API server costs before its first line, by entry point: `vllm serve` (the CLI, which imports every
subcommand and builds all their parsers) against `python -m vllm.entrypoints.openai.api_server` (the server
module and its own parser only).

Each run is a fresh interpreter that imports vLLM (on vLLM's CPU platform, so no GPU is needed: the imports
and parsers are the same), then the entry point's modules, then builds its argument parser, and prints the
three times; the arms alternate.

    python3 benchmarks/entry_imports.py --python /path/to/venv/bin/python --repeats 5

Needs an environment with vLLM (its CUDA wheel, as in the container: the module set differs from the CPU
wheel's).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

# Runs in the measured interpreter: argv[1] is "cli" or "module"; prints one JSON line.
PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
from vllm import platforms
from vllm.platforms.cpu import CpuPlatform
platforms.current_platform = CpuPlatform()
from vllm.utils.argparse_utils import FlexibleArgumentParser
t1 = time.perf_counter()
if sys.argv[1] == "cli":  # what vllm.entrypoints.cli.main.main does before it dispatches
    import vllm.entrypoints.cli.benchmark.main, vllm.entrypoints.cli.collect_env, vllm.entrypoints.cli.launch
    import vllm.entrypoints.cli.openai, vllm.entrypoints.cli.run_batch, vllm.entrypoints.cli.serve
    modules = [vllm.entrypoints.cli.openai, vllm.entrypoints.cli.serve, vllm.entrypoints.cli.launch,
               vllm.entrypoints.cli.benchmark.main, vllm.entrypoints.cli.collect_env,
               vllm.entrypoints.cli.run_batch]
    import vllm.entrypoints.openai.api_server  # what `serve` imports when it runs
    t2 = time.perf_counter()
    sub = FlexibleArgumentParser().add_subparsers(dest="subparser")
    for m in modules:
        for cmd in m.cmd_init():
            cmd.subparser_init(sub)
else:
    import vllm.entrypoints.openai.api_server
    from vllm.entrypoints.openai.cli_args import make_arg_parser
    t2 = time.perf_counter()
    make_arg_parser(FlexibleArgumentParser())
t3 = time.perf_counter()
print(json.dumps({"vllm_s": t1 - t0, "entry_imports_s": t2 - t1, "parsers_s": t3 - t2, "total_s": t3 - t0}))
"""
ARMS = ("cli", "module")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=sys.executable, help="interpreter of an environment with vLLM")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, help="write the runs here as JSON")
    a = ap.parse_args()
    env = os.environ | {"HUMMING_DISABLE_PARALLEL_BUILD": "1"}  # as in the product's engine
    subprocess.run([a.python, "-c", PROBE, "module"], env=env, check=True, capture_output=True)  # page cache
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for i in range(a.repeats):
        for arm in ARMS if i % 2 == 0 else ARMS[::-1]:
            out = subprocess.run(
                [a.python, "-c", PROBE, arm], env=env, check=True, capture_output=True, text=True
            )
            runs[arm].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{a.repeats} runs per arm, {os.cpu_count()} cores; medians (min-max), seconds")
    print("| entry point | import vLLM | the entry point's modules | argument parsers | total |")
    print("| --- | --- | --- | --- | --- |")
    names = {"cli": "`vllm serve`", "module": "`python -m vllm.entrypoints.openai.api_server`"}
    for arm, rs in runs.items():
        cells = []
        for key in ("vllm_s", "entry_imports_s", "parsers_s", "total_s"):
            xs = [r[key] for r in rs]
            cells.append(f"{statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})")
        print(f"| {names[arm]} | " + " | ".join(cells) + " |")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"python": a.python, "cores": os.cpu_count(), "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
