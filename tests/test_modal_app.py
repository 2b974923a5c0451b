"""The Modal app as Modal sees it: import it with a config and read the real Modal objects it built.

Where Modal 1.6 keeps each setting of a function defined with @app.function/@modal.concurrent/
@modal.web_server (modal 1.6.4 is pinned by the `modal` extra):
- `serve.info()` (a modal.types.FunctionInfo): gpus, timeout, startup_timeout, concurrency (max_inputs),
  volumes (name per mount path), secrets (reprs), regions, web_info.unauthenticated;
- the undecorated `_Function`: `_spec` (the GPU string, the Secret objects) and `_webhook_config` (the
  web server's port, startup timeout and proxy auth, as sent to Modal);
- the scale-down window only in the AutoscalerSettings proto that the function's loader sends to Modal.

Then the container's side: a fresh interpreter with nothing but GPT_OSS_CONFIG_JSON runs `serve()`, which
starts a stand-in `vllm` that records its argv and environment. And `modal deploy` / `modal run` of the
seed's entry point, with no Modal token anywhere, get through the import and stop at authentication.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

modal = pytest.importorskip("modal")

from modal._utils.async_utils import synchronizer  # noqa: E402

from gpt_oss_modal import engine, modal_ops  # noqa: E402
from gpt_oss_modal.config import CONFIG_JSON_ENV, ConfigError, DeployConfig, load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED_ENTRY = ROOT / "modal" / "gpt_oss_inference.py"
PACKAGE_PARENT = ROOT / "src"


def clean_env() -> dict[str, str]:
    """This process's environment without config or Modal credentials (and no ~/.modal.toml: see HOME)."""
    drop = ("GPT_OSS_", "MODAL_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop) and k != "FAST_BOOT"}


@pytest.fixture
def load_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Import gpt_oss_modal.modal_app afresh with GPT_OSS_* settings, as `modal deploy` would."""
    monkeypatch.chdir(tmp_path)  # no gpt-oss-modal.toml from the checkout
    for name in list(os.environ):
        if name.startswith("GPT_OSS_") or name == "FAST_BOOT":
            monkeypatch.delenv(name)

    def load(**settings: str) -> Any:
        for key, value in settings.items():
            monkeypatch.setenv(f"GPT_OSS_{key.upper()}", value)
        sys.modules.pop("gpt_oss_modal.modal_app", None)
        return importlib.import_module("gpt_oss_modal.modal_app")

    yield load
    sys.modules.pop("gpt_oss_modal.modal_app", None)


def raw(function: Any) -> Any:
    """The SDK's internal _Function behind the public, synchronised handle."""
    return synchronizer._translate_in(function)


def loader_settings(function: Any) -> dict[str, Any]:
    """What the function's loader sends to Modal at deploy time (its closure: no network needed)."""
    load = raw(function)._load
    return {name: cell.cell_contents for name, cell in zip(load.__code__.co_freevars, load.__closure__)}


def check_function(mod: Any, cfg: DeployConfig) -> None:
    """Every setting of the deployed function equals what the config says."""
    info = mod.serve.info()
    fn = raw(mod.serve)
    name, _, count = cfg.gpu.partition(":")
    assert info.gpus == [(name, int(count or 1))]
    assert fn._spec.gpus == cfg.gpu  # the Modal GPU string, e.g. "H100:2"
    assert info.timeout == cfg.timeout
    assert info.startup_timeout == cfg.effective_startup_timeout()
    assert info.concurrency_info.max_inputs == cfg.max_inputs
    assert loader_settings(mod.serve)["autoscaler_settings"].scaledown_window == cfg.scaledown_window
    assert {path: v.name for path, v in info.volumes.items()} == {
        engine.HF_CACHE_DIR: "huggingface-cache",
        engine.VLLM_CACHE_DIR: "vllm-cache",
    }
    assert info.regions == ([cfg.region] if cfg.region else None)
    web = fn._webhook_config
    assert web.type == modal._partial_function.api_pb2.WEBHOOK_TYPE_WEB_SERVER
    assert web.web_server_port == cfg.port
    assert web.web_server_startup_timeout == cfg.effective_startup_timeout()
    assert web.requires_proxy_auth == cfg.requires_proxy_auth
    assert info.web_info.unauthenticated == (not cfg.requires_proxy_auth)
    # The config travels as a Secret holding exactly the resolved JSON (no api_key in it).
    shipped = fn._spec.secrets[0]._load_env_dict()
    assert set(shipped) == {CONFIG_JSON_ENV}
    assert DeployConfig.model_validate_json(shipped[CONFIG_JSON_ENV]) == cfg.model_copy(
        update={"api_key": None}
    )
    assert mod.app.name == cfg.app_name
    # What the container will run is the command builder's output for this config, nothing else.
    assert mod.command == engine.build_command(cfg, target="modal")


def test_20b_on_h100_defaults(load_app) -> None:
    mod = load_app(model="20b", gpu="H100")
    cfg = DeployConfig(model="20b", gpu="H100")
    assert mod.cfg == cfg
    check_function(mod, cfg)
    assert mod.app.name == "gpt-oss-vllm-inference"
    assert mod.serve.info().secrets == ["Secret.from_dict([GPT_OSS_CONFIG_JSON])"]
    assert raw(mod.serve)._webhook_config.requires_proxy_auth is True
    argv = mod.command.argv
    assert argv[argv.index("--served-model-name") + 1] == "llm"
    assert argv[argv.index("--host") + 1] == "0.0.0.0"


def test_120b_on_two_h100_fast_boot(load_app) -> None:
    mod = load_app(model="120b", gpu="H100:2", boot="fast")
    cfg = DeployConfig(model="120b", gpu="H100:2", boot="fast")
    check_function(mod, cfg)
    assert mod.serve.info().gpus == [("H100", 2)]
    argv = mod.command.argv
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2" and "--enforce-eager" in argv


def test_seed_fast_boot_variable_still_means_eager(load_app, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAST_BOOT", "1")
    mod = load_app()
    assert mod.cfg.boot == "fast" and "--enforce-eager" in mod.command.argv


def test_20b_on_l4_with_small_concurrency_and_short_scaledown(load_app) -> None:
    mod = load_app(model="20b", gpu="L4", max_inputs="8", scaledown_window="60")
    cfg = DeployConfig(model="20b", gpu="L4", max_inputs=8, scaledown_window=60)
    check_function(mod, cfg)
    assert mod.serve.info().concurrency_info.max_inputs == 8
    assert loader_settings(mod.serve)["autoscaler_settings"].scaledown_window == 60
    argv = mod.command.argv
    assert argv[argv.index("--max-num-seqs") + 1] == "8"


def test_public_endpoint_has_no_proxy_auth_and_warns(load_app, capsys: pytest.CaptureFixture[str]) -> None:
    mod = load_app(public="true")
    check_function(mod, DeployConfig(public=True))
    assert raw(mod.serve)._webhook_config.requires_proxy_auth is False
    assert mod.serve.info().web_info.unauthenticated is True
    assert "anyone with the URL can call it" in capsys.readouterr().err


def test_region_port_timeouts_and_app_name(load_app) -> None:
    settings = dict(region="us-east", port="9000", timeout="600", startup_timeout="900", app_name="my-llm")
    mod = load_app(**settings)
    cfg = DeployConfig(region="us-east", port=9000, timeout=600, startup_timeout=900, app_name="my-llm")
    check_function(mod, cfg)
    assert mod.serve.info().regions == ["us-east"]


def test_api_key_secret_is_attached_and_required(load_app) -> None:
    mod = load_app(api_key_secret="gpt-oss-key")
    info = mod.serve.info()
    assert info.secrets == [
        "Secret.from_dict([GPT_OSS_CONFIG_JSON])",
        "modal.Secret.from_name('gpt-oss-key')",
    ]
    assert raw(mod.serve)._webhook_config.requires_proxy_auth is True  # both layers, not either


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model": "tiny"}, "local CPU engine only"),
        ({"model": "120b", "gpu": "A10G"}, "smallest GPU that fits: A100-80GB"),
    ],
)
def test_refuses_configs_that_cannot_run_on_modal(load_app, settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_app(**settings)


def test_shipped_json_wins_over_local_settings(load_app, monkeypatch: pytest.MonkeyPatch) -> None:
    # In the container GPT_OSS_CONFIG_JSON is set (from the Secret) and nothing else is read.
    shipped = DeployConfig(model="120b", gpu="H200", max_inputs=16)
    monkeypatch.setenv(CONFIG_JSON_ENV, shipped.to_json())
    mod = load_app(model="20b", gpu="L4")
    assert mod.cfg == shipped
    check_function(mod, shipped)


def test_seed_entry_re_exports_the_app(load_app, monkeypatch: pytest.MonkeyPatch) -> None:
    load_app()  # clean environment
    spec = importlib.util.spec_from_file_location("gpt_oss_inference_seed", SEED_ENTRY)
    seed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seed)
    assert seed.app.name == "gpt-oss-vllm-inference"
    registered = raw(seed.app)._local_state  # what `modal deploy` will create
    assert set(registered.functions) == {"serve"}
    assert set(registered.local_entrypoints) == {"main"}
    assert registered.web_endpoints == ["serve"]
    # The container imports the module that defines `serve`, not this file; the image ships that package.
    assert raw(seed.serve)._source_info.module_name == "gpt_oss_modal.modal_app"
    assert "gpt_oss_modal" in raw(seed.serve)._spec.image._added_python_source_set


FAKE_VLLM = textwrap.dedent(
    """\
    #!{python}
    import json, os, sys
    keys = {keys!r}
    with open(os.environ["RECORD"] + ".part", "w") as f:
        json.dump({{"argv": sys.argv[1:], "env": {{k: os.environ.get(k) for k in keys}}}}, f)
    os.replace(os.environ["RECORD"] + ".part", os.environ["RECORD"])  # whole, or not there yet
    """
)


def test_container_serve_starts_exactly_the_built_command(tmp_path: Path) -> None:
    """A fresh interpreter with only GPT_OSS_CONFIG_JSON, as in the container, runs serve()."""
    cfg = load_config({"model": "120b", "gpu": "H100:2", "max_inputs": 24, "api_key_secret": "k"}).config
    expected = engine.build_command(cfg, target="modal")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "vllm"
    fake.write_text(
        FAKE_VLLM.format(python=sys.executable, keys=[*expected.env, "PYTHONPATH", "VLLM_API_KEY"])
    )
    fake.chmod(0o755)
    record = tmp_path / "record.json"
    env = {
        **clean_env(),
        CONFIG_JSON_ENV: cfg.to_json(),
        "GPT_OSS_MODEL": "20b",  # ignored: the shipped JSON wins
        "VLLM_API_KEY": "from-the-secret",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "RECORD": str(record),
        "HOME": str(tmp_path),
    }
    script = "import gpt_oss_modal.modal_app as m; m.serve.local()"  # the function body, run here
    subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, check=True, timeout=60)
    deadline = time.monotonic() + 300  # the engine runs on after serve() returns; a busy machine is slow
    while not record.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    seen = json.loads(record.read_text())
    assert ["vllm", *seen["argv"]] == expected.argv
    for key, value in expected.env.items():
        assert seen["env"][key] == value
    assert seen["env"]["VLLM_API_KEY"] == "from-the-secret"
    first = seen["env"]["PYTHONPATH"].split(os.pathsep)[0]
    # vLLM can import our modules by dotted path (the bearer-key middleware, gpt_oss_modal.auth).
    assert (Path(first) / "gpt_oss_modal" / "__init__.py").exists()


# --- the real `modal` CLI, with no token anywhere -----------------------------------------------------


def modal_cli(args: list[str], tmp_path: Path, **extra: str) -> subprocess.CompletedProcess:
    # HOME: no ~/.modal.toml. A (fake) proxy auth token, which `modal run` checks for at import
    # (tests/test_modal_precheck.py), so that it too goes on to Modal's own token check.
    env = {**clean_env(), "HOME": str(tmp_path), "MODAL_KEY": "wk-x", "MODAL_SECRET": "ws-x", **extra}
    return subprocess.run(
        [sys.executable, "-m", "modal", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "args",
    [
        ["deploy", "modal/gpt_oss_inference.py"],
        ["run", "modal/gpt_oss_inference.py"],
        modal_ops.deploy_argv()[3:],
        modal_ops.run_argv()[3:],
    ],
    ids=["deploy-file", "run-file", "deploy-module", "run-module"],
)
def test_modal_cli_gets_past_import_and_stops_at_auth(args: list[str], tmp_path: Path) -> None:
    r = modal_cli(args, tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "Token missing" in out, out
    assert "Traceback" not in out and "Error importing" not in out, out


def test_modal_cli_imports_the_app_before_authenticating(tmp_path: Path) -> None:
    # The same command with a config the app refuses fails with the app's message, not the auth error:
    # so in the test above the import really ran (and passed) before Modal asked for a token.
    r = modal_cli(["deploy", "modal/gpt_oss_inference.py"], tmp_path, GPT_OSS_MODEL="tiny")
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode != 0
    assert "local CPU engine only" in out and "Token missing" not in out


# --- snapshot = true: a class whose enter hooks start, warm and sleep the engine, then wake it ------------


def service_function(cls: Any) -> Any:
    """The class's service function (one per Modal class: it carries the container's settings)."""
    return raw(cls)._class_service_function


def lifecycle(cls: Any) -> dict[str, list[str]]:
    """The class's lifecycle hooks, by kind, as Modal will find them in the container."""
    from modal._partial_function import _find_partial_methods_for_user_cls, _PartialFunctionFlags

    user_cls = raw(cls)._user_cls
    flags = _PartialFunctionFlags
    kinds = {"snap": flags.ENTER_PRE_SNAPSHOT, "restore": flags.ENTER_POST_SNAPSHOT, "exit": flags.EXIT}
    return {kind: list(_find_partial_methods_for_user_cls(user_cls, flag)) for kind, flag in kinds.items()}


def check_snapshot_class(mod: Any, cfg: DeployConfig) -> None:
    """The class deploys with the same container settings as the function would, plus the snapshots."""
    assert not hasattr(mod, "serve")  # one shape per deployment: the class replaces the function
    fn = service_function(mod.Server)
    info = synchronizer._translate_out(fn).info()
    settings = loader_settings(synchronizer._translate_out(fn))
    assert settings["enable_memory_snapshot"] is True
    assert settings["experimental_options"] == {"enable_gpu_snapshot": "True"}  # Modal sends it as text
    name, _, count = cfg.gpu.partition(":")
    assert info.gpus == [(name, int(count or 1))]
    assert fn._spec.gpus == cfg.gpu
    assert info.timeout == cfg.timeout
    assert info.startup_timeout == cfg.effective_startup_timeout()
    assert info.concurrency_info.max_inputs == cfg.max_inputs
    assert settings["autoscaler_settings"].scaledown_window == cfg.scaledown_window
    assert {path: v.name for path, v in info.volumes.items()} == {
        engine.HF_CACHE_DIR: "huggingface-cache",
        engine.VLLM_CACHE_DIR: "vllm-cache",
    }
    assert info.regions == ([cfg.region] if cfg.region else None)
    shipped = fn._spec.secrets[0]._load_env_dict()
    assert DeployConfig.model_validate_json(shipped[CONFIG_JSON_ENV]) == cfg.model_copy(
        update={"api_key": None}
    )
    # The web endpoint is the method `serve`, a web server on the engine's port.
    assert info.method_names == [modal_ops.SERVE_FUNCTION]
    assert info.method_details[modal_ops.SERVE_FUNCTION].unauthenticated == (not cfg.requires_proxy_auth)
    web = raw(mod.Server)._method_partials[modal_ops.SERVE_FUNCTION].params.webhook_config
    assert web.type == modal._partial_function.api_pb2.WEBHOOK_TYPE_WEB_SERVER
    assert web.web_server_port == cfg.port
    assert web.web_server_startup_timeout == cfg.effective_startup_timeout()
    assert web.requires_proxy_auth == cfg.requires_proxy_auth
    # start (snap=True) runs before the snapshot, wake_up (snap=False) after every restore.
    assert lifecycle(mod.Server) == {"snap": ["start"], "restore": ["wake_up"], "exit": ["stop"]}
    assert mod.app.name == cfg.app_name
    registered = raw(mod.app)._local_state
    assert set(registered.classes) == {modal_ops.SERVER_CLASS}
    assert registered.web_endpoints == [f"{modal_ops.SERVER_CLASS}.{modal_ops.SERVE_FUNCTION}"]
    # Same engine command as without snapshots, plus sleep mode and the dev-mode routes it needs.
    assert mod.command == engine.build_command(cfg, target="modal")
    assert "--enable-sleep-mode" in mod.command.argv
    assert mod.command.env["VLLM_SERVER_DEV_MODE"] == "1"
    assert repr(mod.web_endpoint()) == f"Method({modal_ops.SERVER_CLASS}.{modal_ops.SERVE_FUNCTION})"


def test_snapshot_20b_on_h100_is_a_class_with_gpu_snapshots(load_app) -> None:
    mod = load_app(model="20b", gpu="H100", snapshot="true")
    check_snapshot_class(mod, DeployConfig(model="20b", gpu="H100", snapshot=True))


def test_snapshot_120b_on_two_h100_with_key_region_and_settings(load_app) -> None:
    settings = {
        "model": "120b", "gpu": "H100:2", "snapshot": "1", "max_inputs": "16", "scaledown_window": "120",
        "region": "us-east", "api_key_secret": "gpt-oss-key",
    }  # fmt: skip
    mod = load_app(**settings)
    cfg = DeployConfig(
        model="120b", gpu="H100:2", snapshot=True, max_inputs=16, scaledown_window=120, region="us-east",
        api_key_secret="gpt-oss-key",
    )  # fmt: skip
    check_snapshot_class(mod, cfg)
    info = synchronizer._translate_out(service_function(mod.Server)).info()
    assert info.secrets == [
        "Secret.from_dict([GPT_OSS_CONFIG_JSON])",
        "modal.Secret.from_name('gpt-oss-key')",
    ]


def test_snapshot_public_endpoint(load_app) -> None:
    mod = load_app(snapshot="true", public="true")
    check_snapshot_class(mod, DeployConfig(snapshot=True, public=True))


def test_seed_entry_re_exports_the_snapshot_class(load_app) -> None:
    load_app(snapshot="true")
    spec = importlib.util.spec_from_file_location("gpt_oss_inference_seed_snap", SEED_ENTRY)
    seed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seed)
    assert seed.serve is None and seed.Server is not None
    assert set(raw(seed.app)._local_state.classes) == {"Server"}
    # The container imports the module that defines the class, from the package the image ships.
    assert service_function(seed.Server)._source_info.module_name == "gpt_oss_modal.modal_app"


FAKE_SLEEPY_VLLM = textwrap.dedent(
    """\
    #!{python}
    # A stand-in `vllm serve`: records its argv and every request (method, path, Authorization).
    import http.server, json, os, sys
    record = os.environ["RECORD"]
    port = int(sys.argv[sys.argv.index("--port") + 1])

    def log(entry):
        with open(record, "a") as f:
            f.write(json.dumps(entry) + "\\n")

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            log({{"method": self.command, "path": self.path, "auth": self.headers.get("Authorization"),
                  "body": body}})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{{}}")
        do_GET = do_POST = answer
        def log_message(self, *args):
            pass

    log({{"argv": sys.argv[1:], "dev_mode": os.environ.get("VLLM_SERVER_DEV_MODE")}})
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
    """
)

RUN_HOOKS = textwrap.dedent(
    """\
    import gpt_oss_modal.modal_app as m
    from modal._utils.async_utils import synchronizer
    from modal._partial_function import _find_partial_methods_for_user_cls as find, _PartialFunctionFlags as F
    user_cls = synchronizer._translate_in(m.Server)._user_cls
    server = user_cls.__new__(user_cls)
    find(user_cls, F.ENTER_PRE_SNAPSHOT)["start"].raw_f(server)   # before the snapshot
    print("SNAPSHOT", flush=True)
    find(user_cls, F.ENTER_POST_SNAPSHOT)["wake_up"].raw_f(server)  # after a restore
    find(user_cls, F.EXIT)["stop"].raw_f(server)
    server.engine.wait(10)
    """
)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("key", [None, "from-the-secret"], ids=["no-key", "bearer-key"])
def test_snapshot_hooks_start_warm_sleep_then_wake(tmp_path: Path, key: str | None) -> None:
    """In a fresh interpreter with only GPT_OSS_CONFIG_JSON, as in the container, run the hooks in order."""
    settings: dict[str, Any] = {"snapshot": True, "port": free_port()}
    if key:
        settings["api_key_secret"] = "k"
    cfg = load_config(settings).config
    expected = engine.build_command(cfg, target="modal")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "vllm"
    fake.write_text(FAKE_SLEEPY_VLLM.format(python=sys.executable))
    fake.chmod(0o755)
    record = tmp_path / "record.jsonl"
    env = {
        **clean_env(),
        CONFIG_JSON_ENV: cfg.to_json(),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "RECORD": str(record),
        "HOME": str(tmp_path),
        **({"VLLM_API_KEY": key} if key else {}),
    }
    r = subprocess.run(
        [sys.executable, "-c", RUN_HOOKS],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    entries = [json.loads(line) for line in record.read_text().splitlines()]
    started, requests = entries[0], entries[1:]
    assert ["vllm", *started["argv"]] == expected.argv and started["dev_mode"] == "1"
    calls = [(e["method"], e["path"]) for e in requests]
    # Health, one warm-up request, sleep (then the snapshot), wake-up, health again.
    assert calls == [
        ("GET", "/health"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/sleep?level=1"),
        ("POST", "/wake_up"),
        ("GET", "/health"),
    ]
    warm = json.loads(requests[1]["body"])
    assert warm["model"] == "llm" and warm["max_tokens"] > 0
    # The bearer-key middleware guards every route, /sleep and /wake_up included: every call sends it.
    assert {e["auth"] for e in requests} == {f"Bearer {key}" if key else None}


def test_snapshot_start_fails_at_once_when_the_engine_dies(tmp_path: Path) -> None:
    cfg = load_config({"snapshot": True, "port": free_port()}).config
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "vllm"
    fake.write_text(f"#!{sys.executable}\nimport sys; sys.exit(3)\n")
    fake.chmod(0o755)
    env = {
        **clean_env(),
        CONFIG_JSON_ENV: cfg.to_json(),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    r = subprocess.run(
        [sys.executable, "-c", RUN_HOOKS],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode != 0 and "SNAPSHOT" not in r.stdout
    assert "vLLM exited with code 3 before it was ready" in r.stderr


@pytest.mark.parametrize(
    "args",
    [["deploy", "modal/gpt_oss_inference.py"], modal_ops.deploy_argv()[3:], modal_ops.run_argv()[3:]],
    ids=["deploy-file", "deploy-module", "run-module"],
)
def test_modal_cli_with_snapshots_gets_past_import_and_stops_at_auth(args: list[str], tmp_path: Path) -> None:
    r = modal_cli(args, tmp_path, GPT_OSS_SNAPSHOT="1")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "Token missing" in out, out
    assert "Traceback" not in out and "Error importing" not in out, out
