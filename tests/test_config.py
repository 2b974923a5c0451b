"""Config sources and their precedence: defaults < gpt-oss-modal.toml < GPT_OSS_* env < CLI flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpt_oss_modal.core.config import CONFIG_JSON_ENV, ORIGINAL_ENV, ConfigError, DeployConfig, load_config


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    import os

    for name in list(os.environ):
        if name.startswith("GPT_OSS_") or name in ORIGINAL_ENV:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray ./gpt-oss-modal.toml
    return tmp_path


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_are_the_originals() -> None:
    loaded = load_config()
    cfg = loaded.config
    assert cfg.model == "openai/gpt-oss-20b"
    assert cfg.app_name == "gpt-oss-vllm-inference"
    assert cfg.dtype == "bfloat16"
    # The original gpt_oss_inference.py's settings table.
    assert (cfg.gpu, cfg.scaledown_window, cfg.max_inputs, cfg.max_model_len) == ("A10G", 300, 50, 32768)
    # Scale to zero, with a finite ceiling; Modal's autoscaler aims at max_inputs.
    assert (cfg.min_containers, cfg.max_containers, cfg.buffer_containers, cfg.target_inputs) == (
        0,
        2,
        0,
        None,
    )
    assert cfg.requires_proxy_auth  # private by default
    assert set(loaded.sources.values()) == {"default"}


def test_precedence_file_then_env_then_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_toml(
        tmp_path / "gpt-oss-modal.toml",
        'model = "120b"\ngpu = "H200"\nmax_inputs = 8\nscaledown_window = 60\n',
    )
    monkeypatch.setenv("GPT_OSS_GPU", "H100:2")
    monkeypatch.setenv("GPT_OSS_MAX_INPUTS", "16")
    loaded = load_config({"max_inputs": 4})
    cfg, src = loaded.config, loaded.sources
    assert (cfg.model, src["model"]) == ("openai/gpt-oss-120b", f"file {tmp_path / 'gpt-oss-modal.toml'}")
    assert (cfg.gpu, src["gpu"]) == ("H100:2", "env GPT_OSS_GPU")
    assert (cfg.max_inputs, src["max_inputs"]) == (4, "cli")
    assert (cfg.scaledown_window, src["scaledown_window"]) == (60, f"file {tmp_path / 'gpt-oss-modal.toml'}")
    assert src["boot"] == "default"
    assert cfg.tensor_parallel == 2


def test_none_cli_values_do_not_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPT_OSS_MODEL", "120b")
    assert load_config({"model": None}).config.model == "openai/gpt-oss-120b"


def test_explicit_config_file_and_table_and_kebab_keys(tmp_path: Path) -> None:
    f = write_toml(tmp_path / "other.toml", '[gpt-oss-modal]\nmax-model-len = 8192\nboot = "fast"\n')
    cfg = load_config(config_file=f).config
    assert cfg.max_model_len == 8192 and cfg.boot == "fast"


def test_config_path_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = write_toml(tmp_path / "elsewhere.toml", 'gpu = "L4"\n')
    monkeypatch.setenv("GPT_OSS_CONFIG", str(f))
    assert load_config().config.gpu == "L4"


@pytest.mark.parametrize("name", ["FAST_BOOT", "GPT_OSS_FAST_BOOT"])
def test_the_originals_fast_boot(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "1")
    loaded = load_config()
    assert loaded.config.boot == "fast" and loaded.sources["boot"] == f"env {name}"
    monkeypatch.setenv(name, "false")
    assert load_config().config.boot == "compiled"


# Each of the original's variables, a value it would carry, and what that is here.
ORIGINAL_VALUES = [
    ("GPU_CONFIG", "H100:2", "gpu", "H100:2"),
    ("GPU_CONFIG", "l4", "gpu", "L4"),
    ("MODEL_NAME", "openai/gpt-oss-120b", "model", "openai/gpt-oss-120b"),
    ("FAST_BOOT", "True", "boot", "fast"),
    ("FAST_BOOT", "False", "boot", "compiled"),
    ("MAX_MODEL_LEN", "16384", "max_model_len", 16384),
    ("MAX_MODEL_LEN", "auto", "max_model_len", "auto"),
    ("SCALEDOWN_WINDOW", "120", "scaledown_window", 120),
    ("MAX_INPUTS", "8", "max_inputs", 8),
    ("USE_FLOAT16", "False", "dtype", "bfloat16"),
]


@pytest.mark.parametrize(("var", "text", "setting", "value"), ORIGINAL_VALUES)
def test_the_originals_variables_set_our_settings_and_say_so(
    monkeypatch: pytest.MonkeyPatch, var: str, text: str, setting: str, value: object
) -> None:
    monkeypatch.setenv(var, text)
    loaded = load_config()
    assert getattr(loaded.config, setting) == value
    assert loaded.sources[setting] == f"env {var}"


def test_every_original_variable_is_tested() -> None:
    assert {var for var, *_ in ORIGINAL_VALUES} == set(ORIGINAL_ENV)


@pytest.mark.parametrize(
    ("var", "text", "ours", "value"),
    [
        ("GPU_CONFIG", "H100", "GPT_OSS_GPU", "L4"),
        ("MODEL_NAME", "120b", "GPT_OSS_MODEL", "openai/gpt-oss-20b"),
        ("MAX_MODEL_LEN", "8192", "GPT_OSS_MAX_MODEL_LEN", "16384"),
        ("SCALEDOWN_WINDOW", "60", "GPT_OSS_SCALEDOWN_WINDOW", "90"),
        ("MAX_INPUTS", "8", "GPT_OSS_MAX_INPUTS", "16"),
        ("FAST_BOOT", "1", "GPT_OSS_BOOT", "eager"),
        ("FAST_BOOT", "1", "GPT_OSS_FAST_BOOT", "0"),
    ],
)
def test_a_gpt_oss_variable_wins_over_the_originals_name(
    monkeypatch: pytest.MonkeyPatch, var: str, text: str, ours: str, value: str
) -> None:
    monkeypatch.setenv(var, text)
    monkeypatch.setenv(ours, value)
    loaded = load_config()
    setting = ORIGINAL_ENV[var].setting.replace("fast_boot", "boot")
    assert loaded.sources[setting] == f"env {ours}"
    expected = DeployConfig.model_validate({ours.removeprefix("GPT_OSS_").lower(): value})
    assert getattr(loaded.config, setting) == getattr(expected, setting)


def test_the_originals_name_is_below_the_file_flags_and_above_the_toml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_toml(tmp_path / "gpt-oss-modal.toml", 'gpu = "L4"\nmax_inputs = 4\n')
    monkeypatch.setenv("GPU_CONFIG", "H100")
    monkeypatch.setenv("MAX_INPUTS", "8")
    loaded = load_config({"max_inputs": 12})
    assert (loaded.config.gpu, loaded.sources["gpu"]) == ("H100", "env GPU_CONFIG")
    assert (loaded.config.max_inputs, loaded.sources["max_inputs"]) == (12, "cli")


@pytest.mark.parametrize("text", ["True", "true", "1", "yes"])
def test_use_float16_true_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("USE_FLOAT16", text)
    monkeypatch.setenv("GPT_OSS_DTYPE", "bfloat16")  # nothing makes float16 work, so nothing lets it pass
    with pytest.raises(ConfigError) as e:
        load_config()
    message = str(e.value)
    assert message.startswith(f"USE_FLOAT16={text}: ") and "bfloat16" in message and "MXFP4" in message
    assert "\n" not in message


def test_a_bad_value_from_an_original_name_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    # MODEL_NAME is a common name; a value meant for another tool must be traceable to it.
    monkeypatch.setenv("MODEL_NAME", "gpt-4o")
    with pytest.raises(ConfigError) as e:
        load_config()
    assert str(e.value).startswith("model: unknown model 'gpt-4o'") and str(e.value).endswith(
        "(set by MODEL_NAME)"
    )
    monkeypatch.setenv("USE_FLOAT16", "perhaps")
    with pytest.raises(ConfigError, match="USE_FLOAT16='perhaps' is neither true nor false"):
        load_config()


@pytest.mark.parametrize("source", ["toml", "env", "cli"])
def test_max_model_len_auto_from_every_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: str
) -> None:
    cli = {}
    if source == "toml":
        write_toml(tmp_path / "gpt-oss-modal.toml", 'max_model_len = "auto"\n')
    elif source == "env":
        monkeypatch.setenv("GPT_OSS_MAX_MODEL_LEN", "Auto")
    else:
        cli = {"max_model_len": "auto"}
    loaded = load_config(cli)
    assert loaded.config.max_model_len == "auto" and loaded.config.context_asked_for is None
    assert load_config({"max_model_len": "4096"}).config.max_model_len == 4096


def test_context_asked_for_is_only_a_number_someone_set() -> None:
    assert DeployConfig().context_asked_for is None  # the default 32768 is the GPU deployment's
    assert DeployConfig(max_model_len=32768).context_asked_for == 32768
    assert DeployConfig(max_model_len="auto").context_asked_for is None
    assert load_config({"max_model_len": 2048}).config.context_asked_for == 2048


@pytest.mark.parametrize(("flags", "context"), [({}, 4096), ({"max_model_len": 8192}, 8192)])
def test_serve_local_on_cpu_keeps_the_checkpoints_context_unless_one_is_set(
    flags: dict, context: int
) -> None:
    # `serve --local` on a machine with no GPU: the default model becomes tiny, whose checkpoint asks 4096.
    from gpt_oss_modal.core.engine import build_command
    from gpt_oss_modal.local import server as lo

    cfg, target = lo.choose_target(load_config(flags).config, model_explicit=False, gpu=False)
    assert (cfg.model, target) == ("tiny", "local-cpu")
    assert build_command(cfg, target=target, default_max_model_len=4096).max_model_len == context


def test_fast_boot_in_toml_is_overridden_by_cli(tmp_path: Path) -> None:
    write_toml(tmp_path / "gpt-oss-modal.toml", "fast_boot = true\n")
    assert load_config().config.boot == "fast"
    assert load_config({"boot": "compiled"}).config.boot == "compiled"


def test_short_names_and_gpu_spellings() -> None:
    assert DeployConfig(model="20b").model == "openai/gpt-oss-20b"
    assert DeployConfig(model="gpt-oss-120b").model == "openai/gpt-oss-120b"
    assert DeployConfig(gpu="h100").gpu == "H100"
    assert DeployConfig(gpu="a100:4").gpu == "A100-40GB:4"
    assert DeployConfig(gpu="H100:1").gpu == "H100"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"dtype": "float16"}, "dtype: float16 is not supported"),
        ({"gpu": "T4"}, "T4 has no bfloat16"),
        ({"gpu": "RTX9090"}, "unknown GPU 'RTX9090'"),
        ({"gpu": "H100:3"}, "must divide the model's 64 attention heads"),
        ({"gpu": "H100:16"}, "from 1 to 8"),
        ({"model": "llama"}, "unknown model 'llama'"),
        ({"max_model_len": 262144}, "max_model_len: 262144 is out of range"),
        ({"max_model_len": "most"}, "max_model_len: "),
        ({"min_containers": 3}, "min_containers: 3 is more than max_containers 2"),
        ({"min_containers": -1}, "min_containers: -1 is out of range"),
        ({"max_containers": 0}, "max_containers: 0 is out of range"),
        ({"buffer_containers": 3}, "buffer_containers: 3 is more than max_containers 2"),
        ({"target_inputs": 51}, "target_inputs: 51 is more than max_inputs 50"),
        ({"target_inputs": 0}, "target_inputs: 0 is out of range"),
        ({"max_inputs": 0}, "max_inputs: 0 is out of range"),
        ({"scaledown_window": 1}, "Modal allows 2 to 3600"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"max_inputs": "many"}, "max_inputs: 'many' is not valid"),
        ({"app_name": "bad name!"}, "not a valid Modal app name"),
        ({"colour": "blue"}, "unknown setting 'colour'"),
        ({"public": True, "api_key_secret": "k"}, "public endpoint takes no API key"),
    ],
)
def test_bad_values_give_one_line_saying_what_and_how(values: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(values)
    message = str(e.value)
    assert expected in message
    assert "\n" not in message


def test_bad_toml_is_one_line(tmp_path: Path) -> None:
    write_toml(tmp_path / "gpt-oss-modal.toml", "model = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config()


def test_resolved_config_travels_verbatim_and_without_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config({"model": "120b", "gpu": "H100:2", "boot": "fast", "api_key": "sk-very-secret"}).config
    shipped = cfg.to_json()
    assert "sk-very-secret" not in shipped
    monkeypatch.setenv(CONFIG_JSON_ENV, shipped)
    monkeypatch.setenv("GPT_OSS_GPU", "L4")  # ignored: the shipped config wins in the container
    again = load_config({"gpu": "A10G"}).config
    assert again == cfg.model_copy(update={"api_key": None})


def test_api_key_is_never_in_repr_or_dump() -> None:
    cfg = DeployConfig(api_key="sk-very-secret")
    assert "sk-very-secret" not in repr(cfg)
    assert "sk-very-secret" not in cfg.model_dump_json()
