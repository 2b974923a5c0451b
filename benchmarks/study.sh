#!/usr/bin/env bash
# Boot-mode study for gpt-oss-20b on vLLM 0.26.0 (dummy weights, real config): for each mode given, start
# `vllm serve` in its own session, time start-up to /health, run `vllm bench serve` (random 1024 in / 512 out,
# ignore-eos) at max-concurrency 1, 16 and 64, keep the JSON results and the server log, stop the server's
# process group. Results accumulate in /root/res/<run>/ (they survive between calls on a warm host); each call
# bundles all of /root/res into $OUT/res.tgz and prints the table so far.
#
# Usage (repo root on the GPU host, after benchmarks/prepare_host.sh):
#   bash benchmarks/study.sh MODE[:start] ...
# MODE: eager | full | limited | limited_pf | fdo | fdo_async | nocompile_fdo   (see mode_flags below)
# ":start" only times the start-up (no benchmark), reusing that mode's compile cache: a warm restart.
# Env: LEVELS="1:4 64:128" overrides the concurrency:prompts levels; CACHE_AS=MODE uses that mode's cache
# root; RES / MODEL / VCACHE / OUT override the folders.
# Each mode has its own VLLM_CACHE_ROOT (/root/vcache/MODE), so its first start compiles from scratch as far
# as vLLM's cache goes (Inductor/Triton caches in /tmp and ~/.triton are shared, see the table's notes).
set -u -o pipefail
set -f  # the JSON flags below hold [...] that must not glob
MODEL=${MODEL:-/root/model}
RES=${RES:-/root/res}
PORT=8000
OUT=${OUT:-/tmp/out}
mkdir -p "$RES" "$OUT"
export TIKTOKEN_ENCODINGS_BASE=/root/tiktoken VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1
export TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
# CUDA-graph sizes for max_inputs=64, as the engine command builder computes them (1, 2, 4, then steps of 8).
SIZES='[1,2,4,8,16,24,32,40,48,56,64]'
SIZES_PF='[1,2,4,8,16,24,32,40,48,56,64,128,256,512,1024,2048]'

mode_flags() {
  case "$1" in
    eager) echo "--max-num-seqs 64 --enforce-eager" ;;
    full) echo "" ;;  # vLLM's own defaults: torch.compile + FULL_AND_PIECEWISE graphs, default sizes
    limited) echo "--max-num-seqs 64 -cc {\"cudagraph_capture_sizes\":$SIZES}" ;;
    fdo) echo "--max-num-seqs 64 -cc {\"cudagraph_mode\":\"FULL_DECODE_ONLY\",\"cudagraph_capture_sizes\":$SIZES}" ;;
    fdo_async) echo "--max-num-seqs 64 --async-scheduling -cc {\"cudagraph_mode\":\"FULL_DECODE_ONLY\",\"cudagraph_capture_sizes\":$SIZES}" ;;
    limited_pf) echo "--max-num-seqs 64 -cc {\"cudagraph_capture_sizes\":$SIZES_PF}" ;;  # + prefill-sized piecewise graphs
    nocompile_fdo) echo "--max-num-seqs 64 -cc {\"mode\":\"NONE\",\"cudagraph_mode\":\"FULL_DECODE_ONLY\",\"cudagraph_capture_sizes\":$SIZES}" ;;
    *) echo "unknown mode $1" >&2; return 1 ;;
  esac
}

gpu_mem() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; }

stop_server() {  # $1 = process group id
  local g=$1 i
  kill -TERM -- "-$g" 2>/dev/null
  for i in $(seq 60); do kill -0 -- "-$g" 2>/dev/null || break; sleep 1; done
  kill -KILL -- "-$g" 2>/dev/null
  for i in $(seq 60); do [ "$(gpu_mem)" -lt 2000 ] && break; sleep 1; done
}

bench() {  # $1 run dir, $2 concurrency, $3 prompts
  local d=$1 c=$2 n=$3 t0 t1
  t0=$(date +%s.%N)
  vllm bench serve --backend vllm --base-url "http://127.0.0.1:$PORT" --endpoint /v1/completions \
    --model llm --tokenizer "$MODEL" --dataset-name random --random-input-len 1024 --random-output-len 512 \
    --ignore-eos --num-prompts "$n" --max-concurrency "$c" --request-rate inf --ready-check-timeout-sec 0 \
    --percentile-metrics ttft,tpot,itl,e2el --disable-tqdm --save-result --result-dir "$d" \
    --result-filename "c$c.json" >>"$d/bench.log" 2>&1
  local rc=$?
  t1=$(date +%s.%N)
  echo "bench c=$c n=$n rc=$rc wall=$(python3 -c "print(round($t1-$t0,1))")s" | tee -a "$d/bench.log"
}

run_mode() {  # $1 = MODE or MODE:start
  local spec=$1 mode=${1%%:*} only_start=0 d k flags pg t0 t1 up
  [ "$spec" != "$mode" ] && only_start=1
  flags=$(mode_flags "$mode") || return 1
  d=$RES/$mode; k=1
  while [ -e "$d" ]; do k=$((k+1)); d=$RES/$mode-$k; done
  mkdir -p "$d"
  echo "=== $(date +%T) $spec -> $d: vllm serve $MODEL $flags"
  echo "$flags" >"$d/flags"
  t0=$(date +%s.%N)
  # setsid: the server gets its own session, so it outlives nothing it shouldn't and is stopped as a group.
  VLLM_CACHE_ROOT=${VCACHE:-/root/vcache}/${CACHE_AS:-$mode} setsid bash -c 'echo $$ >"$0/pgid"; exec vllm serve "$@"' "$d" \
    "$MODEL" --served-model-name llm --host 127.0.0.1 --port $PORT --load-format dummy \
    --max-model-len 32768 $flags >"$d/server.log" 2>&1 </dev/null &
  sleep 1; pg=$(cat "$d/pgid")
  up=0
  while :; do
    if curl -sf -o /dev/null "http://127.0.0.1:$PORT/health"; then up=1; break; fi
    kill -0 -- "-$pg" 2>/dev/null || break
    [ "$(python3 -c "print(int($(date +%s.%N)-$t0))")" -gt 480 ] && break
    sleep 0.5
  done
  t1=$(date +%s.%N)
  python3 -c "print(round($t1-$t0,1))" >"$d/startup_s"
  echo "startup: up=$up $(cat "$d/startup_s") s"
  if [ $up = 1 ] && [ $only_start = 0 ]; then
    # one short request so that lazy first-request work is not billed to the conc-1 run
    curl -s -o "$d/warmup.json" "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' \
      -d '{"model":"llm","prompt":"Hello, how are you today? Tell me a story.","max_tokens":16,"ignore_eos":true}'
    if [ "$mode" = eager ]; then P="1:2 16:16 64:64"; else P="1:4 16:32 64:128"; fi
    P=${LEVELS:-$P}  # e.g. LEVELS="1:4 64:128" (concurrency:prompts)
    for cp in $P; do bench "$d" "${cp%%:*}" "${cp##*:}"; done
  fi
  [ $up = 1 ] || tail -40 "$d/server.log"
  stop_server "$pg"
  echo "=== $(date +%T) $spec done (gpu mem after stop: $(gpu_mem) MiB)"
}

summary() {
  python3 - "$RES" <<'EOF'
import json, os, re, sys
res = sys.argv[1]
pat = {
    "compile_s": r"torch\.compile took ([\d.]+) s in total",
    "dynamo_s": r"Dynamo bytecode transform time: ([\d.]+) s",
    "capture_s": r"Graph capturing finished in ([\d.]+) secs",
    "capture_gib": r"Graph capturing finished in [\d.]+ secs, took ([\d.]+) GiB",
    "init_engine_s": r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+)",
    "load_s": r"Model loading took [\d.]+ GiB memory and ([\d.]+) seconds",
    "async": r"Asynchronous scheduling is (\w+)",
}
keep = re.compile(r"torch\.compile|Dynamo|Graph capturing|init engine|Model loading|Asynchronous|cudagraph|CUDAGraph|"
                  r"Directly load|Compiling a graph|compile range|backend|KV cache|Maximum concurrency|ERROR|Error|"
                  r"WARNING", re.I)
rows = []
for run in sorted(os.listdir(res), key=lambda r: os.path.getmtime(os.path.join(res, r))):
    d = os.path.join(res, run)
    if not os.path.isdir(d):
        continue
    row = {"run": run, "flags": open(os.path.join(d, "flags")).read().strip() if os.path.exists(os.path.join(d, "flags")) else ""}
    try:
        row["startup_s"] = float(open(os.path.join(d, "startup_s")).read())
    except Exception:
        row["startup_s"] = None
    log = open(os.path.join(d, "server.log"), errors="replace").read().replace("\r", "\n") if os.path.exists(os.path.join(d, "server.log")) else ""
    for k, p in pat.items():
        m = re.findall(p, log)
        row[k] = (m if len(m) > 1 else m[0]) if m else None
    with open(os.path.join(d, "log_lines.txt"), "w") as f:
        f.write("\n".join(l for l in log.split("\n") if keep.search(l) and "it/s]" not in l)[-60000:])
    for c in (1, 16, 64):
        p = os.path.join(d, f"c{c}.json")
        if os.path.exists(p):
            j = json.load(open(p))
            row[f"c{c}"] = {"out_tok_s": round(j["output_throughput"], 1), "tpot_med_ms": round(j["median_tpot_ms"], 2),
                           "ttft_med_ms": round(j["median_ttft_ms"], 1), "completed": j["completed"],
                           "n": j.get("num_prompts"), "dur_s": round(j["duration"], 1)}
    rows.append(row)
json.dump(rows, open(os.path.join(res, "summary.json"), "w"), indent=1)
for r in rows:
    print(json.dumps(r))
EOF
}

for m in "$@"; do run_mode "$m"; done
summary | tee "$OUT/summary.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$RES/gpu.txt" 2>&1
tar czf "$OUT/res.tgz" -C "$(dirname "$RES")" "$(basename "$RES")"
