"""Every user-visible text fits one GSM-7 segment with realistic (and worst-case) values."""

from __future__ import annotations

import ast
import inspect
import re
import string

import pytest

from smsbot import messages
from smsbot.keys import CODE_LENGTH
from smsbot.sms import commands, texts
from smsbot.sms.admin import paginate, render_page
from smsbot.sms.confirm import CONFIRM_TRIES
from smsbot.sms.invites import LONGEST, SHORTEST
from smsbot.sms.keywords import help_text

SAMPLE = {
    "group": texts.cut_group("The Riverside Allotment Society"),  # cut to 24 characters
    "username": "margaret_hamilton-1936_w_longest",  # 32 characters, the longest allowed
    "code": "K7XM2P",
    "pin": "048213",
    "hours": "72",
    "minutes": 10,
    "url": "https://allotments.example.org",
    "who": "margaret_hamilton-1936_w_longest (**34)",
    "typed": texts.shorten("+1 (415) 555-01 extra words here"),
    "reason": "it is a premium-rate number",
    "what": texts.shorten("someone-who-is-not-there"),
    "page": 2,
    "pages": 3,
    "next": 3,
    "word": texts.shorten("INVTIE", 12),
    "hint": texts.DID_YOU_MEAN.format(name="INVITE"),
    "usage": "INVITE <phone> [username]",
    "example": max((c.example for c in commands.COMMANDS), key=len),
    "help": max((c.help for c in commands.COMMANDS), key=len),
    "name": "INVITE",
    "usages": ", ".join(c.name for c in commands.COMMANDS),
    "budget": 500,
    "count": "12 devices",
    "items": "Chrome on Android (used 12 days ago), Firefox on Linux (used just now)",
    "command": "LIST",
    "failures": 20,
    "header": "",
    "footer": "",
    "wrong": 10,
    "until": "Sep 30 14:06",  # the longest month names are cut to three letters
    "time": "14:06",
    "number": "**00",
    "shortest": SHORTEST,
    "longest": LONGEST,
    "tries": CONFIRM_TRIES,
}
TEMPLATES = {name: value for name, value in vars(texts).items()
             if name.isupper() and isinstance(value, str)}


def fill(template: str, **extra: object) -> str:
    names = {field for _, field, _, _ in string.Formatter().parse(template) if field}
    return template.format(**{name: extra.get(name, SAMPLE[name]) for name in names})


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_template_fits_one_gsm7_segment(name: str) -> None:
    text = fill(TEMPLATES[name])
    assert messages.is_gsm7(text), f"{name} has characters outside GSM-7: {text!r}"
    assert messages.septets(text) <= messages.SEGMENT, f"{name} is {messages.septets(text)} septets: {text!r}"


def test_help_for_every_role_fits() -> None:
    for roles in ({commands.Role.ADMIN, commands.Role.MEMBER}, {commands.Role.ADMIN, commands.Role.INVITEE},
                  {commands.Role.MEMBER}, {commands.Role.ADMIN}):
        text = help_text(frozenset(roles))
        assert messages.fits_one_segment(text), text
        assert all(c.name in text for c in commands.usable_by(roles) if c is not commands.JOIN)
    for command in commands.COMMANDS:
        assert messages.fits_one_segment(texts.HELP_COMMAND.format(usage=command.usage, help=command.help))
        assert messages.fits_one_segment(command.usage_reply), command.usage_reply


def test_list_pages_fit_and_keep_every_item() -> None:
    items = [f"member_with_a_long_name_{i:02d}" for i in range(40)] + [f"**{i:02d} (invited)" for i in range(10)]
    pages = paginate(items)
    assert len(pages) > 3
    assert [item for page in pages for item in page] == items
    for number in range(1, len(pages) + 1):
        assert messages.fits_one_segment(render_page(pages, number))


def test_the_segment_check_can_fail() -> None:
    assert not messages.fits_one_segment("x" * 161)
    assert not messages.is_gsm7("emoji \N{GRINNING FACE}")
    assert messages.septets("{}") == 4
    assert texts.cut_group("A" * 40) == "A" * 23 + "."


def test_no_text_writes_down_a_number_a_constant_decides() -> None:
    """Digits in the prose of texts.py (not in what an f-string fills in); "24 hours" is the day the YES lock
    counts wrong codes in, not a setting."""
    tree = ast.parse(inspect.getsource(texts))
    written: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id in TEMPLATES:
            parts = node.value.values if isinstance(node.value, ast.JoinedStr) else [node.value]
            prose = "".join(p.value for p in parts if isinstance(p, ast.Constant) and isinstance(p.value, str))
            written[node.targets[0].id] = [n for n in re.findall(r"\d+", prose) if n != "24"]
    assert written and {name: n for name, n in written.items() if n} == {}
    assert str(SHORTEST) in fill(texts.ASK_USERNAME) and str(CODE_LENGTH) in texts.WRONG_CODE


def test_the_gsm7_counts_agree_with_the_character_tables_for_every_character() -> None:
    """is_gsm7 and septets work a whole text at a time (in C); each character alone must still get its due."""
    for code in range(0x3000):
        ch = chr(code)
        basic, extended = ch in messages.GSM7_BASIC, ch in messages.GSM7_EXTENDED
        assert messages.is_gsm7(f"a{ch}b") is (basic or extended), repr(ch)
        assert messages.septets(f"a{ch}b") == 2 + (2 if extended else 1), repr(ch)
    assert messages.is_gsm7("") and messages.septets("") == 0
