"""Property tests over the config space: whatever values arrive (from code, TOML, the environment or CLI
flags), the result is a valid config or one line saying what is wrong -- never a traceback -- and no secret
value ever shows up in any output."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gpt_oss_modal.cli import app
from gpt_oss_modal.core import catalog
from gpt_oss_modal.core.config import (
    CONFIG_JSON_ENV,
    ORIGINAL_ENV,
    ConfigError,
    DeployConfig,
    LoadedConfig,
    load_config,
)
from gpt_oss_modal.core.engine import build_command
from gpt_oss_modal.core.planner import plan

SETTINGS = settings(
    max_examples=int(os.environ.get("GPT_OSS_HYPOTHESIS_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Secrets are distinctive, so finding one in an output means it leaked (and not that "H100" was the key).
secrets = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=12, max_size=40).map(
    lambda s: f"sk-{s}"
)

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
ints = st.one_of(
    st.integers(min_value=-10, max_value=10),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2, 255, 256, 4096, 131072, 131073, 65535, 65536, 3600, 3601, 86400, 86401]),
    st.floats(allow_nan=True, allow_infinity=True),  # floats for ints: 1.0 may pass, 1.5 may not
    st.sampled_from(["4k", "1e3", "12", " 12 ", "-1", "0x10", "", "1_000"]),
    junk,
)
GPU_NAMES = [*catalog.GPUS, "T4", "h100", "a100", "RTX9090", "", " ", "H100 ", "cpu"]
gpus = st.one_of(
    st.builds(
        lambda g, c: f"{g}:{c}" if c is not None else g,
        st.sampled_from(GPU_NAMES),
        st.one_of(st.none(), st.integers(-2, 20), st.sampled_from(["", "x", "2.0", "²", "01", "+2", " 2"])),
    ),
    junk,
)
MODELS = [*catalog.MODELS, *catalog.MODEL_ALIASES, catalog.TINY, "llama", "gpt-oss-20b", "", "TINY", " 20b "]
FIELDS = {
    "model": st.one_of(st.sampled_from(MODELS), junk),
    "gpu": gpus,
    "boot": st.one_of(st.sampled_from(["fast", "compiled", "FAST", "eager", ""]), junk),
    "fast_boot": st.one_of(st.booleans(), st.sampled_from(["1", "0", "yes", "no", "maybe"]), junk),
    "max_model_len": st.one_of(ints, st.sampled_from(["auto", "AUTO", " auto ", "autos"])),
    "max_inputs": ints,
    "target_inputs": st.one_of(ints, st.integers(1, 64)),
    "scaledown_window": ints,
    "min_containers": st.one_of(ints, st.integers(0, 4)),
    "max_containers": st.one_of(ints, st.integers(0, 4)),
    "buffer_containers": st.one_of(ints, st.integers(0, 4)),
    "gpu_memory_utilization": st.one_of(
        st.floats(min_value=-1, max_value=2), st.floats(allow_nan=True, allow_infinity=True), ints
    ),
    "prefix_caching": st.one_of(st.booleans(), junk),
    "dtype": st.one_of(
        st.sampled_from(["bfloat16", "bf16", "auto", "float16", "fp16", "half", "float32", "BF16", ""]), junk
    ),
    "region": st.one_of(st.sampled_from(["us-east", "eu-west"]), junk),
    "app_name": st.one_of(st.sampled_from(["my-app", "a", "bad name!", "-x", "x" * 70]), junk),
    "vllm_version": st.one_of(
        st.sampled_from(["0.26.0", "0.10.1.post1", "0.11.0rc1", "latest", "1.2"]), junk
    ),
    "port": ints,
    "startup_timeout": ints,
    "timeout": ints,
    "proxy_auth": st.one_of(st.booleans(), junk),
    "public": st.one_of(st.booleans(), junk),
    "api_key_secret": st.one_of(st.sampled_from(["gpt-oss-api-key", "my_secret"]), junk),
    "api_key": st.one_of(secrets, st.sampled_from(["", " ", "a b", "key\n"]), junk),
    "snapshot": st.one_of(st.booleans(), junk),
    "extra_vllm_args": st.one_of(
        st.lists(st.sampled_from(["--enable-lora", "--seed", "7", "--api-key", "x", "--kv-cache-dtype=fp8"])),
        st.lists(junk, max_size=3),
        st.sampled_from(["--seed 7", '"unclosed', "--api-key sk-in-argv", ""]),
        junk,
    ),
    "colour": st.just("blue"),  # unknown setting
}
FIELD_NAMES = list(FIELDS)


@st.composite
def config_dicts(draw: st.DrawFn) -> dict:
    names = draw(st.lists(st.sampled_from(FIELD_NAMES), unique=True, max_size=8))
    return {name: draw(FIELDS[name]) for name in names}


def secret_values(values: dict) -> list[str]:
    out = []
    for name in ("api_key",):
        v = values.get(name)
        if isinstance(v, str) and v.startswith("sk-"):
            out.append(v)
    return out


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("GPT_OSS_") or name in ORIGINAL_ENV or name == "VLLM_API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no gpt-oss-modal.toml from the repo


def check_loaded(values: dict, loaded: LoadedConfig) -> None:
    cfg = loaded.config
    assert isinstance(cfg, DeployConfig)
    # A valid config is a coherent one: every invariant the rest of the code relies on holds.
    assert cfg.model in catalog.MODELS or cfg.model == catalog.TINY
    assert cfg.gpu.partition(":")[0] in catalog.GPUS
    if cfg.model_info is not None:
        assert cfg.model_info.num_attention_heads % cfg.gpu_count == 0
    assert cfg.dtype == "bfloat16"
    assert 1 <= cfg.max_inputs <= 1024 and 1 <= cfg.port <= 65535
    assert cfg.max_model_len == "auto" or 256 <= cfg.max_model_len <= 131072
    assert 0 <= cfg.min_containers <= cfg.max_containers and cfg.buffer_containers <= cfg.max_containers
    assert cfg.target_inputs is None or 1 <= cfg.target_inputs <= cfg.max_inputs
    assert math.isfinite(cfg.gpu_memory_utilization)
    assert not (cfg.public and (cfg.api_key or cfg.api_key_secret))
    assert all(isinstance(a, str) for a in cfg.extra_vllm_args)
    # What the container receives round-trips, without the key.
    again = DeployConfig.model_validate_json(cfg.to_json())
    assert again == cfg.model_copy(update={"api_key": None})
    for secret in secret_values(values):
        assert secret not in repr(cfg) and secret not in str(cfg) and secret not in cfg.to_json()
        assert secret not in cfg.model_dump_json()


def check_downstream(cfg: DeployConfig, secrets_: list[str]) -> None:
    """The planner and the command builder accept every valid config or say one line why not."""
    if cfg.model_info is None:
        return
    try:
        p = plan(cfg)
    except ConfigError as e:
        assert "\n" not in str(e)
        return
    if not p.fits:
        assert p.reason and "\n" not in p.reason
        return
    for target in ("modal", "local-gpu"):
        cmd = build_command(cfg, target=target)  # type: ignore[arg-type]
        shown = cmd.shell() + repr(cmd) + json.dumps(cmd.argv) + json.dumps(cmd.env)
        for secret in secrets_:
            assert secret not in shown


@SETTINGS
@given(config_dicts())
def test_load_config_gives_a_valid_config_or_one_line(values: dict) -> None:
    try:
        loaded = load_config(values)
    except ConfigError as e:
        message = str(e)
        assert message and "\n" not in message and "Traceback" not in message
        for secret in secret_values(values):
            assert secret not in message
        return
    check_loaded(values, loaded)
    check_downstream(loaded.config, secret_values(values))


def _env_text(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return json.dumps(v, default=str)
    return str(v)


@SETTINGS
@given(config_dicts(), st.booleans())
def test_environment_and_toml_layers_never_crash(values: dict, via_toml: bool) -> None:
    # The same values as strings from the environment, or as TOML values from a file.
    values = {k: v for k, v in values.items() if v is not None}
    path = Path("gpt-oss-modal.toml")
    env = {}
    if via_toml:
        lines = []
        for k, v in values.items():
            if isinstance(v, float) and not math.isfinite(v):
                v = str(v)
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 2**63:
                v = str(v)
            if isinstance(v, (list, dict)):
                v = json.dumps(v, default=str)  # JSON text in a TOML string
            lines.append(f"{k} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}")
        path.write_text("\n".join(lines) + "\n")
    else:
        env = {f"GPT_OSS_{k.upper()}": _env_text(v) for k, v in values.items()}
        env = {k: v for k, v in env.items() if "\0" not in v}
    old = dict(os.environ)
    os.environ.update(env)
    try:
        loaded = load_config()
    except ConfigError as e:
        message = str(e)
        assert message and "\n" not in message
        for secret in secret_values(values):
            assert secret not in message
        return
    finally:
        os.environ.clear()
        os.environ.update(old)
        path.unlink(missing_ok=True)
    check_downstream(loaded.config, secret_values(values))


@SETTINGS
@given(st.dictionaries(st.sampled_from(list(ORIGINAL_ENV)), st.one_of(junk, st.booleans(), ints), max_size=4))
def test_the_originals_variables_never_crash(values: dict) -> None:
    env = {var: _env_text(v) for var, v in values.items() if v is not None and "\0" not in _env_text(v)}
    old = dict(os.environ)
    os.environ.update(env)
    try:
        loaded = load_config()
    except ConfigError as e:
        assert str(e) and "\n" not in str(e)
        return
    finally:
        os.environ.clear()
        os.environ.update(old)
    check_downstream(loaded.config, [])
    for var in env:
        setting = ORIGINAL_ENV[var].setting
        assert loaded.sources["boot" if setting == "fast_boot" else setting] == f"env {var}"


# --- through the CLI ------------------------------------------------------------------------------------

PLAN_FLAGS = {
    "model": "--model",
    "gpu": "--gpu",
    "boot": "--boot",
    "max_model_len": "--max-model-len",
    "max_inputs": "--max-inputs",
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "min_containers": "--min-containers",
    "max_containers": "--max-containers",
    "buffer_containers": "--buffer-containers",
    "target_inputs": "--target-inputs",
}
CONFIG_FLAGS = PLAN_FLAGS | {
    "scaledown_window": "--scaledown-window",
    "dtype": "--dtype",
    "region": "--region",
    "app_name": "--app-name",
    "vllm_version": "--vllm-version",
    "api_key_secret": "--api-key-secret",
}


def flag_text(v: object) -> str:
    return _env_text(v)


@st.composite
def cli_calls(draw: st.DrawFn) -> tuple[list[str], dict[str, str], list[str]]:
    command = draw(st.sampled_from(["plan", "config"]))
    flags = PLAN_FLAGS if command == "plan" else CONFIG_FLAGS
    names = draw(st.lists(st.sampled_from(list(flags)), unique=True, max_size=5))
    args = [command]
    for name in names:
        value = flag_text(draw(FIELDS[name]))
        assume("\0" not in value)
        args += [flags[name], value]
    if command == "config":
        args += draw(
            st.lists(st.sampled_from(["--json", "--command", "--public", "--fast-boot"]), unique=True)
        )
    elif draw(st.booleans()):
        args.append("--json")
    # Secrets arrive through the environment (the key has no flag on these commands) ...
    env = {}
    secrets_: list[str] = []
    if draw(st.booleans()):
        key = draw(secrets)
        env["GPT_OSS_API_KEY"] = key
        secrets_.append(key)
    # ... and sometimes next to another bad value from the environment.
    if draw(st.booleans()):
        name = draw(st.sampled_from(["max_inputs", "port", "timeout", "dtype", "gpu", "extra_vllm_args"]))
        value = flag_text(draw(FIELDS[name]))
        assume("\0" not in value)
        env[f"GPT_OSS_{name.upper()}"] = value
    return args, env, secrets_


@SETTINGS
@given(cli_calls())
def test_cli_plan_and_config_exit_0_or_2_with_one_line(
    call: tuple[list[str], dict[str, str], list[str]],
) -> None:
    args, env, secrets_ = call
    result = CliRunner().invoke(app, args, env=env)
    # Never a traceback: any exception other than the normal exit is a bug.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 2), (args, env, result.output)
    stderr = result.stderr
    if result.exit_code == 2:
        lines = [line for line in stderr.splitlines() if line.strip()]
        if "--json" in args and args[0] == "plan" and not lines:
            assert json.loads(result.stdout)["fits"] is False  # plan --json: the reason is in the JSON
        else:
            assert len(lines) == 1 and lines[0].startswith("error: "), (args, env, stderr)
    else:
        assert stderr.strip() == ""
    for secret in secrets_:
        assert secret not in result.output and secret not in stderr


# --- examples the properties found, or that must hold whatever hypothesis draws -------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"max_inputs": 1.5}, "max_inputs: 1.5 is not valid"),
        ({"max_model_len": 10**30}, "max_model_len: "),
        ({"gpu_memory_utilization": float("nan")}, "gpu_memory_utilization: nan is out of range"),
        ({"model": "20b", "max_model_len": 131072 * 2}, "out of range"),
        ({"gpu": "H100:3"}, "must divide"),
        ({"gpu": "H100:²"}, "GPU count"),
        ({"gpu": ":2"}, "unknown GPU"),
        ({"dtype": "float16"}, "float16 is not supported"),
        ({"proxy_auth": False}, "proxy_auth: "),
        ({"api_key": ""}, "api_key: "),
        ({"api_key": "two words"}, "api_key: "),
        ({"extra_vllm_args": ["--api-key", "sk-in-argv-123456"]}, "extra_vllm_args: "),
        ({"extra_vllm_args": "--api-key=sk-in-argv-123456"}, "extra_vllm_args: "),
        ({"extra_vllm_args": '"unclosed'}, "extra_vllm_args: "),
        ({"extra_vllm_args": [1, 2]}, "extra_vllm_args"),
    ],
)
def test_found_gaps_are_one_line_errors(values: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(values)
    assert expected in str(e.value) and "\n" not in str(e.value)
    assert "sk-in-argv" not in str(e.value)


def test_the_key_value_is_never_in_its_own_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ("sk-zq9 space-123456", "sk-zq9\nnewline-123", "sk-zq9\there-12345", "sk-zq9é-12345"):
        with pytest.raises(ConfigError) as e:
            load_config({"api_key": bad})
        assert "zq9" not in str(e.value) and "\n" not in str(e.value)


def test_extra_args_from_the_environment_are_shell_words_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPT_OSS_EXTRA_VLLM_ARGS", "--seed 7 --kv-cache-dtype 'fp8'")
    assert load_config().config.extra_vllm_args == ["--seed", "7", "--kv-cache-dtype", "fp8"]
    monkeypatch.setenv("GPT_OSS_EXTRA_VLLM_ARGS", '["--seed", "7"]')
    assert load_config().config.extra_vllm_args == ["--seed", "7"]


def test_proxy_auth_off_needs_a_key_or_public() -> None:
    assert load_config({"proxy_auth": False, "api_key_secret": "gpt-oss-api-key"}).config.api_key_secret
    assert not load_config({"proxy_auth": False, "public": True}).config.requires_proxy_auth


def test_toml_with_a_non_table_section_is_one_line() -> None:
    Path("gpt-oss-modal.toml").write_text("gpt-oss-modal = 5\n")
    with pytest.raises(ConfigError, match="gpt-oss-modal"):
        load_config()


def test_shipped_json_that_is_not_json_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    for text in ("{not json", "[]", '{"gpu": "T4"}', "null"):
        monkeypatch.setenv(CONFIG_JSON_ENV, text)
        with pytest.raises(ConfigError) as e:
            load_config()
        assert "\n" not in str(e.value)
