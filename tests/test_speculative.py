"""Speculative decoding: the setting, the pinned drafters, the engine flag, the planner's memory and the
modelled speed-up (a model: the tests check its arithmetic and its verdict, never a speed)."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from gpt_oss_modal.core import catalog, measured, speculative
from gpt_oss_modal.core.config import ConfigError, DeployConfig, load_config
from gpt_oss_modal.core.engine import build_command
from gpt_oss_modal.core.planner import plan
from gpt_oss_modal.core.vram import kv_bytes_per_token

M20, M120 = catalog.MODELS["openai/gpt-oss-20b"], catalog.MODELS["openai/gpt-oss-120b"]


def flag(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, f"{name} appears {argv.count(name)} times in {argv}"
    return argv[argv.index(name) + 1]


# --- the setting ----------------------------------------------------------------------------------------


def test_off_by_default_with_seven_tokens() -> None:
    cfg = DeployConfig()
    assert (cfg.speculative, cfg.speculative_tokens, cfg.drafter) == ("off", 7, None)


def test_eagle3_loads_the_models_pinned_drafter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPT_OSS_SPECULATIVE", "eagle3")
    monkeypatch.setenv("GPT_OSS_SPECULATIVE_TOKENS", "5")
    loaded = load_config({"model": "120b"})
    cfg = loaded.config
    assert cfg.drafter is M120.drafter
    assert cfg.speculative_tokens == 5
    assert loaded.sources["speculative"] == "env GPT_OSS_SPECULATIVE"


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"model": "tiny", "speculative": "eagle3"}, "speculative: tiny has no eagle3 drafter"),
        ({"speculative": "medusa"}, "speculative:"),
        ({"speculative_tokens": 0}, "speculative_tokens: 0 is out of range: use 1 to 10 draft tokens"),
        ({"speculative_tokens": 11}, "speculative_tokens: 11 is out of range: use 1 to 10 draft tokens"),
    ],
)
def test_bad_values_are_one_line(values: dict, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(values)
    assert str(e.value).startswith(says)
    assert "\n" not in str(e.value)


# --- the drafters ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", list(catalog.MODELS.values()), ids=lambda m: m.short)
def test_every_model_has_a_drafter_pinned_by_commit(model: catalog.Model) -> None:
    d = model.drafter
    assert d is not None and d.method == "eagle3"
    assert re.fullmatch(r"[0-9a-f]{40}", d.revision or ""), d.revision
    assert d.source and d.acceptance_source and d.shape_source
    lo, hi = d.mean_acceptance
    assert 1 <= lo <= hi <= d.published_tokens + 1


def test_the_20b_drafter_is_the_one_modals_example_pins() -> None:
    d = M20.drafter
    assert (d.repo, d.revision, d.published_tokens) == (
        "RedHatAI/gpt-oss-20b-speculator.eagle3",
        "97d07a21e8b7e2b667725dd92f579525c0a30d05",
        7,
    )
    # Another drafter with a better published acceptance, kept as data and never deployed (not pinned).
    (nebius,) = M20.other_drafters
    assert nebius.repo == "nebius/EAGLE3-gpt-oss-20b" and nebius.revision is None
    assert nebius.mean_acceptance[0] >= d.mean_acceptance[1]


def test_drafter_weights_from_its_shape() -> None:
    d = M20.drafter
    h = 2880
    fc = 3 * h * h + 3 * h  # fc over three target layers, and the norm before it
    attention = 2 * h * (64 * 64 + 2 * 8 * 64) + 64 * 64 * h  # q, k, v read 2h; o
    mlp = 3 * h * h  # intermediate 2880
    lm_head = 64000 * h
    assert d.params == fc + attention + mlp + 6 * h + lm_head + h
    assert d.weights_gib == pytest.approx(d.params * 2 / catalog.GiB)
    assert 0.5 < d.weights_gib < 0.52  # a 64k-token lm_head, the embedding shared with the target
    assert 1.4 < M120.drafter.weights_gib < 1.6  # the full vocabulary, a 6 x hidden MLP


# --- the engine command ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["20b", "120b"])
@pytest.mark.parametrize("boot", ["fast", "compiled", "eager"])
def test_the_speculative_config_flag(model: str, boot: str) -> None:
    cfg = DeployConfig(model=model, gpu="H200", boot=boot, speculative="eagle3", speculative_tokens=3)
    argv = build_command(cfg, target="modal").argv
    d = cfg.drafter
    assert json.loads(flag(argv, "--speculative-config")) == {
        "method": "eagle3",
        "model": d.repo,
        "revision": d.revision,
        "num_speculative_tokens": 3,
    }
    # The decode graphs cover max_inputs requests of k + 1 tokens each, in multiples of k + 1, so vLLM's
    # rounding to multiples of k + 1 changes none of them and none is dropped.
    if boot != "eager":
        sizes = json.loads(flag(argv, "--compilation-config"))["cudagraph_capture_sizes"]
        decode = [s for s in sizes if s <= 4 * cfg.max_inputs]
        assert all(s % 4 == 0 for s in decode)
        assert decode[0] == 4 and decode[-1] == 4 * cfg.max_inputs
        assert sizes == sorted(set(sizes))


def test_the_flag_takes_only_fields_of_vllms_speculative_config() -> None:
    pytest.importorskip("vllm")
    from vllm.config import SpeculativeConfig

    spec = speculative.engine_config(DeployConfig(speculative="eagle3"))
    fields = {f.name for f in dataclasses.fields(SpeculativeConfig)}
    assert spec is not None and set(spec) <= fields


def test_off_adds_nothing() -> None:
    argv = build_command(DeployConfig(gpu="H200"), target="modal").argv
    assert "--speculative-config" not in argv
    sizes = json.loads(flag(argv, "--compilation-config"))["cudagraph_capture_sizes"]
    assert sizes[-1] == 50


def test_the_cpu_engine_refuses_a_drafter() -> None:
    cfg = DeployConfig(speculative="eagle3")
    with pytest.raises(ConfigError, match="^speculative: the local CPU engine runs no drafter"):
        build_command(cfg, target="local-cpu", model_path="/tmp/checkpoint")
    assert "--speculative-config" in build_command(cfg, target="local-gpu").argv


# --- the planner ----------------------------------------------------------------------------------------


def test_the_drafter_comes_off_the_kv_cache() -> None:
    off = plan(DeployConfig(gpu="H200"))
    on = plan(DeployConfig(gpu="H200", speculative="eagle3"))
    assert on.weights_gib_per_gpu == pytest.approx(
        off.weights_gib_per_gpu + M20.drafter.weights_gib, abs=0.01
    )
    assert on.kv_cache_gib_per_gpu == pytest.approx(
        off.kv_cache_gib_per_gpu - M20.drafter.weights_gib, abs=0.01
    )
    # The drafter's layer joins the 12 full-attention layers; vLLM pads the sliding group to 13 too.
    assert on.kv_bytes_per_token == kv_bytes_per_token(M20, 1, M20.drafter) == 13 * 2 * 8 * 64 * 2
    assert on.kv_tokens < off.kv_tokens * 12 / 13
    assert on.memory_source.startswith("estimate") and off.memory_source.startswith("measured")


def test_the_drafter_is_sharded_with_the_model() -> None:
    one = plan(DeployConfig(model="120b", gpu="H100", speculative="eagle3"))
    two = plan(DeployConfig(model="120b", gpu="H100:2", speculative="eagle3"))
    assert one.fits and two.fits
    assert two.speculative.drafter_gib_per_gpu == pytest.approx(
        one.speculative.drafter_gib_per_gpu / 2, abs=0.01
    )


def test_plan_shows_the_model_on_or_off() -> None:
    est = plan(DeployConfig(gpu="H200")).speculative
    assert est is not None and not est.on and est.label == "model"
    assert plan(DeployConfig(gpu="H200", speculative="eagle3")).speculative.on
    assert "speculative" in plan(DeployConfig()).to_dict()


# --- the modelled speed-up ------------------------------------------------------------------------------


@pytest.mark.parametrize("mean", [1.0, 2.4, 2.95, 3.65, 8.0])
def test_acceptance_read_at_the_published_draft_count_is_the_published_length(mean: float) -> None:
    a = speculative.per_position_acceptance(mean, 7)
    assert speculative.expected_tokens(a, 7) == pytest.approx(mean, abs=1e-6)


def test_fewer_drafts_accept_fewer_tokens_per_step() -> None:
    lengths = [speculative.mean_acceptance(M20.drafter, k)[1] for k in (1, 3, 5, 7, 10)]
    assert lengths == sorted(lengths)
    assert lengths[0] <= 2 and lengths[3] == pytest.approx(M20.drafter.mean_acceptance[1])


def test_speedup_is_the_formula() -> None:
    k = 7
    acc_lo, acc_hi = speculative.mean_acceptance(M20.drafter, k)
    for c in (1, 50):
        cost = speculative.step_cost(k, c)
        assert speculative.speedup(M20.drafter, k, c) == pytest.approx((acc_lo / cost, acc_hi / cost))


def test_the_step_cost_is_the_measured_ratio() -> None:
    m = measured.SPECULATIVE_STEP
    for k, tpot in m.tpot_ms.items():
        for c, t, d in zip(m.concurrency, tpot, m.decode_tpot_ms, strict=True):
            assert speculative.step_cost(k, c) == pytest.approx(t / d)
    # Other draft counts take the nearest measured one (the larger on a tie); beyond the measured
    # concurrencies the nearest; between them a straight line.
    assert speculative.step_cost(9, 1) == speculative.step_cost(7, 1)
    assert speculative.step_cost(4, 1) == speculative.step_cost(5, 1)
    assert speculative.step_cost(6, 50) == speculative.step_cost(7, 50)
    assert speculative.step_cost(1, 1) == speculative.step_cost(3, 1)
    assert speculative.step_cost(5, 200) == speculative.step_cost(5, 50)
    mid = speculative.step_cost(5, 25)
    assert speculative.step_cost(5, 50) < mid < speculative.step_cost(5, 1)


def test_plan_says_what_a_step_costs_and_where_it_was_measured() -> None:
    est = plan(DeployConfig(gpu="H200", speculative_tokens=5)).speculative
    assert est.step_cost_single == pytest.approx(speculative.step_cost(5, 1), abs=0.005)
    assert est.step_cost_max_inputs == pytest.approx(speculative.step_cost(5, 50), abs=0.005)
    assert "measured on an H200" in est.assumptions and "120b" not in est.assumptions
    assert "120b the 20b ratios" in plan(DeployConfig(model="120b", gpu="H200")).speculative.assumptions


def test_the_default_follows_the_models_verdict() -> None:
    """Off by default unless the model says the gain holds at one stream and at max_inputs alike."""
    default_on = DeployConfig.model_fields["speculative"].default != "off"
    for model in catalog.MODELS:
        est = plan(DeployConfig(model=model, gpu="H200")).speculative
        assert est.gain_holds == default_on == (est.speedup_single[0] > 1 and est.speedup_max_inputs[0] > 1)
    # What was measured: a step at one stream costs more than the published acceptance brings.
    assert not plan(DeployConfig(gpu="H200")).speculative.gain_holds


def test_plan_says_the_drafter_has_no_graphs_outside_compiled() -> None:
    # vLLM 0.26 captures the drafter's CUDA graphs only where mixed batches have them (piecewise graphs,
    # which need torch.compile): the measured step cost is fast's.
    def noted(**kw) -> bool:
        return any(
            "drafter runs without CUDA graphs" in n for n in plan(DeployConfig(gpu="H200", **kw)).notes
        )

    assert noted(speculative="eagle3") and noted(speculative="eagle3", boot="eager")
    assert not noted(speculative="eagle3", boot="compiled") and not noted()
