"""The container's life cycle as plain functions: start the engine, wait until it is ready, warm it up,
put it to sleep, wake it, stop it.

`gpt_oss_modal.modal_app` calls them from its Modal hooks, in this order:

    engine = start_engine(cfg, command)        # `vllm serve` in the background, with the dev-route secret
    wait_ready(engine, budget.ready)           # /health answers 200 (fails at once if vLLM died)
    precompile_kernels(cfg, command, budget.precompile)  # Hopper: MoE routing kernels into the Triton cache
    warm_up(engine, budget.warm_up)            # the kernels the first real burst would compile, now
    sleep(engine, budget.sleep)                # snapshot only: weights to host RAM, KV cache freed
    wake(engine, budget.wake)                  # snapshot only, after each restore
    stop(engine)                               # SIGTERM to the engine's process group, SIGKILL after a grace

Nothing here knows about Modal, so the same calls run on a bare GPU machine (benchmarks/rehearse.py)
and against the local CPU engine (tests/e2e). Each step logs one line and returns what it measured, so a
caller can time every step. Imports: the standard library, httpx (a vLLM dependency, so in the image) and
modules of this package that need nothing more than pydantic.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gpt_oss_modal.clients.openai_api import auth_headers, wait_healthy
from gpt_oss_modal.core import planner
from gpt_oss_modal.core.config import SERVED_MODEL_NAME, DeployConfig
from gpt_oss_modal.core.engine import EngineCommand
from gpt_oss_modal.server import auth, precompile

Log = Callable[[str], None]


def log(message: str) -> None:
    """One line on stderr, where Modal's log stream (and a terminal) shows it at once."""
    print(f"[gpt-oss-modal] {message}", file=sys.stderr, flush=True)


class EngineExited(RuntimeError):
    """vLLM's process ended while we waited for it."""


# --- time budgets ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """Seconds each start-up step may take. Their sum stays strictly inside the container's startup_timeout,
    so a stuck step fails with our message before Modal kills the container with its own."""

    ready: float  # start -> /health
    warm_up: float
    sleep: float  # 0 without snapshots
    wake: float  # after a snapshot restore
    margin: float  # left over for Modal's own port check and the hook's bookkeeping
    precompile: float = 0.0  # 0 where no kernels are precompiled (gpt_oss_modal.server.precompile)

    @property
    def total(self) -> float:
        """The longest the start-up path (pre-snapshot hook, or the web function's body) can take."""
        return self.ready + self.precompile + self.warm_up + self.sleep


WARM_UP_MAX_S = 120.0  # a warm-up compiles a few kernels: a minute at most on a GPU
# Compiling every MoE routing variant: 91 s with 8 workers on an H200 (16 cores) the first time, seconds once the
# cache volume holds them (and skipped then); what does not fit is compiled by the next container.
PRECOMPILE_MAX_S = 180.0
SLEEP_MAX_S = 180.0  # level 1 copies the weights to pinned host RAM: 10 s for 20b on an H200
WAKE_MAX_S = 300.0  # weights back from host RAM: seconds, not minutes


def startup_budget(startup_timeout: float, *, snapshot: bool, precompile: bool = False) -> Budget:
    """Split `startup_timeout` (seconds) between the start-up steps, keeping a margin of 5% (at least 15 s)."""
    margin = max(15.0, 0.05 * startup_timeout)
    warm = min(WARM_UP_MAX_S, 0.1 * startup_timeout)
    nap = min(SLEEP_MAX_S, 0.1 * startup_timeout) if snapshot else 0.0
    pre = min(PRECOMPILE_MAX_S, 0.2 * startup_timeout) if precompile else 0.0
    ready = startup_timeout - margin - warm - nap - pre
    return Budget(
        ready=ready, warm_up=warm, sleep=nap, wake=min(WAKE_MAX_S, ready), margin=margin, precompile=pre
    )


# --- snapshot sizing and notices -----------------------------------------------------------------------

# The host memory a snapshotted engine needs (its sleeping weights plus headroom) is sized with the
# container's other resources, in the planner that prices them: `memory=` is a reservation Modal schedules
# and bills by, not a limit a container is killed at (Modal's `memory=` with one number sets no hard limit).
snapshot_memory_mib = planner.snapshot_memory_mib


def snapshot_key_notice(cfg: DeployConfig) -> str | None:
    """What `deploy` says when a bearer key and snapshots are both on (None otherwise): the key is read
    when vLLM starts, before the snapshot, so restored containers keep the key of the deploy."""
    if not (cfg.snapshot and cfg.api_key_secret):
        return None
    return (
        f"snapshot = true: containers restored from a snapshot keep the bearer key they started with; after "
        f"rotating VLLM_API_KEY in Secret {cfg.api_key_secret!r}, deploy again to take new snapshots"
    )


# --- the engine -----------------------------------------------------------------------------------------


@dataclass
class Engine:
    """A started engine and how this container talks to it."""

    process: subprocess.Popen
    url: str  # http://127.0.0.1:<port>, where /health lives
    max_inputs: int
    max_model_len: int
    api_key: str | None = field(default=None, repr=False)
    dev_secret: str | None = field(default=None, repr=False)  # opens vLLM's dev routes

    def headers(self, *, dev: bool = False) -> dict[str, str]:
        """The bearer key when there is one; with dev=True, the dev-route secret as well."""
        headers = auth_headers(api_key=self.api_key)
        if dev and self.dev_secret:
            headers[auth.DEV_SECRET_HEADER] = self.dev_secret
        return headers


def dev_mode(env: Mapping[str, str]) -> bool:
    """Whether vLLM will serve its dev routes (it parses the variable as an integer)."""
    return env.get("VLLM_SERVER_DEV_MODE", "0").strip() not in ("", "0")


def engine_env(
    command: EngineCommand, base: Mapping[str, str], *, dev_secret: str | None = None
) -> dict[str, str]:
    """The engine's environment: `base` (the container's), then build_command's, with the package on
    PYTHONPATH and the dev-route secret (or none: a stale one from `base` is dropped)."""
    # vLLM loads our middleware (gpt_oss_modal.server.auth) by import path, and the `vllm` console script does not
    # see the directory Modal mounted the package in.
    package_parent = str(Path(__file__).resolve().parents[2])
    pythonpath = os.pathsep.join(p for p in (package_parent, base.get("PYTHONPATH", "")) if p)
    # build_command's env last: it stays the authority even if a Secret set one of the same names.
    env = {**base, **command.env, **command.secret_env, "PYTHONPATH": pythonpath}
    env.pop(auth.DEV_SECRET_ENV, None)
    if dev_secret:
        env[auth.DEV_SECRET_ENV] = dev_secret
    return env


def start_engine(
    cfg: DeployConfig,
    command: EngineCommand,
    *,
    base_env: Mapping[str, str] | None = None,
    argv: Sequence[str] | None = None,
) -> Engine:
    """Start `command` (or `argv`, another launcher of the same server) in its own process group.

    The bearer key, when configured, arrives in VLLM_API_KEY: from the Modal Secret on Modal, from
    `command.secret_env` locally. With dev mode on, a fresh random secret is generated here, handed to vLLM in
    its environment only (never argv, never logged), and kept in the returned Engine for the hooks.
    """
    base = os.environ if base_env is None else base_env
    merged = {**base, **command.env}
    secret = secrets.token_urlsafe(32) if dev_mode(merged) else None
    argv = list(command.argv if argv is None else argv)
    if secret and auth.MIDDLEWARE not in argv:
        raise RuntimeError(
            f"refusing to start vLLM in dev mode without --middleware {auth.MIDDLEWARE}: its dev routes "
            "(/collective_rpc, /sleep, ...) would be open to every caller"
        )
    env = engine_env(command, base, dev_secret=secret)
    process = subprocess.Popen(argv, env=env, start_new_session=True)
    log(f"started vLLM (pid {process.pid}) on port {cfg.port}")
    return Engine(
        process=process,
        url=f"http://127.0.0.1:{cfg.port}",
        max_inputs=cfg.max_inputs,
        max_model_len=command.max_model_len,
        api_key=env.get(auth.ENV_VAR) or None,  # vLLM's own /v1 check reads it too, middleware or not
        dev_secret=secret,
    )


def _alive(engine: Engine) -> None:
    code = engine.process.poll()
    if code is not None:
        raise EngineExited(f"vLLM exited with code {code} before it was ready")


def wait_ready(engine: Engine, timeout: float) -> float:
    """Poll /health until it answers 200 (the shared poller, client.wait_healthy); fail at once if vLLM
    exits. Returns the seconds it took; TimeoutError after `timeout`."""
    _alive(engine)
    seconds = wait_healthy(
        engine.url,
        timeout=timeout,
        headers=engine.headers(),
        on_tick=lambda _elapsed, _status: _alive(engine),
        interval=1.0,
    )
    log(f"vLLM healthy after {seconds:.1f} s")
    return seconds


def call(
    engine: Engine, method: str, path: str, *, json: Any = None, timeout: float, dev: bool = False
) -> Any:
    """One request to the engine; the decoded JSON body (None when empty). RuntimeError on a non-2xx."""
    r = httpx.request(method, engine.url + path, json=json, headers=engine.headers(dev=dev), timeout=timeout)
    if not r.is_success:
        raise RuntimeError(f"{method} {path}: HTTP {r.status_code} {' '.join(r.text.split())[:200]}")
    return r.json() if r.content else None


# --- precompiled kernels ---------------------------------------------------------------------------------


def precompile_kernels(
    cfg: DeployConfig,
    command: EngineCommand,
    budget: float,
    *,
    base_env: Mapping[str, str] | None = None,
    log: Log = log,
) -> bool:
    """Compile the MoE routing kernels the engine would compile during its first requests
    (`gpt_oss_modal.server.precompile`), in worker processes writing to the engine's Triton cache. Call it after
    /health. Skipped where the engine does not run them and where the cache's marker says they are all there
    already. Bounded by `budget`: what was compiled stays in the cache for the next start. Failures are
    logged, not raised. True when every variant is in the cache."""
    routing = precompile.routing_for(cfg)
    if routing is None or budget <= 0:
        return False
    env = engine_env(command, os.environ if base_env is None else base_env)
    marker = routing.marker(precompile.triton_cache_dir(env))
    if marker.exists():
        log(f"MoE routing kernels already compiled ({marker})")
        return True
    workers = min(precompile.MAX_WORKERS, os.cpu_count() or 1)
    argv = [
        sys.executable,
        "-m",
        "gpt_oss_modal.server.precompile",
        *routing.args(),
        "--workers",
        str(workers),
    ]
    argv += ["--marker", str(marker)]
    start = time.monotonic()
    # A session of its own: on timeout the workers go with it.
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=budget)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        log(
            f"precompile: its {budget:.0f} s were spent; the kernels compiled so far stay in the cache and "
            "the next start compiles the rest"
        )
        return False
    lines = [ln for ln in out.splitlines() if ln.strip()]
    if proc.returncode:
        log(f"precompile failed (exit code {proc.returncode}): {' | '.join(lines[-3:])[-400:]}")
        return False
    log(f"{lines[-1] if lines else 'precompile: done'} ({time.monotonic() - start:.1f} s)")
    return marker.exists()


# --- warm-up --------------------------------------------------------------------------------------------

# Prefills run outside CUDA graphs (in `fast` mode all of them, in `compiled` those above the captured
# sizes), and Triton compiles their MoE and attention kernels on first use of each batch-size bucket: a
# first burst after start-up stalled ~6 s on the H200 (docs/performance.md). So the warm-up sends a ladder
# of prompts, 64, 128, ... tokens up to this many -- vLLM's default chunked-prefill batch for the API
# server -- one at a time, so each is a prefill batch of its own size.
WARM_UP_PREFILL_TOKENS = 8192
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
    prefill_tokens: int = WARM_UP_PREFILL_TOKENS,
    burst: int | None = None,
    burst_prompt_tokens: int = WARM_UP_BURST_PROMPT_TOKENS,
    burst_max_tokens: int = WARM_UP_BURST_MAX_TOKENS,
    rounds: int = 1,
    log: Log = log,
) -> WarmUp:
    """Run what the first real burst would compile: prefills of 64, 128, ... up to `prefill_tokens` tokens
    one after another, then `rounds` bursts of `burst` (default max_inputs) concurrent requests with prompts
    around `burst_prompt_tokens` and short replies (`burst_shapes`), within `budget` seconds in all.

    Bounded: every request's timeout is what is left of the budget; when it runs out the rest is abandoned
    (closing the connections makes vLLM abort those requests) and start-up goes on. Failures are logged and
    returned, not raised: a warm-up only saves the first users time. The engine dying still raises.
    """
    start = time.monotonic()
    deadline = start + budget
    burst = engine.max_inputs if burst is None else burst
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
    _alive(engine)
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


# --- sleep, wake, stop ------------------------------------------------------------------------------------


def is_sleeping(engine: Engine, timeout: float = 30.0) -> bool:
    return bool(call(engine, "GET", "/is_sleeping", timeout=timeout, dev=True)["is_sleeping"])


def sleep(engine: Engine, timeout: float, *, level: int = 1) -> float:
    """Put the engine to sleep (level 1: weights to host RAM, KV cache freed); the seconds it took.

    vLLM's sleep aborts requests still running (its default mode), so an abandoned warm-up cannot hold it.
    """
    start = time.monotonic()
    call(engine, "POST", f"/sleep?level={level}", timeout=timeout, dev=True)
    if not is_sleeping(engine):
        raise RuntimeError("vLLM answered POST /sleep but does not report sleeping")
    seconds = time.monotonic() - start
    log(f"vLLM asleep (level {level}) after {seconds:.1f} s")
    return seconds


def wake(engine: Engine, timeout: float) -> float:
    """Wake the engine (weights back to the GPU, KV cache allocated) and wait for /health; the seconds."""
    start = time.monotonic()
    call(engine, "POST", "/wake_up", timeout=timeout, dev=True)
    wait_ready(engine, max(1.0, timeout - (time.monotonic() - start)))
    if is_sleeping(engine):
        raise RuntimeError("vLLM answered POST /wake_up but still reports sleeping")
    seconds = time.monotonic() - start
    log(f"vLLM awake after {seconds:.1f} s")
    return seconds


def stop(engine: Engine, grace: float = 30.0) -> int | None:
    """SIGTERM to the engine's process group (API server and engine core), SIGKILL to what is left after
    `grace` seconds. Returns the API server's exit code."""
    pgid = engine.process.pid  # start_new_session: the group's id is the leader's pid
    start = time.monotonic()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        engine.process.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)  # stragglers of the group, and the leader if it ignored SIGTERM
    code = engine.process.wait()
    log(f"vLLM stopped (exit code {code}) after {time.monotonic() - start:.1f} s")
    return code
