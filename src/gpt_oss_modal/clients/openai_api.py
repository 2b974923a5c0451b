"""The client side: wait for a server, talk to it with the `openai` package, check that it really works.

Used by `modal run` (the smoke test after a temporary deploy), by `gpt-oss-modal chat`, by the local
runner's callers and by the end-to-end tests. Nothing here knows about Modal beyond its proxy-auth
headers, so it works against any OpenAI-compatible vLLM server: on Modal, on a local GPU, or the tiny CPU
model.

A base URL may be given with or without the trailing `/v1` (or a whole route): `/health` lives at the
server's root, the OpenAI routes under `/v1`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from gpt_oss_modal.core.config import SERVED_MODEL_NAME

# The `openai` package insists on an API key; when the server wants none we send this, never the
# caller's OPENAI_API_KEY (which belongs to another service and must not leak to this one).
NO_API_KEY = "unused"
# Modal's proxy auth: a token created at https://modal.com/settings/proxy-auth-tokens, sent as headers.
MODAL_KEY_HEADER = "Modal-Key"
MODAL_SECRET_HEADER = "Modal-Secret"
SMOKE_PROMPT = "Say hello in one short sentence."
# What may follow a server's root in a URL someone pastes; longest first.
OPENAI_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1")


class SmokeTestError(RuntimeError):
    """The server answered, but not the way an OpenAI-compatible chat server must."""


def root_url(base_url: str) -> str:
    """The server's root, where /health lives: `https://x.modal.run/v1/` -> `https://x.modal.run`.

    A URL copied with an OpenAI route on it (`.../v1/chat/completions`, `.../v1/completions`) works too.
    ValueError (one line) when it is not an http(s) URL.
    """
    url = base_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{url!r} is not an http(s) URL: give it as https://host or http://host:port")
    for route in OPENAI_ROUTES:
        if url.endswith(route):
            return url.removesuffix(route)
    return url


def v1_url(base_url: str) -> str:
    return root_url(base_url) + "/v1"


def auth_headers(
    *, api_key: str | None = None, modal_key: str | None = None, modal_secret: str | None = None
) -> dict[str, str]:
    """Headers for a server behind Modal proxy auth and/or a vLLM bearer key."""
    if bool(modal_key) != bool(modal_secret):
        raise ValueError(
            "Modal proxy auth needs both the token id (Modal-Key, wk-...) and its secret "
            "(Modal-Secret, ws-...)"
        )
    headers: dict[str, str] = {}
    if modal_key and modal_secret:
        headers[MODAL_KEY_HEADER] = modal_key
        headers[MODAL_SECRET_HEADER] = modal_secret
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def wait_healthy(
    base_url: str,
    *,
    timeout: float,
    headers: dict[str, str] | None = None,
    api_key: str | None = None,
    on_tick: Callable[[float, str], None] | None = None,
    interval: float = 2.0,
    poll_timeout: float = 120.0,
    check: Callable[[], None] | None = None,
) -> float:
    """Poll GET /health until it answers 200; return the seconds that took.

    on_tick(elapsed_s, last_status) is called after every unsuccessful poll, for progress output; check(),
    before every poll, may raise to end the wait (a local engine that exited, say). Raises TimeoutError when
    `timeout` passes first, and RuntimeError at once on 401/403 (credentials that are missing or wrong will
    not start working by waiting). On Modal the first request also wakes a scaled-to-zero app: the proxy
    holds it while the container boots, so one poll may take minutes (up to poll_timeout).
    """
    url = root_url(base_url) + "/health"
    all_headers = auth_headers(api_key=api_key) | dict(headers or {})
    start = time.monotonic()
    deadline = start + timeout
    last = "no answer yet"
    with httpx.Client(headers=all_headers, follow_redirects=True) as http:
        while True:
            if check is not None:
                check()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f} s (last: {last})")
            wait = min(remaining, poll_timeout)
            try:
                r = http.get(url, timeout=httpx.Timeout(wait, connect=min(wait, 10.0)))
            except httpx.TimeoutException:
                last = "request timed out"
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            else:
                if r.status_code == 200:
                    return time.monotonic() - start
                body = " ".join(r.text.split())[:200]
                if r.status_code in (401, 403):
                    hint = auth_hint(body, all_headers)
                    raise RuntimeError(f"{url} refused the request ({r.status_code} {body}); {hint}")
                last = f"HTTP {r.status_code}" + (f" {body}" if body else "")
            if on_tick is not None:
                on_tick(time.monotonic() - start, last)
            time.sleep(max(0.0, min(interval, deadline - time.monotonic())))


def auth_hint(body: str, headers: dict[str, str]) -> str:
    """What to do about a 401/403, given its body and the headers that were sent."""
    if "modal-http" in body:  # Modal's proxy answered: the request never reached the container
        sent = "was rejected" if MODAL_KEY_HEADER in headers else "was not sent"
        return (
            f"the Modal proxy auth token {sent}: set MODAL_KEY and MODAL_SECRET to one from "
            "modal.com/settings/proxy-auth-tokens"
        )
    sent = "was rejected" if "Authorization" in headers else "was not sent"
    return f"the server's API key {sent}: pass the key it was started with (--api-key / GPT_OSS_API_KEY)"


def openai_client(
    base_url: str,
    api_key: str | None = None,
    modal_key: str | None = None,
    modal_secret: str | None = None,
    *,
    timeout: float = 600.0,
    max_retries: int = 2,
) -> Any:
    """An `openai.OpenAI` for the server: Modal proxy auth as default headers, a vLLM key as Bearer."""
    import openai

    return openai.OpenAI(
        base_url=v1_url(base_url),
        api_key=api_key or NO_API_KEY,
        default_headers=auth_headers(modal_key=modal_key, modal_secret=modal_secret) or None,
        timeout=timeout,
        max_retries=max_retries,
    )


@dataclass
class SmokeResult:
    model: str  # what the server says it served
    text: str  # the reply of the plain completion
    reasoning: str  # its chain of thought, when the server separates it
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    stream_text: str
    stream_reasoning: str
    stream_finish_reason: str
    stream_chunks: int
    stream_completion_tokens: int
    stream_ttft_s: float  # time to the first content or reasoning token
    stream_total_s: float
    served_models: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"chat: {self.completion_tokens} tokens in {self.latency_s:.2f} s ({self.finish_reason}); "
            f"stream: {self.stream_chunks} chunks, first token after {self.stream_ttft_s:.2f} s, "
            f"{self.stream_completion_tokens} tokens in {self.stream_total_s:.2f} s"
        )


def _reasoning_of(obj: Any) -> str:
    # vLLM's reasoning parser puts the chain of thought in `reasoning` (older releases: `reasoning_content`);
    # the openai package keeps such extra fields as attributes.
    for name in ("reasoning", "reasoning_content"):
        value = getattr(obj, name, None)
        if isinstance(value, str) and value:
            return value
    return ""


def _describe_api_error(what: str, e: Exception, client: Any) -> str:
    status = getattr(e, "status_code", None)
    detail = " ".join(str(e).split())[:300]
    message = f"{what} failed" + (f" with HTTP {status}" if status else "") + f": {detail}"
    if status in (401, 403):
        sent = {k: v for k, v in client.default_headers.items() if k == MODAL_KEY_HEADER}
        if client.api_key != NO_API_KEY:
            sent["Authorization"] = "Bearer"
        message += f"; {auth_hint(detail, sent)}"
    return message


def smoke_test(
    client: Any,
    *,
    model: str = SERVED_MODEL_NAME,
    prompt: str = SMOKE_PROMPT,
    max_tokens: int = 1024,
    reasoning_effort: str | None = None,
) -> SmokeResult:
    """One chat completion and one streamed, each checked; raise SmokeTestError saying what was wrong."""
    import openai

    extra: dict[str, Any] = {}
    if reasoning_effort:
        extra["reasoning_effort"] = reasoning_effort
    messages = [{"role": "user", "content": prompt}]

    try:
        served = [m.id for m in client.models.list().data]
    except openai.OpenAIError as e:
        raise SmokeTestError(_describe_api_error("GET /v1/models", e, client)) from e
    if model not in served:
        raise SmokeTestError(f"the server serves {served or 'no models'}, not {model!r}")

    # 1. A plain chat completion.
    t0 = time.perf_counter()
    try:
        reply = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, **extra)
    except openai.OpenAIError as e:
        raise SmokeTestError(_describe_api_error("chat completion", e, client)) from e
    latency = time.perf_counter() - t0
    if not reply.choices:
        raise SmokeTestError("chat completion returned no choices")
    choice = reply.choices[0]
    text = choice.message.content or ""
    if not text.strip():
        why = (
            " (cut off at max_tokens while reasoning; raise max_tokens)"
            if choice.finish_reason == "length"
            else ""
        )
        raise SmokeTestError(
            f"chat completion returned no content, finish_reason {choice.finish_reason!r}{why}"
        )
    usage = reply.usage
    if usage is None or usage.completion_tokens <= 0 or usage.prompt_tokens <= 0:
        raise SmokeTestError(f"chat completion reported no token usage ({usage!r})")

    # 2. The same, streamed: every chunk must be a well-formed chat.completion.chunk of one response.
    t0 = time.perf_counter()
    ttft: float | None = None
    pieces: list[str] = []
    thoughts: list[str] = []
    finish = ""
    chunks = 0
    stream_usage = None
    first_id = None
    try:
        stream = client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            stream=True,
            stream_options={"include_usage": True},
            **extra,
        )
        for chunk in stream:
            chunks += 1
            if chunk.object != "chat.completion.chunk":
                raise SmokeTestError(
                    f"stream chunk {chunks} is a {chunk.object!r}, not a chat.completion.chunk"
                )
            first_id = first_id or chunk.id
            if chunk.id != first_id:
                raise SmokeTestError(
                    f"stream chunk {chunks} belongs to response {chunk.id!r}, not {first_id!r}"
                )
            if chunk.usage is not None:
                stream_usage = chunk.usage
            if not chunk.choices:
                if chunk.usage is None:
                    raise SmokeTestError(f"stream chunk {chunks} has neither choices nor usage")
                continue
            for c in chunk.choices:
                if c.index != 0:
                    raise SmokeTestError(
                        f"stream chunk {chunks} has choice index {c.index}; one was asked for"
                    )
                delta = c.delta
                piece, thought = (delta.content or "") if delta else "", _reasoning_of(delta) if delta else ""
                if (piece or thought) and ttft is None:
                    ttft = time.perf_counter() - t0
                pieces.append(piece)
                thoughts.append(thought)
                if c.finish_reason:
                    finish = c.finish_reason
    except openai.OpenAIError as e:
        raise SmokeTestError(_describe_api_error("streamed chat completion", e, client)) from e
    total = time.perf_counter() - t0
    stream_text = "".join(pieces)
    if chunks == 0:
        raise SmokeTestError("streamed chat completion sent no chunks")
    if not finish:
        raise SmokeTestError(f"stream ended after {chunks} chunks without a finish_reason")
    if not stream_text.strip():
        raise SmokeTestError(f"streamed chat completion returned no content, finish_reason {finish!r}")
    if stream_usage is None or stream_usage.completion_tokens <= 0:
        raise SmokeTestError("stream did not report token usage (stream_options.include_usage was asked for)")

    return SmokeResult(
        model=reply.model,
        text=text,
        reasoning=_reasoning_of(choice.message),
        finish_reason=choice.finish_reason or "",
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        latency_s=latency,
        stream_text=stream_text,
        stream_reasoning="".join(thoughts),
        stream_finish_reason=finish,
        stream_chunks=chunks,
        stream_completion_tokens=stream_usage.completion_tokens,
        stream_ttft_s=ttft if ttft is not None else total,
        stream_total_s=total,
        served_models=served,
    )


@dataclass
class ChatReply:
    content: str
    reasoning: str
    finish_reason: str
    completion_tokens: int | None


def stream_chat(
    client: Any,
    messages: list[dict[str, str]],
    *,
    model: str = SERVED_MODEL_NAME,
    reasoning_effort: str | None = None,
    max_tokens: int | None = None,
    on_reasoning: Callable[[str], None] | None = None,
    on_content: Callable[[str], None] | None = None,
) -> ChatReply:
    """One streamed chat turn; reasoning and content pieces go to the callbacks as they arrive.

    openai.OpenAIError propagates: the caller knows best how to report it.
    """
    extra: dict[str, Any] = {}
    if reasoning_effort:
        extra["reasoning_effort"] = reasoning_effort
    if max_tokens:
        extra["max_tokens"] = max_tokens
    content: list[str] = []
    thoughts: list[str] = []
    finish = ""
    tokens = None
    stream = client.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}, **extra
    )
    for chunk in stream:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        for c in chunk.choices:
            if c.delta is not None:
                thought = _reasoning_of(c.delta)
                if thought:
                    thoughts.append(thought)
                    if on_reasoning:
                        on_reasoning(thought)
                if c.delta.content:
                    content.append(c.delta.content)
                    if on_content:
                        on_content(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    return ChatReply("".join(content), "".join(thoughts), finish, tokens)
