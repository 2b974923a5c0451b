"""`gpt-oss-modal serve --local` itself, as a user runs it: a second, separate server.

The command comes up with the context asked for, prints the base URL and a curl line, answers a plain HTTP
POST (what the printed curl line does), guards every route with --api-key, and on SIGINT (Ctrl-C) stops the
engine and exits 0, leaving no process behind.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time

import httpx
import psutil
import pytest

from gpt_oss_modal.local import server as lo
from gpt_oss_modal.local import tiny
from gpt_oss_modal.server import lifecycle

pytestmark = pytest.mark.e2e


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid`, whatever its process group."""
    return {p.pid for p in psutil.Process(pid).children(recursive=True) if _alive(p.pid)}


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False


def _eventually(condition, within: float = 120.0) -> bool:
    """Poll `condition` until it holds or `within` seconds pass (a bound on a hang, not on speed)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _pump(stream, lines: queue.Queue, sink: list[str]) -> None:
    for line in iter(stream.readline, ""):
        sink.append(line)
        lines.put(line.rstrip("\n"))
    lines.put(None)


def test_serve_local_comes_up_answers_and_stops_cleanly_on_sigint(cli, startup_timeout: float) -> None:
    port = lo.free_port()
    key = "e2e-secret-key"
    t0 = time.monotonic()
    # --max-model-len: the user's context wins over the tiny checkpoint's own 4096.
    proc = cli.popen(
        "serve", "--local", "--port", str(port), "--api-key", key, "--max-model-len", "2048",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,  # its own session: SIGINT reaches it only, as Ctrl-C
    )  # fmt: skip
    out_lines: queue.Queue = queue.Queue()
    stdout: list[str] = []
    stderr: list[str] = []
    threading.Thread(target=_pump, args=(proc.stdout, out_lines, stdout), daemon=True).start()
    threading.Thread(target=_pump, args=(proc.stderr, queue.Queue(), stderr), daemon=True).start()
    engine: set[int] = set()
    try:
        base_url = None
        deadline = t0 + startup_timeout
        while base_url is None:
            try:
                line = out_lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no base URL within {startup_timeout:.0f} s; stderr:\n{''.join(stderr)[-3000:]}")
            if line is None:
                proc.wait(10)
                pytest.fail(
                    f"serve exited with {proc.returncode} before it was ready:\n{''.join(stderr)[-3000:]}"
                )
            if line.strip().startswith("http://"):
                base_url = line.strip()
        ready_s = time.monotonic() - t0
        print(f"\n`gpt-oss-modal serve --local` ready in {ready_s:.1f} s")
        assert base_url == f"http://127.0.0.1:{port}/v1"
        curl = f"curl -s {base_url}/chat/completions"
        # the curl line follows the URL
        assert _eventually(lambda: curl in "".join(stdout) and "Authorization: Bearer" in "".join(stdout))
        printed = "".join(stdout)
        assert key not in printed and key not in "".join(stderr)  # the key is never echoed

        engine = _descendants(proc.pid)
        assert engine, "the engine runs below the command"
        engine_pgid = os.getpgid(min(engine))  # the engine leader: the command's child, its own group
        assert engine_pgid != os.getpgid(proc.pid)

        # What the printed curl line does.
        body = {"model": "llm", "messages": [{"role": "user", "content": "Hello!"}]}
        auth = {"Authorization": f"Bearer {key}"}
        r = httpx.post(f"{base_url}/chat/completions", json=body, headers=auth, timeout=300)
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["choices"][0]["message"]["content"] == tiny.FINAL_TEXT
        assert data["choices"][0]["finish_reason"] == "stop"
        models = httpx.get(f"{base_url}/models", headers=auth, timeout=30).json()["data"]
        assert [m["max_model_len"] for m in models] == [2048]
        # --api-key guards the API and the rest (here /health) alike
        assert httpx.post(f"{base_url}/chat/completions", json=body, timeout=120).status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=120).status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/health", headers=auth, timeout=120).status_code == 200

        # Ctrl-C: the command stops the engine group and exits 0.
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(300) == 0, "".join(stderr)[-3000:]
        assert _eventually(lambda: "stopped" in "".join(stderr)), "".join(stderr)[-3000:]
        _eventually(lambda: not any(_alive(p) for p in engine))
        assert not [p for p in engine if _alive(p)], "engine processes survived Ctrl-C"
        assert lifecycle.group_processes(engine_pgid) == []
        assert not lo.port_in_use(port)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for pid in engine:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
