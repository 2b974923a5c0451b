"""Faults, with real processes: the real vLLM CPU engine failing to start (bad flags, a directory that is
no model, a missing tokenizer or vocabulary), a start-up timeout, the parent dying mid-start, a taken port,
the vocabulary package missing. Each must end with a clear message and a non-zero exit, and leave no process
behind: the engine's process group is gone (`os.killpg(pgid, 0)` raises ProcessLookupError).

The engine tests start vLLM for real on the embedded tiny checkpoint; most of each one is importing vLLM.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpt_oss_modal.core.config import DeployConfig
from gpt_oss_modal.local import server as lo
from gpt_oss_modal.server import lifecycle

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="the vLLM CPU build (the `local` extra) is not installed",
    ),
]

# A bound on a hang, not a speed claim: importing vLLM alone takes ~20 s on two idle cores, several
# times that with the cores busy. No test here asserts how long anything took.
ENGINE_START_BUDGET = 900
GROUP_EXIT_BUDGET = 120  # stop(): SIGTERM, its grace, SIGKILL; then the kernel reaps the group


def assert_group_gone(pgid: int, within: float = GROUP_EXIT_BUDGET) -> None:
    """The whole process group is gone: os.killpg(pgid, 0) raises ProcessLookupError."""
    deadline = time.monotonic() + within
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            left = lifecycle.group_processes(pgid)
            raise AssertionError(f"process group {pgid} still exists after {within} s (live: {left})")
        time.sleep(0.2)


def server(
    tmp_path: Path, checkpoint: Path, *, extra_env: dict | None = None, **cfg: object
) -> lo.LocalServer:
    return lo.LocalServer(
        DeployConfig(model="tiny", port=lo.free_port(), **cfg),  # type: ignore[arg-type]
        target="local-cpu",
        checkpoint=lo.Checkpoint(path=checkpoint, env={}),
        log_path=tmp_path / "engine.log",
        extra_env=extra_env,
    )


def start_and_fail(s: lo.LocalServer, timeout: float = ENGINE_START_BUDGET) -> lo.LocalServerError:
    s.start()
    pgid = s.pgid
    assert pgid is not None
    try:
        with pytest.raises(lo.LocalServerError) as info:
            s.wait_ready(timeout)
    finally:
        s.stop()
    assert not s.running
    assert_group_gone(pgid)
    return info.value


# --- the real engine fails to start ---------------------------------------------------------------------


def test_bad_extra_vllm_args_crash_the_real_engine_cleanly(tmp_path: Path) -> None:
    s = server(tmp_path, tmp_path, extra_vllm_args=["--no-such-flag"])
    err = start_and_fail(s)
    assert "the engine exited with code 2 during start-up" in err.message
    assert any("unrecognized arguments: --no-such-flag" in line for line in err.last_lines)
    assert str(s.log_path) in err.details()


def test_a_directory_that_is_no_model_crashes_the_real_engine_cleanly(tmp_path: Path) -> None:
    empty = tmp_path / "no-model"
    empty.mkdir()
    err = start_and_fail(server(tmp_path, empty))
    assert "exited with code 1 during start-up" in err.message
    assert f"Invalid repository ID or local directory specified: '{empty}'" in err.details()


def test_start_up_timeout_stops_the_real_engine_and_its_group(tmp_path: Path) -> None:
    # vLLM is still importing after 3 s: the wait gives up, says so, and ends the group (start_and_fail
    # checks that the group is gone).
    err = start_and_fail(server(tmp_path, tmp_path), timeout=3)
    assert err.message == "the engine did not answer /health within 3 s; stopped it"


def test_parent_killed_mid_start_leaves_no_engine_behind(tmp_path: Path) -> None:
    # The engine dies with whatever started it (PR_SET_PDEATHSIG), even when that is SIGKILLed.
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, time\n"
        "from pathlib import Path\n"
        "from gpt_oss_modal.local import server as lo\n"
        "from gpt_oss_modal.core.config import DeployConfig\n"
        "s = lo.LocalServer(DeployConfig(model='tiny', port=lo.free_port()), target='local-cpu',\n"
        f"    checkpoint=lo.Checkpoint(path=Path({str(tmp_path)!r}), env={{}}),\n"
        f"    log_path=Path({str(tmp_path / 'engine.log')!r}))\n"
        "s.start()\n"
        "print(s.pgid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pgid = int(parent.stdout.readline())  # type: ignore[union-attr]
        time.sleep(3)  # vLLM is importing
        os.killpg(pgid, 0)  # the engine runs ...
        parent.kill()  # ... and its parent dies without a chance to stop it
        parent.wait(10)
        assert_group_gone(pgid)
    finally:
        parent.kill()
        parent.wait(10)


# --- a taken port -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bind_host", ["127.0.0.1", "0.0.0.0"])
def test_port_taken_is_refused_before_any_process_starts(tmp_path: Path, bind_host: str) -> None:
    with socket.socket() as taken:
        taken.bind((bind_host, 0))
        taken.listen()
        port = taken.getsockname()[1]
        s = lo.LocalServer(
            DeployConfig(model="tiny", port=port), target="local-cpu", log_path=tmp_path / "x.log"
        )
        with pytest.raises(lo.LocalServerError, match=f"port {port} on 127.0.0.1 is already in use"):
            s.start()
        assert s.proc is None and s.pgid is None


def run_cli(cli, *args: str, env: dict | None = None, timeout: float = 600) -> tuple[int, str, str]:
    """`gpt-oss-modal ...` through the `cli` fixture, in its own session, so its group can be checked after."""
    proc = cli.popen(*args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert_group_gone(proc.pid)
    return proc.returncode, out, err


def test_cli_serve_on_a_taken_port_exits_1_with_the_reason(cli) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _out, err = run_cli(cli, "serve", "--local", "--model", "tiny", "--port", str(port))
    assert code == 1
    assert f"port {port} on 127.0.0.1 is already in use" in err and "--port" in err


# --- the tiny checkpoint, broken ------------------------------------------------------------------------


def broken_checkpoint(tmp_path: Path, drop: tuple[str, ...]) -> Path:
    """A copy of the tiny checkpoint without the files named in `drop`."""
    good = lo.tiny_checkpoint(scripted=True).path
    copy = tmp_path / "ckpt"
    shutil.copytree(good, copy, ignore=shutil.ignore_patterns(*drop))
    return copy


def test_missing_tokenizer_crashes_the_real_engine_cleanly(tmp_path: Path) -> None:
    ckpt = broken_checkpoint(tmp_path, ("tokenizer*", "special_tokens_map.json", "chat_template*"))
    s = server(tmp_path, ckpt)
    s._checkpoint = lo.Checkpoint(path=ckpt, env=lo.tiny_checkpoint(scripted=True).env)
    err = start_and_fail(s)
    assert "during start-up" in err.message
    assert "tokenizer" in err.details().lower()


def test_missing_vocabulary_crashes_the_real_engine_cleanly(tmp_path: Path) -> None:
    # openai-harmony reads o200k_base.tiktoken from TIKTOKEN_ENCODINGS_BASE: point it at an empty directory.
    empty = tmp_path / "no-vocab"
    empty.mkdir()
    good = lo.tiny_checkpoint(scripted=True)
    s = server(tmp_path, good.path)
    s._checkpoint = lo.Checkpoint(
        path=good.path, env={"TIKTOKEN_ENCODINGS_BASE": str(empty), "TIKTOKEN_RS_CACHE_DIR": str(empty)}
    )
    s.start()
    pgid = s.pgid
    try:
        try:
            s.wait_ready(ENGINE_START_BUDGET)
        except lo.LocalServerError as e:
            assert "during start-up" in e.message  # refused to start: fine, as long as it says why
            assert "tiktoken" in e.details().lower() or "o200k" in e.details().lower()
        else:
            # Started anyway (the vocabulary is only read on the first chat request): that request must fail
            # with a clean 5xx/4xx JSON error, not hang, and the server must stay up.
            import httpx

            r = httpx.post(
                s.base_url + "/chat/completions",
                json={"model": "llm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
                timeout=300,
            )
            assert r.status_code >= 400 and "error" in r.json()
            assert s.running
    finally:
        s.stop()
    assert_group_gone(pgid)  # type: ignore[arg-type]


def test_cli_serve_with_an_engine_that_cannot_start_exits_1_and_leaves_nothing(cli) -> None:
    code, _out, err = run_cli(
        cli, "serve", "--local", "--model", "tiny", "--port", str(lo.free_port()),
        env={"GPT_OSS_EXTRA_VLLM_ARGS": "--no-such-flag"},
    )  # fmt: skip
    assert code == 1
    assert "exited with code 2 during start-up" in err and "unrecognized arguments: --no-such-flag" in err
    assert "full log:" in err


def test_cli_serve_without_the_vocabulary_package_says_how_to_install_it(tmp_path: Path, cli) -> None:
    # bpe-openai (the o200k vocabulary) shadowed by an empty package, and an empty cache: no traceback, the
    # fix in one message, exit 1, no engine started.
    shadow = tmp_path / "shadow" / "bpe_openai"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    code, _out, err = run_cli(
        cli, "serve", "--local", "--model", "tiny", "--port", str(lo.free_port()),
        env={"PYTHONPATH": str(shadow.parent), "GPT_OSS_CACHE_DIR": str(tmp_path / "empty-cache")},
        timeout=300,
    )  # fmt: skip
    assert code == 1, err
    assert "Traceback" not in err
    assert "o200k vocabulary" in err and "pip install -e '.[local]'" in err
