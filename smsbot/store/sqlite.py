"""The SQLite store: numbered migrations, one writer, every unit of work one `BEGIN IMMEDIATE` transaction.

Its schema is here; the statements are shared with PostgreSQL in `sql`, and what each method means is declared once,
in the protocols of `base`.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiosqlite

from .base import SessionsChanged, T, Tx, Watchers
from .sql import Row, SqlTx

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


class SqliteTx(SqlTx):
    """One open SQLite transaction."""

    def __init__(self, db: aiosqlite.Connection, sessions_changed: SessionsChanged, queued: Callable[[], None]):
        self._db = db
        self._changed = sessions_changed
        self._on_queue = queued

    async def _one(self, sql: str, *args: Any) -> Row | None:
        async with self._db.execute(sql, args) as cur:
            row: Row | None = await cur.fetchone()
            return row

    async def _all(self, sql: str, *args: Any) -> list[Row]:
        async with self._db.execute(sql, args) as cur:
            return list(await cur.fetchall())

    async def _run(self, sql: str, *args: Any) -> int:
        async with self._db.execute(sql, args) as cur:
            return cur.rowcount

    async def _many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        await self._db.executemany(sql, rows)

    def _sessions_changed(self, member_id: int) -> None:
        self._changed(member_id)

    def _queued(self) -> None:
        self._on_queue()


class SqliteStore(Watchers):
    """The one writer for the database file: one instance of smsbot at a time."""

    shared = False

    def __init__(self, path: pathlib.Path | str):
        super().__init__()
        self.path = pathlib.Path(path)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

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
            queued: list[bool] = []
            await db.execute("BEGIN IMMEDIATE")
            try:
                result = await work(SqliteTx(db, self._sessions_changed, lambda: queued.append(True)))
                await db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    await db.execute("ROLLBACK")
                raise
        if queued:
            self._texts_queued()
        return result

    async def claim_sender(self) -> bool:
        return True  # one instance: it sends

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
