"""The README opens with the two commands CI relies on and stays a short product page; the serving docs
document every setting."""

from __future__ import annotations

from pathlib import Path

from service.settings import ServeSettings, settings_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SERVING = (ROOT / "docs" / "serving.md").read_text()


def test_readme_opens_with_demo_and_test_commands() -> None:
    block = README.split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert lines == ["make demo", "make test"]


def test_readme_stays_short() -> None:
    lines = len(README.splitlines())
    assert lines <= 220, f"README.md has {lines} lines: move detail into a page under docs/"


def test_every_setting_is_in_the_serving_settings_table() -> None:
    table = SERVING.split("<!-- settings-table -->", 1)[1].split("<!-- /settings-table -->", 1)[0]
    for name in ServeSettings.model_fields:
        assert f"`QIPO_{name.upper()}`" in table, (
            f"QIPO_{name.upper()} missing from docs/serving.md: paste the output of scripts/settings_table.py"
        )


def test_the_serving_settings_table_is_the_generated_one() -> None:
    table = SERVING.split("<!-- settings-table -->", 1)[1].split("<!-- /settings-table -->", 1)[0]
    assert table.strip() == settings_table(), (
        "paste the output of scripts/settings_table.py into docs/serving.md"
    )
