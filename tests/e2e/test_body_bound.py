"""The compat middleware's body bound against the real local server (issue: a chat message of 3,000,000 times
the letter x made harmony's tokenizer panic, and the client got a plain-text 500).

Now the body is refused before vLLM reads it, with an OpenAI-style 400 (`context_length_exceeded`, as vLLM
answers a prompt beyond the context), and the server keeps serving; so is a smaller one whose text holds a
run the tokenizer would take quadratic time over (`string_above_max_length`). A prompt over the context but under the
bound still reaches vLLM, which refuses it by its own token count. What Codex sends is covered by
test_codex.py; the rewrites themselves by tests/test_compat.py.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from gpt_oss_modal.local import tiny
from gpt_oss_modal.server import compat

pytestmark = pytest.mark.e2e

TIMEOUT = 600.0
HELLO = [{"role": "user", "content": "Hello!"}]


def still_serving(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="llm", messages=HELLO)
    assert reply.choices[0].message.content == tiny.FINAL_TEXT


def test_a_3mb_prompt_gets_an_openai_400_and_the_server_keeps_serving(server, client) -> None:
    context = server.command.max_model_len
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="llm", messages=[{"role": "user", "content": "x" * 3_000_000}])
    error = e.value.response.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["type"] == "invalid_request_error"
    assert (
        f"{compat.body_limit(context):,} bytes" in error["message"]
        and f"{context:,} tokens" in error["message"]
    )
    still_serving(client)


def test_a_chunked_body_over_the_bound_is_refused_too(server, client) -> None:
    limit = compat.body_limit(server.command.max_model_len)

    def body():
        yield b'{"model": "llm", "messages": [{"role": "user", "content": "'
        for _ in range(limit // 65536 + 1):
            yield b"x" * 65536
        yield b'"}]}'

    with httpx.Client(timeout=TIMEOUT) as http:
        r = http.post(
            f"{server.base_url}/chat/completions",
            content=body(),
            headers={"content-type": "application/json"},
        )
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    still_serving(client)


def test_an_unbroken_run_under_the_size_bound_gets_an_openai_400_not_a_stalled_tokenizer(
    server, client
) -> None:
    # 150,000 x's: under the body bound at this context, ~6 s of harmony's tokenizer if it got there.
    run = "x" * 150_000
    assert len(run) < compat.body_limit(server.command.max_model_len)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="llm", messages=[{"role": "user", "content": run}])
    error = e.value.response.json()["error"]
    assert error["code"] == "string_above_max_length" and error["type"] == "invalid_request_error"
    assert "150,000 bytes" in error["message"]
    still_serving(client)


def test_a_prompt_over_the_context_but_under_the_bound_is_refused_by_vllm(server, client) -> None:
    context = server.command.max_model_len
    long = "hello " * (context + 1000)  # a token per word: over the context, ~100 KB, under the bound
    assert len(long) < compat.body_limit(context)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="llm", messages=[{"role": "user", "content": long}])
    assert "context" in e.value.response.json()["error"]["message"]  # vLLM's own words, not ours
    assert "bytes" not in e.value.response.json()["error"]["message"]
    still_serving(client)
