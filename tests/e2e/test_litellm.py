"""LiteLLM's SDK (`litellm.completion` with an `openai/`-prefixed model and `api_base`) against the real local
server: a reply, a stream, the reasoning, and a tool call plain and streamed. A wire tap between LiteLLM
and the server shows the headers of docs/clients.md's Modal configuration going out.

LiteLLM fetches its model price list from GitHub when it is imported, and retries for seconds when it
cannot; LITELLM_LOCAL_MODEL_COST_MAP=True makes it use the copy it ships (docs/clients.md, traps).
"""

from __future__ import annotations

import json
import os

import pytest
from wiretap import WireTap

from gpt_oss_modal.local import tiny

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
litellm = pytest.importorskip("litellm", reason="the clients extra: pip install -e '.[clients]'")

pytestmark = pytest.mark.e2e

TIMEOUT = 120
HELLO = [{"role": "user", "content": "Hello!"}]
WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
REASONING = tiny.SCRIPTS["reasoning"]
TOOL = tiny.SCRIPTS["tool"]


def complete(server, **kwargs):
    options = {"model": "openai/llm", "api_base": server.base_url, "api_key": "unused", "timeout": TIMEOUT}
    return litellm.completion(**{**options, "num_retries": 0, **kwargs})


def test_completion(server) -> None:
    reply = complete(server, messages=HELLO)
    assert reply.choices[0].message.content == tiny.FINAL_TEXT
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == len(tiny.SCRIPTS["final"].tokens)


def test_stream(server) -> None:
    parts = [c.choices[0].delta.content for c in complete(server, messages=HELLO, stream=True)]
    text = [p for p in parts if p]
    assert len(text) > 1 and "".join(text) == tiny.FINAL_TEXT


def test_reasoning_arrives_as_reasoning_content(server) -> None:
    """vLLM sends `reasoning`; LiteLLM maps it to its own `reasoning_content`, apart from the answer."""
    reply = complete(server, messages=HELLO, logit_bias=REASONING.logit_bias)
    message = reply.choices[0].message
    assert message.content == tiny.FINAL_TEXT and message.reasoning_content == tiny.REASONING_TEXT


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_tool_call(server, stream: bool) -> None:
    reply = complete(
        server, messages=WEATHER, tools=[tiny.GET_WEATHER_TOOL], logit_bias=TOOL.logit_bias, stream=stream
    )
    if stream:
        reply = litellm.stream_chunk_builder(list(reply), messages=WEATHER)
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name == tiny.TOOL_NAME
    assert json.loads(call.function.arguments) == tiny.TOOL_ARGUMENTS
    assert reply.choices[0].finish_reason == "tool_calls"


def test_modal_proxy_headers_and_a_bearer_key_go_out(server) -> None:
    """docs/clients.md's configuration: `extra_headers` for Modal-Key / Modal-Secret, `api_key` as the bearer
    key. The local server needs neither; the tap shows both were sent."""
    with WireTap(server.url) as tap:
        reply = complete(
            server,
            api_base=f"{tap.url}/v1",
            api_key="sk-bearer-test",
            extra_headers={"Modal-Key": "wk-test", "Modal-Secret": "ws-test"},
            messages=HELLO,
        )
    assert reply.choices[0].message.content == tiny.FINAL_TEXT
    (ex,) = tap.exchanges
    assert (
        ex.path == "/v1/chat/completions" and ex.body["model"] == "llm"
    )  # the prefix is LiteLLM's, not sent
    assert ex.headers["modal-key"] == "wk-test" and ex.headers["modal-secret"] == "ws-test"
    assert ex.headers["authorization"] == "Bearer sk-bearer-test"
