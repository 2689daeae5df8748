"""Every declared command is whole: a handler the engine binds, usage and help texts, a transcript that uses it, and
a README row; every state of the declared table has its fallbacks."""

from __future__ import annotations

import ast
import inspect
import pathlib
import typing
from collections.abc import Callable

import pytest

from smsbot.settings import CONFIRMABLE, Settings
from smsbot.sms import commands, engine
from smsbot.sms.admin import SENTENCES
from smsbot.sms.commands import Command
from smsbot.sms.features import Features
from smsbot.sms.keywords import STRANGER_OPT
from smsbot.store import Action
from smsbot.wiring import build

from support.conversation import all_transcripts

README = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
SENT_WORDS = {step.body.split()[0].upper() for t in all_transcripts() for step in t.steps
              if step.kind == "text" and step.body.split()}


@pytest.fixture
def built(make_settings: Callable[..., Settings]) -> engine.Engine:
    return build(make_settings()).engine


@pytest.mark.parametrize("command", commands.COMMANDS, ids=lambda c: c.name)
def test_every_command_has_a_handler(command: Command, built: engine.Engine) -> None:
    handler = built.commands[command]
    assert inspect.iscoroutinefunction(handler), f"{command.name}'s handler is not async"
    assert list(inspect.signature(handler).parameters) == ["tx", "turn", "argument"]
    assert inspect.ismethod(handler), "a handler is a feature's own method"
    assert set(built.commands) == set(commands.COMMANDS)


@pytest.mark.parametrize("command", commands.COMMANDS, ids=lambda c: c.name)
def test_every_command_has_usage_help_a_transcript_and_a_readme_row(command: Command) -> None:
    assert command.usage.split()[0] == command.name and command.help
    assert command.usage_reply.startswith(f"Usage: {command.usage}")
    if command.args in (commands.Args.REST, commands.Args.OPTIONAL_WORD) and command.roles == commands.ADMIN:
        assert command.example.split()[0] == command.name, "an admin command with arguments shows an example"
    assert set(command.words) & SENT_WORDS, f"no transcript in conversations/ texts {command.name}"
    usage = command.usage.replace("|", "\\|")
    assert f"| `{usage}` |" in README, f"README has no row for {command.name}"


def test_every_state_has_a_row_whose_fallbacks_are_bound(built: engine.Engine) -> None:
    assert set(engine.STATE_TABLE) == set(engine.State)
    for state, step in engine.STATE_TABLE.items():
        assert step.fallbacks, f"{state} has no fallback"
        for fallback in built.fallbacks[state]:
            assert inspect.iscoroutinefunction(fallback), f"{state}: {fallback}"
            assert list(inspect.signature(fallback).parameters) == ["tx", "turn"]
        assert all(c in commands.COMMANDS for c in step.takes)


def test_every_state_is_reached_and_left_by_a_declared_transition() -> None:
    sources = {t.source for t in engine.TRANSITIONS}
    targets = {t.target for t in engine.TRANSITIONS} | {engine.INITIAL}
    assert sources == set(engine.State) == targets
    assert all(t.on.strip() for t in engine.TRANSITIONS)
    rows = [(t.source, t.on, t.target) for t in engine.TRANSITIONS]
    assert len(set(rows)) == len(rows)


def test_invite_stages_are_states_and_the_only_values_the_schema_allows() -> None:
    from smsbot.store import Stage
    from smsbot.store.migrations import SQLITE, render

    assert all(engine.State(stage.value) for stage in Stage)
    first = render(SQLITE)[0][1]
    allowed = ", ".join(f"'{stage.value}'" for stage in Stage)
    assert f"CHECK (stage IN ({allowed}))" in first


def test_the_commands_that_ask_for_yes_are_the_ones_declared_confirmable() -> None:
    asked = set()
    for feature in typing.get_type_hints(Features).values():
        tree = ast.parse(inspect.getsource(inspect.getmodule(feature)))  # type: ignore[arg-type]
        calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
                 and isinstance(node.func, ast.Attribute) and node.func.attr in ("needed", "hold")]
        asked |= {a.id for call in calls for a in call.args if isinstance(a, ast.Name) and a.id in commands.BY_WORD}
    assert asked == {c.name for c in commands.COMMANDS if c.confirmable}
    assert set(CONFIRMABLE) == asked


def test_every_event_action_has_a_sentence_in_log() -> None:
    assert set(SENTENCES) | set(STRANGER_OPT) == set(Action), "LOG sums strangers' STOP and START up instead"
    assert not set(SENTENCES) & set(STRANGER_OPT)
    assert all(template.strip() for template in SENTENCES.values())


def test_usage_replies_come_from_the_declarations_only() -> None:
    from smsbot.sms import texts

    copies = [name for name, value in vars(texts).items() if isinstance(value, str) and name.isupper()
              and any(c.usage in value for c in commands.COMMANDS if c.args is not commands.Args.NONE)]
    assert copies == [], f"texts.py copies a usage line: {copies}"
