"""vLLM's own memory and KV-cache figures from the studies' raw results, as the `[[kv_run]]` entries of
src/gpt_oss_modal/core/measured.toml (the planner takes its weights and runtime from them, and its
calibration test checks the plan against each).

    python3 benchmarks/kv_runs.py [RESULTS_DIR ...]      # default: benchmarks/results_v2 and results_v3

The figures come from the lines vLLM logged (each run's `log_lines.txt`): "Desired GPU memory utilization is
(U, B GiB). Actual usage is W GiB for weight, A GiB for peak activation, N GiB for non-torch memory, and G GiB
for CUDAGraph memory", the attention and MXFP4 MoE backends it chose, and the KV figures of `result.json`.
Runs with the same settings and the same figures are one entry. Runs with an fp8 KV cache are left out: the
product does not deploy one, and the planner counts bf16 KV bytes.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = {"20b": "openai/gpt-oss-20b", "120b": "openai/gpt-oss-120b"}
MEMORY = re.compile(
    r"Desired GPU memory utilization is \((?P<util>[\d.]+), (?P<budget>[\d.]+) GiB\)\. Actual usage is "
    r"(?P<weights>[\d.]+) GiB for weight, (?P<activation>[\d.]+) GiB for peak activation, "
    r"(?P<non_torch>[\d.]+) GiB for non-torch memory, and (?P<graphs>[\d.]+) GiB for CUDAGraph memory"
)
ATTENTION = re.compile(r"Using (?:AttentionBackendEnum\.)?(\w+) (?:attention )?backend\b")
MOE = re.compile(r"Using '(\w+)' Mxfp4 MoE backend")
FIELDS = (
    "model", "gpu", "boot", "util", "max_model_len", "max_num_seqs", "max_num_batched_tokens", "moe_kernel",
    "attention", "budget_gib", "weights_gib", "activation_gib", "non_torch_gib", "graphs_gib",
    "kv_cache_gib", "kv_tokens", "max_concurrency",
)  # fmt: skip


def entry(run_dir: Path) -> dict | None:
    """One run's settings and figures, or None (it did not start, or ran an fp8 KV cache)."""
    r = json.loads((run_dir / "result.json").read_text())
    lines = (run_dir / "log_lines.txt").read_text() if (run_dir / "log_lines.txt").exists() else ""
    memory = MEMORY.search(lines)
    if "kv_tokens" not in r or memory is None:
        return None
    flags = dict(zip(r["argv"], r["argv"][1:], strict=False))  # each flag and the word after it
    if flags.get("--kv-cache-dtype", "auto") != "auto":
        return None
    big = float(memory["budget"]) / float(memory["util"]) >= 70  # vLLM's own default below 70 GiB: 2,048
    moe = MOE.findall(lines) or r.get("moe_backend") or ["TRITON"]
    attention = sorted(set(ATTENTION.findall(lines))) or ["FLASH_ATTN"]
    max_model_len = int(flags["--max-model-len"])
    return {
        "model": MODELS.get(r.get("model", "20b"), r.get("model")),
        "gpu": r.get("card", "H200"),
        "boot": r.get("boot", "fast"),
        "util": float(memory["util"]),
        "max_model_len": max_model_len,
        "max_num_seqs": int(flags["--max-num-seqs"]),
        "max_num_batched_tokens": int(flags.get("--max-num-batched-tokens", 8192 if big else 2048)),
        "moe_kernel": "marlin" if moe[0].upper() == "MARLIN" else "triton",
        "attention": ",".join(attention),
        "budget_gib": float(memory["budget"]),
        "weights_gib": float(memory["weights"]),
        "activation_gib": float(memory["activation"]),
        "non_torch_gib": float(memory["non_torch"]),
        "graphs_gib": float(memory["graphs"]),
        "kv_cache_gib": r["kv_cache_gib"],
        "kv_tokens": int(r["kv_tokens"]),
        "max_concurrency": r.get("max_concurrency") or round(r["kv_tokens"] / max_model_len, 2),
    }


def kv_runs(results: Path) -> list[dict]:
    grouped: dict[tuple, list[str]] = {}
    for path in sorted(results.glob("*/result.json")):
        e = entry(path.parent)
        if e is not None:
            grouped.setdefault(tuple(e[f] for f in FIELDS), []).append(path.parent.name)
    rel = (
        results.resolve().relative_to(HERE.parent)
        if results.resolve().is_relative_to(HERE.parent)
        else results
    )
    return [
        {"runs": runs, "results": str(rel), **dict(zip(FIELDS, key, strict=True))}
        for key, runs in grouped.items()
    ]


def toml(entries: list[dict]) -> str:
    blocks = ["[[kv_run]]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in e.items()) for e in entries]
    return "\n\n".join(blocks)


if __name__ == "__main__":
    roots = [Path(a) for a in sys.argv[1:]] or [HERE / "results_v2", HERE / "results_v3"]
    print(toml([e for root in roots for e in kv_runs(root)]))
