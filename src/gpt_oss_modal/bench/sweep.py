"""The sweep: each concurrency level in turn, then the result document (schema `gpt-oss-modal/bench/v1`).

Requests at one level are all available at once (vLLM's `--request-rate inf`) and at most `concurrency` are
in flight (`--max-concurrency`), sent in order: `--requests` of them, or as many as start within
`--duration` seconds, cycling through the prompts. Before the first level, one untimed request checks URL,
auth and model name, as `vllm bench serve` does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from gpt_oss_modal.bench.endpoint import list_models, open_session, send_request, spec_counters
from gpt_oss_modal.bench.metrics import (
    GpuPrice,
    RequestRecord,
    SpecCounters,
    cost_per_million_output_tokens,
    last_line,
    spec_decode_summary,
    summarize,
)
from gpt_oss_modal.bench.options import ENDPOINT_PATHS, BenchError, BenchOptions
from gpt_oss_modal.bench.workload import Prompt, Tokenizer, make_workload

SCHEMA = "gpt-oss-modal/bench/v1"
HTTP_CLIENT = "aiohttp"


@dataclass
class LevelRun:
    concurrency: int
    records: list[RequestRecord]
    duration_s: float
    # vLLM's speculative-decoding counters over the timed requests (after minus before); None without them.
    spec: SpecCounters | None = None


async def run_level(
    opts: BenchOptions,
    model: str,
    prompts: Sequence[Prompt],
    concurrency: int,
    *,
    num_requests: int | None = None,
    duration_s: float | None = None,
    warmup: int = 0,
    on_done: Callable[[RequestRecord], None] | None = None,
    count_tokens: Callable[[str], int] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    read_spec: bool = False,
) -> LevelRun:
    """One level: `num_requests` requests, or as many as start before `duration_s` has passed on `clock`.
    Warm-up requests go first and are not counted. read_spec: read vLLM's speculative-decoding counters
    just before the timed requests and after them."""
    if (num_requests is None) == (duration_s is None):
        raise ValueError("give exactly one of num_requests and duration_s")
    async with open_session(concurrency, opts.request_timeout) as session:
        if warmup > 0:
            sem = asyncio.Semaphore(concurrency)

            async def warm(i: int) -> None:
                async with sem:
                    await send_request(session, opts, model, prompts[i % len(prompts)], count_tokens)

            await asyncio.gather(*(warm(i) for i in range(warmup)))

        before = await spec_counters(session, opts) if read_spec else None
        records: list[RequestRecord] = []
        counter = iter(range(10**12))
        start = clock()
        deadline = start + duration_s if duration_s is not None else None

        async def worker() -> None:
            while True:
                i = next(counter)
                if num_requests is not None and i >= num_requests:
                    return
                if deadline is not None and clock() >= deadline:
                    return
                rec = await send_request(session, opts, model, prompts[i % len(prompts)], count_tokens)
                records.append(rec)
                if on_done is not None:
                    on_done(rec)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        duration = clock() - start
        after = await spec_counters(session, opts) if before is not None else None
    records.sort(key=lambda r: r.start_time)
    spec = after - before if before is not None and after is not None else None
    return LevelRun(concurrency, records, duration, spec)


def level_result(run: LevelRun, percentiles: Sequence[float], gpu: GpuPrice | None) -> dict[str, Any]:
    res = {"concurrency": run.concurrency} | summarize(run.records, run.duration_s, percentiles)
    res["usd_per_m_output_tokens"] = (
        cost_per_million_output_tokens(gpu.usd_per_hour, gpu.count, res["output_throughput"] or 0.0)
        if gpu
        else None
    )
    if run.spec is not None:  # only where the server counts drafts
        res["speculative"] = spec_decode_summary(run.spec)
    return res


def build_result(
    opts: BenchOptions,
    *,
    served_model: str,
    tokenizer: str,
    model: str | None,
    gpu: GpuPrice | None,
    levels: list[dict[str, Any]],
    runs: list[LevelRun] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "base_url": opts.base_url,
        "endpoint": ENDPOINT_PATHS[opts.endpoint],
        "served_model": served_model,
        "model": model,
        "tokenizer": tokenizer,
        "http_client": HTTP_CLIENT,
        "workload": {
            "dataset": "random",
            "input_len": opts.input_len,
            "output_len": opts.output_len,
            "random_range_ratio": opts.random_range_ratio,
            "requests_per_level": opts.requests,
            "duration_s_per_level": opts.duration,
            "warmup_requests": opts.warmup,
            "ignore_eos": opts.ignore_eos,
            "seed": opts.seed,
            "request_rate": "inf",
        },
        "percentiles": list(opts.percentile_values),
        "gpu": None if gpu is None else asdict(gpu),
        "levels": levels,
    }
    spec = [r.spec for r in runs or () if r.spec is not None]
    if spec:  # the whole sweep's acceptance, from the levels' counters
        out["speculative"] = spec_decode_summary(sum(spec[1:], spec[0]))
    if opts.save_requests and runs is not None:
        out["requests"] = {str(r.concurrency): [asdict(rec) for rec in r.records] for r in runs}
    return out


def sweep(
    opts: BenchOptions,
    tok: Tokenizer,
    *,
    served_model: str | None = None,
    model: str | None = None,
    gpu: GpuPrice | None = None,
    progress: Any = None,
    on_level: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every level of `opts` one after the other and return the result document. `served_model` is the
    name requests carry: --served-model-name, else the server's first at /v1/models, else `llm`."""
    return asyncio.run(_sweep(opts, tok, served_model, model, gpu, progress, on_level))


async def _sweep(
    opts: BenchOptions,
    tok: Tokenizer,
    served_model: str | None,
    model: str | None,
    gpu: GpuPrice | None,
    progress: Any,
    on_level: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any]:
    pool_size = max([opts.requests_for(c) or 256 for c in opts.levels] + [opts.warmup, 1])
    prompts = make_workload(
        tok, pool_size, opts.input_len, opts.output_len, opts.random_range_ratio, opts.seed
    )

    def count_tokens(text: str) -> int:
        return len(tok.encode(text))

    async with open_session(1, opts.request_timeout) as session:
        served = served_model or opts.served_model_name or (await list_models(session, opts))[0] or "llm"
        probe = await send_request(session, opts, served, prompts[0], count_tokens)
        read_spec = await spec_counters(session, opts) is not None
    if not probe.success:
        raise BenchError(f"the first request to {opts.endpoint_url} failed: {last_line(probe.error)}")

    results: list[dict[str, Any]] = []
    runs: list[LevelRun] = []
    for c in opts.levels:
        n = opts.requests_for(c)
        task = None
        on_done = None
        if progress is not None:
            # A bar of n requests, or a spinner counting requests for a duration run.
            task = progress.add_task(f"concurrency {c}", total=n)

            def on_done(_rec: Any, _t: Any = task) -> None:
                progress.advance(_t)

        run = await run_level(
            opts,
            served,
            prompts,
            c,
            num_requests=n,
            duration_s=opts.duration,
            warmup=opts.warmup,
            on_done=on_done,
            count_tokens=count_tokens,
            read_spec=read_spec,
        )
        if progress is not None and task is not None:
            progress.update(task, total=len(run.records), completed=len(run.records))
        runs.append(run)
        res = level_result(run, opts.percentile_values, gpu)
        results.append(res)
        if on_level is not None:
            on_level(res)
    return build_result(
        opts, served_model=served, tokenizer=tok.name, model=model, gpu=gpu, levels=results, runs=runs
    )
