"""Where each process of a sampled start-up spent its time (samples of benchmarks/startup_sampler).

    python3 benchmarks/startup_sampler/summarise.py OUT/sample_<arm>_<cache>/samples [--bin 2]

Per process: when its samples start and stop (seconds after the first sample of any process), the time
spent importing each top-level package (inclusive: torch imported from inside vLLM counts for both), the
vLLM modules whose import took longest (inclusive), the busiest code outside imports, and a timeline: per
--bin seconds, what most samples show.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

PERIOD_S = 0.02  # the sampler's period


def load(path: Path) -> tuple[str, list[tuple[float, list[str], str]]]:
    head, rows = "", []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("#"):
            head = head or line[2:]
            continue
        parts = line.split("\t")
        if len(parts) == 3:
            chain = [] if parts[1] == "-" else parts[1].split(",")
            rows.append((float(parts[0]), chain, parts[2]))
    return head, rows


def activity(chain: list[str], stack: str) -> str:
    if chain:
        tops = list(dict.fromkeys(m.split(".")[0] for m in chain))
        return "import " + " > ".join(tops)
    return stack.split(" < ")[0] if stack else "?"


def show(title: str, counter: collections.Counter, scale: float, top: int) -> None:
    print(f"   {title}:")
    for name, n in counter.most_common(top):
        print(f"     {n * scale:6.1f} s  {name}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("samples", type=Path)
    ap.add_argument("--bin", type=float, default=2.0)
    ap.add_argument("--top", type=int, default=12)
    a = ap.parse_args()
    procs = [load(p) for p in sorted(a.samples.glob("*.tsv"))]
    procs = [p for p in procs if p[1]]
    t0 = min(rows[0][0] for _, rows in procs)
    for head, rows in sorted(procs, key=lambda p: p[1][0][0]):
        span = rows[-1][0] - rows[0][0]
        print(
            f"\n== {head[:160]}\n   samples {rows[0][0] - t0:.1f} .. {rows[-1][0] - t0:.1f} s ({span:.1f} s)"
        )
        scale = span / max(len(rows) - 1, 1)  # seconds per sample, as sampled (a starved thread samples less)
        packages, vllm_modules, busy = collections.Counter(), collections.Counter(), collections.Counter()
        importing = 0
        for _, chain, stack in rows:
            if not chain:
                busy[stack.split(" < ")[0]] += 1
                continue
            importing += 1
            packages.update(set(m.split(".")[0] for m in chain))
            vllm_modules.update(set(m for m in chain if m.startswith("vllm.") and m.count(".") <= 3))
        print(f"   importing: {importing * scale:.1f} s of {span:.1f} s")
        show("packages being imported (inclusive)", packages, scale, a.top)
        show("vLLM modules being imported (inclusive, up to 4 dotted parts)", vllm_modules, scale, a.top)
        show("outside imports (innermost frame)", busy, scale, a.top)
        print("   timeline:")
        bins: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
        for t, chain, stack in rows:
            bins[int((t - t0) // a.bin)][activity(chain, stack)] += 1
        for b in sorted(bins):
            (name, n), total = bins[b].most_common(1)[0], sum(bins[b].values())
            print(f"     {b * a.bin:6.1f} s  {100 * n / total:3.0f}%  {name[:110]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
