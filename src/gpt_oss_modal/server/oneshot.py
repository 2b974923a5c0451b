"""A one-shot step in a Python process of its own, with the engine's environment: started, then collected
with a time limit. Its failure is logged, never raised: each step only fills a cache ahead of time, and
what it leaves undone the engine does itself."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence

Log = Callable[[str], None]


def launch(argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[str]:
    """Start argv in a session of its own (on a timeout its children go with it), output merged."""
    return subprocess.Popen(
        list(argv),
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def collect(
    proc: subprocess.Popen[str], timeout: float, log: Log, what: str, otherwise: str
) -> list[str] | None:
    """The step's non-empty output lines once it exits 0; None when it failed or ran past `timeout` (then
    killed), each logged in one line that ends with `otherwise`: what happens instead."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        log(f"{what}: stopped after {timeout:.0f} s; {otherwise}")
        return None
    lines = [ln for ln in out.splitlines() if ln.strip()]
    if proc.returncode:
        log(f"{what} failed (exit code {proc.returncode}): {' | '.join(lines[-3:])[-400:]}; {otherwise}")
        return None
    return lines
