"""The top-level modules of this Python's packages that the container's lock does not have: what
`sitecustomize.py` hides from study v4's engines (`STUDY_HIDE_MODULES`), so that they import what a Modal
container would. A module that a locked package also provides (a namespace such as `nvidia`) stays.

    PYTHONPATH=src python3 benchmarks/study_site/hidden_modules.py > /root/hidden_modules.txt
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import sys

from gpt_oss_modal.deploy import image

# Present in any Python, or shipped into the container beside the lock (this package).
KEEP = {"pip", "_distutils_hack", "pkg_resources", "setuptools", "sitecustomize", image.PACKAGE}


def top_level(dist: md.Distribution) -> set[str]:
    """The importable top-level names a distribution installs."""
    text = dist.read_text("top_level.txt")
    if text:
        return {n.strip() for n in text.split() if n.strip()}
    names = set()
    for f in dist.files or []:
        first = f.parts[0]
        if first.endswith((".dist-info", ".egg-info", ".data", ".pth")) or first in ("..", "__pycache__"):
            continue
        name = (
            first.removesuffix(".py").split(".")[0] if f.suffix in (".py", ".so") or len(f.parts) > 1 else ""
        )
        if name.isidentifier():
            names.add(name)
    return names


def hidden(lock_pins: dict[str, str]) -> tuple[list[str], list[str]]:
    """(modules to hide, the distributions they come from)."""
    provided: set[str] = set()
    extra: dict[str, set[str]] = {}
    for dist in md.distributions():
        name = image.normalise(dist.metadata["Name"] or "")
        if name in lock_pins:
            provided |= top_level(dist)
        elif name:
            extra[name] = top_level(dist)
    modules = set().union(*extra.values()) - provided - KEEP if extra else set()
    return sorted(modules), sorted(extra)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vllm-version", default="0.26.0")
    a = ap.parse_args()
    modules, dists = hidden(image.read_lock(image.lock_path(a.vllm_version)).pins)
    print("\n".join(modules))
    print(f"{len(modules)} modules of {len(dists)} packages beyond the lock", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
