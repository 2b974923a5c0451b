"""Shared by the CPU-side start-up benchmarks (`entry_imports.py`, `background_builds.py`,
`jit_monitor_start.py`, `chat_template_warmup.py`): their command line, the arms run alternately in fresh
interpreters, and the medians they print."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path


def parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--python", default=sys.executable, help="interpreter of an environment with vLLM")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, help="write the runs here as JSON")
    return ap


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


def write(path: Path | None, record: dict) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1))
