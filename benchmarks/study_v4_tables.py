"""The Markdown tables docs/performance.md takes from a study v4 series, printed from its summary.json.

    python3 benchmarks/study_v4_tables.py restart results_v6/restart_fast-lock/summary.json --baseline spawn
    python3 benchmarks/study_v4_tables.py cold    results_v6/cold_v6/summary.json
    python3 benchmarks/study_v4_tables.py spec    results_v5/spec_fast-lock/summary.json results_v6/spec_fast-lock/summary.json

restart: seconds after launch at which each phase of the start ended, per arm and run, `/health` and c=1
TPOT, then each arm's mean time to `/health` against the baseline arm's (the issue's ratio) and its TPOT.
cold: each boot mode's times to `/health` in run order, mean and spread, the ratio of each later mode to
the first within each pair, and the phases of every run. spec: median TPOT per draft-token count K at one stream and at max_inputs,
in decode steps (K = 0).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from study_v3 import PHASES

PHASE_NAMES = [name for name, _ in PHASES] + ["health_200"]


def by_key(runs: list[dict], key: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for run in runs:
        out.setdefault(str(run[key]), []).append(run)
    return out


def cell(xs: list[float | None], unit: str = "", digits: int = 1) -> str:
    return ", ".join("-" if x is None else f"{x:.{digits}f}{unit}" for x in xs)


def tpot(run: dict, level: str = "c1") -> float | None:
    return (run.get(level) or {}).get("median_tpot_ms")


def phase_table(groups: dict[str, list[dict]]) -> None:
    """Seconds after launch at which each phase ended, a column per group, a value per run."""
    print("| phase (ends at, s) | " + " | ".join(f"`{name}`" for name in groups) + " |")
    print("| --- |" + " --- |" * len(groups))
    for phase in PHASE_NAMES:
        row = [cell([(r.get("phases") or {}).get(phase) for r in rs]) for rs in groups.values()]
        if any(c.strip("-, ") for c in row):
            print(f"| {phase} | " + " | ".join(row) + " |")


def restart(runs: list[dict], baseline: str) -> None:
    arms = by_key(runs, "arm")
    phase_table(arms)
    print("| c=1 TPOT | " + " | ".join(cell([tpot(r) for r in rs], " ms", 3) for rs in arms.values()) + " |")
    base = arms[baseline]
    base_s = statistics.mean(r["health_s"] for r in base)
    base_tpot = statistics.mean(t for r in base if (t := tpot(r)) is not None)
    print()
    for arm, rs in arms.items():
        mean_s = statistics.mean(r["health_s"] for r in rs)
        tpots = [t for r in rs if (t := tpot(r)) is not None]
        line = f"{arm}: /health {mean_s:.1f} s mean ({len(rs)} runs) = {mean_s / base_s:.3f}x {baseline}'s"
        if tpots:
            line += (
                f"; c=1 TPOT {statistics.mean(tpots):.3f} ms ({statistics.mean(tpots) / base_tpot - 1:+.1%})"
            )
        print(line)


def cold(runs: list[dict]) -> None:
    boots = by_key(runs, "boot")
    print("| boot | to `/health`, in run order | mean | spread (max - min) |")
    print("| --- | --- | --- | --- |")
    for boot, rs in boots.items():
        xs = [r["health_s"] for r in rs if r.get("health_s") is not None]
        spread = f"{max(xs) - min(xs):.1f} s" if len(xs) > 1 else "-"
        print(f"| `{boot}` | {cell(xs, ' s')} | {statistics.mean(xs):.1f} s | {spread} |")
    first, *others = boots
    for other in others:
        pairs = list(zip(boots[first], boots[other], strict=False))
        ratios = [b["health_s"] / a["health_s"] for a, b in pairs if a.get("health_s") and b.get("health_s")]
        print(f"\n{other} / {first}, pair by pair: {cell(ratios, 'x', 2)}")
    print()
    phase_table(boots)


def spec(runs: list[dict]) -> None:
    ks = by_key(runs, "k")
    base = ks["0"][0]
    print("| K | 1 stream | max_inputs streams |")
    print("| --- | --- | --- |")
    for k, rs in ks.items():
        cells = []
        for level in ("c1", "c50"):
            t, t0 = tpot(rs[0], level), tpot(base, level)
            cells.append(
                "-" if t is None else f"{t:.2f} ms" + (f" ({t / t0:.2f})" if k != "0" and t0 else "")
            )
        print(f"| {k} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("series", choices=["restart", "cold", "spec"])
    ap.add_argument("summary", type=Path, nargs="+", help="one or more: their runs are read as one series")
    ap.add_argument("--baseline", default="spawn", help="restart: the arm the others are compared with")
    a = ap.parse_args()
    runs = [run for summary in a.summary for run in json.loads(summary.read_text())["runs"]]
    if a.series == "restart":
        restart(runs, a.baseline)
    elif a.series == "cold":
        cold(runs)
    else:
        spec(runs)


if __name__ == "__main__":
    main()
