"""Property tests (security checklist items 25, 26 and 28, and item 6 for strangers): Hypothesis, derandomized.

- the SMS command parser is total and runs nothing without an exact grammar match;
- the engine never raises on any sender and text, and says nothing to strangers beyond HELP, STOP and START;
- phone normalisation is idempotent, gives one key per number whatever the written form, and refuses letters;
- no request to any route (enumerated from the router, so new routes are fuzzed too) gets a 5xx.

Hypothesis examples are synchronous; each test drives its own event loop with `loop.run_until_complete`, so no
async fixture is shared across examples. Every run is the same run (`derandomize=True`, no example database).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import os
import pathlib
import re
import shutil
import tempfile
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import jwt
import phonenumbers
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, Phase, assume, given, note, settings, target
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from smsbot import phone
from smsbot.clock import FakeClock
from smsbot.gateway import FakeGateway
from smsbot.keys import CODE_ALPHABET, Keys
from smsbot.messages import InboundPart, InboundText
from smsbot.settings import Settings, load
from smsbot.signatures import sms_signature
from smsbot.sms import commands, keywords
from smsbot.sms.commands import Args
from smsbot.web import create_app

from support.constants import INVITE_CODE
from support.service import ADMIN, BASE_ENV, SECRET, Wired

T = TypeVar("T")

# Reproducible: the same examples on every run and every machine, nothing stored between runs. No explain phase:
# on a failure it reruns the minimal example hundreds of times, which here costs more than everything else.
DETERMINISTIC = settings(derandomize=True, database=None, deadline=None, print_blob=False,
                         phases=[Phase.explicit, Phase.generate, Phase.target, Phase.shrink],
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                HealthCheck.large_base_example, HealthCheck.filter_too_much])


def deterministic(examples: int) -> settings:
    return settings(DETERMINISTIC, max_examples=examples)


GROUP_NUMBER = "+" + BASE_ENV["SMSBOT_NUMBER"]
# A RAM-backed directory keeps SQLite's fsyncs (synchronous = FULL) from dominating the run time where there is one.
FAST_TMP = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None

# --- text strategies ----------------------------------------------------------------------------------------------

# Everything str.isspace() calls whitespace, and characters that look like spacing but are not whitespace.
WHITESPACE = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008" \
             "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_WHITESPACE = "\x00\x07\x1b\u00ad\u180e\u200b\u200c\u200d\u2060\ufeff\ufffd"
assert all(ch.isspace() for ch in WHITESPACE) and not any(ch.isspace() for ch in NOT_WHITESPACE)

COMMAND_WORDS = sorted(commands.BY_WORD)
# Non-ASCII characters whose upper case is ASCII letters: "ſ".upper() == "S", "ı".upper() == "I", "ﬆ".upper() == "ST".
UPPER_TO_ASCII = {ch: ch.upper() for ch in map(chr, range(0x80, 0x110000))
                  if ch.upper().isascii() and ch.upper().isalpha()}

any_char = st.characters(exclude_categories=())  # every code point, lone surrogates included
lone_surrogate = st.characters(categories=["Cs"])
spacing = st.text(st.sampled_from(WHITESPACE), min_size=1, max_size=4)


def case_variants(word: str) -> st.SearchStrategy[str]:
    flips = st.lists(st.booleans(), min_size=len(word), max_size=len(word))
    return flips.map(lambda fs: "".join(c.lower() if f else c for c, f in zip(word, fs, strict=True)))


command_word = st.sampled_from(COMMAND_WORDS).flatmap(case_variants)


@st.composite
def near_miss(draw: st.DrawFn) -> str:
    """A command word with one edit: an extra, missing or changed character ("STOPP", "STOP.", "xSTOP", "ST0P")."""
    word = draw(command_word)
    junk = draw(st.one_of(st.sampled_from(list(".,!?:;'\"-_*/0123456789PSxX") + list(NOT_WHITESPACE)), any_char)
                .filter(lambda ch: not ch.isspace()))
    i = draw(st.integers(0, len(word)))
    edit = draw(st.sampled_from(["insert", "delete", "replace"]))
    if edit == "insert" or len(word) == 1:
        return word[:i] + junk + word[i:]
    i = min(i, len(word) - 1)
    return word[:i] + ("" if edit == "delete" else junk) + word[i + 1:]


def texts(surrogates: bool, huge: bool = True) -> st.SearchStrategy[str]:
    """Any text: random code points, SMS-like words and spacing, decoded bytes, huge repeats. Lone surrogates (which
    a JSON webhook can carry as "\\ud800") only if asked for."""
    chars = any_char if surrogates else st.characters()
    word = st.one_of(command_word, near_miss(), st.text(chars.filter(lambda ch: not ch.isspace()), min_size=1,
                                                         max_size=12))
    edge = st.text(st.sampled_from(WHITESPACE), max_size=2)
    sms_like = st.builds(lambda lead, parts, trail: lead + "".join(s + w for s, w in parts) + trail,
                         edge, st.lists(st.tuples(spacing, word), max_size=5), edge)
    repeated = st.builds(lambda unit, times: unit * times,
                         st.one_of(st.text(chars, min_size=1, max_size=8), sms_like.filter(bool)),
                         st.integers(1, 200_000 if huge else 300))
    decodings = ["latin-1", "utf-8", "utf-16"] + (["utf-8 surrogateescape"] if surrogates else [])
    from_bytes = st.builds(lambda b, how: b.decode(how.split()[0], how.split()[1] if " " in how else "replace"),
                           st.binary(max_size=300), st.sampled_from(decodings))
    odd = st.one_of(lone_surrogate, st.sampled_from(WHITESPACE + NOT_WHITESPACE)) if surrogates else \
        st.sampled_from(WHITESPACE + NOT_WHITESPACE)
    return st.one_of(st.text(chars, max_size=200), sms_like, from_bytes, repeated, st.text(odd, max_size=20))


any_text = texts(surrogates=True)
valid_text = texts(surrogates=False)
# A command word with 0-2 more words: with the Args of that command, often a valid command.
short_command = st.builds(lambda w, parts: w + "".join(s + x for s, x in parts), command_word,
                          st.lists(st.tuples(spacing, st.text(st.characters(), min_size=1, max_size=10).filter(
                              lambda t: not any(c.isspace() for c in t))), max_size=2))


# --- 1. the command parser -------------------------------------------------------------------------------------------

def reference_parse(text: str) -> tuple[commands.Command, str] | None:
    """The grammar, written independently of commands.parse: words split the way str.split() does, command words
    in any case of ASCII letters (non-ASCII look-alikes are test_command_words_are_matched_in_ascii_only's)."""
    if len(text) > commands.MAX_TEXT:
        return None
    words = text.split()
    if not words or not words[0].isascii() or words[0].upper() not in commands.BY_WORD:
        return None
    command, rest = commands.BY_WORD[words[0].upper()], words[1:]
    allowed = {Args.NONE: len(rest) == 0, Args.ONE_WORD: len(rest) == 1, Args.OPTIONAL_WORD: len(rest) <= 1,
               Args.REST: True}[command.args]
    return (command, " ".join(rest)) if allowed else None


@deterministic(500)
@given(any_text)
def test_parser_is_total_and_matches_only_the_declared_grammar(text: str) -> None:
    parsed = commands.parse(text)  # never raises
    commands.first_word(text)  # nor does the engine's other look at a text
    if parsed is not None:  # sound: what parses is a declared word with the declared number of arguments
        assert len(text) <= commands.MAX_TEXT
        first, *rest = text.split()
        assert first.upper() in parsed.command.words, f"{text[:80]!r} ran {parsed.command.name}"
        assert parsed.argument == " ".join(rest)
        if parsed.command.args is Args.NONE:
            assert rest == [], f"{text[:80]!r} ran {parsed.command.name} with arguments"
        elif parsed.command.args is Args.ONE_WORD:
            assert len(rest) == 1, f"{text[:80]!r} ran {parsed.command.name} without exactly one argument"
        elif parsed.command.args is Args.OPTIONAL_WORD:
            assert len(rest) <= 1, f"{text[:80]!r} ran {parsed.command.name} with more than one argument"
    expected = reference_parse(text)
    if expected is not None:  # complete: what the grammar calls a command parses, as that command
        assert parsed is not None, f"{text[:80]!r} is a command by the grammar but did not parse"
        assert (parsed.command, parsed.argument) == expected


@deterministic(200)
@given(short_command.filter(lambda t: commands.parse(t) is not None), st.integers(1, 5000), st.sampled_from(WHITESPACE))
def test_texts_longer_than_max_text_never_parse(command: str, extra: int, pad: str) -> None:
    """A valid command padded past MAX_TEXT (with spaces, or with more of itself) is no longer a command."""
    padded = command + pad * (commands.MAX_TEXT - len(command) + extra)
    assert len(padded) > commands.MAX_TEXT and commands.parse(padded) is None
    repeated = command * (commands.MAX_TEXT // max(len(command), 1) + 1)
    assert len(repeated) > commands.MAX_TEXT and commands.parse(repeated) is None


@deterministic(400)
@given(near_miss(), st.one_of(st.just(""), st.builds(str.__add__, spacing, any_text)))
def test_a_first_word_that_is_not_a_command_word_never_parses(first: str, rest: str) -> None:
    assume(first.upper() not in commands.BY_WORD)  # an edit can make another word: STOP + ALL, UN + STOP
    assert commands.parse(first + rest) is None, f"{first!r} ran a command"


@deterministic(400)
@given(command_word, st.one_of(st.builds(str.__add__, spacing, any_text), any_text))
def test_a_command_word_prefix_never_runs_another_command(word_: str, rest: str) -> None:
    """Whatever follows a command word, the text is that command or no command, never a different one."""
    parsed = commands.parse(word_ + rest)
    if parsed is None:
        return
    glued = (word_ + rest).split()[0]
    if glued.upper() == word_.upper():
        assert parsed.command is commands.BY_WORD[word_.upper()]
    else:  # the text glued more characters to the word: only a declared word (STOP+ALL) may come out
        assert glued.upper() in commands.BY_WORD and parsed.command is commands.BY_WORD[glued.upper()]


@st.composite
def unicode_spelling(draw: st.DrawFn) -> str:
    """A command word with a letter (or two) written as a non-ASCII character whose upper case is those letters."""
    name = draw(st.sampled_from(COMMAND_WORDS))
    spots = [(i, ch) for ch, up in UPPER_TO_ASCII.items() for i in range(len(name)) if name.startswith(up, i)]
    assume(spots)
    i, ch = draw(st.sampled_from(sorted(spots)))
    return draw(case_variants(name[:i])) + ch + draw(case_variants(name[i + len(UPPER_TO_ASCII[ch]):]))


@deterministic(100)
@given(unicode_spelling())
def test_command_words_are_matched_in_ascii_only(spelling: str) -> None:
    """Exact grammar match: "ſtop" (long s), "lıst" (dotless i) or "ﬆart" (ligature) are not command words, though
    Python's str.upper() maps them onto STOP, LIST and START."""
    parsed = commands.parse(spelling)
    assert parsed is None, f"{spelling!r} ({spelling.encode('unicode_escape').decode()}) ran {parsed.command.name}"


# --- 2. the engine ----------------------------------------------------------------------------------------------------

class SyncWired:
    """conftest's Wired on its own event loop and temporary database (a copy of `template` if given), driven from
    synchronous Hypothesis code."""

    def __init__(self, template: pathlib.Path | None = None):
        self._dir = tempfile.TemporaryDirectory(dir=FAST_TMP, prefix="smsbot-props-")
        db = pathlib.Path(self._dir.name) / "smsbot.db"
        if template is not None:
            shutil.copyfile(template, db)
        self.loop = asyncio.new_event_loop()
        self.wired = Wired(load({**BASE_ENV, "SMSBOT_DB": str(db)}, dev=True))
        self.run(self.wired.store.open())
        self._ids = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def text(self, sender: str, body: str) -> list[tuple[str, str]]:
        """Receive a text, deliver what it caused; return that as (to, body)."""
        return self.run(self.wired.text(sender, body))

    def receive(self, sender: str, body: str, part: tuple[str, int, int] | None = None) -> None:
        """Just the service's receive (or receive_part); texts stay queued until `delivered`."""
        self._ids += 1
        message_id = f"prop-{self._ids}"  # apart from Wired's msg-N, which a template database has seen
        if part is None:
            self.run(self.wired.pipeline.receive(InboundText(message_id, sender, body)))
        else:
            self.run(self.wired.pipeline.receive_part(InboundPart(message_id, sender, body, *part)))

    def delivered(self) -> list[tuple[str, str]]:
        return self.run(self.wired.delivered())

    def close(self) -> None:
        try:
            self.run(self.wired.store.close())
        finally:
            self.loop.close()
            self._dir.cleanup()


@contextlib.contextmanager
def sync_wired(template: pathlib.Path | None = None) -> Iterator[SyncWired]:
    rig = SyncWired(template)
    try:
        yield rig
    finally:
        rig.close()


NANP_AREAS = ["201", "212", "213", "305", "312", "404", "415", "503", "512", "617", "646", "702", "713", "808", "917"]


@st.composite
def us_number(draw: st.DrawFn) -> str:
    """A random valid US number in E.164."""
    digits = draw(st.sampled_from(NANP_AREAS)) + str(draw(st.integers(200, 999))) + f"{draw(st.integers(0, 9999)):04d}"
    number = phonenumbers.parse("+1" + digits)
    assume(phonenumbers.is_valid_number(number) and phonenumbers.region_code_for_number(number) == "US")
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def stranger_number() -> st.SearchStrategy[str]:
    return us_number().filter(lambda n: n not in (ADMIN, GROUP_NUMBER))


phone_typed = st.one_of(
    us_number(),
    us_number().map(lambda n: phonenumbers.format_number(phonenumbers.parse(n), PhoneNumberFormat.NATIONAL)),
    st.text(st.sampled_from(sorted(phone.ALLOWED)), min_size=1, max_size=20),
    st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=12),  # ², ١٢٣, ５ ...
    st.sampled_from(["+1900 555 0134", "+44 909 879 0000", "1-800-FLOWERS", "00", "+", "()", "0044 20 7946 0018"]),
)
username_like = st.one_of(st.sampled_from(["alice", "bob", "carol", "HELP", "stop", "a-b_c", "ab", "x" * 33]),
                          st.text(min_size=1, max_size=12).filter(lambda t: not any(c.isspace() for c in t)))
code_like = st.one_of(st.text(st.sampled_from(CODE_ALPHABET), min_size=6, max_size=6),
                      st.text(st.sampled_from(CODE_ALPHABET.lower() + "01IO"), min_size=5, max_size=7))
odd_numbers = st.sampled_from(["²", "³", "¹", "١", "١٢", "٣", "９", "0", "00", "-1", "1.5", "1e3", "9" * 40])


def engine_texts(surrogates: bool, huge: bool = True) -> st.SearchStrategy[str]:
    """Texts as the engine may see them: commands with plausible and odd arguments, codes, names, anything."""
    free = texts(surrogates, huge)
    argument = st.one_of(phone_typed, username_like, code_like, st.integers(-5, 10**30).map(str), odd_numbers, free)
    command_text = st.builds(lambda w, sep, args: w + sep + " ".join(args), command_word, spacing,
                             st.lists(argument, max_size=3))
    return st.one_of(command_text, command_text, code_like, username_like, free)


with_lone_surrogate = st.builds(lambda text, i, ch: text[:i] + ch + text[i:], engine_texts(surrogates=False),
                                st.integers(0, 60), lone_surrogate)


@dataclass
class Step:
    who: str  # admin, member, invitee, named or stranger
    stranger: str
    text: str
    advance: float  # seconds the clock moves first
    part: tuple[str, int, int] | None  # (concat-ref, total, part) for one part of a multipart text


def _part(ref: str, total: int, index: int) -> tuple[str, int, int]:
    return ref, max(total, index), index


def steps(text: st.SearchStrategy[str]) -> st.SearchStrategy[list[Step]]:
    return st.lists(st.builds(Step, st.sampled_from(["admin", "admin", "member", "invitee", "named", "stranger"]),
                              stranger_number(), text, st.sampled_from([0.0, 0.0, 0.0, 61.0, 601.0, 73 * 3600.0]),
                              st.one_of(st.none(), st.none(), st.none(), st.builds(
                                  _part, st.sampled_from(["r1", "r2"]), st.integers(1, 3), st.integers(1, 3)))),
                    min_size=1, max_size=6)


MEMBER, INVITEE, NAMED = "+14155550134", "+14155550135", "+14155550136"
ROLE_NUMBERS = {"admin": ADMIN, "member": MEMBER, "invitee": INVITEE, "named": NAMED}


def set_up_group(rig: SyncWired) -> None:
    """An admin, a member (alice), an invitee awaiting a code and one awaiting a username (named bob)."""
    out = rig.text(ADMIN, f"INVITE {MEMBER} alice")
    code = INVITE_CODE.search(out[0][1])
    assert code, out
    assert "PIN" in rig.text(MEMBER, code.group(1))[0][1]
    rig.text(ADMIN, f"INVITE {INVITEE}")
    out = rig.text(ADMIN, f"INVITE {NAMED}")
    code = INVITE_CODE.search(out[0][1])
    assert code, out
    rig.text(NAMED, code.group(1))


@pytest.fixture(scope="module")
def group_db() -> Iterator[pathlib.Path]:
    """A database with the group of set_up_group, copied for each example (setting it up each time is slow)."""
    with tempfile.TemporaryDirectory(dir=FAST_TMP, prefix="smsbot-props-") as kept:
        template = pathlib.Path(kept) / "group.db"
        with sync_wired() as rig:
            set_up_group(rig)
            rig.delivered()
            rig.run(rig.wired.store.close())  # checkpoints: everything is in the main file (closing again is a no-op)
            shutil.copyfile(rig.wired.settings.db_path, template)
        yield template


def play(template: pathlib.Path, plan: list[Step]) -> None:
    with sync_wired(template) as rig:
        for step in plan:
            note(f"{step.who} texts {step.text[:120]!r} (part {step.part}) after {step.advance:g} s")
            rig.wired.clock.advance(step.advance)
            rig.receive(ROLE_NUMBERS.get(step.who, step.stranger), step.text, step.part)
        rig.delivered()


@deterministic(80)
@given(plan=steps(engine_texts(surrogates=False)))
def test_the_engine_never_raises_whoever_texts_whatever(group_db: pathlib.Path, plan: list[Step]) -> None:
    """Any text (or part of one) from the admin, a member, invitees or strangers is handled without an exception,
    and what it queued is delivered."""
    play(group_db, plan)


admin_argument = st.one_of(odd_numbers, phone_typed, username_like, code_like, st.integers(-5, 10**30).map(str),
                           st.lists(st.one_of(username_like, phone_typed), min_size=2, max_size=3).map(" ".join),
                           valid_text.filter(lambda t: len(t) < 300))


@deterministic(150)
@given(word_=command_word, argument_=admin_argument, who=st.sampled_from(["admin", "member", "invitee", "named"]))
def test_every_command_with_any_argument_is_handled(group_db: pathlib.Path, word_: str, argument_: str,
                                                   who: str) -> None:
    """Each command word with one argument of every kind, from each role: handled, never an exception."""
    play(group_db, [Step(who, "", f"{word_} {argument_}", 0.0, None)])


@deterministic(60)
@given(plan=steps(with_lone_surrogate))
def test_the_engine_never_raises_on_lone_surrogates(group_db: pathlib.Path, plan: list[Step]) -> None:
    """A JSON webhook can carry a lone surrogate ("text": "\\ud800"), which SQLite cannot store as UTF-8."""
    play(group_db, plan)


STRANGER_MAY_GET_REPLIES_TO = {"HELP", "STOP", "START"}


@pytest.mark.slow  # Hypothesis, run inside
def test_strangers_get_nothing_but_help_stop_and_start_replies() -> None:
    """Checklist item 6: a stranger (not admin, not invited, not a member) gets a text back only for HELP/INFO and
    the STOP and START families, only to their own phone, and at most STRANGER_REPLIES_PER_DAY of them. One database
    for all examples (two numbers come back often, to reach the cap): strangers' texts change nothing but their
    opt-out state and reply count, and the property holds in every such state."""
    replies: collections.Counter[str] = collections.Counter()  # per stranger, over all examples (one database)
    with sync_wired() as rig:

        @deterministic(200)
        @given(st.one_of(stranger_number(), st.sampled_from(["+12125550101", "+13125550102"])),
               st.lists(engine_texts(surrogates=True), min_size=1, max_size=4))
        def check(sender: str, bodies: list[str]) -> None:
            for body in bodies:
                out = rig.text(sender, body)
                parsed = commands.parse(body)
                note(f"{sender} texts {body[:120]!r} -> {out!r}")
                if parsed is None or parsed.command.name not in STRANGER_MAY_GET_REPLIES_TO:
                    assert out == [], f"a stranger's {body[:60]!r} got {out!r}"
                else:
                    assert len(out) <= 1 and all(to == sender for to, _ in out)
                replies[sender] += len(out)
                # The clock stands still: the daily cap on replies to a stranger holds over the whole run.
                assert replies[sender] <= keywords.STRANGER_REPLIES_PER_DAY, f"{sender} got {replies[sender]} replies"

        check()
        assert rig.run(rig.wired.store.run(lambda tx: tx.members())) == []


# --- 3. phone numbers -------------------------------------------------------------------------------------------------

REGIONS = ["US", "GB", "DE", "FR", "IN"]
KEYS = Keys(SECRET)
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
phone_chars = st.sampled_from(sorted(phone.ALLOWED) + ["+", "0", "0", "1", "4", "9"] + list("a eOlx٣²０\u200b\t"))


@st.composite
def valid_number(draw: st.DrawFn) -> tuple[str, phonenumbers.PhoneNumber]:
    """(region, number): an example number of the region with random last digits, valid and textable."""
    region = draw(st.sampled_from(REGIONS))
    kind = draw(st.sampled_from([PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE]))
    example = phonenumbers.example_number_for_type(region, kind)
    assert example is not None, f"phonenumbers has an example {kind} number for {region}"
    nsn = phonenumbers.national_significant_number(example)
    k = draw(st.integers(1, min(6, len(nsn) - 2)))
    tail = draw(st.text(st.sampled_from("0123456789"), min_size=k, max_size=k))
    number = phonenumbers.parse(f"+{example.country_code}{nsn[:-k]}{tail}")
    assume(phonenumbers.is_valid_number(number))
    assume(phonenumbers.number_type(number) not in (PhoneNumberType.PREMIUM_RATE, PhoneNumberType.SHARED_COST))
    assume(phonenumbers.region_code_for_number(number) == region)
    return region, number


def typed_forms(number: phonenumbers.PhoneNumber) -> dict[str, tuple[str, bool]]:
    """How people and systems write one number: form name -> (text, needs the number's own region)."""
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    forms = {
        "E164": (e164, False),
        "INTERNATIONAL": (phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL), False),
        "RFC3966": (phonenumbers.format_number(number, PhoneNumberFormat.RFC3966).removeprefix("tel:"), False),
        "00": ("00" + e164[1:], False),
        "NATIONAL": (national, True),
        "NATIONAL (no-break spaces, dots)": (national.replace(" ", "\u00a0").replace("-", "."), True),
    }
    if number.country_code == 1:
        forms["NATIONAL with trunk 1"] = ("1 " + national, True)
    return forms


@deterministic(300)
@given(valid_number(), st.sampled_from(REGIONS))
def test_every_written_form_of_a_number_gives_one_key(drawn: tuple[str, phonenumbers.PhoneNumber],
                                                      elsewhere: str) -> None:
    region, number = drawn
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    results: dict[str, str] = {}
    for name, (text, national) in typed_forms(number).items():
        for where in (region,) if national else (region, elsewhere):
            try:
                results[f"{name} {text!r} in {where}"] = phone.normalize(text, where)
            except phone.PhoneError as exc:
                raise AssertionError(f"{name} form {text!r} of {e164} refused in {where}: {exc.reason}") from None
    results["msisdn"] = phone.from_msisdn(phone.msisdn(e164), elsewhere)
    assert set(results.values()) == {e164}, results
    assert len({KEYS.phone_key(v) for v in results.values()}) == 1
    assert phone.normalize(e164, elsewhere) == e164  # idempotent on valid numbers


def digits_of(text: str) -> str:
    return "".join(ch for ch in text if ch in "0123456789")


@deterministic(800)
@given(st.one_of(st.text(phone_chars, max_size=44), st.text(any_char, max_size=50),
                 valid_number().flatmap(lambda rn: st.sampled_from([t for t, _ in typed_forms(rn[1]).values()]))),
       st.sampled_from(REGIONS))
def test_normalize_is_idempotent_and_raises_only_phone_error(text: str, region: str) -> None:
    try:
        e164 = phone.normalize(text, region)
    except phone.PhoneError:
        return
    assert E164.match(e164), e164
    assert not any(ch.isalpha() for ch in text)
    for where in REGIONS:
        assert phone.normalize(e164, where) == e164
    assert phone.from_msisdn(phone.msisdn(e164), region) == e164
    # Never a number nobody typed: its national digits are the typed digits' last ones.
    national = phonenumbers.national_significant_number(phonenumbers.parse(e164))
    assert digits_of(text).endswith(national), (text, e164)


@st.composite
def with_a_letter(draw: st.DrawFn) -> str:
    _, number = draw(valid_number())
    text = draw(st.sampled_from([t for t, _ in typed_forms(number).values()]))
    letter = draw(st.characters(categories=["Lu", "Ll", "Lt", "Lm", "Lo"]))
    i = draw(st.integers(0, len(text)))
    return text[:i] + letter + text[i:]


@deterministic(300)
@given(st.one_of(with_a_letter(), st.text(any_char, max_size=44).filter(lambda t: any(c.isalpha() for c in t))),
       st.sampled_from(REGIONS))
def test_text_with_letters_is_never_a_number(text: str, region: str) -> None:
    try:
        number = phone.normalize(text, region)
    except phone.PhoneError:
        return
    raise AssertionError(f"{text!r} became {number}")


# --- 4. HTTP fuzz over every route ------------------------------------------------------------------------------------

SIGNATURE_SECRET = "signature-secret-of-the-account-0123456789"
METHODS = ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"]
FIELDS = ["username", "pin", "csrf_token", "from", "text", "number", "after", "msisdn", "to", "messageId", "type",
          "keyword", "message-timestamp", "timestamp", "nonce", "sig", "concat", "concat-ref", "concat-total",
          "concat-part", "message_uuid", "channel", "message_type", "status", "err-code", "client-ref", "client_ref",
          "error", "api-key", "price", "network-code", "scts"]
ODD_VALUES = ["", " ", "0", "-1", "1", "2", "21", "²", "١٢٣", "٣", "９", "1e400", "nan", "inf", "99999999999999999999",
              "9" * 5000, "14155550100", "+14155550100", "14155550199", "447700900123", "text", "unicode", "binary",
              "sms", "whatsapp", "image", "delivered", "failed", "rejected", "HELP", "STOP", "START", "LIST", "LIST ²",
              "LIST 1", "INVITE +14155550123 bob", "REVOKE alice", "JOIN ABCDEF", "\x00", "null", "[]", "{}",
              '{"title": 1}', '"x"', "\u202e", "<script>", "../../etc/passwd", "a" * 300]
CONTENT_TYPES = ["application/json", "application/json; charset=latin-1", "application/json; charset=bogus",
                 "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-16",
                 "application/x-www-form-urlencoded; charset=bogus", "multipart/form-data",
                 "multipart/form-data; boundary=xyz", "multipart/mixed; boundary=xyz", "text/plain", "text/html",
                 "application/xml", "application/octet-stream", "*/*", "", ";", "application/json;;;", "x/y; a=\"b"]
RAW_BODIES = [b"", b"{", b"[1,2]", b'"x"', b"null", b"a=1&b", b"text=%FF", b"\xff\xfe", b"%zz=%",
              b"--xyz\r\n\r\n--xyz--", b"--xyz\r\nContent-Disposition: form-data\r\n\r\nv\r\n--xyz--\r\n",
              b"--xyz\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nHELP\r\n--xyz--\r\n"]
SESSION_COOKIES = ["smsbot_session", "__Host-smsbot_session", "smsbot_csrf", "__Host-smsbot_csrf"]

printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
field_value = st.one_of(st.sampled_from(ODD_VALUES), st.text(max_size=30), st.integers().map(str),
                        st.text(st.sampled_from("0123456789+"), max_size=22))
# Field names become multipart headers: aiohttp's client only writes printable ASCII ones there.
field_name = st.one_of(st.sampled_from(FIELDS), printable.map(lambda t: t[:10]))
random_fields = st.dictionaries(field_name, field_value, max_size=8)
# Shaped like an SMS API inbound webhook (plus a few other fields), so that requests get past the first checks.
webhook_fields = st.builds(
    lambda base, extra, text: {**base, **extra, **({"text": text} if text is not None else {})},
    st.fixed_dictionaries({"msisdn": st.sampled_from([ADMIN[1:], "14155550134", "447700900123", "1", "+", ""]),
                           "messageId": st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=16),
                           "to": st.just(BASE_ENV["SMSBOT_NUMBER"])}),
    st.dictionaries(st.sampled_from(FIELDS), field_value, max_size=4),
    st.one_of(st.none(), engine_texts(surrogates=False, huge=False)))
fields = st.one_of(random_fields, webhook_fields)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(any_char, max_size=20),
                        st.sampled_from(ODD_VALUES))
any_json = st.recursive(json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(any_char, max_size=8)),
                                                 inner, max_size=5)), max_leaves=12)
webhook_json = st.builds(lambda f, text: {**f, "text": text}, webhook_fields, engine_texts(surrogates=True, huge=False))
json_body = st.one_of(any_json, st.dictionaries(st.sampled_from(FIELDS), any_json, max_size=8), fields, webhook_json)
cookie_header = st.lists(st.tuples(st.one_of(st.sampled_from(SESSION_COOKIES), printable),
                                   st.one_of(printable, st.text(st.sampled_from("AZaz09-_=.;\"\\ ,"), max_size=300))),
                         max_size=4).map(lambda pairs: "; ".join(f"{k}={v}" for k, v in pairs))
junk_jwt = st.one_of(printable, st.lists(st.text(st.sampled_from("ABCDEFabcdef0123456789-_="), max_size=40),
                                         min_size=3, max_size=3).map(".".join))
any_headers = st.fixed_dictionaries({}, optional={
    "Origin": st.one_of(st.sampled_from(["https://group.example.org", "null", "https://evil.example",
                                         "http://127.0.0.1", ""]), printable),
    "Sec-Fetch-Site": st.one_of(st.sampled_from(["same-origin", "none", "same-site", "cross-site"]), printable),
    "Authorization": st.one_of(junk_jwt.map(lambda t: "Bearer " + t), printable),
    "X-Forwarded-For": st.one_of(st.sampled_from(["1.2.3.4", "::1, 10.0.0.1", "unknown", "999.1.1.1"]), printable),
    "User-Agent": st.one_of(printable, st.just("x" * 3000)),
    "Cookie": cookie_header,
    "Accept": printable,
})
# Mostly requests the cross-site guard lets through (else nearly every POST would stop at a 403).
headers: st.SearchStrategy[dict[str, str]] = st.one_of(st.just({}), st.fixed_dictionaries({}, optional={
    "Sec-Fetch-Site": st.sampled_from(["same-origin", "none"]), "Cookie": cookie_header,
    "Authorization": junk_jwt.map(lambda t: "Bearer " + t), "X-Forwarded-For": printable}), any_headers)


@dataclass
class Body:
    kind: str  # none, form, multipart, json, raw
    fields: dict[str, str] = field(default_factory=dict)
    data: Any = None
    raw: bytes = b""
    content_type: str | None = None
    file: bytes | None = None


raw_body = st.builds(Body, st.just("raw"), raw=st.one_of(st.binary(max_size=200), st.sampled_from(RAW_BODIES)),
                     content_type=st.one_of(st.none(), st.sampled_from(CONTENT_TYPES), printable))
json_as_json = st.builds(Body, st.just("json"), data=json_body,
                         content_type=st.sampled_from(["application/json", "application/json; charset=utf-8"]))
bodies = st.one_of(
    st.just(Body("none")),
    st.builds(Body, st.just("form"), fields),
    st.builds(Body, st.just("multipart"), fields, file=st.one_of(st.none(), st.binary(max_size=50))),
    st.builds(Body, st.just("multipart"), fields, file=st.binary(max_size=50)),  # a file part: really multipart
    json_as_json, json_as_json, raw_body, raw_body,
)


FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data; boundary=xyz"
# Bodies every route gets, with each of its methods, before the random ones: the classic ways to break a parser.
CATALOGUE = [
    Body("none"),
    Body("raw", raw=b"", content_type="application/json"),
    Body("raw", raw=b"{", content_type="application/json"),
    Body("raw", raw=b"\xff", content_type="application/json"),
    Body("raw", raw=b"{}", content_type="application/json; charset=bogus"),
    Body("json", data=None), Body("json", data=[]), Body("json", data="x"), Body("json", data=1), Body("json", data={}),
    Body("json", data={"from": ADMIN, "text": "HELP", "msisdn": ADMIN[1:], "messageId": "sweep-1"}),
    Body("json", data={"from": ADMIN, "text": "\ud800", "msisdn": ADMIN[1:], "messageId": "sweep-2"}),
    Body("json", data={"message_uuid": "u-1", "from": ADMIN[1:], "text": "HELP", "channel": "sms"}),
    Body("json", data={"message_uuid": "u-2", "status": "rejected", "error": '{"title": ["x"]}'}),
    Body("raw", raw=b"a=1", content_type=FORM + "; charset=bogus"),
    Body("raw", raw=b"a=%ff&text=%zz&b", content_type=FORM),
    Body("raw", raw=b"msisdn=14155550100&messageId=sweep-3&text=HELP", content_type=None),
    Body("raw", raw=b"--xyz--\r\n", content_type="multipart/form-data"),
    Body("raw", raw=b"garbage", content_type=MULTIPART),
    Body("raw", raw=b"--xyz\r\nContent-Disposition: form-data\r\n\r\nv\r\n--xyz--\r\n", content_type=MULTIPART),
    Body("raw", raw=b"--xyz\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nHELP\r\n--xyz--\r\n",
         content_type=MULTIPART),
    Body("multipart", {"text": "HELP", "msisdn": ADMIN[1:], "messageId": "sweep-4"}, file=b"x"),
    Body("raw", raw=b"\xff\xfe", content_type="text/plain"),
    Body("raw", raw=b"x" * 300_000, content_type=FORM),  # over client_max_size
]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Body
    signing: str  # none; junk (a wrong sig); sms or jwt (signed with the account's signature secret)


@dataclass(frozen=True)
class Route:
    path: str  # "{file}" stands for anything under a static prefix
    methods: tuple[str, ...]


def routes_of(app: web.Application) -> list[Route]:
    """Every resource in the router, so a route added later is fuzzed without touching this file."""
    found = []
    for resource in app.router.resources():
        info = resource.get_info()
        methods = tuple(sorted({route.method for route in resource} - {"*"})) or tuple(METHODS)
        if "path" in info:
            found.append(Route(info["path"], methods))
        elif "formatter" in info:
            found.append(Route(re.sub(r"\{[^}]*\}", "{file}", info["formatter"]), methods))
        elif "prefix" in info:
            found.append(Route(info["prefix"].rstrip("/") + "/{file}", ("GET", "HEAD")))
        else:
            raise AssertionError(f"a kind of route this fuzz does not know: {resource!r} {info!r}")
    return found + [Route("/no-such-page", ("GET",))]


path_segment = st.one_of(st.sampled_from(["style.css", "dev_phone.js", "..%2f..%2fetc%2fpasswd", "%00", "x" * 300,
                                          ".", "..", "", "%ff", "a/../../b"]),
                         st.text(st.characters(min_codepoint=0x21, exclude_categories=["Cs"]), max_size=12))


def requests(route: Route, signed: bool) -> st.SearchStrategy[Request]:
    path = path_segment.map(lambda seg: route.path.replace("{file}", seg)) if "{file}" in route.path \
        else st.sampled_from([route.path, route.path, route.path + "/", route.path + "//x"])
    method = st.one_of(st.sampled_from(route.methods), st.sampled_from(route.methods), st.sampled_from(METHODS))
    return st.builds(Request, method, path, fields, headers, bodies,
                     st.sampled_from(["none", "junk", "sms", "jwt"] if signed else ["none"]))


class ServerErrors(logging.Handler):
    """What the server logged as the cause of a 5xx (aiohttp logs the handler's exception), to name it in reports."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            # Multipart boundaries are random: one cause, one line.
            self.last = re.sub(r"[0-9a-f]{32}", "<random>", f"{type(exc).__name__}: {str(exc)[:120]}")


class LiveApp:
    """The whole app behind an aiohttp test server on its own loop; one per test, reused across its examples
    (faster than one per example; each example is one request, so failures still shrink to one request)."""

    def __init__(self, signed: bool):
        env = {"VONAGE_SIGNATURE_SECRET": SIGNATURE_SECRET} if signed else {}
        self._dir = tempfile.TemporaryDirectory(dir=FAST_TMP, prefix="smsbot-props-")
        self.settings: Settings = load({**BASE_ENV, "SMSBOT_DB": str(pathlib.Path(self._dir.name) / "smsbot.db"),
                                        **env}, dev=True)
        self.clock = FakeClock()
        self.loop = asyncio.new_event_loop()
        self.app = create_app(self.settings, gateway=FakeGateway(self.settings.number), clock=self.clock,
                              run_worker=False)
        self.client: TestClient[Any, Any] = self.loop.run_until_complete(self._start())
        # The server's tracebacks go to ServerErrors only: the report names each cause, and thousands of captured
        # log lines would bury it.
        self.errors = ServerErrors()
        server_log = logging.getLogger("aiohttp.server")
        self._propagate, server_log.propagate = server_log.propagate, False
        server_log.addHandler(self.errors)

    async def _start(self) -> TestClient[Any, Any]:
        client = TestClient(TestServer(self.app), timeout=aiohttp.ClientTimeout(total=30))
        await client.start_server()
        return client

    def close(self) -> None:
        server_log = logging.getLogger("aiohttp.server")
        server_log.removeHandler(self.errors)
        server_log.propagate = self._propagate
        try:
            self.loop.run_until_complete(self.client.close())
        finally:
            self.loop.close()
            self._dir.cleanup()

    def sign(self, req: Request, params: dict[str, str], body: bytes) -> tuple[dict[str, str], dict[str, str]]:
        """Sign as Vonage would ("sms": `sig`, "jwt": Messages API token), or add a wrong `sig` ("junk"). A
        `timestamp` the example drew is kept, so odd ones reach the freshness check."""
        if req.signing in ("sms", "junk"):
            stamped = {"timestamp": str(int(self.clock.now())), **params}
            try:
                sig = sms_signature(stamped, SIGNATURE_SECRET, self.settings.vonage_signature_method)
            except UnicodeEncodeError:  # a lone surrogate: nobody can sign that, not even Vonage
                sig = "0" * 64
            return {**stamped, "sig": sig if req.signing == "sms" else "0" * 64}, {}
        if req.signing == "jwt":
            claims = {"iat": int(self.clock.now()), "payload_hash": hashlib.sha256(body).hexdigest()}
            return params, {"Authorization": "Bearer " + jwt.encode(claims, SIGNATURE_SECRET, algorithm="HS256")}
        return params, {}

    def send(self, req: Request) -> tuple[int, str]:
        """(status, body text); for a 5xx, the text is the exception the server logged. The clock moves on just
        enough that the per-client login limit (all requests come from 127.0.0.1) never answers 429 instead."""
        self.clock.advance(60.0 / self.settings.login_failures_per_minute + 0.1)
        self.errors.last = ""
        status, text = self.loop.run_until_complete(self._send(req))
        return status, (self.errors.last or text) if status >= 500 else text

    async def _send(self, req: Request) -> tuple[int, str]:
        body = req.body
        query = dict(req.query)
        extra: dict[str, str] = {}
        kwargs: dict[str, Any] = {}
        hdrs = dict(req.headers)
        if body.kind == "form":
            form_fields, extra = self.sign(req, body.fields, b"")
            kwargs["data"] = form_fields
        elif body.kind == "multipart":
            form_fields, extra = self.sign(req, body.fields, b"")
            form = aiohttp.FormData()
            for k, v in form_fields.items():
                form.add_field(k, v)
            if body.file is not None:
                form.add_field("upload", body.file, filename="f.bin", content_type="application/octet-stream")
            kwargs["data"] = form
        elif body.kind == "json":
            data = body.data
            if isinstance(data, dict) and req.signing in ("sms", "junk") and all(isinstance(v, str)
                                                                                 for v in data.values()):
                data, _ = self.sign(req, data, b"")
            raw = json.dumps(data).encode()
            if req.signing == "jwt":
                _, extra = self.sign(req, {}, raw)
            kwargs["data"] = raw
            hdrs["Content-Type"] = body.content_type or "application/json"
        elif body.kind == "raw":
            kwargs["data"] = body.raw
            if body.content_type is None:
                kwargs["skip_auto_headers"] = ["Content-Type"]
            else:
                hdrs["Content-Type"] = body.content_type
            if req.signing == "jwt":
                _, extra = self.sign(req, {}, body.raw)
        else:
            query, extra = self.sign(req, query, b"")
        hdrs.update(extra)
        self.client.session.cookie_jar.clear()
        try:
            async with self.client.request(req.method, req.path, params=query, headers=hdrs, allow_redirects=False,
                                           **kwargs) as response:
                return response.status, await response.text(errors="replace")
        except aiohttp.ClientResponseError as exc:
            # The server's HTTP parser refused the request (e.g. a request line over 8190 bytes) and answered 400
            # with a body, which the client cannot read after a HEAD: the status is still the server's answer.
            return exc.status, exc.message


def describe(req: Request) -> str:
    b = req.body
    what = {"none": "no body", "form": f"form {b.fields!r}", "multipart": f"multipart {b.fields!r} file={b.file!r}",
            "json": f"JSON {json.dumps(b.data)}", "raw": f"{b.raw[:60]!r} as {b.content_type!r}"}[b.kind]
    return f"{req.method} {req.path} {what}" + (f" signed {req.signing}" if req.signing != "none" else "")


def explain(exc: BaseException) -> str:
    """An exception with Hypothesis's notes (the minimal failing example), group members one by one."""
    if isinstance(exc, BaseExceptionGroup):
        return "\n".join(explain(e) for e in exc.exceptions)
    notes = "\n".join(line for line in getattr(exc, "__notes__", []) if line.startswith(("  minimal:", "    ")))
    return f"{exc}\n{notes}"


def fuzz_every_route(signed: bool, body_routes: int, other_routes: int, only: str = "/") -> None:
    """Each route under `only` gets the CATALOGUE with each of its methods, then Hypothesis's requests
    (`body_routes` examples for routes taking a body, `other_routes` for the rest). Every 5xx is collected (for
    Hypothesis, the minimal failing request of each route) and the test fails once, listing them all by cause."""
    live = LiveApp(signed)
    found: dict[str, list[str]] = {}  # "path: cause" -> requests
    try:
        routes = routes_of(live.app)
        assert any(r.path.startswith("/dev/phone") for r in routes), "dev mode: the dev phone routes are fuzzed too"
        for route in (r for r in routes if r.path.startswith(only)):
            path = route.path.replace("{file}", "style.css")
            for method in route.methods:
                for body in CATALOGUE:
                    for signing in ["none", "junk", "sms", "jwt"] if signed else ["none"]:
                        req = Request(method, path, {}, {}, body, signing)
                        status, text = live.send(req)
                        if status >= 500:
                            found.setdefault(f"{path}: {status} {text}", []).append(describe(req))
            takes_body = bool({"POST", "PUT", "PATCH", "DELETE"} & set(route.methods))

            @deterministic(body_routes if takes_body else other_routes)
            @given(requests(route, signed))
            def check(req: Request) -> None:
                status, text = live.send(req)
                note(f"  minimal: {describe(req)}")
                target(float(status), label="status")  # steer towards the highest status: a 5xx
                assert status < 500, f"{route.path}: {status} {text}"

            try:
                check()
            except Exception as exc:  # reported below with Hypothesis's minimal example
                found.setdefault(f"{route.path}: found by Hypothesis", []).append(explain(exc))
    finally:
        live.close()
    report = "\n".join(f"{cause}\n" + "\n".join(f"    {r}" for r in reqs[:4]) +
                       (f"\n    ... and {len(reqs) - 4} more" if len(reqs) > 4 else "")
                       for cause, reqs in found.items())
    assert not found, f"5xx answers ({sum(map(len, found.values()))} requests, {len(found)} causes):\n{report}"


@pytest.mark.slow  # Hypothesis, run inside
def test_no_request_to_any_route_gets_a_5xx() -> None:
    fuzz_every_route(signed=False, body_routes=40, other_routes=12)


@pytest.mark.slow  # Hypothesis, run inside
def test_no_request_to_a_webhook_gets_a_5xx_with_signing_on() -> None:
    """Signing changes only the webhooks: with VONAGE_SIGNATURE_SECRET set they are fuzzed again, a third of the
    requests signed correctly (SMS API `sig` or Messages API JWT) so that they get past the signature check."""
    fuzz_every_route(signed=True, body_routes=60, other_routes=12, only="/webhooks/")
