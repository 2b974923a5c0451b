"""The Modal commands as a user runs them (the `cli` fixture), on a machine with no Modal token: they must
say so in one line and exit non-zero, and a config that cannot run must be refused before Modal is contacted."""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpt_oss_modal.core.config import CONFIG_JSON_ENV, DeployConfig
from gpt_oss_modal.deploy import modal_ops
from gpt_oss_modal.install import install_hint

# A Modal server address where nothing listens: a command that contacted Modal would fail differently.
NOWHERE = "http://127.0.0.1:9"


MODAL_COMMANDS = [
    ["deploy"],
    ["run"],
    ["stop"],
    ["logs"],
    ["url"],
    ["download"],
    ["doctor", "--remote"],
    ["volumes", "list"],
    ["volumes", "clear", "vllm-cache", "--yes"],
    ["chat", "hello"],
]


@pytest.mark.parametrize("args", MODAL_COMMANDS, ids=" ".join)
def test_without_a_token_one_line_and_exit_2(args: list[str], cli) -> None:
    r = cli(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "not authenticated" in lines[0] and "modal setup" in lines[0] and "MODAL_TOKEN_ID" in lines[0]
    assert r.stdout == ""


@pytest.mark.parametrize("args", [["stop"], ["deploy"], ["volumes", "list"], ["chat", "hi"]], ids=" ".join)
def test_without_the_modal_package_one_line_and_exit_2(args: list[str], tmp_path: Path, cli) -> None:
    # An interpreter where `import modal` fails, as without the [modal] extra.
    shadow = tmp_path / "no-modal" / "modal"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'modal'\", name='modal')\n"
    )
    r = cli(*args, env={"PYTHONPATH": str(shadow.parent)})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == [f"error: the Modal SDK is not installed: {install_hint('modal')}"]


FAKE_TOKEN = {
    "MODAL_TOKEN_ID": "ak-not-a-real-token",
    "MODAL_TOKEN_SECRET": "as-nope",
    "MODAL_SERVER_URL": NOWHERE,
}


@pytest.mark.parametrize("command", ["deploy", "run"])
def test_a_model_that_does_not_fit_is_refused_before_modal(command: str, cli) -> None:
    r = cli(command, "--model", "120b", "--gpu", "A10G", env=FAKE_TOKEN)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "does not fit on A10G" in lines[0] and "A100-80GB" in lines[0]


def test_the_tiny_model_is_refused_for_modal(cli) -> None:
    r = cli("deploy", "--model", "tiny", env=FAKE_TOKEN)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: model: `tiny` runs on the local CPU engine only (gpt-oss-modal serve --local); deploy "
        "openai/gpt-oss-20b or openai/gpt-oss-120b to Modal"
    ]


def test_run_needs_a_proxy_auth_token_before_building_anything(cli) -> None:
    r = cli("run", env=FAKE_TOKEN)
    assert r.returncode == 2
    assert "MODAL_KEY" in r.stderr and "proxy-auth-tokens" in r.stderr
    assert "20b on A10G" in r.stderr  # the plan was printed first (the defaults: the original's)


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


def test_deploy_public_prints_the_plan_and_warns_once_before_calling_modal(cli, hangs_up: str) -> None:
    # It goes on to `modal deploy`, which imports the app (where a second warning must not come) and then
    # fails to talk to Modal: the whole output, to the end, has the plan and exactly one warning.
    r = cli("deploy", "--public", env={**FAKE_TOKEN, "MODAL_SERVER_URL": hangs_up}, timeout=300)
    assert r.returncode != 0
    assert "openai/gpt-oss-20b on A10G: 32,768-token context, up to 50 requests per container" in r.stderr
    # The plan line prices the floor and the ceiling of the scaling settings: whole containers, GPU, cores
    # and memory.
    from gpt_oss_modal.core import resources

    running = resources.container_resources(DeployConfig()).usd_per_hour
    assert f"${running:.2f}/hour while a container runs (4 cores, 8 GiB and the GPU)" in r.stderr
    assert (
        f"always on $0.00/day (min_containers 0), at most ${2 * running:,.2f}/hour (max_containers 2)"
        in r.stderr
    )
    assert r.stderr.count("anyone with the URL can call it") == 1, r.stderr


def test_deploy_refuses_incoherent_scaling_before_modal(cli) -> None:
    for args, says in [
        (
            ["--min-containers", "3", "--max-containers", "2"],
            "min_containers: 3 is more than max_containers 2",
        ),
        (["--target-inputs", "64", "--max-inputs", "32"], "target_inputs: 64 is more than max_inputs 32"),
    ]:
        r = cli("deploy", *args, env=FAKE_TOKEN)
        assert r.returncode == 2
        (line,) = r.stderr.strip().splitlines()
        assert says in line


def test_volumes_clear_refuses_other_names(cli) -> None:
    r = cli("volumes", "clear", "my-data", "--yes")
    assert r.returncode == 2
    assert "is not a cache volume" in r.stderr


def test_chat_with_a_bad_effort_or_an_unreachable_server(cli) -> None:
    r = cli("chat", "hi", "--base-url", "http://127.0.0.1:9", "--reasoning-effort", "max")
    assert r.returncode == 2 and "low, medium or high" in r.stderr
    r = cli("chat", "hi", "--base-url", "http://127.0.0.1:9")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("error: cannot reach http://127.0.0.1:9/v1")


# --- the command lines the CLI hands to Modal -------------------------------------------------------------


def test_modal_argv() -> None:
    py = [sys.executable, "-m", "modal"]
    assert modal_ops.deploy_argv() == [*py, "deploy", "-m", "gpt_oss_modal.modal_app"]
    assert modal_ops.run_argv() == [*py, "run", "-m", "gpt_oss_modal.modal_app::main"]
    assert modal_ops.function_argv("download_weights") == [
        *py, "run", "-m", "gpt_oss_modal.modal_app::download_weights",
    ]  # fmt: skip
    assert modal_ops.stop_argv("x") == [*py, "app", "stop", "x"]
    assert modal_ops.stop_argv("x", yes=True) == [*py, "app", "stop", "x", "--yes"]
    assert modal_ops.logs_argv("x", follow=True) == [*py, "app", "logs", "x", "--follow"]
    assert modal_ops.logs_argv("x", tail=50, since="2h") == [
        *py, "app", "logs", "x", "--tail", "50", "--since", "2h",
    ]  # fmt: skip
    assert modal_ops.logs_argv("x", tail=modal_ops.LOGS_TAIL_MAX)[-2:] == ["--tail", "20000"]


@pytest.mark.parametrize("tail", [0, -3, modal_ops.LOGS_TAIL_MAX + 1])
def test_logs_tail_outside_what_modal_fetches_is_refused(tail: int) -> None:
    # Modal 1.6.4 refuses --tail above 20,000 (modal/cli/_logs.py), but only after its own start-up.
    with pytest.raises(ValueError, match=f"--tail {tail}: give a number of entries from 1 to 20,000"):
        modal_ops.logs_argv("x", tail=tail)


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        ({"tail": 5}, "--tail"),
        ({"since": "2h"}, "--since"),
        ({"tail": 1, "since": "1h"}, "--tail and --since"),
    ],
)
def test_logs_never_hands_modal_follow_with_a_range(flags: dict, named: str) -> None:
    # Modal 1.6.4 answers `--follow` with `--tail/--since/--until` by "cannot be combined" (modal/cli/_logs.py).
    with pytest.raises(ValueError, match=f"cannot be combined with {named}; drop --follow"):
        modal_ops.logs_argv("x", follow=True, **flags)


@pytest.mark.parametrize(
    "args",
    [
        ["logs", "-f", "-n", "5"],
        ["logs", "--follow", "--since", "2h"],
        ["logs", "-n", "0"],
        ["logs", "-n", "20001"],
    ],
)
def test_logs_follow_with_a_range_is_refused_in_one_line_before_modal(args: list[str], cli) -> None:
    r = cli(*args, env=FAKE_TOKEN)  # a token, so only our own check can end it with exit 2
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --"), r.stderr
    assert "cannot be combined" not in lines[0] or "drop --follow" in lines[0]  # ours, not Modal's


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


def test_one_off_runs_keep_no_container_warm() -> None:
    cfg = DeployConfig(min_containers=2, buffer_containers=1, max_containers=3)
    shipped = DeployConfig.model_validate_json(modal_ops.side_env(cfg, {})[CONFIG_JSON_ENV])
    assert (shipped.min_containers, shipped.buffer_containers) == (0, 0)
    assert shipped.model_copy(update={"min_containers": 2, "buffer_containers": 1}) == cfg


@pytest.mark.parametrize(
    ("app_name", "label"),
    [
        ("gpt-oss-vllm-inference", "gpt-oss-vllm-inference-serve"),
        ("my-llm", "my-llm-serve"),
        ("A_b.c", "a-b-c-serve"),
    ],
)
def test_the_endpoint_label_is_the_app_name_and_serve(app_name: str, label: str) -> None:
    assert modal_ops.endpoint_label(app_name) == label


def test_help_lists_the_modal_commands(cli) -> None:
    r = cli("--help")
    for name in ("deploy", "run", "download", "stop", "logs", "url", "volumes", "chat"):
        assert name in r.stdout
