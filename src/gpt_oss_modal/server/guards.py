"""Guards around the engine: the GPU checked before vLLM starts, and a watchdog once it serves.

- `check_gpu` logs the GPUs, the driver and the CUDA releases first thing, and refuses, in one line, a
  driver too old for the CUDA the engine's torch was built for (CUDA 13 needs >= 580): otherwise that is a
  CUDA traceback minutes into a paid start-up.
- `Watchdog` polls /health once the engine serves. A hung engine (NCCL with tensor parallelism, say)
  would hold every request up to the function's `timeout` (an hour); after WATCHDOG_FAILURES failed polls
  in a row it stops the engine and ends this process, so that Modal replaces the container.

Both run on the NVIDIA driver's own library (NVML, the `nvidia-ml-py` package vLLM depends on) and HTTP.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from gpt_oss_modal.server.lifecycle import Engine, Log, log, stop

# The oldest driver branch that runs each CUDA major release (NVIDIA's CUDA compatibility table: minor
# version compatibility from these branches on).
MIN_DRIVER = {12: 525, 13: 580}


class GpuRefused(RuntimeError):
    """This GPU's driver cannot run the engine; the message says why in one line."""


@dataclass(frozen=True)
class GpuInfo:
    gpus: tuple[str, ...]  # "NVIDIA H100 80GB HBM3, 79.6 GiB", one per GPU
    driver: str  # "580.65.06"
    driver_cuda: str  # the newest CUDA release this driver runs, "13.0"
    engine_cuda: str | None  # the CUDA release the engine's torch was built for, when known

    def summary(self) -> str:
        gpus = "; ".join(self.gpus) or "none visible"
        return (
            f"GPU: {gpus}; driver {self.driver} (CUDA up to {self.driver_cuda}); engine built for CUDA "
            f"{self.engine_cuda or 'unknown'}"
        )


def major(version: str) -> int:
    """The leading number of a driver or CUDA version ("580.65.06" -> 580, "13.0.96" -> 13)."""
    head = version.strip().split(".")[0]
    if not head.isdigit():
        raise ValueError(f"not a version: {version!r}")
    return int(head)


def driver_problem(driver: str, engine_cuda: str | None) -> str | None:
    """One line saying why `driver` cannot run CUDA `engine_cuda`, or None when it can (or when either is
    unknown: then CUDA itself will say)."""
    if engine_cuda is None:
        return None
    with contextlib.suppress(ValueError):
        need = MIN_DRIVER.get(major(engine_cuda))
        if need is not None and major(driver) < need:
            return (
                f"the NVIDIA driver {driver} is too old for CUDA {engine_cuda}, which the engine's torch is "
                f"built for: it needs driver >= {need}; pick another GPU (or region) whose hosts run a newer "
                f"driver, or a vLLM release built for an older CUDA"
            )
    return None


def engine_cuda() -> str | None:
    """The CUDA runtime the engine's torch loads (its `nvidia-cuda-runtime` wheel), else the CUDA image's
    release (CUDA_VERSION, set by NVIDIA's base images)."""
    for dist in ("nvidia-cuda-runtime", "nvidia-cuda-runtime-cu12"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(dist)
    return os.environ.get("CUDA_VERSION") or None


def read_gpu() -> GpuInfo | None:
    """The GPUs and driver from NVML; None where NVML (the driver, or nvidia-ml-py) is not there."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()  # 13000 for 13.0
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            total = pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30
            gpus.append(f"{_text(pynvml.nvmlDeviceGetName(handle))}, {total:.1f} GiB")
        return GpuInfo(
            gpus=tuple(gpus),
            driver=_text(pynvml.nvmlSystemGetDriverVersion()),
            driver_cuda=f"{cuda // 1000}.{cuda % 1000 // 10}",
            engine_cuda=engine_cuda(),
        )
    finally:
        pynvml.nvmlShutdown()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value  # older nvidia-ml-py returns bytes


def check_gpu(log: Log = log) -> GpuInfo | None:
    """Log the GPUs, the driver and the CUDA releases; GpuRefused (one line, logged too) when the driver
    cannot run the engine's CUDA. None, logged, where NVML cannot be read."""
    info = read_gpu()
    if info is None:
        log("GPU: NVML not available (no NVIDIA driver, or nvidia-ml-py missing); not checked")
        return None
    log(info.summary())
    problem = driver_problem(info.driver, info.engine_cuda)
    if problem:
        log(f"refusing to start: {problem}")
        raise GpuRefused(problem)
    return info


# --- the watchdog ---------------------------------------------------------------------------------------

# A healthy vLLM answers /health in milliseconds whatever its load: the API server's event loop answers it
# and asks the engine core whether it is alive, with no model work. A 10-s poll that gets no 200 is already
# unusual; six in a row (one to two minutes: interval plus timeout each) are no long prefill (seconds at
# most on the slowest card) and no garbage-collection pause, but an engine that will not come back. Against
# the hour a request may otherwise wait (`timeout`), the container is replaced within two minutes.
WATCHDOG_INTERVAL_S = 10.0
WATCHDOG_TIMEOUT_S = 10.0
WATCHDOG_FAILURES = 6
WATCHDOG_EXIT_CODE = 70  # EX_SOFTWARE: the engine failed, not our code
STOP_GRACE_S = 5.0  # a hung engine seldom honours SIGTERM: SIGKILL soon after


def exit_process(engine: Engine, reason: str) -> None:
    """The container's response to a hung engine: stop it (SIGKILL after a short grace) and end this
    process at once, whatever its other threads hold (requests waiting on the engine), so that Modal counts
    the container as failed and starts another for the next requests."""
    with contextlib.suppress(Exception):
        stop(engine, STOP_GRACE_S)
    os._exit(WATCHDOG_EXIT_CODE)


@dataclass
class Watchdog:
    """Polls the engine's /health from a daemon thread; after `failures` failed polls in a row, or at once
    when the engine's process has exited, logs why and calls `on_failure(engine, reason)` (default: end the
    process). Start it once the engine serves: not during start-up (wait_ready bounds that) nor before a
    snapshot (a restored container starts its own). It stands down when lifecycle.stop ends the engine."""

    engine: Engine
    interval: float = WATCHDOG_INTERVAL_S
    timeout: float = WATCHDOG_TIMEOUT_S
    failures: int = WATCHDOG_FAILURES
    on_failure: Callable[[Engine, str], None] = exit_process
    log: Log = log

    def __post_init__(self) -> None:
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engine-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        self.log(
            f"watchdog on /health: every {self.interval:g} s, the engine is stopped after {self.failures} "
            "failures in a row"
        )
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def _run(self) -> None:
        failed, last = 0, ""
        with httpx.Client(headers=self.engine.headers(), timeout=self.timeout) as http:
            while not self._stopped.wait(self.interval) and not self.engine.stopping:
                code = self.engine.process.poll()
                if code is not None:
                    return self._fire(f"vLLM exited with code {code}")
                try:
                    r = http.get(self.engine.url + "/health")
                    last = f"HTTP {r.status_code}"
                    ok = r.status_code == 200
                except httpx.HTTPError as e:
                    last, ok = type(e).__name__, False
                failed = 0 if ok else failed + 1
                if failed >= self.failures and not self.engine.stopping:
                    return self._fire(f"vLLM did not answer /health {failed} times in a row (last: {last})")
        return None

    def _fire(self, reason: str) -> None:
        self.log(f"watchdog: {reason}; stopping the engine so that a new one replaces it")
        self.on_failure(self.engine, reason)
