"""Everything the CLI does with Modal: check it can, build the `modal` command lines, ask the SDK.

The Modal SDK is an optional dependency, so nothing here imports it at module level; `modal_problem()`
says in one line what is missing (the package, or credentials) before any command calls out, instead of
a traceback minutes later. Commands that change things (deploy, run, stop, logs) run Modal's own CLI
as `python -m modal ...` with the resolved config in GPT_OSS_CONFIG_JSON, so the output, prompts and
progress are Modal's; lookups (the URL, volume sizes) use the SDK directly.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt_oss_modal.core import catalog, engine, planner
from gpt_oss_modal.core.config import CONFIG_JSON_ENV, ConfigError, DeployConfig
from gpt_oss_modal.deploy import image, weights
from gpt_oss_modal.install import install_hint

APP_MODULE = "gpt_oss_modal.modal_app"
# The app serves from one class, `Server`, whose method `serve` is the web server (a class, because only
# classes have the @modal.enter hooks that start the engine, and with snapshots start it before the
# snapshot and wake it after).
SERVER_CLASS = "Server"
SERVE_METHOD = "serve"
ENTRYPOINT = "main"  # the local entrypoint `modal run` calls: fill the caches, wait for /health, smoke test
# The app's one-off functions, each run by itself with `modal run module::function`:
FILL_FUNCTIONS = {
    "weights": "download_weights",  # CPU only: the pinned revision into the huggingface-cache volume
    "kernels": "precompile_kernels",  # the GPU (Hopper): MoE kernels into the vllm-cache volume
}
DOCTOR_FUNCTION = "doctor_probe"  # the GPU: driver, CUDA, torch, vLLM, backends (`doctor --remote`)


def endpoint_label(app_name: str) -> str:
    """The web server's label, so its URL is `https://<workspace>--<label>.modal.run`.

    `<app_name>-serve`: for the default app the URL the original deployment's function `serve` had
    (`<workspace>--gpt-oss-vllm-inference-serve.modal.run`), which Modal derived from the app's and the
    function's names; a class method's would be another, so the label keeps it. Spelled as Modal spells
    that derived subdomain: lower case, anything but letters and digits as a dash.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", app_name.lower()).strip("-")
    return f"{slug}-{SERVE_METHOD}"


# The Volumes that keep weights and compiled kernels between containers: names and mount paths together,
# in engine.CACHE_VOLUMES (the engine's environment points at the mounts).
CACHE_VOLUMES = engine.CACHE_VOLUMES

# A Modal proxy auth token (https://modal.com/settings/proxy-auth-tokens) for the private endpoint.
PROXY_KEY_ENV = "MODAL_KEY"
PROXY_SECRET_ENV = "MODAL_SECRET"


class ModalError(Exception):
    """One line for the user: what went wrong with Modal and what to do."""


# --- can we talk to Modal at all ------------------------------------------------------------------------


def modal_problem() -> str | None:
    """None when the SDK is installed and credentials are configured; else one line saying how to fix it.

    Reads Modal's own config (environment over ~/.modal.toml) the way its client does, without calling
    out: with no token the SDK would fail only after building the app, or hang on a network timeout.
    """
    try:
        from modal.config import config
    except ImportError:
        return f"the Modal SDK is not installed: {install_hint('modal')}"
    try:
        token = config.get("token_id") and config.get("token_secret")
        oauth = config.get("oauth_refresh_token")
    except Exception as e:  # a malformed ~/.modal.toml
        return f"cannot read the Modal config ({e}); run `modal setup`"
    if not (token or oauth):
        return (
            "Modal is not authenticated: run `modal setup` (or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET "
            "to a token from modal.com/settings/tokens)"
        )
    return None


def require_modal() -> None:
    problem = modal_problem()
    if problem:
        raise ModalError(problem)


def proxy_credentials(env: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """The proxy auth token id and secret from MODAL_KEY / MODAL_SECRET, if set."""
    env = os.environ if env is None else env
    return env.get(PROXY_KEY_ENV) or None, env.get(PROXY_SECRET_ENV) or None


def check_deployable(cfg: DeployConfig) -> planner.Plan:
    """The plan for a Modal deployment of cfg, or ConfigError saying why there must be none."""
    if cfg.model == catalog.TINY:
        raise ConfigError(
            "model: `tiny` runs on the local CPU engine only (gpt-oss-modal serve --local); "
            "deploy openai/gpt-oss-20b or openai/gpt-oss-120b to Modal"
        )
    plan = planner.require_fit(cfg)
    # The image installs the lock of cfg.vllm_version; without a current one there is no image to build.
    if problem := image.lock_problem(cfg.vllm_version):
        raise ConfigError(problem)
    return plan


def open_endpoint(cfg: DeployConfig) -> bool:
    """True when nothing at all guards the endpoint (--public, or proxy auth off and no API key)."""
    return not cfg.requires_proxy_auth and not cfg.api_key_secret


OPEN_ENDPOINT_WARNING = (
    "this endpoint has no authentication: anyone with the URL can call it and spend your GPU time"
)


# --- the `modal` command lines --------------------------------------------------------------------------


def modal_argv(*args: str) -> list[str]:
    # `python -m modal` rather than `modal`: the SDK this interpreter imports, whatever is on PATH.
    return [sys.executable, "-m", "modal", *args]


def deploy_argv(module: str = APP_MODULE) -> list[str]:
    return modal_argv("deploy", "-m", module)


def run_argv(module: str = APP_MODULE) -> list[str]:
    return modal_argv("run", "-m", f"{module}::{ENTRYPOINT}")


def function_argv(function: str, module: str = APP_MODULE) -> list[str]:
    """`modal run` of one of the app's functions by itself (in an ephemeral app)."""
    return modal_argv("run", "-m", f"{module}::{function}")


def stop_argv(app_name: str, *, yes: bool = False) -> list[str]:
    return modal_argv("app", "stop", app_name, *(["--yes"] if yes else []))


# The most entries `modal app logs --tail` fetches (Modal 1.6.4: modal/_logs.py _FETCH_LIMIT; above it, its
# CLI answers with a usage error after starting up).
LOGS_TAIL_MAX = 20_000


def logs_argv(
    app_name: str, *, follow: bool = False, tail: int | None = None, since: str | None = None
) -> list[str]:
    """`modal app logs`: fetch past entries (--tail / --since) or stream new ones (--follow), not both.

    Modal refuses --follow together with --tail/--since ("cannot be combined"), so this says so first,
    in words that name our flags (ValueError). Fetching and then following would leave a gap or repeats
    between the two, which nothing here could tell the user about.
    """
    if follow and (tail is not None or since):
        given = " and ".join(f for f, v in (("--tail", tail is not None), ("--since", since)) if v)
        raise ValueError(
            f"--follow streams new entries only and cannot be combined with {given}; "
            "drop --follow to fetch past entries, or drop " + given + " to follow"
        )
    if tail is not None and not 0 < tail <= LOGS_TAIL_MAX:
        raise ValueError(f"--tail {tail}: give a number of entries from 1 to {LOGS_TAIL_MAX:,}")
    args = ["app", "logs", app_name]
    if follow:
        args.append("--follow")
    if tail is not None:
        args += ["--tail", str(tail)]
    if since:
        args += ["--since", since]
    return modal_argv(*args)


def app_env(cfg: DeployConfig, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for `modal deploy/run`: the resolved config rides along as JSON.

    The app module then takes the config from GPT_OSS_CONFIG_JSON instead of resolving it again, so the
    flags given to this CLI reach the container.
    """
    env = dict(os.environ if base is None else base)
    env[CONFIG_JSON_ENV] = cfg.to_json()
    return env


def side_env(cfg: DeployConfig, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for an ephemeral app that only runs a one-off function (download, kernels, doctor):
    the same config, so the same image and volumes, but no containers kept warm, which `modal run` would
    otherwise start for min_containers and buffer_containers while the one-off function runs."""
    return app_env(cfg.model_copy(update={"min_containers": 0, "buffer_containers": 0}), base)


def call(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run a `modal` command in the foreground (its output and prompts go straight to the terminal)."""
    try:
        return subprocess.run(list(argv), env=None if env is None else dict(env)).returncode
    except KeyboardInterrupt:
        return 130


# --- SDK lookups ----------------------------------------------------------------------------------------


def _describe(e: Exception) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:300]


def deployed_url(app_name: str) -> str:
    """The URL of the deployed app's endpoint: the web server method of its class (one lookup)."""
    require_modal()
    from modal.exception import AuthError, NotFoundError

    import modal

    try:
        url = getattr(modal.Cls.from_name(app_name, SERVER_CLASS)(), SERVE_METHOD).get_web_url()
    except NotFoundError:
        raise ModalError(
            f"app {app_name!r} is not deployed (no class {SERVER_CLASS!r}): run `gpt-oss-modal deploy`"
        ) from None
    except AuthError as e:
        raise ModalError(f"Modal rejected the credentials ({_describe(e)}); run `modal setup`") from None
    except Exception as e:
        raise ModalError(f"cannot look up app {app_name!r} on Modal: {_describe(e)}") from None
    if not url:
        raise ModalError(f"app {app_name!r} has no web endpoint")
    return url


# --- what the caches hold -------------------------------------------------------------------------------


def kernels_marker(routing: Any) -> str:
    """Where, in the vllm-cache volume, the marker of precompiled MoE kernels lies: the path
    `precompile.MoeKernels.marker` gives it under the engine's TRITON_CACHE_DIR, relative to the volume."""
    triton = engine.COMPILE_CACHE_ENV["TRITON_CACHE_DIR"].removeprefix(engine.VLLM_CACHE_DIR + "/")
    return str(routing.marker(Path(triton)))


def volume_has(name: str, path: str) -> bool:
    """Whether volume `name` holds a file at `path` (one listing; False when the volume does not exist)."""
    from modal.exception import NotFoundError

    vol = _volume(name)
    if vol is None:
        return False
    try:
        return bool(vol.listdir(path))
    except (NotFoundError, FileNotFoundError):
        return False
    except Exception as e:
        raise ModalError(f"cannot list volume {name!r}: {_describe(e)}") from None


def missing_caches(cfg: DeployConfig, routing: Any | None) -> list[str]:
    """What the volumes lack for cfg, in the order to fill them: "weights" (the pinned revision, on a CPU),
    "kernels" (the MoE kernels, on the GPU; `routing` is `precompile.moe_kernels_for(cfg)`, None where
    none are precompiled). Two listings, no container."""
    require_modal()
    missing = []
    if not all(volume_has(engine.HF_CACHE.name, path) for path in weights.config_marker_paths(cfg)):
        missing.append("weights")
    if routing is not None and not volume_has(engine.VLLM_CACHE.name, kernels_marker(routing)):
        missing.append("kernels")
    return missing


@dataclass(frozen=True)
class VolumeUsage:
    name: str
    mount_path: str
    exists: bool
    files: int = 0
    bytes: int = 0


def _volume(name: str) -> Any:
    """The named Volume, hydrated; None when it does not exist (yet)."""
    from modal.exception import AuthError, NotFoundError

    import modal

    try:
        vol = modal.Volume.from_name(name)
        vol.hydrate()
    except NotFoundError:
        return None
    except AuthError as e:
        raise ModalError(f"Modal rejected the credentials ({_describe(e)}); run `modal setup`") from None
    except Exception as e:
        raise ModalError(f"cannot look up volume {name!r} on Modal: {_describe(e)}") from None
    return vol


def volume_usage() -> list[VolumeUsage]:
    """Files and bytes in each cache volume (walks the listing: the SDK has no size call)."""
    require_modal()
    from modal.types import FileEntryType

    out = []
    for name, mount in ((v.name, v.mount) for v in CACHE_VOLUMES):
        vol = _volume(name)
        if vol is None:
            out.append(VolumeUsage(name, mount, exists=False))
            continue
        files = size = 0
        try:
            for entry in vol.iterdir("/", recursive=True):
                if entry.type == FileEntryType.FILE:
                    files += 1
                    size += entry.size
        except Exception as e:
            raise ModalError(f"cannot list volume {name!r}: {_describe(e)}") from None
        out.append(VolumeUsage(name, mount, exists=True, files=files, bytes=size))
    return out


def clear_volume(name: str) -> int:
    """Delete everything in a cache volume (the volume itself stays, so deployed apps keep their mount).

    Returns how many top-level entries were removed.
    """
    names = [v.name for v in CACHE_VOLUMES]
    if name not in names:
        raise ModalError(f"{name!r} is not one of this tool's cache volumes ({', '.join(names)})")
    require_modal()
    vol = _volume(name)
    if vol is None:
        return 0
    removed = 0
    try:
        for entry in vol.listdir("/"):
            vol.remove_file(entry.path, recursive=True)
            removed += 1
    except Exception as e:
        raise ModalError(f"cannot clear volume {name!r}: {_describe(e)}") from None
    return removed


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover
