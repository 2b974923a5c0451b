"""Study arm `product-noprof` (study_v4.py): vLLM 0.26 without its CUDA-graph memory profiling.

Before it sizes the KV cache, vLLM 0.26 captures two throw-away CUDA graphs per mode to estimate the graph
pool (2.3 s of a warm restart on the H200: "Profiling CUDA graph memory" to "Estimated CUDA graph memory").
`VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0` only stops it from using the estimate; the capture still
runs (vllm-project/vllm#42147). Here, with that variable at 0, the profiling returns 0 at once, which is what
the pending upstream fix does; the KV cache then also gets the graph pool's share (0.08 GiB with `fast` on
the H200), and the graphs take it beyond --gpu-memory-utilization. The arm measures the time only.

The product's own sitecustomize (server/_vllm_site, first on PYTHONPATH) runs this one after itself.
"""

import importlib.abc
import importlib.util
import os
import sys

MODULE = "vllm.v1.worker.gpu_model_runner"


class _SkipGraphProfile(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != MODULE:
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


if os.environ.get("VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS") == "0" and MODULE not in sys.modules:
    sys.meta_path.insert(0, _SkipGraphProfile())
