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
from smsbot.store import Action, Counted
from smsbot.wiring import build

from support.conversation import all_transcripts

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
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


def test_every_counter_has_its_own_value() -> None:
    values = [member.value for member in Counted.__members__.values()]  # aliases too: a repeated value makes one
    assert len(set(values)) == len(values), "two counters would count each other's notes"
    assert all(value and value == value.strip() for value in values)


# The counters' calls and where each takes its action: a method of Tx, budget.once_per, or the keywords' helper.
COUNTER_CALLS = {"note": 1, "hold": 1, "count_since": 1, "first_since": 1, "once_per": 3, "_may_answer": 2}


def counter_calls(source: str) -> tuple[int, list[str]]:
    """How many counter calls `source` makes, and the ones whose action holds a string literal (line: code)."""
    calls = 0
    literal = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name not in COUNTER_CALLS:
            continue
        at = COUNTER_CALLS[name]
        action = node.args[at] if len(node.args) > at else next(
            (k.value for k in node.keywords if k.arg == "action"), None)
        if action is None:
            continue  # not a counter: hypothesis's note(text), say
        calls += 1
        if any(isinstance(n, ast.Constant) and isinstance(n.value, str) for n in ast.walk(action)):
            literal.append(f"{node.lineno}: {ast.unparse(node)}")
    return calls, literal


def test_counters_are_named_by_counted_only() -> None:
    """A counter's action is a Counted member, never a string: a typo would count into a counter nobody reads."""
    calls = 0
    found = []
    for folder in ("smsbot", "web", "bench", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            made, literal = counter_calls(path.read_text(encoding="utf-8"))
            calls += made
            found += [f"{path.relative_to(ROOT)}:{line}" for line in literal]
    assert found == [], "pass a Counted member"
    assert calls > 20, "the walk sees the counters' calls"


def test_the_counter_check_can_fail() -> None:
    source = """
async def f(tx, clock, key, now, daily):
    await tx.note(key, "pin", now)
    await tx.count_since(key, action="reply", since=now)
    await once_per(tx, clock, key, "pin-cap-day" if daily else Counted.PIN_CAP_HOUR, 3600)
    await tx.first_since(key, Counted.ADMIN_REPLY, now)
    note(f"a hypothesis note")
"""
    calls, literal = counter_calls(source)
    assert calls == 4
    assert [line.split(":")[0] for line in literal] == ["3", "4", "5"]
