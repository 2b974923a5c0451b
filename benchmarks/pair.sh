#!/usr/bin/env bash
# Run two GPU jobs at once, one per GPU of a two-GPU host, and bundle every result so far into $OUT.
#   bash benchmarks/pair.sh SECONDS "JOB FOR GPU 0" "JOB FOR GPU 1"
# A job is `study RUN...` (benchmarks/study_v2.py) or `rehearse` (benchmarks/rehearse.py); SECONDS is the
# deadline by which both are done and their servers stopped. Logs: /root/res/gpu0.log, gpu1.log.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src TIKTOKEN_ENCODINGS_BASE=/root/tiktoken HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_NO_USAGE_STATS=1 PYTHONUNBUFFERED=1
pkill -f "vllm serve" 2>/dev/null; sleep 1  # nothing left over from a run that was cut off
mkdir -p /root/res
job() {  # $1 gpu, $2 deadline, $3.. job
  local gpu=$1 deadline=$2; shift 2
  case "$1" in
    study) shift; python3 benchmarks/study_v2.py --gpu "$gpu" --out /root/res --deadline "$deadline" "$@" ;;
    rehearse) CUDA_VISIBLE_DEVICES=$gpu python3 benchmarks/rehearse.py --gpu "$gpu" --out /root/res/rehearsal ;;
    "") ;;
  esac >>"/root/res/gpu$gpu.log" 2>&1
}
job 0 "$1" $2 & p0=$!
job 1 "$1" ${3:-} & p1=$!
wait $p0 $p1
pkill -f "vllm serve" 2>/dev/null
tail -n 30 /root/res/gpu0.log /root/res/gpu1.log
tar czf "${OUT:-/tmp}/res.tgz" -C /root res
