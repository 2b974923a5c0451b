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

import probe_runs

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


def main() -> None:
    ap = probe_runs.parser(__doc__)
    ap.add_argument("--model", required=True, help="a directory with the model's config.json and tokenizer")
    a = ap.parse_args()
    envs = probe_runs.fixes_envs()
    argv = [a.python, "-c", PROBE, a.model]
    runs = probe_runs.alternating({arm: (argv, env) for arm, env in envs.items()}, a.repeats)
    probe_runs.print_table(
        runs, ("API server", "chat-template warm-up", "harmony model"), "warmup_s", "harmony"
    )
    probe_runs.write(a.out, {"python": a.python, "model": a.model, "cores": os.cpu_count(), "runs": runs})


if __name__ == "__main__":
    main()
