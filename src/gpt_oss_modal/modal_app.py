"""# GPT-OSS as a private, OpenAI-compatible API on Modal, served by vLLM

This module is the Modal app. Read it top to bottom: it resolves what to run, builds the container image,
attaches the caches, and starts `vllm serve` behind a Modal web endpoint. `modal run` on it starts a
temporary server and smoke-tests it; `modal deploy` keeps it.

    gpt-oss-modal run / deploy ...                 # flags, env and gpt-oss-modal.toml, checked first
    modal deploy -m gpt_oss_modal.modal_app        # the same app, config from env and TOML only
    modal deploy modal/gpt_oss_inference.py        # the original entry point, which re-exports this app

Nothing here writes a vLLM flag: `engine.build_command` is the one place that does, for Modal and for
the local runners alike.
"""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import gpt_oss_modal
import modal
from gpt_oss_modal import auth, engine, modal_ops, precheck
from gpt_oss_modal.config import CONFIG_JSON_ENV, SERVED_MODEL_NAME, ConfigError, load_config

MINUTES = 60  # seconds

# ## What to run
#
# Modal imports this file twice: once on your machine, to build and register the app, and once in every
# container it starts. Your machine has the flags, the `GPT_OSS_*` environment and `gpt-oss-modal.toml`;
# the container has none of them. So the config is resolved here, once, and shipped to the container as
# JSON in a Secret (below); in the container `GPT_OSS_CONFIG_JSON` is set and `load_config` takes it
# verbatim. Both sides therefore compute the same engine command from the same config.

# Refuse what cannot work before anything is built or billed: the tiny checkpoint runs on vLLM's CPU
# build only (`gpt-oss-modal serve --local`), and a model that does not fit the GPU would only crash
# minutes into a paid container start-up; the planner says why and names a GPU that fits. Under Modal's
# CLI (`modal deploy/run/serve` of this module) that is one line and exit code 2, not a traceback.

try:
    cfg = load_config().config
    plan = modal_ops.check_deployable(cfg)
except ConfigError as e:
    if precheck.under_modal_cli():
        precheck.refuse(str(e))
    raise

# `modal run` calls the smoke test (`main`, at the end) only after building the image and starting the
# app; what it needs from this machine (a proxy auth token, the API key, the client packages) is checked
# now, in milliseconds.
if modal.is_local():
    precheck.check_modal_run(cfg)
command = engine.build_command(cfg, target="modal")

# ## The container image
#
# vLLM's wheels bring their own CUDA runtime, torch and kernels; the CUDA devel base image adds the
# compiler toolchain that Triton and FlashInfer use to JIT-compile kernels at start-up. We clear the
# base image's entrypoint so Modal's own runs the function.
#
# Besides vLLM the container needs only what `gpt_oss_modal.config`/`engine`/`planner` import (pydantic,
# pydantic-settings); the package itself is mounted at container start by `add_local_python_source`, so
# editing it does not rebuild the image. The engine's environment (Hugging Face and compile caches on the
# volumes, no telemetry) is set on the image too, so a `modal shell` into the function sees the same caches.

image = (
    modal.Image.from_registry("nvidia/cuda:12.8.1-devel-ubuntu22.04", add_python="3.12")
    .entrypoint([])
    .uv_pip_install(
        f"vllm=={cfg.vllm_version}",
        "pydantic>=2.12",
        "pydantic-settings>=2.10",
    )
    .env(command.env)
    .add_local_python_source("gpt_oss_modal")
)

# ## Caches that outlive containers
#
# A cold container would otherwise download the weights (13 GiB for 20b, 61 GiB for 120b) and recompile
# every kernel. Two Volumes keep them: the Hugging Face cache, and vLLM's torch.compile / Triton /
# Inductor artefacts, so a second cold start skips both (docs/performance.md has the numbers).

hf_cache = modal.Volume.from_name(modal_ops.HF_CACHE_VOLUME, create_if_missing=True)
vllm_cache = modal.Volume.from_name(modal_ops.VLLM_CACHE_VOLUME, create_if_missing=True)

# ## Who may call it
#
# The resolved config travels as a Secret (it is not secret, but Secrets are how Modal sets environment
# variables for a function without baking them into the image). An optional named Secret holding
# `VLLM_API_KEY` makes vLLM demand `Authorization: Bearer <key>`. Modal proxy auth (on unless --public)
# makes Modal's proxy demand a proxy auth token in the `Modal-Key` / `Modal-Secret` headers before a
# request reaches the container.

secrets = [modal.Secret.from_dict({CONFIG_JSON_ENV: cfg.to_json()})]
if cfg.api_key_secret:
    # required_keys: Modal refuses the deploy if the Secret lacks the key, instead of vLLM starting open.
    secrets.append(modal.Secret.from_name(cfg.api_key_secret, required_keys=["VLLM_API_KEY"]))

# `gpt-oss-modal deploy/run` warns before it calls Modal (and ships the config in GPT_OSS_CONFIG_JSON);
# a plain `modal deploy` of this file gets the warning here.
if modal.is_local() and modal_ops.open_endpoint(cfg) and CONFIG_JSON_ENV not in os.environ:
    print(f"warning: {modal_ops.OPEN_ENDPOINT_WARNING}", file=sys.stderr)

# ## The server
#
# One container per replica runs one `vllm serve`; Modal waits (up to the startup timeout: weights
# download + compile on a cold start) for its port to accept connections, and routes HTTP requests to it
# from then on. Every replica, whichever of the two shapes below it takes, gets the same settings:
#
# - `gpu`: a Modal GPU string such as `H100` or `H100:2`; the count is vLLM's tensor-parallel size.
# - `@modal.concurrent(max_inputs=...)`: requests one container takes at once, equal to vLLM's
#   `--max-num-seqs` so that Modal scales out exactly when the engine's batch is full.
# - `scaledown_window`: how long an idle container stays up (and billed) before Modal scales to zero.
# - `timeout`: the longest a single request may run; `startup_timeout`: the longest a container may take
#   to come up, the same budget the web server gets to open its port.
# - `include_source=False`: `add_local_python_source` above already ships the package; Modal must not
#   add a second copy of it.

app = modal.App(cfg.app_name, include_source=False)

container = {
    "image": image,
    "gpu": cfg.gpu,
    "scaledown_window": cfg.scaledown_window,
    "timeout": cfg.timeout,
    "startup_timeout": cfg.effective_startup_timeout(),
    "volumes": {engine.HF_CACHE_DIR: hf_cache, engine.VLLM_CACHE_DIR: vllm_cache},
    "secrets": secrets,
    "region": cfg.region,
}
web_server = {
    "port": cfg.port,
    "startup_timeout": cfg.effective_startup_timeout(),
    "requires_proxy_auth": cfg.requires_proxy_auth,
}


def engine_env(base: Mapping[str, str]) -> dict[str, str]:
    """The engine's environment: the container's, plus build_command's, plus the package on PYTHONPATH."""
    package_parent = str(Path(gpt_oss_modal.__file__).resolve().parent.parent)
    pythonpath = os.pathsep.join(p for p in (package_parent, base.get("PYTHONPATH", "")) if p)
    return {**base, **command.env, "PYTHONPATH": pythonpath}


def start_engine() -> subprocess.Popen:
    # The image already has command.env; merging it again keeps build_command the authority even if a
    # Secret set one of the same names. VLLM_API_KEY, when configured, arrives through os.environ from
    # its Secret. vLLM loads our bearer-key middleware (gpt_oss_modal.auth) by import path, and the
    # `vllm` console script does not see the directory Modal mounted the package in: put it on PYTHONPATH.
    return subprocess.Popen(command.argv, env=engine_env(os.environ))


# ### Without snapshots: a function
#
# `serve` starts vLLM in the background and returns; Modal does the waiting. Every cold start pays the
# whole start-up: weights from the volume into the GPU, torch.compile (mostly from the cache volume),
# CUDA-graph capture (docs/cold-start.md has the arithmetic).

if not cfg.snapshot:

    @app.function(**container)
    @modal.concurrent(max_inputs=cfg.max_inputs)
    @modal.web_server(**web_server)
    def serve() -> None:
        start_engine()


# ### With snapshots: a class that starts once, sleeps, and is restored from then on
#
# `snapshot = true` asks Modal for a memory snapshot that includes the GPU's memory (an alpha feature:
# `experimental_options={"enable_gpu_snapshot": True}`), taken after the `@modal.enter(snap=True)` hook
# returns. That hook does the whole expensive start once: starts vLLM, waits for /health, sends one
# request so that every lazy initialisation has run, then puts the engine to sleep (`POST /sleep?level=1`:
# the weights move to CPU memory and the KV cache is freed, so the snapshot holds a few GiB of GPU
# memory, not all of it). Later cold starts restore that state instead, and the `snap=False` hook only
# wakes the engine (`POST /wake_up`: the weights go back to the GPU, the KV cache is allocated again).
# build_command added `--enable-sleep-mode` and VLLM_SERVER_DEV_MODE=1, which enables those two routes.
#
# Modal snapshots deployed apps only: under `modal run` both hooks run on every start. The bearer-key
# middleware guards /sleep and /wake_up like every other route, so the hooks send the key too.

ENGINE_URL = f"http://127.0.0.1:{cfg.port}"
WARM_UP_PROMPT = "Say hello in one short sentence."
WAKE_TIMEOUT = 5 * MINUTES  # weights back from CPU memory: seconds, not minutes


def engine_request(method: str, path: str, body: dict | None = None, timeout: float = 5 * MINUTES) -> bytes:
    """One request to the engine inside this container, with the bearer key when one is configured."""
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(auth.ENV_VAR)
    if cfg.api_key_secret and key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else b"" if method == "POST" else None
    request = urllib.request.Request(ENGINE_URL + path, data=data, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def wait_ready(process: subprocess.Popen, timeout: float) -> None:
    """Poll /health until the engine answers 200; fail at once if it exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vLLM exited with code {process.returncode} before it was ready")
        try:
            engine_request("GET", "/health", timeout=5)
            return
        except (urllib.error.URLError, OSError):
            time.sleep(1)
    raise TimeoutError(f"vLLM was not healthy within {timeout:.0f} s")


def warm_up() -> None:
    engine_request(
        "POST",
        "/v1/chat/completions",
        {
            "model": SERVED_MODEL_NAME,
            "messages": [{"role": "user", "content": WARM_UP_PROMPT}],
            "max_tokens": 16,
        },
    )


if cfg.snapshot:

    @app.cls(**container, enable_memory_snapshot=True, experimental_options={"enable_gpu_snapshot": True})
    @modal.concurrent(max_inputs=cfg.max_inputs)
    class Server:
        @modal.enter(snap=True)
        def start(self) -> None:
            self.engine = start_engine()
            wait_ready(self.engine, timeout=cfg.effective_startup_timeout())
            warm_up()
            engine_request("POST", "/sleep?level=1")

        @modal.enter(snap=False)
        def wake_up(self) -> None:
            engine_request("POST", "/wake_up")
            wait_ready(self.engine, timeout=WAKE_TIMEOUT)

        @modal.web_server(**web_server)
        def serve(self) -> None:
            pass  # the engine is already listening: the enter hooks started (or woke) it

        @modal.exit()
        def stop(self) -> None:
            self.engine.terminate()


def web_endpoint() -> modal.Function:
    """The web endpoint of whichever shape this config deploys (for `get_web_url`)."""
    return Server().serve if cfg.snapshot else serve


# ## `modal run`: a temporary server and a smoke test
#
# `modal run` deploys the app ephemerally, runs this on your machine, and stops the app when it returns.
# The first request wakes a container, so we wait for /health (the startup timeout plus a few minutes
# for Modal to schedule the GPU and pull the image), then send a chat completion and a streamed one and
# check both. Proxy auth tokens are created at https://modal.com/settings/proxy-auth-tokens; the smoke
# test reads one from MODAL_KEY / MODAL_SECRET.

SCHEDULING_MARGIN = 5 * MINUTES


@app.local_entrypoint()
def main() -> None:
    from gpt_oss_modal import client

    problem = precheck.run_problem(cfg)  # checked at import already; here too for a direct call
    if problem:
        precheck.refuse(problem)
    key, secret = modal_ops.proxy_credentials()
    api_key = os.environ.get("VLLM_API_KEY") or os.environ.get("GPT_OSS_API_KEY")
    url = web_endpoint().get_web_url()
    gpus = f"{plan.gpu} x{plan.gpu_count}" if plan.gpu_count > 1 else plan.gpu
    print(f"{cfg.model} on {gpus}, {plan.max_model_len:,}-token context, boot {cfg.boot}: {url}", flush=True)

    last_report = [0.0]

    def tick(elapsed: float, status: str) -> None:
        if elapsed - last_report[0] >= 30:
            last_report[0] = elapsed
            print(f"  waiting for the server ({elapsed / 60:.1f} min): {status}", flush=True)

    try:
        headers = client.auth_headers(modal_key=key, modal_secret=secret)
        seconds = client.wait_healthy(
            url,
            timeout=cfg.effective_startup_timeout() + SCHEDULING_MARGIN,
            headers=headers,
            api_key=api_key,
            on_tick=tick,
        )
        print(f"healthy after {seconds:.0f} s", flush=True)
        result = client.smoke_test(
            client.openai_client(url, api_key=api_key, modal_key=key, modal_secret=secret)
        )
    except (TimeoutError, RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"reply: {result.text.strip()}")
    if result.reasoning:
        print(f"reasoning: {' '.join(result.reasoning.split())[:300]}")
    print(f"streamed: {result.stream_text.strip()}")
    print(f"ok: {result.summary()}")
