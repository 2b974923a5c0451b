"""The vllm serve command for every model x GPU class x boot mode, and for the local targets."""

from __future__ import annotations

import dataclasses
import json

import pytest

from gpt_oss_modal.core import catalog
from gpt_oss_modal.core.config import ConfigError, DeployConfig
from gpt_oss_modal.core.engine import (
    HF_CACHE_DIR,
    VLLM_CACHE_DIR,
    build_command,
    cudagraph_capture_sizes,
)
from gpt_oss_modal.core.planner import plan, require_fit


def flag(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, f"{name} appears {argv.count(name)} times in {argv}"
    return argv[argv.index(name) + 1]


# One representative per GPU class: Ampere, Ada, Hopper, Blackwell, and a tensor-parallel pair.
GPU_CLASSES = ["A10G", "L4", "L40S", "A100-40GB", "A100-80GB", "H100", "H200", "B200", "H100:2", "A10G:4"]
MODELS = ["openai/gpt-oss-20b", "openai/gpt-oss-120b"]
MODES = ["eager", "fast", "compiled"]


def configs():
    for model in MODELS:
        for gpu in GPU_CLASSES:
            for boot in MODES:
                yield DeployConfig(model=model, gpu=gpu, boot=boot)


@pytest.mark.parametrize("cfg", list(configs()), ids=lambda c: f"{c.model.split('-')[-1]}-{c.gpu}-{c.boot}")
def test_command_for_every_model_gpu_and_mode(cfg: DeployConfig) -> None:
    p = plan(cfg)
    if not p.fits:
        with pytest.raises(ConfigError) as e:
            build_command(cfg)
        assert "cheapest GPU that fits" in str(e.value) or "max_model_len" in str(e.value)
        assert cfg.model == "openai/gpt-oss-120b" and cfg.gpu_type.vram_gib < 60
        return

    cmd = build_command(cfg, target="modal")
    argv = cmd.argv
    assert argv[:3] == ["vllm", "serve", cfg.model]
    assert flag(argv, "--served-model-name") == "llm"
    assert flag(argv, "--host") == "0.0.0.0"
    assert flag(argv, "--port") == "8000"
    assert flag(argv, "--dtype") == "bfloat16"
    assert int(flag(argv, "--max-model-len")) == p.max_model_len == cmd.max_model_len
    assert int(flag(argv, "--tensor-parallel-size")) == cfg.gpu_count
    assert float(flag(argv, "--gpu-memory-utilization")) == 0.9
    assert flag(argv, "--max-num-seqs") == str(cfg.max_inputs) == "50"  # the default
    assert flag(argv, "--tool-call-parser") == "openai"
    assert "--enable-auto-tool-choice" in argv
    assert flag(argv, "--reasoning-parser") == "openai_gptoss"
    assert "--enable-prefix-caching" in argv

    if cfg.boot == "eager":
        assert "--enforce-eager" in argv
        assert "--compilation-config" not in argv
    else:
        assert "--enforce-eager" not in argv
        cc = json.loads(flag(argv, "--compilation-config"))
        sizes = cc["cudagraph_capture_sizes"]
        assert cfg.max_inputs in sizes  # every decode batch the container admits has a graph
        assert max(sizes) <= 2048 and len(sizes) <= 20  # not vLLM's 83 sizes up to 512, captured twice
        if cfg.boot == "fast":  # whole decode steps as CUDA graphs, and no torch.compile
            assert cc["mode"] == "NONE" and cc["cudagraph_mode"] == "FULL_DECODE_ONLY"
            assert max(sizes) == cfg.max_inputs
        else:
            assert "mode" not in cc and "cudagraph_mode" not in cc

    assert cmd.env["HF_HOME"] == HF_CACHE_DIR
    assert cmd.env["VLLM_CACHE_ROOT"] == VLLM_CACHE_DIR
    assert not any("KEY" in k for k in cmd.env)  # no key configured, none invented


def test_auto_context_is_reduced_on_24gb_cards_and_full_on_h100() -> None:
    l4 = build_command(DeployConfig(model="20b", gpu="L4", max_model_len="auto"))
    h100 = build_command(DeployConfig(model="20b", gpu="H100", max_model_len="auto"))
    assert int(flag(l4.argv, "--max-model-len")) < 131072
    assert int(flag(h100.argv, "--max-model-len")) == 131072
    # The default is the original's 32768, whatever the card.
    assert flag(build_command(DeployConfig(model="20b", gpu="H100")).argv, "--max-model-len") == "32768"


def test_explicit_context_and_concurrency_are_passed_through() -> None:
    cfg = DeployConfig(
        model="120b", gpu="H100", boot="compiled", max_model_len=16384, max_inputs=8, prefix_caching=False
    )
    argv = build_command(cfg).argv
    assert flag(argv, "--max-model-len") == "16384"
    assert flag(argv, "--max-num-seqs") == "8"
    assert "--no-enable-prefix-caching" in argv
    assert json.loads(flag(argv, "--compilation-config"))["cudagraph_capture_sizes"] == [
        1,
        2,
        4,
        8,
        128,
        256,
        512,
        1024,
        2048,
    ]


def test_context_that_does_not_fit_is_refused_before_anything_starts() -> None:
    cfg = DeployConfig(model="120b", gpu="A100-80GB", max_model_len=131072, gpu_memory_utilization=0.85)
    with pytest.raises(ConfigError, match=r"the largest that fits is \d+: use --max-model-len \d+"):
        build_command(cfg)


def test_extra_args_come_last_and_verbatim() -> None:
    cfg = DeployConfig(extra_vllm_args=["--kv-cache-dtype", "fp8"])
    assert build_command(cfg).argv[-2:] == ["--kv-cache-dtype", "fp8"]


def test_local_cpu_command_is_eager_offline_and_on_loopback() -> None:
    cfg = DeployConfig(model="tiny", gpu="H100", boot="compiled")
    cmd = build_command(cfg, target="local-cpu", model_path="/tmp/tiny", default_max_model_len=2048)
    assert cmd.argv[2] == "/tmp/tiny"
    assert flag(cmd.argv, "--host") == "127.0.0.1"
    assert flag(cmd.argv, "--max-model-len") == "2048"
    assert "--enforce-eager" in cmd.argv
    assert "--tensor-parallel-size" not in cmd.argv
    assert cmd.env["HF_HUB_OFFLINE"] == "1"
    assert cmd.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert "HF_HOME" not in cmd.env  # the user's own caches, not the container's


def test_the_users_context_wins_over_the_checkpoints_on_cpu() -> None:
    # `serve --local --max-model-len 2048` on the tiny model, whose checkpoint says 4096.
    cfg = DeployConfig(model="tiny", max_model_len=2048)
    cmd = build_command(cfg, target="local-cpu", model_path="/tmp/tiny", default_max_model_len=4096)
    assert flag(cmd.argv, "--max-model-len") == "2048" and cmd.max_model_len == 2048
    unset = build_command(DeployConfig(model="tiny"), target="local-cpu", default_max_model_len=4096)
    assert flag(unset.argv, "--max-model-len") == "4096"


def test_a_given_plan_is_used_as_is() -> None:
    cfg = DeployConfig(model="20b", gpu="H100")
    plan = require_fit(cfg)
    assert build_command(cfg, plan=plan) == build_command(cfg)
    smaller = dataclasses.replace(plan, max_model_len=8192)
    assert flag(build_command(cfg, plan=smaller).argv, "--max-model-len") == "8192"


def test_local_gpu_command_listens_on_loopback_only() -> None:
    cmd = build_command(DeployConfig(), target="local-gpu")
    assert flag(cmd.argv, "--host") == "127.0.0.1"
    assert "VLLM_CACHE_ROOT" not in cmd.env


@pytest.mark.parametrize("target", ["modal", "local-gpu"])
def test_every_gpu_engine_forks_its_core_uses_vllms_sampler_and_builds_nothing_ahead(target: str) -> None:
    env = build_command(DeployConfig(), target=target).env
    assert env["VLLM_WORKER_MULTIPROC_METHOD"] == "fork"  # no second import of vLLM and torch
    assert env["VLLM_USE_FLASHINFER_SAMPLER"] == "0"  # no nvcc JIT of FlashInfer's sampler at start
    assert env["HUMMING_DISABLE_PARALLEL_BUILD"] == "1"  # no background g++ for kernels gpt-oss skips


@pytest.mark.parametrize(
    "extra", [["--moe-backend", "humming"], ["--moe-backend=humming"], ["--seed", "7", "-q", "humming"]]
)
def test_an_engine_that_asks_for_humming_keeps_its_parallel_builds(extra: list[str]) -> None:
    # The switch that stops humming's builds ahead also makes it compile its kernels in one thread.
    env = build_command(DeployConfig(extra_vllm_args=extra), target="local-gpu").env
    assert "HUMMING_DISABLE_PARALLEL_BUILD" not in env
    assert env["VLLM_WORKER_MULTIPROC_METHOD"] == "fork"  # the rest of the GPU environment stays


def test_other_extra_args_leave_humming_off() -> None:
    extra = ["--moe-backend", "marlin", "--quantization", "mxfp4", "--served-model-name=humming"]
    env = build_command(DeployConfig(extra_vllm_args=extra), target="modal").env
    assert env["HUMMING_DISABLE_PARALLEL_BUILD"] == "1"


def test_the_cpu_engine_keeps_vllms_start_method() -> None:
    # vLLM's CPU platform spawns its engine core whatever the variable says; the fork was measured on GPUs.
    env = build_command(DeployConfig(model="tiny"), target="local-cpu", default_max_model_len=2048).env
    assert "VLLM_WORKER_MULTIPROC_METHOD" not in env and "VLLM_USE_FLASHINFER_SAMPLER" not in env


def test_tiny_model_has_no_gpu_command() -> None:
    with pytest.raises(ValueError, match="CPU"):
        build_command(DeployConfig(model="tiny"), target="modal")


@pytest.mark.parametrize("max_inputs", [1, 2, 3, 8, 31, 32, 64, 100, 256])
def test_capture_sizes_cover_every_batch_up_to_max_inputs(max_inputs: int) -> None:
    sizes = cudagraph_capture_sizes(max_inputs)
    assert sizes == sorted(set(sizes))
    decode = [s for s in sizes if s <= max_inputs]
    assert decode[0] == 1 and decode[-1] == max_inputs
    # Gaps stay small so padding a decode batch to the next captured size wastes little.
    assert all(b - a <= 8 for a, b in zip(decode, decode[1:]))
    # Prompt-sized graphs above the decode range, as measured in docs/performance.md.
    assert [s for s in sizes if s > max_inputs] == [s for s in (128, 256, 512, 1024, 2048) if s > max_inputs]


def test_default_capture_sizes_are_the_measured_ones() -> None:
    assert cudagraph_capture_sizes(32) == [1, 2, 4, 8, 16, 24, 32, 128, 256, 512, 1024, 2048]
    assert cudagraph_capture_sizes(64) == [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64, 128, 256, 512, 1024, 2048]


def test_shell_line_is_copy_pasteable() -> None:
    line = build_command(DeployConfig(boot="compiled")).shell()
    assert "vllm serve openai/gpt-oss-20b" in line
    assert '\'{"cudagraph_capture_sizes"' in line  # the JSON is quoted for the shell


def test_every_catalog_gpu_has_a_kernel_choice() -> None:
    for gpu in catalog.GPUS.values():
        assert catalog.moe_kernel(gpu) in ("marlin", "triton", "flashinfer-trtllm")
    assert catalog.moe_kernel(catalog.GPUS["A10G"]) == "marlin"
    assert catalog.moe_kernel(catalog.GPUS["H100"]) == "triton"


def test_snapshot_mode_enables_sleep_on_modal_only() -> None:
    cfg = DeployConfig(snapshot=True)
    modal_cmd = build_command(cfg, target="modal")
    assert "--enable-sleep-mode" in modal_cmd.argv and modal_cmd.env["VLLM_SERVER_DEV_MODE"] == "1"
    local = build_command(cfg, target="local-gpu")
    assert "--enable-sleep-mode" not in local.argv and "VLLM_SERVER_DEV_MODE" not in local.env


def test_boot_modes_and_the_original_fast_boot(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpt_oss_modal.core.config import load_config

    eager = build_command(DeployConfig(model="20b", gpu="H100", boot="eager")).argv
    assert "--enforce-eager" in eager and "--compilation-config" not in eager
    monkeypatch.setenv("FAST_BOOT", "1")
    fast = build_command(load_config().config).argv
    assert "--enforce-eager" not in fast
    assert json.loads(flag(fast, "--compilation-config"))["cudagraph_mode"] == "FULL_DECODE_ONLY"


def test_responses_store_is_off_unless_asked_for() -> None:
    for target in ("modal", "local-gpu", "local-cpu"):
        kw = {"model": "tiny"} if target == "local-cpu" else {}
        assert "VLLM_ENABLE_RESPONSES_API_STORE" not in build_command(DeployConfig(**kw), target=target).env
        cmd = build_command(DeployConfig(responses_store=True, **kw), target=target)
        assert cmd.env["VLLM_ENABLE_RESPONSES_API_STORE"] == "1"


def test_a_model_revision_is_passed_to_vllm_unless_it_is_main() -> None:
    pinned = "0123456789abcdef0123456789abcdef01234567"
    cfg = DeployConfig(model="20b", model_revision=pinned)
    assert flag(build_command(cfg).argv, "--revision") == pinned
    assert flag(build_command(cfg, target="local-gpu").argv, "--revision") == pinned
    # Unset: the catalog's pinned revision (Modal's own gpt-oss example pins the same 20b commit).
    default = build_command(DeployConfig(model="20b")).argv
    assert flag(default, "--revision") == "d666cf3b67006cf8227666739edf25164aaffdeb"
    assert "--revision" not in build_command(DeployConfig(model="20b", model_revision="main")).argv
    tiny = DeployConfig(model="tiny", model_revision=pinned)
    assert "--revision" not in build_command(tiny, target="local-cpu", model_path="/ckpt").argv


@pytest.mark.parametrize(
    ("gpu", "batched"),
    [("A10G", 2048), ("L4", 2048), ("L40S", 2048), ("A100-40GB", 2048), ("A100-80GB", 8192), ("H100", 8192),
     ("H200", 8192), ("B200", 8192), ("H100:2", 8192), ("A10G:4", 2048)],
)  # fmt: skip
def test_the_command_passes_the_plans_batched_tokens(gpu: str, batched: int) -> None:
    # vLLM's own default for the card (8,192 from 70 GiB, else 2,048), always explicit: the planner's KV
    # arithmetic, the kernel priming and the warm-up read the same value.
    cfg = DeployConfig(model="20b", gpu=gpu)
    cmd = build_command(cfg)
    assert int(flag(cmd.argv, "--max-num-batched-tokens")) == batched == cmd.max_num_batched_tokens
    assert plan(cfg).max_num_batched_tokens == batched


@pytest.mark.parametrize(
    "spelling", [["--max-num-batched-tokens", "4096"], ["--max-num-batched-tokens=4096"]]
)
def test_the_users_batched_tokens_are_passed_once(spelling: list[str]) -> None:
    cfg = DeployConfig(model="20b", gpu="H100", extra_vllm_args=spelling)
    cmd = build_command(cfg)
    assert cmd.argv[-len(spelling) :] == spelling  # the user's own words, once
    assert sum(a.startswith("--max-num-batched-tokens") for a in cmd.argv) == 1
    assert cmd.max_num_batched_tokens == plan(cfg).max_num_batched_tokens == 4096


def test_batched_tokens_that_are_no_number_are_one_line() -> None:
    cfg = DeployConfig(model="20b", gpu="H100", extra_vllm_args=["--max-num-batched-tokens", "lots"])
    with pytest.raises(
        ConfigError, match=r"--max-num-batched-tokens takes a whole number of tokens, not 'lots'"
    ):
        build_command(cfg)


def test_the_cpu_engine_keeps_vllms_batched_tokens() -> None:
    cmd = build_command(DeployConfig(model="tiny"), target="local-cpu", model_path="/tmp/tiny")
    assert "--max-num-batched-tokens" not in cmd.argv and cmd.max_num_batched_tokens is None
