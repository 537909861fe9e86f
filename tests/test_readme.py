"""The README opens with the two commands CI relies on, and documents every setting."""

from __future__ import annotations

from pathlib import Path

from service.settings import ServeSettings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_opens_with_demo_and_test_commands() -> None:
    block = README.split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert lines == ["make demo", "make test"]


def test_every_setting_is_in_the_readme_table() -> None:
    for name in ServeSettings.model_fields:
        assert f"`QIPO_{name.upper()}`" in README, (
            f"QIPO_{name.upper()} missing: run scripts/settings_table.py"
        )
