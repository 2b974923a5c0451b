"""Rehearse the Modal container's life on a bare GPU host, with the code that runs inside it.

    PYTHONPATH=src python3 benchmarks/rehearse.py --gpu 0 --out /root/res/rehearsal

The config is the snapshot deployment of gpt-oss-20b (`boot = "fast"`, `snapshot = true`, a bearer key from
a Secret), and the engine command is `engine.build_command(cfg, target="modal")` verbatim: vLLM loads
`openai/gpt-oss-20b` at the pinned revision from $HF_HOME (laid out by prepare_host.sh with the real
config.json and an offline tokenizer), with `--load-format dummy` appended because no weights reach the host.
Each lifecycle step is the `gpt_oss_modal.server.lifecycle` function the Modal hooks call, timed:

    start -> /health -> warm-up -> sleep (GPU memory while asleep) -> wake
      -> chat, streamed chat and a tool call with the official openai client through the auth middleware
      -> the same without the key (401) and the dev routes without the container secret (404) -> stop

The table (and the sizes of the start-up caches after this one start) is written to OUT/rehearsal.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from study_v2 import gpu_mem_mib  # beside this script, so on sys.path when it runs

from gpt_oss_modal.core import engine
from gpt_oss_modal.core.config import DeployConfig
from gpt_oss_modal.server import lifecycle, warmup

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def status_of(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> int:
    req = urllib.request.Request(
        url, headers=headers or {}, method=method, data=b"" if method == "POST" else None
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


class Steps:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def __call__(self, name: str, fn, *args, **kwargs):
        t0 = time.monotonic()
        try:
            value = fn(*args, **kwargs)
        except Exception as e:
            self.rows.append(
                {"step": name, "s": round(time.monotonic() - t0, 2), "error": f"{type(e).__name__}: {e}"}
            )
            print(f"  {name}: FAILED {e}", flush=True)
            raise
        self.rows.append({"step": name, "s": round(time.monotonic() - t0, 2)})
        print(f"  {name}: {self.rows[-1]['s']} s", flush=True)
        return value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpu", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("/root/res/rehearsal"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    os.environ["CUDA_VISIBLE_DEVICES"] = str(a.gpu)
    key = secrets.token_hex(16)
    os.environ["VLLM_API_KEY"] = key  # on Modal it arrives from the Secret
    cfg = DeployConfig(
        model="20b",
        gpu="H200",
        boot="fast",
        snapshot=True,
        api_key_secret="gpt-oss-key",
        max_inputs=50,
        max_model_len=32768,
        extra_vllm_args=["--load-format", "dummy"],
    )
    command = engine.build_command(cfg, target="modal")
    print("engine:", command.shell(), flush=True)
    base = f"http://127.0.0.1:{cfg.port}"
    steps = Steps()
    result: dict = {"argv": command.argv, "env": command.env}
    # vLLM's log goes to OUT/server.log through the launcher; the container module starts exactly `command`.
    launcher = ["bash", "-c", 'exec "$@" >"$0" 2>&1', str(a.out / "server.log"), *command.argv]
    eng = steps("start engine (spawn)", lifecycle.start_engine, cfg, command, argv=launcher)
    try:
        steps("wait for /health", lifecycle.wait_ready, eng, 480)
        warm = steps("warm-up", warmup.warm_up, eng, lifecycle.WARM_UP_MAX_S)
        result["warm_up"] = warm.summary()
        result["gpu_mem_mib_awake"] = gpu_mem_mib(a.gpu)
        steps("sleep (level 1)", lifecycle.sleep, eng, lifecycle.SLEEP_MAX_S)
        result["gpu_mem_mib_asleep"] = gpu_mem_mib(a.gpu)
        steps("wake up", lifecycle.wake, eng, lifecycle.WAKE_MAX_S)
        result["gpu_mem_mib_woken"] = gpu_mem_mib(a.gpu)

        from openai import OpenAI

        oai = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=120)
        msg = [{"role": "user", "content": "Say hello."}]
        reply = steps(
            "chat completion", oai.chat.completions.create, model="llm", messages=msg, max_tokens=32
        )
        result["chat_tokens"] = reply.usage.completion_tokens

        def streamed() -> int:
            chunks = list(oai.chat.completions.create(model="llm", messages=msg, max_tokens=32, stream=True))
            return len(chunks)

        result["stream_chunks"] = steps("streamed chat", streamed)

        def tool_call() -> str:
            r = oai.chat.completions.create(
                model="llm",
                messages=[{"role": "user", "content": "Weather in Paris?"}],
                tools=[TOOL],
                max_tokens=64,
            )
            return r.choices[0].finish_reason

        # Random weights pick tokens at random: the request and its parsing must work, the call is luck.
        result["tool_request_finish_reason"] = steps("chat with tools", tool_call)
        result["status_without_key"] = status_of(base + "/v1/models")
        result["status_with_key"] = status_of(base + "/v1/models", {"Authorization": f"Bearer {key}"})
        result["dev_routes_with_user_key_only"] = {
            path: status_of(base + path, {"Authorization": f"Bearer {key}"}, method)
            for path, method in (("/sleep", "POST"), ("/wake_up", "POST"), ("/is_sleeping", "GET"))
        }
        result["dev_route_with_container_secret"] = status_of(base + "/is_sleeping", eng.headers(dev=True))
    finally:
        steps("stop", lifecycle.stop, eng)
    result["steps"] = steps.rows
    result["gpu_mem_mib_after_stop"] = gpu_mem_mib(a.gpu)
    caches = {
        k: v for k, v in command.env.items() if k.endswith(("_CACHE_DIR", "_CACHE_ROOT", "HF_HOME", "_PATH"))
    }
    result["cache_bytes"] = {k: dir_bytes(Path(v)) for k, v in caches.items() if v.startswith("/")}
    (a.out / "rehearsal.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k not in ("argv", "env")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
