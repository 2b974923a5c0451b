"""The OpenAI-compatible API of the real vLLM engine, driven with the official `openai` client.

The server (conftest.py) runs the scripted tiny checkpoint: its replies are fixed (`tiny.SCRIPTS`), so every
assertion is exact - content, reasoning, tool calls, token counts, finish reasons - and a failure means the
serving path (harmony rendering and parsing, the reasoning and tool parsers, streaming) broke, not luck.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest

from gpt_oss_modal.local import tiny
from gpt_oss_modal.local import tokenizer as tk

pytestmark = pytest.mark.e2e

HELLO = [{"role": "user", "content": "Hello!"}]


def script(name: str) -> tiny.Script:
    return tiny.SCRIPTS[name]


def chat(client, messages=HELLO, **kwargs: Any):
    return client.chat.completions.create(model="llm", messages=messages, **kwargs)


def reasoning_of(obj: Any) -> str | None:
    """vLLM names the field `reasoning` (0.10+); older releases and some clients say `reasoning_content`."""
    for name in ("reasoning", "reasoning_content"):
        value = getattr(obj, name, None)
        if value is None and getattr(obj, "model_extra", None):
            value = obj.model_extra.get(name)
        if value is not None:
            return value
    return None


def n_tokens(text: str) -> int:
    return len(tk.encode(text))


# --- models ---------------------------------------------------------------------------------------------


def test_models_lists_only_llm(client, server) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == ["llm"]
    assert models[0].object == "model"
    # vLLM reports what it loaded as the model's root: the tiny checkpoint, not a Hugging Face id
    assert (models[0].model_extra or {}).get("root") == server.command.argv[2]


# --- chat completions -----------------------------------------------------------------------------------


def test_chat_plain_reply_is_the_scripted_final_answer(client) -> None:
    s = script("final")
    reply = chat(client)
    assert reply.object == "chat.completion" and reply.model == "llm" and reply.id
    assert len(reply.choices) == 1
    choice = reply.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == s.content == tiny.FINAL_TEXT
    assert reasoning_of(choice.message) is None
    assert not choice.message.tool_calls
    assert choice.finish_reason == s.finish_reason == "stop"
    # usage: every generated token counts, the harmony header and <|return|> included
    u = reply.usage
    assert u.completion_tokens == len(s.tokens)
    assert u.prompt_tokens > n_tokens("Hello!")  # the rendered harmony prompt: system message + turn
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens


def test_chat_is_deterministic_whatever_the_sampling_settings(client) -> None:
    texts = {
        chat(client, **kw).choices[0].message.content for kw in ({}, {"temperature": 0}, {"temperature": 1})
    }
    assert texts == {tiny.FINAL_TEXT}


def test_prompt_token_counts_are_consistent(client) -> None:
    short = chat(client).usage
    again = chat(client).usage
    longer = chat(client, [{"role": "user", "content": "Hello! How are you today?"}]).usage
    assert again.prompt_tokens == short.prompt_tokens
    assert longer.prompt_tokens - short.prompt_tokens == n_tokens("Hello! How are you today?") - n_tokens(
        "Hello!"
    )
    assert longer.completion_tokens == short.completion_tokens == len(script("final").tokens)


def _stream(client, **kwargs: Any) -> list:
    return list(chat(client, stream=True, **kwargs))


def _check_chunks(chunks: list, *, usage: bool) -> tuple[str, str, str]:
    """Check every chunk of one streamed reply; return (content, reasoning, finish_reason)."""
    assert chunks
    first = chunks[0]
    content, thoughts, finishes = [], [], []
    for i, ch in enumerate(chunks):
        assert ch.object == "chat.completion.chunk"
        assert ch.id == first.id and ch.model == "llm" and ch.created == first.created
        if not ch.choices:  # the usage chunk: last, and only when asked for
            assert usage and i == len(chunks) - 1 and ch.usage is not None
            continue
        assert len(ch.choices) == 1 and ch.choices[0].index == 0
        assert ch.usage is None  # usage comes once, in its own final chunk
        delta = ch.choices[0].delta
        assert delta.role == ("assistant" if i == 0 else None)
        assert not finishes, "nothing may follow the chunk that carries finish_reason"
        if delta.content:
            content.append(delta.content)
        if reasoning_of(delta):
            assert not content, "the reasoning streams before the answer"
            thoughts.append(reasoning_of(delta))
        if ch.choices[0].finish_reason is not None:
            finishes.append(ch.choices[0].finish_reason)
    assert len(finishes) == 1
    if usage:
        assert chunks[-1].choices == []
    return "".join(content), "".join(thoughts), finishes[0]


def test_chat_stream_every_chunk(client) -> None:
    plain = chat(client)
    chunks = _stream(client, stream_options={"include_usage": True})
    content, thoughts, finish = _check_chunks(chunks, usage=True)
    assert content == plain.choices[0].message.content == tiny.FINAL_TEXT
    assert thoughts == ""
    assert finish == "stop"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # really streamed
    u = chunks[-1].usage
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (
        plain.usage.prompt_tokens,
        plain.usage.completion_tokens,
        plain.usage.total_tokens,
    )


def test_chat_stream_without_include_usage_has_no_usage_chunk(client) -> None:
    chunks = _stream(client)
    content, _, finish = _check_chunks(chunks, usage=False)
    assert (content, finish) == (tiny.FINAL_TEXT, "stop")
    assert all(c.usage is None for c in chunks)


# --- reasoning ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("effort", ["low", "high"])
def test_reasoning_effort_is_accepted_and_reasoning_is_separate(client, effort: str) -> None:
    s = script("reasoning")
    reply = chat(client, reasoning_effort=effort, **s.request())
    msg = reply.choices[0].message
    assert reasoning_of(msg) == s.reasoning == tiny.REASONING_TEXT
    assert msg.content == s.content == tiny.FINAL_TEXT
    assert tiny.REASONING_TEXT not in msg.content  # the chain of thought never leaks into content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == len(s.tokens)
    details = reply.usage.completion_tokens_details
    assert details is not None and details.reasoning_tokens == n_tokens(tiny.REASONING_TEXT)


def test_reasoning_effort_changes_the_prompt_not_the_count(client) -> None:
    low = chat(client, reasoning_effort="low").usage.prompt_tokens
    high = chat(client, reasoning_effort="high").usage.prompt_tokens
    assert low == high  # "Reasoning: low" / "Reasoning: high" in the system message, one token each


def test_unknown_reasoning_effort_is_a_400(client) -> None:
    with pytest.raises(openai.BadRequestError):
        chat(client, reasoning_effort="extreme")


def test_reasoning_streamed(client) -> None:
    s = script("reasoning")
    chunks = _stream(client, reasoning_effort="high", stream_options={"include_usage": True}, **s.request())
    content, thoughts, finish = _check_chunks(chunks, usage=True)
    assert (thoughts, content, finish) == (tiny.REASONING_TEXT, tiny.FINAL_TEXT, "stop")
    assert chunks[-1].usage.completion_tokens == len(s.tokens)


# --- tools ----------------------------------------------------------------------------------------------


def test_tool_call(client) -> None:
    s = script("tool")
    reply = chat(client, **s.request())
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert not choice.message.content
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id
    assert call.function.name == s.tool_call.name == "get_weather"
    assert json.loads(call.function.arguments) == s.tool_call.arguments == {"city": "Paris"}


def test_tool_call_streamed(client) -> None:
    s = script("tool")
    chunks = _stream(client, **s.request())
    content, _, finish = _check_chunks(chunks, usage=False)
    assert content == "" and finish == "tool_calls"
    calls: dict[int, dict] = {}
    for ch in chunks:
        for tc in (ch.choices[0].delta.tool_calls or []) if ch.choices else []:
            entry = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
            if tc.id:
                assert entry["id"] is None, "the call id comes once, with the call's first delta"
                entry["id"] = tc.id
            if tc.function and tc.function.name:
                entry["name"] += tc.function.name
            if tc.function and tc.function.arguments:
                entry["arguments"] += tc.function.arguments
    assert list(calls) == [0]
    assert calls[0]["id"] and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}


def test_tool_result_turn_gets_an_answer(client) -> None:
    s = script("tool")
    first = chat(client, **s.request())
    call = first.choices[0].message.tool_calls[0]
    function = {"name": call.function.name, "arguments": call.function.arguments}
    result = json.dumps({"temperature_c": 18, "sky": "clear"})
    messages = [
        *HELLO,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call.id, "type": "function", "function": function}],
        },
        {"role": "tool", "tool_call_id": call.id, "content": result},
    ]
    reply = chat(client, messages, tools=[tiny.GET_WEATHER_TOOL])
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.content == tiny.FINAL_TEXT
    assert not reply.choices[0].message.tool_calls
    # the call and its result are part of the prompt now
    assert reply.usage.prompt_tokens > first.usage.prompt_tokens + n_tokens('"temperature_c": 18')


# --- limits: max_tokens, stop sequences -----------------------------------------------------------------


def test_max_tokens_cuts_the_reply_with_finish_reason_length(client) -> None:
    reply = chat(client, max_tokens=6)  # 3 harmony header tokens, then 3 of the answer
    choice = reply.choices[0]
    assert choice.finish_reason == "length"
    assert reply.usage.completion_tokens == 6
    assert choice.message.content and tiny.FINAL_TEXT.startswith(choice.message.content)
    assert choice.message.content != tiny.FINAL_TEXT
    same = chat(client, max_completion_tokens=6)
    assert (same.choices[0].message.content, same.choices[0].finish_reason) == (
        choice.message.content,
        "length",
    )


def test_chat_stop_sequence(client) -> None:
    full = chat(client)
    reply = chat(client, stop=[" tiny"])
    assert reply.choices[0].finish_reason == "stop"
    content = reply.choices[0].message.content
    # Generation stops at the stop string. For gpt-oss, vLLM parses chat content from the harmony token
    # ids, so the token that completed the stop string may stay in content ("Hello from the tiny"), where
    # /v1/completions trims it (below).
    assert content in ("Hello from the", "Hello from the tiny")
    assert reply.usage.completion_tokens < full.usage.completion_tokens


def test_completions_text_usage_and_length(client) -> None:
    reply = client.completions.create(model="llm", prompt="Count:", max_tokens=5)
    assert reply.object == "text_completion" and reply.model == "llm"
    choice = reply.choices[0]
    assert choice.text == tiny.filler_text(5) == " one two three four five"
    assert choice.finish_reason == "length"
    u = reply.usage
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (
        n_tokens("Count:"),
        5,
        n_tokens("Count:") + 5,
    )


def test_completions_stop_sequence(client) -> None:
    reply = client.completions.create(model="llm", prompt="Count:", max_tokens=20, stop=[" four"])
    choice = reply.choices[0]
    assert choice.text == " one two three"
    assert choice.finish_reason == "stop"
    assert (choice.model_extra or {}).get("stop_reason") == " four"  # vLLM says which stop string matched


def test_completions_streamed_equals_plain(client) -> None:
    chunks = list(client.completions.create(model="llm", prompt="Count:", max_tokens=7, stream=True))
    assert len({c.id for c in chunks}) == 1
    assert "".join(c.choices[0].text for c in chunks if c.choices) == tiny.filler_text(7)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]


# --- the Responses API ----------------------------------------------------------------------------------


def test_responses_api(client) -> None:
    r = client.responses.create(model="llm", input="Hello!")
    assert r.object == "response" and r.status == "completed" and r.model == "llm"
    assert r.output_text == tiny.FINAL_TEXT
    messages = [o for o in r.output if o.type == "message"]
    assert len(messages) == 1 and messages[0].role == "assistant"
    assert r.usage.output_tokens == len(script("final").tokens)
    assert r.usage.input_tokens > 0 and r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens


def test_responses_api_max_output_tokens(client) -> None:
    r = client.responses.create(model="llm", input="Hello!", max_output_tokens=6, reasoning={"effort": "low"})
    assert r.status == "incomplete"
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 6


# --- the smoke test `modal run` runs, against this server ------------------------------------------------


def test_modal_runs_smoke_test_passes_against_the_local_server(server) -> None:
    from gpt_oss_modal.clients import openai_api as c

    assert c.wait_healthy(server.base_url, timeout=300) >= 0
    result = c.smoke_test(c.openai_client(server.base_url))
    assert result.model == "llm"
    assert result.text.strip() == tiny.FINAL_TEXT
    assert result.stream_text.strip() == tiny.FINAL_TEXT
    assert result.finish_reason == result.stream_finish_reason == "stop"
    assert result.completion_tokens == result.stream_completion_tokens == len(script("final").tokens)


# --- what the API server renders before it serves ---------------------------------------------------------

SERVING = "Starting vLLM server on"
TEMPLATE_RENDERED = "Detected the chat template content format"  # vLLM logs it on a first Jinja render


def test_the_jinja_chat_template_is_rendered_only_when_a_route_asks_for_it(server) -> None:
    # vLLM renders a chat through the Jinja template before it serves; gpt-oss's chat and Responses requests
    # are built with harmony, so the engine fixes (server/_vllm_site) skip that. /tokenize with messages
    # still renders the template, at its first request.
    log = server.log_path.read_text()
    assert SERVING in log
    assert TEMPLATE_RENDERED not in log.split(SERVING)[0]
    r = httpx.post(server.url + "/tokenize", json={"model": "llm", "messages": HELLO}, timeout=60)
    assert r.status_code == 200, r.text
    assert "Hello!" in tk.harmony_encoding().decode(r.json()["tokens"])
    deadline = time.monotonic() + 30  # the log is written by a reader thread: a bound, not a measurement
    while TEMPLATE_RENDERED not in server.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert TEMPLATE_RENDERED in server.log_path.read_text().split(SERVING, 1)[1]
