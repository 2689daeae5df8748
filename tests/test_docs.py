"""The README stays in step with the code: the command table and every setting."""

from __future__ import annotations

import pathlib
import re

from smsbot import commands

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_command_table_matches_the_declarations() -> None:
    assert commands.markdown_table() in README


def test_every_setting_is_documented() -> None:
    source = (ROOT / "smsbot" / "settings.py").read_text(encoding="utf-8")
    names = set(re.findall(r"\b(?:SMSBOT|VONAGE)_[A-Z_]+[A-Z]\b", source))
    assert names, "settings.py reads SMSBOT_* and VONAGE_* variables"
    missing = sorted(n for n in names if n not in README)
    assert not missing, f"README does not document {missing}"


def test_readme_has_the_two_commands() -> None:
    for marker in ("<!-- run command -->", "<!-- test command -->"):
        after = README.split(marker, 1)[1].lstrip("\n").splitlines()[0]
        assert after.startswith("    python3 -m venv .venv && ")
