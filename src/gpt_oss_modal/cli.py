"""`gpt-oss-modal`: plan, deploy, run and talk to GPT-OSS on Modal, or serve it locally.

Every command that takes config declares it with `@takes_config(...)`: its flags are generated from
DeployConfig's fields (one flag per setting, the field's description as help), and the command receives
the resolved config as `loaded`. `cli_options` holds that machinery, which gives `bench` its flags too,
and the flags declared once for several commands (the credentials of `chat` and `bench`). Flags are the top layer over the environment (`GPT_OSS_*`),
`gpt-oss-modal.toml` and the defaults. A bad value ends the command with one line on stderr and exit
code 2, before anything starts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gpt_oss_modal.bench.cli import bench
from gpt_oss_modal.cli_options import (
    ApiKeyOpt,
    JsonOpt,
    ModalKeyOpt,
    ModalSecretOpt,
    YesOpt,
    config_parameters,
    flag_decls,  # noqa: F401 - docs.py reads the config flags' spellings here
    takes_options,
)
from gpt_oss_modal.core import catalog
from gpt_oss_modal.core.config import ConfigError, DeployConfig, LoadedConfig, load_config
from gpt_oss_modal.core.planner import plan as make_plan

# Not a terminal (a log, CI, `| tee`): nothing is cut or wrapped at 80 columns; tables print at their
# natural width and --help puts each option on one line. --json stays the format for programs.
UNWRAPPED = 100_000
STDOUT_IS_TERMINAL = sys.stdout.isatty()


def _console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else UNWRAPPED)


app = typer.Typer(
    name="gpt-oss-modal",
    help="Run OpenAI's GPT-OSS models as a private, OpenAI-compatible API on Modal (vLLM), or locally.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help, as a Unix tool's: no boxes, readable in a log
    context_settings={"max_content_width": 110} if STDOUT_IS_TERMINAL else {"terminal_width": UNWRAPPED},
)
console = _console()
err = _console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    # The message is plain text (pip extras like '[modal]' must survive), never Rich markup.
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


# Newer typer releases vendor click as typer._click; their usage errors are that module's classes.
_click: Any = getattr(typer.core, "_click", None) or __import__("click")
_NoArgsIsHelp: Any = getattr(_click.exceptions, "NoArgsIsHelpError", ())


class _HelpFormatter(_click.HelpFormatter):
    def write_dl(self, rows: Sequence[tuple[str, str]], col_max: int = 30, col_spacing: int = 2) -> None:
        if (self.width or 0) >= UNWRAPPED:  # unwrapped: each option and its help on one line
            col_max = max((len(term) for term, _ in rows), default=col_max)
        super().write_dl(rows, col_max, col_spacing)


class HelpContext(_click.Context):  # type: ignore[misc]
    formatter_class = _HelpFormatter


class _OneLineUsageErrors(typer.core.TyperGroup):
    """Flag errors that click catches itself (`--max-inputs 1.5`, an unknown option or command) end the same
    way as a bad config value: one line on stderr and exit code 2, instead of a multi-line usage box.
    Its commands format their help with _HelpFormatter."""

    context_class = HelpContext

    def get_command(self, ctx: Any, name: str) -> Any:
        command = super().get_command(ctx, name)
        if command is not None:
            command.context_class = HelpContext
        return command

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _NoArgsIsHelp:
            raise
        except _click.exceptions.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else ctx.command_path
            message = " ".join(e.format_message().split())
            err.print(f"[bold red]error:[/] {escape(message)} (see `{escape(where)} --help`)",
                      highlight=False, soft_wrap=True)  # fmt: skip
            raise typer.Exit(e.exit_code) from None


app.info.cls = _OneLineUsageErrors


# --- the config flags (gpt_oss_modal.cli_options makes them from DeployConfig) --------------------------


def resolve(config_file: Path | None = None, **flags: Any) -> LoadedConfig:
    """Layer the flags over env/TOML/defaults; one line and exit 2 on a bad value."""
    try:
        return load_config(flags, config_file=config_file)
    except ConfigError as e:
        fail(str(e))


def takes_config(
    where: Literal["modal", "local", "any"] = "any", *, only: Sequence[str] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command one flag per config setting that applies `where` (or the settings `only`), plus
    --config, and call it with the resolved config as its `loaded` argument.

        @app.command()
        @takes_config("modal")
        def deploy(loaded: LoadedConfig) -> None: ...

    A new DeployConfig field thus becomes a flag of every such command, with its description as help.
    """
    return takes_options(config_parameters(where, only), lambda values: resolve(**values), into="loaded")


# --- plan -----------------------------------------------------------------------------------------------


@app.command()
@takes_config("modal")
def plan(
    loaded: LoadedConfig,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Does the model fit the GPU? Context, concurrency, MXFP4 kernel, and cost: per hour, always on, at most.

    Memory, KV cache and concurrency are counted as vLLM counts them, from its own start-up figures
    (measured on H200; other GPUs are estimates, and the plan says which). Each boot mode's start-up
    time and decode speed come from the same measurements. The cost per hour of one running container, per day of min_containers (always on, traffic or not),
    and per hour of max_containers (the ceiling). Exits 2 with one line (what does not fit, and the
    largest context or the cheapest GPU that does) when it does not fit.
    """
    try:
        p = make_plan(loaded.config)
    except ConfigError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(p.to_dict(), indent=2))
        if not p.fits:
            raise typer.Exit(2)
        return
    if not p.fits:
        fail(p.reason or "does not fit")
    gpus = f"{p.gpu} x{p.gpu_count}" if p.gpu_count > 1 else p.gpu
    t = Table(title=f"{p.model} on {gpus}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("fits", "yes")
    t.add_row(
        "memory per GPU",
        f"{p.budget_gib_per_gpu} GiB usable = {p.weights_gib_per_gpu} weights + "
        f"{p.overhead_gib_per_gpu} runtime + {p.kv_cache_gib_per_gpu} KV cache ({p.memory_source})",
    )
    t.add_row(
        "KV cache",
        f"{p.kv_tokens:,} tokens, as vLLM counts them: {p.full_length_concurrency:.2f} x {p.max_model_len:,} "
        f"({p.kv_bytes_per_token:,} bytes per token slot per GPU)",
    )
    t.add_row(
        "max context", f"{p.max_context:,} tokens; serving {p.max_model_len:,} ({p.max_model_len_source})"
    )
    t.add_row(
        "concurrency",
        f"{p.full_length_concurrency:.2f} full-length requests (vLLM's maximum concurrency), "
        f"{p.typical_concurrency} of 4k; max_inputs {p.max_inputs}",
    )
    t.add_row(
        "kernels",
        f"MXFP4 MoE: {p.moe_kernel}, attention: {p.attention_backend}; "
        f"--max-num-batched-tokens {p.max_num_batched_tokens} (the engine command's)",
    )
    for cost in p.boot_costs:
        t.add_row(f"boot {cost.boot}" + (" (chosen)" if cost.boot == p.boot else ""), boot_cost(cost))
    if p.speculative is not None:
        t.add_row("speculative", speculative_line(p.speculative))
    t.add_row("cost", running_cost(p))
    t.add_row(
        "scaling",
        f"{p.min_containers} to {p.max_containers} containers, scaling out at {p.target_inputs} requests per "
        f"container, {p.buffer_containers} spare under load",
    )
    t.add_row("always on", always_on(p))
    t.add_row("ceiling", ceiling(p))
    console.print(t)
    for note in p.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    for source in dict.fromkeys(c.source for c in p.boot_costs):
        console.print(f"[dim]boot figures: {source}[/]", highlight=False, soft_wrap=True)
    if p.speculative is not None:
        est = p.speculative
        console.print(
            f"[dim]speculative {est.label}: acceptance from {escape(est.acceptance_source)}; {escape(est.assumptions)}[/]",
            highlight=False,
            soft_wrap=True,
        )


def speculative_line(est: Any) -> str:
    """Speculative decoding in one line: on or off, the drafter, what a step costs, and the modelled
    speed-up (a model)."""

    def span(values: Any, fmt: str) -> str:
        return "-".join(dict.fromkeys(format(v, fmt) for v in values))

    single, at_max = est.speedup_single, est.speedup_max_inputs
    state = "on" if est.on else "off (--speculative eagle3 turns it on)"
    line = (
        f"{state}: {est.method} with {est.drafter.split('@')[0]}, {est.tokens} draft tokens, mean acceptance "
        f"{span(est.mean_acceptance, '.2f')}; a step costs {est.step_cost_single:.2f} / "
        f"{est.step_cost_max_inputs:.2f} decode steps at 1 / {est.max_inputs} streams; "
        f"{span(single, '.1f')}x at 1 stream, {span(at_max, '.1f')}x at {est.max_inputs} streams ({est.label})"
    )
    if not est.gain_holds:
        losses = [
            f"{n} stream{'s' if n > 1 else ''}"
            for n, s in ((1, single), (est.max_inputs, at_max))
            if s[0] <= 1
        ]
        line += f"; no gain at {' and '.join(losses)}" + ("" if est.on else ", so it is off by default")
    return line


def boot_cost(cost: Any) -> str:
    """A boot mode's start-up and decode speed in one line, and whether it was measured."""
    startup = f"{cost.startup_s:.0f}" + (f"-{cost.startup_max_s:.0f}" if cost.startup_max_s else "")
    estimated = " (estimate)" if cost.startup_estimated and cost.label != "estimate" else ""
    parts = [f"{startup} s to /health{estimated}"]
    if cost.single_stream_tok_s is not None:
        parts.append(f"{cost.single_stream_tok_s:,.0f} tok/s single stream ({cost.tpot_ms} ms/token)")
    if cost.max_inputs_tok_s:
        parts.append(f"{'-'.join(f'{t:,}' for t in sorted(cost.max_inputs_tok_s))} tok/s at 50 streams")
    if cost.single_stream_tok_s is None:
        parts.append("decode not measured")
    return ", ".join(parts) + f"; {cost.label}"


def running_cost(p: Any) -> str:
    """What one running container costs per hour, and of what: its GPUs, reserved cores and memory."""
    gpus = f"{p.gpu} x{p.gpu_count}" if p.gpu_count > 1 else p.gpu
    return (
        f"${p.usd_per_hour:.2f}/hour while a container runs: {gpus} ${p.gpu_usd_per_hour:.2f} + "
        f"{p.cpu:g} cores ${p.cpu_usd_per_hour:.2f} + {p.memory_gib:g} GiB ${p.memory_usd_per_hour:.2f} "
        f"(Modal list prices: GPUs {p.price_date}, CPU and memory {catalog.RESOURCE_PRICE_DATE})"
    )


def always_on(p: Any) -> str:
    """What min_containers costs with no traffic at all."""
    if not p.min_containers:
        return "$0.00/day: scales to zero when idle (min_containers 0)"
    return f"${p.always_on_usd_per_day:,.2f}/day: min_containers {p.min_containers} run with no traffic"


def ceiling(p: Any) -> str:
    """The most the deployment can spend in an hour."""
    return f"${p.max_usd_per_hour:,.2f}/hour at most: max_containers {p.max_containers} all running"


# --- config ---------------------------------------------------------------------------------------------


@app.command("config")
@takes_config()
def show_config(
    loaded: LoadedConfig,
    as_json: JsonOpt = False,
    show_command: Annotated[
        bool, typer.Option("--command", help="Also print the vllm serve command.")
    ] = False,
) -> None:
    """The effective config, where each value came from, and (with --command) the engine command."""
    cfg = loaded.config
    values = cfg.model_dump(mode="json")
    if cfg.api_key is not None:
        values["api_key"] = "***"  # set, never shown
    command = None
    if show_command and cfg.model_info is not None:
        from gpt_oss_modal.core.engine import build_command

        try:
            command = build_command(cfg, target="modal")
        except ConfigError as e:
            fail(str(e))
    if as_json:
        out: dict[str, Any] = {"config": values, "sources": loaded.sources}
        if command:
            out["command"] = {"argv": command.argv, "env": command.env}
        print(json.dumps(out, indent=2))
        return
    t = Table(title="effective config", title_justify="left")
    t.add_column("setting", style="bold")
    t.add_column("value")
    t.add_column("from", style="dim")
    for name, value in values.items():
        t.add_row(name, "" if value is None else str(value), loaded.sources.get(name, "default"))
    t.add_row("tensor_parallel", str(cfg.tensor_parallel), "derived from gpu")
    console.print(t)
    if command:
        console.print(command.shell(), highlight=False, soft_wrap=True)


# --- catalog --------------------------------------------------------------------------------------------


@app.command()
def gpus(as_json: JsonOpt = False) -> None:
    """The GPUs you can pick, with memory, architecture, MXFP4 kernel and Modal's price."""
    rows = [
        {
            "gpu": g.name,
            "vram_gib": g.vram_gib,
            "compute_capability": f"{g.compute_capability[0]}.{g.compute_capability[1]}",
            "arch": g.arch,
            "moe_kernel": catalog.moe_kernel(g),
            "usd_per_hour": g.usd_per_hour,
        }
        for g in catalog.GPUS.values()
    ]
    if as_json:
        print(json.dumps({"price_date": catalog.PRICE_DATE, "gpus": rows}, indent=2))
        return
    t = Table(title=f"Modal GPUs (list prices of {catalog.PRICE_DATE})", title_justify="left")
    for col in ("gpu", "VRAM GiB", "SM", "arch", "MXFP4 MoE", "$/hour"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r["gpu"],
            f"{r['vram_gib']:.0f}",
            r["compute_capability"],
            r["arch"],
            r["moe_kernel"],
            f"{r['usd_per_hour']:.2f}",
        )
    console.print(t)


# --- bench ----------------------------------------------------------------------------------------------


app.command()(bench)  # its flags are gpt_oss_modal.bench.options.BenchOptions


# --- serve (local) --------------------------------------------------------------------------------------


@app.command()
@takes_config("local")
def serve(
    loaded: LoadedConfig,
    local: Annotated[
        bool, typer.Option("--local", help="Run the engine on this machine (required; Modal: run/deploy).")
    ] = False,
) -> None:
    """Serve the OpenAI-compatible API on this machine: vLLM on a local GPU, else the tiny model on CPU.

    Without an NVIDIA GPU the default model is `tiny`, the embedded offline checkpoint on vLLM's CPU build.
    Prints the base URL and a curl line once /health answers; Ctrl-C stops the engine and exits 0.
    """
    if not local:
        fail(
            "serve runs the engine on this machine: add --local; for Modal use `gpt-oss-modal run` "
            "(temporary server + smoke test) or `gpt-oss-modal deploy`"
        )
    import signal
    import time

    from gpt_oss_modal.local import server as lo

    try:
        cfg, target = lo.choose_target(loaded.config, model_explicit=loaded.sources.get("model") != "default")
    except lo.LocalServerError as e:
        fail(e.message)
    timeout = cfg.startup_timeout or (lo.DEFAULT_STARTUP_TIMEOUT if target == "local-cpu"
                                      else cfg.effective_startup_timeout())  # fmt: skip

    def _interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # Both stop the engine; SIGINT explicitly too, since a shell starts background jobs with it ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    server = lo.LocalServer(cfg, target=target)
    try:
        try:
            started = time.monotonic()
            if target == "local-gpu":
                # The MoE kernels into the engine's Triton cache while the GPU is free (Hopper, once
                # per cache), after the driver check.
                server.prime(log=lambda line: err.print(line, highlight=False, soft_wrap=True, markup=False))
            server.start()
            what = f"{cfg.model} on vLLM" if target == "local-gpu" else "the tiny checkpoint on vLLM (CPU)"
            err.print(f"starting {what}; log: {server.log_path}", highlight=False, soft_wrap=True)
            seconds = server.wait_ready(timeout, progress=True, console=err)
        except lo.LocalServerError as e:
            server.stop()
            err.print("[bold red]error:[/] ", end="")
            err.print(e.details(), highlight=False, soft_wrap=True, markup=False)
            raise typer.Exit(1) from None
        if target == "local-gpu":
            # On a GPU the first burst would wait for kernels compiled on first use (docs/performance.md):
            # compile them now, before saying ready. The CPU build has no such kernels to compile.
            err.print(server.warm_up().summary(), highlight=False, soft_wrap=True, markup=False)
            seconds = time.monotonic() - started
        console.print(f"ready in {seconds:.0f} s; base URL (served model `llm`):", highlight=False)
        console.print(server.base_url, highlight=False, soft_wrap=True)
        console.print("try:", highlight=False)
        console.print(server.curl_example(), highlight=False, soft_wrap=True, markup=False)
        console.print("Ctrl-C stops it.", highlight=False, style="dim")
        while server.running:
            time.sleep(0.5)
        code = server.stop()
        died = lo.LocalServerError(f"the engine exited (code {code})", server.last_lines(), server.log_path)
        err.print("[bold red]error:[/] ", end="")
        err.print(died.details(), highlight=False, soft_wrap=True, markup=False)
        raise typer.Exit(1)
    except KeyboardInterrupt:
        err.print("stopping the engine ...", highlight=False)
        server.stop()
        err.print("stopped.", highlight=False)
        raise typer.Exit(0) from None


# --- Modal: deploy, run, stop, logs, url, volumes -------------------------------------------------------


def _modal_ready() -> None:
    """One line and exit 2 when the Modal SDK is missing or has no credentials (checked locally)."""
    from gpt_oss_modal.deploy import modal_ops

    problem = modal_ops.modal_problem()
    if problem:
        fail(problem)


def _deployable(cfg: DeployConfig) -> Any:
    """The plan, or exit 2 with one line saying why this config cannot go to Modal."""
    from gpt_oss_modal.deploy import modal_ops

    try:
        return modal_ops.check_deployable(cfg)
    except ConfigError as e:
        fail(str(e))


def _print_plan(cfg: DeployConfig, p: Any) -> None:
    """The plan in one line (plus notes), and a warning when nothing guards the endpoint."""
    from gpt_oss_modal.deploy import modal_ops

    gpus = f"{p.gpu} x{p.gpu_count}" if p.gpu_count > 1 else p.gpu
    err.print(
        f"{p.model} on {gpus}: {p.max_model_len:,}-token context, up to {p.max_inputs} requests per "
        f"container, MXFP4 {p.moe_kernel}, boot {p.boot}, ${p.usd_per_hour:.2f}/hour while a container runs "
        f"({p.cpu:g} cores, {p.memory_gib:g} GiB and the GPU); "
        f"always on ${p.always_on_usd_per_day:,.2f}/day (min_containers {p.min_containers}), at most "
        f"${p.max_usd_per_hour:,.2f}/hour (max_containers {p.max_containers})",
        highlight=False,
        soft_wrap=True,
    )
    for note in p.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    if modal_ops.open_endpoint(cfg):
        warning = modal_ops.OPEN_ENDPOINT_WARNING
        err.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


def _modal_call(argv: list[str], env: dict[str, str] | None = None) -> None:
    from gpt_oss_modal.deploy import modal_ops

    rc = modal_ops.call(argv, env)
    if rc:
        raise typer.Exit(rc)  # Modal printed why


def _fill_caches(cfg: DeployConfig) -> None:
    """Before a GPU starts: what the volumes lack for cfg, filled by the app's one-off functions (the
    weights on a CPU, then the MoE kernels on the GPU), each in an ephemeral app of its own."""
    from gpt_oss_modal.deploy import modal_ops
    from gpt_oss_modal.server import precompile

    try:
        missing = modal_ops.missing_caches(cfg, precompile.moe_kernels_for(cfg))
    except modal_ops.ModalError as e:
        fail(str(e), 1)
    say = {"weights": f"downloading {cfg.model}'s weights into the volume (on a CPU)",
           "kernels": "compiling the MoE kernels into the cache volume (on the GPU, once)"}  # fmt: skip
    for what in missing:
        err.print(f"{say[what]} ...", highlight=False, soft_wrap=True)
        _modal_call(modal_ops.function_argv(modal_ops.FILL_FUNCTIONS[what]), modal_ops.side_env(cfg))


@app.command()
@takes_config("modal")
def deploy(loaded: LoadedConfig) -> None:
    """Deploy a persistent endpoint on Modal (`modal deploy`) and print its URL.

    The config is checked first (does it fit the GPU?) and travels to the container as JSON, so the
    container runs exactly what `gpt-oss-modal config` shows.
    """
    from gpt_oss_modal.deploy import modal_ops
    from gpt_oss_modal.server.lifecycle import snapshot_key_notice

    cfg = loaded.config
    p = _deployable(cfg)
    _modal_ready()
    _print_plan(cfg, p)
    if notice := snapshot_key_notice(cfg):
        err.print(f"[yellow]note:[/] {escape(notice)}", highlight=False, soft_wrap=True)
    _fill_caches(cfg)
    _modal_call(modal_ops.deploy_argv(), modal_ops.app_env(cfg))
    try:
        url = modal_ops.deployed_url(cfg.app_name)
    except modal_ops.ModalError as e:
        fail(f"deployed, but {e}", 1)
    console.print(url, highlight=False, soft_wrap=True)
    err.print(
        f'base URL for the openai client: {url}/v1 (served model `llm`); try: gpt-oss-modal chat "Hello"',
        highlight=False,
        soft_wrap=True,
    )


@app.command("run")
@takes_config("modal")
def modal_run(loaded: LoadedConfig) -> None:
    """A temporary server on Modal (`modal run`) and a smoke test: health, a chat completion, a streamed one.

    The app stops when the test ends. A private endpoint needs a proxy auth token in MODAL_KEY and
    MODAL_SECRET (create one at modal.com/settings/proxy-auth-tokens).
    """
    from gpt_oss_modal.deploy import modal_ops, precheck

    cfg = loaded.config
    p = _deployable(cfg)
    _modal_ready()
    _print_plan(cfg, p)
    # What the smoke test needs from this machine, checked before Modal builds anything.
    if problem := precheck.run_problem(cfg):
        fail(problem)
    _fill_caches(cfg)
    _modal_call(modal_ops.run_argv(), modal_ops.app_env(cfg))


@app.command()
@takes_config("modal")
def download(loaded: LoadedConfig) -> None:
    """Download the model's pinned revision into the huggingface-cache volume, on a CPU.

    Only the files vLLM loads, with progress in the log; returns at once when the volume has them, and
    resumes a download cut short. Meanwhile vLLM inspects the model's class and caches the answer in the
    vllm-cache volume, which a first GPU container would otherwise do in its start-up. `deploy` and `run`
    do this first by themselves when the volume lacks the revision, so that no GPU waits for the download.
    """
    from gpt_oss_modal.deploy import modal_ops

    cfg = loaded.config
    _deployable(cfg)
    _modal_ready()
    _modal_call(modal_ops.function_argv(modal_ops.FILL_FUNCTIONS["weights"]), modal_ops.side_env(cfg))


@app.command()
@takes_config(only=["app_name"])
def stop(
    loaded: LoadedConfig,
    yes: YesOpt = False,
) -> None:
    """Stop the deployed app and its containers (`modal app stop`); the cache volumes stay."""
    from gpt_oss_modal.deploy import modal_ops

    _modal_ready()
    _modal_call(modal_ops.stop_argv(loaded.config.app_name, yes=yes))


@app.command()
@takes_config(only=["app_name"])
def logs(
    loaded: LoadedConfig,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream new entries until the app stops.")
    ] = False,
    tail: Annotated[
        int | None, typer.Option("--tail", "-n", help="Show only the last N entries (at most 20,000).")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="Start of the range: 2h, 30m...")] = None,
) -> None:
    """The deployed app's logs, vLLM's start-up included (`modal app logs`).

    Either fetches past entries (the last 100, or --tail / --since) or, with --follow, streams new ones.
    """
    from gpt_oss_modal.deploy import modal_ops

    try:
        argv = modal_ops.logs_argv(loaded.config.app_name, follow=follow, tail=tail, since=since)
    except ValueError as e:
        fail(str(e))
    _modal_ready()
    _modal_call(argv)


@app.command()
@takes_config(only=["app_name"])
def url(loaded: LoadedConfig) -> None:
    """The deployed endpoint's URL (add /v1 for the openai client)."""
    from gpt_oss_modal.deploy import modal_ops

    _modal_ready()
    try:
        console.print(modal_ops.deployed_url(loaded.config.app_name), highlight=False, soft_wrap=True)
    except modal_ops.ModalError as e:
        fail(str(e), 1)


volumes_app = typer.Typer(
    help="The cache volumes (model weights, compiled kernels).", no_args_is_help=True, cls=_OneLineUsageErrors
)
app.add_typer(volumes_app, name="volumes")


@volumes_app.command("list")
def volumes_list(as_json: JsonOpt = False) -> None:
    """The two cache volumes, their mount paths, files and sizes."""
    from gpt_oss_modal.deploy import modal_ops

    _modal_ready()
    try:
        usage = modal_ops.volume_usage()
    except modal_ops.ModalError as e:
        fail(str(e), 1)
    if as_json:
        print(json.dumps([u.__dict__ for u in usage], indent=2))
        return
    t = Table(title="cache volumes", title_justify="left")
    for col in ("volume", "mounted at", "files", "size"):
        t.add_column(col)
    for u in usage:
        if u.exists:
            t.add_row(u.name, u.mount_path, f"{u.files:,}", modal_ops.human_bytes(u.bytes))
        else:
            t.add_row(u.name, u.mount_path, "-", "not created yet")
    console.print(t)


@volumes_app.command("clear")
def volumes_clear(
    name: Annotated[str, typer.Argument(help="huggingface-cache or vllm-cache.")],
    yes: YesOpt = False,
) -> None:
    """Delete everything in a cache volume: the next cold start downloads or compiles again."""
    from gpt_oss_modal.deploy import modal_ops

    names = [v.name for v in modal_ops.CACHE_VOLUMES]
    if name not in names:
        fail(f"{name!r} is not a cache volume; choose {' or '.join(names)}")
    _modal_ready()
    if not yes:
        if not sys.stdin.isatty():
            fail(f"clearing {name} needs confirmation: pass --yes")
        typer.confirm(f"Delete everything in volume {name}?", abort=True, err=True)
    try:
        removed = modal_ops.clear_volume(name)
    except modal_ops.ModalError as e:
        fail(str(e), 1)
    err.print(f"cleared {name} ({removed} top-level entries removed)", highlight=False)


# --- chat -----------------------------------------------------------------------------------------------


@app.command()
@takes_config(only=["app_name"])
def chat(
    loaded: LoadedConfig,
    prompt: Annotated[str | None, typer.Argument(help="One message; none: an interactive chat.")] = None,
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", envvar="GPT_OSS_URL", help="OpenAI-compatible server (default: Modal)."),
    ] = None,
    api_key: ApiKeyOpt = None,
    modal_key: ModalKeyOpt = None,
    modal_secret: ModalSecretOpt = None,
    system: Annotated[str | None, typer.Option("--system", help="System message.")] = None,
    reasoning_effort: Annotated[
        str | None, typer.Option("--reasoning-effort", help="low, medium or high.")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="Longest reply (tokens).")] = None,
    served_model_name: Annotated[
        str, typer.Option("--served-model-name", help="Model name to send.")
    ] = "llm",
) -> None:
    """Talk to the model: streams the reply, with its reasoning dimmed (on stderr).

    Default server: the deployed app (its URL looked up on Modal); --base-url for any other.
    """
    import openai

    from gpt_oss_modal.clients import openai_api

    if reasoning_effort is not None and reasoning_effort not in ("low", "medium", "high"):
        fail(f"--reasoning-effort {reasoning_effort!r}: choose low, medium or high")
    if not base_url:
        from gpt_oss_modal.deploy import modal_ops

        cfg = loaded.config
        _modal_ready()
        try:
            base_url = modal_ops.deployed_url(cfg.app_name)
        except modal_ops.ModalError as e:
            fail(f"{e} (or pass --base-url)", 1)
    try:
        oai = openai_api.openai_client(
            base_url, api_key=api_key, modal_key=modal_key, modal_secret=modal_secret
        )
    except ValueError as e:
        fail(str(e))
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    in_reasoning = [False]

    def show_reasoning(piece: str) -> None:
        in_reasoning[0] = True
        err.print(piece, end="", style="dim", markup=False, highlight=False, soft_wrap=True)

    def show_content(piece: str) -> None:
        if in_reasoning[0]:
            err.print()
            in_reasoning[0] = False
        console.print(piece, end="", markup=False, highlight=False, soft_wrap=True)

    def turn(text: str) -> None:
        messages.append({"role": "user", "content": text})
        try:
            reply = openai_api.stream_chat(
                oai, messages, model=served_model_name, reasoning_effort=reasoning_effort,
                max_tokens=max_tokens, on_reasoning=show_reasoning, on_content=show_content,
            )  # fmt: skip
        except openai.APIConnectionError as e:
            fail(f"cannot reach {openai_api.v1_url(base_url)}: {e.__cause__ or e}", 1)
        except openai.APIStatusError as e:
            body = " ".join(str(e).split())[:300]
            hint = ""
            if e.status_code in (401, 403):
                sent = openai_api.auth_headers(
                    api_key=api_key, modal_key=modal_key, modal_secret=modal_secret
                )
                hint = "; " + openai_api.auth_hint(body, sent)
            fail(f"the server answered {e.status_code}: {body}{hint}", 1)
        console.print()
        if reply.finish_reason == "length":
            err.print("[yellow](cut off at the token limit: raise --max-tokens)[/]", highlight=False)
        # Earlier turns' reasoning is not sent back: gpt-oss expects only the final answers in the history.
        messages.append({"role": "assistant", "content": reply.content})

    if prompt is not None:
        turn(prompt)
        return
    err.print(f"chatting with {openai_api.v1_url(base_url)}; Ctrl-D to quit", highlight=False, style="dim")
    while True:
        try:
            text = input("> ")
        except (EOFError, KeyboardInterrupt):
            err.print()
            return
        if text.strip() in ("/exit", "/quit", "exit", "quit"):
            return
        if text.strip():
            turn(text)


# --- doctor ---------------------------------------------------------------------------------------------


@app.command()
@takes_config("modal")
def doctor(
    loaded: LoadedConfig,
    as_json: JsonOpt = False,
    remote: Annotated[
        bool,
        typer.Option(
            "--remote",
            help="Ask the image itself, on the GPU, for cents: driver, CUDA, torch, vLLM, backends.",
        ),
    ] = False,
) -> None:
    """The container this config deploys, checked without calling Modal: image, lock, revision, volumes, command.

    With --remote, a short function on the exact image and GPU reports the driver, CUDA, torch and vLLM, and
    the attention backend vLLM picks. Exits 2 with one line when the config cannot be deployed, 1 when a
    check fails.
    """
    from gpt_oss_modal.deploy import doctor as checkup

    try:
        report = checkup.report(loaded.config)
    except ConfigError as e:
        fail(str(e))
    if remote:
        _doctor_remote(loaded.config, as_json)
        return
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        console.print(checkup.render(report), highlight=False, markup=False, soft_wrap=True)
    if checkup.failed(report):
        raise typer.Exit(1)


def _doctor_remote(cfg: DeployConfig, as_json: bool) -> None:
    """`doctor --remote`: the app's probe function on the image and GPU, in an ephemeral app."""
    import os

    from gpt_oss_modal.deploy import doctor as checkup
    from gpt_oss_modal.deploy import modal_ops

    _modal_ready()
    # The app module resolves its config from the shipped JSON, as under `modal run` (no warm containers).
    os.environ[modal_ops.CONFIG_JSON_ENV] = modal_ops.side_env(cfg, {})[modal_ops.CONFIG_JSON_ENV]
    import modal
    from gpt_oss_modal import modal_app

    try:
        with modal.enable_output(), modal_app.app.run():
            fact = modal_app.doctor_probe.remote()
    except Exception as e:
        fail(f"doctor --remote: {' '.join(str(e).split())[:300] or type(e).__name__}", 1)
    if as_json:
        print(json.dumps(fact, indent=2))
    else:
        expected = {
            "attention": catalog.attention_backend(cfg.gpu_type),
            "moe": catalog.moe_kernel(cfg.gpu_type),
        }
        console.print(checkup.render_remote(fact, expected), highlight=False, markup=False, soft_wrap=True)
    if not all(c["ok"] for c in checkup.remote_checks(fact)):
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
