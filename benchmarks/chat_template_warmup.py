"""What vLLM's chat-template warm-up costs the API server's start for gpt-oss, with and without the product's
engine fixes (`server/_vllm_site`, first on the engine's PYTHONPATH), which skip it for harmony models.

Before it serves, vLLM 0.26's API server calls `OpenAIServingChat.warmup`: a one-message chat rendered
through the model's Jinja chat template (and a look for a multimodal processor, which loads the tokenizer
again). Each run is a fresh interpreter that builds the engine's config and renderer for MODEL (on vLLM's
CPU platform: no GPU needed), then times that call on the chat server's state as vLLM holds it for MODEL;
the arms alternate.

    python3 benchmarks/build_tokenizer.py /tmp/20b && cp benchmarks/gpt-oss-20b/config.json /tmp/20b/
    python3 benchmarks/chat_template_warmup.py --python /path/to/venv/bin/python --model /tmp/20b --repeats 4

Needs an environment with vLLM 0.26's CUDA wheel (the image's).
"""

from __future__ import annotations

import os
from pathlib import Path

import probe_runs

SITE = Path(__file__).resolve().parents[1] / "src" / "gpt_oss_modal" / "server" / "_vllm_site"
PROBE = r"""
import json, sys, time, types
from vllm import platforms
from vllm.platforms.cpu import CpuPlatform
platforms.current_platform = CpuPlatform()
from vllm.engine.arg_utils import EngineArgs
from vllm.entrypoints.openai.chat_completion.serving import OpenAIServingChat
from vllm.renderers.registry import renderer_from_config
config = EngineArgs(model=sys.argv[1], max_model_len=32768, load_format="dummy",
                    reasoning_parser="openai_gptoss").create_engine_config()
harmony = config.model_config.hf_config.model_type == "gpt_oss"  # as vLLM's OnlineRenderer decides
chat = types.SimpleNamespace(  # the state OpenAIServingChat.warmup reads
    renderer=renderer_from_config(config), online_renderer=types.SimpleNamespace(use_harmony=harmony),
    chat_template=None, chat_template_content_format="auto", default_chat_template_kwargs={})
t0 = time.perf_counter()
OpenAIServingChat.warmup(chat)
print(json.dumps({"warmup_s": time.perf_counter() - t0, "harmony": harmony}))
"""
ARMS = ("vLLM as is", "with the product's fixes")


def main() -> None:
    ap = probe_runs.parser(__doc__)
    ap.add_argument("--model", required=True, help="a directory with the model's config.json and tokenizer")
    a = ap.parse_args()
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {
        "HUMMING_DISABLE_PARALLEL_BUILD": "1"
    }
    envs = {ARMS[0]: base, ARMS[1]: base | {"PYTHONPATH": str(SITE)}}
    argv = [a.python, "-c", PROBE, a.model]
    runs = probe_runs.alternating({arm: (argv, envs[arm]) for arm in ARMS}, a.repeats)
    print(f"{a.repeats} runs per arm, {os.cpu_count()} cores; medians (min-max)")
    print("| API server | chat-template warm-up | harmony model |")
    print("| --- | --- | --- |")
    for arm, rs in runs.items():
        harmony = sorted({r["harmony"] for r in rs})
        print(f"| {arm} | {probe_runs.median_cell([r['warmup_s'] for r in rs], ' s')} | {harmony} |")
    probe_runs.write(a.out, {"python": a.python, "model": a.model, "cores": os.cpu_count(), "runs": runs})


if __name__ == "__main__":
    main()
