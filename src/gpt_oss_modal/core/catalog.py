"""The GPUs Modal rents and the GPT-OSS models, as data.

Everything the planner and the command builder know about hardware and models lives here, so a new GPU
or a price change is a one-line edit. Numbers are the published ones; where a number is our own estimate
the comment says so.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

GiB = 1024**3

# Modal bills GPUs by the second; these are its list prices per GPU-hour on this date.
PRICE_DATE = "2026-05-07"

# Beside the GPU, Modal bills every container's CPU and memory by the second, each at the greater of what
# the function reserves (`cpu=`, `memory=`) and what it uses (modal.com/docs/guide/resources, "Billing").
# Its list prices (modal.com/pricing: $0.0000131 per physical core per second, $0.00000222 per GiB per
# second; the same figures reported from that page on 2026-06-27), per hour here. `cpu=` counts physical
# cores, the unit these are priced in.
CPU_USD_PER_CORE_HOUR = 0.0000131 * 3600
MEMORY_USD_PER_GIB_HOUR = 0.00000222 * 3600
RESOURCE_PRICE_DATE = "2026-06-27"
RESOURCE_PRICE_SOURCE = "modal.com/pricing"


@dataclass(frozen=True)
class GPU:
    name: str  # what users type, and what Modal's `gpu=` takes
    vram_gib: float  # nvidia-smi's memory.total, in GiB (not the marketing GB); vLLM sees a little less
    compute_capability: tuple[int, int]
    usd_per_hour: float  # per GPU
    memory_tb_s: float  # published memory bandwidth, TB/s: what single-stream decode scales with
    vram_from_driver: bool = False  # vram_gib read by our own runs; else nvidia-smi's total as published

    @property
    def sm(self) -> int:
        major, minor = self.compute_capability
        return major * 10 + minor

    @property
    def arch(self) -> str:
        if self.compute_capability == (8, 9):
            return "Ada"
        return {8: "Ampere", 9: "Hopper", 10: "Blackwell"}.get(self.compute_capability[0], "unknown")


# T4 (SM 7.5) is left out on purpose: it has no bfloat16, and GPT-OSS runs in bfloat16 only.
# VRAM: nvidia-smi's memory.total in MiB / 1024. H100 and H200 as our own runs read it (benchmarks/results,
# benchmarks/results_v3); the others as nvidia-smi reports them in published logs of these cards (A100-40GB:
# the SXM4 card). What vLLM may budget is less: vram.vllm_vram_gib.
GPUS: dict[str, GPU] = {
    g.name: g
    for g in (
        GPU("L4", 23034 / 1024, (8, 9), 0.7992, 0.3),
        GPU("A10G", 23028 / 1024, (8, 6), 1.1016, 0.6),
        GPU("L40S", 46068 / 1024, (8, 9), 1.9512, 0.864),
        GPU("A100-40GB", 40960 / 1024, (8, 0), 2.0988, 1.555),
        GPU("A100-80GB", 81920 / 1024, (8, 0), 2.4984, 2.039),
        GPU("H100", 81559 / 1024, (9, 0), 3.9492, 3.35, vram_from_driver=True),
        GPU("H200", 143771 / 1024, (9, 0), 4.5396, 4.8, vram_from_driver=True),
        GPU("B200", 183359 / 1024, (10, 0), 6.2496, 8.0),
    )
}

# Spellings people use for the same card.
GPU_ALIASES = {
    "A100": "A100-40GB",
    "A100-40G": "A100-40GB",
    "A100-80G": "A100-80GB",
    "A10": "A10G",
    "H100-80GB": "H100",
}

# Modal attaches at most this many GPUs to one container.
MAX_GPUS_PER_CONTAINER = 8


@dataclass(frozen=True)
class Drafter:
    """A speculative-decoding drafter for one model: an EAGLE3 head (one decoder layer over the target's hidden
    states), pinned like the model, with its shape (for the planner's memory) and what its publisher measured.

    Its weights are counted from the shape: fc (3 x hidden -> hidden), one Llama decoder layer whose attention
    reads 2 x hidden, and an lm_head over the draft vocabulary. The embedding is not counted: vLLM shares the
    target's when the drafter's is absent or identical, as it is for heads trained with it frozen."""

    repo: str  # Hugging Face repo id
    revision: str | None  # the commit the engine loads; None: not pinned, so never deployed
    source: str  # where the pin comes from
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    draft_vocab: int  # the lm_head's rows: a mapped subset of the target's vocabulary, or all of it
    shape_source: str
    # Mean acceptance length (tokens per verify step, the bonus token included, vLLM's convention), the range
    # its publisher or a comparison reports, and at how many draft tokens.
    mean_acceptance: tuple[float, float]
    acceptance_source: str
    published_tokens: int = 7
    num_layers: int = 1
    method: Literal["eagle3"] = "eagle3"

    @property
    def params(self) -> int:
        h, i = self.hidden_size, self.intermediate_size
        q, kv = self.num_attention_heads * self.head_dim, self.num_kv_heads * self.head_dim
        layer = 2 * h * (q + 2 * kv) + q * h + 3 * h * i + 6 * h  # attention over 2h, SwiGLU MLP, norms
        return 3 * h * h + 3 * h + self.num_layers * layer + self.draft_vocab * h + h

    @property
    def weights_gib(self) -> float:
        return self.params * 2 / GiB  # bfloat16


@dataclass(frozen=True)
class Model:
    id: str  # Hugging Face repo id
    short: str
    weights_gib: (
        float  # checkpoint on disk (MXFP4 experts, bf16 rest); measured.WEIGHTS_GIB is what vLLM loads
    )
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    num_experts: int
    sliding_window: int  # every other layer attends to this many tokens only
    max_context: int
    # The Hugging Face commit the engine loads (`--revision`), so that a deploy next month serves the same
    # weights, tokenizer and chat template as today. Sources are noted where each model is defined.
    revision: str = "main"
    experts_per_token: int = 4  # num_experts_per_tok of both gpt-oss sizes
    hidden_size: int = 2880  # of both gpt-oss sizes, as is each expert's intermediate size
    expert_intermediate_size: int = 2880
    # The EAGLE3 drafter `speculative = "eagle3"` loads, and others published for the model (data only).
    drafter: Drafter | None = None
    other_drafters: tuple[Drafter, ...] = ()

    @property
    def full_attention_layers(self) -> int:
        # gpt-oss alternates sliding-window and full attention, starting with sliding.
        return self.num_layers // 2

    @property
    def sliding_layers(self) -> int:
        return self.num_layers - self.full_attention_layers


# The 20b drafter Modal's example runs; nebius's (below) has the same one-layer shape.
REDHAT_20B_DRAFTER = Drafter(
    repo="RedHatAI/gpt-oss-20b-speculator.eagle3",
    revision="97d07a21e8b7e2b667725dd92f579525c0a30d05",
    source="what Modal's gpt-oss example pins, with 7 speculative tokens "
    "(modal-labs/modal-examples, 06_gpu_and_ml/llm-serving/gpt_oss_inference.py)",
    # Its speculators config: draft_vocab_size 64000, a one-layer Llama of gpt-oss's attention shape.
    hidden_size=2880,
    intermediate_size=2880,
    num_attention_heads=64,
    num_kv_heads=8,
    head_dim=64,
    draft_vocab=64000,
    shape_source="the drafter's config.json (transformer_layer_config, draft_vocab_size)",
    mean_acceptance=(2.4, 3.0),
    acceptance_source="as reported for it on nebius/EAGLE3-gpt-oss-20b's model card",
)


MODELS: dict[str, Model] = {
    m.id: m
    for m in (
        Model(
            id="openai/gpt-oss-20b",
            short="20b",
            weights_gib=12.8,
            num_layers=24,
            num_attention_heads=64,
            num_kv_heads=8,
            head_dim=64,
            num_experts=32,
            sliding_window=128,
            max_context=131072,
            # The revision Modal's own gpt-oss example pins (modal-labs/modal-examples,
            # 06_gpu_and_ml/llm-serving/gpt_oss_inference.py, MODEL_REVISION).
            revision="d666cf3b67006cf8227666739edf25164aaffdeb",
            drafter=REDHAT_20B_DRAFTER,
            other_drafters=(
                replace(
                    REDHAT_20B_DRAFTER,
                    repo="nebius/EAGLE3-gpt-oss-20b",
                    revision=None,
                    source="not pinned: data for comparison",
                    shape_source="assumed the same as RedHat's drafter (config not read)",
                    mean_acceptance=(3.0, 3.65),
                    acceptance_source="its model card",
                ),
            ),
        ),
        Model(
            id="openai/gpt-oss-120b",
            short="120b",
            weights_gib=60.8,
            num_layers=36,
            num_attention_heads=64,
            num_kv_heads=8,
            head_dim=64,
            num_experts=128,
            sliding_window=128,
            max_context=131072,
            # The snapshot public deployments pin and cache for openai/gpt-oss-120b (Hugging Face cache paths
            # models--openai--gpt-oss-120b/snapshots/<this> in several repositories, and a test citing
            # huggingface.co/api/models/openai/gpt-oss-120b/revision/<this>); its 15 safetensors shards
            # total 65,248,893,184 bytes, the 60.8 GiB above.
            revision="b5c939de8f754692c1647ca79fbf85e8c1e70f8a",
            drafter=Drafter(
                repo="nvidia/gpt-oss-120b-Eagle3-v3",
                # One public source only: a survey of model pins that also pins openai/gpt-oss-120b at the
                # revision above; not yet checked against huggingface.co/api/models/<repo>/revision/<this>.
                revision="975baaffe27cc031ba21ae370602735d8e3df052",
                source="vLLM's gpt-oss recipe (7 speculative tokens); revision from one public pin list",
                # Not read from its config: an intermediate size of 6 x hidden and the full vocabulary, as in
                # the published gpt-oss-120b EAGLE3 configs; ~795 M parameters, which matches the 849 MB
                # Q8_0 GGUF of a gpt-oss-120b EAGLE3 head (ggml-org/gpt-oss-120b-GGUF).
                hidden_size=2880,
                intermediate_size=17280,
                num_attention_heads=64,
                num_kv_heads=8,
                head_dim=64,
                draft_vocab=201088,
                shape_source="estimate: intermediate 17280 and the full vocabulary (config not read)",
                mean_acceptance=(2.95, 2.95),
                acceptance_source="its model card, at 7 draft tokens",
            ),
        ),
    )
}


@dataclass(frozen=True)
class ContainerResources:
    """What one serving container reserves beside its GPUs (Modal's `cpu=` and `memory=`), per model.

    Without `cpu=`/`memory=` Modal reserves 0.125 core and 128 MiB, and a container may use more only where
    its host has some to spare; these are reservations, not limits (Modal's `memory=` with one number sets no
    hard limit), so what a busy container needs beyond them is borrowed, not refused.
    """

    cpu: float  # physical cores
    memory_gib: float
    # Each GPU beyond the first runs one more engine worker process (tensor parallelism): its Python, torch,
    # CUDA context, and a core to drive it.
    cpu_per_extra_gpu: float
    memory_gib_per_extra_gpu: float


# Sized from a measurement: gpt-oss-20b (`fast`) on an H200 under `vllm bench serve` at concurrency 50 (random
# 1,024 in / 512 out, 800 prompts, 0 failed), psutil over the engine's process group once a second
# (benchmarks/results_v3/s1_d_H200: rss_cpu_samples.jsonl, result.json):
#   API server 1,672 MiB RSS and 0.57 core mean (0.91 peak); engine core 2,203 MiB and 0.89 core (1.03 peak,
#   one busy Python thread); group 3,917 MiB RSS (~3.4 GiB PSS), 1.46 cores mean, 1.84 at the busiest second.
#   Idle after start-up: 3,807 MiB and 0.02 core. The host's whole memory in use peaked at 4.79 GiB, the bench
#   client and the OS included.
# - cpu: 4 cores for 20b, about twice the busiest second: the first requests also compile Triton kernels in the
#   group (ptxas was seen there), and the warm-up's burst and the precompile workers run before traffic.
# - memory: 8 GiB for 20b, twice the peak RSS rounded up. The run loaded dummy weights: real ones are read
#   through the page cache (12.8 GiB for 20b, 60.8 GiB for 120b), which the kernel drops under pressure and
#   which is not reserved here. Modal bills the greater of the reservation and what the container uses, so
#   whatever of it Modal counts as use is billed while it is held either way; reserving it would bill it for the
#   container's whole life.
# - gpt-oss-120b was not measured, so its numbers are estimates: the API server and engine core barely depend on
#   the model (the tokenizer, the streams and the scheduler are the same; the weights live on the GPU), and the
#   one part that grows with it, the weights' page cache, is not reserved. So: 20b's 4 cores and 8 GiB.
# - Each GPU beyond the first adds a worker process at tensor parallelism: about the engine core's share,
#   1 core and 5 GiB (twice its 2.2 GiB, rounded up).
CONTAINER_RESOURCES: dict[str, ContainerResources] = {
    "openai/gpt-oss-20b": ContainerResources(
        cpu=4.0, memory_gib=8.0, cpu_per_extra_gpu=1.0, memory_gib_per_extra_gpu=5.0
    ),
    "openai/gpt-oss-120b": ContainerResources(  # an estimate: see above
        cpu=4.0, memory_gib=8.0, cpu_per_extra_gpu=1.0, memory_gib_per_extra_gpu=5.0
    ),
}

# Host RAM a snapshotted engine needs beyond its sleeping weights (sleep level 1 moves them to pinned host
# memory, and the snapshot holds them): the API server and engine-core processes and the page cache of
# reading the weights. An estimate, generous on purpose: `memory=` is a reservation, so what a container
# uses beyond it is not refused, but a snapshot restore must find the room on the host it lands on.
SNAPSHOT_HEADROOM_GIB = 16

# The embedded tiny checkpoint for machines with no GPU (built offline, see gpt_oss_modal.local.tiny).
TINY = "tiny"

MODEL_ALIASES = {m.short: m.id for m in MODELS.values()} | {m.id.split("/")[1]: m.id for m in MODELS.values()}

# Which kernels vLLM picks for MXFP4 mixture-of-experts and for attention with sinks, by GPU family.
# Below Hopper there is no native MXFP4 path, so vLLM dequantises on the fly with Marlin kernels.
Kernel = Literal["marlin", "triton", "flashinfer-trtllm"]


def moe_kernel(gpu: GPU) -> Kernel:
    if gpu.sm >= 100:
        return "flashinfer-trtllm"
    if gpu.sm >= 90:
        return "triton"
    return "marlin"


def attention_backend(gpu: GPU) -> str:
    if gpu.sm >= 100:
        return "FLASHINFER"
    if gpu.sm >= 90:
        return "FLASH_ATTN"  # FlashAttention 3 supports gpt-oss's attention sinks on Hopper
    return "TRITON_ATTN"


def resolve_gpu_name(name: str) -> str | None:
    key = name.strip().upper()
    for canonical in GPUS:
        if canonical.upper() == key:
            return canonical
    for alias, canonical in GPU_ALIASES.items():
        if alias.upper() == key:
            return canonical
    return None


def resolve_model_id(name: str) -> str | None:
    key = name.strip()
    if key.lower() == TINY:
        return TINY
    for candidate in (key, key.lower()):
        if candidate in MODELS:
            return candidate
        if candidate in MODEL_ALIASES:
            return MODEL_ALIASES[candidate]
    return None
