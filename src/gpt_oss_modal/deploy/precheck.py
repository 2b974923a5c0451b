"""What `modal run` needs on this machine, checked before Modal builds anything.

`modal run` imports the app, builds the image, starts an ephemeral app and only then calls the local
entrypoint (`modal_app.main`), whose smoke test needs a proxy auth token for a private endpoint, the
bearer key when vLLM demands one, and the client packages. Each of those is known on this machine in
milliseconds, so the app module checks them when `modal run` imports it, and `gpt-oss-modal run` checks
them before it calls Modal: a missing one costs one line, not an image build and a GPU start-up.

Nothing here imports the Modal SDK: the CLI uses it whether or not the SDK is installed.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping
from typing import NoReturn

from gpt_oss_modal.core.config import DeployConfig
from gpt_oss_modal.deploy.modal_ops import PROXY_KEY_ENV, PROXY_SECRET_ENV, proxy_credentials
from gpt_oss_modal.install import install_hint

# What the smoke test imports (gpt_oss_modal.clients.openai_api): both are dependencies of the package itself.
CLIENT_PACKAGES = ("openai", "httpx")
API_KEY_ENVS = ("VLLM_API_KEY", "GPT_OSS_API_KEY")


def run_problem(cfg: DeployConfig, env: Mapping[str, str] | None = None) -> str | None:
    """None when `modal run`'s smoke test can run from here; else one line saying what to set or install."""
    env = os.environ if env is None else env
    key, secret = proxy_credentials(env)
    if cfg.requires_proxy_auth and not (key and secret):
        return (
            "the smoke test needs a Modal proxy auth token for the private endpoint: create one at "
            f"modal.com/settings/proxy-auth-tokens and set {PROXY_KEY_ENV}=wk-... and {PROXY_SECRET_ENV}=ws-..."
        )
    if cfg.api_key_secret and not any(env.get(name) for name in API_KEY_ENVS):
        return f"the smoke test needs the key in Secret {cfg.api_key_secret!r}: set VLLM_API_KEY to the same value"
    missing = [name for name in CLIENT_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        packages = f"the {' and '.join(missing)} package" + ("s" if len(missing) > 1 else "")
        return f"the smoke test needs {packages}: {install_hint('modal')}"
    return None


def modal_cli_command() -> str | None:
    """The `modal` CLI command that is importing the app ("run", "deploy", "serve", "shell"...), or None.

    Modal's CLI is a click application and imports the app inside its subcommand's click context (for
    `modal run`, while it resolves the function reference): the context just below the root names the
    command. None in a container, in a test or a notebook: no Modal CLI is running there.
    """
    click = sys.modules.get("click")
    entry = sys.modules.get("modal.cli.entry_point")
    if click is None or entry is None:
        return None
    ctx = click.get_current_context(silent=True)
    while ctx is not None and ctx.parent is not None and ctx.parent.parent is not None:
        ctx = ctx.parent
    if ctx is None or ctx.parent is None or ctx.parent.command is not getattr(entry, "entrypoint_cli", None):
        return None
    return ctx.command.name


def _asks_for_help() -> bool:
    return any(arg in ("--help", "-h") for arg in sys.argv[1:])


def refuse(message: str) -> NoReturn:
    """End a Modal CLI command with one line on stderr and exit code 2 (no traceback)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def under_modal_cli() -> bool:
    """True while one of Modal's CLI commands imports the app on this machine."""
    return modal_cli_command() is not None


def check_modal_run(cfg: DeployConfig) -> None:
    """Under `modal run` (not deploy, serve or a container): refuse now what the smoke test would refuse later."""
    if modal_cli_command() != "run" or _asks_for_help():
        return
    problem = run_problem(cfg)
    if problem:
        refuse(problem)
