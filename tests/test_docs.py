"""README's generated tables match the config model and the catalog."""

from pathlib import Path

from gpt_oss_modal import docs

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_tables_are_current() -> None:
    text = README.read_text()
    assert docs.render(text) == text, "README tables are stale: run `python -m gpt_oss_modal.docs`"


def test_every_setting_is_documented() -> None:
    table = docs.config_table()
    from gpt_oss_modal.config import DeployConfig

    for name, field in DeployConfig.model_fields.items():
        assert f"`{name}`" in table and field.description, name
