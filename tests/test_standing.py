"""A number's standing (its member, invite, opt-out, command waiting for YES and replies against an admin's cap) is one
statement, and says exactly what the five reads it stands in for say, on both backends; the engine reads it once for
every text instead of asking five times."""

from __future__ import annotations

import re

import pytest

from smsbot import phone
from smsbot.messages import InboundText
from smsbot.store import Counted, SqliteStore, Stage, Tx
from smsbot.store.base import Standing

from support.constants import ADMIN
from support.service import Wired

NOW = 1_800_000_000.0
HOUR_AGO = NOW - 3600
# phone key: (the member's username, the invite's stage, opted out, a command waiting for YES), as `arrange` leaves
# them
EXPECTED: dict[str, tuple[str | None, Stage | None, bool, bool]] = {
    "key-stranger": (None, None, False, False),
    "key-member": ("Alice", None, False, True),
    "key-invitee": (None, Stage.AWAITING_USERNAME, False, False),
    "key-opted-out": (None, None, True, False),
    "key-member-opted-out": ("Carol", None, True, False),
    "key-invitee-opted-out": (None, Stage.AWAITING_CODE, True, False),
    "key-admin-waiting": (None, None, False, True),
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
    for admin_key in ("key-member", "key-admin-waiting"):
        await tx.put_confirmation(admin_key=admin_key, command="REVOKE", argument="bob", code_hash="hash-y", now=NOW,
                                  expires_at=NOW + 300)
    # Replies against an admin's cap: two in the hour (one exactly at its start), one before it; and a count of
    # another kind, which is not one of them.
    for at in (HOUR_AGO - 1, HOUR_AGO, NOW):
        await tx.note("key-admin-waiting", Counted.ADMIN_REPLY, at)
    await tx.note("key-admin-waiting", Counted.REPLY, NOW)
    await tx.note("key-member", Counted.ADMIN_REPLY, NOW)


@pytest.mark.backends
async def test_standing_says_what_the_five_reads_say(wired: Wired) -> None:
    await wired.store.run(arrange)

    async def compare(tx: Tx) -> None:
        for key, (username, stage, opted_out, awaiting_yes) in EXPECTED.items():
            member, invite = await tx.member_by_phone(key), await tx.invite_by_phone(key)
            waiting = await tx.confirmation_of(key) is not None
            assert (member and member.username, invite and invite.stage, await tx.is_opted_out(key), waiting) == (
                username, stage, opted_out, awaiting_yes), f"{key}: the arrangement is not what the test expects"
            replies = await tx.count_since(key, Counted.ADMIN_REPLY, HOUR_AGO)
            assert await tx.standing(key, HOUR_AGO) == Standing(member, invite, opted_out, waiting, replies), key
        assert (await tx.standing("key-admin-waiting", HOUR_AGO)).admin_replies == 2
        assert (await tx.standing("key-admin-waiting", NOW + 1)).admin_replies == 0
        assert (await tx.standing("key-admin-waiting", None)).admin_replies == 0, "not counted for other numbers"

    await wired.store.run(compare)


@pytest.mark.backends
async def test_arrival_records_the_message_id_and_reads_the_standing_once(wired: Wired) -> None:
    """`arrive` is `record_inbound` then `standing`, whichever way the backend makes it: the standing for a new
    message id, None for one seen before."""
    await wired.store.run(arrange)

    async def compare(tx: Tx) -> None:
        for n, key in enumerate(EXPECTED):
            assert await tx.arrive(f"id-{n}", NOW, key, HOUR_AGO) == await tx.standing(key, HOUR_AGO), key
            assert await tx.arrive(f"id-{n}", NOW, key, HOUR_AGO) is None, key

    await wired.store.run(compare)
    assert not await wired.store.run(lambda tx: tx.record_inbound("id-0", NOW)), "arrive recorded the id"
    assert await wired.store.run(lambda tx: tx.record_inbound("id-new", NOW))


async def test_a_locked_member_and_an_invitee_read_whole(wired: Wired) -> None:
    """Every column comes back under its own field: none swapped, none left out."""
    await wired.store.run(arrange)
    alice = (await wired.store.run(lambda tx: tx.standing("key-member", HOUR_AGO))).member
    assert alice is not None
    assert (alice.username, alice.phone_key, alice.phone_hint, alice.created_at, alice.failed_logins,
            alice.locked_at) == ("Alice", "key-member", "**01", NOW, 1, NOW + 1)
    dave = (await wired.store.run(lambda tx: tx.standing("key-invitee-opted-out", HOUR_AGO))).invite
    assert dave is not None
    assert (dave.phone_key, dave.phone_hint, dave.code_hash, dave.username, dave.stage, dave.tries, dave.invited_by,
            dave.created_at, dave.expires_at, dave.invited_by_key) == (
        "key-invitee-opted-out", "**04", "hash-4", "dave", Stage.AWAITING_CODE, 0, "**00", NOW, NOW + 60, "key-admin")


SENDER_TABLES = re.compile(r"\b(members|invites|opt_outs|confirmations)\b")


@pytest.mark.parametrize(("sender", "text"), [("+12025550150", "hello"), ("+12025550150", "HELP"), (ADMIN, "HELP")])
async def test_a_text_reads_its_senders_standing_in_one_statement(wired: Wired, sender: str, text: str) -> None:
    """A stranger's text and an admin's alike: the admin's command waiting for YES comes in the same statement."""
    store = wired.store
    assert isinstance(store, SqliteStore)
    statements: list[str] = []
    store._require().set_trace_callback(statements.append)
    out = await wired.pipeline.receive(InboundText("msg-1", phone.normalize(sender, "US"), text))
    assert out is not None and len(out) == (text == "HELP"), "the text was handled: silence, or HELP's reply"
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT") and SENDER_TABLES.search(s)]
    assert len(reads) == 1, reads
    assert set(SENDER_TABLES.findall(reads[0])) == {"members", "invites", "opt_outs", "confirmations"}
