"""The JavaScript clients the end-to-end tests drive (Codex CLI, the Vercel AI SDK), installed from the npm
registry at the versions pinned in tests/e2e/node/package-lock.json.

`npm ci` runs once into a cache directory named by the digest of the lock, and a later test (or run) with
the same lock finds it there; CI installs it on its first use. A missing Node or npm, or a failed install,
fails the test's set-up: nothing is skipped for want of a tool.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SOURCE = Path(__file__).with_name("node")
FILES = ("package.json", "package-lock.json")
MARKER = ".installed"
# A bound on a hang; the install itself takes seconds (Codex's binary is the bulk, ~100 MB).
INSTALL_TIMEOUT = 900


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gpt-oss-modal-tests"
    return Path(os.environ.get("GPT_OSS_E2E_NODE_CACHE") or default)


def install() -> Path:
    """The directory whose node_modules holds the pinned packages (and whose scripts can import them)."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(
                f"{tool} is not on PATH: the Node clients' tests need Node.js 18 or later", pytrace=False
            )
    digest = hashlib.sha256(b"".join((SOURCE / f).read_bytes() for f in FILES)).hexdigest()[:16]
    home = cache_root() / f"node-{digest}"
    if (home / MARKER).exists():
        return home
    home.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        shutil.copyfile(SOURCE / f, home / f)
    r = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=home,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
    )
    if r.returncode != 0:
        pytest.fail(
            f"npm ci of {SOURCE} failed (exit {r.returncode}):\n{r.stdout}\n{r.stderr}", pytrace=False
        )
    (home / MARKER).write_text(digest)
    return home


def script(home: Path, name: str) -> Path:
    """A script from tests/e2e/node, copied next to the installed node_modules so that its imports resolve."""
    target = home / name
    shutil.copyfile(SOURCE / name, target)
    return target
