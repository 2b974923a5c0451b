"""A bearer key on every route of the vLLM server, not only `/v1`.

vLLM's own `--api-key` (or `VLLM_API_KEY`) guards the routes under `/v1`, `/v2`, `/inference` and
`/cohere` only: `/health`, `/metrics`, `/version`, `/docs`, `/openapi.json`, `/tokenize`, `/detokenize`,
`/pooling`, `/score`, `/load` and whatever a new release adds stay open to anyone who has the URL. That
leaks more than it seems: `/tokenize` runs the tokenizer for free, `/metrics` tells request rates and
prompt lengths, `/docs` lists every route.

`BearerAuthMiddleware` closes them all. vLLM loads it with

    vllm serve ... --middleware gpt_oss_modal.auth.BearerAuthMiddleware

(`engine.build_command` adds that flag whenever a key is configured). vLLM imports the dotted path and,
because it is a class, calls `app.add_middleware(BearerAuthMiddleware)` after its own middlewares, which
makes it the outermost one: it sees every HTTP and WebSocket request first. This is how both vLLM 0.26
(the Modal image) and 0.32 (the local CPU build) load `--middleware`.

The key comes from the environment variable `VLLM_API_KEY`, never from the command line, so a Modal Secret
holding `VLLM_API_KEY` works unchanged (vLLM's own `/v1` check reads the same variable, so both agree).
Without a key the server refuses to start rather than run open.

The module is pure ASGI and imports only the standard library: it is loaded inside the vLLM process, next
to whatever starlette that release ships.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

ENV_VAR = "VLLM_API_KEY"
# What `--middleware` takes: the import path of the class below.
MIDDLEWARE = f"{__name__}.BearerAuthMiddleware"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MISSING_MESSAGE = (
    "Missing API key: send it as the header `Authorization: Bearer <key>` "
    "(the openai client does this with api_key=...)."
)
WRONG_MESSAGE = "Incorrect API key provided."


class MissingKeyError(RuntimeError):
    """The middleware was loaded but no key is configured: refuse to serve rather than serve open."""


def _digest(value: bytes) -> bytes:
    # Comparing fixed-length digests keeps the key's length out of the timing too.
    return hashlib.sha256(value).digest()


def error_body(message: str) -> dict[str, Any]:
    """An OpenAI-style error object, as the openai client expects from a 401."""
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }


class BearerAuthMiddleware:
    """Pure ASGI middleware: `Authorization: Bearer <VLLM_API_KEY>` or a JSON 401, on every route.

    Checked in constant time (`hmac.compare_digest` over SHA-256 digests). The key is never logged, echoed
    or put in an error. Let through without a key: ASGI `lifespan` events (start-up and shut-down, not
    requests) and CORS preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`, which
    browsers send without credentials and which vLLM's CORS middleware answers without reaching a route).
    """

    def __init__(self, app: ASGIApp, api_key: str | None = None) -> None:
        key = api_key if api_key is not None else os.environ.get(ENV_VAR, "")
        if not key or not key.strip():
            raise MissingKeyError(
                f"{MIDDLEWARE} is loaded but {ENV_VAR} is empty or unset; set it (locally: --api-key or "
                f"GPT_OSS_API_KEY; on Modal: a Secret with {ENV_VAR}) or drop the --middleware flag"
            )
        self.app = app
        self._key_digest = _digest(key.encode("utf-8"))

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}(app={self.app!r})"

    # -- the check --

    def check(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        """None when the request carries the right key, else the message of the 401."""
        values = [v for k, v in headers if k.lower() == b"authorization"]
        if not values:
            return MISSING_MESSAGE
        scheme, _, token = values[0].strip().partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            return MISSING_MESSAGE
        ok = hmac.compare_digest(_digest(token.strip()), self._key_digest)
        # Several Authorization headers: all of them must agree, so a proxy cannot be played against us.
        ok &= len(values) == 1
        return None if ok else WRONG_MESSAGE

    @staticmethod
    def _is_cors_preflight(scope: Scope) -> bool:
        if scope.get("method") != "OPTIONS":
            return False
        names = {k.lower() for k, _ in scope.get("headers", [])}
        return b"origin" in names and b"access-control-request-method" in names

    # -- ASGI --

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):  # lifespan: start-up and shut-down events
            await self.app(scope, receive, send)
            return
        if kind == "http" and self._is_cors_preflight(scope):
            await self.app(scope, receive, send)
            return
        problem = self.check(list(scope.get("headers", [])))
        if problem is None:
            await self.app(scope, receive, send)
            return
        if kind == "http":
            await _send_401(send, problem, prefix="http")
        else:
            await _deny_websocket(scope, receive, send, problem)


async def _send_401(send: Send, message: str, *, prefix: str) -> None:
    body = json.dumps(error_body(message)).encode("utf-8")
    await send(
        {
            "type": f"{prefix}.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="gpt-oss-modal"'),
            ],
        }
    )
    await send({"type": f"{prefix}.response.body", "body": body})


async def _deny_websocket(scope: Scope, receive: Receive, send: Send, message: str) -> None:
    first = await receive()  # websocket.connect
    if first.get("type") != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        await _send_401(send, message, prefix="websocket.http")
    else:  # the server turns a close before accept into a 403
        await send({"type": "websocket.close", "code": 1008})


def warnings(*, public: bool, proxy_auth: bool, api_key_configured: bool) -> list[str]:
    """What to tell the user about an endpoint's protection (one line each)."""
    out = []
    if public:
        out.append(
            "--public: the endpoint has no authentication; anyone who finds the URL can call it and spend "
            "your GPU time"
        )
    elif not proxy_auth and not api_key_configured:
        out.append("proxy auth is off and no API key is configured: the endpoint is open")
    return out
