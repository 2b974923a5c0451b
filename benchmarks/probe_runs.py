"""Shared by the CPU-side start-up benchmarks (`entry_imports.py`, `background_builds.py`,
`jit_monitor_start.py`, `chat_template_warmup.py`): their command line, the arms run alternately in fresh
interpreters, and the medians they print."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

# The product's engine fixes: first on every engine's PYTHONPATH (lifecycle.engine_env).
SITE = Path(__file__).resolve().parents[1] / "src" / "gpt_oss_modal" / "server" / "_vllm_site"
FIXES_ARMS = ("vLLM as is", "with the product's fixes")


def parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--python", default=sys.executable, help="interpreter of an environment with vLLM")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, help="write the runs here as JSON")
    return ap


def fixes_envs() -> dict[str, dict[str, str]]:
    """FIXES_ARMS' environments: this one without PYTHONPATH, then with only the fixes on it; humming's
    background builds off in both, as in the product's engine."""
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {
        "HUMMING_DISABLE_PARALLEL_BUILD": "1"
    }
    return {FIXES_ARMS[0]: base, FIXES_ARMS[1]: base | {"PYTHONPATH": str(SITE)}}


def alternating(arms: dict[str, tuple[list[str], dict[str, str]]], repeats: int) -> dict[str, list[dict]]:
    """Each arm's (argv, env) `repeats` times, in the order A B, B A, ..., after one unrecorded run of the
    first (the page cache); each run's last line of output is its JSON result."""
    first_argv, first_env = next(iter(arms.values()))
    subprocess.run(first_argv, env=first_env, check=True, capture_output=True)
    runs: dict[str, list[dict]] = {arm: [] for arm in arms}
    names = list(arms)
    for i in range(repeats):
        for arm in names if i % 2 == 0 else names[::-1]:
            argv, env = arms[arm]
            out = subprocess.run(argv, env=env, check=True, capture_output=True, text=True)
            runs[arm].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return runs


def median_cell(xs: list[float], unit: str = "") -> str:
    return f"{statistics.median(xs):.2f}{unit} ({min(xs):.2f}-{max(xs):.2f})"


def print_table(runs: dict[str, list[dict]], head: tuple[str, str, str], seconds: str, seen: str) -> None:
    """A Markdown table of the arms: the median (min-max) of each arm's `seconds` key, and the values its
    `seen` key took; `head` names the three columns."""
    repeats = len(next(iter(runs.values())))
    print(f"{repeats} runs per arm, {os.cpu_count()} cores; medians (min-max)")
    print("| " + " | ".join(head) + " |")
    print("| --- | --- | --- |")
    for arm, rs in runs.items():
        values = sorted({r[seen] for r in rs})
        print(f"| {arm} | {median_cell([r[seconds] for r in rs], ' s')} | {values} |")


def write(path: Path | None, record: dict) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1))
