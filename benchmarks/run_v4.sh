#!/usr/bin/env bash
# One call on the GPU host (repo root): take the transfers this call carried, kill what a cut-off call of ours
# left, run the steps given, all within LIMIT seconds of the call's start, then pack /root/res into $OUT.
#   bash benchmarks/run_v4.sh LIMIT STEP...
# Steps: setup (prepare_host.sh), lock (install_lock_on_host.sh, then doctor's GPU probe),
#   sample:ARM:CACHE, restart:ARM,ARM:REPEATS:CACHE, spec:K,K:CACHE, cold:BOOT,BOOT:REPEATS:CACHE
#   (study_v4.py), v2:RUN,RUN (study_v2.py), freeze.
LIMIT=$1; shift
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(dirname "$HERE")
take() {  # $1 = transfer folder, $2 = where its files go; once per host (a warm host keeps earlier transfers)
  [ -d "$1" ] && [ ! -e "/root/took_$(basename "$1")" ] && mkdir -p "$2" && cp -r "$1/." "$2/" \
    && touch "/root/took_$(basename "$1")" && echo "took $(basename "$1")"
}
for t in 1 2 3 4 5; do take "$ROOT/.gpu/t$t" /root/st; done
take "$ROOT/.gpu/t6" /root/st/t6
for x in "$ROOT"/.gpu/x*; do take "$x" /root/lock; done
if [ -f /root/pgids.txt ]; then
  while read -r g; do kill -KILL -- "-$g" 2>/dev/null && echo "killed leftover group $g"; done < /root/pgids.txt
  : > /root/pgids.txt
fi
export PYTHONUNBUFFERED=1 PYTHONPATH="$ROOT/src"
export TIKTOKEN_ENCODINGS_BASE=/root/tiktoken HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1
mkdir -p /root/res
for step in "$@"; do
  left=$(( LIMIT - SECONDS - 15 ))
  echo "=== $(date +%T) step $step ($left s left)"
  IFS=: read -r kind a b c <<<"$step"
  case $kind in
    freeze) python3 -m pip list --format=freeze > /root/res/host_freeze.txt 2>/dev/null; wc -l /root/res/host_freeze.txt
            nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; command -v uv || echo "no uv" ;;
    setup) bash "$HERE/prepare_host.sh" ;;
    lock) bash "$HERE/install_lock_on_host.sh"
          python3 "$HERE/study_site/hidden_modules.py" > /root/hidden_modules.txt && cp /root/hidden_modules.txt /root/res/lock/
          # the API server's imports with them hidden; on failure no study hides anything (and the log says why)
          STUDY_HIDE_MODULES=/root/hidden_modules.txt PYTHONPATH="$HERE/study_site:$ROOT/src" \
            python3 -c 'import vllm.entrypoints.cli.main, vllm.entrypoints.openai.api_server' 2>&1 | tail -3 \
            && [ "${PIPESTATUS[0]}" = 0 ] || { echo "imports fail with the host's extras hidden"; mv /root/hidden_modules.txt /root/res/lock/hidden_modules.failed; }
          python3 -c 'import json; from gpt_oss_modal.deploy import doctor; print(json.dumps(doctor.probe({"head_dim": 64, "num_attention_heads": 64}), indent=1))' \
            | tee /root/res/lock/doctor_probe.json ;;
    sample) (cd "$HERE" && python3 study_v4.py sample --arm "$a" --cache "$b" --out /root/res --deadline "$left") ;;
    restart) (cd "$HERE" && python3 study_v4.py restart --arms $(echo "$a" | tr , ' ') --repeats "$b" --cache "$c" --out /root/res --deadline "$left") ;;
    cold) (cd "$HERE" && python3 study_v4.py cold --boots $(echo "$a" | tr , ' ') --repeats "$b" --cache "$c" --out /root/res --deadline "$left") ;;
    spec) (cd "$HERE" && python3 study_v4.py spec --tokens $(echo "$a" | tr , ' ') --cache "$b" --out /root/res --deadline "$left") ;;
    v2) (cd "$HERE" && python3 study_v2.py $(echo "$a" | tr , ' ') --out /root/res --deadline "$left") ;;
  esac
done
nvidia-smi --query-gpu=memory.used --format=csv,noheader
[ -n "${OUT:-}" ] && tar czf "$OUT/res_$(date +%H%M%S).tgz" -C /root res
echo "run_v4 done after $SECONDS s"
