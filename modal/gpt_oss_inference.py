"""The seed's entry point, kept working: GPT-OSS behind vLLM on Modal.

    modal run modal/gpt_oss_inference.py      # temporary server + smoke test (health, chat, streamed chat)
    modal deploy modal/gpt_oss_inference.py   # persistent app `gpt-oss-vllm-inference`, served model `llm`

The app itself lives in `gpt_oss_modal.modal_app` (read it: it is written to be read) and is configured
without editing code: `GPT_OSS_*` environment variables or `gpt-oss-modal.toml` here, e.g.
`GPT_OSS_MODEL=120b GPT_OSS_GPU=H100:2 modal deploy modal/gpt_oss_inference.py`; the seed's `FAST_BOOT=1`
still means eager start-up. `gpt-oss-modal deploy` does the same with flags and checks first.

This file only re-exports the app. The container never imports it: Modal records that `serve` (or, with
`snapshot = true`, the class `Server`) is defined in `gpt_oss_modal.modal_app` and imports that module
there, from the package the app's image ships with `add_local_python_source`.
"""

try:
    from gpt_oss_modal import modal_app
except ModuleNotFoundError as e:  # a checkout without `pip install -e .`: use its src/ directly
    if e.name != "gpt_oss_modal":
        raise
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from gpt_oss_modal import modal_app

app, main = modal_app.app, modal_app.main
# The web endpoint: the function `serve`, or with `snapshot = true` the class `Server` (method `serve`).
serve = getattr(modal_app, "serve", None)
Server = getattr(modal_app, "Server", None)

__all__ = ["Server", "app", "main", "serve"]
