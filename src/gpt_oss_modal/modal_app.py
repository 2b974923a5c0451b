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

import os
import sys

import modal
from gpt_oss_modal import container, engine, modal_ops
from gpt_oss_modal.config import CONFIG_JSON_ENV, load_config

MINUTES = 60  # seconds

# ## What to run
#
# Modal imports this file twice: once on your machine, to build and register the app, and once in every
# container it starts. Your machine has the flags, the `GPT_OSS_*` environment and `gpt-oss-modal.toml`;
# the container has none of them. So the config is resolved here, once, and shipped to the container as
# JSON in a Secret (below); in the container `GPT_OSS_CONFIG_JSON` is set and `load_config` takes it
# verbatim. Both sides therefore compute the same engine command from the same config.

cfg = load_config().config

# Refuse what cannot work before anything is built or billed: the tiny checkpoint runs on vLLM's CPU
# build only (`gpt-oss-modal serve --local`), and a model that does not fit the GPU would only crash
# minutes into a paid container start-up; the planner says why and names a GPU that fits.
plan = modal_ops.check_deployable(cfg)
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
# One container per replica runs one `vllm serve`. Every replica, whichever of the two shapes below it
# takes, gets the same settings:
#
# - `gpu`: a Modal GPU string such as `H100` or `H100:2`; the count is vLLM's tensor-parallel size.
# - `@modal.concurrent(max_inputs=...)`: requests one container takes at once, equal to vLLM's
#   `--max-num-seqs` so that Modal scales out exactly when the engine's batch is full.
# - `scaledown_window`: how long an idle container stays up (and billed) before Modal scales to zero.
# - `timeout`: the longest a single request may run; `startup_timeout`: the longest a container may take
#   to come up (weights download + compile on a cold start).
# - `include_source=False`: `add_local_python_source` above already ships the package; Modal must not
#   add a second copy of it.

app = modal.App(cfg.app_name, include_source=False)

replica = {
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

# ### Ready means warmed up
#
# The steps of a start-up are plain functions in `gpt_oss_modal.container` (they run the same outside
# Modal): start vLLM, wait for /health, warm up. The warm-up sends one long prompt and one burst of
# `max_inputs` concurrent short ones, so the kernels the first real burst would compile on first use are
# compiled before any user waits on them; it is bounded and logs what it did.
#
# Traffic must not arrive before that, and an open port does not mean ready: vLLM binds its port before
# it loads the engine (it accepts connections once the engine is up), and even then the first burst would
# compile kernels while users wait. What Modal 1.6 does in the container
# (modal/_runtime/user_code_imports.py, construct_webhook_callable) is: run the `@modal.web_server`
# function's body to completion, then wait for the port to accept TCP connections, then build the
# proxy to it; only after that does the container start taking inputs (requests). The snapshot class
# runs its `@modal.enter` hooks even before that. So a body (or hook) that returns only once the engine
# is healthy and warm is what keeps every request out until then.
#
# Every step gets a share of the startup timeout (`container.startup_budget`), strictly inside it, so a
# step that hangs fails with a message of ours before Modal kills the container.

budget = container.startup_budget(cfg.effective_startup_timeout(), snapshot=cfg.snapshot)


def start_warm() -> container.Engine:
    """Start vLLM and return once it is healthy and warmed up."""
    running = container.start_engine(cfg, command)
    container.wait_ready(running, budget.ready)
    container.warm_up(running, budget.warm_up)
    return running


# ### Without snapshots: a function
#
# Every cold start pays the whole start-up: weights from the volume into the GPU, torch.compile (mostly
# from the cache volume), CUDA-graph capture, warm-up (docs/cold-start.md has the arithmetic).

if not cfg.snapshot:

    @app.function(**replica)
    @modal.concurrent(max_inputs=cfg.max_inputs)
    @modal.web_server(**web_server)
    def serve() -> None:
        start_warm()


# ### With snapshots: a class that starts once, sleeps, and is restored from then on
#
# `snapshot = true` asks Modal for a memory snapshot that includes the GPU's memory (an alpha feature:
# `experimental_options={"enable_gpu_snapshot": True}`), taken after the `@modal.enter(snap=True)` hook
# returns. That hook does the whole expensive start once: starts vLLM, waits for /health, warms up, then
# puts the engine to sleep (`POST /sleep?level=1`: the weights move to host memory and the KV cache is
# freed, so the snapshot holds a few GiB of GPU memory, not all of it). Later cold starts restore that
# state instead, and the `snap=False` hook only wakes the engine (`POST /wake_up`: the weights go back to
# the GPU, the KV cache is allocated again). The web server method has nothing left to do.
#
# - `memory`: the weights sit in host RAM while the engine sleeps (60.8 GiB for 120b), so the container
#   asks for that much plus headroom (`container.snapshot_memory_mib`).
# - /sleep and /wake_up exist only in vLLM's dev mode (build_command sets VLLM_SERVER_DEV_MODE=1 and
#   `--enable-sleep-mode`), which also serves /collective_rpc and other routes no caller should reach.
#   `start_engine` gives vLLM a random secret for this container, and the auth middleware answers every
#   dev route with a 404 unless the request carries it; only these hooks have it. They send the bearer
#   key too, when one is configured.
# - The bearer key is read when vLLM starts, before the snapshot: a key rotated in the Secret reaches
#   restored containers only after a redeploy (`container.snapshot_key_notice`).
#
# Modal snapshots deployed apps only: under `modal run` both hooks run on every start.

if cfg.snapshot:

    @app.cls(
        **replica,
        memory=container.snapshot_memory_mib(cfg),
        enable_memory_snapshot=True,
        experimental_options={"enable_gpu_snapshot": True},
    )
    @modal.concurrent(max_inputs=cfg.max_inputs)
    class Server:
        @modal.enter(snap=True)
        def start(self) -> None:
            self.engine = start_warm()
            container.sleep(self.engine, budget.sleep)

        @modal.enter(snap=False)
        def wake_up(self) -> None:
            container.wake(self.engine, budget.wake)

        @modal.web_server(**web_server)
        def serve(self) -> None:
            pass  # the hooks above already started (or woke) the engine and warmed it up

        @modal.exit()
        def stop(self) -> None:
            container.stop(self.engine)


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

    key, secret = modal_ops.proxy_credentials()
    if cfg.requires_proxy_auth and not (key and secret):
        print(
            "error: the endpoint requires Modal proxy auth: create a token at "
            "https://modal.com/settings/proxy-auth-tokens and export MODAL_KEY=wk-... MODAL_SECRET=ws-...",
            file=sys.stderr,
        )
        sys.exit(2)
    api_key = os.environ.get("VLLM_API_KEY") or os.environ.get("GPT_OSS_API_KEY")
    if cfg.api_key_secret and not api_key:
        print(
            f"error: vLLM requires the key in Secret {cfg.api_key_secret!r}: "
            "export VLLM_API_KEY to the same value",
            file=sys.stderr,
        )
        sys.exit(2)
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
