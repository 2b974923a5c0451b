"""Config sources and their precedence: defaults < gpt-oss-modal.toml < GPT_OSS_* env < CLI flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpt_oss_modal.config import CONFIG_JSON_ENV, ConfigError, DeployConfig, load_config


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    import os

    for name in list(os.environ):
        if name.startswith("GPT_OSS_") or name == "FAST_BOOT":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray ./gpt-oss-modal.toml
    return tmp_path


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_match_the_seed() -> None:
    loaded = load_config()
    cfg = loaded.config
    assert cfg.model == "openai/gpt-oss-20b"
    assert cfg.app_name == "gpt-oss-vllm-inference"
    assert cfg.dtype == "bfloat16"
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
    assert (cfg.gpu, src["gpu"]) == ("H100:2", "env")
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
def test_seed_fast_boot_alias(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "1")
    loaded = load_config()
    assert loaded.config.boot == "fast" and loaded.sources["boot"] == "env"
    monkeypatch.setenv(name, "false")
    assert load_config().config.boot == "compiled"


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
