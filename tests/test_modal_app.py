"""The Modal app as Modal sees it: import it with a config and read the real Modal objects it built.

Where Modal 1.6 keeps each setting of the class defined with @app.cls/@modal.concurrent and its
@modal.web_server method (modal 1.6.4 is pinned by the `modal` extra):
- the class's service function's `info()` (a modal.types.FunctionInfo): gpus, cpu/memory, timeout,
  startup_timeout, concurrency (max_inputs), volumes (name per mount path), secrets (reprs), regions, the
  method names and each method's web info;
- the undecorated `_Function`: `_spec` (the GPU string, the Secret objects);
- what its loader sends to Modal (the loader's closure): the AutoscalerSettings proto (scale-down window,
  min/max/buffer containers), the snapshot options, and the method definitions with the web server's
  webhook config (port, startup timeout, proxy auth, and the label that makes its URL).

Then the container's side: a fresh interpreter with nothing but GPT_OSS_CONFIG_JSON runs the class's
hooks, which start a stand-in `vllm` that records its argv and environment. And `modal deploy` / `modal run` of the
seed's entry point, with no Modal token anywhere, get through the import and stop at authentication.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

modal = pytest.importorskip("modal")

from modal._utils.async_utils import synchronizer  # noqa: E402

from gpt_oss_modal.core import catalog, engine, resources  # noqa: E402
from gpt_oss_modal.core.config import (  # noqa: E402
    CONFIG_JSON_ENV,
    ORIGINAL_ENV,
    ConfigError,
    DeployConfig,
    load_config,
)
from gpt_oss_modal.deploy import doctor, modal_ops, weights  # noqa: E402
from gpt_oss_modal.server import auth, lifecycle, warmup  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED_ENTRY = ROOT / "modal" / "gpt_oss_inference.py"
PACKAGE_PARENT = ROOT / "src"


def clean_env() -> dict[str, str]:
    """This process's environment without config or Modal credentials (and no ~/.modal.toml: see HOME)."""
    drop = ("GPT_OSS_", "MODAL_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop) and k not in ORIGINAL_ENV}


def raw(function: Any) -> Any:
    """The SDK's internal _Function behind the public, synchronised handle."""
    return synchronizer._translate_in(function)


def loader_settings(function: Any) -> dict[str, Any]:
    """What the function's loader sends to Modal at deploy time (its closure: no network needed)."""
    load = raw(function)._load
    return {name: cell.cell_contents for name, cell in zip(load.__code__.co_freevars, load.__closure__)}


def check_scaling(info: Any, autoscaler: Any, cfg: DeployConfig) -> None:
    """Modal's autoscaler gets the config's floor, ceiling, buffer and target, as sent at deploy time."""
    assert autoscaler.scaledown_window == cfg.scaledown_window
    assert autoscaler.min_containers == cfg.min_containers and autoscaler.HasField("min_containers")
    assert autoscaler.max_containers == cfg.max_containers
    assert autoscaler.buffer_containers == cfg.buffer_containers
    assert info.concurrency_info.max_inputs == cfg.max_inputs
    assert info.concurrency_info.target_inputs == cfg.target_inputs  # None: Modal aims at max_inputs


def service(mod: Any) -> Any:
    """The server class's service function (one per Modal class: it carries the container's settings)."""
    return synchronizer._translate_out(raw(mod.Server)._class_service_function)


def webhook(mod: Any) -> Any:
    """The web server method's webhook config, as the class's loader sends it to Modal."""
    return loader_settings(service(mod))["method_definitions"][modal_ops.SERVE_METHOD].webhook_config


def check_function(mod: Any, cfg: DeployConfig) -> None:
    """Every setting of the deployed server class equals what the config says (either shape of start-up)."""
    fn = service(mod)
    info, settings = fn.info(), loader_settings(fn)
    name, _, count = cfg.gpu.partition(":")
    assert info.gpus == [(name, int(count or 1))]
    assert raw(fn)._spec.gpus == cfg.gpu  # the Modal GPU string, e.g. "H100:2"
    assert info.timeout == cfg.timeout
    assert info.startup_timeout == cfg.effective_startup_timeout()
    check_scaling(info, settings["autoscaler_settings"], cfg)
    assert {path: v.name for path, v in info.volumes.items()} == {
        engine.HF_CACHE_DIR: "huggingface-cache",
        engine.VLLM_CACHE_DIR: "vllm-cache",
    }
    assert info.regions == ([cfg.region] if cfg.region else None)
    # The web endpoint is the method `serve`: a web server on the engine's port, at the original's URL.
    assert info.method_names == [modal_ops.SERVE_METHOD]
    assert info.method_details[modal_ops.SERVE_METHOD].unauthenticated == (not cfg.requires_proxy_auth)
    web = webhook(mod)
    assert web.type == modal._partial_function.api_pb2.WEBHOOK_TYPE_WEB_SERVER
    assert web.web_server_port == cfg.port
    assert web.web_server_startup_timeout == cfg.effective_startup_timeout()
    assert web.requires_proxy_auth == cfg.requires_proxy_auth
    assert web.requested_suffix == modal_ops.endpoint_label(cfg.app_name)
    # The config travels as a Secret holding exactly the resolved JSON (no api_key in it).
    shipped = raw(fn)._spec.secrets[0]._load_env_dict()
    assert set(shipped) == {CONFIG_JSON_ENV}
    assert DeployConfig.model_validate_json(shipped[CONFIG_JSON_ENV]) == cfg.model_copy(
        update={"api_key": None}
    )
    assert mod.app.name == cfg.app_name
    registered = raw(mod.app)._local_state
    assert set(registered.classes) == {modal_ops.SERVER_CLASS}
    assert registered.web_endpoints == [f"{modal_ops.SERVER_CLASS}.{modal_ops.SERVE_METHOD}"]
    # What the container will run is the command builder's output for this config, nothing else.
    assert mod.command == engine.build_command(cfg, target="modal")
    # Cores and memory reserved beside the GPU: gpt_oss_modal.core.resources', which `plan` prices.
    reserved = resources.container_resources(cfg)
    assert (settings["cpu"], settings["memory"]) == (reserved.cpu, reserved.memory_mib)
    assert info.memory_mib == reserved.memory_mib and reserved.cpu >= 4
    # The start-up (start, health, warm-up, and sleep with snapshots) ends before Modal's startup timeout.
    assert mod.budget.total < info.startup_timeout
    # The snapshot options go out only with snapshots; without, one plain enter hook starts the engine.
    assert settings["enable_memory_snapshot"] is cfg.snapshot
    assert settings["experimental_options"] == ({"enable_gpu_snapshot": "True"} if cfg.snapshot else {})
    if not cfg.snapshot:
        # (Modal files a plain @modal.enter() with the hooks that run after a restore: every start.)
        assert hooks(mod.Server) == {"snap": [], "restore": ["start"], "exit": ["stop"]}


def test_the_defaults_deploy_the_originals_settings(load_app) -> None:
    mod = load_app()
    cfg = DeployConfig()
    assert mod.cfg == cfg
    check_function(mod, cfg)
    info, autoscaler = service(mod).info(), loader_settings(service(mod))["autoscaler_settings"]
    assert info.gpus == [("A10G", 1)] and info.concurrency_info.max_inputs == 50
    assert autoscaler.scaledown_window == 300
    assert (autoscaler.min_containers, autoscaler.max_containers, autoscaler.buffer_containers) == (0, 2, 0)
    argv = mod.command.argv
    assert argv[argv.index("--max-model-len") + 1] == "32768"


def test_scale_and_cost_settings_reach_the_function(load_app) -> None:
    settings = {"min_containers": "1", "max_containers": "4", "buffer_containers": "1", "target_inputs": "24"}
    mod = load_app(**settings)
    cfg = DeployConfig(min_containers=1, max_containers=4, buffer_containers=1, target_inputs=24)
    check_function(mod, cfg)
    assert service(mod).info().concurrency_info.target_inputs == 24
    autoscaler = loader_settings(service(mod))["autoscaler_settings"]
    assert (autoscaler.min_containers, autoscaler.max_containers, autoscaler.buffer_containers) == (1, 4, 1)


def test_the_originals_variables_reach_the_function(load_app, monkeypatch: pytest.MonkeyPatch) -> None:
    originals = {"GPU_CONFIG": "L4", "MODEL_NAME": "openai/gpt-oss-20b", "MAX_MODEL_LEN": "16384",
                 "SCALEDOWN_WINDOW": "120", "MAX_INPUTS": "8", "USE_FLOAT16": "False"}  # fmt: skip
    for var, value in originals.items():
        monkeypatch.setenv(var, value)
    mod = load_app()
    cfg = DeployConfig(gpu="L4", max_model_len=16384, scaledown_window=120, max_inputs=8)
    assert mod.cfg == cfg
    check_function(mod, cfg)
    argv = mod.command.argv
    assert argv[argv.index("--max-model-len") + 1] == "16384"


def test_20b_on_h100(load_app) -> None:
    mod = load_app(model="20b", gpu="H100")
    cfg = DeployConfig(model="20b", gpu="H100")
    assert mod.cfg == cfg
    check_function(mod, cfg)
    assert mod.app.name == "gpt-oss-vllm-inference"
    assert service(mod).info().secrets == ["Secret.from_dict([GPT_OSS_CONFIG_JSON])"]
    assert webhook(mod).requires_proxy_auth is True
    argv = mod.command.argv
    assert argv[argv.index("--served-model-name") + 1] == "llm"
    assert argv[argv.index("--host") + 1] == "0.0.0.0"


def test_120b_on_two_h100_fast_boot(load_app) -> None:
    mod = load_app(model="120b", gpu="H100:2", boot="fast")
    cfg = DeployConfig(model="120b", gpu="H100:2", boot="fast")
    check_function(mod, cfg)
    assert service(mod).info().gpus == [("H100", 2)]
    argv = mod.command.argv
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert '"cudagraph_mode":"FULL_DECODE_ONLY"' in argv[argv.index("--compilation-config") + 1]


def test_original_fast_boot_variable_means_fast(load_app, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAST_BOOT", "1")
    mod = load_app()
    assert mod.cfg.boot == "fast" and "--enforce-eager" not in mod.command.argv
    assert '"mode":"NONE"' in mod.command.argv[mod.command.argv.index("--compilation-config") + 1]


def test_20b_on_l4_with_small_concurrency_and_short_scaledown(load_app) -> None:
    mod = load_app(model="20b", gpu="L4", max_inputs="8", scaledown_window="60")
    cfg = DeployConfig(model="20b", gpu="L4", max_inputs=8, scaledown_window=60)
    check_function(mod, cfg)
    assert service(mod).info().concurrency_info.max_inputs == 8
    assert loader_settings(service(mod))["autoscaler_settings"].scaledown_window == 60
    argv = mod.command.argv
    assert argv[argv.index("--max-num-seqs") + 1] == "8"


def test_public_endpoint_has_no_proxy_auth_and_warns(load_app, capsys: pytest.CaptureFixture[str]) -> None:
    mod = load_app(public="true")
    check_function(mod, DeployConfig(public=True))
    assert webhook(mod).requires_proxy_auth is False
    assert service(mod).info().method_details["serve"].unauthenticated is True
    assert "anyone with the URL can call it" in capsys.readouterr().err


def test_region_port_timeouts_and_app_name(load_app) -> None:
    settings = dict(region="us-east", port="9000", timeout="600", startup_timeout="900", app_name="my-llm")
    mod = load_app(**settings)
    cfg = DeployConfig(region="us-east", port=9000, timeout=600, startup_timeout=900, app_name="my-llm")
    check_function(mod, cfg)
    assert service(mod).info().regions == ["us-east"]


def test_api_key_secret_is_attached_and_required(load_app) -> None:
    mod = load_app(api_key_secret="gpt-oss-key")
    info = service(mod).info()
    assert info.secrets == [
        "Secret.from_dict([GPT_OSS_CONFIG_JSON])",
        "modal.Secret.from_name('gpt-oss-key')",
    ]
    assert webhook(mod).requires_proxy_auth is True  # both layers, not either


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model": "tiny"}, "local CPU engine only"),
        ({"model": "120b", "gpu": "A10G"}, "cheapest GPU that fits: A100-80GB"),
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
    assert set(registered.classes) == {"Server"}
    assert set(registered.functions) == {"Server.*", "download_weights", "doctor_probe"}
    assert set(registered.local_entrypoints) == {"main"}  # so `modal run` of the file needs no ::main
    assert registered.web_endpoints == ["Server.serve"]
    # The container imports the module that defines the class, not this file; the image ships that package.
    fn = raw(seed.Server)._class_service_function
    assert fn._source_info.module_name == "gpt_oss_modal.modal_app"
    assert "gpt_oss_modal" in fn._spec.image._added_python_source_set


@pytest.mark.parametrize(
    ("settings", "label"),
    [
        ({}, "gpt-oss-vllm-inference-serve"),
        ({"snapshot": "true"}, "gpt-oss-vllm-inference-serve"),
        ({"app_name": "my-llm"}, "my-llm-serve"),
        ({"app_name": "Team_LLM.v2", "snapshot": "true", "gpu": "H100"}, "team-llm-v2-serve"),
    ],
)
def test_the_endpoint_keeps_the_originals_url(load_app, settings: dict, label: str) -> None:
    """`https://<workspace>--gpt-oss-vllm-inference-serve.modal.run`, the URL the original's function
    `serve` had, whichever start-up the class has; another app name gives `<app_name>-serve`."""
    mod = load_app(**settings)
    assert webhook(mod).requested_suffix == label  # what Modal makes `<workspace>--<label>.modal.run` of
    assert raw(mod.Server)._method_partials["serve"].params.webhook_config.requested_suffix == label
    # `url`, `stop` and the smoke test find it by the same names: class, then method.
    assert (modal_ops.SERVER_CLASS, modal_ops.SERVE_METHOD) == ("Server", "serve")
    assert repr(getattr(mod.Server(), modal_ops.SERVE_METHOD)) == "Method(Server.serve)"
    assert mod.app.name == mod.cfg.app_name


def test_the_weights_download_is_a_cpu_function_on_the_hf_volume(load_app) -> None:
    mod = load_app(model="120b", gpu="H100", hf_token_secret="hf")
    fn = raw(mod.download_weights)
    info = mod.download_weights.info()
    assert fn._spec.gpus is None and info.gpus == []  # no GPU billed while the weights download
    assert (fn._spec.cpu, fn._spec.memory) == (weights.CPU, weights.MEMORY_MIB)
    # The vllm-cache volume too: vLLM's model inspection is cached there meanwhile (server.model_info).
    assert {path: v.name for path, v in info.volumes.items()} == {
        engine.HF_CACHE_DIR: "huggingface-cache",
        engine.VLLM_CACHE_DIR: "vllm-cache",
    }
    assert info.timeout == weights.TIMEOUT_S
    assert info.secrets == [
        "Secret.from_dict([GPT_OSS_CONFIG_JSON])",
        "modal.Secret.from_name('hf')",
    ]
    # The same image as the server (nothing more to build), and the HF token for the server too.
    assert fn._spec.image is raw(mod.Server)._class_service_function._spec.image
    assert "modal.Secret.from_name('hf')" in service(mod).info().secrets


@pytest.mark.parametrize(
    ("gpu", "kernels"), [("H100", True), ("H200", True), ("A10G", False), ("B200", False)]
)
def test_the_kernel_precompile_is_a_gpu_function_on_hopper_only(load_app, gpu: str, kernels: bool) -> None:
    mod = load_app(gpu=gpu)
    assert hasattr(mod, "precompile_kernels") == kernels
    assert (mod.routing is not None) == kernels
    if kernels:
        info = mod.precompile_kernels.info()
        assert info.gpus == [(gpu, 1)]
        assert {path: v.name for path, v in info.volumes.items()} == {engine.VLLM_CACHE_DIR: "vllm-cache"}


def test_the_kernel_marker_the_cli_looks_for_is_the_one_the_container_writes() -> None:
    from gpt_oss_modal.server import precompile

    routing = precompile.moe_kernels_for(DeployConfig(gpu="H100"))
    written = routing.marker(precompile.triton_cache_dir(engine.COMPILE_CACHE_ENV))
    assert str(written) == f"{engine.VLLM_CACHE_DIR}/{modal_ops.kernels_marker(routing)}"


def test_the_doctor_probe_runs_on_the_image_and_gpu(load_app) -> None:
    mod = load_app(gpu="L4")
    fn, info = raw(mod.doctor_probe), mod.doctor_probe.info()
    assert info.gpus == [("L4", 1)] and info.timeout == doctor.PROBE_TIMEOUT_S
    assert fn._spec.image is raw(mod.Server)._class_service_function._spec.image
    assert not info.volumes  # it reads nothing and writes nothing


# --- the container's side: a fresh interpreter with only GPT_OSS_CONFIG_JSON, and a stand-in `vllm` ----------

FAKE_VLLM = textwrap.dedent(
    """\
    #!{python}
    # A stand-in `vllm serve` that really serves HTTP: records its argv, environment and every request, keeps
    # a sleeping flag like vLLM's dev routes do, counts prompt words as tokens.
    import http.server, json, os, sys, threading
    record = os.environ["RECORD"]
    port = int(sys.argv[sys.argv.index("--port") + 1])
    state = {{"sleeping": False}}
    lock = threading.Lock()
    threading.Timer(120, os._exit, [9]).start()  # never outlive a test that forgot it

    def log(entry):
        with lock, open(record, "a") as f:
            f.write(json.dumps(entry) + "\\n")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            log({{"method": self.command, "path": self.path, "auth": self.headers.get("Authorization"),
                  "dev": self.headers.get("X-GPT-OSS-Dev-Secret"), "body": body}})
            path = self.path.partition("?")[0]
            status, reply = 200, {{}}
            if path == "/health" and os.environ.get("FAKE_NEVER_HEALTHY"):
                status = 503
            elif path == "/sleep":
                state["sleeping"] = True
            elif path == "/wake_up":
                state["sleeping"] = False
            elif path == "/is_sleeping":
                reply = {{"is_sleeping": state["sleeping"]}}
            elif path == "/v1/chat/completions":
                words = len(json.loads(body)["messages"][0]["content"].split())
                reply = {{"usage": {{"prompt_tokens": words}}}}
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        do_GET = do_POST = answer
        def log_message(self, *args):
            pass

    keys = ["VLLM_SERVER_DEV_MODE", "GPT_OSS_DEV_ROUTES_SECRET", "VLLM_API_KEY", "PYTHONPATH", *{keys!r}]
    log({{"argv": sys.argv[1:], "pid": os.getpid(), "env": {{k: os.environ.get(k) for k in keys}}}})
    http.server.ThreadingHTTPServer.request_queue_size = 128  # a burst of max_inputs connects at once
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
    """
)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_in_container(
    tmp_path: Path, cfg: DeployConfig, script: str, *, vllm: str | None = None, **env: str
) -> tuple[Any, list[dict]]:
    """Run `script` in a fresh interpreter that has only GPT_OSS_CONFIG_JSON (as the container has) and a
    stand-in `vllm` on PATH (FAKE_VLLM, or the script `vllm`); the process and what the stand-in recorded
    (its start, then each request)."""
    expected = engine.build_command(cfg, target="modal")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "vllm"
    fake.write_text(vllm or FAKE_VLLM.format(python=sys.executable, keys=list(expected.env)))
    fake.chmod(0o755)
    record = tmp_path / "record.jsonl"
    full_env = {
        **clean_env(),
        CONFIG_JSON_ENV: cfg.to_json(),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "RECORD": str(record),
        "HOME": str(tmp_path),
        **env,
    }
    # Output to files, not pipes: the stand-in engine outlives the script (as on Modal) and would hold them.
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        done = subprocess.run(
            [sys.executable, "-c", script],
            env=full_env,
            cwd=tmp_path,
            stdout=stdout,
            stderr=stderr,
            timeout=120,
        )
    r = subprocess.CompletedProcess(done.args, done.returncode, out.read_text(), err.read_text())
    entries = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    if entries:  # the function shape leaves the engine running, as Modal would: end it here
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(entries[0]["pid"], signal.SIGKILL)
    return r, entries


START_AND_SERVE = textwrap.dedent(
    """\
    import gpt_oss_modal.modal_app as m
    from modal._utils.async_utils import synchronizer
    from modal._partial_function import _find_partial_methods_for_user_cls as find, _PartialFunctionFlags as F
    user_cls = synchronizer._translate_in(m.Server)._user_cls
    server = user_cls.__new__(user_cls)
    find(user_cls, F.ENTER_POST_SNAPSHOT)["start"].raw_f(server)  # the enter hook, before any request
    find(user_cls, F.interface_flags())["serve"].raw_f(server)  # the web server's body
    print("RETURNED", flush=True)
    """
)


def test_container_serve_starts_the_built_command_and_returns_once_warm(tmp_path: Path) -> None:
    """The enter hook and the web server, run as Modal runs them: start exactly the built command, wait
    for health, warm up; only then may requests come."""
    cfg = load_config(
        {"model": "120b", "gpu": "H100:2", "max_inputs": 24, "api_key_secret": "k", "port": free_port()}
    ).config
    expected = engine.build_command(cfg, target="modal")
    script = START_AND_SERVE
    r, entries = run_in_container(tmp_path, cfg, script, GPT_OSS_MODEL="20b", VLLM_API_KEY="from-the-secret")
    assert r.returncode == 0 and "RETURNED" in r.stdout, r.stderr
    started, requests = entries[0], entries[1:]
    assert ["vllm", *started["argv"]] == expected.argv  # GPT_OSS_MODEL was ignored: the shipped JSON wins
    for key, value in expected.env.items():
        assert started["env"][key] == value
    assert started["env"]["VLLM_API_KEY"] == "from-the-secret"
    site, package, *_ = started["env"]["PYTHONPATH"].split(os.pathsep)
    # Every engine process runs the fixes to vLLM at start-up (server/_vllm_site), and vLLM can import our
    # modules by dotted path (the auth middleware, gpt_oss_modal.server.auth).
    assert (Path(site) / "sitecustomize.py").exists()
    assert (Path(package) / "gpt_oss_modal" / "__init__.py").exists()
    assert (
        started["env"]["VLLM_SERVER_DEV_MODE"] is None and started["env"]["GPT_OSS_DEV_ROUTES_SECRET"] is None
    )
    # The body returned (so Modal may route traffic) only after health and the whole warm-up.
    paths = [e["path"] for e in requests]
    assert paths[0] == "/health"
    chats = [json.loads(e["body"]) for e in requests if e["path"] == "/v1/chat/completions"]
    ladder = warmup.prefill_ladder(expected.max_num_batched_tokens)
    assert len(chats) == len(ladder) + cfg.max_inputs and set(paths) == {"/health", "/v1/chat/completions"}
    # The ladder first, one prompt at a time: 64, 128, ... up to the engine's --max-num-batched-tokens (the
    # prefix word, then n words).
    assert [len(c["messages"][0]["content"].split()) - 2 for c in chats[: len(ladder)]] == ladder
    # Then the burst, all at once: prompts and replies of many lengths, as a real burst's.
    burst = sorted(chats[len(ladder) :], key=lambda c: int(c["messages"][0]["content"].split()[1][2:-1]))
    assert [(len(c["messages"][0]["content"].split()) - 2, c["max_tokens"]) for c in burst] == (
        warmup.burst_shapes(cfg.max_inputs, warmup.WARM_UP_BURST_PROMPT_TOKENS, 64)
    )
    assert {e["auth"] for e in requests} == {"Bearer from-the-secret"}
    assert (
        f"warm-up: prefills of {sum(n + 2 for n in ladder):,} tokens" in r.stderr
        and f"{cfg.max_inputs}/{cfg.max_inputs} concurrent" in r.stderr
    )


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


def hooks(cls: Any) -> dict[str, list[str]]:
    """The class's lifecycle hooks, by kind, as Modal will find them in the container."""
    from modal._partial_function import _find_partial_methods_for_user_cls, _PartialFunctionFlags

    user_cls = raw(cls)._user_cls
    flags = _PartialFunctionFlags
    kinds = {"snap": flags.ENTER_PRE_SNAPSHOT, "restore": flags.ENTER_POST_SNAPSHOT, "exit": flags.EXIT}
    return {kind: list(_find_partial_methods_for_user_cls(user_cls, flag)) for kind, flag in kinds.items()}


def check_snapshot_class(mod: Any, cfg: DeployConfig) -> None:
    """The class deploys with the same container settings as without snapshots, plus the snapshots."""
    check_function(mod, cfg)
    info = service(mod).info()
    # start (snap=True) runs before the snapshot, wake_up (snap=False) after every restore.
    assert hooks(mod.Server) == {"snap": ["start"], "restore": ["wake_up"], "exit": ["stop"]}
    # Same engine command as without snapshots, plus sleep mode and the dev-mode routes it needs.
    assert "--enable-sleep-mode" in mod.command.argv
    assert mod.command.env["VLLM_SERVER_DEV_MODE"] == "1"
    assert auth.MIDDLEWARE in mod.command.argv  # the dev routes are closed under every auth setting
    # Sleep level 1 keeps the weights in host RAM: the container asks for them plus headroom.
    weights_mib = catalog.MODELS[cfg.model].weights_gib * 1024
    assert info.memory_mib == resources.snapshot_memory_mib(cfg) > weights_mib + 8 * 1024
    # The pre-snapshot hook (start, health, warm-up, sleep) ends strictly before the startup timeout.
    assert mod.budget.total + mod.budget.margin == pytest.approx(info.startup_timeout)
    assert 0 < mod.budget.ready and mod.budget.total < info.startup_timeout


def test_snapshot_20b_on_h100_is_a_class_with_gpu_snapshots(load_app) -> None:
    mod = load_app(model="20b", gpu="H100", snapshot="true")
    check_snapshot_class(mod, DeployConfig(model="20b", gpu="H100", snapshot=True))


def test_snapshot_120b_with_key_region_and_settings(load_app) -> None:
    settings = {
        "model": "120b", "gpu": "H100", "snapshot": "1", "max_inputs": "16", "scaledown_window": "120",
        "region": "us-east", "api_key_secret": "gpt-oss-key", "min_containers": "1", "max_containers": "3",
        "buffer_containers": "2", "target_inputs": "12",
    }  # fmt: skip
    mod = load_app(**settings)
    cfg = DeployConfig(
        model="120b", gpu="H100", snapshot=True, max_inputs=16, scaledown_window=120, region="us-east",
        api_key_secret="gpt-oss-key", min_containers=1, max_containers=3, buffer_containers=2, target_inputs=12,
    )  # fmt: skip
    check_snapshot_class(mod, cfg)
    info = service(mod).info()
    assert info.secrets == [
        "Secret.from_dict([GPT_OSS_CONFIG_JSON])",
        "modal.Secret.from_name('gpt-oss-key')",
    ]
    assert info.memory_mib >= 60.8 * 1024  # 120b's weights, asleep in host RAM
    # A rotated key reaches restored containers only after a redeploy: deploy says so.
    notice = lifecycle.snapshot_key_notice(cfg)
    assert "gpt-oss-key" in notice and "deploy again" in notice


def test_snapshot_key_notice_only_with_both() -> None:
    assert lifecycle.snapshot_key_notice(DeployConfig(snapshot=True)) is None
    assert lifecycle.snapshot_key_notice(DeployConfig(api_key_secret="k")) is None
    assert lifecycle.snapshot_key_notice(DeployConfig(snapshot=True, api_key_secret="k"))


def test_snapshot_with_several_gpus_is_refused(load_app) -> None:
    with pytest.raises(ConfigError, match="snapshot: GPU snapshots of 2 GPUs are not supported"):
        load_app(model="120b", gpu="H100:2", snapshot="true")


def test_snapshot_with_several_gpus_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {**clean_env(), "GPT_OSS_SNAPSHOT": "1", "GPT_OSS_GPU": "H200:2", "HOME": str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-m", "gpt_oss_modal.cli", "config"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "snapshot" in r.stderr and "one GPU" in r.stderr


@pytest.mark.parametrize("requests", [1, 2, 7, 50, 256])
def test_a_warm_up_burst_spreads_prompts_and_replies(requests: int) -> None:
    shapes = warmup.burst_shapes(requests, 1024, 64)
    words, replies = [w for w, _ in shapes], [r for _, r in shapes]
    assert len(shapes) == requests and max(words) == 1536 and max(replies) == 64
    # Longer prompts get shorter replies: requests leave prefill and finish decoding at different steps.
    assert words == sorted(words) and replies == sorted(replies, reverse=True)
    if requests > 1:
        assert min(words) == 512 and min(replies) == warmup.WARM_UP_MAX_TOKENS
    if requests >= 50:  # many distinct lengths: partial prefill chunks of many sizes
        assert len(set(words)) == requests
        assert len(set(replies)) == min(requests, 64 - warmup.WARM_UP_MAX_TOKENS + 1)


@pytest.mark.parametrize("snapshot", [False, True])
def test_every_startup_timeout_leaves_each_step_a_share_and_a_margin(snapshot: bool) -> None:
    for timeout in [30, 31, 45, 60, 120, 600, 1200, 2400, 3600, 10800]:  # the range config allows
        b = lifecycle.startup_budget(timeout, snapshot=snapshot)
        assert min(b.ready, b.warm_up, b.margin, b.wake) > 0 and (b.sleep > 0) == snapshot
        assert b.total < timeout and b.total + b.margin == pytest.approx(timeout)
        assert b.wake <= b.ready


def test_snapshot_public_endpoint(load_app) -> None:
    mod = load_app(snapshot="true", public="true")
    check_snapshot_class(mod, DeployConfig(snapshot=True, public=True))


def test_seed_entry_re_exports_the_snapshot_class(load_app) -> None:
    load_app(snapshot="true")
    spec = importlib.util.spec_from_file_location("gpt_oss_inference_seed_snap", SEED_ENTRY)
    seed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seed)
    assert not hasattr(seed, "serve") and seed.Server is not None
    assert set(raw(seed.app)._local_state.classes) == {"Server"}
    # The container imports the module that defines the class, from the package the image ships.
    assert service_function(seed.Server)._source_info.module_name == "gpt_oss_modal.modal_app"


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
    print("STOPPED", server.engine.process.returncode, flush=True)
    """
)


@pytest.mark.parametrize("key", [None, "from-the-secret"], ids=["no-key", "bearer-key"])
def test_snapshot_hooks_start_warm_sleep_then_wake(tmp_path: Path, key: str | None) -> None:
    """In a fresh interpreter with only GPT_OSS_CONFIG_JSON, as in the container, run the hooks in order."""
    settings: dict[str, Any] = {"snapshot": True, "port": free_port(), "max_inputs": 4}
    if key:
        settings["api_key_secret"] = "k"
    cfg = load_config(settings).config
    expected = engine.build_command(cfg, target="modal")
    r, entries = run_in_container(tmp_path, cfg, RUN_HOOKS, **({"VLLM_API_KEY": key} if key else {}))
    assert r.returncode == 0, r.stderr
    assert "STOPPED -15" in r.stdout  # stop() ended it with SIGTERM
    started, requests = entries[0], entries[1:]
    assert ["vllm", *started["argv"]] == expected.argv and started["env"]["VLLM_SERVER_DEV_MODE"] == "1"
    assert auth.MIDDLEWARE in started["argv"]  # dev mode never runs without the middleware
    calls = [(e["method"], e["path"]) for e in requests]
    chat = ("POST", "/v1/chat/completions")
    # Health, the warm-up (the prefill ladder, then max_inputs at once), sleep (then the snapshot), wake-up.
    ladder = warmup.prefill_ladder(expected.max_num_batched_tokens)
    assert calls == [
        ("GET", "/health"),
        *[chat] * (len(ladder) + cfg.max_inputs),
        ("POST", "/sleep?level=1"),
        ("GET", "/is_sleeping"),
        ("POST", "/wake_up"),
        ("GET", "/health"),
        ("GET", "/is_sleeping"),
    ]
    assert "SNAPSHOT" in r.stdout and r.stdout.index("SNAPSHOT") < r.stdout.index("STOPPED")
    warm = json.loads(requests[1]["body"])
    assert warm["model"] == "llm" and warm["max_tokens"] > 0
    # The bearer key (when configured) on every call; the dev-route secret on dev routes only. It is the
    # one vLLM got in its environment, fresh and random, and never on the command line or in the output.
    assert {e["auth"] for e in requests} == {f"Bearer {key}" if key else None}
    secret = started["env"]["GPT_OSS_DEV_ROUTES_SECRET"]
    assert secret and len(secret) >= 32
    assert {e["dev"] for e in requests if auth.is_dev_route(e["path"])} == {secret}
    assert {e["dev"] for e in requests if not auth.is_dev_route(e["path"])} == {None}
    assert secret not in " ".join(started["argv"]) and secret not in r.stdout + r.stderr


def test_snapshot_start_fails_at_once_when_the_engine_dies(tmp_path: Path) -> None:
    cfg = load_config({"snapshot": True, "port": free_port()}).config
    r, _ = run_in_container(tmp_path, cfg, RUN_HOOKS, vllm=f"#!{sys.executable}\nimport sys; sys.exit(3)\n")
    assert r.returncode != 0 and "SNAPSHOT" not in r.stdout
    assert "vLLM exited with code 3 before it was ready" in r.stderr


def test_snapshot_start_gives_up_inside_the_startup_timeout(tmp_path: Path) -> None:
    """An engine that never gets healthy: the pre-snapshot hook gives up with its own error, after its
    budget, which is strictly inside the startup timeout that Modal would kill the container at."""
    cfg = load_config({"snapshot": True, "port": free_port(), "startup_timeout": 30}).config
    budget = lifecycle.startup_budget(30, snapshot=True)
    r, entries = run_in_container(tmp_path, cfg, RUN_HOOKS, FAKE_NEVER_HEALTHY="1")
    assert r.returncode != 0 and "SNAPSHOT" not in r.stdout
    assert f"did not answer 200 within {budget.ready:.0f} s" in r.stderr
    assert {e["path"] for e in entries[1:]} == {"/health"}  # no warm-up, no sleep on an engine not ready


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
