"""The warm-up between "healthy" and "ready": what a first burst of requests would compile, compiled now.

Prefills run outside CUDA graphs (in `fast` mode all of them, in `compiled` those above the captured
sizes), and Triton compiles their MoE and attention kernels on first use of each batch-size bucket: a first
burst after start-up stalled ~6 s on the H200 (docs/performance.md). So `warm_up` sends a ladder of prompts,
64, 128, ... tokens up to the engine's largest step (its --max-num-batched-tokens, from the plan), one at a
time so that each is a prefill batch of its own size, then a burst of max_inputs concurrent requests.
The Modal container runs it after /health, and so does `serve --local` on a GPU.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import httpx

from gpt_oss_modal.core.config import SERVED_MODEL_NAME
from gpt_oss_modal.server.lifecycle import Engine, Log, ensure_alive, log

# The burst's prompts are long too: max_inputs of them fill whole chunked-prefill batches (thousands of
# tokens in one step), the batch shapes a real first burst meets and whose MoE kernels Triton compiles on
# first use. Their lengths (half to 1.5x this) and replies (WARM_UP_MAX_TOKENS to WARM_UP_BURST_MAX_TOKENS)
# are spread and crossed, so requests leave prefill and finish decoding at different steps: the steps mix
# every number of decodes with prefill chunks of many sizes, as a real burst's do. Each prompt starts
# differently, so prefix caching cannot skip the work.
WARM_UP_BURST_PROMPT_TOKENS = 1024
WARM_UP_MAX_TOKENS = 8  # the ladder's replies, and the burst's shortest
WARM_UP_BURST_MAX_TOKENS = 64  # the burst's longest reply: a few hundred ms of decode at most


def burst_shapes(requests: int, prompt_tokens: int, max_tokens: int) -> list[tuple[int, int]]:
    """(prompt words, reply tokens) for each of a warm-up burst's `requests`: prompts spread evenly from
    a third to all of 1.5 x `prompt_tokens`, replies from WARM_UP_MAX_TOKENS up to `max_tokens`, the
    longest prompt with the shortest reply (a lone request gets the longest of both)."""
    top = max(1, prompt_tokens * 3 // 2)
    longest = max(WARM_UP_MAX_TOKENS, max_tokens)
    if requests == 1:
        return [(top, longest)]
    shapes = []
    for i in range(requests):
        f = i / (requests - 1)
        words = max(1, round(top / 3 + f * (top - top / 3)))
        reply = round(longest - f * (longest - WARM_UP_MAX_TOKENS))
        shapes.append((words, reply))
    return shapes


@dataclass(frozen=True)
class WarmUp:
    """What the warm-up did: a ladder of prefills, then `rounds` bursts of `burst` concurrent requests."""

    seconds: float
    prefill_tokens: int  # prompt tokens of the ladder, as the server counted them (0: it failed)
    prefill_seconds: float
    burst: int
    burst_ok: int
    burst_seconds: float
    finished: bool  # False: the budget ran out first and the rest was abandoned
    errors: tuple[str, ...] = ()
    rounds: int = 1

    def summary(self) -> str:
        bursts = (
            f"{self.burst_ok}/{self.burst} concurrent requests"
            if self.rounds == 1
            else f"{self.burst_ok}/{self.burst * self.rounds} requests in {self.rounds} bursts of {self.burst}"
        )
        text = (
            f"warm-up: prefills of {self.prefill_tokens:,} tokens in {self.prefill_seconds:.1f} s, "
            f"{bursts} in {self.burst_seconds:.1f} s, {self.seconds:.1f} s in all"
        )
        if not self.finished:
            text += " (budget spent: the rest was abandoned)"
        if self.errors:
            text += f"; {len(self.errors)} failed, first: {self.errors[0]}"
        return text


def _chat(content: str, max_tokens: int, *, greedy: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": SERVED_MODEL_NAME,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
    }
    if greedy:
        body["temperature"] = 0
    return body


def prefill_ladder(longest: int, shortest: int = 64) -> list[int]:
    """Prompt lengths 64, 128, 256, ... and `longest` itself: one prefill per batch-size bucket."""
    lengths = []
    n = shortest
    while n < longest:
        lengths.append(n)
        n *= 2
    return [*lengths, longest]


def warm_up(
    engine: Engine,
    budget: float,
    *,
    prefill_tokens: int | None = None,
    burst: int | None = None,
    burst_prompt_tokens: int = WARM_UP_BURST_PROMPT_TOKENS,
    burst_max_tokens: int = WARM_UP_BURST_MAX_TOKENS,
    rounds: int = 1,
    log: Log = log,
) -> WarmUp:
    """Run what the first real burst would compile: prefills of 64, 128, ... up to `prefill_tokens` tokens
    (default: the engine's largest step, its --max-num-batched-tokens) one after another, then `rounds` bursts of `burst` (default max_inputs) concurrent requests with prompts
    around `burst_prompt_tokens` and short replies (`burst_shapes`), within `budget` seconds in all.

    Bounded: every request's timeout is what is left of the budget; when it runs out the rest is abandoned
    (closing the connections makes vLLM abort those requests) and start-up goes on. Failures are logged and
    returned, not raised: a warm-up only saves the first users time. The engine dying still raises.
    """
    start = time.monotonic()
    deadline = start + budget
    burst = engine.max_inputs if burst is None else burst
    if prefill_tokens is None:
        prefill_tokens = engine.max_num_batched_tokens or engine.max_model_len
    # Leave room for the chat template and the reply within the context.
    tokens = max(16, min(prefill_tokens, engine.max_model_len // 2))
    errors: list[str] = []
    limits = httpx.Limits(max_connections=max(burst, 1), max_keepalive_connections=0)
    prefill_seconds = burst_seconds = 0.0
    counted = ok = 0
    finished = True
    with httpx.Client(headers=engine.headers(), limits=limits) as http:

        def post(body: dict[str, Any]) -> dict[str, Any]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("warm-up budget spent")
            r = http.post(engine.url + "/v1/chat/completions", json=body, timeout=remaining)
            if not r.is_success:
                raise RuntimeError(f"HTTP {r.status_code} {' '.join(r.text.split())[:200]}")
            return r.json()

        t = time.monotonic()
        for n in prefill_ladder(tokens):
            try:
                # One token per " warm" in GPT-OSS's o200k vocabulary (plus the chat template's); a prefix of
                # its own per prompt, so prefix caching cannot skip the prefill.
                reply = post(_chat(f"Prefill {n}:" + " warm" * n, WARM_UP_MAX_TOKENS))
                counted += int((reply.get("usage") or {}).get("prompt_tokens") or 0)
            except (httpx.HTTPError, RuntimeError, TimeoutError, ValueError) as e:
                errors.append(f"prefill: {type(e).__name__}: {e}")
                finished = not isinstance(e, (TimeoutError, httpx.TimeoutException))
                break
        prefill_seconds = time.monotonic() - t

        # Prompts and replies within the context: a quarter of it at most each.
        quarter = max(1, engine.max_model_len // 4)
        shapes = burst_shapes(
            burst, min(burst_prompt_tokens, quarter * 2 // 3), min(burst_max_tokens, quarter)
        )
        t = time.monotonic()
        pool = ThreadPoolExecutor(max_workers=max(burst, 1), thread_name_prefix="warm-up")
        for r in range(rounds if burst else 0):
            if not finished:
                break
            # Greedy and sampled requests alike (every other one at the server's default temperature, as
            # most clients send): vLLM's sampler takes another path for each, and both should be warm.
            bodies = [
                _chat(f"Request {r + 1}.{i + 1}:" + " warm" * words, reply, greedy=i % 2 == 0)
                for i, (words, reply) in enumerate(shapes)
            ]
            futures = [pool.submit(post, body) for body in bodies]
            done, pending = wait(futures, timeout=max(0.0, deadline - time.monotonic()) + 1.0)
            for future in done:
                error = future.exception()
                if error is None:
                    ok += 1
                else:
                    errors.append(f"burst: {type(error).__name__}: {error}")
                    finished &= not isinstance(error, (TimeoutError, httpx.TimeoutException))
            finished &= not pending
        pool.shutdown(wait=False, cancel_futures=True)
        burst_seconds = time.monotonic() - t
    # Leaving the `with` closed every connection: requests still in flight are aborted by vLLM.
    ensure_alive(engine)
    result = WarmUp(
        seconds=time.monotonic() - start,
        prefill_tokens=counted,
        prefill_seconds=prefill_seconds,
        burst=burst,
        burst_ok=ok,
        burst_seconds=burst_seconds,
        finished=finished,
        errors=tuple(errors),
        rounds=rounds,
    )
    log(result.summary())
    return result
