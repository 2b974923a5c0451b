#!/usr/bin/env bash
# On the offline GPU host, after the transfers were copied into /root/st (README.md): install vLLM 0.26.0
# (setup_on_gpu_host.sh) and the project's runtime dependencies (the wheels in /root/st/t6/wheels),
# byte-compile vLLM as a real image would have it (pip ran with --no-compile), and lay out the models vLLM
# loads with --load-format dummy (real config.json, tokenizer built offline by gpt_oss_modal.local.tokenizer,
# brought xz-compressed in /root/st/t6/tok):
#   /root/model     gpt-oss-20b               /root/model120  gpt-oss-120b (its config: 36 layers, 128 experts)
#   $HF_HOME/hub/models--openai--gpt-oss-20b/snapshots/<pinned revision>/   what the Modal container loads
# Usage (repo root on the host): bash benchmarks/prepare_host.sh
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
TOK=/root/st/t6/tok
t0=$(date +%s)
bash "$HERE/setup_on_gpu_host.sh"
python3 -m pip install -q --no-index --no-deps --find-links /root/st/t6/wheels /root/st/t6/wheels/*.whl
t1=$(date +%s)
VDIR=$(python3 -c 'import vllm,os;print(os.path.dirname(vllm.__file__))')
python3 -m compileall -q -j 16 "$VDIR" >/dev/null 2>&1 || true
lay_out() {  # $1 = dir, $2 = config.json
  mkdir -p "$1"; cp "$2" "$1/config.json"
  cp $TOK/tokenizer_config.json $TOK/special_tokens_map.json $TOK/chat_template.jinja "$1/"
  python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' \
    $TOK/tokenizer.json.xz "$1/tokenizer.json"
}
lay_out /root/model "$HERE/gpt-oss-20b/config.json"
python3 - "$HERE/gpt-oss-20b/config.json" /tmp/config120.json <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
# gpt-oss-120b differs from 20b in depth and expert count only (its published config.json).
c.update(num_hidden_layers=36, num_local_experts=128)
c["layer_types"] = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(36)]
json.dump(c, open(sys.argv[2], "w"), indent=2)
PY
lay_out /root/model120 /tmp/config120.json
REV=$(PYTHONPATH=$HERE/../src python3 -c 'from gpt_oss_modal.core import catalog; print(catalog.MODELS["openai/gpt-oss-20b"].revision)')
HUB=/root/.cache/huggingface/hub/models--openai--gpt-oss-20b
lay_out "$HUB/snapshots/$REV" "$HERE/gpt-oss-20b/config.json"
mkdir -p "$HUB/refs"; printf %s "$REV" > "$HUB/refs/main"
python3 - <<'PY'
from transformers import AutoTokenizer
t = AutoTokenizer.from_pretrained("/root/model")
assert len(t) == 201088, len(t)
assert t.convert_tokens_to_ids("<|return|>") == 200002 and t.convert_tokens_to_ids("<|start|>") == 200006
print("tokenizer ok:", type(t).__name__, len(t), "chat template:", bool(t.chat_template))
PY
echo "prepare_host: install $((t1-t0)) s, total $(( $(date +%s)-t0 )) s"
