"""vLLM's dev routes on a real engine: closed to every caller but the container's own hooks.

`snapshot = true` runs vLLM with VLLM_SERVER_DEV_MODE=1 for /sleep and /wake_up, which also registers
/collective_rpc, /reset_prefix_cache, the weight-update routes and more. Here the local CPU engine runs in
dev mode with the auth middleware, started by the container's own life cycle (which generates the
dev-route secret), once without a user key (proxy auth or --public on Modal) and once with one: every dev
route must look absent (404) without the secret, a valid user key included, and the hooks' own calls
(gpt_oss_modal.server.lifecycle, which send the secret) must get through. The CPU build has no sleep mode,
so /sleep itself is not called: the routes register all the same, which is what the middleware is about.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import httpx
import pytest

from gpt_oss_modal.core.config import DeployConfig
from gpt_oss_modal.server import auth, lifecycle, warmup

pytestmark = pytest.mark.e2e

KEY = "sk-e2e-dev-routes-0123456789"

# How the same routes may be spelled on the wire (sent raw: no client normalises them on the way).
SPELLINGS = [
    "/collective_rpc",
    "/collective_rpc/",
    "//collective_rpc",
    "/COLLECTIVE_RPC",
    "/%63ollective_rpc",
    "/./collective_rpc",
    "/v1/../collective_rpc",
    "/is_sleeping?x=1",
    "/is_sleeping/",
    "/reset_prefix_cache",
    "/server_info",
]


@pytest.fixture(scope="module", params=[None, KEY], ids=["no-user-key", "user-key"])
def dev_engine(
    request, startup_timeout: float, tmp_path_factory: pytest.TempPathFactory, engine_starter
) -> Iterator:
    """A dev-mode engine behind the middleware, and the container's handle on it (which holds the secret)."""
    from gpt_oss_modal.local import server as lo

    key = request.param
    cfg = DeployConfig(
        model="tiny",
        port=lo.free_port(),
        max_inputs=4,
        api_key=key,
        # With a key, build_command loads the middleware; without one, the snapshot container's command does.
        extra_vllm_args=[] if key else ["--middleware", auth.MIDDLEWARE],
    )
    srv = lo.LocalServer(
        cfg,
        target="local-cpu",
        checkpoint=lo.tiny_checkpoint(scripted=True),
        log_path=tmp_path_factory.mktemp("dev-engine") / "engine.log",
        # A stale secret in the environment is replaced by the one start_engine generates.
        extra_env={"VLLM_SERVER_DEV_MODE": "1", auth.DEV_SECRET_ENV: "stale"},
    )
    engine_starter(srv, startup_timeout, "the dev-mode engine")
    assert srv.command is not None and auth.MIDDLEWARE in srv.command.argv
    engine = srv.engine  # the life cycle's handle: the container's hooks hold the same
    assert engine.dev_secret and engine.dev_secret != "stale" and engine.api_key == key
    try:
        yield srv, engine
    finally:
        srv.stop()


def user_headers(engine: lifecycle.Engine) -> dict[str, str]:
    return engine.headers()  # the user's bearer key when there is one, never the dev secret


def raw_request(
    engine: lifecycle.Engine, method: str, path: str, headers: dict[str, str]
) -> tuple[int, bytes]:
    host, port = engine.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(method, path, body=b"{}" if method == "POST" else None, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_dev_mode_is_really_on(dev_engine) -> None:
    # Otherwise every 404 below would prove nothing: vLLM lists the dev routes it registered.
    _, engine = dev_engine
    spec = httpx.get(engine.url + "/openapi.json", headers=user_headers(engine), timeout=60).json()
    registered = {p for p in spec["paths"] if auth.is_dev_route(p)}
    assert {"/sleep", "/wake_up", "/is_sleeping", "/collective_rpc", "/reset_prefix_cache"} <= registered
    assert registered <= set(auth.DEV_ROUTES)


def test_every_dev_route_is_absent_without_the_secret(dev_engine) -> None:
    _, engine = dev_engine
    user = user_headers(engine)
    absent = httpx.post(engine.url + "/no-such-route", headers=user, timeout=60)
    assert absent.status_code == 404
    with httpx.Client(base_url=engine.url, timeout=60) as http:
        for path in auth.DEV_ROUTES:
            for method in ("GET", "POST"):
                for headers in (user, {**user, auth.DEV_SECRET_HEADER: "wrong"}):
                    r = http.request(method, path, headers=headers, json={} if method == "POST" else None)
                    # Exactly what a route that does not exist answers: nothing tells it is there.
                    assert (r.status_code, r.content) == (404, absent.content), (method, path)
                if engine.api_key:  # without the user's key it is the 401 of every route, secret or not
                    r = http.request(method, path, headers=engine.headers(dev=True) | {"Authorization": ""})
                    assert r.status_code == 401


@pytest.mark.parametrize("path", SPELLINGS)
def test_other_spellings_are_absent_too(dev_engine, path: str) -> None:
    _, engine = dev_engine
    for method in ("GET", "POST"):
        status, _ = raw_request(engine, method, path, user_headers(engine))
        assert status == 404, (method, path)


def test_the_hooks_calls_get_through(dev_engine) -> None:
    _, engine = dev_engine
    # What the snapshot hooks do, minus /sleep and /wake_up (the CPU build has no sleep mode).
    assert lifecycle.wait_ready(engine, 60) >= 0
    assert lifecycle.is_sleeping(engine) is False
    lifecycle.call(engine, "POST", "/reset_prefix_cache", timeout=60, dev=True)
    assert lifecycle.call(engine, "GET", "/server_info", timeout=60, dev=True)
    # The same secret opens the raw spellings the router understands.
    assert raw_request(engine, "GET", "/is_sleeping?x=1", engine.headers(dev=True))[0] == 200


def test_the_warm_up_runs_on_the_real_engine(dev_engine) -> None:
    _, engine = dev_engine
    result = warmup.warm_up(engine, 300, prefill_tokens=1024)
    assert result.finished and not result.errors, result.summary()
    assert result.burst == result.burst_ok == engine.max_inputs
    assert result.prefill_tokens >= 1024  # the server's own count: the prompt really was that long


def test_ordinary_routes_are_unchanged(dev_engine) -> None:
    _, engine = dev_engine
    user = user_headers(engine)
    assert httpx.get(engine.url + "/health", headers=user, timeout=60).status_code == 200
    models = httpx.get(engine.url + "/v1/models", headers=user, timeout=60)
    assert models.status_code == 200 and models.json()["data"][0]["id"] == "llm"
    if engine.api_key:
        assert httpx.get(engine.url + "/v1/models", timeout=60).status_code == 401
