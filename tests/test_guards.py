"""The guards around the engine (gpt_oss_modal.server.guards): the driver check's rule, and the watchdog
against a real engine process (tests/fake_engine.py) that stops answering /health."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gpt_oss_modal.core.config import DeployConfig
from gpt_oss_modal.core.engine import build_command
from gpt_oss_modal.local.server import free_port
from gpt_oss_modal.server import guards, lifecycle

FAKE = [sys.executable, str(Path(__file__).with_name("fake_engine.py"))]
BOUND = 120  # a bound on a hang, not a speed claim


# --- the driver ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "number"),
    [("580.65.06", 580), ("535.247.01", 535), ("13.0.96", 13), ("12.8", 12), ("13", 13)],
)
def test_versions_parse_to_their_major_number(version: str, number: int) -> None:
    assert guards.major(version) == number


@pytest.mark.parametrize("garbage", ["", "N/A", "v580", ".5"])
def test_what_is_no_version_is_refused(garbage: str) -> None:
    with pytest.raises(ValueError, match="not a version"):
        guards.major(garbage)


@pytest.mark.parametrize(
    ("driver", "cuda", "need"),
    [
        ("575.57.08", "13.0.96", 580),  # CUDA 13 on a 575 host: refused
        ("570.133.20", "13.0", 580),
        ("470.256.02", "12.8.90", 525),
        ("580.65.06", "13.0.96", None),
        ("590.44.01", "13.0.96", None),
        ("535.247.01", "12.8.90", None),
        ("575.57.08", None, None),  # unknown CUDA: CUDA itself will say
        ("N/A", "13.0.96", None),
        ("575.57.08", "14.0", None),  # a release we have no rule for
    ],
)
def test_a_driver_too_old_for_the_engines_cuda_is_one_line(
    driver: str, cuda: str | None, need: int | None
) -> None:
    problem = guards.driver_problem(driver, cuda)
    if need is None:
        assert problem is None
    else:
        assert "\n" not in problem
        assert f"the NVIDIA driver {driver} is too old for CUDA {cuda}" in problem
        assert f"needs driver >= {need}" in problem


def test_the_summary_names_gpus_driver_and_both_cudas() -> None:
    info = guards.GpuInfo(("NVIDIA H100 80GB HBM3, 79.6 GiB",) * 2, "580.65.06", "13.0", "13.0.96")
    assert info.summary() == (
        "GPU: NVIDIA H100 80GB HBM3, 79.6 GiB; NVIDIA H100 80GB HBM3, 79.6 GiB; driver 580.65.06 "
        "(CUDA up to 13.0); engine built for CUDA 13.0.96"
    )


# --- the watchdog, against a real process ----------------------------------------------------------------


def start_fake(mode: str) -> lifecycle.Engine:
    """The fake engine, started and awaited by the life cycle as the container starts vLLM."""
    cfg = DeployConfig(model="tiny", port=free_port())
    command = build_command(cfg, target="local-cpu", model_path="/nonexistent")
    engine = lifecycle.start_engine(
        cfg,
        command,
        base_env={**os.environ, "FAKE_ENGINE_MODE": mode},
        argv=[*FAKE, *command.argv[1:]],
        capture_output=True,
        log=lambda _: None,
    )
    threading.Thread(target=engine.process.stdout.read, daemon=True).start()  # drain its output
    try:
        lifecycle.wait_ready(engine, BOUND, log=lambda _: None)
    except BaseException:
        lifecycle.stop(engine, 1, log=lambda _: None)
        raise
    return engine


def watch(engine: lifecycle.Engine) -> tuple[guards.Watchdog, threading.Event, list[str]]:
    fired, reasons = threading.Event(), []

    def record(_engine: lifecycle.Engine, reason: str) -> None:
        reasons.append(reason)
        fired.set()

    dog = guards.Watchdog(
        engine, interval=0.2, timeout=2.0, failures=3, on_failure=record, log=lambda _: None
    )
    return dog.start(), fired, reasons


def test_the_watchdog_fires_when_the_engine_stops_answering() -> None:
    engine = start_fake("freeze")
    try:
        dog, fired, reasons = watch(engine)
        os.kill(engine.process.pid, signal.SIGUSR1)  # from now on every request hangs
        assert fired.wait(BOUND)
        assert reasons == ["vLLM did not answer /health 3 times in a row (last: ReadTimeout)"]
        assert engine.process.poll() is None  # the watchdog called on_failure: the rest is its business
        dog.stop()
    finally:
        lifecycle.stop(engine, 1, log=lambda _: None)


def test_the_watchdog_fires_at_once_when_the_engine_exits() -> None:
    engine = start_fake("serve")
    try:
        dog, fired, reasons = watch(engine)
        engine.process.kill()
        assert fired.wait(BOUND)
        assert reasons == [f"vLLM exited with code {-signal.SIGKILL}"]
        dog.stop()
    finally:
        lifecycle.stop(engine, 1, log=lambda _: None)


def test_a_stopped_watchdog_never_fires() -> None:
    engine = start_fake("freeze")
    try:
        dog, fired, reasons = watch(engine)
        dog.stop()
        os.kill(engine.process.pid, signal.SIGUSR1)
        lifecycle.stop(engine, 1, log=lambda _: None)
        assert not fired.is_set() and reasons == []
    finally:
        lifecycle.stop(engine, 1, log=lambda _: None)


def test_in_a_container_process_the_watchdog_stops_the_engine_and_exits() -> None:
    # What the Modal container does (modal_app: start, wait, Watchdog(...).start()), in a process of its own
    # with the watchdog's default action: the engine frozen, the process must end with the watchdog's exit
    # code and take the engine's process group with it.
    container = f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_guards import start_fake
from gpt_oss_modal.server import guards
engine = start_fake("freeze")
guards.Watchdog(engine, interval=0.2, timeout=2.0, failures=3).start()
print(engine.pgid, flush=True)
time.sleep(600)
"""
    proc = subprocess.Popen(
        [sys.executable, "-c", container], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        pgid = int(proc.stdout.readline())
        os.killpg(pgid, signal.SIGUSR1)
        assert proc.wait(BOUND) == guards.WATCHDOG_EXIT_CODE
        stderr = proc.stderr.read()
        assert "watchdog: vLLM did not answer /health 3 times in a row" in stderr, stderr
        assert "vLLM stopped" in stderr
        deadline = time.monotonic() + BOUND
        while lifecycle.group_processes(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lifecycle.group_processes(pgid) == []
    finally:
        proc.kill()
        proc.wait()
