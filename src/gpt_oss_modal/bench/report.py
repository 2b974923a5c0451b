"""What a sweep's result document becomes: a table for people, JSON for machines, a PNG plot.

On a terminal the table is rich's; anywhere else (a log, CI, `| tee`) it is a markdown table at its natural
width, since rich would cut it to 80 columns there. `--json` prints the document itself on stdout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gpt_oss_modal.bench.metrics import percentile_key
from gpt_oss_modal.bench.options import BenchError
from gpt_oss_modal.install import install_hint


def write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def plot(result: dict[str, Any], path: Path) -> None:
    """Throughput against latency, one point per concurrency level (PNG, matplotlib's Agg backend)."""
    try:
        import matplotlib
    except ImportError:
        raise BenchError(f"--plot needs matplotlib: {install_hint('bench')}") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    levels = [lv for lv in result["levels"] if lv.get("output_throughput")]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    wl = result["workload"]
    title = (
        f"{result.get('model') or result['served_model']} @ {result['base_url']}  "
        f"(in {wl['input_len']} / out {wl['output_len']} tokens)"
    )
    fig.suptitle(title, fontsize=10)
    for ax, key, label in (
        (ax1, "median_tpot_ms", "median TPOT (ms)"),
        (ax2, "median_e2el_ms", "median end-to-end latency (ms)"),
    ):
        pts = [
            (lv[key], lv["output_throughput"], lv["concurrency"]) for lv in levels if lv.get(key) is not None
        ]
        if pts:
            xs, ys, _ = zip(*pts)
            ax.plot(xs, ys, marker="o")
            for x, y, c in pts:
                ax.annotate(f"c={c}", (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("output tokens/s")
        ax.grid(True, alpha=0.3)
    gpu = result.get("gpu")
    if gpu and levels:
        costs = ", ".join(
            f"c={lv['concurrency']}: ${lv['usd_per_m_output_tokens']:.2f}"
            for lv in levels
            if lv.get("usd_per_m_output_tokens") is not None
        )
        fig.text(
            0.01,
            0.01,
            f"$ per 1M output tokens on {gpu['name']} x{gpu['count']} "
            f"(list price {gpu['price_date']}): {costs}",
            fontsize=8,
        )
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


def table(result: dict[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    """(title, column names, rows of text): one row per concurrency level."""
    wl = result["workload"]
    title = (
        f"{result['base_url']}{result['endpoint']}  model {result['served_model']}  "
        f"in {wl['input_len']} / out {wl['output_len']} tokens"
    )
    p = percentile_key(max(result["percentiles"]))
    # (column, level key, decimals; None: a count)
    spec = [
        ("conc", "concurrency", None), ("ok", "completed", None), ("err", "errors", None),
        ("req/s", "request_throughput", 2), ("out tok/s", "output_throughput", 1),
        ("total tok/s", "total_token_throughput", 1), ("TTFT p50 ms", "median_ttft_ms", 1),
        (f"TTFT {p} ms", f"{p}_ttft_ms", 1), ("TPOT p50 ms", "median_tpot_ms", 2),
        (f"TPOT {p} ms", f"{p}_tpot_ms", 2), ("ITL p50 ms", "median_itl_ms", 2),
        ("E2E p50 ms", "median_e2el_ms", 1), ("$/M out", "usd_per_m_output_tokens", 2),
    ]  # fmt: skip

    def cell(v: Any, nd: int | None) -> str:
        return str(v) if nd is None else "-" if v is None else f"{v:,.{nd}f}"

    rows = [[cell(lv[key], nd) for _, key, nd in spec] for lv in result["levels"]]
    columns = [name for name, _, _ in spec]
    if any("speculative" in lv for lv in result["levels"]):  # only where the server counts drafts
        columns += ["accept %", "accept len"]
        for row, lv in zip(rows, result["levels"]):
            sd = lv.get("speculative") or {}
            rate = sd.get("acceptance_rate")
            row += [cell(None if rate is None else 100 * rate, 1), cell(sd.get("mean_acceptance_length"), 2)]
    return title, columns, rows


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    """A GitHub-style pipe table, numbers right-aligned: plain text at its natural width."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---:" for _ in columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def notes(result: dict[str, Any]) -> list[str]:
    """The lines under the table (rich markup): what the price means, error samples, length mismatches."""
    from rich.markup import escape

    out = []
    gpu = result["gpu"]
    if gpu is not None:
        out.append(
            f"$/M out: {gpu['name']} x{gpu['count']} at ${gpu['usd_per_hour']:.4f}/GPU-hour "
            f"(Modal list price, {gpu['price_date']}), kept busy at the measured output rate."
        )
    sd = result.get("speculative")
    if sd is not None:
        per_pos = ", ".join("-" if r is None else f"{r:.2f}" for r in sd["per_position_acceptance_rate"])
        rate, length = sd["acceptance_rate"], sd["mean_acceptance_length"]
        out.append(
            f"speculative decoding (vLLM's counters at /metrics, the whole sweep): {sd['num_drafts']:,} drafts, "
            + (
                f"acceptance {100 * rate:.1f}% of {sd['num_draft_tokens']:,} draft tokens, mean acceptance length "
                f"{length:.2f} tokens per step; per position: {per_pos}"
                if rate is not None and length is not None
                else "no draft tokens"
            )
        )
    for lv in result["levels"]:
        out += [f"[yellow]c={lv['concurrency']} error:[/] {escape(e)}" for e in lv["error_samples"]]
        if lv["output_len_mismatches"] and result["workload"]["ignore_eos"]:
            out.append(
                f"[yellow]c={lv['concurrency']}: {lv['output_len_mismatches']} replies were not the requested "
                "length (does the server honour ignore_eos?)[/]"
            )
    return out


def print_report(result: dict[str, Any], console: Any) -> None:
    """The table and its notes on a rich Console: rich's table on a terminal, markdown anywhere else."""
    from rich.table import Table

    title, columns, rows = table(result)
    if console.is_terminal:
        t = Table(title=title, title_justify="left")
        for col in columns:
            t.add_column(col, justify="right")
        for row in rows:
            t.add_row(*row)
        console.print(t)
    else:
        console.print(
            f"{title}\n\n{markdown_table(columns, rows)}\n", markup=False, highlight=False, soft_wrap=True
        )
    for line in notes(result):
        console.print(line, highlight=False, soft_wrap=True)
