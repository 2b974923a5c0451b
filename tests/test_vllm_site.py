"""The fixes every engine process runs at start-up (gpt_oss_modal/server/_vllm_site/sitecustomize.py), here
the one for vLLM releases that warm up other models' router GEMMs: real Python processes started with the
engine's own environment, over a stand-in `vllm` package that holds just the module the fix looks at."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpt_oss_modal.core import engine
from gpt_oss_modal.core.config import DeployConfig
from gpt_oss_modal.server import lifecycle

MODULE = "vllm.model_executor.warmup.kernel_warmup"

# What a process prints: the shapes list (or its absence) in itself, in a forked child and in a spawned one,
# the three ways an engine's processes come to exist.
PROBE = f"""
import multiprocessing as mp, sys

def shapes(queue=None):
    import {MODULE} as k
    got = repr(getattr(k, "_LL_BF16_WARMUP_MODEL_SHAPES", "absent")) + " " + repr(k.M_RANGE)
    if queue is None:
        return got
    queue.put(got)

def child(method):
    ctx = mp.get_context(method)
    queue = ctx.Queue()
    p = ctx.Process(target=shapes, args=(queue,))
    p.start()
    p.join()
    return queue.get(timeout=30)

if __name__ == "__main__":
    print(child("fork"))
    print(child("spawn"))
    print(shapes())
"""


def fake_modules(root: Path, modules: dict[str, str]) -> Path:
    """Stand-in modules under root, {dotted name: source}, with every package above them."""
    for name, body in modules.items():
        *packages, leaf = name.split(".")
        d = root
        for package in packages:
            d = d / package
            d.mkdir(parents=True, exist_ok=True)
            (d / "__init__.py").touch()
        (d / f"{leaf}.py").write_text(body)
    return root


def fake_vllm(root: Path, body: str) -> Path:
    """A `vllm` package under root with only MODULE, whose source is `body`."""
    return fake_modules(root, {MODULE: body})


def run_probe(
    tmp_path: Path, body: str, probe: str = PROBE, modules: dict[str, str] | None = None
) -> list[str]:
    """`probe` in a Python started with an engine's environment (build_command's, through the life cycle),
    with the stand-in vLLM (MODULE's `body`, or `modules`) after the engine's own PYTHONPATH entries."""
    command = engine.build_command(DeployConfig(model="20b", gpu="H200"), target="local-gpu")
    env = lifecycle.engine_env(command, {k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    env["PYTHONPATH"] += os.pathsep + str(fake_modules(tmp_path / "fake", modules or {MODULE: body}))
    script = tmp_path / "probe.py"
    script.write_text(probe)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, check=False, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_the_engine_environment_puts_the_fixes_first() -> None:
    command = engine.build_command(DeployConfig(model="20b", gpu="H200"), target="modal")
    env = lifecycle.engine_env(command, {"PYTHONPATH": "/elsewhere"})
    first, *rest = env["PYTHONPATH"].split(os.pathsep)
    assert first == lifecycle.VLLM_SITE_DIR
    assert (Path(first) / "sitecustomize.py").is_file()
    assert rest[-1] == "/elsewhere"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_fixed_list_of_other_models_router_shapes_is_emptied_in_every_process(tmp_path: Path) -> None:
    # vLLM 0.26's shape: a module-level tuple of (hidden, experts) for DeepSeek-family routers.
    body = "_LL_BF16_WARMUP_MODEL_SHAPES = ((6144, 264), (7168, 256))\nM_RANGE = range(1, 17)\n"
    assert run_probe(tmp_path, body) == ["() range(1, 17)"] * 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_vllm_that_takes_the_shapes_from_the_model_is_left_alone(tmp_path: Path) -> None:
    # Later releases (0.32) have no fixed list: nothing is added or changed.
    assert run_probe(tmp_path, "M_RANGE = range(1, 17)\n") == ["'absent' range(1, 17)"] * 3


# vLLM 0.26's shape: activate() sets up a hook per JIT compiler, TileLang's by importing TileLang.
JIT_MONITOR = {
    "vllm.utils.jit_monitor": (
        "HOOKED = []\n"
        "def _setup_tilelang_jit_hook():\n    import tilelang\n    HOOKED.append('tilelang')\n"
        "def _setup_triton_jit_hook():\n    HOOKED.append('triton')\n"
        "def activate():\n    _setup_triton_jit_hook()\n    _setup_tilelang_jit_hook()\n"
    ),
    "tilelang.jit": "",  # a stand-in TileLang: importing it is what the monitor's start costs
}
MONITOR_PROBE = """
import sys
if sys.argv[1:] == ["model-uses-tilelang"]:
    import tilelang
import vllm.utils.jit_monitor as m
m.activate()
print(m.HOOKED, "tilelang" in sys.modules)
"""


@pytest.mark.parametrize(
    ("model", "expected"),
    [("gpt-oss", "['triton'] False"), ("model-uses-tilelang", "['triton', 'tilelang'] True")],
)
def test_the_jit_monitor_imports_tilelang_only_for_an_engine_that_runs_it(
    tmp_path: Path, model: str, expected: str
) -> None:
    probe = MONITOR_PROBE.replace("sys.argv[1:]", repr([model]))
    assert run_probe(tmp_path, "", probe=probe, modules=JIT_MONITOR) == [expected]


def test_the_finder_is_installed_once_when_the_file_also_runs_as_a_package_module(tmp_path: Path) -> None:
    # At start-up the file runs as `sitecustomize`; vllm_entry (and tools using vLLM's Python API) import it
    # again as gpt_oss_modal.server._vllm_site.sitecustomize: still one finder on sys.meta_path.
    command = engine.build_command(DeployConfig(model="20b", gpu="H200"), target="local-gpu")
    env = lifecycle.engine_env(command, {k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    probe = (
        "import sys, gpt_oss_modal.server._vllm_site.sitecustomize\n"
        "print(sum(bool(getattr(f, '_gpt_oss_modal_finder', False)) for f in sys.meta_path))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def site_dir(root: Path, name: str, body: str) -> Path:
    d = root / name
    d.mkdir()
    (d / "sitecustomize.py").write_text(body)
    return d


def test_the_sitecustomize_it_shadows_still_runs_once(tmp_path: Path) -> None:
    # Another tool's sitecustomize may sit before the fixes on PYTHONPATH and run them itself (a profiler
    # does), or after them (a virtualenv's own): the one after runs, once, and the one before never again.
    command = engine.build_command(DeployConfig(model="20b", gpu="H200"), target="local-gpu")
    fixes = Path(lifecycle.VLLM_SITE_DIR) / "sitecustomize.py"
    before = site_dir(
        tmp_path,
        "before",
        "import importlib.util\nprint('before')\n"
        f"spec = importlib.util.spec_from_file_location('sitecustomize', {str(fixes)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n",
    )
    after = site_dir(tmp_path, "after", "print('after')\n")
    for path, expected in (
        ([lifecycle.VLLM_SITE_DIR, str(after)], ["after"]),
        ([str(before), lifecycle.VLLM_SITE_DIR, str(after)], ["before", "after"]),
    ):
        env = lifecycle.engine_env(command, {k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        env["PYTHONPATH"] = os.pathsep.join([*path, *env["PYTHONPATH"].split(os.pathsep)[1:]])
        out = subprocess.run(
            [sys.executable, "-c", "pass"], capture_output=True, text=True, env=env, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == expected


# vLLM 0.26's shape: the chat server warms up the Jinja chat template; its renderer says whether the model's
# prompts are built with harmony instead (gpt-oss). 0.32 moved `warmup` onto the renderer itself.
CHAT_SERVERS = {
    "vllm.entrypoints.openai.chat_completion.serving": (
        "WARMED = []\n"
        "class OnlineRenderer:\n    def __init__(self, harmony):\n        self.use_harmony = harmony\n"
        "class OpenAIServingChat:\n"
        "    def __init__(self, harmony):\n        self.online_renderer = OnlineRenderer(harmony)\n"
        "    def warmup(self):\n        WARMED.append(type(self).__name__)\n"
        "class OpenAIServingChatBatch(OpenAIServingChat):\n    pass\n"
    ),
    "vllm.renderers.online_renderer": (
        "WARMED = []\n"
        "class OnlineRenderer:\n    def __init__(self, harmony):\n        self.use_harmony = harmony\n"
        "    def warmup(self):\n        WARMED.append('renderer')\n"
    ),
}
CHAT_PROBE = """
from vllm.entrypoints.openai.chat_completion import serving
from vllm.renderers import online_renderer
for harmony in (True, False):
    serving.OpenAIServingChat(harmony).warmup()
    serving.OpenAIServingChatBatch(harmony).warmup()
    online_renderer.OnlineRenderer(harmony).warmup()
print(serving.WARMED, online_renderer.WARMED)
"""


def test_the_chat_template_warm_up_is_skipped_only_for_a_harmony_model(tmp_path: Path) -> None:
    got = run_probe(tmp_path, "", probe=CHAT_PROBE, modules=CHAT_SERVERS)
    assert got == ["['OpenAIServingChat', 'OpenAIServingChatBatch'] ['renderer']"]
