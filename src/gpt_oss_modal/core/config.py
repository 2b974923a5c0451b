"""The deployment config: one typed object that every other part reads.

Values come from four layers, later wins: defaults < `gpt-oss-modal.toml` < environment (`GPT_OSS_*`, and
the original gpt_oss_inference.py's names in ORIGINAL_ENV) < CLI flags. `load_config` merges them and
remembers which layer (and which variable) set each field, so `gpt-oss-modal config` can say where a value
came from.

The Modal container imports the app module again, far from the user's TOML file, environment and flags.
So the local side resolves the config once and ships it as JSON in `GPT_OSS_CONFIG_JSON`; whoever finds
that variable takes the config from it verbatim and reads nothing else.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gpt_oss_modal.core import catalog

CONFIG_FILE = "gpt-oss-modal.toml"
CONFIG_PATH_ENV = "GPT_OSS_CONFIG"  # points at another TOML file
CONFIG_JSON_ENV = "GPT_OSS_CONFIG_JSON"  # a config resolved elsewhere, taken verbatim
CACHE_DIR_ENV = "GPT_OSS_CACHE_DIR"  # this machine's cache directory (see cache_dir)
ENV_PREFIX = "GPT_OSS_"
SERVED_MODEL_NAME = "llm"
DEFAULT_APP_NAME = "gpt-oss-vllm-inference"


# The first start on an empty `huggingface-cache` volume downloads the weights inside the container's
# start-up: `gpt-oss-modal deploy`/`run` fill the volume first, on a CPU, but a plain `modal deploy` of the
# app does not. So the default startup timeout allows for the download at this rate, below the slow end of
# docs/cold-start.md's own estimate (12.8 GiB in 5 min is 44 MiB/s, 60.8 GiB in 15 min 69 MiB/s): a first
# start as slow as we estimate it can be still comes up (20b: +328 s, 120b: +1,557 s).
DOWNLOAD_ALLOWANCE_MIB_S = 40


# Where a setting has an effect, as field metadata (`where`): a Modal-only setting is no flag of
# `serve --local`, a local-only one none of `deploy`/`run`. Untagged settings apply to both.
MODAL_ONLY = {"where": "modal"}
LOCAL_ONLY = {"where": "local"}


# The allowed range of each number, and how to say it: one table instead of one validator per setting.
RANGES: dict[str, tuple[float, float, str]] = {
    "max_model_len": (256, 131072, 'use 256 to 131072 tokens (the models\' limit), or "auto"'),
    "max_inputs": (1, 1024, "use 1 to 1024 concurrent requests per container"),
    "target_inputs": (1, 1024, "use 1 to max_inputs concurrent requests per container, or leave it unset"),
    "min_containers": (0, 1000, "use 0 (scale to zero) to 1000 containers"),
    "max_containers": (1, 1000, "use 1 to 1000 containers"),
    "buffer_containers": (0, 1000, "use 0 to 1000 containers"),
    "scaledown_window": (2, 3600, "Modal allows 2 to 3600 seconds"),
    "gpu_memory_utilization": (0.3, 0.98, "use a fraction from 0.3 to 0.98"),
    "port": (1, 65535, "a TCP port is 1 to 65535"),
    "startup_timeout": (30, 3 * 3600, "use 30 to 10800 seconds"),
    "timeout": (10, 24 * 3600, "Modal allows 10 to 86400 seconds"),
    "speculative_tokens": (1, 10, "use 1 to 10 draft tokens per step (the published drafters run 3 to 7)"),
}

# The form of each name, and how to say it.
SHAPES: dict[str, tuple[str, str]] = {
    "app_name": (
        r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}",
        "a valid Modal app name: letters, digits, '-', '_' and '.'",
    ),
    "vllm_version": (r"\d+\.\d+\.\d+(\.post\d+|rc\d+)?", "a vLLM release number such as 0.26.0"),
}

# The original gpt_oss_inference.py chose the boot mode with FAST_BOOT, a bool; its meaning in today's
# `boot`, here only (a TOML `fast_boot`, the environment and --fast-boot/--no-fast-boot all come through).
FAST_BOOT = "fast_boot"
FAST_BOOT_MEANS = {True: "fast", False: "compiled"}
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


def fast_boot_as_boot(values: dict[str, Any]) -> dict[str, Any]:
    """`values` with `fast_boot` translated to `boot`; a `boot` given alongside it wins."""
    if FAST_BOOT not in values:
        return values
    values = dict(values)
    fast = values.pop(FAST_BOOT)
    if fast is not None:
        if isinstance(fast, str):
            fast = fast.strip().lower() in TRUE_WORDS
        values.setdefault("boot", FAST_BOOT_MEANS[bool(fast)])
    return values


def _refuse_float16(text: str) -> str:
    word = text.strip().lower()
    if word in TRUE_WORDS:
        raise ConfigError(
            f"USE_FLOAT16={text}: GPT-OSS runs in bfloat16 only (its MXFP4 expert kernels take bfloat16 "
            "activations, and the model was trained in bfloat16); unset USE_FLOAT16 or set it to False"
        )
    if word not in FALSE_WORDS:
        raise ConfigError(
            f"USE_FLOAT16={text!r} is neither true nor false; unset it (bfloat16 is the only dtype)"
        )
    return "bfloat16"


@dataclass(frozen=True)
class OriginalName:
    """An environment variable of the original gpt_oss_inference.py, and the setting it sets here."""

    setting: str  # a DeployConfig field, or FAST_BOOT
    means: str  # what it is here, for README's table
    read: Callable[[str], Any] = str  # the variable's text -> the setting's value (or ConfigError)


# The original's environment names, still read (from the environment only). A `GPT_OSS_*` variable for the
# same setting wins when both are set. Nothing else about them is special-cased anywhere.
ORIGINAL_ENV: dict[str, OriginalName] = {
    "GPU_CONFIG": OriginalName("gpu", "`gpu`"),
    "MODEL_NAME": OriginalName("model", "`model`"),
    "FAST_BOOT": OriginalName(FAST_BOOT, "`boot`: true is `fast`, false `compiled`"),
    "MAX_MODEL_LEN": OriginalName("max_model_len", "`max_model_len`"),
    "SCALEDOWN_WINDOW": OriginalName("scaledown_window", "`scaledown_window` (seconds)"),
    "MAX_INPUTS": OriginalName("max_inputs", "`max_inputs`"),
    "USE_FLOAT16": OriginalName(
        "dtype", "refused when true: MXFP4 needs bfloat16 (false is harmless)", read=_refuse_float16
    ),
}


class ConfigError(ValueError):
    """A bad value: the message is one line saying what is wrong and how to fix it."""


class DeployConfig(BaseSettings):
    """Everything that decides what runs: which model, on which GPU, how it boots, who may call it."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    model: str = Field(
        "openai/gpt-oss-20b",
        description="Model: openai/gpt-oss-20b or openai/gpt-oss-120b (20b/120b accepted); `tiny` is the "
        "embedded offline checkpoint for machines with no GPU.",
    )
    gpu: str = Field(
        "A10G",
        description="Modal GPU, optionally with a count: L4, A10G, L40S, A100-40GB, A100-80GB, H100, H200, "
        "B200, e.g. `H100:2`. The count is the tensor-parallel size. The default is the original's.",
        json_schema_extra=MODAL_ONLY,
    )
    boot: Literal["eager", "fast", "compiled"] = Field(
        "fast",
        description="`fast`: full CUDA graphs for the decode batch sizes max_inputs needs, no torch.compile "
        "(eager's start-up, near-compiled decode). `compiled`: torch.compile + CUDA graphs for decode and five "
        "prefill sizes (quickest time to first token, slower start-up). `eager`: no graphs at all (debugging; "
        "decodes many times slower). The original's FAST_BOOT=1 means `fast`.",
    )
    model_revision: str | None = Field(
        None,
        description="Hugging Face revision (commit hash) of the model; unset: the catalog's pinned revision.",
    )
    max_model_len: int | Literal["auto"] = Field(
        32768,
        description="Longest prompt + reply in tokens. `auto`: the planner picks the largest standard context "
        "that keeps room for several full-length requests on the chosen GPU. The tiny local checkpoint "
        "uses its own 16384 unless this is set.",
    )
    max_inputs: int = Field(
        50, description="Concurrent requests one container takes (@modal.concurrent and vLLM --max-num-seqs)."
    )
    target_inputs: int | None = Field(
        None,
        description="Concurrent requests per container that Modal's autoscaler aims for; below max_inputs, "
        "Modal starts another container before the first is full (containers still take up to max_inputs). "
        "Unset: max_inputs.",
        json_schema_extra=MODAL_ONLY,
    )
    scaledown_window: int = Field(
        5 * 60,
        description="Seconds an idle container stays up (and billed) before Modal stops it (2-3600).",
        json_schema_extra=MODAL_ONLY,
    )
    min_containers: int = Field(
        0,
        description="Containers kept running even with no traffic, billed around the clock (`plan` shows "
        "the cost per day). 0: scale to zero when idle.",
        json_schema_extra=MODAL_ONLY,
    )
    max_containers: int = Field(
        2,
        description="Most containers Modal runs at once: the ceiling on the bill per hour (`plan` shows it). "
        "2 takes a burst of twice max_inputs requests, or covers a cold start while one container is busy, "
        "and caps a traffic spike at twice the GPU price; raise it for real traffic.",
        json_schema_extra=MODAL_ONLY,
    )
    buffer_containers: int = Field(
        0,
        description="Idle containers Modal keeps ready on top of the busy ones while there is traffic, so a "
        "burst does not wait for a cold start (billed while up; never beyond max_containers).",
        json_schema_extra=MODAL_ONLY,
    )
    gpu_memory_utilization: float = Field(
        0.90, description="Fraction of GPU memory vLLM may use for weights, activations and KV cache."
    )
    prefix_caching: bool = Field(True, description="Reuse the KV cache of shared prompt prefixes.")
    dtype: str = Field("bfloat16", description="Activation dtype. GPT-OSS runs in bfloat16 only.")
    region: str | None = Field(
        None,
        description="Modal region to run in (e.g. `us-east`); unset: any.",
        json_schema_extra=MODAL_ONLY,
    )
    app_name: str = Field(DEFAULT_APP_NAME, description="Modal app name.", json_schema_extra=MODAL_ONLY)
    vllm_version: str = Field(
        "0.26.0",
        description="vLLM release installed in the Modal image.",
        json_schema_extra=MODAL_ONLY,
    )
    port: int = Field(8000, description="Port vLLM listens on inside the container or on this machine.")
    startup_timeout: int | None = Field(
        None,
        description="Seconds to wait for the server to come up (on Modal, or `serve --local`). Unset: derived "
        "from model and boot mode (300 for the local CPU engine).",
    )
    timeout: int = Field(
        60 * 60,
        description="Longest a single request may run on Modal, in seconds.",
        json_schema_extra=MODAL_ONLY,
    )
    proxy_auth: bool = Field(
        True,
        description="Require Modal proxy auth (Modal-Key / Modal-Secret headers) on the endpoint.",
        json_schema_extra=MODAL_ONLY,
    )
    api_key_secret: str | None = Field(
        None,
        description="Name of a Modal Secret holding VLLM_API_KEY; clients then send `Authorization: Bearer`.",
        json_schema_extra=MODAL_ONLY,
    )
    hf_token_secret: str | None = Field(
        None,
        description="Name of a Modal Secret holding HF_TOKEN, for the weights download and the server: "
        "Hugging Face throttles anonymous downloads (120b is 61 GiB).",
        json_schema_extra=MODAL_ONLY,
    )
    api_key: SecretStr | None = Field(
        None,
        description="Bearer key for the local server (never written to logs or shown by `config`).",
        json_schema_extra=LOCAL_ONLY,
    )
    public: bool = Field(
        False,
        description="Serve with no auth at all. Must be asked for explicitly; prints a warning.",
        json_schema_extra=MODAL_ONLY,
    )
    snapshot: bool = Field(
        False,
        description="Modal memory + GPU snapshot of a started, sleeping engine (vLLM sleep mode): later cold "
        "starts restore it instead of loading and compiling again. Uses Modal's experimental GPU snapshots.",
        json_schema_extra=MODAL_ONLY,
    )
    responses_store: bool = Field(
        False,
        description="Keep Responses API results in the engine's memory (vLLM's "
        "VLLM_ENABLE_RESPONSES_API_STORE), so `previous_response_id`, `GET /v1/responses/{id}` and the Agents "
        "SDK's response chaining work. Nothing is ever evicted: memory grows with every stored response until "
        "the container stops, and each container has its own store (docs/clients.md).",
    )
    speculative: Literal["off", "eagle3"] = Field(
        "off",
        description="Speculative decoding. `eagle3`: the model's EAGLE3 drafter (pinned in the catalog, "
        "downloaded with the weights) proposes speculative_tokens tokens that the model checks in one step. "
        "`plan` shows a step's measured cost and the modelled speed-up (on an H200 in `fast`: slower at one "
        "stream; at 50, faster with 5 draft tokens, slower with 7), `bench` the acceptance measured. "
        "`off`: plain decoding.",
    )
    speculative_tokens: int = Field(
        7, description="Draft tokens per step with speculative = eagle3 (1-10; the published drafters run 7)."
    )
    # NoDecode: from the environment this is shell words (or a JSON list), parsed by the validator below.
    extra_vllm_args: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra flags appended to `vllm serve`, for what this tool lacks: shell words "
        "(`--seed 7`) or a JSON list.",
    )

    # --- sources --------------------------------------------------------------------------------------

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # `DeployConfig()` alone means "explicit values only"; load_config() does the layering so that it
        # can record where each value came from.
        return (init_settings,)

    # --- validation -----------------------------------------------------------------------------------

    @model_validator(mode="before")
    @classmethod
    def _fast_boot(cls, data: Any) -> Any:
        return fast_boot_as_boot(data) if isinstance(data, dict) else data

    @field_validator("max_model_len", mode="before")
    @classmethod
    def _tokens_or_auto(cls, v: Any) -> Any:
        # One message for anything else (a union's own errors would be one per member).
        if isinstance(v, str) and v.strip().lower() == "auto":
            return "auto"
        if isinstance(v, str) and re.fullmatch(r"\s*[+-]?\d+\s*", v):
            return int(v)
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        raise ValueError(f'{v!r} is not a number of tokens, nor "auto"')

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        resolved = catalog.resolve_model_id(v)
        if resolved is None:
            choices = ", ".join([*catalog.MODELS, *catalog.MODEL_ALIASES, catalog.TINY])
            raise ValueError(f"unknown model {v!r}; choose one of {choices}")
        return resolved

    @field_validator("gpu")
    @classmethod
    def _gpu(cls, v: str) -> str:
        name, _, count_text = v.strip().partition(":")
        resolved = catalog.resolve_gpu_name(name)
        if resolved is None:
            hint = " (T4 has no bfloat16, which GPT-OSS needs)" if name.strip().upper() == "T4" else ""
            raise ValueError(f"unknown GPU {name!r}{hint}; choose one of {', '.join(catalog.GPUS)}")
        count = 1
        if count_text:
            digits = count_text.isascii() and count_text.isdigit()  # not '²', which int() refuses
            if not digits or not 1 <= int(count_text) <= catalog.MAX_GPUS_PER_CONTAINER:
                raise ValueError(
                    f"GPU count {count_text!r} must be a whole number from 1 to "
                    f"{catalog.MAX_GPUS_PER_CONTAINER}, as in H100:2"
                )
            count = int(count_text)
        return resolved if count == 1 else f"{resolved}:{count}"

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        v = v.strip().lower()
        if v in ("bfloat16", "bf16", "auto"):
            return "bfloat16"
        if v in ("float16", "fp16", "half"):
            raise ValueError(
                "float16 is not supported: GPT-OSS ships MXFP4 experts whose vLLM kernels take bfloat16 "
                "activations, and the model was trained in bfloat16; remove dtype or set it to bfloat16"
            )
        raise ValueError(f"dtype {v!r} is not supported; GPT-OSS runs in bfloat16")

    @field_validator(*RANGES)
    @classmethod
    def _in_range(cls, v: float | str | None, info: ValidationInfo) -> float | str | None:
        low, high, allowed = RANGES[info.field_name]
        if isinstance(v, int | float) and not low <= v <= high:
            raise ValueError(f"{v} is out of range: {allowed}")
        return v

    @field_validator(*SHAPES)
    @classmethod
    def _shape(cls, v: str, info: ValidationInfo) -> str:
        pattern, what = SHAPES[info.field_name]
        if not re.fullmatch(pattern, v):
            raise ValueError(f"{v!r} is not {what}")
        return v

    @field_validator("extra_vllm_args", mode="before")
    @classmethod
    def _extra_args(cls, v: Any) -> Any:
        if isinstance(v, str):  # from the environment or a flag: shell words, or a JSON list
            if v.lstrip().startswith("["):
                try:
                    return json.loads(v)
                except json.JSONDecodeError:
                    pass
            import shlex

            try:
                return shlex.split(v)
            except ValueError as e:  # "No closing quotation"
                raise ValueError(f"cannot split it into shell words ({e}); check the quotes") from None
        return v

    @field_validator("extra_vllm_args")
    @classmethod
    def _no_key_in_argv(cls, v: list[str]) -> list[str]:
        # A key on the command line would show in `ps`, logs and `config --command`; it travels in the env.
        if any(a == "--api-key" or a.startswith("--api-key=") for a in v):
            raise ValueError(
                "--api-key does not belong on the command line, where ps, logs and `config` show it; use "
                "api_key (--api-key / GPT_OSS_API_KEY) locally or api_key_secret on Modal"
            )
        return v

    @field_validator("api_key")
    @classmethod
    def _api_key(cls, v: SecretStr | None) -> SecretStr | None:
        # Never quote the value in these messages: it is a secret.
        if v is not None:
            key = v.get_secret_value()
            if not key:
                raise ValueError("the key is empty; set a non-empty key or unset it")
            if any(c.isspace() or not c.isprintable() for c in key) or not key.isascii():
                raise ValueError(
                    "the key has spaces, control or non-ASCII characters, which an HTTP header cannot carry; "
                    "use letters, digits and punctuation only (e.g. `openssl rand -hex 32`)"
                )
        return v

    @model_validator(mode="after")
    def _coherent(self) -> DeployConfig:
        if self.model != catalog.TINY:
            heads = catalog.MODELS[self.model].num_attention_heads
            if heads % self.gpu_count:
                raise ValueError(
                    f"gpu: {self.gpu_count} GPUs means tensor-parallel size {self.gpu_count}, which must divide "
                    f"the model's {heads} attention heads; use 1, 2, 4 or 8 GPUs"
                )
        if self.speculative != "off" and (self.model_info is None or self.model_info.drafter is None):
            raise ValueError(
                f"speculative: {self.model} has no {self.speculative} drafter (the tiny checkpoint runs on the "
                "CPU engine, which has none); set speculative = off"
            )
        if self.snapshot and self.gpu_count > 1:
            # Untested, and: CUDA checkpointing cannot save the IPC memory that tensor-parallel custom
            # all-reduce and NCCL P2P share between the GPUs.
            raise ValueError(
                f"snapshot: GPU snapshots of {self.gpu_count} GPUs are not supported yet (CUDA checkpointing "
                "cannot save the memory tensor parallelism shares between GPUs); use one GPU (120b fits one "
                "H100) or snapshot = false"
            )
        self._scaling_is_coherent()
        if self.public and (self.api_key_secret or self.api_key):
            raise ValueError("public: a public endpoint takes no API key; drop --public or the key")
        if not self.proxy_auth and not self.public and not self.api_key_secret:
            raise ValueError(
                "proxy_auth: turning Modal proxy auth off without api_key_secret leaves the endpoint open; "
                "set api_key_secret, or ask for an open endpoint explicitly with --public"
            )
        return self

    def _scaling_is_coherent(self) -> None:
        # Modal would refuse some of these only at deploy time, after the image build; the others it takes
        # silently and they never do what was meant.
        lo, hi = self.min_containers, self.max_containers
        if lo > hi:
            raise ValueError(
                f"min_containers: {lo} is more than max_containers {hi}; lower min_containers or raise "
                "max_containers"
            )
        if self.buffer_containers > hi:
            raise ValueError(
                f"buffer_containers: {self.buffer_containers} is more than max_containers {hi}, so Modal could "
                "never keep them; lower buffer_containers or raise max_containers"
            )
        if self.target_inputs is not None and self.target_inputs > self.max_inputs:
            raise ValueError(
                f"target_inputs: {self.target_inputs} is more than max_inputs {self.max_inputs} (a container "
                "never takes more); use at most max_inputs, or leave target_inputs unset"
            )

    # --- derived values -------------------------------------------------------------------------------

    @property
    def gpu_type(self) -> catalog.GPU:
        return catalog.GPUS[self.gpu.partition(":")[0]]

    @property
    def gpu_count(self) -> int:
        _, _, count = self.gpu.partition(":")
        return int(count) if count else 1

    @property
    def tensor_parallel(self) -> int:
        # vLLM shards the model over every GPU in the container.
        return self.gpu_count

    @property
    def model_info(self) -> catalog.Model | None:
        return catalog.MODELS.get(self.model)

    @property
    def revision(self) -> str:
        """The model's Hugging Face revision: model_revision, else the catalog's pin ("main" for tiny)."""
        pinned = self.model_info.revision if self.model_info is not None else "main"
        return self.model_revision or pinned

    @property
    def drafter(self) -> catalog.Drafter | None:
        """The drafter the engine loads (and the image downloads beside the weights), or None when off."""
        if self.speculative == "off" or self.model_info is None:
            return None
        return self.model_info.drafter

    @property
    def context_asked_for(self) -> int | None:
        """max_model_len when it was set to a number (file, environment, flag or code), else None: `auto`,
        or the default left alone. The tiny checkpoint's CPU engine then takes the checkpoint's own context;
        the default 32768 is the original deployment's, for the real models."""
        asked = "max_model_len" in self.model_fields_set and self.max_model_len != "auto"
        return self.max_model_len if asked and isinstance(self.max_model_len, int) else None

    @property
    def requires_proxy_auth(self) -> bool:
        return self.proxy_auth and not self.public

    def effective_startup_timeout(self) -> int:
        """Generous enough for the slowest start: a cold compiled 120b, its weights downloaded first."""
        if self.startup_timeout is not None:
            return self.startup_timeout
        big = self.model == "openai/gpt-oss-120b"
        base = 40 * 60 if big else 20 * 60
        base = base if self.boot == "compiled" else base // 2
        model = self.model_info
        if model is None:
            return base
        return base + math.ceil(model.weights_gib * 1024 / DOWNLOAD_ALLOWANCE_MIB_S)

    def to_json(self) -> str:
        """The resolved config for the container; secrets stay out (they travel as Modal Secrets)."""
        return self.model_dump_json(exclude={"api_key"})


def _toml_layer(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(
            f"{path}: not valid TOML ({e}); fix the file or pass --config another one"
        ) from None
    except OSError as e:
        raise ConfigError(
            f"{path}: cannot read it ({e.strerror}); check the path given with --config"
        ) from None
    # Accept both a flat file and one with a [gpt-oss-modal] table; kebab-case keys too.
    data = data.get("gpt-oss-modal", data)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: `gpt-oss-modal` must be a table ([gpt-oss-modal]), not a value")
    return {k.replace("-", "_"): v for k, v in data.items()}


def _env_layer() -> tuple[dict[str, Any], dict[str, str]]:
    """The environment's settings, and for each the variable it came from ("env GPU_CONFIG").

    The original's names are read first, so that a `GPT_OSS_*` variable for the same setting wins.
    """
    values: dict[str, Any] = {}
    names: dict[str, str] = {}
    for var, original in ORIGINAL_ENV.items():
        if var in os.environ:
            values[original.setting] = original.read(os.environ[var])
            names[original.setting] = var
    ours = EnvSettingsSource(DeployConfig, env_prefix=ENV_PREFIX, case_sensitive=False)()
    ours = {k: v for k, v in ours.items() if k in DeployConfig.model_fields}
    if ENV_PREFIX + "FAST_BOOT" in os.environ:
        ours[FAST_BOOT] = os.environ[ENV_PREFIX + "FAST_BOOT"]
    for key, value in ours.items():
        values[key] = value
        names[key] = ENV_PREFIX + key.upper()
    return values, {key: f"env {var}" for key, var in names.items()}


def applies(name: str, where: Literal["modal", "local"]) -> bool:
    """Whether setting `name` has an effect on Modal / on this machine (its `where` tag; untagged: both)."""
    extra = DeployConfig.model_fields[name].json_schema_extra
    return not isinstance(extra, dict) or extra.get("where", where) == where


def cache_dir() -> Path:
    """This machine's cache: the tiny checkpoint, its tokenizer and vocabulary, the local engine's logs.

    $GPT_OSS_CACHE_DIR, else the platform's user cache directory (~/.cache/gpt-oss-modal on Linux).
    """
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("gpt-oss-modal"))


@dataclass
class LoadedConfig:
    config: DeployConfig
    # field -> "default" | "file X" | "env GPT_OSS_GPU" (or an original name: "env GPU_CONFIG") | "cli"
    sources: dict[str, str] = field(default_factory=dict)


def config_file_path(explicit: Path | None = None) -> Path | None:
    if explicit is not None:
        return explicit
    if os.environ.get(CONFIG_PATH_ENV):
        return Path(os.environ[CONFIG_PATH_ENV])
    default = Path.cwd() / CONFIG_FILE
    return default if default.exists() else None


def load_config(cli: dict[str, Any] | None = None, *, config_file: Path | None = None) -> LoadedConfig:
    """Merge defaults < TOML < environment < CLI and validate; raise ConfigError with one line on bad input."""
    shipped = os.environ.get(CONFIG_JSON_ENV)
    if shipped:
        try:
            cfg = DeployConfig.model_validate_json(shipped)
        except ValidationError as e:
            raise ConfigError(f"{CONFIG_JSON_ENV}: {describe(e)}") from None
        return LoadedConfig(cfg, {name: CONFIG_JSON_ENV for name in DeployConfig.model_fields})

    path = config_file_path(config_file)
    layers: list[tuple[dict[str, Any], dict[str, str]]] = []  # (values, where each came from)
    if path is not None:
        toml = _toml_layer(path)
        layers.append((toml, dict.fromkeys(toml, f"file {path}")))
    layers.append(_env_layer())
    flags = {k: v for k, v in (cli or {}).items() if v is not None}
    layers.append((flags, dict.fromkeys(flags, "cli")))

    merged: dict[str, Any] = {}
    sources = {name: "default" for name in DeployConfig.model_fields}
    for values, origins in layers:
        if values.get(FAST_BOOT) is not None:
            origins = {"boot": origins[FAST_BOOT], **origins}  # unless a boot of the same layer wins
        values = fast_boot_as_boot(values)  # so a later FAST_BOOT overrides an earlier boot
        unknown = sorted(set(values) - set(DeployConfig.model_fields))
        if unknown:
            raise ConfigError(
                f"{origins[unknown[0]]}: unknown setting {unknown[0]!r}; see `gpt-oss-modal config --help` "
                "for the list"
            )
        merged.update(values)
        sources.update({name: origins[name] for name in values})
    try:
        cfg = DeployConfig.model_validate(merged)
    except ValidationError as e:
        # A value from the environment may not be one the user knows is set (MODEL_NAME, say): name it.
        origin = sources.get(str(e.errors()[0]["loc"][0]) if e.errors()[0]["loc"] else "", "")
        named = f" (set by {origin.removeprefix('env ')})" if origin.startswith("env ") else ""
        raise ConfigError(describe(e) + named) from None
    return LoadedConfig(cfg, sources)


def describe(error: ValidationError) -> str:
    """One line for the first problem: `field: what is wrong and how to fix it`."""
    first = error.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "config"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] in ("int_parsing", "float_parsing", "bool_parsing", "int_from_float"):
        msg = f"{first['input']!r} is not valid: {msg.lower()}"
    if loc != "config" and msg.startswith(loc + ":"):
        return msg
    return f"{loc}: {msg}" if loc != "config" else msg
