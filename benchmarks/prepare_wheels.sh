#!/usr/bin/env bash
# On a machine with PyPI: download every wheel the offline GPU host needs to run vLLM 0.26.0 (CUDA 13, on the
# host's own torch 2.11.0+cu130, Python 3.12) and the studies, build the offline tokenizer, and pack it all
# into transfers of at most PART_BYTES each (default 62,000,000 bytes, for a channel that takes 64 MiB):
#   .gpu/t1 .. .gpu/t5   the vLLM wheel in parts, with its sha256 (t5)
#   .gpu/t6              vLLM's other dependencies (deps/, pyd/), this project's runtime dependencies (wheels/)
#                        and the tokenizer (tok/)
# Usage, from the repo root (with the package installed: pip install -e '.[local]'):
#   bash benchmarks/prepare_wheels.sh
# .gpu/ is git-ignored. Then see benchmarks/README.md for moving the folders to the host.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PART_BYTES=${PART_BYTES:-62000000}
W=$ROOT/.gpu/wheels
mkdir -p "$W"
# Wheels for the host's platform and Python, whatever this machine runs.
PLAT=""
for p in manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_26 manylinux_2_24 manylinux_2_17 manylinux2014 \
  manylinux1 manylinux_2_5; do PLAT="$PLAT --platform ${p}_x86_64"; done
PIP="python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp $PLAT"
# vLLM and exactly the dependencies it needs beyond what the host has (torch and the CUDA libraries).
$PIP --no-deps -d "$W" $(grep -v '^#' "$HERE/wheels.txt")
# pydantic for hosts that have none (setup_on_gpu_host.sh installs it only then).
$PIP --no-deps -d "$W/pyd" pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
# This project's own runtime dependencies, so `gpt-oss-modal` (bench, serve --local) runs there too.
$PIP -d "$ROOT/.gpu/t6/wheels" pydantic-settings typer rich platformdirs httpx pydantic==2.14.4

cd "$ROOT/.gpu"
rm -rf t1 t2 t3 t4 t5 t6/deps t6/pyd t6/tok
mkdir -p t1 t2 t3 t4 t5 t6/deps t6/tok
V=$(ls wheels/vllm-0.26.0-*.whl)
sha256sum "$V" | awk -v n="$(basename "$V")" '{print $1"  "n}' >t5/vllm.sha256
split -b "$PART_BYTES" -d -a 2 "$V" vllm.whl.part
n=0
for part in vllm.whl.part??; do
  n=$((n + 1))
  [ "$n" -le 5 ] || { echo "the vLLM wheel needs more than 5 parts: add t$n" >&2; exit 1; }
  mv "$part" "t$n/"
done
find wheels -maxdepth 1 -name '*.whl' ! -name 'vllm-0.26.0-*' -exec cp {} t6/deps/ \;
cp -r wheels/pyd t6/pyd

# The o200k_harmony tokenizer, built offline (no Hugging Face download); tokenizer.json xz-compressed.
python3 "$HERE/build_tokenizer.py" tok-build >/dev/null
cp tok-build/tokenizer_config.json tok-build/special_tokens_map.json tok-build/chat_template.jinja t6/tok/
xz -9 -c tok-build/tokenizer.json >t6/tok/tokenizer.json.xz
du -sb t1 t2 t3 t4 t5 t6
