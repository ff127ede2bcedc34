"""The README stays in step with the code it documents."""

from __future__ import annotations

from codeq.config import OPTIONS, Settings
from tests.support import ROOT

README = (ROOT / "README.md").read_text()


def test_readme_configuration_table_lists_every_setting_with_its_default():
    rows = {line.split("|")[1].strip(): line for line in README.splitlines()
            if line.startswith("| `--")}
    for option in OPTIONS:
        row = next((r for flags, r in rows.items() if f"`{option.flag}`" in flags), None)
        assert row is not None, f"{option.flag} missing from the README table"
        assert f"`{option.env}`" in row
        default = getattr(Settings(), option.name)
        if default != "":
            shown = f"{default:g}" if isinstance(default, float) else str(default)
            assert f"| {shown} |" in row, (option.name, row)


def test_readme_quick_start_is_the_two_make_targets():
    assert "make run" in README and "make test" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
