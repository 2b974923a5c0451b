"""The workload: the served model's tokenizer, and random prompts of exactly the requested token counts.

Lengths are drawn as vLLM's random dataset draws them (`--random-input-len`, `--random-output-len`,
`--random-range-ratio`); each prompt is a run of plain-word tokens that the tokenizer encodes back to the
same count, so "1024 input tokens" means 1024 at the server too (the summary counts any prompt that is not).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt_oss_modal.bench.options import BenchError
from gpt_oss_modal.core import catalog


class Tokenizer:
    """Encode/decode without special tokens, over either a `tokenizers.Tokenizer` or a transformers one."""

    def __init__(self, impl: Any, name: str) -> None:
        self.impl = impl
        self.name = name
        self._fast = impl.__class__.__module__.startswith("tokenizers")

    def encode(self, text: str) -> list[int]:
        if self._fast:
            return list(self.impl.encode(text, add_special_tokens=False).ids)
        return list(self.impl.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.impl.decode(list(ids), skip_special_tokens=False)

    def vocab(self) -> dict[str, int]:
        return dict(self.impl.get_vocab())

    def special_ids(self) -> set[int]:
        if self._fast:
            return {i for i, t in self.impl.get_added_tokens_decoder().items() if t.special}
        return set(getattr(self.impl, "all_special_ids", []))


def load_tokenizer(name_or_path: str | Path) -> Tokenizer:
    """A local tokenizer dir or tokenizer.json, or a Hugging Face repo id (downloaded once, then cached)."""
    p = Path(name_or_path).expanduser()
    try:
        from tokenizers import Tokenizer as FastTokenizer
    except ImportError:  # pragma: no cover - tokenizers comes with transformers and vllm
        FastTokenizer = None  # type: ignore[assignment]
    if FastTokenizer is not None:
        if p.is_file():
            return Tokenizer(FastTokenizer.from_file(str(p)), str(p))
        if (p / "tokenizer.json").is_file():
            return Tokenizer(FastTokenizer.from_file(str(p / "tokenizer.json")), str(p))
    if p.exists() or FastTokenizer is None:
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise BenchError(
                f"cannot load tokenizer {name_or_path}: pip install tokenizers (the `bench` extra has it)"
            ) from None
        try:
            return Tokenizer(
                AutoTokenizer.from_pretrained(str(p if p.exists() else name_or_path)), str(name_or_path)
            )
        except Exception as e:  # noqa: BLE001 - any loader failure is one line for the user
            raise BenchError(f"cannot load tokenizer {name_or_path}: {type(e).__name__}: {e}") from None
    try:
        return Tokenizer(FastTokenizer.from_pretrained(str(name_or_path)), str(name_or_path))
    except Exception as e:  # noqa: BLE001
        raise BenchError(
            f"cannot load tokenizer {name_or_path!r} from Hugging Face ({type(e).__name__}: {e}); "
            "pass --tokenizer with a local directory that holds tokenizer.json"
        ) from None


@dataclass(frozen=True)
class Prompt:
    text: str
    prompt_len: int  # tokens, as our tokenizer counts them (exact by construction)
    output_len: int


def length_bounds(mean: int, range_ratio: float, minimum: int) -> tuple[int, int]:
    """The integer range a length is drawn from: vLLM's random dataset, [floor(m(1-r)), ceil(m(1+r))]."""
    if not 0 <= range_ratio < 1:
        raise BenchError(f"--random-range-ratio {range_ratio} must be in [0, 1)")
    lo = max(math.floor(mean * (1 - range_ratio)), minimum)
    hi = max(math.ceil(mean * (1 + range_ratio)), minimum)
    return lo, hi


_WORD = re.compile(r"^(Ġ|▁| )[a-z]{3,12}$")


def word_pool(tok: Tokenizer) -> list[int]:
    """Token ids that are one plain lowercase word with a leading space: " word" re-encodes to itself,
    so a run of them keeps its token count through decode and encode."""
    pool = sorted(i for s, i in tok.vocab().items() if _WORD.match(s))
    specials = tok.special_ids()
    pool = [i for i in pool if i not in specials]
    checked = [i for i in pool[:: max(1, len(pool) // 2000)]]  # spot-check the pattern on this vocab
    if len(pool) < 100 or any(tok.encode(tok.decode([i])) != [i] for i in checked[:200]):
        pool = [i for i in pool if tok.encode(tok.decode([i])) == [i]]
    if len(pool) < 100:
        raise BenchError(f"tokenizer {tok.name}: too few plain-word tokens to build prompts from")
    return pool


def exact_prompt(tok: Tokenizer, pool: Sequence[int], n_tokens: int, rng: random.Random) -> tuple[str, int]:
    """Text that the tokenizer encodes to exactly n_tokens tokens (or the nearest, after 10 tries)."""
    ids = [pool[rng.randrange(len(pool))] for _ in range(n_tokens)]
    text = tok.decode(ids)
    for _ in range(10):
        got = tok.encode(text)
        if len(got) == n_tokens:
            return text, n_tokens
        if len(got) > n_tokens:
            got = got[:n_tokens]
        else:
            got = got + [pool[rng.randrange(len(pool))] for _ in range(n_tokens - len(got))]
        text = tok.decode(got)
    return text, len(tok.encode(text))


def make_workload(
    tok: Tokenizer,
    num_prompts: int,
    input_len: int,
    output_len: int,
    range_ratio: float = 0.0,
    seed: int = 0,
) -> list[Prompt]:
    """num_prompts distinct random prompts; lengths drawn uniformly as vLLM's random dataset draws them."""
    if input_len < 1 or output_len < 1:
        raise BenchError("--input-len and --output-len must be at least 1 token")
    rng = random.Random(seed)
    pool = word_pool(tok)
    in_lo, in_hi = length_bounds(input_len, range_ratio, 1)
    out_lo, out_hi = length_bounds(output_len, range_ratio, 1)
    prompts = []
    for _ in range(num_prompts):
        n_in = rng.randint(in_lo, in_hi)
        n_out = rng.randint(out_lo, out_hi)
        text, real = exact_prompt(tok, pool, n_in, rng)
        prompts.append(Prompt(text, real, n_out))
    return prompts


def infer_model(root: str | None) -> str | None:
    """Which catalog model (or `tiny`) a server runs, from the `root` it reports at /v1/models: a Hugging Face
    id, or a local checkpoint whose config.json has a catalog model's shape; None when it cannot tell."""
    if not root:
        return None
    p = Path(root)
    if not p.is_dir():
        resolved = catalog.resolve_model_id(root)
        return resolved if resolved in catalog.MODELS else None
    try:
        cfg = json.loads((p / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if cfg.get("model_type") != "gpt_oss":
        return None
    for m in catalog.MODELS.values():
        if cfg.get("num_hidden_layers") == m.num_layers and cfg.get("num_local_experts") == m.num_experts:
            return m.id
    return catalog.TINY if cfg.get("hidden_size", 1 << 20) < 1024 else None


def default_tokenizer(model: str | None, root: str | None) -> str:
    """--tokenizer unset: the server's own checkpoint if it is a local dir, the tiny checkpoint for `tiny`,
    else the model's Hugging Face repo."""
    if root and (Path(root) / "tokenizer.json").is_file():
        return root
    if model == catalog.TINY:
        from gpt_oss_modal.local import tiny

        return str(tiny.ensure_checkpoint(scripted=True))
    if root and re.fullmatch(r"[\w.-]+/[\w.-]+", root) and not Path(root).exists():
        return root
    return model or "openai/gpt-oss-20b"
