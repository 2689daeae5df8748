"""Migrations are numbered and append-only: a database made by migration 1, with data in it, upgrades to the
latest schema at open and keeps every row, readable through the store's own methods."""

from __future__ import annotations

import hashlib
import pathlib
import sqlite3

from smsbot.messages import Kind
from smsbot.store import Counted, SqliteStore, Tx, migrations
from smsbot.store.sqlite import MIGRATIONS

NOW = 1_800_000_000.0


def first_schema_with_data(path: pathlib.Path) -> None:
    """A database as smsbot's first release left it: migration 1 only, one of everything in it."""
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0][1])
    db.executescript(f"""
        INSERT INTO members (id, username, username_key, phone_key, phone_hint, created_at)
            VALUES (1, 'Alice', 'alice', 'key-alice', '**34', {NOW});
        INSERT INTO invites (phone_key, phone_hint, code_hash, username, stage, invited_by, created_at, expires_at)
            VALUES ('key-bob', '**42', 'hash', 'bob', 'awaiting_code', '**00', {NOW}, {NOW + 3600});
        INSERT INTO pins (member_id, pin_hash, tries, created_at, expires_at)
            VALUES (1, 'pinhash', 2, {NOW}, {NOW + 600});
        INSERT INTO sessions (token_hash, member_id, created_at, last_seen_at, user_agent)
            VALUES ('tokenhash', 1, {NOW}, {NOW}, 'Firefox');
        INSERT INTO opt_outs (phone_key, created_at) VALUES ('key-carol', {NOW});
        INSERT INTO inbound (message_id, received_at) VALUES ('0A00000001', {NOW});
        INSERT INTO outbox (phone_key, phone_hint, to_number, body, kind, created_at, next_attempt_at)
            VALUES ('key-bob', '**42', '+12025550142', 'your invite', 'invite', {NOW}, {NOW});
        INSERT INTO events (at, actor, action, detail) VALUES ({NOW}, '**00', 'invite', 'bob (**42)');
        PRAGMA user_version = 1;
    """)
    db.commit()
    db.close()


async def test_a_version_1_database_upgrades_and_keeps_its_data(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "old.db"
    first_schema_with_data(path)
    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.schema_version() == len(MIGRATIONS) > 1

        async def read(tx: Tx) -> None:
            member = await tx.member_by_username("ALICE")
            assert member is not None and member.username == "Alice" and member.locked_at is None
            pin = await tx.pin_of(member.id)
            assert pin is not None and pin.tries == 2 and pin.pin_hash == "pinhash"
            session = await tx.session_by_token("tokenhash")
            assert session is not None and session.username == "Alice" and session.user_agent == "Firefox"
            assert [i.username for i in await tx.invites()] == ["bob"]
            assert await tx.is_opted_out("key-carol")
            assert not await tx.record_inbound("0A00000001", NOW), "the old message id is still remembered"
            assert [e.action for e in await tx.events(limit=10)] == ["invite"]
            rows = await tx.claim_due(now=NOW, lease_seconds=60, limit=10)
            assert [(r.kind, r.to_number, r.body) for r in rows] == [(Kind.INVITE, "+12025550142", "your invite")]

        await store.run(read)

        async def use_what_later_migrations_added(tx: Tx) -> None:
            await tx.add_part(phone_key="key-alice", ref="r1", total=2, part=1, text="hello ", now=NOW)
            assert await tx.parts("key-alice", "r1") == [(1, 2, "hello ")]
            await tx.note("key-alice", Counted.PIN, NOW)
            assert await tx.count_since("key-alice", Counted.PIN, NOW - 1) == 1
            await tx.bump_stat("failed-logins-without-live-pin")
            found = await tx.record_delivery(client_ref="", provider_id="none", status="failed", error="", now=NOW)
            assert found is None
            assert await tx.delivery_problem("key-bob", Kind.INVITE) is None
            await tx.add_signing_key("kid-1", "encrypted pem", "{}", NOW)
            assert [k.kid for k in await tx.signing_keys()] == ["kid-1"]
            session = await tx.session_by_token("tokenhash")
            assert session is not None
            await tx.add_grant(kind="access", value_hash="grant-hash", client_id="wiki", session_id=session.id,
                               redirect_uri="", scope="openid", nonce=None, code_challenge=None, auth_time=NOW,
                               expires_at=NOW + 600)
            grant = await tx.grant("access", "grant-hash")
            assert grant is not None and grant.username == "Alice"
            await tx.remove_session(session.id)  # an OIDC grant ends with the device session that gave it
            assert await tx.grant("access", "grant-hash") is None

        await store.run(use_what_later_migrations_added)
    finally:
        await store.close()
    again = SqliteStore(path)
    await again.open()  # opening an up-to-date database applies nothing
    try:
        assert await again.schema_version() == len(MIGRATIONS)
    finally:
        await again.close()


def test_migrations_are_described() -> None:
    assert all(description and sql.strip() for description, sql in MIGRATIONS)


# sha256 (first 16 hex digits) of each released migration as each backend runs it. A released migration never
# changes, even where its text is generated (the invites CHECK from the Stage enum): a new one is appended instead.
RELEASED = {
    "sqlite": ["1a20f99686d384bb", "9087e8445fdc7229", "f0248ffa28b68a48", "527914d7fec5ba47"],
    "postgres": ["9076d003b1e3200a", "7ffd6ffa0be29d88", "1c4a408afc2fee2f", "508e1316e3829180"],
}


def test_released_migrations_render_unchanged() -> None:
    for backend, types in (("sqlite", migrations.SQLITE), ("postgres", migrations.POSTGRES)):
        rendered = [hashlib.sha256(sql.encode()).hexdigest()[:16] for _, sql in migrations.render(types)]
        assert rendered[:len(RELEASED[backend])] == RELEASED[backend], backend


# The counters' actions as released databases hold them. A Counted value never changes (the rows keep it), so what
# an older release noted is still counted; a new counter is a new member, and once released it is pinned here too.
RELEASED_COUNTERS = {
    "reply": Counted.REPLY,
    "admin-reply": Counted.ADMIN_REPLY,
    "admin-capped": Counted.ADMIN_CAPPED,
    "confirm-asked": Counted.CONFIRM_ASKED,
    "confirm-wrong": Counted.CONFIRM_WRONG,
    "confirm-locked": Counted.CONFIRM_LOCKED,
    "confirm-capped": Counted.CONFIRM_CAPPED,
    "pin": Counted.PIN,
    "pin-cap-day": Counted.PIN_CAP_DAY,
    "pin-cap-hour": Counted.PIN_CAP_HOUR,
    "locked-reply": Counted.LOCKED_REPLY,
    "stranger-help": Counted.STRANGER_HELP,
    "stranger-opt-reply": Counted.STRANGER_OPT_REPLY,
    "signin": Counted.SIGNIN,
}


async def test_counters_a_released_version_noted_are_still_counted(tmp_path: pathlib.Path) -> None:
    assert set(RELEASED_COUNTERS.values()) == set(Counted), "a new counter's value is released with it: pin it here"
    path = tmp_path / "counted.db"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    db = sqlite3.connect(path)
    db.executemany("INSERT INTO counters (phone_key, action, at) VALUES ('key-alice', ?, ?)",
                   [(value, NOW + n) for n, value in enumerate(RELEASED_COUNTERS)])
    db.commit()
    db.close()
    store = SqliteStore(path)
    await store.open()
    try:
        async def count(tx: Tx) -> None:
            for n, (value, counted) in enumerate(RELEASED_COUNTERS.items()):
                assert await tx.count_since("key-alice", counted, NOW) == 1, value
                assert await tx.first_since("key-alice", counted, NOW) == NOW + n, value

        await store.run(count)
    finally:
        await store.close()
