"""The README stays in step with the code: the command table, the settings table and the state diagram."""

from __future__ import annotations

import dataclasses
import pathlib
import re
import tomllib

from smsbot import settings
from smsbot.sms import commands, engine

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_command_table_matches_the_declarations() -> None:
    assert commands.markdown_table() in README


def test_the_state_diagram_is_drawn_from_the_transitions() -> None:
    text = (ROOT / "conversations" / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- state diagram", 1)[1].split("<!-- end state diagram -->", 1)[0]
    assert block.split("```mermaid\n", 1)[1].split("```", 1)[0].rstrip("\n") == engine.mermaid()
    for t in engine.TRANSITIONS:
        assert f"{t.source.value} --> {t.target.value}: {t.on}" in engine.mermaid()


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


def test_the_readme_chooses_xdist_and_the_fast_tier_by_declared_markers() -> None:
    """pyproject forces no xdist (the README's test line asks for it), and the fast tier's -m names only markers
    pyproject declares, `slow` and `pg` among them."""
    pytest_options = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["pytest"]
    options = pytest_options["ini_options"]
    assert "-n" not in options.get("addopts", [])
    assert README.split("<!-- test command -->", 1)[1].lstrip("\n").splitlines()[0].endswith(
        ".venv/bin/pytest -n auto --dist worksteal")
    fast = README.split("<!-- fast test command -->", 1)[1].lstrip("\n").splitlines()[0]
    expression = re.search(r'^    \.venv/bin/pytest .*-m "([^"]+)"$', fast)
    assert expression, fast
    named = set(re.findall(r"\w+", expression.group(1))) - {"and", "or", "not"}
    declared = {marker.split(":")[0] for marker in options["markers"]}
    assert {"slow", "pg"} <= named <= declared, (named, declared)


def test_readme_shows_the_tested_deploy_files_as_they_are() -> None:
    """The README's nginx, Caddy, Apache and Traefik configurations are the files in deploy/ (nginx's, Caddy's and
    Apache's are the files tests/test_proxies.py, tests/test_rolling_restart.py and tests/test_oidc_apache.py run),
    and its systemd unit the file tests/test_deploy.py checks, byte for byte."""
    for name in ("deploy/nginx.conf", "deploy/Caddyfile", "deploy/nginx-instances.conf", "deploy/traefik.toml",
                 "deploy/smsbot.service", "deploy/apache-oidc.conf"):
        block = readme_between(f"<!-- {name} -->\n", "```\n").split("\n", 1)[1]
        assert block == (ROOT / name).read_text(encoding="utf-8"), f"the README's copy of {name} differs from the file"


def test_the_traefik_example_strips_what_the_caddy_file_strips() -> None:
    """Traefik can't run here, so its example is checked against the Caddy file, which tests/test_proxies.py runs:
    the same headers copied from smsbot's answer, and every look-alike the Caddy file drops, dropped too."""
    caddy = (ROOT / "deploy/Caddyfile").read_text(encoding="utf-8")
    stripped = re.findall(r"^\s*request_header -(\S+)$", caddy, re.MULTILINE)
    copied = re.search(r"^\s*copy_headers (.+)$", caddy, re.MULTILINE)
    assert stripped and copied, "the Caddy file drops look-alikes and copies smsbot's headers"
    http = tomllib.loads((ROOT / "deploy/traefik.toml").read_text(encoding="utf-8"))["http"]
    wiki = http["routers"]["wiki"]
    middlewares = [http["middlewares"][name] for name in wiki["middlewares"]]
    auth = [m["forwardAuth"] for m in middlewares if "forwardAuth" in m]
    assert len(auth) == 1 and auth[0]["address"].endswith("/auth/forward")
    assert auth[0]["authResponseHeaders"] == copied.group(1).split()
    removed = {name for m in middlewares for name, value in m.get("headers", {}).get("customRequestHeaders", {})
               .items() if value == ""}  # an empty value removes the header
    assert removed == set(stripped), "the wiki's router drops every look-alike the Caddy file drops"


def layout_tree() -> list[str]:
    """The paths the README's Layout tree names, each from its indentation (two spaces a level) and its parents."""
    block = readme_between("<!-- layout -->\n```\n", "```\n<!-- end layout -->")
    paths: list[str] = []
    parents: list[str] = []
    for line in block.splitlines():
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0]
        del parents[depth:]
        paths.append("".join(parents) + name)
        if name.endswith("/"):
            parents.append(name)
    return paths



def layout_mismatch(named: list[str]) -> tuple[list[str], list[str]]:
    """The modules and packages of smsbot/ and web/ that `named` leaves out, and what it names that is not there."""
    on_disk = set()
    for top in ("smsbot", "web"):
        for path in (ROOT / top).rglob("*.py"):
            rel = path.relative_to(ROOT)
            on_disk.add(f"{rel.parent}/" if path.name == "__init__.py" else str(rel))  # a package, by its folder
    missing = sorted(on_disk - set(named))
    gone = [p for p in named if not (ROOT / p).exists() or (p.endswith(".py") and not (ROOT / p).is_file())]
    return missing, gone


def test_the_readme_layout_names_every_module_and_nothing_else() -> None:
    named = layout_tree()
    assert len(named) == len(set(named)), "each named once"
    assert layout_mismatch(named) == ([], [])


def test_the_layout_check_can_fail() -> None:
    named = layout_tree()
    assert "smsbot/sms/engine.py" in named and "web/templates/" in named, "paths are built from the indentation"
    wrong = [p for p in named if p != "smsbot/sms/engine.py"] + ["smsbot/engine.py"]
    assert layout_mismatch(wrong) == (["smsbot/sms/engine.py"], ["smsbot/engine.py"])
