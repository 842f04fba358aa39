"""The README documents every node parameter with its default."""

from __future__ import annotations

from pathlib import Path

from mobilesam_ros.ros.parameters import PARAMETERS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value or '""'
    return str(value)


def test_every_parameter_is_in_the_readme_table():
    for spec in PARAMETERS:
        row = next(
            (line for line in README.splitlines() if line.startswith(f"| `{spec.name}` |")), None
        )
        assert row is not None, f"{spec.name} missing from README's parameter table"
        assert f"`{_shown(spec.default)}`" in row, f"{spec.name}: README default differs"
