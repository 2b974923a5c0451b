"""Speculative decoding: the engine's `--speculative-config`, and the gain it is modelled to bring.

With `speculative = "eagle3"` the model's drafter (catalog.Drafter, one decoder layer over the target's hidden
states) proposes k = speculative_tokens tokens one after the other, and the target checks all of them in one
forward pass of k + 1 tokens per request. Each such step yields the accepted drafts plus one token of the
target's own, so the speed-up over plain decoding at concurrency c is

    speed-up(c) = E[tokens per step] / S(k, c),   S = (t_verify(k + 1, c) + k x t_draft(c)) / t_decode(c)

E[tokens per step] is the drafter's mean acceptance length, which its publisher measured on their prompts;
ours may accept more or less (`gpt-oss-modal bench` reports what a deployment accepts). S, the cost of one
speculative step in decode steps, was measured on an H200 (measured.SPECULATIVE_STEP; docs/performance.md,
"Speculative decoding"): at k = 3, 5 and 7, at 1 and 50 concurrent requests. Other draft counts take the nearest
measured one, other concurrencies a straight line between the two, and gpt-oss-120b the 20b's ratios: every
figure derived here is labelled a model.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpt_oss_modal.core import catalog, measured
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


def step_cost(k: int, concurrency: int) -> float:
    """One speculative step with k drafts, in decode steps at the same concurrency (measured.SPECULATIVE_STEP:
    the nearest measured k, the larger on a tie; between the measured concurrencies a straight line, beyond
    them the nearest)."""
    m = measured.SPECULATIVE_STEP
    nearest = min(m.tpot_ms, key=lambda measured_k: (abs(measured_k - k), -measured_k))
    ratios = [t / d for t, d in zip(m.tpot_ms[nearest], m.decode_tpot_ms, strict=True)]
    cs = m.concurrency
    if concurrency <= cs[0]:
        return ratios[0]
    for (c0, r0), (c1, r1) in zip(zip(cs, ratios), zip(cs[1:], ratios[1:])):
        if concurrency <= c1:
            return r0 + (r1 - r0) * (concurrency - c0) / (c1 - c0)
    return ratios[-1]


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


def speedup(drafter: catalog.Drafter, k: int, concurrency: int) -> tuple[float, float]:
    """The modelled speed-up of decoding at this concurrency, (low, high), from the drafter's published
    acceptance range and the measured step cost."""
    cost = step_cost(k, concurrency)
    low, high = mean_acceptance(drafter, k)
    return low / cost, high / cost


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
    step_cost_single: float  # one speculative step, in decode steps, at one stream
    step_cost_max_inputs: float  # the same at max_inputs
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
    single, at_max = speedup(drafter, k, 1), speedup(drafter, k, cfg.max_inputs)
    m = measured.SPECULATIVE_STEP
    measured_at = ", ".join(f"k={n}" for n in sorted(m.tpot_ms))
    return SpeculativeEstimate(
        on=cfg.drafter is not None,
        method=drafter.method,
        drafter=f"{drafter.repo}@{drafter.revision}",
        tokens=k,
        drafter_gib_per_gpu=round(drafter.weights_gib / cfg.gpu_count, 2),
        mean_acceptance=tuple(round(a, 2) for a in mean_acceptance(drafter, k)),  # type: ignore[arg-type]
        acceptance_source=f"{drafter.repo}: {drafter.acceptance_source}",
        step_cost_single=round(step_cost(k, 1), 2),
        step_cost_max_inputs=round(step_cost(k, cfg.max_inputs), 2),
        speedup_single=(round(single[0], 2), round(single[1], 2)),
        speedup_max_inputs=(round(at_max[0], 2), round(at_max[1], 2)),
        max_inputs=cfg.max_inputs,
        gain_holds=single[0] > 1 and at_max[0] > 1,
        label=LABEL,
        assumptions=(
            f"a speculative step costs {step_cost(k, 1):.2f} decode steps at one stream and "
            f"{step_cost(k, cfg.max_inputs):.2f} at {cfg.max_inputs}, as measured on an {measured.GPU} "
            f"({m.model.split('/')[-1]}, boot {m.boot}, {measured_at} at "
            f"{' and '.join(map(str, m.concurrency))} streams; other k take the nearest, other concurrencies "
            f"a straight line{', and ' + model.short + ' the 20b ratios' if model.id != m.model else ''})"
        ),
    )
