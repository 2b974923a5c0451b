"""Speculative decoding: the engine's `--speculative-config`, and the gain it is modelled to bring.

With `speculative = "eagle3"` the model's drafter (catalog.Drafter, one decoder layer over the target's hidden
states) proposes k = speculative_tokens tokens one after the other, and the target checks all of them in one
forward pass of k + 1 tokens per request. Each verify step yields the accepted drafts plus one token of the
target's own, so the speed-up over plain decoding at concurrency c is

    speed-up(c) = E[tokens per verify step] x t_decode(c) / (t_verify(k + 1, c) + k x t_draft(c))

E[tokens per verify step] is the drafter's mean acceptance length, which its publisher measured on their
prompts; ours may accept more or less (`gpt-oss-modal bench` reports what a deployment accepts). The per-step
costs are not measured yet: STEP_COSTS holds what is assumed, in one place, and the GPU measurement of
verify and draft steps (docs/performance.md, "Speculative decoding", gives the runs) replaces it. Every
figure derived here is labelled a model.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpt_oss_modal.core import catalog
from gpt_oss_modal.core.config import ConfigError, DeployConfig

LABEL = "model"


def engine_config(cfg: DeployConfig, *, on_gpu: bool = True) -> dict | None:
    """vLLM's `--speculative-config` for cfg (SpeculativeConfig's fields), or None when speculative is off."""
    drafter = cfg.drafter
    if drafter is None:
        return None
    if not on_gpu:
        raise ConfigError(
            "speculative: the local CPU engine runs no drafter (vLLM's CPU build has no EAGLE3 kernels); "
            "set speculative = off"
        )
    return {
        "method": drafter.method,
        "model": drafter.repo,
        "revision": drafter.revision,
        "num_speculative_tokens": cfg.speculative_tokens,
    }


def tokens_per_step(cfg: DeployConfig) -> int:
    """Tokens one request puts in a decode step: k + 1 with a drafter (the verify step), else 1."""
    return cfg.speculative_tokens + 1 if cfg.drafter is not None else 1


@dataclass(frozen=True)
class StepCosts:
    """Per-step costs as multiples of one decode step of the target at the same concurrency, as ranges."""

    # A verify step of k + 1 tokens at one stream: the step is bound by kernel launches (3.1 ms against a
    # 0.8 ms memory floor on the H200), so k more tokens in it add little; up to 1.3 for the extra experts
    # they route to (k + 1 tokens of gpt-oss-20b read ~21 of 32 experts per layer where one token reads 4).
    verify_single: tuple[float, float]
    # Above one stream, a verify step carries c x (k + 1) tokens: at least one decode step (verification
    # for free) and at most k + 1 of them (no gain from the larger batch). Where it falls is what the GPU
    # measurement of verify steps at max_inputs decides.
    verify_batched: str
    # One draft step against the target's decode step: the drafter is one decoder layer against the
    # target's num_layers, its lm_head at most the target's.
    draft_source: str


STEP_COSTS = StepCosts(
    verify_single=(1.0, 1.3),
    verify_batched="1 to k + 1 decode steps",
    draft_source="1 / the target's layer count",
)


def verify_cost(concurrency: int, k: int) -> tuple[float, float]:
    """A verify step of k + 1 tokens per request, in decode steps at the same concurrency (low, high)."""
    return STEP_COSTS.verify_single if concurrency <= 1 else (1.0, float(k + 1))


def draft_cost(model: catalog.Model) -> float:
    """One draft step, in decode steps of the target."""
    return 1.0 / model.num_layers


def per_position_acceptance(mean_length: float, k: int) -> float:
    """The acceptance rate a of each draft position, constant and independent, that gives this mean length
    with k drafts: (1 - a^(k+1)) / (1 - a) (Leviathan et al.'s model), so that a length published at one
    draft count can be read at another."""
    if mean_length >= k + 1:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(60):
        a = (lo + hi) / 2
        lo, hi = (a, hi) if expected_tokens(a, k) < mean_length else (lo, a)
    return (lo + hi) / 2


def expected_tokens(a: float, k: int) -> float:
    """Mean tokens per verify step with k drafts, each accepted with probability a (the bonus included)."""
    return float(k + 1) if a >= 1.0 else (1 - a ** (k + 1)) / (1 - a)


def mean_acceptance(drafter: catalog.Drafter, k: int) -> tuple[float, float]:
    """The drafter's published mean acceptance lengths, read at k draft tokens."""
    return tuple(  # type: ignore[return-value]
        expected_tokens(per_position_acceptance(m, drafter.published_tokens), k)
        for m in drafter.mean_acceptance
    )


def speedup(model: catalog.Model, drafter: catalog.Drafter, k: int, concurrency: int) -> tuple[float, float]:
    """The modelled speed-up of decoding at this concurrency, (low, high): the low end pairs the lower
    acceptance with the dearer verify step."""
    (acc_lo, acc_hi), (v_lo, v_hi) = mean_acceptance(drafter, k), verify_cost(concurrency, k)
    draft = k * draft_cost(model)
    return acc_lo / (v_hi + draft), acc_hi / (v_lo + draft)


@dataclass(frozen=True)
class SpeculativeEstimate:
    """What `plan` says about speculative decoding for a config: whether it is on, what it costs in memory,
    and the modelled speed-up at one stream and at max_inputs."""

    on: bool
    method: str
    drafter: str  # repo@revision
    tokens: int
    drafter_gib_per_gpu: float
    mean_acceptance: tuple[float, float]  # at `tokens` draft tokens
    acceptance_source: str
    speedup_single: tuple[float, float]
    speedup_max_inputs: tuple[float, float]
    max_inputs: int
    gain_holds: bool  # the low end of the model is a gain at both concurrencies
    label: str
    assumptions: str


def estimate(cfg: DeployConfig) -> SpeculativeEstimate | None:
    """The model for cfg's drafter (whether or not it is on), or None for a model that has none."""
    model = cfg.model_info
    drafter = model.drafter if model is not None else None
    if model is None or drafter is None:
        return None
    k = cfg.speculative_tokens
    single, at_max = speedup(model, drafter, k, 1), speedup(model, drafter, k, cfg.max_inputs)
    v_lo, v_hi = STEP_COSTS.verify_single
    return SpeculativeEstimate(
        on=cfg.drafter is not None,
        method=drafter.method,
        drafter=f"{drafter.repo}@{drafter.revision}",
        tokens=k,
        drafter_gib_per_gpu=round(drafter.weights_gib / cfg.gpu_count, 2),
        mean_acceptance=tuple(round(m, 2) for m in mean_acceptance(drafter, k)),  # type: ignore[arg-type]
        acceptance_source=f"{drafter.repo}: {drafter.acceptance_source}",
        speedup_single=(round(single[0], 2), round(single[1], 2)),
        speedup_max_inputs=(round(at_max[0], 2), round(at_max[1], 2)),
        max_inputs=cfg.max_inputs,
        gain_holds=single[0] > 1 and at_max[0] > 1,
        label=LABEL,
        assumptions=(
            f"verify step {v_lo:g}-{v_hi:g} decode steps at one stream, {STEP_COSTS.verify_batched} above it; "
            f"draft step {STEP_COSTS.draft_source} ({model.num_layers}); not measured yet"
        ),
    )
