"""The original entry point, kept working: GPT-OSS behind vLLM on Modal.

    modal run modal/gpt_oss_inference.py      # temporary server + smoke test (health, chat, streamed chat)
    modal deploy modal/gpt_oss_inference.py   # persistent app `gpt-oss-vllm-inference`, served model `llm`

The app itself lives in `gpt_oss_modal.modal_app` (read it: it is written to be read) and is configured
without editing code: `GPT_OSS_*` environment variables or `gpt-oss-modal.toml` here, e.g.
`GPT_OSS_MODEL=120b GPT_OSS_GPU=H100:2 modal deploy modal/gpt_oss_inference.py`. This file's original
variables (GPU_CONFIG, MODEL_NAME, FAST_BOOT, MAX_MODEL_LEN, SCALEDOWN_WINDOW, MAX_INPUTS) still work, with
its defaults. `gpt-oss-modal deploy` does the same with flags and checks first.

This file only re-exports the app. The container never imports it: Modal records that the class `Server`
(and the weights download beside it) is defined in `gpt_oss_modal.modal_app` and imports that module
there, from the package the app's image ships with `add_local_python_source`.
"""

import importlib.util
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
if importlib.util.find_spec("gpt_oss_modal") is None and (SRC / "gpt_oss_modal").is_dir():
    sys.path.insert(0, str(SRC))  # a checkout without `pip install -e .`: use its src/ directly

try:
    from gpt_oss_modal import modal_app
except ModuleNotFoundError as e:
    # Only `pip install modal` done: the package, or a dependency of it (pydantic-settings ...), is missing.
    # One line saying what to install, not a traceback. A missing module of the package itself is a bug.
    if e.name is None or e.name.startswith("gpt_oss_modal."):
        raise
    try:
        from gpt_oss_modal.install import install_hint  # the standard library only
    except ModuleNotFoundError:  # not even the package: this file was copied out of its checkout
        install = "pip install 'gpt-oss-modal[modal]'"
    else:
        install = install_hint("modal")
    print(
        f"error: gpt_oss_inference.py needs the gpt-oss-modal package and its dependencies "
        f"(no module named {e.name!r}): {install}",
        file=sys.stderr,
        flush=True,
    )
    raise SystemExit(2) from None

# The app, its smoke test, and the class whose method `serve` is the web endpoint.
app, main, Server = modal_app.app, modal_app.main, modal_app.Server

__all__ = ["Server", "app", "main"]
