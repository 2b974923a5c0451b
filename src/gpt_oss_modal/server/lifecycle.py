"""The engine's life cycle as plain functions: start it, wait until it is ready, put it to sleep, wake it,
stop it. One life cycle for the Modal container and the local server alike.

`gpt_oss_modal.modal_app` calls them from its Modal hooks, in this order:

    guards.check_gpu()                         # GPU, driver and CUDA logged; a driver too old refused
    engine = start_engine(cfg, command)        # `vllm serve` in its own process group, with the dev secret
    wait_ready(engine, budget.ready)           # /health answers 200 (fails at once if vLLM died)
    warmup.warm_up(engine, budget.warm_up)     # the kernels the first real burst would compile, now
    guards.Watchdog(engine).start()            # a hung engine ends the container, so Modal replaces it
    sleep(engine, budget.sleep)                # snapshot only: weights to host RAM, KV cache freed
    wake(engine, budget.wake)                  # snapshot only, after each restore
    stop(engine)                               # SIGTERM to the engine's process group, SIGKILL after a grace

`gpt_oss_modal.local.LocalServer` starts, waits for and stops its engine with the same calls, adding only
what a terminal needs (its output in a log file, an engine that dies with the process that started it).
Nothing here knows about Modal, so the same calls also run on a bare GPU machine (benchmarks/rehearse.py). Each step
logs one line and returns what it measured. Imports: the standard library, httpx and psutil (vLLM
dependencies, so in the image) and modules of this package that need nothing more than pydantic.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gpt_oss_modal.clients.openai_api import auth_headers, wait_healthy
from gpt_oss_modal.core.config import DeployConfig
from gpt_oss_modal.core.engine import EngineCommand
from gpt_oss_modal.server import auth

# First on every engine's PYTHONPATH: its sitecustomize fixes vLLM in each process (the package's own
# import runs none of them; they do not belong in this process).
from gpt_oss_modal.server._vllm_site import SITE_DIR as VLLM_SITE_DIR

Log = Callable[[str], None]


def log(message: str) -> None:
    """One line on stderr, where Modal's log stream (and a terminal) shows it at once."""
    print(f"[gpt-oss-modal] {message}", file=sys.stderr, flush=True)


class EngineExited(RuntimeError):
    """vLLM's process ended while we waited for it."""

    def __init__(self, code: int) -> None:
        super().__init__(f"vLLM exited with code {code} before it was ready")
        self.code = code


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

    @property
    def total(self) -> float:
        """The longest the start-up path (pre-snapshot hook, or the web function's body) can take."""
        return self.ready + self.warm_up + self.sleep


WARM_UP_MAX_S = 120.0  # a warm-up compiles a few kernels: a minute at most on a GPU
SLEEP_MAX_S = 180.0  # level 1 copies the weights to pinned host RAM: 10 s for 20b on an H200
WAKE_MAX_S = 300.0  # weights back from host RAM: seconds, not minutes


def startup_budget(startup_timeout: float, *, snapshot: bool) -> Budget:
    """Split `startup_timeout` (seconds) between the start-up steps, keeping a margin of 5% (at least 15 s)."""
    margin = max(15.0, 0.05 * startup_timeout)
    warm = min(WARM_UP_MAX_S, 0.1 * startup_timeout)
    nap = min(SLEEP_MAX_S, 0.1 * startup_timeout) if snapshot else 0.0
    ready = startup_timeout - margin - warm - nap
    return Budget(ready=ready, warm_up=warm, sleep=nap, wake=min(WAKE_MAX_S, ready), margin=margin)


# --- snapshot notices ------------------------------------------------------------------------------------


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
    """A started engine and how this process talks to it."""

    process: subprocess.Popen
    url: str  # http://127.0.0.1:<port>, where /health lives
    max_inputs: int
    max_model_len: int
    max_num_batched_tokens: int | None = None  # the engine's largest step (None: vLLM's default, on CPU)
    api_key: str | None = field(default=None, repr=False)
    dev_secret: str | None = field(default=None, repr=False)  # opens vLLM's dev routes
    stopping: bool = False  # stop() was called: the engine's end is wanted (a watchdog stands down)

    @property
    def pgid(self) -> int:
        """The engine's process group: started in a session of its own, the group's id is the leader's pid."""
        return self.process.pid

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
    """The engine's environment: `base` (the container's, or what the local server gives), then
    build_command's, with the package on PYTHONPATH, unbuffered output and the dev-route secret (or none:
    a stale one from `base` is dropped)."""
    # vLLM loads our middleware (gpt_oss_modal.server.auth) by import path, and the `vllm` console script does
    # not see the directory Modal mounted the package in. Before it, the fixes to vLLM that every process of
    # the engine runs at start-up (server/_vllm_site/sitecustomize.py).
    package_parent = str(Path(__file__).resolve().parents[2])
    pythonpath = os.pathsep.join(p for p in (VLLM_SITE_DIR, package_parent, base.get("PYTHONPATH", "")) if p)
    # build_command's env last: it stays the authority even if a Secret set one of the same names. Its
    # output unbuffered, so that a log shows each line when it is written, not at exit.
    env = {**base, **command.env, **command.secret_env, "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1"}
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
    capture_output: bool = False,
    die_with_starter: bool = False,
    log: Log = log,
) -> Engine:
    """Start `command` (or `argv`, another launcher of the same server) in a process group of its own.

    The bearer key, when configured, arrives in VLLM_API_KEY: from the Modal Secret on Modal, from
    `command.secret_env` locally. With dev mode on, a fresh random secret is generated here, handed to vLLM in
    its environment only (never argv, never logged), and kept in the returned Engine for the hooks.

    capture_output: stdout and stderr together in `process.stdout` (a pipe the caller must drain), instead
    of this process's own. die_with_starter: Linux's PR_SET_PDEATHSIG, SIGTERM to the engine when the thread
    that started it ends, even by SIGKILL -- for a terminal's server only: on Modal the thread that runs a
    hook may end while the engine must go on.
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
    process = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture_output else None,
        stderr=subprocess.STDOUT if capture_output else None,
        start_new_session=True,  # its own process group: stop() ends the engine core with it
        preexec_fn=_pdeathsig() if die_with_starter else None,
    )
    log(f"started vLLM (pid {process.pid}) on port {cfg.port}")
    return Engine(
        process=process,
        url=f"http://127.0.0.1:{cfg.port}",
        max_inputs=cfg.max_inputs,
        max_model_len=command.max_model_len,
        max_num_batched_tokens=command.max_num_batched_tokens,
        api_key=env.get(auth.ENV_VAR) or None,  # vLLM's own /v1 check reads it too, middleware or not
        dev_secret=secret,
    )


def _pdeathsig() -> Callable[[], None] | None:
    """Linux: a preexec_fn giving the engine SIGTERM when the thread that started it dies.

    libc is loaded here, in the parent: between fork and exec the child may only call the prepared
    function (an import there could deadlock on a lock another thread of the parent held at fork time).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigterm = 1, int(signal.SIGTERM)

    def set_pdeathsig() -> None:  # pragma: no cover - runs in the child
        prctl(pr_set_pdeathsig, sigterm)

    return set_pdeathsig


def group_processes(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`."""
    # Imported here: this module is also imported where only the deploy side is installed (budgets,
    # snapshot sizing), and psutil comes with vLLM.
    import psutil

    pids = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(OSError, psutil.Error):  # gone meanwhile
            if (
                proc.info["status"] not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
                and os.getpgid(proc.pid) == pgid
            ):
                pids.append(proc.pid)
    return pids


def ensure_alive(engine: Engine) -> None:
    """EngineExited when the engine's API server has ended."""
    code = engine.process.poll()
    if code is not None:
        raise EngineExited(code)


# How often wait_ready polls the engine's /health: on 127.0.0.1 a refused connection costs microseconds,
# and a container is ready at most this late after vLLM is.
READY_POLL_S = 0.1


def wait_ready(
    engine: Engine, timeout: float, *, on_tick: Callable[[], None] | None = None, log: Log = log
) -> float:
    """Poll /health until it answers 200 (the shared poller, clients.wait_healthy); EngineExited at once if
    vLLM exits. `on_tick()` runs before every poll (a progress display). Returns the seconds it took;
    TimeoutError after `timeout`."""

    def check() -> None:
        if on_tick is not None:
            on_tick()
        ensure_alive(engine)

    seconds = wait_healthy(
        engine.url,
        timeout=timeout,
        headers=engine.headers(),
        check=check,
        interval=READY_POLL_S,
        poll_timeout=5.0,
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


KILL_WAIT_S = 10.0  # after SIGKILL, for the kernel to end what is left of the group


def stop(engine: Engine, grace: float = 30.0, *, log: Log = log) -> int | None:
    """SIGTERM to the engine's process group (API server and engine core), SIGKILL to what is left of it
    after `grace` seconds. Returns the API server's exit code once the group is gone."""
    start = time.monotonic()
    engine.stopping = True
    _signal_group(engine.pgid, signal.SIGTERM)
    if not _group_ended(engine, grace):
        _signal_group(engine.pgid, signal.SIGKILL)  # stragglers, and a leader that ignored SIGTERM
        _group_ended(engine, KILL_WAIT_S)
    code = engine.process.wait()
    log(f"vLLM stopped (exit code {code}) after {time.monotonic() - start:.1f} s")
    return code


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_ended(engine: Engine, within: float) -> bool:
    """Wait up to `within` seconds for the leader to exit and every other member of its group with it."""
    deadline = time.monotonic() + within
    while engine.process.poll() is None or group_processes(engine.pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True
