"""What to `pip install` for one of the package's extras: from the checkout it runs from, else from PyPI.

Only the standard library, on purpose: modal/gpt_oss_inference.py imports this module to say what to install
when the package's own dependencies (pydantic-settings, typer ...) may be missing, as after `pip install modal`.
It imports nothing from the package either, so it sits below every wing and any of them may use it.
"""

from __future__ import annotations

from pathlib import Path

DISTRIBUTION = "gpt-oss-modal"


def checkout() -> Path | None:
    """The source checkout this package runs from (its `src/gpt_oss_modal`), or None when installed from a wheel."""
    root = Path(__file__).resolve().parents[2]  # src/gpt_oss_modal/install.py -> the checkout
    if (root / "pyproject.toml").is_file() and (root / "src" / "gpt_oss_modal").is_dir():
        return root
    return None


def install_hint(extra: str) -> str:
    """The command that installs the package with `extra`: `pip install -e '.[modal]' in /path/to/checkout`."""
    root = checkout()
    if root is not None:
        return f"pip install -e '.[{extra}]' in {root}"
    return f"pip install '{DISTRIBUTION}[{extra}]'"
