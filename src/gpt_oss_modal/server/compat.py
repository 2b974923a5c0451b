"""What clients send that vLLM would refuse, made acceptable; and a bound on the size of a request.

One ASGI middleware (`CompatMiddleware`), loaded by vLLM on every deployment with

    vllm serve ... --middleware gpt_oss_modal.server.compat.CompatMiddleware

**Codex's tools.** Codex CLI speaks only the Responses API, and its requests carry two kinds of tool that
vLLM's gpt-oss (harmony) path answers with `400 tool type ... is not supported`:

- a `namespace` tool (`multi_agent_v1`: Codex's sub-agent tools, grouped). It is flattened into one
  function tool per member, named `<namespace>__<name>` -- the flat name vLLM itself gives namespace
  members on its other paths (`vllm.tool_parsers.utils.flat_namespace_tool_name`), and a name that fits
  OpenAI's `^[a-zA-Z0-9_-]+$`. Calls the model makes to such a name come back to the client as
  `{"name": <name>, "namespace": <namespace>}`, in plain and streamed replies alike, which is how Codex
  routes them; earlier calls in the request's `input` (and a `tool_choice` naming one) are flattened the
  same way on the way in, so the model sees one consistent name.
- hosted tools (`web_search`, `file_search`, `image_generation`, ...), which run on OpenAI's servers and
  which no vLLM deployment can run. They are dropped from the request. The model was never going to call
  them here; refusing the whole request over them helps nobody.

Each rewrite is said in the log, once per kind per process (Codex sends the same tools on every turn).
Everything else in the request -- and every other route -- reaches vLLM untouched.

**A bound on the request body.** vLLM reads and tokenizes whatever it is sent; a chat message of 3,000,000
times the letter x makes harmony's tokenizer panic (stack overflow), and the client gets a plain-text
`500 Internal Server Error`. A prompt that fits the context cannot be that large: the body is refused,
before vLLM reads any of it, when it is longer than `body_limit(max_model_len)` bytes, with the answer
vLLM gives a prompt beyond the context -- a `400` in OpenAI's error shape, code `context_length_exceeded`
-- so clients that handle that case (LiteLLM's ContextWindowExceededError, say) handle this one too.

Why 16 bytes per token: gpt-oss's tokenizer (o200k) averages about 4 bytes of English per token; the
worst common case is text a client sends JSON-escaped as `\\uXXXX` (Python's `json.dumps` does so by
default): 6 bytes per character, 12 for an emoji's surrogate pair, and CJK runs about one token per
character or two. 16 bytes per token covers that with room to spare; the 256 KiB on top covers what a
request carries beside its prompt. With a 16,384-token context the bound is 512 KiB, with 131,072 it is
2.25 MiB; the 3 MB prompt above is refused under either. The bound is about bodies no context can hold,
not an exact token count: vLLM still counts the tokens of what it lets through and refuses what does not
fit, as before.

**A bound on unbroken runs.** Harmony's tokenizer first splits text into pieces -- words, runs of symbols,
runs of spaces, digits three at a time -- then merges each piece's bytes; the merging takes time that grows
with the square of a piece's length. Text is made of short pieces, but a run with no break in it is one
piece: 100,000 times the letter x (or 50,000 CJK characters, three bytes each) took the tokenizer 3 s
(6.5 s) of a core of the API server, 500,000 x's took 74 s, and a run of about a million made it panic.
So a JSON request whose strings hold runs of letters, symbols or spaces of `MIN_RUN_CHARS` or more is
refused when the sum of the squares of those runs' UTF-8 lengths exceeds `RUN_BUDGET_BYTES` squared -- one
run of 100,000 bytes, or four of 50,000 -- with a `400` in OpenAI's error shape, code
`string_above_max_length`, that says how to fix it (break the run up). Anything made of words, however long,
costs the tokenizer milliseconds and is not affected.

The context comes from the engine's environment (`core.engine.CONTEXT_ENV`, set by `build_command`); like
`server.auth`, the module imports only the standard library and the project's light modules (core, and auth
for OpenAI's error shape), because it runs inside vLLM.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from gpt_oss_modal.core.engine import CONTEXT_ENV
from gpt_oss_modal.server.auth import error_body

# What `--middleware` takes: the import path of the class below (core.engine.COMPAT_MIDDLEWARE names it).
MIDDLEWARE = f"{__name__}.CompatMiddleware"

BYTES_PER_TOKEN = 16
SLACK_BYTES = 256 * 1024
# Runs the tokenizer takes as one piece: one run of this many UTF-8 bytes took it ~3 s (see the docstring).
RUN_BUDGET_BYTES = 100_000
# Shorter runs cost too little to count (a body of 999-character runs up to the largest bound stays under).
MIN_RUN_CHARS = 1000
# o200k's pieces, as far as their length goes: letters, symbols (with "_"), spaces; digits come in threes.
_LONG_RUN = re.compile(
    rf"[^\W\d_]{{{MIN_RUN_CHARS},}}|(?:[^\w\s]|_){{{MIN_RUN_CHARS},}}|\s{{{MIN_RUN_CHARS},}}"
)
# vLLM's own separator for namespace members (vllm.tool_parsers.utils._NAMESPACE_TOOL_SEPARATOR).
NAMESPACE_SEPARATOR = "__"
# Tools that run on OpenAI's servers: no vLLM deployment can run them, and vLLM's harmony path refuses a
# request that names them. (web_search_preview, code_interpreter and container vLLM skips by itself.)
HOSTED_TOOLS = frozenset(
    {
        "web_search",
        "web_search_2025_08_26",
        "file_search",
        "image_generation",
        "computer_use_preview",
        "computer_use",
        "local_shell",
    }
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger(__name__)


def body_limit(max_model_len: int) -> int:
    """The largest request body, in bytes, that a prompt of `max_model_len` tokens could need."""
    return BYTES_PER_TOKEN * max_model_len + SLACK_BYTES


def too_large_body(size: int | None, limit: int, max_model_len: int) -> dict[str, Any]:
    """The 400 for a body over the limit, in OpenAI's error shape (as vLLM's own context errors are)."""
    seen = f"{size:,} bytes" if size is not None else "larger than that"
    return error_body(
        f"The request is too large: its body is {seen}, and this server takes at most {limit:,} bytes "
        f"({BYTES_PER_TOKEN} per token of its maximum context length of {max_model_len:,} tokens, plus 256 KiB). "
        "Shorten the input.",
        code="context_length_exceeded",
    )


def long_runs(value: Any) -> list[int]:
    """The UTF-8 lengths of the runs of at least MIN_RUN_CHARS characters that the tokenizer would take as
    one piece, in every string (and key) of a decoded JSON value."""
    runs: list[int] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            runs += [len(m.group().encode("utf-8")) for m in _LONG_RUN.finditer(item)]
        elif isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            stack += item
    return runs


def too_long_runs(runs: list[int]) -> dict[str, Any] | None:
    """The 400 for runs that would cost the tokenizer more than one run of RUN_BUDGET_BYTES; else None."""
    if sum(n * n for n in runs) <= RUN_BUDGET_BYTES**2:
        return None
    return error_body(
        f"The input holds {len(runs)} run(s) of text with no break between words, the longest {max(runs):,} "
        "bytes (letters, symbols or spaces in one unbroken stretch). The tokenizer's time grows with the "
        f"square of such a run, and this server takes at most one run of {RUN_BUDGET_BYTES:,} bytes, or "
        "several shorter ones that cost as much. Break the runs up with spaces or newlines, or shorten them.",
        code="string_above_max_length",
    )


# --- the Responses request, rewritten (pure functions) -----------------------------------------------------


@dataclass
class Rewrite:
    """What `rewrite_responses_request` changed: the flat names it made and one line per kind of change."""

    names: dict[str, tuple[str, str]] = field(default_factory=dict)  # flat name -> (namespace, name)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.notes)


def flat_name(namespace: str, name: str) -> str:
    return f"{namespace}{NAMESPACE_SEPARATOR}{name}"


def rewrite_responses_request(body: dict[str, Any]) -> Rewrite:
    """Flatten namespace tools and drop hosted tools in a `/v1/responses` body, in place."""
    done = Rewrite()
    tools = body.get("tools")
    if isinstance(tools, list):
        kept: list[Any] = []
        for tool in tools:
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind in HOSTED_TOOLS:
                done.notes.append(f"dropped the hosted tool {kind!r}: it runs on OpenAI's servers, not here")
            elif kind == "namespace" and isinstance(tool.get("tools"), list):
                namespace = str(tool.get("name", ""))
                members = []
                for member in tool["tools"]:
                    if isinstance(member, dict) and member.get("type") == "function" and member.get("name"):
                        flat = flat_name(namespace, member["name"])
                        done.names[flat] = (namespace, member["name"])
                        kept.append({**member, "name": flat})
                        members.append(flat)
                done.notes.append(
                    f"flattened the namespace tool {namespace!r} into function tools {', '.join(members)}; "
                    "calls to them go back to the client under the namespace"
                )
            else:
                kept.append(tool)
        body["tools"] = kept
    # Earlier calls to namespace members, and a tool_choice naming one: the flat name, as the model saw it.
    items = body.get("input")
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("namespace") and item.get("type") == "function_call":
            namespace, name = item.pop("namespace"), item.get("name", "")
            item["name"] = flat_name(namespace, name)
            done.names.setdefault(item["name"], (namespace, name))
            done.notes.append(f"flattened calls to namespace {namespace!r} in the input")
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("namespace"):
        namespace = choice.pop("namespace")
        choice["name"] = flat_name(namespace, choice.get("name", ""))
        done.notes.append(f"flattened the tool_choice in namespace {namespace!r}")
    return done


def restore_names(value: Any, names: dict[str, tuple[str, str]]) -> Any:
    """Give function calls to flattened names (anywhere in a reply or stream event) their namespace back."""
    if isinstance(value, list):
        return [restore_names(v, names) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: restore_names(v, names) for k, v in value.items()}
    kind, name = out.get("type"), out.get("name")
    if isinstance(name, str) and name in names and isinstance(kind, str) and "function_call" in kind:
        out["namespace"], out["name"] = names[out["name"]]
    return out


class EventStreamRestorer:
    """`restore_names` over a server-sent event stream that arrives in arbitrary chunks."""

    def __init__(self, names: dict[str, tuple[str, str]]) -> None:
        self.names = names
        self.pending = b""

    def _event(self, event: bytes) -> bytes:
        lines = []
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                payload = line[5:].strip()
                try:
                    data = json.loads(payload)
                except ValueError:  # [DONE] and anything else that is not JSON
                    lines.append(line)
                    continue
                data = restore_names(data, self.names)
                line = b"data: " + json.dumps(data, ensure_ascii=False).encode("utf-8")
            lines.append(line)
        return b"\n".join(lines)

    def feed(self, chunk: bytes) -> bytes:
        self.pending += chunk.replace(b"\r\n", b"\n")
        *events, self.pending = self.pending.split(b"\n\n")
        return b"".join(self._event(e) + b"\n\n" for e in events)

    def flush(self) -> bytes:
        rest, self.pending = self.pending, b""
        return self._event(rest) if rest else b""


# --- ASGI ----------------------------------------------------------------------------------------------


def _context_from_env() -> int | None:
    value = os.environ.get(CONTEXT_ENV, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def _ensure_log_handler() -> None:
    # vLLM configures its own `vllm` loggers only; without a handler ours would print nothing below WARNING.
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(levelname)s %(asctime)s [gpt-oss-modal compat] %(message)s")
        )
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def _is_responses_create(scope: Scope) -> bool:
    path = (scope.get("path") or "").rstrip("/")
    return scope.get("method") == "POST" and path.endswith("/v1/responses")


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    return next((v for k, v in headers if k.lower() == name), None)


def _with_length(headers: list[tuple[bytes, bytes]], length: int) -> list[tuple[bytes, bytes]]:
    kept = [(k, v) for k, v in headers if k.lower() not in (b"content-length", b"transfer-encoding")]
    return [*kept, (b"content-length", str(length).encode())]


class CompatMiddleware:
    """Pure ASGI middleware: bounds every request body by the context and the tokenizer's work on unbroken
    runs, and makes Codex's Responses requests acceptable to vLLM (see the module docstring)."""

    def __init__(self, app: ASGIApp, max_model_len: int | None = None) -> None:
        self.app = app
        self.max_model_len = max_model_len or _context_from_env()
        self.limit = body_limit(self.max_model_len) if self.max_model_len else None
        self._said: set[str] = set()
        _ensure_log_handler()
        if self.limit:
            log.info(
                "request bodies above %s bytes are refused (context %s tokens)",
                self.limit,
                self.max_model_len,
            )

    def say(self, notes: list[str]) -> None:
        for note in dict.fromkeys(notes):
            if note not in self._said:
                self._said.add(note)
                log.info("%s (said once; later requests are rewritten alike)", note)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        body, over, unread = await self._read(scope, receive)
        if over:
            if unread:  # drain the rest, so that the client reads our answer instead of a reset connection
                await self._drain(receive)
            await _send_json(send, 400, too_large_body(body, self.limit or 0, self.max_model_len or 0))
            return
        assert isinstance(body, bytes)
        data = _json(body)
        refusal = too_long_runs(long_runs(data)) if data is not None else None
        if refusal is not None:
            await _send_json(send, 400, refusal)
            return
        names: dict[str, tuple[str, str]] = {}
        if _is_responses_create(scope) and isinstance(data, dict):
            body, names = self._rewrite(body, data)
            scope = {**scope, "headers": _with_length(list(scope.get("headers", [])), len(body))}
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, _restoring(send, names) if names else send)

    async def _read(self, scope: Scope, receive: Receive) -> tuple[bytes | int | None, bool, bool]:
        """(the whole body, False, False); or, once it is known to be over the bound, (its declared size or
        None, True, whether some of it is still unread)."""
        declared = _header(list(scope.get("headers", [])), b"content-length")
        size = int(declared) if declared and declared.isdigit() else None
        if self.limit is not None and size is not None and size > self.limit:
            return size, True, True
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return b"".join(chunks), False, False
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            total += len(chunk)
            if self.limit is not None and total > self.limit:
                return size, True, more
            chunks.append(chunk)
            if not more:
                return b"".join(chunks), False, False

    @staticmethod
    async def _drain(receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return

    def _rewrite(self, body: bytes, data: dict[str, Any]) -> tuple[bytes, dict[str, tuple[str, str]]]:
        done = rewrite_responses_request(data)
        if not done.changed:
            return body, {}
        self.say(done.notes)
        return json.dumps(data, ensure_ascii=False).encode("utf-8"), done.names


def _json(body: bytes) -> Any:
    """The decoded body, or None when it is not JSON, or nested too deep to decode (vLLM answers that)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _restoring(send: Send, names: dict[str, tuple[str, str]]) -> Send:
    """A `send` that restores namespaced names in the reply: per event in a stream, whole in a JSON body."""
    state: dict[str, Any] = {"mode": None, "start": None, "chunks": []}
    stream = EventStreamRestorer(names)

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            content_type = _header(list(message.get("headers", [])), b"content-type") or b""
            if content_type.startswith(b"text/event-stream"):
                state["mode"] = "sse"
                await send(message)
            elif content_type.startswith(b"application/json"):
                state["mode"], state["start"] = "json", message  # sent with the rewritten length below
            else:
                await send(message)
            return
        if message["type"] != "http.response.body" or state["mode"] is None:
            await send(message)
            return
        more = message.get("more_body", False)
        if state["mode"] == "sse":
            out = stream.feed(message.get("body", b"")) + (b"" if more else stream.flush())
            await send({**message, "body": out})
            return
        state["chunks"].append(message.get("body", b""))
        if more:
            return
        body = b"".join(state["chunks"])
        try:
            body = json.dumps(restore_names(json.loads(body), names), ensure_ascii=False).encode("utf-8")
        except ValueError:
            pass
        start = state["start"]
        await send({**start, "headers": _with_length(list(start.get("headers", [])), len(body))})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return wrapped


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
