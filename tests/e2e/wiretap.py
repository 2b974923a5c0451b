"""A wire tap for clients that run in another process (Codex CLI, Node scripts): a reverse proxy on 127.0.0.1
that forwards every request to the real local server, streams the answer back chunk by chunk as it
arrives, and records what went over the wire. It changes nothing; it lets a test see what an httpx event
hook shows for a Python client (tests/e2e/test_clients.py's Wire)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "accept-encoding"}


@dataclass
class Exchange:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int = 0
    content_type: str = ""
    chunks: list[bytes] = field(default_factory=list)

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")

    def events(self) -> list[dict]:
        """The JSON data of each server-sent event in the answer."""
        out = []
        for line in self.text.splitlines():
            if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
                out.append(json.loads(line[5:]))
        return out


class WireTap:
    def __init__(self, upstream: str, timeout: float = 600.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.exchanges: list[Exchange] = []
        self._http = httpx.Client(timeout=timeout)
        tap = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _forward(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                ex = Exchange(self.command, self.path, {k.lower(): v for k, v in headers.items()}, body)
                tap.exchanges.append(ex)
                request = tap._http.build_request(
                    self.command, tap.upstream + self.path, headers=headers, content=raw
                )
                r = tap._http.send(request, stream=True)
                try:
                    ex.status, ex.content_type = r.status_code, r.headers.get("content-type", "")
                    self.send_response(r.status_code)
                    for k, v in r.headers.items():
                        if k.lower() not in HOP_BY_HOP | {"content-encoding", "date", "server"}:
                            self.send_header(k, v)
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    for chunk in r.iter_raw():
                        ex.chunks.append(chunk)
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                finally:
                    r.close()

            do_GET = do_POST = do_PUT = do_DELETE = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> WireTap:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()
