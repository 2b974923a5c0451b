"""Real third-party clients against the real local server: the OpenAI Agents SDK and simonw's `llm`.

These are the clients people point at a deployment (docs/clients.md); each test drives one through a
whole exchange with the scripted tiny checkpoint and checks what came back and what went over the wire.

The tool loop and the tiny model. The tiny model has no judgement: its `tool` script (a `get_weather`
call with {"city": "Paris"}) runs only when the request carries that script's `logit_bias`. An agent
configured with the bias in its model settings sends it on every turn, so after the tool result comes
back the model calls the tool again, and again, until the run hits its turn limit (shown by
`test_agent_that_always_sends_the_bias_loops_until_max_turns`). A real gpt-oss model decides for itself
to call the tool once and then answer. `FirstTurnBias` stands in for that decision, and nothing else:
it adds the bias to a request only while no tool result is in the model's input. Everything else is the
SDK's own loop, unchanged: it parses the call, runs our Python function, sends the result back in a
second request and takes that reply's text as the final output. We considered `tool_use_behavior=
"stop_on_first_tool"`, but then the result never goes back to the model, which is the half of the loop
a server can get wrong.

Responses store. The Agents SDK chains turns with `previous_response_id` when asked to
(`auto_previous_response_id=True`); vLLM resolves that id only when it keeps responses
(`VLLM_ENABLE_RESPONSES_API_STORE=1`, the `responses_store` setting). The default server here runs
without it, as a deployment does by default; one more server, started with `responses_store=True`,
covers the store. The SDK's tracing is turned off: it would export to OpenAI's servers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gpt_oss_modal.local import tiny
from gpt_oss_modal.local import tokenizer as tk

agents = pytest.importorskip("agents", reason="the clients extra: pip install -e '.[clients]'")
llm = pytest.importorskip("llm", reason="the clients extra: pip install -e '.[clients]'")

from agents import (  # noqa: E402
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from agents.exceptions import MaxTurnsExceeded  # noqa: E402

pytestmark = pytest.mark.e2e

set_tracing_disabled(True)

TOOL = tiny.SCRIPTS["tool"]
BIAS = {"logit_bias": dict(TOOL.logit_bias)}  # the tools come from the agent, in each API's own format
QUESTION = "What is the weather in Paris?"
WEATHER = {"temperature_c": 18, "sky": "clear"}
TIMEOUT = 120.0


# --- an agent wired to a local server, with every request it sends recorded ------------------------------


def has_tool_result(model_input: str | list) -> bool:
    return not isinstance(model_input, str) and any(
        isinstance(item, dict) and item.get("type") == "function_call_output" for item in model_input
    )


class FirstTurnBias:
    """Adds the tiny model's tool-script bias to a request while no tool result is in its input.

    Mixed into the SDK's model classes; see the module docstring for why.
    """

    def _biased(self, model_input: str | list, settings: ModelSettings) -> ModelSettings:
        if has_tool_result(model_input):
            return settings
        return dataclasses.replace(settings, extra_body={**(settings.extra_body or {}), **BIAS})

    async def get_response(self, system_instructions, input, model_settings, *args, **kwargs):
        settings = self._biased(input, model_settings)
        return await super().get_response(system_instructions, input, settings, *args, **kwargs)

    def stream_response(self, system_instructions, input, model_settings, *args, **kwargs):
        settings = self._biased(input, model_settings)
        return super().stream_response(system_instructions, input, settings, *args, **kwargs)


class ChatModel(FirstTurnBias, OpenAIChatCompletionsModel):
    pass


class ResponsesModel(FirstTurnBias, OpenAIResponsesModel):
    pass


MODELS = {"chat_completions": ChatModel, "responses": ResponsesModel}


@dataclasses.dataclass
class Wire:
    """What the SDK sent (path and JSON body of each request) and which tool calls our function ran."""

    api_key: str = "unused"
    requests: list[tuple[str, dict]] = dataclasses.field(default_factory=list)
    tool_calls: list[str] = dataclasses.field(default_factory=list)

    async def record(self, request: httpx.Request) -> None:
        self.requests.append((request.url.path, json.loads(request.content or b"{}")))

    def client(self, base_url: str) -> openai.AsyncOpenAI:
        http = httpx.AsyncClient(timeout=TIMEOUT, event_hooks={"request": [self.record]})
        return openai.AsyncOpenAI(base_url=base_url, api_key=self.api_key, max_retries=0, http_client=http)

    def agent(self, base_url: str, model_class: type) -> Agent:
        @function_tool
        def get_weather(city: str) -> str:
            """Get the current weather for a city."""
            self.tool_calls.append(city)
            return json.dumps({"city": city, **WEATHER})

        model = model_class(model="llm", openai_client=self.client(base_url))
        return Agent(
            name="weather", instructions="Answer with the weather.", model=model, tools=[get_weather]
        )


def run_agent(agent: Agent, *, streamed: bool, **run_kwargs: Any) -> tuple[Any, list]:
    """Run the agent to its final output (plain or streamed); return the result and the stream's events."""

    async def go():
        if not streamed:
            return await Runner.run(agent, QUESTION, max_turns=4, **run_kwargs), []
        result = Runner.run_streamed(agent, QUESTION, max_turns=4, **run_kwargs)
        events = [event async for event in result.stream_events()]
        return result, events

    return asyncio.run(go())


def check_tool_loop(wire: Wire, result: Any, api: str) -> None:
    """The whole loop happened: a biased first request, our tool ran, its result went back, final text."""
    assert result.final_output == tiny.FINAL_TEXT
    assert wire.tool_calls == ["Paris"]  # our Python function ran once, with the model's arguments
    path = {"chat_completions": "/v1/chat/completions", "responses": "/v1/responses"}[api]
    assert [p for p, _ in wire.requests] == [path, path]
    (_, first), (_, second) = wire.requests
    assert first["model"] == second["model"] == "llm"
    assert first["logit_bias"] == TOOL.logit_bias and "logit_bias" not in second
    assert [t.get("name") or t["function"]["name"] for t in first["tools"]] == ["get_weather"]
    # the second request carries the call and our function's result, linked by the call's id
    if api == "chat_completions":
        call_msg, result_msg = second["messages"][-2:]
        (call,) = call_msg["tool_calls"]
        assert call["function"]["name"] == "get_weather"
        assert json.loads(call["function"]["arguments"]) == tiny.TOOL_ARGUMENTS
        assert result_msg["role"] == "tool" and result_msg["tool_call_id"] == call["id"]
        output = result_msg["content"]
    else:
        call, output_item = second["input"][-2:]
        assert call["type"] == "function_call" and call["name"] == "get_weather"
        assert json.loads(call["arguments"]) == tiny.TOOL_ARGUMENTS
        assert output_item["type"] == "function_call_output" and output_item["call_id"] == call["call_id"]
        output = output_item["output"]
    assert json.loads(output) == {"city": "Paris", **WEATHER}
    # the SDK's record of the run: a call, its output, then the answer
    kinds = [item.type for item in result.new_items]
    assert kinds == ["tool_call_item", "tool_call_output_item", "message_output_item"]


def check_stream(events: list) -> None:
    names = [e.name for e in events if e.type == "run_item_stream_event"]
    assert names == ["tool_called", "tool_output", "message_output_created"]
    deltas = [
        e.data.delta
        for e in events
        if e.type == "raw_response_event" and e.data.type == "response.output_text.delta"
    ]
    assert len(deltas) > 1 and "".join(deltas) == tiny.FINAL_TEXT  # the answer really streamed


# --- the OpenAI Agents SDK -------------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
@pytest.mark.parametrize("api", list(MODELS))
def test_agents_sdk_tool_loop(server, api: str, streamed: bool) -> None:
    """The SDK's own loop, end to end: the model calls get_weather, our Python function runs, its result
    goes back in a second request, and that reply is the final output. The tool script's logit_bias goes
    only with the first request (FirstTurnBias); the module docstring says why, and why not
    `stop_on_first_tool`."""
    wire = Wire()
    result, events = run_agent(wire.agent(server.base_url, MODELS[api]), streamed=streamed)
    check_tool_loop(wire, result, api)
    if streamed:
        check_stream(events)


def test_agent_that_always_sends_the_bias_loops_until_max_turns(server) -> None:
    """The trap the FirstTurnBias mixin avoids: the bias in the agent's settings goes out on every turn."""
    wire = Wire()
    agent = wire.agent(server.base_url, OpenAIChatCompletionsModel).clone(
        model_settings=ModelSettings(extra_body=BIAS)
    )
    with pytest.raises(MaxTurnsExceeded):
        asyncio.run(Runner.run(agent, QUESTION, max_turns=3))
    assert wire.tool_calls == ["Paris"] * 3
    assert all(body["logit_bias"] == TOOL.logit_bias for _, body in wire.requests)


def test_agents_sdk_response_chaining_needs_the_store(server) -> None:
    """Without the store (the default) the SDK's second turn names a response vLLM never kept: a 404."""
    wire = Wire()
    with pytest.raises(openai.NotFoundError, match="not found"):
        run_agent(wire.agent(server.base_url, ResponsesModel), streamed=False, auto_previous_response_id=True)
    assert wire.tool_calls == ["Paris"]  # the first turn and the tool ran; the chained second turn failed
    assert "previous_response_id" in wire.requests[-1][1]


# --- llm (simonw/llm), with an OpenAI-compatible model -----------------------------------------------------


def llm_model_for(base_url: str, user_dir: Path, **entry: Any):
    """`llm`'s documented way to add an OpenAI-compatible server: extra-openai-models.yaml in its user
    directory (LLM_USER_PATH, set by the caller), one entry per model."""
    import yaml  # llm's own dependency

    model = {"model_id": "gpt-oss", "model_name": "llm", "api_base": base_url, "reasoning": True, **entry}
    (user_dir / "extra-openai-models.yaml").write_text(yaml.safe_dump([model]))
    return llm.get_model("gpt-oss")


@pytest.fixture
def llm_model(server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path))
    model = llm_model_for(server.base_url, tmp_path)
    assert model.model_name == "llm" and model.needs_key is None  # api_base set: no OpenAI key wanted
    return model


def n_tokens(text: str) -> int:
    return len(tk.encode(text))


def test_llm_prompt(llm_model) -> None:
    response = llm_model.prompt("Hello!", stream=False)
    assert response.text() == tiny.FINAL_TEXT
    usage = response.usage()
    assert usage.output == len(tiny.SCRIPTS["final"].tokens) and usage.input > n_tokens("Hello!")


def test_llm_streamed_prompt(llm_model) -> None:
    chunks = list(llm_model.prompt("Hello!", stream=True))
    assert len(chunks) > 1 and "".join(chunks) == tiny.FINAL_TEXT


def test_llm_conversation_sends_the_history(llm_model) -> None:
    conversation = llm_model.conversation()
    first = conversation.prompt("Hello!")
    assert first.text() == tiny.FINAL_TEXT
    second = conversation.prompt("And again?")
    assert second.text() == tiny.FINAL_TEXT
    # the second prompt carries the first exchange: the earlier question and answer are in its input
    assert second.usage().input >= first.usage().input + n_tokens(tiny.FINAL_TEXT)


def test_llm_options_reach_the_server(llm_model) -> None:
    """llm's own options (logit_bias, reasoning_effort) go through: the reasoning script runs."""
    s = tiny.SCRIPTS["reasoning"]
    response = llm_model.prompt("Hello!", stream=False, logit_bias=s.logit_bias, reasoning_effort="high")
    assert response.text() == tiny.FINAL_TEXT  # llm shows the answer; the chain of thought stays apart
    usage = response.usage()
    assert usage.output == len(s.tokens)
    assert usage.details["completion_tokens_details"]["reasoning_tokens"] == n_tokens(tiny.REASONING_TEXT)


# --- max_output_tokens larger than the context (gpt-oss's evals runner sends 131072) ----------------------


def test_responses_refuse_max_output_tokens_beyond_the_context(client, server) -> None:
    """vLLM refuses (400, naming the parameter and the limit) where chat completions clamp; documented in
    docs/clients.md rather than rewritten by us."""
    context = server.command.max_model_len
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="llm", input="Hello!", max_output_tokens=131072)
    body = e.value.response.json()["error"]
    assert body["param"] == "max_output_tokens"
    assert "131072" in body["message"] and f"max_model_len={context}" in body["message"]
    # the same request within the context is fine, and so is chat with a too-large max_tokens (clamped)
    fits = client.responses.create(model="llm", input="Hello!", max_output_tokens=context)
    assert fits.status == "completed" and fits.output_text == tiny.FINAL_TEXT
    chat = client.chat.completions.create(
        model="llm", messages=[{"role": "user", "content": "Hello!"}], max_tokens=131072
    )
    assert chat.choices[0].message.content == tiny.FINAL_TEXT


def test_without_the_store_responses_cannot_be_retrieved(client) -> None:
    r = client.responses.create(model="llm", input="Hello!")
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="llm", input="And again?", previous_response_id=r.id)


# --- a second server: the Responses store on (responses_store = true), behind a bearer key ------------------

# The bearer key of the second server: clients must send it, as they would to a deployment with
# api_key_secret. Tests only; it guards a server on 127.0.0.1 for the length of this module.
STORE_KEY = "clients-e2e-key"


@pytest.fixture(scope="module")
def store_server(
    tmp_path_factory: pytest.TempPathFactory, startup_timeout: float, engine_starter
) -> Iterator:
    from gpt_oss_modal.core.config import DeployConfig
    from gpt_oss_modal.local import server as lo

    srv = lo.LocalServer(
        DeployConfig(
            model="tiny", port=lo.free_port(), max_inputs=4, responses_store=True, api_key=STORE_KEY
        ),
        target="local-cpu",
        checkpoint=lo.tiny_checkpoint(scripted=True),
        log_path=tmp_path_factory.mktemp("store-engine") / "engine.log",
    )
    engine_starter(srv, startup_timeout, "the local engine with the Responses store")
    try:
        yield srv
    finally:
        srv.stop()


def test_store_setting_reaches_the_engine(store_server, server) -> None:
    assert store_server.command.env["VLLM_ENABLE_RESPONSES_API_STORE"] == "1"
    assert "VLLM_ENABLE_RESPONSES_API_STORE" not in server.command.env


def test_stored_response_is_retrieved_and_continued(store_server) -> None:
    from gpt_oss_modal.clients.openai_api import openai_client

    client = openai_client(store_server.base_url, STORE_KEY, timeout=TIMEOUT, max_retries=0)
    first = client.responses.create(model="llm", input="Hello!")
    assert first.output_text == tiny.FINAL_TEXT
    again = client.responses.retrieve(first.id)
    assert (again.id, again.status, again.output_text) == (first.id, "completed", tiny.FINAL_TEXT)

    follow_up = client.responses.create(model="llm", input="And again?", previous_response_id=first.id)
    alone = client.responses.create(model="llm", input="And again?")
    assert follow_up.previous_response_id == first.id and follow_up.output_text == tiny.FINAL_TEXT
    # the server put the stored turn (question and answer) in front of the new input
    extra = follow_up.usage.input_tokens - alone.usage.input_tokens
    assert extra >= n_tokens("Hello!") + n_tokens(tiny.FINAL_TEXT)


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
def test_agents_sdk_chains_responses_with_the_store(store_server, streamed: bool) -> None:
    wire = Wire(api_key=STORE_KEY)
    agent = wire.agent(store_server.base_url, ResponsesModel)
    result, events = run_agent(agent, streamed=streamed, auto_previous_response_id=True)
    assert result.final_output == tiny.FINAL_TEXT and wire.tool_calls == ["Paris"]
    (_, first), (_, second) = wire.requests
    assert "previous_response_id" not in first and first["logit_bias"] == TOOL.logit_bias
    # the second turn sends only the tool's result; the server supplies the rest from its store
    assert second["previous_response_id"]
    (output_item,) = second["input"]
    assert output_item["type"] == "function_call_output"
    assert json.loads(output_item["output"]) == {"city": "Paris", **WEATHER}
    assert result.last_response_id and result.last_response_id != second["previous_response_id"]
    if streamed:
        check_stream(events)


def test_llm_sends_a_bearer_key_from_its_key_store(store_server, tmp_path: Path, monkeypatch) -> None:
    """`api_key_name` + `llm keys set NAME` (keys.json in the user directory) for a deployment with a key."""
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path))
    (tmp_path / "keys.json").write_text(json.dumps({"gpt-oss": STORE_KEY}))
    model = llm_model_for(store_server.base_url, tmp_path, api_key_name="gpt-oss")
    assert model.prompt("Hello!", stream=False).text() == tiny.FINAL_TEXT
    keyless = llm_model_for(store_server.base_url, tmp_path)
    with pytest.raises(openai.AuthenticationError):
        keyless.prompt("Hello!", stream=False).text()


def test_llm_sends_extra_headers(store_server, tmp_path: Path, monkeypatch) -> None:
    """`headers:` is how Modal-Key / Modal-Secret reach a proxy-auth deployment; here it carries the key."""
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path))
    model = llm_model_for(store_server.base_url, tmp_path, headers={"Authorization": f"Bearer {STORE_KEY}"})
    assert "".join(model.prompt("Hello!", stream=True)) == tiny.FINAL_TEXT
