"""The numbers of one concurrency level, from what each request measured.

Every number means what `vllm bench serve` means by it (vllm/benchmarks/serve.py, `calculate_metrics`, and
lib/endpoint_request_func.py), so results can be read next to vLLM's own:

* A request is timed from just before it is sent. Every streamed SSE message that carries a non-empty
  `choices` list is a token event; the usage-only message at the end is not.
* TTFT: first token event - send time.
* ITL: the gaps between successive token events of one request, pooled over all requests.
* E2E latency: last token event - send time (not the time of `[DONE]`).
* Output tokens: `usage.completion_tokens` of the stream (we ask for `stream_options.include_usage`); only
  when the server sends no usage do we count the reply's tokens with the tokenizer. Prompt tokens likewise
  come from `usage.prompt_tokens` when present.
* TPOT: (latency - TTFT) / (output tokens - 1), per request with more than one output token.
* Duration: from just before the first request of a level is sent until the last one has finished.
  Output throughput = output tokens of successful requests / duration; total token throughput adds their
  prompt tokens; request throughput = successful requests / duration.
* Mean, median, population standard deviation, and percentiles with linear interpolation between the
  closest ranks (numpy's default). Where vLLM reports 0 for a metric with no samples, we report null.

Requests at one concurrency level are all available at once (vLLM's `--request-rate inf`) and at most
`concurrency` are in flight (`--max-concurrency`); they are sent in order.

Cost per million output tokens = GPU $/hour x GPU count / (output tok/s x 3600) x 1e6, at the catalog's list
price: what the sweep's throughput would cost if the GPUs were busy the whole time.

Speculative decoding, where the server runs a drafter: vLLM's own counters at /metrics, read before and after
each level, give the level's acceptance rate and mean acceptance length (SpecCounters, below).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gpt_oss_modal.core import catalog

DEFAULT_PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0)
METRICS = ("ttft", "tpot", "itl", "e2el")


@dataclass
class RequestRecord:
    """What one streamed request measured; times in seconds (time.perf_counter)."""

    success: bool
    prompt_len: int = 0
    output_tokens: int = 0
    ttft: float = 0.0
    latency: float = 0.0
    itl: list[float] = field(default_factory=list)
    start_time: float = 0.0
    expected_prompt_len: int = 0
    expected_output_len: int = 0
    error: str = ""


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0-100), linear interpolation between closest ranks; None for no values."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is not in 0..100")
    if not values:
        return None
    xs = sorted(values)
    rank = (len(xs) - 1) * p / 100.0
    lo = math.floor(rank)
    hi = math.ceil(rank)
    return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo)


def tpot(record: RequestRecord) -> float | None:
    """Time per output token after the first; None when the request made at most one token."""
    if not record.success or record.output_tokens <= 1:
        return None
    return (record.latency - record.ttft) / (record.output_tokens - 1)


def percentile_key(p: float) -> str:
    return f"p{int(p)}" if float(p).is_integer() else f"p{p:g}"


def distribution_ms(
    values_s: Sequence[float], name: str, percentiles: Sequence[float]
) -> dict[str, float | None]:
    """mean/median/std and the chosen percentiles of values in seconds, as `{stat}_{name}_ms` milliseconds."""
    out: dict[str, float | None] = {}
    if values_s:
        out[f"mean_{name}_ms"] = statistics.fmean(values_s) * 1000
        out[f"median_{name}_ms"] = statistics.median(values_s) * 1000
        out[f"std_{name}_ms"] = statistics.pstdev(values_s) * 1000
    else:
        out[f"mean_{name}_ms"] = out[f"median_{name}_ms"] = out[f"std_{name}_ms"] = None
    for p in percentiles:
        v = percentile(values_s, p)
        out[f"{percentile_key(p)}_{name}_ms"] = None if v is None else v * 1000
    return out


def cost_per_million_output_tokens(usd_per_hour: float, gpu_count: int, output_tok_s: float) -> float | None:
    """Dollars per 1e6 output tokens when the GPUs produce output_tok_s the whole hour; None at 0 tok/s."""
    if output_tok_s <= 0:
        return None
    return usd_per_hour * gpu_count / (output_tok_s * 3600.0) * 1e6


def last_line(error: str, limit: int = 300) -> str:
    """The telling line of an error (a traceback's last), shortened."""
    lines = error.strip().splitlines()
    return lines[-1][:limit] if lines else "unknown error"


def summarize(
    records: Sequence[RequestRecord],
    duration_s: float,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
) -> dict[str, Any]:
    """The level's metrics from its request records, as vLLM's calculate_metrics defines them."""
    ok = [r for r in records if r.success]
    errors = [r for r in records if not r.success]
    total_in = sum(r.prompt_len for r in ok)
    total_out = sum(r.output_tokens for r in ok)
    tpots = [t for t in (tpot(r) for r in ok) if t is not None]
    itls = [gap for r in ok for gap in r.itl]
    dur = duration_s if duration_s > 0 else float("nan")
    out: dict[str, Any] = {
        "num_requests": len(records),
        "completed": len(ok),
        "errors": len(errors),
        "duration_s": duration_s,
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(ok) / dur if duration_s > 0 else None,
        "output_throughput": total_out / dur if duration_s > 0 else None,
        "total_token_throughput": (total_in + total_out) / dur if duration_s > 0 else None,
    }
    out |= distribution_ms([r.ttft for r in ok], "ttft", percentiles)
    out |= distribution_ms(tpots, "tpot", percentiles)
    out |= distribution_ms(itls, "itl", percentiles)
    out |= distribution_ms([r.latency for r in ok], "e2el", percentiles)
    # Token-exactness: replies (and prompts, where the server reports them) of the length we asked for.
    out["output_len_mismatches"] = sum(
        1 for r in ok if r.expected_output_len and r.output_tokens != r.expected_output_len
    )
    out["prompt_len_mismatches"] = sum(
        1 for r in ok if r.expected_prompt_len and r.prompt_len != r.expected_prompt_len
    )
    seen: list[str] = []
    for r in errors:
        line = last_line(r.error)
        if line not in seen:
            seen.append(line)
    out["error_samples"] = seen[:5]
    return out


@dataclass
class GpuPrice:
    name: str
    count: int
    usd_per_hour: float  # per GPU
    price_date: str = catalog.PRICE_DATE


# --- speculative decoding, from vLLM's Prometheus counters --------------------------------------------
# vLLM counts drafts at /metrics when it runs a drafter (vllm/v1/spec_decode/metrics.py, SpecDecodingProm);
# prometheus_client writes a counter `name` as `name_total` (and `name_created`, which is a timestamp).
# The figures are vLLM's own: acceptance rate = accepted / draft tokens, mean acceptance length =
# 1 + accepted / drafts (the bonus token included), per position = accepted at that position / drafts.
SPEC_COUNTERS = {
    "vllm:spec_decode_num_drafts": "num_drafts",
    "vllm:spec_decode_num_draft_tokens": "num_draft_tokens",
    "vllm:spec_decode_num_accepted_tokens": "num_accepted_tokens",
}
SPEC_PER_POSITION = "vllm:spec_decode_num_accepted_tokens_per_pos"
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class SpecCounters:
    """vLLM's speculative-decoding counters at one moment, summed over engines."""

    num_drafts: float = 0.0
    num_draft_tokens: float = 0.0
    num_accepted_tokens: float = 0.0
    accepted_per_position: dict[int, float] = field(default_factory=dict)

    def __add__(self, other: SpecCounters) -> SpecCounters:
        return self._plus(other, 1.0)

    def __sub__(self, other: SpecCounters) -> SpecCounters:
        return self._plus(other, -1.0)

    def _plus(self, other: SpecCounters, sign: float) -> SpecCounters:
        positions = sorted(self.accepted_per_position.keys() | other.accepted_per_position.keys())
        return SpecCounters(
            self.num_drafts + sign * other.num_drafts,
            self.num_draft_tokens + sign * other.num_draft_tokens,
            self.num_accepted_tokens + sign * other.num_accepted_tokens,
            {
                p: self.accepted_per_position.get(p, 0.0) + sign * other.accepted_per_position.get(p, 0.0)
                for p in positions
            },
        )


def parse_spec_counters(text: str) -> SpecCounters | None:
    """The speculative-decoding counters in a Prometheus text exposition, or None when it has none (a
    server without a drafter, or not vLLM)."""
    out, seen = SpecCounters(), False
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None:  # comments (# HELP, # TYPE) and blank lines
            continue
        name, labels, value = m.group(1), m.group(3) or "", m.group(4)
        base = name.removesuffix("_total")
        if base not in SPEC_COUNTERS and base != SPEC_PER_POSITION:
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        seen = True
        if base == SPEC_PER_POSITION:
            position = dict(_LABEL.findall(labels)).get("position")
            if position is not None and position.isdigit():
                p = int(position)
                out.accepted_per_position[p] = out.accepted_per_position.get(p, 0.0) + number
            continue
        attr = SPEC_COUNTERS[base]
        setattr(out, attr, getattr(out, attr) + number)
    return out if seen else None


def spec_decode_summary(counters: SpecCounters) -> dict[str, Any]:
    """What the counters of a level (after minus before) say: vLLM's acceptance figures, null without drafts."""
    drafts, tokens, accepted = counters.num_drafts, counters.num_draft_tokens, counters.num_accepted_tokens
    return {
        "num_drafts": int(drafts),
        "num_draft_tokens": int(tokens),
        "num_accepted_tokens": int(accepted),
        "acceptance_rate": accepted / tokens if tokens > 0 else None,
        "mean_acceptance_length": 1 + accepted / drafts if drafts > 0 else None,
        "per_position_acceptance_rate": [
            v / drafts if drafts > 0 else None for _, v in sorted(counters.accepted_per_position.items())
        ],
        "accepted_per_position": [int(v) for _, v in sorted(counters.accepted_per_position.items())],
    }
