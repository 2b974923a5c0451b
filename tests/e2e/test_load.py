"""Load, bad input and auth against the real local vLLM CPU server (the tiny checkpoint).

* Many more concurrent streams than the engine batches (3 x max_inputs): each one finishes or is refused
  with a clean 429/503; none hangs, breaks off or errors.
* Malformed and hostile requests: an OpenAI-style 4xx each, and the server keeps serving.
* A second server with a bearer key: 401 on every route without it (/health, /metrics, /docs ... not only
  /v1), 200 with it; the key never appears in its command line or log.
* A soak: a fixed number of mixed requests; no errors, and the engine's memory (RSS summed over its process
  group) grows less than a stated bound over them after warm-up.

Every loop is bounded in count, never in time: nothing here asserts how fast the engine answers (a busy
machine is slower, not wrong), and each timeout is only a bound on a hang. All traffic goes to 127.0.0.1.
Each test prints a summary line: `requests sent, succeeded, rejected cleanly, failed = 0`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpt_oss_modal.local import tiny

pytestmark = pytest.mark.e2e

HOST = "127.0.0.1"
SOAK_REQUESTS = int(os.environ.get("GPT_OSS_SOAK_REQUESTS", "200"))
SOAK_RSS_GROWTH_BOUND_MB = 300
REQUEST_TIMEOUT = 600.0  # seconds: a bound on one request's hang, generous for a busy two-core machine
HELLO = [{"role": "user", "content": "Hello!"}]


# --- helpers --------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What happened to the requests of one test; `failed` must stay 0."""

    name: str
    counts: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: str, detail: str = "") -> None:
        with self.lock:
            self.counts["sent"] += 1
            self.counts[outcome] += 1
            if outcome == "failed" and len(self.failures) < 20:
                self.failures.append(detail)

    def line(self) -> str:
        c = self.counts
        return (
            f"{self.name}: requests sent {c['sent']}, succeeded {c['succeeded']}, "
            f"rejected cleanly {c['rejected']}, failed = {c['failed']}"
        )

    def report(self, capsys: pytest.CaptureFixture[str], extra: str = "") -> None:
        with capsys.disabled():
            print(f"\n{self.line()}{extra}")
        assert self.counts["failed"] == 0, "\n".join(self.failures)


def is_openai_error(body: Any) -> bool:
    """{"error": {"message": str, "type": ..., "code": ...}}, as the openai client parses it."""
    return (
        isinstance(body, dict)
        and isinstance(body.get("error"), dict)
        and isinstance(body["error"].get("message"), str)
        and bool(body["error"]["message"])
        and ("type" in body["error"] or "code" in body["error"])
    )


def clean_rejection(r: httpx.Response) -> bool:
    if r.status_code not in (429, 503):
        return False
    try:
        return is_openai_error(r.json())
    except ValueError:
        return False


def stream_chat(http: httpx.Client, base: str, *, max_tokens: int = 24) -> tuple[str, str]:
    """One streamed chat completion, every SSE event checked. ("succeeded" | "rejected" | "failed", detail)."""
    body = {
        "model": "llm",
        "messages": HELLO,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    try:
        with http.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=REQUEST_TIMEOUT) as r:
            if r.status_code != 200:
                r.read()
                return (
                    ("rejected", "")
                    if clean_rejection(r)
                    else ("failed", f"HTTP {r.status_code} {r.text[:200]}")
                )
            done = False
            finish = None
            usage = None
            for line in r.iter_lines():
                if not line:
                    continue
                if not line.startswith("data: "):
                    return "failed", f"not an SSE data line: {line[:100]!r}"
                data = line[len("data: ") :]
                if data == "[DONE]":
                    done = True
                    continue
                if done:
                    return "failed", "data after [DONE]"
                chunk = json.loads(data)
                if "error" in chunk:
                    return "failed", f"error event {data[:200]}"
                for choice in chunk.get("choices", []):
                    finish = choice.get("finish_reason") or finish
                usage = chunk.get("usage") or usage
            if not done:
                return "failed", "stream ended without [DONE]"
            if finish not in ("stop", "length") or not usage or usage.get("completion_tokens", 0) < 1:
                return "failed", f"finish_reason {finish!r}, usage {usage!r}"
            return "succeeded", ""
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        return "failed", f"{type(e).__name__}: {e}"


def chat(http: httpx.Client, base: str, **extra: Any) -> httpx.Response:
    body = {"model": "llm", "messages": HELLO, "max_tokens": 16, **extra}
    return http.post(f"{base}/v1/chat/completions", json=body, timeout=REQUEST_TIMEOUT)


def assert_still_serving(http: httpx.Client, base: str) -> None:
    r = chat(http, base)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]


def group_rss_mb(pgid: int) -> float:
    """Resident memory summed over the engine's process group (API server, engine core, workers)."""
    import psutil

    from gpt_oss_modal.server import lifecycle

    total = 0
    for pid in lifecycle.group_processes(pgid):
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def run_bounded(worker: Callable[[], tuple[str, str]], tally: Tally, *, total: int, concurrency: int) -> None:
    """Exactly `total` calls of worker() on `concurrency` threads, however long they take."""
    started = iter(range(total))
    lock = threading.Lock()

    def loop() -> None:
        while True:
            with lock:
                if next(started, None) is None:
                    return
            tally.add(*worker())

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    # Each call is bounded by its own timeouts, so a thread can only outlive this by hanging.
    for t in threads:
        t.join((total // concurrency + 2) * REQUEST_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a request outlived its timeout"


# --- concurrency ---------------------------------------------------------------------------------------


def test_three_times_max_inputs_concurrent_streams_finish_or_are_rejected_cleanly(
    server, capsys: pytest.CaptureFixture[str]
) -> None:
    n = 3 * server.cfg.max_inputs
    tally = Tally(f"{n} concurrent streams (max_inputs {server.cfg.max_inputs})")
    barrier = threading.Barrier(n, timeout=REQUEST_TIMEOUT)
    started = time.monotonic()
    with httpx.Client(limits=httpx.Limits(max_connections=n)) as http:

        def one(_: int) -> tuple[str, str]:
            barrier.wait()  # all at once
            return stream_chat(http, server.url)

        with ThreadPoolExecutor(n) as pool:
            # A bound on a hang only: n streams, max_inputs at a time, each bounded by REQUEST_TIMEOUT.
            for outcome, detail in pool.map(
                one, range(n), timeout=(n // server.cfg.max_inputs + 1) * REQUEST_TIMEOUT
            ):
                tally.add(outcome, detail)
        assert_still_serving(http, server.url)
    tally.report(capsys, f" in {time.monotonic() - started:.1f} s")
    assert tally.counts["succeeded"] >= server.cfg.max_inputs  # a full batch at least was served


# --- bad input -----------------------------------------------------------------------------------------

LONG_PROMPT = "hello " * (tiny.MAX_MODEL_LEN + 1000)  # a token a word: above the tiny checkpoint's context
CHAT = "/v1/chat/completions"
TOOL_F = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


def user(**extra: Any) -> dict:
    return {"model": "llm", "messages": HELLO, "max_tokens": 8, **extra}


BAD_REQUESTS: list[tuple[str, str, str, Any]] = [
    # (id, method, path, body: bytes sent raw, or JSON)
    ("malformed-json", "POST", CHAT, b'{"model": "llm", "messages": [}'),
    ("truncated-json", "POST", CHAT, b'{"model": "llm", "messages": [{"role": "user", "content": "hi"'),
    ("empty-body", "POST", CHAT, b""),
    ("body-is-a-list", "POST", CHAT, []),
    ("body-is-a-string", "POST", CHAT, "hello"),
    ("messages-missing", "POST", CHAT, {"model": "llm"}),
    ("messages-a-string", "POST", CHAT, {"model": "llm", "messages": "hi"}),
    ("message-bad-role", "POST", CHAT, {"model": "llm", "messages": [{"role": "bogus", "content": "hi"}]}),
    ("max_tokens-a-string", "POST", CHAT, user(max_tokens="ten")),
    ("max_tokens-negative", "POST", CHAT, user(max_tokens=-1)),
    ("temperature-a-string", "POST", CHAT, user(temperature="hot")),
    ("n-zero", "POST", CHAT, user(n=0)),
    ("prompt-over-context-chat", "POST", CHAT, {**user(), "messages": [{"role": "user", "content": LONG_PROMPT}]}),
    ("prompt-over-context-completions", "POST", "/v1/completions", {"model": "llm", "prompt": LONG_PROMPT}),
    ("prompt-1MB", "POST", CHAT, {**user(), "messages": [{"role": "user", "content": "x y " * 250_000}]}),
    ("prompt-3MB-one-letter", "POST", CHAT, {**user(), "messages": [{"role": "user", "content": "x" * 3_000_000}]}),
    ("token-id-out-of-vocab", "POST", "/v1/completions", {"model": "llm", "prompt": [999_999_999]}),
    ("unknown-model", "POST", CHAT, user(model="gpt-4o")),
    ("unknown-model-completions", "POST", "/v1/completions", {"model": "nope", "prompt": "hi"}),
    ("tools-not-a-list", "POST", CHAT, user(tools="x")),
    ("tool-name-not-a-string", "POST", CHAT, user(tools=[{"type": "function", "function": {"name": 5}}])),
    ("tool-parameters-not-a-schema", "POST", CHAT,
     user(tools=[{"type": "function", "function": {"name": "f", "parameters": "not a schema"}}])),
    ("tool-type-unknown", "POST", CHAT, user(tools=[{"type": "nope", "function": {"name": "f"}}])),
    ("tool-choice-not-in-tools", "POST", CHAT,
     user(tools=[TOOL_F], tool_choice={"type": "function", "function": {"name": "g"}})),
    ("logit_bias-not-a-dict", "POST", CHAT, user(logit_bias="x")),
    ("logit_bias-key-not-a-token-id", "POST", CHAT, user(logit_bias={"abc": 5})),
    ("logit_bias-token-out-of-vocab", "POST", CHAT, user(logit_bias={"999999999": 5})),
    ("logit_bias-value-not-a-number", "POST", CHAT, user(logit_bias={"5": "lots"})),
    ("unknown-route", "GET", "/v1/nope", None),
    ("wrong-method", "GET", CHAT, None),
]  # fmt: skip


@pytest.fixture(scope="module")
def bad_input_tally(request: pytest.FixtureRequest) -> Iterator[Tally]:
    tally = Tally(f"bad input ({len(BAD_REQUESTS)} kinds), each followed by a normal request")
    yield tally
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n{tally.line()}")
    assert tally.counts["failed"] == 0


@pytest.mark.parametrize(
    ("method", "path", "body"), [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_input_gets_an_openai_style_4xx_and_the_server_keeps_serving(
    server, bad_input_tally: Tally, method: str, path: str, body: Any
) -> None:
    with httpx.Client(timeout=REQUEST_TIMEOUT) as http:
        if isinstance(body, bytes):
            r = http.request(
                method, server.url + path, content=body, headers={"content-type": "application/json"}
            )
        elif body is None:
            r = http.request(method, server.url + path)
        else:
            r = http.request(method, server.url + path, json=body)
        ok = 400 <= r.status_code < 500
        # vLLM's own answers are OpenAI-style; FastAPI's 404/405 for a route that does not exist say {"detail"}.
        if path.startswith(("/v1/chat", "/v1/completions")) and r.status_code not in (404, 405):
            ok = ok and is_openai_error(r.json())
        if r.status_code == 404 and "error" in r.text:  # an unknown model
            ok = ok and is_openai_error(r.json())
        bad_input_tally.add("rejected" if ok else "failed", f"{path}: HTTP {r.status_code} {r.text[:300]}")
        assert ok, f"HTTP {r.status_code}: {r.text[:500]}"
        # ... and the server keeps serving
        assert_still_serving(http, server.url)
        bad_input_tally.add("succeeded")


def test_out_of_range_logit_bias_is_clamped_not_a_crash(server) -> None:
    # OpenAI answers 400 for a bias outside [-100, 100]; vLLM clamps it. Either way: no 5xx, still serving.
    with httpx.Client(timeout=REQUEST_TIMEOUT) as http:
        r = chat(http, server.url, logit_bias={"5": 500, "6": -1e9})
        assert r.status_code == 200 or (400 <= r.status_code < 500 and is_openai_error(r.json())), r.text
        assert_still_serving(http, server.url)


# --- a server with a bearer key ------------------------------------------------------------------------

API_KEY = "sk-e2e-" + os.urandom(12).hex()
OPEN_ROUTES_WITH_KEY = [  # (method, path, json body): harmless to call, 200 with the key
    ("GET", "/health", None),
    ("GET", "/metrics", None),
    ("GET", "/version", None),
    ("GET", "/docs", None),
    ("GET", "/openapi.json", None),
    ("GET", "/v1/models", None),
    ("GET", "/ping", None),
    ("GET", "/load", None),
    ("POST", "/tokenize", {"model": "llm", "prompt": "Hello"}),
    ("POST", "/detokenize", {"model": "llm", "tokens": [13225]}),
    ("POST", "/v1/chat/completions", {"model": "llm", "messages": HELLO, "max_tokens": 8}),
]


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory, startup_timeout: float) -> Iterator[Any]:
    from gpt_oss_modal.core.config import DeployConfig
    from gpt_oss_modal.local import server as lo
    from gpt_oss_modal.server import lifecycle

    log = tmp_path_factory.mktemp("keyed-engine") / "engine.log"
    srv = lo.LocalServer(
        DeployConfig(model="tiny", port=lo.free_port(), max_inputs=4, api_key=API_KEY),
        target="local-cpu",
        checkpoint=lo.tiny_checkpoint(scripted=True),
        log_path=log,
    )
    srv.start()
    try:
        srv.wait_ready(startup_timeout)  # sends the key: /health is guarded too
    except lo.LocalServerError as e:
        srv.stop()
        pytest.fail(f"the keyed engine did not start:\n{e.details()}", pytrace=False)
    pgid = srv.pgid
    try:
        yield srv
    finally:
        srv.stop()
        assert not lifecycle.group_processes(pgid)  # type: ignore[arg-type]
        assert API_KEY not in log.read_text(errors="replace")


def all_routes(srv: Any) -> list[tuple[str, str]]:
    """Every route the server has (its own OpenAPI list) plus FastAPI's docs pages and an unknown path."""
    spec = httpx.get(
        srv.url + "/openapi.json", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=REQUEST_TIMEOUT
    ).json()
    routes = [(m.upper(), p) for p, methods in spec["paths"].items() for m in methods]
    routes += [
        ("GET", "/docs"),
        ("GET", "/redoc"),
        ("GET", "/openapi.json"),
        ("GET", "/docs/oauth2-redirect"),
    ]
    routes += [("GET", "/no-such-route"), ("OPTIONS", "/v1/models"), ("HEAD", "/health")]
    return [(m, p.replace("{response_id}", "resp_x")) for m, p in routes]


def test_every_route_needs_the_key(keyed_server, capsys: pytest.CaptureFixture[str]) -> None:
    routes = all_routes(keyed_server)
    for must in ("/health", "/metrics", "/version", "/tokenize", "/v1/models", "/v1/chat/completions"):
        assert must in {p for _, p in routes}
    tally = Tally(f"401 without / with a wrong key on {len(routes)} routes")
    wrong = {"Authorization": "Bearer sk-wrong-key"}
    with httpx.Client(timeout=REQUEST_TIMEOUT) as http:
        for method, path in routes:
            for headers in ({}, wrong, {"Authorization": API_KEY}, {"Authorization": f"Basic {API_KEY}"}):
                r = http.request(
                    method, keyed_server.url + path, headers=headers, json={} if method == "POST" else None
                )
                ok = r.status_code == 401 and (
                    method == "HEAD" or r.json()["error"]["code"] == "invalid_api_key"
                )
                ok = ok and API_KEY not in r.text and "sk-wrong-key" not in r.text
                tally.add(
                    "rejected" if ok else "failed",
                    f"{method} {path} {headers}: {r.status_code} {r.text[:200]}",
                )
    tally.report(capsys)


def test_the_key_opens_every_route(keyed_server, capsys: pytest.CaptureFixture[str]) -> None:
    tally = Tally(f"200 with the key on {len(OPEN_ROUTES_WITH_KEY)} routes")
    with httpx.Client(timeout=REQUEST_TIMEOUT, headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        for method, path, body in OPEN_ROUTES_WITH_KEY:
            r = http.request(method, keyed_server.url + path, json=body)
            tally.add(
                "succeeded" if r.status_code == 200 else "failed",
                f"{method} {path}: {r.status_code} {r.text[:200]}",
            )
        assert stream_chat(http, keyed_server.url) == ("succeeded", "")
        tally.add("succeeded")
    tally.report(capsys)


def test_openai_client_with_and_without_the_key(keyed_server) -> None:
    import openai

    from gpt_oss_modal.clients.openai_api import openai_client

    good = openai_client(keyed_server.base_url, api_key=API_KEY, timeout=REQUEST_TIMEOUT, max_retries=0)
    assert good.chat.completions.create(model="llm", messages=HELLO, max_tokens=8).choices[0].message.content
    for key in (None, "sk-wrong-key"):
        bad = openai_client(keyed_server.base_url, api_key=key, timeout=REQUEST_TIMEOUT, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            bad.models.list()
        assert info.value.status_code == 401 and info.value.code == "invalid_api_key"


def test_the_key_is_not_on_any_command_line_or_in_the_log(keyed_server) -> None:
    from gpt_oss_modal.server import lifecycle

    pids = lifecycle.group_processes(keyed_server.pgid)
    assert pids
    for pid in pids:
        assert API_KEY.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert API_KEY not in keyed_server.log_path.read_text(errors="replace")
    assert API_KEY not in keyed_server.command.shell() and API_KEY not in repr(keyed_server.command)


# --- soak ----------------------------------------------------------------------------------------------


def test_soak_no_errors_and_bounded_memory(server, capsys: pytest.CaptureFixture[str]) -> None:
    base = server.url
    concurrency = server.cfg.max_inputs // 2 or 1
    tally = Tally(f"soak {SOAK_REQUESTS} requests x {concurrency} workers")
    kinds = ["stream", "chat", "completion", "tokenize"]
    turn = iter(range(10**9))
    lock = threading.Lock()

    with httpx.Client(limits=httpx.Limits(max_connections=concurrency + 2)) as http:

        def one() -> tuple[str, str]:
            with lock:
                kind = kinds[next(turn) % len(kinds)]
            if kind == "stream":
                return stream_chat(http, base, max_tokens=32)
            try:
                if kind == "chat":
                    r = chat(http, base, max_tokens=32)
                elif kind == "completion":
                    body = {"model": "llm", "prompt": "Once upon a time", "max_tokens": 32}
                    r = http.post(base + "/v1/completions", json=body, timeout=REQUEST_TIMEOUT)
                else:
                    r = http.post(
                        base + "/tokenize", json={"model": "llm", "prompt": "Hello"}, timeout=REQUEST_TIMEOUT
                    )
            except httpx.HTTPError as e:
                return "failed", f"{kind}: {type(e).__name__}: {e}"
            if r.status_code == 200:
                return "succeeded", ""
            return (
                ("rejected", "")
                if clean_rejection(r)
                else ("failed", f"{kind}: {r.status_code} {r.text[:200]}")
            )

        # Warm-up: caches, allocator pools, prefix cache, lazy imports.
        run_bounded(one, tally, total=8 * concurrency, concurrency=concurrency)
        before = group_rss_mb(server.pgid)
        peak = before
        samples = []
        sampler_stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not sampler_stop.wait(5):
                mb = group_rss_mb(server.pgid)
                samples.append(mb)
                peak = max(peak, mb)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        run_bounded(one, tally, total=SOAK_REQUESTS, concurrency=concurrency)
        elapsed = time.monotonic() - started
        sampler_stop.set()
        sampler.join(10)
        after = group_rss_mb(server.pgid)
        assert_still_serving(http, base)
    growth = after - before
    tally.report(
        capsys,
        f"; {elapsed:.0f} s, {tally.counts['sent'] / max(elapsed, 1):.1f} req/s; engine group RSS "
        f"{before:.0f} MB -> {after:.0f} MB (growth {growth:+.0f} MB, peak {peak:.0f} MB, "
        f"bound {SOAK_RSS_GROWTH_BOUND_MB} MB)",
    )
    assert server.running
    assert tally.counts["sent"] == 8 * concurrency + SOAK_REQUESTS  # every request was made ...
    assert tally.counts["succeeded"] >= SOAK_REQUESTS // 2  # ... and real work done (below the batch size)
    assert growth < SOAK_RSS_GROWTH_BOUND_MB  # over a fixed number of requests, not a time window
