"""The SQLite store: numbered migrations, one writer, every unit of work one `BEGIN IMMEDIATE` transaction.

All of SQLite's SQL lives here; what each method means is declared once, in the protocols of `base`.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiosqlite

from ..commands import is_number
from ..messages import Kind
from .base import (
    UNDELIVERED,
    Confirmation,
    Event,
    Invite,
    Member,
    OutboxRow,
    Pin,
    Session,
    SessionsChanged,
    T,
    Tx,
    username_key,
)

log = logging.getLogger(__name__)

# Append-only: never edit a released migration, add a new one.
MIGRATIONS: list[tuple[str, str]] = [
    (
        "members, invites, PINs, sessions, opt-outs, inbound dedupe, outbox and audit events",
        """
        CREATE TABLE members (
            id INTEGER PRIMARY KEY,
            username TEXT NOT NULL,
            username_key TEXT NOT NULL UNIQUE,
            phone_key TEXT NOT NULL UNIQUE,
            phone_hint TEXT NOT NULL,
            created_at REAL NOT NULL,
            failed_logins INTEGER NOT NULL DEFAULT 0,
            locked_at REAL
        );
        CREATE TABLE invites (
            id INTEGER PRIMARY KEY,
            phone_key TEXT NOT NULL UNIQUE,
            phone_hint TEXT NOT NULL,
            code_hash TEXT NOT NULL,
            username TEXT,
            stage TEXT NOT NULL CHECK (stage IN ('awaiting_code', 'awaiting_username')),
            tries INTEGER NOT NULL DEFAULT 0,
            invited_by TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
        );
        CREATE TABLE pins (
            member_id INTEGER PRIMARY KEY REFERENCES members(id) ON DELETE CASCADE,
            pin_hash TEXT,
            request_id TEXT,
            tries INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
        );
        CREATE TABLE sessions (
            id INTEGER PRIMARY KEY,
            token_hash TEXT NOT NULL UNIQUE,
            member_id INTEGER NOT NULL REFERENCES members(id) ON DELETE CASCADE,
            created_at REAL NOT NULL,
            last_seen_at REAL NOT NULL,
            user_agent TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX sessions_member ON sessions(member_id);
        CREATE TABLE opt_outs (
            phone_key TEXT PRIMARY KEY,
            created_at REAL NOT NULL
        );
        CREATE TABLE inbound (
            message_id TEXT PRIMARY KEY,
            received_at REAL NOT NULL
        );
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            phone_key TEXT NOT NULL,
            phone_hint TEXT NOT NULL,
            to_number TEXT,
            body TEXT,
            kind TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'suppressed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            next_attempt_at REAL NOT NULL,
            lease_until REAL,
            done_at REAL,
            provider_id TEXT,
            error TEXT
        );
        CREATE INDEX outbox_due ON outbox(state, next_attempt_at);
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT ''
        );
        """,
    ),
    (
        "multipart inbound texts waiting for their other parts; delivery receipts on outbound texts",
        """
        CREATE TABLE inbound_parts (
            phone_key TEXT NOT NULL,
            ref TEXT NOT NULL,
            total INTEGER NOT NULL,
            part INTEGER NOT NULL,
            text TEXT NOT NULL,
            received_at REAL NOT NULL,
            PRIMARY KEY (phone_key, ref, part)
        );
        ALTER TABLE outbox ADD COLUMN delivery_status TEXT;
        ALTER TABLE outbox ADD COLUMN delivery_error TEXT;
        ALTER TABLE outbox ADD COLUMN delivered_at REAL;
        CREATE INDEX outbox_recipient ON outbox(phone_key, kind);
        """,
    ),
    (
        "rate counters per number (PIN issuance, replies to strangers) and service-wide statistics",
        """
        CREATE TABLE counters (
            id INTEGER PRIMARY KEY,
            phone_key TEXT NOT NULL,
            action TEXT NOT NULL,
            at REAL NOT NULL
        );
        CREATE INDEX counters_lookup ON counters(phone_key, action, at);
        CREATE TABLE stats (
            name TEXT PRIMARY KEY,
            value INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX outbox_created ON outbox(created_at);
        CREATE INDEX events_action ON events(action, at);
        CREATE INDEX outbox_waiting ON outbox(phone_key, state, id);
        """,
    ),
    (
        "admin commands waiting for YES <code> (one per admin); the inviting admin's key on each invite",
        """
        CREATE TABLE confirmations (
            admin_key TEXT PRIMARY KEY,
            command TEXT NOT NULL,
            argument TEXT NOT NULL,
            code_hash TEXT NOT NULL,
            tries INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
        );
        ALTER TABLE invites ADD COLUMN invited_by_key TEXT;
        """,
    ),
]
class SqliteTx(Tx):
    """One open SQLite transaction."""

    def __init__(self, db: aiosqlite.Connection, sessions_changed: SessionsChanged):
        self._db = db
        self._sessions_changed = sessions_changed

    async def _one(self, sql: str, *args: Any) -> aiosqlite.Row | None:
        async with self._db.execute(sql, args) as cur:
            return await cur.fetchone()

    async def _all(self, sql: str, *args: Any) -> list[aiosqlite.Row]:
        async with self._db.execute(sql, args) as cur:
            return list(await cur.fetchall())

    async def _run(self, sql: str, *args: Any) -> int:
        async with self._db.execute(sql, args) as cur:
            return cur.rowcount

    # inbound dedupe
    async def record_inbound(self, message_id: str, now: float) -> bool:
        return await self._run("INSERT INTO inbound (message_id, received_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                               message_id, now) == 1

    # opt-outs
    async def is_opted_out(self, phone_key: str) -> bool:
        return await self._one("SELECT 1 FROM opt_outs WHERE phone_key = ?", phone_key) is not None

    async def opt_out(self, phone_key: str, now: float) -> bool:
        return await self._run("INSERT INTO opt_outs (phone_key, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                               phone_key, now) == 1

    async def opt_in(self, phone_key: str) -> bool:
        return await self._run("DELETE FROM opt_outs WHERE phone_key = ?", phone_key) > 0

    # members
    async def member_by_phone(self, phone_key: str) -> Member | None:
        row = await self._one("SELECT * FROM members WHERE phone_key = ?", phone_key)
        return _member(row)

    async def member_by_username(self, username: str) -> Member | None:
        row = await self._one("SELECT * FROM members WHERE username_key = ?", username_key(username))
        return _member(row)

    async def member_by_id(self, member_id: int) -> Member | None:
        return _member(await self._one("SELECT * FROM members WHERE id = ?", member_id))

    async def username_taken(self, username: str) -> bool:
        key = username_key(username)
        if await self._one("SELECT 1 FROM members WHERE username_key = ?", key):
            return True
        return await self._one("SELECT 1 FROM invites WHERE lower(username) = lower(?) AND username IS NOT NULL",
                               username) is not None

    async def add_member(self, username: str, phone_key: str, phone_hint: str, now: float) -> Member:
        async with self._db.execute(
            "INSERT INTO members (username, username_key, phone_key, phone_hint, created_at) VALUES (?, ?, ?, ?, ?)",
            (username, username_key(username), phone_key, phone_hint, now),
        ) as cur:
            member_id = cur.lastrowid
        member = await self.member_by_id(int(member_id or 0))
        assert member is not None
        return member

    async def remove_member(self, member_id: int) -> None:
        await self._run("DELETE FROM members WHERE id = ?", member_id)
        self._sessions_changed(member_id)

    async def members(self) -> list[Member]:
        rows = await self._all("SELECT * FROM members ORDER BY username_key")
        return [m for m in map(_member, rows) if m is not None]

    async def record_login_failure(self, member_id: int) -> int:
        await self._run("UPDATE members SET failed_logins = failed_logins + 1 WHERE id = ?", member_id)
        row = await self._one("SELECT failed_logins FROM members WHERE id = ?", member_id)
        return int(row[0]) if row else 0

    async def lock_member(self, member_id: int, now: float) -> None:
        await self._run("UPDATE members SET locked_at = ? WHERE id = ?", now, member_id)
        self._sessions_changed(member_id)

    async def reset_login_failures(self, member_id: int) -> None:
        await self._run("UPDATE members SET failed_logins = 0, locked_at = NULL WHERE id = ?", member_id)

    # invites
    async def invite_by_phone(self, phone_key: str) -> Invite | None:
        return _invite(await self._one("SELECT * FROM invites WHERE phone_key = ?", phone_key))

    async def put_invite(self, *, phone_key: str, phone_hint: str, code_hash: str, username: str | None,
                         invited_by: str, invited_by_key: str, now: float, expires_at: float) -> None:
        await self._run("DELETE FROM invites WHERE phone_key = ?", phone_key)
        await self._run(
            "INSERT INTO invites (phone_key, phone_hint, code_hash, username, stage, invited_by, invited_by_key,"
            " created_at, expires_at) VALUES (?, ?, ?, ?, 'awaiting_code', ?, ?, ?, ?)",
            phone_key, phone_hint, code_hash, username, invited_by, invited_by_key, now, expires_at,
        )

    async def set_invite_stage(self, invite_id: int, stage: str) -> None:
        await self._run("UPDATE invites SET stage = ? WHERE id = ?", stage, invite_id)

    async def count_invite_try(self, invite_id: int) -> int:
        await self._run("UPDATE invites SET tries = tries + 1 WHERE id = ?", invite_id)
        row = await self._one("SELECT tries FROM invites WHERE id = ?", invite_id)
        return int(row[0]) if row else 0

    async def remove_invite(self, invite_id: int) -> None:
        await self._run("DELETE FROM invites WHERE id = ?", invite_id)

    async def invites(self) -> list[Invite]:
        rows = await self._all("SELECT * FROM invites ORDER BY created_at, id")
        return [i for i in map(_invite, rows) if i is not None]

    async def invite_by_username(self, username: str) -> Invite | None:
        return _invite(await self._one(
            "SELECT * FROM invites WHERE lower(username) = lower(?) AND username IS NOT NULL", username))

    # PINs
    async def put_pin(self, member_id: int, *, pin_hash: str | None, request_id: str | None, now: float,
                      expires_at: float) -> None:
        await self._run(
            "INSERT INTO pins (member_id, pin_hash, request_id, tries, created_at, expires_at)"
            " VALUES (?, ?, ?, 0, ?, ?) ON CONFLICT (member_id) DO UPDATE SET pin_hash = excluded.pin_hash,"
            " request_id = excluded.request_id, tries = 0, created_at = excluded.created_at,"
            " expires_at = excluded.expires_at",
            member_id, pin_hash, request_id, now, expires_at,
        )

    async def pin_of(self, member_id: int) -> Pin | None:
        row = await self._one("SELECT * FROM pins WHERE member_id = ?", member_id)
        return None if row is None else Pin(**dict(row))

    async def set_pin_request(self, phone_key: str, request_id: str) -> bool:
        return await self._run(
            "UPDATE pins SET request_id = ? WHERE pin_hash IS NULL"
            " AND member_id = (SELECT id FROM members WHERE phone_key = ?)", request_id, phone_key) > 0

    async def count_pin_try(self, member_id: int) -> int:
        await self._run("UPDATE pins SET tries = tries + 1 WHERE member_id = ?", member_id)
        row = await self._one("SELECT tries FROM pins WHERE member_id = ?", member_id)
        return int(row[0]) if row else 0

    async def remove_pin(self, member_id: int) -> None:
        await self._run("DELETE FROM pins WHERE member_id = ?", member_id)

    # sessions
    async def add_session(self, member_id: int, token_hash: str, now: float, user_agent: str) -> None:
        await self._run(
            "INSERT INTO sessions (token_hash, member_id, created_at, last_seen_at, user_agent) VALUES (?, ?, ?, ?, ?)",
            token_hash, member_id, now, now, user_agent[:200],
        )

    async def session_by_token(self, token_hash: str) -> Session | None:
        row = await self._one(
            "SELECT s.id, s.member_id, m.username, m.phone_key, s.created_at, s.last_seen_at, s.user_agent,"
            " s.token_hash FROM sessions s JOIN members m ON m.id = s.member_id WHERE s.token_hash = ?",
            token_hash,
        )
        return None if row is None else Session(**dict(row))

    async def touch_sessions(self, last_seen: Mapping[int, float]) -> None:
        await self._db.executemany("UPDATE sessions SET last_seen_at = max(last_seen_at, ?) WHERE id = ?",
                                   [(at, session_id) for session_id, at in last_seen.items()])

    async def remove_sessions(self, member_id: int, *, keep: int | None = None) -> int:
        count = await self._run("DELETE FROM sessions WHERE member_id = ? AND id IS NOT ?", member_id, keep)
        if count:
            self._sessions_changed(member_id)
        return count

    async def remove_session_of(self, member_id: int, session_id: int) -> bool:
        if await self._run("DELETE FROM sessions WHERE member_id = ? AND id = ?", member_id, session_id):
            self._sessions_changed(member_id)
            return True
        return False

    async def remove_session(self, session_id: int) -> None:
        row = await self._one("DELETE FROM sessions WHERE id = ? RETURNING member_id", session_id)
        if row is not None:
            self._sessions_changed(int(row[0]))

    async def sessions_of(self, member_id: int) -> list[Session]:
        rows = await self._all(
            "SELECT s.id, s.member_id, m.username, m.phone_key, s.created_at, s.last_seen_at, s.user_agent,"
            " s.token_hash FROM sessions s JOIN members m ON m.id = s.member_id WHERE s.member_id = ?"
            " ORDER BY s.last_seen_at DESC",
            member_id,
        )
        return [Session(**dict(r)) for r in rows]

    # outbox
    async def enqueue(self, *, to_number: str, phone_key: str, phone_hint: str, body: str, kind: Kind,
                      now: float) -> None:
        await self._run(
            "INSERT INTO outbox (phone_key, phone_hint, to_number, body, kind, created_at, next_attempt_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            phone_key, phone_hint, to_number, body, kind.value, now, now,
        )

    async def claim_due(self, now: float, lease_seconds: float, limit: int) -> list[OutboxRow]:
        # Texts to one number go out in the order they were queued: a text waits while an earlier one to the
        # same number is still waiting (so "your PIN comes in the next text" never follows the PIN).
        rows = await self._all(
            "SELECT id, phone_key, phone_hint, to_number, body, kind, attempts, created_at FROM outbox AS o"
            " WHERE ((state = 'pending' AND next_attempt_at <= ?) OR (state = 'sending' AND lease_until <= ?))"
            " AND NOT EXISTS (SELECT 1 FROM outbox AS e WHERE e.phone_key = o.phone_key AND e.id < o.id"
            "                 AND e.state IN ('pending', 'sending'))"
            " ORDER BY id LIMIT ?",
            now, now, limit,
        )
        for row in rows:
            await self._run(
                "UPDATE outbox SET state = 'sending', lease_until = ?, attempts = attempts + 1 WHERE id = ?",
                now + lease_seconds, row["id"],
            )
        return [OutboxRow(**{**dict(r), "kind": Kind(r["kind"]), "attempts": r["attempts"] + 1}) for r in rows]

    async def withdraw_texts(self, phone_key: str, kinds: tuple[Kind, ...]) -> int:
        marks = ", ".join("?" for _ in kinds)
        return await self._run(  # the f-string below adds only "?" placeholders
            "UPDATE outbox SET state = 'suppressed', to_number = NULL, body = NULL, error = 'withdrawn'"  # noqa: S608
            f" WHERE phone_key = ? AND state IN ('pending', 'sending') AND kind IN ({marks})",
            phone_key, *(k.value for k in kinds))

    async def release_claims(self) -> int:
        return await self._run("UPDATE outbox SET state = 'pending', lease_until = NULL WHERE state = 'sending'")

    async def next_due_at(self) -> float | None:
        row = await self._one(
            "SELECT min(CASE state WHEN 'pending' THEN next_attempt_at ELSE lease_until END) FROM outbox"
            " WHERE state IN ('pending', 'sending')"
        )
        return None if row is None or row[0] is None else float(row[0])

    async def finish_outbox(self, outbox_id: int, *, state: str, now: float, provider_id: str | None = None,
                            error: str | None = None) -> None:
        await self._run(
            "UPDATE outbox SET state = ?, done_at = ?, provider_id = ?, error = ?, to_number = NULL, body = NULL,"
            " lease_until = NULL WHERE id = ?",
            state, now, provider_id, error, outbox_id,
        )

    async def retry_outbox(self, outbox_id: int, *, next_attempt_at: float, error: str) -> None:
        await self._run(
            "UPDATE outbox SET state = 'pending', next_attempt_at = ?, lease_until = NULL, error = ? WHERE id = ?",
            next_attempt_at, error, outbox_id,
        )

    # admin commands waiting for YES
    async def put_confirmation(self, *, admin_key: str, command: str, argument: str, code_hash: str, now: float,
                               expires_at: float) -> None:
        await self._run(
            "INSERT INTO confirmations (admin_key, command, argument, code_hash, tries, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, 0, ?, ?) ON CONFLICT (admin_key) DO UPDATE SET command = excluded.command,"
            " argument = excluded.argument, code_hash = excluded.code_hash, tries = 0,"
            " created_at = excluded.created_at, expires_at = excluded.expires_at",
            admin_key, command, argument, code_hash, now, expires_at)

    async def confirmation_of(self, admin_key: str) -> Confirmation | None:
        row = await self._one("SELECT * FROM confirmations WHERE admin_key = ?", admin_key)
        return None if row is None else Confirmation(**dict(row))

    async def count_confirmation_try(self, admin_key: str) -> int:
        row = await self._one("UPDATE confirmations SET tries = tries + 1 WHERE admin_key = ? RETURNING tries",
                              admin_key)
        return int(row[0]) if row else 0

    async def remove_confirmation(self, admin_key: str) -> None:
        await self._run("DELETE FROM confirmations WHERE admin_key = ?", admin_key)

    async def drop_expired_confirmations(self, now: float) -> int:
        return await self._run("DELETE FROM confirmations WHERE expires_at <= ?", now)

    # multipart inbound texts
    async def add_part(self, *, phone_key: str, ref: str, total: int, part: int, text: str, now: float) -> None:
        await self._run(
            "INSERT INTO inbound_parts (phone_key, ref, total, part, text, received_at) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            phone_key, ref, total, part, text, now,
        )

    async def parts(self, phone_key: str, ref: str) -> list[tuple[int, int, str]]:
        rows = await self._all("SELECT part, total, text FROM inbound_parts WHERE phone_key = ? AND ref = ?"
                               " ORDER BY part", phone_key, ref)
        return [(int(r[0]), int(r[1]), str(r[2])) for r in rows]

    async def remove_parts(self, phone_key: str, ref: str) -> None:
        await self._run("DELETE FROM inbound_parts WHERE phone_key = ? AND ref = ?", phone_key, ref)

    async def drop_stale_parts(self, before: float) -> int:
        return await self._run(
            "DELETE FROM inbound_parts WHERE (phone_key, ref) IN"
            " (SELECT phone_key, ref FROM inbound_parts GROUP BY phone_key, ref HAVING min(received_at) < ?)",
            before,
        )

    async def forget_inbound_before(self, before: float) -> int:
        return await self._run("DELETE FROM inbound WHERE received_at < ?", before)

    # delivery receipts
    async def record_delivery(self, *, client_ref: str, provider_id: str, status: str, error: str,
                              now: float) -> tuple[Kind, str] | None:
        row = None
        if client_ref.startswith("smsbot-") and is_number(client_ref[7:]) and len(client_ref) <= 7 + 18:
            row = await self._one("SELECT id, kind, phone_hint, delivery_status FROM outbox WHERE id = ?",
                                  int(client_ref[7:]))
        if row is None and provider_id:
            row = await self._one(
                "SELECT id, kind, phone_hint, delivery_status FROM outbox"
                " WHERE instr(',' || provider_id || ',', ',' || ? || ',') > 0", provider_id)
        if row is None:
            return None
        if row["delivery_status"] not in UNDELIVERED:  # one failed part makes the whole text undelivered
            await self._run("UPDATE outbox SET delivery_status = ?, delivery_error = ?, delivered_at = ? WHERE id = ?",
                            status, error or None, now, row["id"])
        return Kind(row["kind"]), str(row["phone_hint"])

    async def delivery_problem(self, phone_key: str, *kinds: Kind) -> str | None:
        marks = ", ".join("?" for _ in kinds)
        row = await self._one(  # the f-string adds only "?" placeholders
            f"SELECT state, delivery_status FROM outbox WHERE phone_key = ? AND kind IN ({marks})"  # noqa: S608
            " ORDER BY id DESC LIMIT 1", phone_key, *(k.value for k in kinds))
        if row is None:
            return None
        if row["state"] == "failed":
            return "not sent"
        if row["delivery_status"] in UNDELIVERED:
            return "not delivered"
        return None

    # rate counters and limits
    async def count_since(self, phone_key: str, action: str, since: float) -> int:
        row = await self._one("SELECT count(*) FROM counters WHERE phone_key = ? AND action = ? AND at >= ?",
                              phone_key, action, since)
        return int(row[0]) if row else 0

    async def note(self, phone_key: str, action: str, now: float) -> None:
        await self._run("INSERT INTO counters (phone_key, action, at) VALUES (?, ?, ?)", phone_key, action, now)

    async def forget_counts_before(self, before: float) -> int:
        return await self._run("DELETE FROM counters WHERE at < ?", before)

    async def bump_stat(self, name: str) -> None:
        await self._run("INSERT INTO stats (name, value) VALUES (?, 1)"
                        " ON CONFLICT (name) DO UPDATE SET value = value + 1", name)

    async def texts_queued_since(self, since: float) -> int:
        row = await self._one("SELECT count(*) FROM outbox WHERE created_at >= ?", since)
        return int(row[0]) if row else 0

    async def event_since(self, action: str, since: float) -> bool:
        return await self._one("SELECT 1 FROM events WHERE action = ? AND at >= ? LIMIT 1", action, since) is not None

    # audit
    async def record_event(self, now: float, actor: str, action: str, detail: str = "") -> None:
        await self._run("INSERT INTO events (at, actor, action, detail) VALUES (?, ?, ?, ?)", now, actor, action,
                        detail)

    async def events(self, limit: int, offset: int = 0) -> list[Event]:
        rows = await self._all("SELECT at, actor, action, detail FROM events ORDER BY id DESC LIMIT ? OFFSET ?",
                               limit, offset)
        return [Event(**dict(r)) for r in rows]



def _member(row: aiosqlite.Row | None) -> Member | None:
    if row is None:
        return None
    values = dict(row)
    values.pop("username_key", None)
    return Member(**values)


def _invite(row: aiosqlite.Row | None) -> Invite | None:
    return None if row is None else Invite(**dict(row))


class SqliteStore:
    """The one writer for the database file."""

    def __init__(self, path: pathlib.Path | str):
        self.path = pathlib.Path(path)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._session_watchers: list[SessionsChanged] = []

    def watch_sessions(self, listener: SessionsChanged) -> None:
        self._session_watchers.append(listener)

    def _sessions_changed(self, member_id: int) -> None:
        for listener in self._session_watchers:
            listener(member_id)

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.path, isolation_level=None)
        db.row_factory = aiosqlite.Row
        for pragma in ("journal_mode = WAL", "synchronous = FULL", "foreign_keys = ON", "busy_timeout = 5000",
                       "secure_delete = ON"):
            await db.execute(f"PRAGMA {pragma}")
        self._db = db
        await self._migrate()

    async def close(self) -> None:
        if self._db is not None:
            async with self._lock:
                await self._checkpoint()
                await self._db.close()
                self._db = None

    async def _migrate(self) -> None:
        db = self._require()
        async with db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        for number, (description, sql) in enumerate(MIGRATIONS, start=1):
            if number <= version:
                continue
            log.info("applying migration %d: %s", number, description)
            await db.execute("BEGIN IMMEDIATE")
            try:
                for statement in filter(str.strip, sql.split(";")):
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {number}")
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise

    def _require(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def run(self, work: Callable[[Tx], Awaitable[T]]) -> T:
        """Run `work` as one transaction: all of it commits, or none. A cancelled caller cannot split it."""
        return await asyncio.shield(self._run(work))

    async def _run(self, work: Callable[[Tx], Awaitable[T]]) -> T:
        db = self._require()
        async with self._lock:
            await db.execute("BEGIN IMMEDIATE")
            try:
                result = await work(SqliteTx(db, self._sessions_changed))
                await db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    await db.execute("ROLLBACK")
                raise
            return result

    async def scrub(self) -> None:
        """Fold the WAL into the database and truncate it, so wiped numbers leave no copy in -wal."""
        async with self._lock:
            await self._checkpoint()

    async def _checkpoint(self) -> None:
        await self._require().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def healthy(self) -> bool:
        async with self._lock, self._require().execute("SELECT 1") as cur:
            return await cur.fetchone() is not None

    async def schema_version(self) -> int:
        async with self._require().execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0
