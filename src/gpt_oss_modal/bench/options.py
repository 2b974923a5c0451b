"""Every option of `gpt-oss-modal bench`, declared once.

A field of BenchOptions is the command's flag (name, type, default and help in its annotation), the
attribute the benchmark reads, and the keyword a script passes: `BenchOptions(url=..., concurrency="4")`.
Values are checked when the object is made, each bad one with one line that says what to pass instead.
Like `vllm bench serve`'s `--metric-percentiles`, lists are given as comma-separated text.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated

import typer

from gpt_oss_modal.cli_options import ApiKeyOpt, ConfigFile, ModalKeyOpt, ModalSecretOpt

ENDPOINT_PATHS: dict[str, str] = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


class BenchError(RuntimeError):
    """The benchmark cannot run: the message is one line saying why and what to do."""


def parse_concurrency(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise BenchError(
            f"--concurrency {text!r}: give whole numbers separated by commas, e.g. 1,4,16"
        ) from None
    if not levels or any(c < 1 for c in levels):
        raise BenchError(f"--concurrency {text!r}: give whole numbers of at least 1, e.g. 1,4,16")
    return levels


def parse_percentiles(text: str) -> list[float]:
    try:
        ps = [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise BenchError(f"--percentiles {text!r}: give numbers separated by commas, e.g. 50,90,99") from None
    if not ps or any(not 0 < p <= 100 for p in ps):
        raise BenchError(f"--percentiles {text!r}: each must be in (0, 100]")
    return ps


@dataclass(frozen=True)
class BenchOptions:
    """What `gpt-oss-modal bench` was asked for."""

    url: Annotated[
        str | None, typer.Option("--url", envvar="GPT_OSS_URL", help="Base URL of the OpenAI-style API.")
    ] = None
    concurrency: Annotated[str, typer.Option("--concurrency", "-c", help="Levels to sweep.")] = "1,4,16"
    requests: Annotated[
        int | None, typer.Option("--requests", "-n", help="Requests per level (default 4 x level, >= 8).")
    ] = None
    duration: Annotated[
        float | None, typer.Option("--duration", help="Seconds per level instead of --requests.")
    ] = None
    input_len: Annotated[int, typer.Option("--input-len", help="Prompt tokens (mean).")] = 1024
    output_len: Annotated[int, typer.Option("--output-len", help="Reply tokens (mean).")] = 128
    random_range_ratio: Annotated[
        float, typer.Option("--random-range-ratio", help="Draw lengths uniformly from mean x [1-r, 1+r].")
    ] = 0.0
    seed: Annotated[int, typer.Option("--seed", help="Seed for prompts and lengths.")] = 0
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed requests before each level.")] = 0
    endpoint: Annotated[str, typer.Option("--endpoint", help="completions or chat.")] = "completions"
    served_model_name: Annotated[
        str | None, typer.Option("--served-model-name", help="Model name to send (default: the server's).")
    ] = None
    tokenizer: Annotated[
        str | None, typer.Option("--tokenizer", help="Tokenizer dir or HF id (default: the server's).")
    ] = None
    ignore_eos: Annotated[
        bool, typer.Option("--ignore-eos/--no-ignore-eos", help="Exact reply lengths (vLLM extension).")
    ] = True
    api_key: ApiKeyOpt = None
    modal_key: ModalKeyOpt = None
    modal_secret: ModalSecretOpt = None
    # The model and GPU behind the URL, through the config layers: they name the tokenizer and the price.
    model: Annotated[str | None, typer.Option("--model", "-m", help="20b, 120b (or full id), or tiny.")] = (
        None
    )
    gpu: Annotated[str | None, typer.Option("--gpu", "-g", help="GPU type, e.g. H100 or H100:2.")] = None
    config_file: ConfigFile = None
    percentiles: Annotated[str, typer.Option("--percentiles", help="Percentiles to report.")] = "50,90,99"
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the results as JSON.")] = None
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a throughput/latency PNG.")] = None
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout.")] = False
    save_requests: Annotated[
        bool, typer.Option("--save-requests", help="Keep every request's timings in the JSON.")
    ] = False
    request_timeout: Annotated[
        float, typer.Option("--request-timeout", help="Seconds per request, Modal's 303 redirects included.")
    ] = 3600.0

    def __post_init__(self) -> None:
        if not self.url:
            raise BenchError(
                "no server to benchmark: pass --url (or set GPT_OSS_URL), e.g. the URL `deploy` printed"
            )
        if self.endpoint not in ENDPOINT_PATHS:
            raise BenchError(f"--endpoint {self.endpoint!r}: choose completions or chat")
        if self.requests is not None and self.duration is not None:
            raise BenchError("give --requests or --duration, not both")
        if self.requests is not None and self.requests < 1:
            raise BenchError("--requests must be at least 1")
        if self.duration is not None and self.duration <= 0:
            raise BenchError("--duration must be a positive number of seconds")
        if self.input_len < 1 or self.output_len < 1:
            raise BenchError("--input-len and --output-len must be at least 1 token")
        if not 0 <= self.random_range_ratio < 1:
            raise BenchError(f"--random-range-ratio {self.random_range_ratio} must be in [0, 1)")
        if self.request_timeout <= 0:
            raise BenchError("--request-timeout must be a positive number of seconds")
        # Parse now, so that a bad value stops the command before anything is sent.
        _ = self.levels, self.percentile_values, self.base_url, self.headers

    @cached_property
    def levels(self) -> list[int]:
        return parse_concurrency(self.concurrency)

    @cached_property
    def percentile_values(self) -> list[float]:
        return parse_percentiles(self.percentiles)

    @cached_property
    def base_url(self) -> str:
        """scheme://host[:port] without the OpenAI path: `https://x.modal.run/v1/` -> `https://x.modal.run`."""
        from gpt_oss_modal.clients.openai_api import root_url

        try:
            return root_url(self.url or "")
        except ValueError as e:
            raise BenchError(f"--url {e}") from None

    @property
    def endpoint_url(self) -> str:
        return self.base_url + ENDPOINT_PATHS[self.endpoint]

    @cached_property
    def headers(self) -> dict[str, str]:
        from gpt_oss_modal.clients.openai_api import auth_headers

        try:
            return auth_headers(
                api_key=self.api_key, modal_key=self.modal_key, modal_secret=self.modal_secret
            )
        except ValueError as e:
            raise BenchError(
                f"{e}: pass both --modal-key and --modal-secret (or MODAL_KEY/MODAL_SECRET)"
            ) from None

    def requests_for(self, concurrency: int) -> int | None:
        """Requests at one level: --requests, or 4 x concurrency (at least 8); None when timed by --duration."""
        if self.duration is not None:
            return None
        return self.requests if self.requests is not None else max(8, 4 * concurrency)
