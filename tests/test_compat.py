"""The request-compatibility middleware (gpt_oss_modal.server.compat) on its own, in an app loaded the way vLLM
loads `--middleware`, and the engine command that turns it on. The real engine behind it is covered by
tests/e2e/test_body_bound.py (the body bound) and tests/e2e/test_codex.py (what Codex sends).

The app below stands in for vLLM only where the real one cannot be made to answer: the tiny model's tool
script always calls `get_weather`, never a flattened `<namespace>__<name>`, so the reply side of the
namespace rewrite is checked here against replies shaped as vLLM 0.32 sends them (captured from it)."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.testclient import TestClient

from gpt_oss_modal.core import engine
from gpt_oss_modal.core.config import DeployConfig
from gpt_oss_modal.server import auth, compat

NAMESPACE_TOOL = {
    "type": "namespace",
    "name": "multi_agent_v1",
    "description": "Tools for spawning and managing sub-agents.",
    "tools": [
        {  # a parameter called "name": a dict under the key "name" on the way back
            "type": "function",
            "name": "spawn_agent",
            "parameters": {"type": "object", "properties": {"name": {"type": "string"}}},
        },
        {"type": "function", "name": "close_agent", "parameters": {"type": "object", "properties": {}}},
    ],
}
EXEC = {"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {}}}
CODEX_LIKE = {  # the shape of Codex 0.169.0's first request, shortened
    "model": "llm",
    "stream": False,
    "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello"}]}],
    "tools": [EXEC, NAMESPACE_TOOL, {"type": "web_search", "external_web_access": False}],
    "tool_choice": "auto",
}
FLAT = "multi_agent_v1__spawn_agent"


def call_item(name: str) -> dict:
    return {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": name, "arguments": "{}"}


def make_app(seen: list[dict]) -> FastAPI:
    """Records the body it got; answers with a call to the flattened name, plain or streamed."""
    app = FastAPI()

    @app.post("/v1/responses")
    async def responses(request: Request):
        body = await request.json()
        seen.append(body)
        item = call_item(FLAT)
        if not body.get("stream"):
            return JSONResponse(
                {"id": "resp_1", "object": "response", "output": [item], "tools": body["tools"]}
            )

        def events():
            yield f"event: response.output_item.added\ndata: {json.dumps({'type': 'response.output_item.added', 'item': {**item, 'arguments': ''}})}\n\n"
            # an event split across chunks, as a network may deliver it
            done = json.dumps(
                {"type": "response.function_call_arguments.done", "name": FLAT, "arguments": "{}"}
            )
            yield f"event: response.function_call_arguments.done\ndata: {done[:20]}"
            yield f"{done[20:]}\n\n"
            yield f"event: response.completed\ndata: {json.dumps({'type': 'response.completed', 'response': {'output': [item]}})}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.body()
        seen.append({"bytes": len(body)})
        return JSONResponse({"ok": True, "name": FLAT, "type": "function_call"})

    return app


@pytest.fixture()
def wire() -> tuple[TestClient, list[dict]]:
    seen: list[dict] = []
    app = make_app(seen)
    app.add_middleware(compat.CompatMiddleware, max_model_len=1000)
    return TestClient(app), seen


# --- the request --------------------------------------------------------------------------------------------


def test_namespace_tools_are_flattened_and_hosted_tools_dropped(wire) -> None:
    client, seen = wire
    r = client.post("/v1/responses", json=CODEX_LIKE)
    assert r.status_code == 200
    (sent,) = seen
    assert [t["name"] for t in sent["tools"]] == [
        "exec_command",
        "multi_agent_v1__spawn_agent",
        "multi_agent_v1__close_agent",
    ]
    assert all(t["type"] == "function" for t in sent["tools"])
    assert sent["input"] == CODEX_LIKE["input"] and sent["tool_choice"] == "auto"  # the rest untouched


def test_the_reply_gives_calls_their_namespace_back(wire) -> None:
    client, _ = wire
    (item,) = client.post("/v1/responses", json=CODEX_LIKE).json()["output"]
    assert (item["name"], item["namespace"]) == ("spawn_agent", "multi_agent_v1")


def test_the_stream_gives_calls_their_namespace_back(wire) -> None:
    client, _ = wire
    with client.stream("POST", "/v1/responses", json={**CODEX_LIKE, "stream": True}) as r:
        text = "".join(r.iter_text())
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events] == [
        "response.output_item.added",
        "response.function_call_arguments.done",
        "response.completed",
    ]
    items = [events[0]["item"], events[1], events[2]["response"]["output"][0]]
    assert all((i["name"], i["namespace"]) == ("spawn_agent", "multi_agent_v1") for i in items)
    assert text.count("event: ") == 3  # the event lines survive


def test_earlier_namespaced_calls_in_the_input_are_flattened(wire) -> None:
    client, seen = wire
    history = [
        {**call_item("spawn_agent"), "namespace": "multi_agent_v1"},
        {"type": "function_call_output", "call_id": "call_1", "output": "agent 7"},
    ]
    choice = {"type": "function", "name": "close_agent", "namespace": "multi_agent_v1"}
    body = {**CODEX_LIKE, "input": CODEX_LIKE["input"] + history, "tool_choice": choice}
    client.post("/v1/responses", json=body)
    sent = seen[0]
    assert sent["input"][1]["name"] == FLAT and "namespace" not in sent["input"][1]
    assert sent["tool_choice"] == {"type": "function", "name": "multi_agent_v1__close_agent"}


def test_a_plain_request_reaches_the_app_byte_for_byte_and_the_reply_is_left_alone(wire) -> None:
    client, seen = wire
    body = {"model": "llm", "input": "hi", "tools": [EXEC]}
    r = client.post("/v1/responses", json=body)
    assert seen == [body]
    assert r.json()["output"][0]["name"] == FLAT and "namespace" not in r.json()["output"][0]


def test_each_rewrite_is_logged_once(wire, caplog: pytest.LogCaptureFixture) -> None:
    client, _ = wire
    compat.log.propagate = True  # so that caplog sees what vLLM's stderr would
    try:
        with caplog.at_level(logging.INFO, logger=compat.__name__):
            client.post("/v1/responses", json=CODEX_LIKE)
            client.post("/v1/responses", json=CODEX_LIKE)
    finally:
        compat.log.propagate = False
    lines = [r.getMessage() for r in caplog.records]
    assert len([m for m in lines if "hosted tool 'web_search'" in m]) == 1
    assert len([m for m in lines if "namespace tool 'multi_agent_v1'" in m and FLAT in m]) == 1


# --- the body bound -----------------------------------------------------------------------------------------


def test_body_limit_is_16_bytes_a_token_plus_slack() -> None:
    assert compat.body_limit(16384) == 16 * 16384 + 256 * 1024 == 524288
    assert compat.body_limit(131072) < 3_000_000  # the 3 MB prompt is refused at any context we serve


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_bound_gets_an_openai_400_before_the_app_reads_it(wire, chunked: bool) -> None:
    client, seen = wire
    limit = compat.body_limit(1000)
    payload = json.dumps({"model": "llm", "messages": [{"role": "user", "content": "x" * limit}]}).encode()
    content = iter([payload[i : i + 65536] for i in range(0, len(payload), 65536)]) if chunked else payload
    r = client.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400 and seen == []
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["type"] == "invalid_request_error"
    assert f"{limit:,} bytes" in error["message"] and "1,000 tokens" in error["message"]
    assert (f"{len(payload):,} bytes" in error["message"]) is not chunked


def test_a_body_under_the_bound_goes_through(wire) -> None:
    client, seen = wire
    content = b" " * (compat.body_limit(1000) - 2) + b"{}"
    assert client.post("/v1/chat/completions", content=content).status_code == 200
    assert seen == [{"bytes": len(content)}]


# --- the bound on unbroken runs ------------------------------------------------------------------------------


def test_runs_the_tokenizer_takes_whole_are_found_in_every_string_by_utf8_length() -> None:
    request = {
        "messages": [{"role": "user", "content": "x" * 1500 + " " + "中" * 1000 + "1" + "!" * 999}],
        "tools": [{"description": " " * 2000}],
        "_" * 1200: True,  # keys too
    }
    assert sorted(compat.long_runs(request)) == [1200, 1500, 2000, 3000]  # "!" * 999 is below the floor
    words = "The quick brown fox jumps over the lazy dog. " * 50_000  # 2.2 MB of prose
    assert compat.long_runs({"messages": [{"content": words}]}) == []


@pytest.mark.parametrize(
    ("runs", "refused"),
    [
        ([100_000], False),  # one run at the budget: ~3 s of the tokenizer
        ([100_001], True),
        ([50_000] * 4, False),  # the squares add up: four halves cost one whole
        ([50_001] * 4, True),
        ([], False),
    ],
)
def test_runs_are_refused_when_their_squares_exceed_the_budget(runs: list[int], refused: bool) -> None:
    answer = compat.too_long_runs(runs)
    assert (answer is not None) is refused
    if refused:
        error = answer["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "string_above_max_length"
        assert f"{max(runs):,} bytes" in error["message"] and "Break the runs up" in error["message"]


def test_an_unbroken_run_gets_an_openai_400_before_the_app_reads_it(wire) -> None:
    client, seen = wire
    request = {"model": "llm", "messages": [{"role": "user", "content": "x" * 150_000}]}
    assert len(json.dumps(request)) < compat.body_limit(1000)  # under the size bound: this bound answers
    r = client.post("/v1/chat/completions", json=request)
    assert r.status_code == 400 and seen == []
    assert r.json()["error"]["code"] == "string_above_max_length"
    spaced = {"model": "llm", "messages": [{"role": "user", "content": "x " * 75_000}]}
    assert client.post("/v1/chat/completions", json=spaced).status_code == 200


def test_a_body_nested_too_deep_to_decode_goes_to_vllm_untouched(wire) -> None:
    client, seen = wire
    content = b"[" * 100_000 + b"]" * 100_000  # json.loads raises RecursionError, not ValueError
    assert client.post("/v1/chat/completions", content=content).status_code == 200
    assert seen == [{"bytes": len(content)}]


def test_the_bound_comes_from_the_engine_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(engine.CONTEXT_ENV, "2048")
    assert compat.CompatMiddleware(make_app([])).limit == compat.body_limit(2048)
    monkeypatch.delenv(engine.CONTEXT_ENV)
    assert compat.CompatMiddleware(make_app([])).limit is None  # no context known: no bound, nothing refused


# --- the engine command -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "target"),
    [
        (DeployConfig(), "modal"),
        (DeployConfig(model="tiny"), "local-cpu"),
        (DeployConfig(api_key="k"), "local-gpu"),
    ],
)
def test_every_engine_loads_it_inside_auth_with_its_context(cfg: DeployConfig, target: str) -> None:
    cmd = engine.build_command(cfg, target=target, model_path="/ckpt", default_max_model_len=16384)  # type: ignore[arg-type]
    loaded = [cmd.argv[i + 1] for i, a in enumerate(cmd.argv) if a == "--middleware"]
    assert loaded[0] == compat.MIDDLEWARE == engine.COMPAT_MIDDLEWARE
    if auth.MIDDLEWARE in loaded:  # vLLM adds them in order, each outermost: auth answers first
        assert loaded == [compat.MIDDLEWARE, auth.MIDDLEWARE]
    assert cmd.env[engine.CONTEXT_ENV] == str(cmd.max_model_len)


def test_vllm_loads_both_with_auth_outermost(monkeypatch: pytest.MonkeyPatch, vllm_middleware_args) -> None:
    from vllm.entrypoints.serve.middleware.register import init_entrypoints_middleware

    monkeypatch.setenv(auth.ENV_VAR, "k")
    args = vllm_middleware_args([compat.MIDDLEWARE, auth.MIDDLEWARE])
    app = FastAPI()
    init_entrypoints_middleware(args, app, ("generate",))
    classes = [m.cls for m in app.user_middleware]
    assert classes.index(auth.AuthMiddleware) < classes.index(compat.CompatMiddleware)  # outer first
