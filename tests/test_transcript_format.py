"""The transcript reader refuses what it does not understand, naming the file and the line."""

from __future__ import annotations

import pathlib
import re

import pytest

from support.conversation import SETTINGS, STEP_KEYS, parse

GOOD = """\
# An admin asks for help.
@admins +14155550100
@group Friends

+14155550100> HELP
@wait 1m
"""


def write(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "99-under-test.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_known_settings_and_steps_are_read(tmp_path: pathlib.Path) -> None:
    transcript = parse(write(tmp_path, GOOD))
    assert transcript.title == "An admin asks for help."
    assert transcript.settings == {"admins": "+14155550100", "group": "Friends"}
    assert [(step.kind, step.line) for step in transcript.steps] == [("text", 5), ("wait", 6)]


@pytest.mark.parametrize(("line", "key"), [("@grop Friends", "@grop"), ("@pin_ttl 10", "@pin_ttl"),
                                         ("@Admins +14155550100", "@Admins"), ("@ admins +14155550100", "@")])
def test_an_unknown_at_key_fails_with_the_file_and_line(tmp_path: pathlib.Path, line: str, key: str) -> None:
    with pytest.raises(ValueError, match=rf"^99-under-test\.txt:3: unknown '{re.escape(key)}' "):
        parse(write(tmp_path, GOOD.replace("@group Friends", line)))


def test_an_unknown_at_key_among_the_steps_fails_too(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match=r"^99-under-test\.txt:7: unknown '@sleep' "):
        parse(write(tmp_path, GOOD + "@sleep 1m\n"))


def test_a_setting_after_the_first_step_fails(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match=r"^99-under-test\.txt:7: settings \(@region\) come before the first text"):
        parse(write(tmp_path, GOOD + "@region GB\n"))


def test_every_key_is_described_in_the_conversations_readme() -> None:
    readme = (pathlib.Path(__file__).resolve().parent.parent / "conversations" / "README.md").read_text("utf-8")
    missing = [key for key in (*SETTINGS, *STEP_KEYS) if f"`@{key} " not in readme]
    assert not missing, f"conversations/README.md does not describe {missing}"
