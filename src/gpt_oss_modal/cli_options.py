"""The flags of `gpt-oss-modal`'s commands, each declared once, and the one way a command receives them.

typer reads a command's flags from its signature. A command that takes a group of flags (the config
settings, or every option of `bench`) gets them from `takes_options`: the group's parameters are added to
its signature, and the command is called with one object built from their values. Two groups exist:

* `config_parameters(...)`: one flag per DeployConfig field (its description as help), plus --fast-boot
  and --config; `cli.takes_config` builds the resolved config from them.
* `dataclass_parameters(BenchOptions)`: one flag per field of the bench's options.

The credential flags a client of a server needs (`chat`, `bench`) are declared here too. This module sits
just above `core` (it reads DeployConfig) and below every command, `bench`'s included.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import SecretStr

from gpt_oss_modal.core.config import FAST_BOOT, DeployConfig, applies

# --- one command, one group of flags --------------------------------------------------------------------


def takes_options(
    parameters: Sequence[inspect.Parameter], build: Callable[[dict[str, Any]], Any], *, into: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the flags `parameters` (after its own) and call it with `build(their values)` as
    its argument `into`.

        @takes_options(dataclass_parameters(BenchOptions), lambda values: BenchOptions(**values), into="opts")
        def bench(opts: BenchOptions) -> None: ...
    """
    names = [p.name for p in parameters]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != into]

        @functools.wraps(command)
        def with_options(**kwargs: Any) -> Any:
            values = {n: kwargs.pop(n) for n in names}
            return command(**kwargs, **{into: build(values)})

        with_options.__signature__ = signature.replace(parameters=[*own, *parameters])  # type: ignore[attr-defined]
        return with_options

    return decorate


def keyword(name: str, annotation: Any, default: Any = None) -> inspect.Parameter:
    """A keyword-only parameter: typer makes it an option."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def dataclass_parameters(cls: type) -> list[inspect.Parameter]:
    """One parameter per field of dataclass `cls`: its annotation (an Annotated typer.Option) and default."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return [
        keyword(f.name, hints[f.name], inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default)
        for f in dataclasses.fields(cls)
    ]  # fmt: skip


# --- the config flags, generated from DeployConfig ------------------------------------------------------

# Short spellings; every other flag is the field's name in kebab case (bools: --x/--no-x).
SHORT_FLAGS = {"model": "-m", "gpu": "-g", "port": "-p"}

ConfigFile = Annotated[
    Path | None, typer.Option("--config", help="TOML config file (default: ./gpt-oss-modal.toml).")
]
FastBootOpt = Annotated[
    bool | None,
    typer.Option(
        "--fast-boot/--no-fast-boot",
        help="FAST_BOOT of the original gpt_oss_inference.py: --fast-boot is --boot fast, "
        "--no-fast-boot is --boot compiled.",
    ),
]


def _flag_type(annotation: Any) -> Any:
    """The type click parses a field's flag as: Optional and Annotated stripped; secrets, lists and
    unions (a number or "auto") as text, which the config model then parses."""
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) > 1:
            return str
        (annotation,) = members
    if annotation is SecretStr or typing.get_origin(annotation) is list:  # lists: shell words
        return str
    return annotation


def flag_decls(name: str) -> list[str]:
    """The spellings of DeployConfig field `name`'s flag: `--max-model-len`, `--public/--no-public`, `-m`."""
    flag = "--" + name.replace("_", "-")
    if _flag_type(DeployConfig.model_fields[name].annotation) is bool:
        return [f"{flag}/--no-{flag[2:]}"]
    return [flag, *filter(None, [SHORT_FLAGS.get(name)])]


def config_option(name: str) -> Any:
    """The flag of DeployConfig field `name`, as a typer parameter annotation (unset: None, not given)."""
    field = DeployConfig.model_fields[name]
    option = typer.Option(
        *flag_decls(name), help=field.description, show_default=False, metavar=_metavar(field)
    )
    return Annotated[_flag_type(field.annotation) | None, option]


def _metavar(field: Any) -> str | None:
    """`<int|auto>` for a number-or-word union (parsed as text); None (click's own) for everything else."""
    members = [a for a in typing.get_args(field.annotation) if a is not type(None)]
    if typing.get_origin(field.annotation) not in (typing.Union, types.UnionType) or len(members) < 2:
        return None
    words = [
        w for a in members for w in (typing.get_args(a) if typing.get_origin(a) is Literal else [a.__name__])
    ]
    return f"<{'|'.join(words)}>"


def config_parameters(
    where: Literal["modal", "local", "any"] = "any", only: Sequence[str] | None = None
) -> list[inspect.Parameter]:
    """One flag per config setting that applies `where` (or the settings `only`), --fast-boot with --boot,
    and --config; each unset (None) unless given."""
    names = [
        n
        for n in DeployConfig.model_fields
        if (only is None or n in only) and (where == "any" or applies(n, where))
    ]
    flags = [keyword(n, config_option(n)) for n in names]
    if "boot" in names:
        flags.append(keyword(FAST_BOOT, FastBootOpt))
    return [*flags, keyword("config_file", ConfigFile)]


# --- a client's credentials for a server (chat, bench): a vLLM bearer key and a Modal proxy auth token --

ApiKeyOpt = Annotated[
    str | None, typer.Option("--api-key", envvar="GPT_OSS_API_KEY", help="Bearer key for the server.")
]
ModalKeyOpt = Annotated[
    str | None, typer.Option("--modal-key", envvar="MODAL_KEY", help="Modal proxy auth token id (wk-...).")
]
ModalSecretOpt = Annotated[
    str | None,
    typer.Option("--modal-secret", envvar="MODAL_SECRET", help="Modal proxy auth secret (ws-...)."),
]


# --- flags several commands share ----------------------------------------------------------------------

JsonOpt = Annotated[bool, typer.Option("--json", help="Print as JSON.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
