"""vLLM's look at the model's class, cached on a CPU before the first GPU container needs it.

Before it starts the engine, vLLM's API server learns what the served architecture supports (text
generation, pipeline parallelism, ...) by importing the model's class in a Python process of its own
(`python -m vllm.model_executor.models.registry`: vLLM and torch imported a second time, to keep CUDA out of
the API server), and caches the answer under VLLM_CACHE_ROOT/modelinfos, keyed by a hash of the model
module's source. With that cache on the vllm-cache volume, only a first container pays: 15 s of study v5's
first start on an H200 (docs/cold-start.md). Nothing in the answer depends on a GPU, so the weights
download, a CPU function on the same image, has the same vLLM write it while the weights arrive (`start`,
then `finish`).

    python -m gpt_oss_modal.server.model_info GptOssForCausalLM   # with the engine's environment
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from gpt_oss_modal.server import oneshot

ARCHITECTURE = "GptOssForCausalLM"  # gpt-oss-20b's, gpt-oss-120b's and the tiny checkpoint's
# With vLLM 0.26 (CUDA build) on 2 CPU cores the inspection took 14-22 s; a hang is not that.
TIMEOUT_S = 300.0


def inspect(architecture: str) -> Path:
    """vLLM's own inspection of `architecture`, which caches its answer; the file it cached it in.
    LookupError where this vLLM does not register the architecture as a lazily imported class, or cached
    nothing (vLLM logs why)."""
    import vllm.envs
    from vllm.model_executor.models.registry import ModelRegistry

    model = getattr(ModelRegistry, "models", {}).get(architecture)
    if not callable(getattr(model, "inspect_model_cls", None)):
        raise LookupError(f"this vLLM's model registry has no lazily imported {architecture}")
    model.inspect_model_cls()
    # vLLM names the file after the model's module and class: vllm-model_executor-models-gpt_oss-<class>.json
    cached = sorted(Path(vllm.envs.VLLM_CACHE_ROOT, "modelinfos").glob(f"*-{architecture}.json"))
    if not cached:
        raise LookupError(
            f"vLLM inspected {architecture} but cached nothing under {vllm.envs.VLLM_CACHE_ROOT}"
        )
    return cached[0]


def start(env: Mapping[str, str], architecture: str = ARCHITECTURE) -> subprocess.Popen[str]:
    """Inspect `architecture` in a process with the engine's environment `env` (its VLLM_CACHE_ROOT)."""
    return oneshot.launch([sys.executable, "-m", __name__, architecture], env)


def finish(proc: subprocess.Popen[str], log: oneshot.Log, *, timeout: float = TIMEOUT_S) -> bool:
    """Wait for `start`'s process; True when vLLM cached its answer. A failure is logged, not raised."""
    lines = oneshot.collect(proc, timeout, log, "vLLM's model inspection", "the first engine inspects it")
    if lines is None:
        return False
    log(lines[-1])
    return True


def main(argv: list[str] | None = None) -> int:
    (architecture,) = argv if argv is not None else sys.argv[1:]
    print(f"vLLM's model info for {architecture} cached: {inspect(architecture)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
