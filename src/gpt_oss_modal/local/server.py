"""The engine on this machine: `LocalServer` starts what `engine.build_command` returns and watches it.

With an NVIDIA GPU it runs the real model (target `local-gpu`); without one it runs vLLM's CPU build on the
embedded tiny checkpoint (target `local-cpu`, see `gpt_oss_modal.local.tiny`), which is what the tests and CI use.

The engine's life cycle is the Modal container's (`gpt_oss_modal.server.lifecycle`): one environment,
one process group (vLLM starts an engine-core process next to the API server), one stop -- SIGTERM to the
group, then SIGKILL for whatever is still there. Its output goes to a log file under the cache directory and
to a ring buffer of the last lines, which every start-up error quotes.

No watchdog here (the container has one, gpt_oss_modal.server.guards): nothing would replace a stopped
engine, and a person at the terminal sees a hang and has Ctrl-C; on two shared cores a slow /health is
more often a busy CPU engine than a hung one.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import errno
import importlib.metadata
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from gpt_oss_modal.core import catalog
from gpt_oss_modal.core.config import DeployConfig, cache_dir
from gpt_oss_modal.core.engine import API_KEY_ENV, EngineCommand, Target, build_command
from gpt_oss_modal.server import guards, lifecycle, precompile, warmup

# The module that runs vLLM's CLI (see gpt_oss_modal.local.vllm_entry for why not the `vllm` script).
ENTRY_MODULE = "gpt_oss_modal.local.vllm_entry"
LOG_LINES = 200  # kept in memory for error messages
ERROR_LINES = 25  # quoted in an error
DEFAULT_STARTUP_TIMEOUT = 300  # seconds; a bound on a hang, well above the start-up README states


class LocalServerError(RuntimeError):
    """The engine could not be started or died; `last_lines` is the end of its log."""

    def __init__(self, message: str, last_lines: list[str] | None = None, log_path: Path | None = None):
        super().__init__(message)
        self.message = message
        self.last_lines = list(last_lines or [])
        self.log_path = log_path

    def details(self) -> str:
        """The message, the last log lines and where the whole log is."""
        parts = [self.message]
        if self.last_lines:
            parts.append("last engine output:")
            parts += ["  " + line for line in self.last_lines]
        if self.log_path is not None:
            parts.append(f"full log: {self.log_path}")
        return "\n".join(parts)


# --- where things live -----------------------------------------------------------------------------------


def log_dir() -> Path:
    return cache_dir() / "logs"


# --- which engine ---------------------------------------------------------------------------------------


def has_cuda_gpu() -> bool:
    """An NVIDIA GPU that vLLM can use: `nvidia-smi -L` lists one, or a CUDA torch sees one."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
            if out.returncode == 0 and "GPU" in out.stdout:
                return True
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            return False
        import torch

        return torch.version.cuda is not None and torch.cuda.is_available()
    except Exception:  # a broken torch is no GPU
        return False


def choose_target(
    cfg: DeployConfig, *, model_explicit: bool, gpu: bool | None = None
) -> tuple[DeployConfig, Target]:
    """The config and target to serve locally.

    tiny -> the CPU engine. A real model -> the GPU engine when there is a CUDA GPU; on a machine without
    one, the default model becomes tiny, and a real model that was asked for is an error (one line).
    """
    if cfg.model == catalog.TINY:
        return cfg, "local-cpu"
    if gpu is None:
        gpu = has_cuda_gpu()
    if gpu:
        return cfg, "local-gpu"
    if not model_explicit:
        return cfg.model_copy(update={"model": catalog.TINY}), "local-cpu"
    raise LocalServerError(
        f"{cfg.model} needs an NVIDIA GPU and this machine has none (no nvidia-smi, no CUDA device); "
        "serve the embedded checkpoint with `--model tiny`, or run the real model on Modal with "
        "`gpt-oss-modal run` / `deploy`"
    )


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something already listens on host:port (binding as the server would, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def engine_argv(command: EngineCommand, launcher: list[str] | None = None) -> list[str]:
    """The builder's `vllm serve ...` argv, run by this Python through the CLI shim (or by `launcher`)."""
    assert command.argv[0] == "vllm", command.argv
    return [*(launcher or [sys.executable, "-m", ENTRY_MODULE]), *command.argv[1:]]


# --- the tiny checkpoint ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    env: dict[str, str]  # what the engine needs to load it offline (the vocab directory)
    max_model_len: int | None = None


def tiny_checkpoint(*, scripted: bool = True) -> Checkpoint:
    """Build (once, cached) the embedded tiny checkpoint and say how the engine loads it offline."""
    from gpt_oss_modal.local import tiny, tokenizer

    path = Path(tiny.ensure_checkpoint(scripted=scripted))
    env = tokenizer.harmony_env()  # TIKTOKEN_ENCODINGS_BASE: openai-harmony reads the vocab offline
    return Checkpoint(path=path, env=env, max_model_len=getattr(tiny, "MAX_MODEL_LEN", None))


# --- the server -----------------------------------------------------------------------------------------


class LocalServer:
    """One engine process group on 127.0.0.1:port, started and stopped by the engine life cycle
    (`gpt_oss_modal.server.lifecycle`), with what a terminal adds: the port checked first, the engine's
    output in a log file and a ring buffer, an engine that dies with the process that started it, a
    progress line, and on a GPU the kernel priming before it starts and the warm-up after.

    >>> with LocalServer(DeployConfig(model="tiny", port=8123)) as server:  # doctest: +SKIP
    ...     server.wait_ready(300)
    ...     print(server.base_url)
    """

    def __init__(
        self,
        cfg: DeployConfig,
        *,
        target: Target | None = None,
        checkpoint: Checkpoint | None = None,
        log_path: Path | None = None,
        extra_env: dict[str, str] | None = None,
        launcher: list[str] | None = None,
    ) -> None:
        if target is None:
            target = "local-cpu" if cfg.model == catalog.TINY else "local-gpu"
        self.cfg = cfg
        self.target: Target = target
        self.host = "127.0.0.1"
        self._checkpoint = checkpoint
        self.log_path = log_path or log_dir() / f"serve-{self.port}.log"
        self._extra_env = dict(extra_env or {})
        self._launcher = launcher  # what runs `serve ...` instead of vLLM's CLI (tests use fakes)
        self.lines: collections.deque[str] = collections.deque(maxlen=LOG_LINES)
        self.engine: lifecycle.Engine | None = None
        self.command: EngineCommand | None = None
        self._base_env: dict[str, str] = {}
        self._reader: threading.Thread | None = None
        self._log: IO[str] | None = None
        self._lock = threading.Lock()
        self.started_at: float | None = None
        self.ready_after: float | None = None  # seconds from start() to a healthy /health

    # -- addresses --

    @property
    def port(self) -> int:
        return self.cfg.port

    @property
    def url(self) -> str:
        """The server's root URL (where /health is)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (what `OpenAI(base_url=...)` takes)."""
        return self.url + "/v1"

    @property
    def api_key(self) -> str | None:
        return self.cfg.api_key.get_secret_value() if self.cfg.api_key is not None else None

    def curl_example(self) -> str:
        # Double quotes: the shell expands $GPT_OSS_API_KEY (single quotes would send it literally).
        auth = ' -H "Authorization: Bearer $GPT_OSS_API_KEY"' if self.api_key else ""
        body = '{"model": "llm", "messages": [{"role": "user", "content": "Hello!"}]}'
        return (
            f"curl -s {self.base_url}/chat/completions -H 'Content-Type: application/json'{auth} -d '{body}'"
        )

    # -- the engine's process --

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.engine.process if self.engine is not None else None

    @property
    def pgid(self) -> int | None:
        return self.engine.pgid if self.engine is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def last_lines(self, n: int = ERROR_LINES) -> list[str]:
        with self._lock:
            return list(self.lines)[-n:]

    def _error(self, message: str) -> LocalServerError:
        return LocalServerError(message, self.last_lines(), self.log_path)

    def _note(self, message: str) -> None:
        """A life-cycle step's line, into the engine's log (the terminal shows a progress line instead)."""
        with self._lock:
            if self._log is not None and not self._log.closed:
                self._log.write(f"[gpt-oss-modal] {message}\n")
                self._log.flush()

    # -- life cycle --

    def _check_port(self) -> None:
        if port_in_use(self.port, self.host):
            raise LocalServerError(
                f"port {self.port} on {self.host} is already in use (another server?); stop it or pick "
                f"another with --port"
            )

    def prepare(self) -> EngineCommand:
        """The engine command (and, on CPU, the tiny checkpoint it loads), built once."""
        if self.command is not None:
            return self.command
        model_path = None
        default_len = None
        # The user's environment, minus a bearer key of its own: the engine's is the config's (secret_env).
        self._base_env = {k: v for k, v in os.environ.items() if k != API_KEY_ENV}
        if self.target == "local-cpu":
            try:
                ckpt = self._checkpoint or tiny_checkpoint(scripted=True)
            except (OSError, RuntimeError, ImportError) as e:  # no vocabulary (TokenizerError), no disk...
                raise LocalServerError(f"cannot prepare the tiny checkpoint: {e}") from e
            model_path, default_len = str(ckpt.path), ckpt.max_model_len
            self._base_env |= ckpt.env
        self._base_env |= self._extra_env
        self.command = build_command(
            self.cfg, target=self.target, model_path=model_path, default_max_model_len=default_len
        )
        return self.command

    def prime(self, log: lifecycle.Log = lifecycle.log) -> bool:
        """On a GPU, before start(): check the driver, then compile the MoE kernels the engine would
        compile during its first requests into its Triton cache, once per cache (gpt_oss_modal.server.precompile).
        True when they are all in the cache; False where there are none to compile."""
        if self.target != "local-gpu":
            return False
        self._check_port()  # before minutes of compiling, not after
        try:
            guards.check_gpu(log)
        except guards.GpuRefused as e:
            raise LocalServerError(str(e)) from None
        routing = precompile.moe_kernels_for(self.cfg, vllm=_installed("vllm"))
        if routing is None:
            return False
        command = self.prepare()
        return precompile.prime(routing, lifecycle.engine_env(command, self._base_env), log)

    def start(self) -> LocalServer:
        if self.engine is not None:
            raise RuntimeError("this LocalServer was already started")
        self._check_port()
        command = self.prepare()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("w", encoding="utf-8", errors="replace")
        self._log.write(f"$ {command.shell()}\n")
        self._log.flush()
        self.started_at = time.monotonic()
        self.engine = lifecycle.start_engine(
            self.cfg,
            command,
            base_env=self._base_env,
            argv=engine_argv(command, self._launcher),
            capture_output=True,  # pumped into the log file and the ring buffer
            die_with_starter=True,  # should we be killed before stop()
            log=self._note,
        )
        _live.add(self)
        self._reader = threading.Thread(target=self._pump, name=f"vllm-log-{self.port}", daemon=True)
        self._reader.start()
        return self

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            text = raw.decode("utf-8", errors="replace")
            # progress bars redraw with \r: keep the latest state
            line = text.rstrip("\r\n").rsplit("\r", 1)[-1].rstrip()
            with self._lock:
                if self._log is not None and not self._log.closed:
                    self._log.write(text if text.endswith("\n") else text + "\n")
                    self._log.flush()
                if line:
                    self.lines.append(line)
        self.proc.stdout.close()

    def wait_ready(
        self,
        timeout: float = DEFAULT_STARTUP_TIMEOUT,
        *,
        progress: bool = False,
        console: Any = None,
        on_tick: Callable[[float, str], None] | None = None,
    ) -> float:
        """Block until GET /health answers 200 (lifecycle.wait_ready); return the seconds since start().

        The engine exiting, or `timeout` passing (the engine is then stopped), raises LocalServerError with
        the last log lines. `progress` shows a live line on `console` (rich): elapsed seconds and the
        engine's current log line.
        """
        if self.engine is None or self.started_at is None:
            raise RuntimeError("start() first")
        started = self.started_at
        display = _Progress(console, self.target) if progress else None

        def tick() -> None:
            elapsed, current = time.monotonic() - started, (self.last_lines(1) or [""])[0]
            if display:
                display.update(elapsed, current)
            if on_tick:
                on_tick(elapsed, current)

        try:
            # With a key, /health is guarded too (gpt_oss_modal.server.auth): the engine's headers carry it.
            lifecycle.wait_ready(
                self.engine, started + timeout - time.monotonic(), on_tick=tick, log=self._note
            )
        except lifecycle.EngineExited as e:
            self._drain()
            raise self._error(f"the engine exited with code {e.code} during start-up") from None
        except (TimeoutError, RuntimeError) as e:
            what = f"within {timeout:.0f} s" if isinstance(e, TimeoutError) else f"({e})"
            err = self._error(f"the engine did not answer /health {what}; stopped it")
            self.stop()
            raise err from None
        finally:
            if display:
                display.close()
        self.ready_after = time.monotonic() - started
        return self.ready_after

    def warm_up(self, budget: float = lifecycle.WARM_UP_MAX_S) -> warmup.WarmUp:
        """The Modal container's warm-up (`warmup.warm_up`) against this engine: on a GPU it compiles the
        kernels a first burst of requests would otherwise wait for. Call it after wait_ready()."""
        if self.engine is None:
            raise RuntimeError("warm_up() needs a started engine: call start() and wait_ready() first")
        return warmup.warm_up(self.engine, budget, log=self._note)

    def _drain(self, timeout: float = 5.0) -> None:
        """Let the reader catch the last output of an exited engine."""
        if self._reader is not None:
            self._reader.join(timeout)

    def stop(self, grace: float = 15.0) -> int | None:
        """End the whole process group (lifecycle.stop: SIGTERM, then SIGKILL after `grace` seconds).
        Returns the exit code."""
        if self.engine is None:
            return None
        code = lifecycle.stop(self.engine, grace, log=self._note)
        self._drain()
        with self._lock:
            if self._log is not None and not self._log.closed:
                self._log.close()
        _live.discard(self)
        return code

    def __enter__(self) -> LocalServer:
        if self.engine is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _installed(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# Servers still running when the interpreter exits are stopped.
_live: set[LocalServer] = set()


@atexit.register
def _stop_all() -> None:  # pragma: no cover - exit path
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.stop(grace=5)


class _Progress:
    """A rich live line: spinner, elapsed seconds, the engine's current log line."""

    def __init__(self, console: Any, target: str) -> None:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = console or Console(stderr=True)
        what = "vLLM (CPU, tiny checkpoint)" if target == "local-cpu" else "vLLM (GPU)"
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn(f"[bold]starting {what}[/]"),
            TimeElapsedColumn(),
            TextColumn("[dim]{task.description}", markup=True),
            console=self.console,
            transient=True,
        )
        self.task = self.progress.add_task("", total=None)
        self.progress.start()

    def update(self, elapsed: float, line: str) -> None:
        from rich.markup import escape

        width = max(20, self.console.width - 50)
        text = line if len(line) <= width else line[: width - 1] + "…"
        self.progress.update(self.task, description=escape(text))

    def close(self) -> None:
        self.progress.stop()
