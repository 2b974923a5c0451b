#!/usr/bin/env bash
# One measurement call on the GPU host: kill what an earlier, cut-off call of ours left (by process group id),
# run the study steps given as arguments ("s1:a,b,c" or "s2"), all within LIMIT seconds of the call's start,
# then pack /root/res into $OUT.
#   bash benchmarks/run_v3.sh LIMIT STEP...   (results packed into $OUT when set)
LIMIT=$1; shift
KIT=$(cd "$(dirname "$0")" && pwd)
if [ -f /root/pgids.txt ]; then
  while read -r g; do kill -KILL -- "-$g" 2>/dev/null && echo "killed leftover group $g"; done < /root/pgids.txt
  : > /root/pgids.txt
fi
export PYTHONUNBUFFERED=1
for step in "$@"; do
  left=$(( LIMIT - SECONDS ))
  case $step in
    s1:*) python3 "$KIT/study_v3.py" series1 --runs $(echo "${step#s1:}" | tr , ' ') --out /root/res --deadline "$left" ;;
    s2)   python3 "$KIT/study_v3.py" series2 --out /root/res --deadline "$left" ;;
  esac
done
nvidia-smi --query-gpu=memory.used --format=csv
tar czf "$OUT/res_$(date +%H%M%S).tgz" -C /root res
echo "go.sh done after $SECONDS s"
