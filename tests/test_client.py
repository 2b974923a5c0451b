"""The client helpers against real sockets: a closed port, and a real `http.server` on 127.0.0.1.

The smoke test itself needs a real OpenAI-compatible server; the end-to-end suite points it at the local
vLLM engine (tests/e2e), so it is not faked here.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gpt_oss_modal.clients import openai_api


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when we return: nothing listens there


class Health(BaseHTTPRequestHandler):
    """/health answers `statuses` in turn (then the last one forever) and records each request's headers."""

    statuses: list[tuple[int, str]] = [(200, "")]
    seen: list[tuple[str, dict[str, str]]] = []

    def do_GET(self) -> None:  # noqa: N802
        type(self).seen.append((self.path, dict(self.headers)))
        if self.path != "/health":
            status, body = 404, "not found"
        else:
            n = sum(1 for path, _ in type(self).seen if path == "/health")
            status, body = type(self).statuses[min(n, len(type(self).statuses)) - 1]
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[Health]]]:
    handler = type("H", (Health,), {"statuses": [(200, "")], "seen": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_wait_healthy_times_out_on_a_closed_port() -> None:
    port = closed_port()
    ticks: list[tuple[float, str]] = []
    with pytest.raises(TimeoutError) as e:
        openai_api.wait_healthy(
            f"http://127.0.0.1:{port}", timeout=1.5, interval=0.2, on_tick=lambda t, s: ticks.append((t, s))
        )
    assert 1 <= len(ticks) <= 1.5 / 0.2 + 1  # it kept polling, once an interval, not in a busy loop
    assert f"http://127.0.0.1:{port}/health" in str(e.value)
    assert "ConnectError" in str(e.value)  # says what the last attempt saw
    assert ticks and all(s.startswith("ConnectError") for _, s in ticks)


def test_wait_healthy_returns_once_health_answers_200(server) -> None:
    url, handler = server
    handler.statuses = [(503, "loading"), (503, "loading"), (200, "")]
    ticks: list[str] = []
    openai_api.wait_healthy(url + "/v1/", timeout=300, interval=0.05, on_tick=lambda t, s: ticks.append(s))
    assert ticks == ["HTTP 503 loading", "HTTP 503 loading"]  # two polls answered 503, the third 200
    assert [path for path, _ in handler.seen] == ["/health"] * 3  # /v1 stripped: /health is at the root


def test_wait_healthy_sends_proxy_auth_and_bearer_headers(server) -> None:
    url, handler = server
    headers = openai_api.auth_headers(modal_key="wk-1", modal_secret="ws-2")
    openai_api.wait_healthy(url, timeout=300, headers=headers, api_key="k-3")
    sent = {k.lower(): v for k, v in handler.seen[0][1].items()}
    assert sent["modal-key"] == "wk-1" and sent["modal-secret"] == "ws-2"
    assert sent["authorization"] == "Bearer k-3"


def test_wait_healthy_fails_at_once_when_modal_proxy_auth_refuses(server) -> None:
    url, handler = server
    handler.statuses = [(401, "modal-http: missing credentials for proxy authorization")]
    with pytest.raises(RuntimeError, match="MODAL_KEY and MODAL_SECRET") as e:
        openai_api.wait_healthy(url, timeout=300)
    assert len(handler.seen) == 1  # failed at the first answer: waiting would not help
    assert "was not sent" in str(e.value)


def test_wait_healthy_names_the_api_key_when_the_server_refuses(server) -> None:
    url, handler = server
    handler.statuses = [(401, '{"error": "Incorrect API key provided."}')]
    with pytest.raises(RuntimeError, match="API key was rejected"):
        openai_api.wait_healthy(url, timeout=300, api_key="wrong")
    assert len(handler.seen) == 1


def test_openai_client_headers_and_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-belongs-to-openai")
    c = openai_api.openai_client("https://ws--app-serve.modal.run", modal_key="wk-1", modal_secret="ws-2")
    assert str(c.base_url) == "https://ws--app-serve.modal.run/v1/"
    assert c.default_headers["Modal-Key"] == "wk-1" and c.default_headers["Modal-Secret"] == "ws-2"
    assert c.api_key == openai_api.NO_API_KEY  # never the caller's OpenAI key
    keyed = openai_api.openai_client("http://127.0.0.1:8000/v1", api_key="k-3")
    assert str(keyed.base_url) == "http://127.0.0.1:8000/v1/" and keyed.api_key == "k-3"
    assert "Modal-Key" not in keyed.default_headers


def test_proxy_auth_needs_both_halves() -> None:
    with pytest.raises(ValueError, match="both"):
        openai_api.auth_headers(modal_key="wk-1")
    with pytest.raises(ValueError, match="both"):
        openai_api.openai_client("http://x", modal_secret="ws-2")
    assert openai_api.auth_headers() == {}


def test_url_forms() -> None:
    for given in (
        "https://a.modal.run",
        "https://a.modal.run/",
        "https://a.modal.run/v1",
        "https://a.modal.run/v1/",
        " https://a.modal.run/v1/chat/completions",
        "https://a.modal.run/v1/completions/",
    ):
        assert openai_api.root_url(given) == "https://a.modal.run"
        assert openai_api.v1_url(given) == "https://a.modal.run/v1"
    assert openai_api.root_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000"
    for bad in ("a.modal.run", "ftp://a.modal.run", ""):
        with pytest.raises(ValueError, match="is not an http"):
            openai_api.root_url(bad)
