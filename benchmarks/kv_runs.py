"""vLLM's own KV-cache figures from the study's raw results, as the `[[kv_run]]` entries of
src/gpt_oss_modal/core/measured.toml (the planner's calibration test reads them there).

    python3 benchmarks/kv_runs.py [benchmarks/results_v2]

Runs with the same settings and the same figures are one entry. Runs with an fp8 KV cache are left out:
the product does not deploy one, and the planner counts bf16 KV bytes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MODELS = {"20b": "openai/gpt-oss-20b", "120b": "openai/gpt-oss-120b"}


def kv_runs(results: Path) -> list[dict]:
    grouped: dict[tuple, list[str]] = {}
    for path in sorted(results.glob("*/result.json")):
        r = json.loads(path.read_text())
        if "kv_tokens" not in r:
            continue  # a run that did not start
        flags = dict(zip(r["argv"], r["argv"][1:], strict=False))  # each flag and the word after it
        if flags.get("--kv-cache-dtype", "auto") != "auto":
            continue
        key = (
            MODELS[r["model"]],
            r["boot"],
            float(flags["--gpu-memory-utilization"]),
            int(flags["--max-model-len"]),
            int(flags["--max-num-seqs"]),
            flags.get("--moe-backend", "auto"),
            r["kv_cache_gib"],
            int(r["kv_tokens"]),
        )
        grouped.setdefault(key, []).append(r["run"])
    fields = (
        "model",
        "boot",
        "util",
        "max_model_len",
        "max_num_seqs",
        "moe_backend",
        "kv_cache_gib",
        "kv_tokens",
    )
    return [{"runs": runs, **dict(zip(fields, key, strict=True))} for key, runs in grouped.items()]


def toml(entries: list[dict]) -> str:
    blocks = ["[[kv_run]]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in e.items()) for e in entries]
    return "\n\n".join(blocks)


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "results_v2"
    print(toml(kv_runs(root)))
