"""Fit, context, concurrency, kernel and cost from the catalog's numbers, calibrated against vLLM's own."""

from __future__ import annotations

import pytest

from gpt_oss_modal.core import catalog, measured
from gpt_oss_modal.core.config import ConfigError, DeployConfig
from gpt_oss_modal.core.engine import build_command
from gpt_oss_modal.core.planner import cheapest_fitting_gpu, plan, require_fit
from gpt_oss_modal.core.vram import concurrency, kv_bytes_per_token, memory, vllm_vram_gib, weights_gib


def test_kv_bytes_per_token_counts_only_full_attention_layers() -> None:
    m20, m120 = catalog.MODELS["openai/gpt-oss-20b"], catalog.MODELS["openai/gpt-oss-120b"]
    # 12 full layers x (K and V) x 8 KV heads x 64 dims x 2 bytes.
    assert kv_bytes_per_token(m20, 1) == 12 * 2 * 8 * 64 * 2
    assert kv_bytes_per_token(m120, 1) == 18 * 2 * 8 * 64 * 2
    assert kv_bytes_per_token(m120, 2) == kv_bytes_per_token(m120, 1) // 2
    # With more GPUs than KV heads vLLM replicates heads: never below one head per GPU.
    assert kv_bytes_per_token(m120, 16) == kv_bytes_per_token(m120, 8)


def test_120b_on_a_24gb_card_is_refused_naming_a_gpu_that_fits() -> None:
    p = plan(DeployConfig(model="120b", gpu="A10G"))
    assert not p.fits
    assert "GiB" in p.reason and "A100-80GB" in p.reason and "A10G:4" in p.reason
    with pytest.raises(ConfigError):
        require_fit(DeployConfig(model="120b", gpu="A10G"))


def test_the_default_plan_is_the_originals_deployment() -> None:
    p = plan(DeployConfig())
    assert p.fits and (p.model, p.gpu, p.max_model_len, p.max_inputs) == (
        "openai/gpt-oss-20b",
        "A10G",
        32768,
        50,
    )
    assert p.max_model_len_source == "config"
    assert p.gpu_usd_per_hour == catalog.GPUS["A10G"].usd_per_hour


@pytest.mark.parametrize("gpu", ["L4", "A10G"])
def test_20b_on_24gb_cards_fits_with_reduced_context_said_plainly(gpu: str) -> None:
    p = plan(DeployConfig(model="20b", gpu=gpu, max_model_len="auto"))
    assert p.fits
    assert p.max_model_len < 131072 <= p.max_context or p.max_model_len < p.max_context
    assert any("context reduced" in n for n in p.notes)
    assert any("Marlin" in n for n in p.notes)
    assert p.moe_kernel == "marlin" and p.attention_backend == "TRITON_ATTN"


def test_20b_on_h100_full_context_triton_and_price() -> None:
    p = plan(DeployConfig(model="20b", gpu="H100", max_model_len="auto"))
    assert p.fits and p.max_model_len == 131072 and p.max_context == 131072
    assert p.moe_kernel == "triton"
    assert p.gpu_usd_per_hour == catalog.GPUS["H100"].usd_per_hour
    assert p.price_date == catalog.PRICE_DATE
    assert p.full_length_concurrency >= 4


def test_tensor_parallel_multiplies_price_and_splits_weights() -> None:
    one = plan(DeployConfig(model="120b", gpu="H100", max_model_len="auto"))
    two = plan(DeployConfig(model="120b", gpu="H100:2", max_model_len="auto"))
    assert two.gpu_usd_per_hour == pytest.approx(2 * one.gpu_usd_per_hour)
    assert two.weights_gib_per_gpu == pytest.approx(one.weights_gib_per_gpu / 2, abs=0.01)
    assert two.kv_tokens > one.kv_tokens
    assert two.max_model_len >= one.max_model_len


def test_blackwell_uses_flashinfer() -> None:
    assert plan(DeployConfig(model="120b", gpu="B200")).moe_kernel == "flashinfer-trtllm"


@pytest.mark.parametrize("context", [32768, "auto"])
def test_more_memory_never_fits_less(context: int | str) -> None:
    for model in catalog.MODELS.values():
        fits = [
            plan(DeployConfig(model=model.id, gpu=g.name, max_model_len=context)).fits
            for g in sorted(catalog.GPUS.values(), key=lambda g: g.vram_gib)
        ]
        assert fits == sorted(fits)  # False... then True...


def test_the_default_context_fits_wherever_the_model_does() -> None:
    for model in catalog.MODELS.values():
        for gpu in catalog.GPUS:
            auto = plan(DeployConfig(model=model.id, gpu=gpu, max_model_len="auto"))
            assert plan(DeployConfig(model=model.id, gpu=gpu)).fits == auto.fits, (model.id, gpu)


def test_cheapest_fitting_gpu() -> None:
    m120 = catalog.MODELS["openai/gpt-oss-120b"]
    assert cheapest_fitting_gpu(m120, 0.9, "compiled").name == "A100-80GB"
    assert cheapest_fitting_gpu(catalog.MODELS["openai/gpt-oss-20b"], 0.9, "compiled").name == "L4"


def test_explicit_context_beyond_the_cache_is_refused_with_the_largest_that_fits() -> None:
    cfg = DeployConfig(model="120b", gpu="A100-80GB", max_model_len=131072, gpu_memory_utilization=0.85)
    p = plan(cfg)
    assert not p.fits and p.max_context < 131072
    assert p.reason.startswith("max_model_len 131072 does not fit openai/gpt-oss-120b on A100-80GB")
    assert f"the largest that fits is {p.max_context}: use --max-model-len {p.max_context}" in p.reason
    # The cheapest single GPU with room: H200 (an H100 at 0.85 holds 120b's 128k request no more than the A100).
    assert p.reason.endswith("--gpu H200") and "\n" not in p.reason
    # ... and that largest value does fit.
    assert plan(cfg.model_copy(update={"max_model_len": p.max_context})).fits


def test_scale_settings_price_the_floor_and_the_ceiling() -> None:
    cfg = DeployConfig(
        gpu="H100:2", min_containers=1, max_containers=4, buffer_containers=1, target_inputs=40
    )
    p = plan(cfg)
    price = p.usd_per_hour / 2  # per GPU of the container, its cores and memory included
    assert (p.min_containers, p.max_containers, p.buffer_containers, p.target_inputs) == (1, 4, 1, 40)
    assert p.always_on_usd_per_day == pytest.approx(1 * 2 * price * 24, abs=0.01)
    assert p.max_usd_per_hour == pytest.approx(4 * 2 * price, abs=0.01)
    default = plan(DeployConfig())
    assert default.always_on_usd_per_day == 0 and default.target_inputs == default.max_inputs
    assert default.max_usd_per_hour == pytest.approx(2 * default.usd_per_hour, abs=0.01)
    assert default.usd_per_hour > catalog.GPUS["A10G"].usd_per_hour  # the cores and memory are billed too


def test_tiny_is_not_planned() -> None:
    with pytest.raises(ConfigError, match="CPU"):
        plan(DeployConfig(model="tiny"))


def test_the_recorded_runs_are_all_there() -> None:
    names = {name for r in measured.KV_RUNS for name in r.runs}
    assert {"eager", "fast", "compiled", "120b", "120b-as-h100", "fast-marlin"} <= names
    assert {"s1_a_A10G", "s1_b_A100-40GB", "s1_c_H100", "s1_d_H200"} <= names
    assert all(r.results or r.run == "boot-modes-v1" for r in measured.KV_RUNS)


def test_vram_as_vllm_sees_it() -> None:
    # vLLM budgets util x torch's total: 139.801 GiB on the H200, 0.60 GiB under nvidia-smi's 143,771 MiB.
    h200 = measured.VRAM["H200"]
    assert h200.vllm_total_gib == pytest.approx(150_109_880_320 / catalog.GiB, abs=0.001)
    assert h200.reserve_gib == pytest.approx(0.60, abs=0.01)
    assert vllm_vram_gib(catalog.GPUS["H200"]) == (h200.vllm_total_gib, True)
    assert 0.9 * vllm_vram_gib(catalog.GPUS["H200"])[0] == pytest.approx(125.82, abs=0.005)  # vLLM's log
    # A card torch was not read on: its driver total less the larger reserve measured.
    a10g, measured_here = vllm_vram_gib(catalog.GPUS["A10G"])
    assert not measured_here and a10g == pytest.approx(23028 / 1024 - h200.reserve_gib)


def test_weights_follow_the_moe_kernel_path() -> None:
    m20, m120 = catalog.MODELS["openai/gpt-oss-20b"], catalog.MODELS["openai/gpt-oss-120b"]
    assert weights_gib(m20, "marlin") == (pytest.approx(13.8), True)
    assert weights_gib(m20, "triton") == (pytest.approx(13.03), True)
    # 120b on Marlin was not measured: 20b's excess (0.77 GiB) x 6 (36 x 128 experts against 24 x 32).
    marlin_120b, measured_here = weights_gib(m120, "marlin")
    assert not measured_here and marlin_120b == pytest.approx(61.43 + 0.77 * 6, abs=0.01)
    assert weights_gib(m120, "flashinfer-trtllm") == (
        pytest.approx(61.43),
        False,
    )  # Blackwell: Hopper's, not measured


@pytest.mark.parametrize("run", measured.KV_RUNS, ids=lambda r: r.run)
def test_the_memory_model_reproduces_each_run_part_by_part(run: measured.KvRun) -> None:
    # At the budget vLLM logged, on the run's kernel path and batched tokens: each part as vLLM logged it.
    model, gpu = catalog.MODELS[run.model], catalog.GPUS[run.gpu]
    util = run.budget_gib / vllm_vram_gib(gpu)[0]
    mem = memory(model, gpu, 1, util, run.boot, run.max_num_batched_tokens, kernel=run.moe_kernel)
    assert mem.budget == pytest.approx(run.budget_gib, abs=0.005)
    if run.has_parts:
        assert mem.weights == pytest.approx(run.weights_gib, rel=0.01)
        assert mem.runtime.measured
        assert mem.runtime.activation == pytest.approx(run.activation_gib, abs=0.011)
        assert mem.runtime.non_torch == pytest.approx(run.non_torch_gib, abs=0.011)
        assert mem.runtime.graphs == pytest.approx(run.graphs_gib, abs=0.011)
    assert mem.kv_gib == pytest.approx(run.kv_cache_gib, rel=0.03)
    full_length = concurrency(model, run.max_num_batched_tokens, mem.blocks, run.max_model_len)
    assert full_length == pytest.approx(run.max_concurrency, rel=0.03)
    assert full_length * run.max_model_len == pytest.approx(run.kv_tokens, rel=0.03)


@pytest.mark.parametrize(
    "run",
    [r for r in measured.KV_RUNS if r.moe_kernel == catalog.moe_kernel(catalog.GPUS[r.gpu])],
    ids=lambda r: r.run,
)
def test_plan_reproduces_vllms_kv_cache_within_3_percent(run: measured.KvRun) -> None:
    # The whole plan, on the run's card at the budget vLLM logged (batched tokens: the card's default).
    gpu = catalog.GPUS[run.gpu]
    p = plan(
        DeployConfig(
            model=run.model,
            gpu=run.gpu,
            boot=run.boot,
            gpu_memory_utilization=round(run.budget_gib / vllm_vram_gib(gpu)[0], 4),
            max_model_len=run.max_model_len,
            max_inputs=run.max_num_seqs,
        )  # fmt: skip
    )
    assert p.fits and p.max_num_batched_tokens == run.max_num_batched_tokens
    assert p.moe_kernel == run.moe_kernel and p.attention_backend == run.attention
    if run.weights_gib is not None:
        assert p.weights_gib_per_gpu == pytest.approx(run.weights_gib, rel=0.01)
    assert p.kv_cache_gib_per_gpu == pytest.approx(run.kv_cache_gib, rel=0.03)
    assert p.kv_tokens == pytest.approx(run.kv_tokens, rel=0.03)
    assert p.full_length_concurrency == pytest.approx(run.max_concurrency, rel=0.03)
    assert p.memory_source.startswith("measured")


# 20b at each card's defaults (util 0.9, vLLM's batched tokens for the card) against the run that reproduced
# that card on an H200. L4 has A10G's total (within 0.1%), Marlin, the Triton attention path and 2,048 batched
# tokens: run s1_a_A10G stands for it. The runs set the budget to 0.9 x the driver's total; the plan budgets
# 0.9 x what vLLM sees (0.60 GiB less on a card torch was not read on), so it is a little below them.
@pytest.mark.parametrize(
    ("gpu", "run"),
    [("A10G", "s1_a_A10G"), ("L4", "s1_a_A10G"), ("A100-40GB", "s1_b_A100-40GB"), ("H100", "s1_c_H100"),
     ("H200", "s1_d_H200")],
)  # fmt: skip
def test_20b_on_each_card_is_within_3_percent_of_vllm(gpu: str, run: str) -> None:
    (r,) = [r for r in measured.KV_RUNS if r.run == run]
    p = plan(DeployConfig(model="20b", gpu=gpu))
    assert p.fits and (p.moe_kernel, p.attention_backend) == (r.moe_kernel, r.attention)
    assert p.max_num_batched_tokens == r.max_num_batched_tokens
    assert p.weights_gib_per_gpu == pytest.approx(r.weights_gib, rel=0.01)
    assert p.overhead_gib_per_gpu == pytest.approx(r.runtime_gib, abs=0.01)
    assert p.kv_cache_gib_per_gpu == pytest.approx(r.kv_cache_gib, rel=0.03)
    assert p.kv_tokens == pytest.approx(r.kv_tokens, rel=0.03)
    assert p.full_length_concurrency == pytest.approx(r.max_concurrency, rel=0.03)
    assert p.memory_source.startswith("measured")


def test_20b_on_the_default_a10g_is_marlins_and_says_where_its_figures_come_from() -> None:
    p = plan(DeployConfig())
    assert (p.gpu, p.moe_kernel, p.weights_gib_per_gpu, p.max_num_batched_tokens) == (
        "A10G",
        "marlin",
        13.8,
        2048,
    )
    assert p.memory_source.startswith("measured (A10G budget emulated on an H200, run s1_a_A10G)")
    assert "A10G's 22.49 GiB is an estimate" in p.memory_source  # torch was not read on an A10G
    assert "standing for L4" in plan(DeployConfig(gpu="L4")).memory_source
    argv = build_command(DeployConfig()).argv
    assert argv[argv.index("--max-num-batched-tokens") + 1] == "2048"


def test_runtime_grows_with_the_batched_tokens_and_the_boot_mode() -> None:
    h100 = [plan(DeployConfig(model="20b", gpu="H100", boot=b)) for b in ("eager", "fast", "compiled")]
    assert [p.overhead_gib_per_gpu for p in h100] == [0.77, 0.85, 1.71]  # as vLLM logged them on the H200
    small = plan(DeployConfig(model="20b", gpu="H100", extra_vllm_args=["--max-num-batched-tokens", "2048"]))
    assert small.overhead_gib_per_gpu < h100[1].overhead_gib_per_gpu
    assert small.memory_source.startswith("estimate") and "2,048 batched tokens" in small.memory_source
    # More batched tokens: a larger activation peak, and more of each request's sliding window in flight.
    big = plan(DeployConfig(model="20b", gpu="A10G", extra_vllm_args=["--max-num-batched-tokens", "8192"]))
    default = plan(DeployConfig(model="20b", gpu="A10G"))
    assert big.overhead_gib_per_gpu == pytest.approx(1.15, abs=0.01)  # Marlin at 8,192 (run fast-marlin)
    assert big.kv_tokens < default.kv_tokens * 0.8


def test_120b_on_one_h100_says_what_vllm_says() -> None:
    # vLLM at an H100's budget (run 120b-as-h100): 9.10 GiB, "Maximum concurrency for 32,768 tokens: 5.37x".
    p = plan(DeployConfig(model="120b", gpu="H100"))
    assert p.fits and p.max_model_len == 32768
    assert p.full_length_concurrency == pytest.approx(5.37, rel=0.03)
    assert p.kv_tokens == pytest.approx(176102, rel=0.03)
    assert p.memory_source.startswith("measured (H100 budget emulated on an H200, run 120b-as-h100)")


def test_a_request_counts_its_sliding_window_blocks_too() -> None:
    # A 4k request holds its whole length in both layer groups: ~2x the blocks of its full-attention half.
    p = plan(DeployConfig(model="20b", gpu="H200"))
    blocks = p.kv_tokens / 32768 * (2048 + 1033)  # 32k: 2,048 full + 1,033 sliding blocks per request
    assert p.typical_concurrency == int(blocks / (256 + 256 + 1))


def test_boot_costs_are_measured_on_h200_and_estimated_elsewhere() -> None:
    h200 = {c.boot: c for c in plan(DeployConfig(model="20b", gpu="H200")).boot_costs}
    assert set(h200) == {"eager", "fast", "compiled"}
    assert all(c.label == "measured on H200" for c in h200.values())
    assert h200["fast"].startup_s == min(measured.BOOT_FIGURES["fast"].startup_s)
    assert h200["fast"].startup_max_s == max(measured.BOOT_FIGURES["fast"].startup_s)
    # compiled was not started with today's engine: fast's start-up plus what compiling added, labelled so.
    compiled = measured.BOOT_FIGURES["compiled"]
    assert not compiled.startup_s and h200["compiled"].startup_estimated
    assert h200["compiled"].startup_s == h200["fast"].startup_s + min(compiled.compile_s)
    assert h200["compiled"].startup_max_s == h200["fast"].startup_max_s + max(compiled.compile_s)
    assert not h200["fast"].startup_estimated and not h200["eager"].startup_estimated
    assert h200["compiled"].tpot_ms == measured.BOOT_FIGURES["compiled"].tpot_ms
    h100 = plan(DeployConfig(model="20b", gpu="H100")).boot_costs
    assert all(c.label == "estimate" and "bandwidth" in c.source for c in h100)
    # 120b's decode was not measured: the plan says so rather than inventing a figure.
    big = plan(DeployConfig(model="120b", gpu="H200")).boot_costs
    assert all(c.single_stream_tok_s is None for c in big)
    assert [c.label for c in big if c.boot == "fast"] == ["measured on H200"]


def test_vram_from_the_driver_where_known() -> None:
    assert catalog.GPUS["H200"].vram_gib * 1024 == pytest.approx(143771)
    assert catalog.GPUS["H100"].vram_gib * 1024 == pytest.approx(81559)
    # H100's total as torch sees it was read too (vLLM's "Free memory on device (78.66/79.18 GiB)").
    assert vllm_vram_gib(catalog.GPUS["H100"]) == (79.18, True)
    assert "L40S's 44.99 GiB is an estimate" in plan(DeployConfig(model="20b", gpu="L40S")).memory_source


# --- what a running container costs: GPUs, reserved cores and memory ---------------------------------------


@pytest.mark.parametrize(
    ("settings", "cpu", "memory_gib"),
    [
        ({}, 4.0, 8.0),  # 20b on the default A10G
        ({"model": "120b", "gpu": "H100"}, 4.0, 8.0),
        ({"model": "120b", "gpu": "H100:2"}, 5.0, 13.0),  # one more engine worker per extra GPU
        ({"model": "20b", "gpu": "H100", "snapshot": True}, 4.0, 12.8 + catalog.SNAPSHOT_HEADROOM_GIB),
        ({"model": "120b", "gpu": "H200", "snapshot": True}, 4.0, 60.8 + catalog.SNAPSHOT_HEADROOM_GIB),
    ],
)
def test_a_container_reserves_cores_and_memory_and_pays_for_them(
    settings: dict, cpu: float, memory_gib: float
) -> None:
    from gpt_oss_modal.core.resources import container_resources

    cfg = DeployConfig(**settings)
    r = container_resources(cfg)
    assert r.cpu == cpu and r.memory_mib == pytest.approx(memory_gib * 1024, abs=1)
    assert r.gpu_usd_per_hour == pytest.approx(cfg.gpu_type.usd_per_hour * cfg.gpu_count)
    assert r.cpu_usd_per_hour == pytest.approx(cpu * 0.0000131 * 3600)  # Modal's per-core-second price
    assert r.memory_usd_per_hour == pytest.approx(r.memory_mib / 1024 * 0.00000222 * 3600)
    p = plan(cfg)
    # The plan's hourly price is the whole container's, and the floor and ceiling are built from it.
    assert p.usd_per_hour == pytest.approx(
        r.gpu_usd_per_hour + r.cpu_usd_per_hour + r.memory_usd_per_hour, abs=1e-4
    )
    assert (p.cpu, p.memory_gib) == (r.cpu, round(r.memory_mib / 1024, 2))
    assert p.usd_per_hour > p.gpu_usd_per_hour
    assert p.max_usd_per_hour == pytest.approx(cfg.max_containers * p.usd_per_hour, abs=0.01)


def test_the_default_container_costs_its_gpu_plus_four_cores_and_8_gib() -> None:
    p = plan(DeployConfig(min_containers=1))
    # $1.1016 (A10G) + 4 x $0.04716 + 8 x $0.007992 = $1.3542 an hour.
    assert p.usd_per_hour == pytest.approx(1.1016 + 4 * 0.04716 + 8 * 0.007992, abs=1e-4)
    assert p.always_on_usd_per_day == pytest.approx(24 * 1.3542, abs=0.01)
    assert p.max_usd_per_hour == pytest.approx(2 * 1.3542, abs=0.01)


def test_the_reservation_covers_twice_what_the_engine_used_at_max_inputs() -> None:
    # The engine's process group under c=50 (run s1_d_H200): 3,917 MiB RSS, 1.84 cores at the busiest second.
    r = catalog.CONTAINER_RESOURCES["openai/gpt-oss-20b"]
    assert r.memory_gib * 1024 >= 2 * 3917 and r.cpu >= 2 * 1.84
