"""The README stays in step with the code: the command table and the settings table."""

from __future__ import annotations

import dataclasses
import pathlib
import re

from smsbot import commands, settings

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_command_table_matches_the_declarations() -> None:
    assert commands.markdown_table() in README


def readme_between(start: str, end: str) -> str:
    return README.split(start, 1)[1].split(end, 1)[0]


def test_readme_settings_table_is_the_generated_one() -> None:
    table = readme_between("<!-- settings table", "<!-- end settings table -->").split("-->\n", 1)[1]
    assert table.rstrip("\n") == settings.markdown_table()


def test_every_settings_field_has_a_row_and_every_row_a_doc() -> None:
    fields = {f.name for f in dataclasses.fields(settings.Settings)} - {"dev"}
    rows = [row.attr for row in settings.TABLE]
    assert sorted(rows) == sorted(fields), "one row per Settings field"
    names = [row.env for row in settings.TABLE]
    assert len(set(names)) == len(names)
    for row in settings.TABLE:
        assert row.doc.strip() and "\n" not in row.doc, row.env
        assert not row.together or row.together in names, row.env


def test_every_variable_the_configuration_section_names_is_a_row() -> None:
    section = readme_between("## Configuration", "\n## ")
    mentioned = set(re.findall(r"\b(?:SMSBOT|VONAGE)_[A-Z_]+[A-Z]\b", section))
    assert mentioned - {row.env for row in settings.TABLE} == set()


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


def test_readme_shows_the_tested_proxy_configurations_as_they_are() -> None:
    """The README's nginx, Caddy and Apache configurations are the files tests/test_proxies.py and
    tests/test_oidc_apache.py run, byte for byte."""
    for name in ("deploy/nginx.conf", "deploy/Caddyfile", "deploy/apache-oidc.conf"):
        block = readme_between(f"<!-- {name} -->\n", "```\n").split("\n", 1)[1]
        assert block == (ROOT / name).read_text(encoding="utf-8"), f"the README's copy of {name} differs from the file"
