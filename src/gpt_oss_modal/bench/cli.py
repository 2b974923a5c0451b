"""The `gpt-oss-modal bench` command: options -> config (model, GPU price) -> the server -> sweep -> report.

The command's flags are BenchOptions' fields (see `options`): `bench` takes them through
`cli_options.takes_options`, as the config commands take the config's, so a new option is one field there.
The main CLI registers it with `app.command()(bench)`.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

import typer

from gpt_oss_modal.bench.options import BenchError, BenchOptions
from gpt_oss_modal.cli_options import dataclass_parameters, takes_options
from gpt_oss_modal.install import install_hint


def run(opts: BenchOptions, console: Any, err: Any) -> dict[str, Any]:
    """Everything `gpt-oss-modal bench` does; raises BenchError with one line when it cannot."""
    try:
        import aiohttp  # noqa: F401 - the one HTTP client of the benchmark
    except ImportError:
        raise BenchError(f"gpt-oss-modal bench needs aiohttp: {install_hint('bench')}") from None
    import asyncio

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from gpt_oss_modal.bench import endpoint, report, sweep, workload
    from gpt_oss_modal.bench.metrics import GpuPrice
    from gpt_oss_modal.core import catalog
    from gpt_oss_modal.core.config import ConfigError, load_config

    try:
        loaded = load_config({"model": opts.model, "gpu": opts.gpu}, config_file=opts.config_file)
    except ConfigError as e:
        raise BenchError(str(e)) from None
    cfg = loaded.config

    async def models() -> tuple[str | None, str | None]:
        async with endpoint.open_session(1, opts.request_timeout) as session:
            return await endpoint.list_models(session, opts)

    served, root = asyncio.run(models())
    # The config's default model says nothing about the server; the checkpoint it reports says better.
    model = (
        cfg.model if loaded.sources.get("model") != "default" else (workload.infer_model(root) or cfg.model)
    )
    # No price for the tiny CPU model, unless --gpu (or the config) names the GPU to price it at.
    gpu = GpuPrice(cfg.gpu_type.name, cfg.gpu_count, cfg.gpu_type.usd_per_hour)
    if loaded.sources.get("gpu") == "default" and model == catalog.TINY:
        gpu = None
    tok = workload.load_tokenizer(opts.tokenizer or workload.default_tokenizer(model, root))
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
        refresh_per_second=4,  # the client shares the CPU with what it measures when the server is local
    )
    with progress:
        result = sweep.sweep(
            opts,
            tok,
            served_model=opts.served_model_name or served or "llm",
            model=model,
            gpu=gpu,
            progress=progress,
        )
    if opts.out is not None:
        report.write_json(result, opts.out)
    if opts.plot is not None:
        report.plot(result, opts.plot)

    show = err if opts.as_json else console
    report.print_report(result, show)
    for label, path in (("results", opts.out), ("plot", opts.plot)):
        if path is not None:
            show.print(f"{label}: {path}", markup=False, highlight=False, soft_wrap=True)
    if opts.as_json:
        print(json.dumps(result, indent=2))
    return result


def _refuse(e: BenchError) -> NoReturn:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2) from None


def opts_from_flags(values: dict[str, Any]) -> BenchOptions:
    """The command's flags as BenchOptions; a bad value ends the command with one line and exit code 2."""
    try:
        return BenchOptions(**values)
    except BenchError as e:
        _refuse(e)


@takes_options(dataclass_parameters(BenchOptions), opts_from_flags, into="opts")
def bench(opts: BenchOptions) -> None:
    """Throughput, latency (TTFT, TPOT, ITL, end-to-end) and $ per million output tokens, per concurrency.

    Metrics follow `vllm bench serve`'s definitions; prompts and replies are token-exact.
    """
    from rich.console import Console

    try:
        run(opts, Console(), Console(stderr=True))
    except BenchError as e:
        _refuse(e)
