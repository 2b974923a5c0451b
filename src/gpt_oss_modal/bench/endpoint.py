"""The HTTP side: one aiohttp session per level, the request body, SSE parsing, one timed streamed request.

aiohttp, as `vllm bench serve` uses it: the client must not be what limits the benchmark, and streaming from
vLLM it spends about a third of the CPU per token that httpx does (~0.2 ms vs ~0.6 ms on a 2-core box), so a
Python client keeps up with thousands of tokens/s.

Redirects are followed on every request. Modal answers a web request it has held for 150 s (one queued
behind a cold start, say) with `303 See Other` to a result URL, which blocks until the reply is ready and
may answer 303 again. After a POST, aiohttp follows a 303 with a GET of the Location without the body (RFC
9110 15.4.4), which is what Modal's result URL expects; 307/308 repeat the POST. Only the hop limit is ours:
enough hops of 150 s to fill --request-timeout, which bounds the whole request, hops included.
"""

from __future__ import annotations

import codecs
import json
import math
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from gpt_oss_modal.bench.metrics import RequestRecord, SpecCounters, parse_spec_counters
from gpt_oss_modal.bench.options import BenchError, BenchOptions
from gpt_oss_modal.bench.workload import Prompt

MODAL_HOLD_S = 150  # how long Modal holds a web request before it redirects the client to poll


def max_redirects(request_timeout: float) -> int:
    return max(10, math.ceil(request_timeout / MODAL_HOLD_S) + 1)


def open_session(concurrency: int, request_timeout: float) -> aiohttp.ClientSession:
    """A connection pool for `concurrency` requests in flight, kept alive between them (as vLLM's)."""
    connector = aiohttp.TCPConnector(
        limit=concurrency, limit_per_host=concurrency, keepalive_timeout=60, ttl_dns_cache=300
    )
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=True,
        timeout=aiohttp.ClientTimeout(total=request_timeout, sock_connect=60),
    )


def request_body(opts: BenchOptions, model: str, prompt: Prompt) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "stream": True, "stream_options": {"include_usage": True}}
    if opts.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt.text}]
        body["max_completion_tokens"] = prompt.output_len
    else:
        body["prompt"] = prompt.text
        body["max_tokens"] = prompt.output_len
    if opts.ignore_eos:
        # vLLM's extension: with it, neither EOS nor the generation config's stop tokens end a reply, so
        # every reply is exactly max_tokens long (the summary counts any that are not). The same body
        # as `vllm bench serve --ignore-eos`; no `min_tokens`, whose logits processor would add work to
        # every decode step of the batch.
        body["ignore_eos"] = True
    return body


class SSEParser:
    """Split a byte stream into SSE `data:` payloads; comments (`:` lines) and other fields are dropped."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._buf = ""

    def feed(self, chunk: bytes) -> list[str]:
        self._buf += self._decoder.decode(chunk).replace("\r\n", "\n")
        out = []
        while "\n\n" in self._buf:
            message, self._buf = self._buf.split("\n\n", 1)
            data = [line[5:].lstrip(" ") for line in message.split("\n") if line.startswith("data:")]
            if data:
                out.append("\n".join(data))
        return out


async def send_request(
    session: aiohttp.ClientSession,
    opts: BenchOptions,
    model: str,
    prompt: Prompt,
    count_tokens: Callable[[str], int] | None = None,
) -> RequestRecord:
    """One streamed request, timed as vLLM's benchmark times it (see `metrics`)."""
    rec = RequestRecord(
        success=False,
        prompt_len=prompt.prompt_len,
        expected_prompt_len=prompt.prompt_len,
        expected_output_len=prompt.output_len,
    )
    text_parts: list[str] = []
    usage_tokens: int | None = None
    first = False
    st = time.perf_counter()
    rec.start_time = st
    last = st
    try:
        async with session.post(
            opts.endpoint_url,
            json=request_body(opts, model, prompt),
            headers=opts.headers,
            max_redirects=max_redirects(opts.request_timeout),
        ) as resp:
            if resp.status != 200:
                body = (await resp.read()).decode("utf-8", "replace").strip().replace("\n", " ")
                rec.error = f"HTTP {resp.status}: {body[:300]}"
                return rec
            parser = SSEParser()
            async for chunk in resp.content.iter_any():
                for data in parser.feed(chunk):
                    if data == "[DONE]":
                        continue
                    now = time.perf_counter()
                    msg = json.loads(data)
                    if choices := msg.get("choices"):
                        if not first:
                            first = True
                            rec.ttft = now - st
                        else:
                            rec.itl.append(now - last)
                        last = now
                        c0 = choices[0]
                        piece = (
                            c0.get("text")
                            if opts.endpoint == "completions"
                            else (c0.get("delta") or {}).get("content")
                        )
                        text_parts.append(piece or "")
                    elif usage := msg.get("usage"):
                        usage_tokens = usage.get("completion_tokens")
                        if usage.get("prompt_tokens") is not None:
                            rec.prompt_len = usage["prompt_tokens"]
                    elif err := msg.get("error"):
                        rec.error = f"server error in stream: {err}"
    except Exception as e:  # noqa: BLE001 - a failed request is a counted error, not a crash
        rec.error = f"{type(e).__name__}: {e}"
        return rec
    if not first:
        rec.error = rec.error or "the stream carried no tokens"
        return rec
    rec.success = True
    rec.latency = last - st
    if usage_tokens is not None:
        rec.output_tokens = usage_tokens
    elif count_tokens is not None:
        rec.output_tokens = count_tokens("".join(text_parts))
    else:
        rec.output_tokens = 1 + len(rec.itl)
    return rec


async def list_models(session: aiohttp.ClientSession, opts: BenchOptions) -> tuple[str | None, str | None]:
    """(served model id, its `root`) from /v1/models; vLLM's root is the checkpoint path or HF repo id."""
    url = opts.base_url + "/v1/models"
    try:
        async with session.get(
            url, headers=opts.headers, max_redirects=max_redirects(opts.request_timeout)
        ) as resp:
            status = resp.status
            data = await resp.json(content_type=None) if status == 200 else None
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        raise BenchError(f"cannot reach {opts.base_url}: {type(e).__name__}: {e}") from None
    except ValueError:  # not JSON: not an OpenAI-style server, or a proxy page; the caller falls back
        return None, None
    if status in (401, 403):
        raise BenchError(
            f"{opts.base_url} refused the request (HTTP {status}): pass --api-key, or "
            "--modal-key/--modal-secret (env MODAL_KEY/MODAL_SECRET) for Modal proxy auth"
        )
    models = (data.get("data") if isinstance(data, dict) else None) or []
    if status != 200 or not models or not isinstance(models[0], dict):
        return None, None
    return models[0].get("id"), models[0].get("root")


async def spec_counters(session: aiohttp.ClientSession, opts: BenchOptions) -> SpecCounters | None:
    """vLLM's speculative-decoding counters from the server's /metrics, or None when it exposes none (no
    drafter, no /metrics, or not reachable): the benchmark then reports no acceptance figures."""
    try:
        async with session.get(
            opts.base_url + "/metrics",
            headers=opts.headers,
            max_redirects=max_redirects(opts.request_timeout),
        ) as resp:
            if resp.status != 200:
                return None
            text = await resp.text(errors="replace")
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None
    return parse_spec_counters(text)
