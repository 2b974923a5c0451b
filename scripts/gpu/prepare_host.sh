#!/usr/bin/env bash
# On the offline GPU host, after the five uploads were copied into /root/st (see ../../shared/gpu/README.md):
# install vLLM 0.26.0 (setup_on_gpu_host.sh, a copy of the shared one), byte-compile it as a real image would
# have it (pip ran with --no-compile), and lay out /root/model = the real gpt-oss-20b config.json + the
# tokenizer built offline by build_tokenizer.py (uploaded xz-compressed in /root/st/tok).
# Usage (repo root on the host): bash scripts/gpu/prepare_host.sh
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
t0=$(date +%s)
bash "$HERE/setup_on_gpu_host.sh"
t1=$(date +%s)
VDIR=$(python3 -c 'import vllm,os;print(os.path.dirname(vllm.__file__))')
python3 -m compileall -q -j 16 "$VDIR" >/dev/null 2>&1 || true
M=/root/model; mkdir -p $M
cp "$HERE/gpt-oss-20b/config.json" $M/
cp /root/st/tok/tokenizer_config.json $M/
python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' \
  /root/st/tok/tokenizer.json.xz $M/tokenizer.json
python3 - <<'EOF'
from transformers import AutoTokenizer
t = AutoTokenizer.from_pretrained("/root/model")
assert len(t) == 201088, len(t)
assert t.convert_tokens_to_ids("<|return|>") == 200002 and t.convert_tokens_to_ids("<|start|>") == 200006
print("tokenizer ok:", type(t).__name__, len(t))
EOF
echo "prepare_host: install $((t1-t0)) s, total $(( $(date +%s)-t0 )) s"
