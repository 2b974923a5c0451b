"""The tables of results_v3/tables.md from the raw results of study_v3.py (series 1 and 2): python3 benchmarks/analyse_v3.py"""

import json
import re
import statistics as st
from pathlib import Path

R = Path(__file__).resolve().parent / "results_v3"
print(
    "| run | card | util | budget GiB | weights GiB | peak act GiB | non-torch GiB | graphs GiB | KV GiB | KV tokens | tokens/GiB | max conc @32k | attention | MoE | batched | /health s | cache |"
)
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for d in sorted(R.glob("s1_*")):
    r = json.loads((d / "result.json").read_text())
    # re-read from the log: the study's first pattern missed the forced form "Using AttentionBackendEnum.X backend."
    r["attention_backend"] = sorted(
        set(
            re.findall(
                r"Using (?:AttentionBackendEnum\.)?(\w+) (?:attention )?backend\b",
                (d / "server.log").read_text(),
            )
        )
    )
    print(
        f"| {r['run']} | {r['card']} | {r['util']} | {r['budget_gib']} | {r['weights_gib']} | {r['peak_activation_gib']} | {r['non_torch_gib']} | {r['graph_pool_actual_gib']} | {r['kv_cache_gib']} | {int(r['kv_tokens']):,} | {r['kv_tokens'] / r['kv_cache_gib']:,.0f} | {r['max_concurrency']} | {','.join(r['attention_backend'])} | {','.join(r['moe_backend'])} | {r['argv'][r['argv'].index('--max-num-batched-tokens') + 1]} | {r['health_s']} | {r['cache_root']}{' warm' if r['cache_was_warm'] else ' cold'} |"
    )
print()
P = [
    "first_log_line",
    "args_parsed",
    "engine_core_first_line",
    "weights_loaded",
    "kv_cache_sized",
    "graphs_captured",
    "engine_init_done",
    "app_startup_complete",
    "health_200",
]
runs = sorted((json.loads(p.read_text()) for p in R.glob("s2/*/result.json")), key=lambda r: r["order"])
print(
    "| arm #rep (order) | child proc seen | "
    + " | ".join(P)
    + " | c=1 median TPOT ms | c=1 out tok/s | c=1 median TTFT ms |"
)
print("|---" * (len(P) + 5) + "|")
for r in runs:
    ph = r["phases"]
    child = min(r["children_first_seen_s"].values())
    c = r["c1"]
    print(
        f"| {r['arm']} #{r['repeat']} ({r['order']}) | {child} | "
        + " | ".join(str(ph.get(k)) for k in P)
        + f" | {c['median_tpot_ms']:.3f} | {c['output_throughput']:.1f} | {c['median_ttft_ms']:.1f} |"
    )
print()
seg = [
    ("launch -> first log line (interpreter + imports of the API server)", None, "first_log_line"),
    (
        "first line -> API server done with config (last API line before engine)",
        "first_log_line",
        "_api_last",
    ),
    ("-> engine-core process exists (psutil)", "_api_last", "_child"),
    (
        "engine-core process -> its first log line (spawned interpreter + imports)",
        "_child",
        "engine_core_first_line",
    ),
    ("-> weights loaded (dummy)", "engine_core_first_line", "weights_loaded"),
    ("-> KV cache sized (profiling run)", "weights_loaded", "kv_cache_sized"),
    ("-> graphs captured", "kv_cache_sized", "graphs_captured"),
    ("-> engine init done", "graphs_captured", "engine_init_done"),
    ("-> API server app started", "engine_init_done", "app_startup_complete"),
    ("-> /health 200", "app_startup_complete", "health_200"),
]


def api_last(r):
    lines = (R / "s2" / f"{r['arm']}_{r['repeat']}" / "server.log").read_text().splitlines()
    last = 0.0
    for ln in lines:
        t, _, txt = ln.partition("\t")
        if "(EngineCore" in txt:
            break
        if "(APIServer" in txt:
            last = float(t)
    return last


for r in runs:
    r["phases"]["_child"] = min(r["children_first_seen_s"].values())
    r["phases"]["_api_last"] = api_last(r)
print("| phase | " + " | ".join(f"{r['arm']} #{r['repeat']}" for r in runs) + " | today mean | mp0 mean |")
print("|---" * (len(runs) + 3) + "|")
for name, a, b in seg:
    vals = [r["phases"][b] - (r["phases"][a] if a else 0) for r in runs]
    t = [v for v, r in zip(vals, runs) if r["arm"] == "today"]
    m = [v for v, r in zip(vals, runs) if r["arm"] == "mp0"]
    print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in vals) + f" | {st.mean(t):.1f} | {st.mean(m):.1f} |")
for arm in ("today", "mp0"):
    h = [r["health_s"] for r in runs if r["arm"] == arm]
    tp = [r["c1"]["median_tpot_ms"] for r in runs if r["arm"] == arm]
    print(
        f"{arm}: /health {h} mean {st.mean(h):.1f} min {min(h)} max {max(h)}; TPOT {[round(x, 3) for x in tp]} mean {st.mean(tp):.3f}"
    )
