"""Study v4's `fork-noll` arm: vLLM 0.26 without its CuTe-DSL router-GEMM warm-up.

On Hopper, with nvidia-cutlass-dsl installed (the container's lock has it), vLLM 0.26's kernel warm-up
compiles a "low-latency bf16 router GEMM" at every start for the router shapes of DeepSeek-family models
(`vllm.model_executor.warmup.kernel_warmup._LL_BF16_WARMUP_MODEL_SHAPES`), 16 batch sizes each, into
memory: 10.7-19.0 s per start on an H200 (benchmarks/results_v4). gpt-oss's router is a plain linear layer
with a bias and never calls that kernel. With this folder first on PYTHONPATH, the module's list of shapes
is emptied as it is imported, in every process, so the warm-up compiles nothing; everything else is vLLM's.
"""

import importlib.abc
import importlib.util
import sys

TARGET = "vllm.model_executor.warmup.kernel_warmup"


class _EmptyTheShapes(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)  # find the real module with the other finders
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        real_exec = spec.loader.exec_module

        def exec_module(module):
            real_exec(module)
            if hasattr(module, "_LL_BF16_WARMUP_MODEL_SHAPES"):
                module._LL_BF16_WARMUP_MODEL_SHAPES = ()
                print(f"[study] {TARGET}._LL_BF16_WARMUP_MODEL_SHAPES emptied", file=sys.stderr, flush=True)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _EmptyTheShapes())
