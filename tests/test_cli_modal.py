"""The Modal commands as a user runs them, on a machine with no Modal token: they must say so in one line
and exit non-zero quickly, and a config that cannot run must be refused before Modal is contacted."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpt_oss_modal import modal_ops
from gpt_oss_modal.config import CONFIG_JSON_ENV, DeployConfig

EXE = shutil.which("gpt-oss-modal") or ""
# A Modal server address where nothing listens: a command that contacted Modal would fail differently.
NOWHERE = "http://127.0.0.1:9"


def run(
    *args: str, home: Path, env: dict | None = None, timeout: float = 300
) -> tuple[subprocess.CompletedProcess, float]:
    """The command's result and how long it took (for a failure message only: no test asserts on speed;
    `timeout` only ends a hang, generously for a busy machine)."""
    cmd = [EXE, *args] if EXE else [sys.executable, "-m", "gpt_oss_modal.cli", *args]
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GPT_OSS_", "MODAL_", "OPENAI_")) and k != "FAST_BOOT"
    }
    base["HOME"] = str(home)  # no ~/.modal.toml
    start = time.monotonic()
    r = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        cwd=home,
        env={**base, **(env or {})},
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return r, time.monotonic() - start


MODAL_COMMANDS = [
    ["deploy"],
    ["run"],
    ["stop"],
    ["logs"],
    ["url"],
    ["volumes", "list"],
    ["volumes", "clear", "vllm-cache", "--yes"],
    ["chat", "hello"],
]


@pytest.mark.parametrize("args", MODAL_COMMANDS, ids=" ".join)
def test_without_a_token_one_line_and_exit_2(args: list[str], tmp_path: Path) -> None:
    r, _ = run(*args, home=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "not authenticated" in lines[0] and "modal setup" in lines[0] and "MODAL_TOKEN_ID" in lines[0]
    assert r.stdout == ""


@pytest.mark.parametrize("args", [["stop"], ["deploy"], ["volumes", "list"], ["chat", "hi"]], ids=" ".join)
def test_without_the_modal_package_one_line_and_exit_2(args: list[str], tmp_path: Path) -> None:
    # An interpreter where `import modal` fails, as without the [modal] extra.
    shadow = tmp_path / "no-modal" / "modal"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'modal'\", name='modal')\n"
    )
    r, _ = run(*args, home=tmp_path, env={"PYTHONPATH": str(shadow.parent)})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == ["error: the Modal SDK is not installed: pip install 'gpt-oss-modal[modal]'"]


FAKE_TOKEN = {
    "MODAL_TOKEN_ID": "ak-not-a-real-token",
    "MODAL_TOKEN_SECRET": "as-nope",
    "MODAL_SERVER_URL": NOWHERE,
}


@pytest.mark.parametrize("command", ["deploy", "run"])
def test_a_model_that_does_not_fit_is_refused_before_modal(command: str, tmp_path: Path) -> None:
    r, _ = run(command, "--model", "120b", "--gpu", "A10G", home=tmp_path, env=FAKE_TOKEN)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "does not fit on A10G" in lines[0] and "A100-80GB" in lines[0]


def test_the_tiny_model_is_refused_for_modal(tmp_path: Path) -> None:
    r, _ = run("deploy", "--model", "tiny", home=tmp_path, env=FAKE_TOKEN)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: model: `tiny` runs on the local CPU engine only (gpt-oss-modal serve --local); deploy "
        "openai/gpt-oss-20b or openai/gpt-oss-120b to Modal"
    ]


def test_run_needs_a_proxy_auth_token_before_building_anything(tmp_path: Path) -> None:
    r, _ = run("run", home=tmp_path, env=FAKE_TOKEN)
    assert r.returncode == 2
    assert "MODAL_KEY" in r.stderr and "proxy-auth-tokens" in r.stderr
    assert "20b on H100" in r.stderr  # the plan was printed first


@pytest.fixture
def hangs_up() -> Iterator[str]:
    """A Modal server address on 127.0.0.1 that accepts each connection and closes it at once: a command
    that reaches Modal ends by itself ("Connection lost"), after everything it prints before calling out."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        server.close()
        thread.join(10)


def test_deploy_public_prints_the_plan_and_warns_once_before_calling_modal(
    tmp_path: Path, hangs_up: str
) -> None:
    # It goes on to `modal deploy`, which imports the app (where a second warning must not come) and then
    # fails to talk to Modal: the whole output, to the end, has the plan and exactly one warning.
    r, _ = run("deploy", "--public", home=tmp_path, env={**FAKE_TOKEN, "MODAL_SERVER_URL": hangs_up})
    assert r.returncode != 0
    assert "openai/gpt-oss-20b on H100" in r.stderr
    assert r.stderr.count("anyone with the URL can call it") == 1, r.stderr


def test_volumes_clear_refuses_other_names(tmp_path: Path) -> None:
    r, _ = run("volumes", "clear", "my-data", "--yes", home=tmp_path)
    assert r.returncode == 2
    assert "is not a cache volume" in r.stderr


def test_chat_with_a_bad_effort_or_an_unreachable_server(tmp_path: Path) -> None:
    r, _ = run("chat", "hi", "--base-url", "http://127.0.0.1:9", "--reasoning-effort", "max", home=tmp_path)
    assert r.returncode == 2 and "low, medium or high" in r.stderr
    r, _ = run("chat", "hi", "--base-url", "http://127.0.0.1:9", home=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("error: cannot reach http://127.0.0.1:9/v1")


# --- the command lines the CLI hands to Modal -------------------------------------------------------------


def test_modal_argv() -> None:
    py = [sys.executable, "-m", "modal"]
    assert modal_ops.deploy_argv() == [*py, "deploy", "-m", "gpt_oss_modal.modal_app"]
    assert modal_ops.run_argv() == [*py, "run", "-m", "gpt_oss_modal.modal_app::main"]
    assert modal_ops.stop_argv("x") == [*py, "app", "stop", "x"]
    assert modal_ops.stop_argv("x", yes=True) == [*py, "app", "stop", "x", "--yes"]
    assert modal_ops.logs_argv("x", follow=True, tail=50, since="2h") == [
        *py, "app", "logs", "x", "--follow", "--tail", "50", "--since", "2h",
    ]  # fmt: skip


def test_app_env_ships_the_resolved_config() -> None:
    cfg = DeployConfig(model="120b", gpu="H100:2", boot="fast", api_key="local-only")
    env = modal_ops.app_env(cfg, {"PATH": "/bin"})
    assert env["PATH"] == "/bin"
    shipped = json.loads(env[CONFIG_JSON_ENV])
    assert (
        shipped["model"] == "openai/gpt-oss-120b" and shipped["gpu"] == "H100:2" and shipped["boot"] == "fast"
    )
    assert "api_key" not in shipped  # secrets never travel in the config


def test_modal_problem_reads_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_OAUTH_REFRESH_TOKEN", "MODAL_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    import modal.config as mc

    monkeypatch.setattr(mc, "_user_config", {})  # as with no ~/.modal.toml
    assert "not authenticated" in (modal_ops.modal_problem() or "")
    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-1")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-2")
    assert modal_ops.modal_problem() is None


def test_proxy_credentials_and_sizes() -> None:
    assert modal_ops.proxy_credentials({"MODAL_KEY": "wk-1", "MODAL_SECRET": "ws-2"}) == ("wk-1", "ws-2")
    assert modal_ops.proxy_credentials({"MODAL_KEY": ""}) == (None, None)
    assert modal_ops.human_bytes(512) == "512 B"
    assert modal_ops.human_bytes(13 * 1024**3 + 10) == "13.0 GiB"


def test_help_lists_the_modal_commands(tmp_path: Path) -> None:
    r, _ = run("--help", home=tmp_path)
    for name in ("deploy", "run", "stop", "logs", "url", "volumes", "chat"):
        assert name in r.stdout
