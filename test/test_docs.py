"""The README's parameter table is the one the settings types make (one source per setting)."""

from __future__ import annotations

from pathlib import Path

from mobilesam_ros.ros.parameters import markdown_table

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_the_readme_holds_the_parameter_table_made_from_the_settings_types():
    table = markdown_table()
    assert table in README, (
        "README's parameter table differs from the settings types; replace it with the output "
        "of: python -c 'from mobilesam_ros.ros.parameters import markdown_table; "
        "print(markdown_table())'"
    )
