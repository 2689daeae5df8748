"""A number's standing (its member, invite and opt-out) is one statement, and says exactly what the three reads it
stands in for say, on both backends; the engine reads it once for every text instead of asking three times."""

from __future__ import annotations

import re

import pytest

from smsbot import phone
from smsbot.messages import InboundText
from smsbot.store import SqliteStore, Stage, Tx
from smsbot.store.base import Standing

from support.service import Wired

NOW = 1_800_000_000.0
# phone key: (the member's username, the invite's stage, opted out), as `arrange` leaves them
EXPECTED: dict[str, tuple[str | None, Stage | None, bool]] = {
    "key-stranger": (None, None, False),
    "key-member": ("Alice", None, False),
    "key-invitee": (None, Stage.AWAITING_USERNAME, False),
    "key-opted-out": (None, None, True),
    "key-member-opted-out": ("Carol", None, True),
    "key-invitee-opted-out": (None, Stage.AWAITING_CODE, True),
}


async def arrange(tx: Tx) -> None:
    """One number of each kind; the locked member and the invite without a username put NULLs in the row too."""
    alice = await tx.add_member("Alice", "key-member", "**01", NOW)
    await tx.record_login_failure(alice.id)
    await tx.lock_member(alice.id, NOW + 1)
    await tx.add_member("Carol", "key-member-opted-out", "**02", NOW)
    await tx.opt_out("key-member-opted-out", NOW)
    await tx.put_invite(phone_key="key-invitee", phone_hint="**03", code_hash="hash-3", username=None,
                        invited_by="**00", invited_by_key="key-admin", now=NOW, expires_at=NOW + 3600)
    invite = await tx.invite_by_phone("key-invitee")
    assert invite is not None
    await tx.set_invite_stage(invite.id, Stage.AWAITING_USERNAME)
    await tx.put_invite(phone_key="key-invitee-opted-out", phone_hint="**04", code_hash="hash-4", username="dave",
                        invited_by="**00", invited_by_key="key-admin", now=NOW, expires_at=NOW + 60)
    await tx.opt_out("key-invitee-opted-out", NOW)
    await tx.opt_out("key-opted-out", NOW)


@pytest.mark.backends
async def test_standing_says_what_the_three_reads_say(wired: Wired) -> None:
    await wired.store.run(arrange)

    async def compare(tx: Tx) -> None:
        for key, (username, stage, opted_out) in EXPECTED.items():
            member, invite = await tx.member_by_phone(key), await tx.invite_by_phone(key)
            assert (member and member.username, invite and invite.stage, await tx.is_opted_out(key)) == (
                username, stage, opted_out), f"{key}: the arrangement is not what the test expects"
            assert await tx.standing(key) == Standing(member, invite, opted_out), key

    await wired.store.run(compare)


async def test_a_locked_member_and_an_invitee_read_whole(wired: Wired) -> None:
    """Every column comes back under its own field: none swapped, none left out."""
    await wired.store.run(arrange)
    alice = (await wired.store.run(lambda tx: tx.standing("key-member"))).member
    assert alice is not None
    assert (alice.username, alice.phone_key, alice.phone_hint, alice.created_at, alice.failed_logins,
            alice.locked_at) == ("Alice", "key-member", "**01", NOW, 1, NOW + 1)
    dave = (await wired.store.run(lambda tx: tx.standing("key-invitee-opted-out"))).invite
    assert dave is not None
    assert (dave.phone_key, dave.phone_hint, dave.code_hash, dave.username, dave.stage, dave.tries, dave.invited_by,
            dave.created_at, dave.expires_at, dave.invited_by_key) == (
        "key-invitee-opted-out", "**04", "hash-4", "dave", Stage.AWAITING_CODE, 0, "**00", NOW, NOW + 60, "key-admin")


SENDER_TABLES = re.compile(r"\b(members|invites|opt_outs)\b")


@pytest.mark.parametrize("text", ["hello", "HELP"])
async def test_a_strangers_text_reads_its_standing_in_one_statement(wired: Wired, text: str) -> None:
    store = wired.store
    assert isinstance(store, SqliteStore)
    statements: list[str] = []
    store._require().set_trace_callback(statements.append)
    out = await wired.pipeline.receive(InboundText("msg-1", phone.normalize("+12025550150", "US"), text))
    assert out is not None and len(out) == (text == "HELP"), "the text was handled: silence, or HELP's reply"
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT") and SENDER_TABLES.search(s)]
    assert len(reads) == 1, reads
    assert set(SENDER_TABLES.findall(reads[0])) == {"members", "invites", "opt_outs"}
