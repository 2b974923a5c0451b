"""LangChain (`langchain-openai`'s ChatOpenAI) against the real local server: invoke, stream, a tool call
through bind_tools, and the reasoning where LangChain shows it.

ChatOpenAI talks chat completions by default and the Responses API with `use_responses_api=True`; both
are driven here. The tiny model's scripts are chosen by `logit_bias`: a chat completions parameter that
LangChain passes as a model argument, but not a Responses API one (the openai client refuses it), so
there it travels in `extra_body`. What LangChain sent is recorded with an httpx event hook.
"""

from __future__ import annotations

import json

import httpx
import pytest

from gpt_oss_modal.local import tiny

langchain_openai = pytest.importorskip(
    "langchain_openai", reason="the clients extra: pip install -e '.[clients]'"
)
from langchain_openai import ChatOpenAI  # noqa: E402

pytestmark = pytest.mark.e2e

TIMEOUT = 120.0
REASONING = tiny.SCRIPTS["reasoning"]
TOOL = tiny.SCRIPTS["tool"]


def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    return f"18 C and clear in {city}"


class Wire:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict, dict]] = []

    def record(self, request: httpx.Request) -> None:
        self.requests.append((request.url.path, dict(request.headers), json.loads(request.content or b"{}")))

    def model(self, base_url: str, **kwargs) -> ChatOpenAI:
        http = httpx.Client(timeout=TIMEOUT, event_hooks={"request": [self.record]})
        return ChatOpenAI(
            model="llm",
            base_url=base_url,
            api_key="unused",
            max_retries=0,
            timeout=TIMEOUT,
            http_client=http,
            **kwargs,
        )


@pytest.fixture
def wire() -> Wire:
    return Wire()


def test_invoke(server, wire: Wire) -> None:
    reply = wire.model(server.base_url).invoke("Hello!")
    assert reply.content == tiny.FINAL_TEXT
    assert reply.response_metadata["finish_reason"] == "stop"
    assert reply.usage_metadata["output_tokens"] == len(tiny.SCRIPTS["final"].tokens)
    ((path, _, body),) = wire.requests
    assert path == "/v1/chat/completions" and body["model"] == "llm"


def test_stream(server, wire: Wire) -> None:
    chunks = [c.content for c in wire.model(server.base_url).stream("Hello!")]
    assert len([c for c in chunks if c]) > 1 and "".join(chunks) == tiny.FINAL_TEXT
    assert wire.requests[0][2]["stream"] is True


def test_bind_tools_gives_a_parsed_tool_call(server, wire: Wire) -> None:
    model = wire.model(server.base_url).bind_tools([get_weather]).bind(logit_bias=TOOL.logit_bias)
    reply = model.invoke("What is the weather in Paris?")
    ((call,),) = [reply.tool_calls]
    assert (call["name"], call["args"]) == (tiny.TOOL_NAME, tiny.TOOL_ARGUMENTS)
    assert reply.response_metadata["finish_reason"] == "tool_calls"
    sent = wire.requests[0][2]
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"]


def test_streamed_tool_call(server, wire: Wire) -> None:
    model = wire.model(server.base_url).bind_tools([get_weather]).bind(logit_bias=TOOL.logit_bias)
    merged = None
    for chunk in model.stream("What is the weather in Paris?"):
        merged = chunk if merged is None else merged + chunk
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [(tiny.TOOL_NAME, tiny.TOOL_ARGUMENTS)]


def test_chat_completions_count_the_reasoning_but_do_not_show_it(server, wire: Wire) -> None:
    """LangChain's ChatOpenAI reads no reasoning field from chat completions (vLLM sends `reasoning`)."""
    reply = wire.model(server.base_url).bind(logit_bias=REASONING.logit_bias).invoke("Hello!")
    assert reply.content == tiny.FINAL_TEXT
    assert reply.usage_metadata["output_token_details"]["reasoning"] > 0
    assert tiny.REASONING_TEXT not in json.dumps(reply.additional_kwargs)


def test_responses_api_shows_the_reasoning(server, wire: Wire) -> None:
    model = wire.model(server.base_url, use_responses_api=True)
    reply = model.bind(extra_body={"logit_bias": REASONING.logit_bias}).invoke("Hello!")
    assert reply.text == tiny.FINAL_TEXT
    (reasoning,) = [b for b in reply.content if b["type"] == "reasoning"]
    assert [c["text"] for c in reasoning["content"]] == [tiny.REASONING_TEXT]
    assert wire.requests[0][0] == "/v1/responses"


def test_responses_api_stream_and_tool_call(server, wire: Wire) -> None:
    model = wire.model(server.base_url, use_responses_api=True)
    texts = [
        b["text"]
        for chunk in model.stream("Hello!")
        for b in chunk.content
        if isinstance(b, dict) and b.get("type") == "text"
    ]
    assert len([t for t in texts if t]) > 1 and "".join(texts) == tiny.FINAL_TEXT
    tools = model.bind_tools([get_weather]).bind(extra_body={"logit_bias": TOOL.logit_bias})
    reply = tools.invoke("What is the weather in Paris?")
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [(tiny.TOOL_NAME, tiny.TOOL_ARGUMENTS)]


def test_modal_proxy_headers_and_a_bearer_key_go_out(server, wire: Wire) -> None:
    """docs/clients.md's configuration: `default_headers` for Modal-Key / Modal-Secret, `api_key` as the bearer
    key. The local server needs neither; the request shows both were sent."""
    model = ChatOpenAI(
        model="llm",
        base_url=server.base_url,
        api_key="sk-bearer-test",
        default_headers={"Modal-Key": "wk-test", "Modal-Secret": "ws-test"},
        http_client=httpx.Client(timeout=TIMEOUT, event_hooks={"request": [wire.record]}),
        max_retries=0,
    )
    assert model.invoke("Hello!").content == tiny.FINAL_TEXT
    headers = wire.requests[-1][1]
    assert headers["modal-key"] == "wk-test" and headers["modal-secret"] == "ws-test"
    assert headers["authorization"] == "Bearer sk-bearer-test"
