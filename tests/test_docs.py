"""The generated parts of README and the docs match the config model, the catalog and the engine command."""

from pathlib import Path

from gpt_oss_modal import docs

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_tables_are_current() -> None:
    text = README.read_text()
    assert docs.render(text) == text, "README tables are stale: run `python -m gpt_oss_modal.docs`"


def test_cold_start_generated_blocks_are_current() -> None:
    text = docs.COLD_START.read_text()
    assert docs.render(text, docs.COLD_START_BLOCKS) == text, (
        "docs/cold-start.md is stale: run `python -m gpt_oss_modal.docs`"
    )


def test_the_capture_sizes_are_the_engine_commands() -> None:
    from gpt_oss_modal.core import engine
    from gpt_oss_modal.core.config import DeployConfig

    for boot in ("fast", "compiled"):
        sizes = engine.compilation_config(DeployConfig(boot=boot))["cudagraph_capture_sizes"]
        assert f"| {', '.join(map(str, sizes))} | {len(sizes)} |" in docs.capture_sizes(), boot


def test_every_setting_is_documented() -> None:
    table = docs.config_table()
    from gpt_oss_modal.core.config import DeployConfig

    for name, field in DeployConfig.model_fields.items():
        assert f"`{name}`" in table and field.description, name


def test_cli_reference_is_current() -> None:
    assert docs.CLI_REFERENCE.read_text() == docs.cli_reference(), (
        "docs/cli.md is stale: run `python -m gpt_oss_modal.docs`"
    )


def test_the_cli_reference_has_every_command_and_config_flag() -> None:
    text = docs.cli_reference()
    for command in (
        "plan",
        "config",
        "gpus",
        "serve",
        "deploy",
        "run",
        "stop",
        "logs",
        "url",
        "chat",
        "volumes",
    ):
        assert f"## gpt-oss-modal {command}\n" in text, command
    deploy = text.split("## gpt-oss-modal deploy\n")[1].split("\n## ")[0]
    for flag in (
        "--snapshot",
        "--timeout",
        "--startup-timeout",
        "--proxy-auth",
        "--extra-vllm-args",
        "--port",
    ):
        assert flag in deploy, flag
