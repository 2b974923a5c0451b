"""What study v4's engines run at start-up besides the product's own fixes (`server/_vllm_site`, which runs
this file after itself where it is first on PYTHONPATH; the arms without it have only this one).

**The container's packages only** (`STUDY_HIDE_MODULES`: a file of top-level module names, one per line,
made by `hidden_modules.py` on the GPU host). The host has packages the container's lock does not (jax,
scipy, pandas, ... 114 of them), and vLLM and its dependencies import some of them when present: scipy,
pandas and jax added 1.4 s to importing vLLM's API server on a CPU machine (docs/performance.md). Each name is set to None in
`sys.modules`, so `import name` fails and `importlib.util.find_spec(name)` answers None, as if not installed.

**No CUDA-graph memory profiling** (arm `product-noprof`, `VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0`).
Before it sizes the KV cache, vLLM 0.26 captures two throw-away CUDA graphs per mode to estimate the graph
pool (2.3 s of a warm restart on the H200: "Profiling CUDA graph memory" to "Estimated CUDA graph
memory"). The variable at 0 only stops vLLM from using the estimate; the capture still runs
(vllm-project/vllm#42147). Here the profiling then returns 0 at once, what the pending upstream fix does;
the KV cache also gets the graph pool's share (0.08 GiB with `fast` on the H200), and the graphs take it
beyond --gpu-memory-utilization. The arm measures the time only.
"""

import importlib.abc
import importlib.util
import os
import sys

GRAPH_PROFILE_MODULE = "vllm.v1.worker.gpu_model_runner"


def hide_modules(path: str) -> None:
    with open(path) as f:
        for name in f.read().split():
            if name not in sys.modules:  # never one already imported for real
                sys.modules[name] = None


class _SkipGraphProfile(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != GRAPH_PROFILE_MODULE:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            runner = getattr(module, "GPUModelRunner", None)
            if runner is not None and hasattr(runner, "profile_cudagraph_memory"):
                # no line of its own: the log then lacks vLLM's "Profiling CUDA graph memory"
                runner.profile_cudagraph_memory = lambda self: 0

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("STUDY_HIDE_MODULES"):
    hide_modules(os.environ["STUDY_HIDE_MODULES"])
if (
    os.environ.get("VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS") == "0"
    and GRAPH_PROFILE_MODULE not in sys.modules
):
    sys.meta_path.insert(0, _SkipGraphProfile())
