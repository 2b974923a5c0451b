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

import os

import probe_runs

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
    a = probe_runs.parser(__doc__).parse_args()
    env = os.environ | {"HUMMING_DISABLE_PARALLEL_BUILD": "1"}  # as in the product's engine
    runs = probe_runs.alternating({arm: ([a.python, "-c", PROBE, arm], env) for arm in ARMS}, a.repeats)
    print(f"{a.repeats} runs per arm, {os.cpu_count()} cores; medians (min-max), seconds")
    print("| entry point | import vLLM | the entry point's modules | argument parsers | total |")
    print("| --- | --- | --- | --- | --- |")
    names = {"cli": "`vllm serve`", "module": "`python -m vllm.entrypoints.openai.api_server`"}
    for arm, rs in runs.items():
        keys = ("vllm_s", "entry_imports_s", "parsers_s", "total_s")
        print(
            f"| {names[arm]} | " + " | ".join(probe_runs.median_cell([r[k] for r in rs]) for k in keys) + " |"
        )
    probe_runs.write(a.out, {"python": a.python, "cores": os.cpu_count(), "runs": runs})


if __name__ == "__main__":
    main()
