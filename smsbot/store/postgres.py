"""The PostgreSQL store, for several instances of smsbot on one database (SMSBOT_DB=postgresql://...).

- Migrations carry the same numbers and descriptions as SQLite's; `open()` applies them under an advisory lock, so
  instances starting together are safe.
- Every unit of work is one SERIALIZABLE transaction, retried on a serialization failure or a deadlock: what SQLite's
  single writer gave for free (PIN tries under concurrent guesses, one effect per messageId, single-use codes) holds
  across instances.
- The statements are SQLite's (`sql`), with `?` numbered into `$n`.
- Sessions: a change announced inside a unit of work is told to this instance at once, again right after the
  commit (a lookup in between read the row as it was), and to every other by NOTIFY (delivered at commit) on
  `smsbot_sessions`; queued texts NOTIFY `smsbot_outbox`, which wakes the sender.
- One sender at a time: the instance that holds a session-level advisory lock sends; if it dies, its connection
  closes, the lock is free, and another instance takes over. A sender that stops cleanly gives the lock up and
  NOTIFYs `smsbot_outbox`, so another takes over at once.

Driver: asyncpg (bench/drivers.py measures it beside psycopg 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from . import migrations
from .base import SessionsChanged, Standing, T, Tx, Watchers
from .sql import RECORD_INBOUND, STANDING, Row, SqlTx, standing_of

log = logging.getLogger(__name__)

MIGRATION_LOCK = 0x736D7362_6F740001  # advisory lock keys: "smsbot" and a purpose
SENDER_LOCK = 0x736D7362_6F740002
RETRY_LOCK = 0x736D7362_6F740003
SESSIONS_CHANNEL = "smsbot_sessions"
OUTBOX_CHANNEL = "smsbot_outbox"
RETRIES = 20  # serialization failures in a row before a unit of work gives up
POOL_SIZE = 10
LISTEN_RETRY = 1.0  # seconds between attempts to reconnect the notification connection

MIGRATIONS = migrations.render(migrations.POSTGRES)
PLACEHOLDER = re.compile(r"\?")
# A text's arrival in one round trip: its message id recorded, and its sender's standing read in the same statement
# (the read does not look at the inbound table, so it misses nothing the insert does).
ARRIVAL = (f"WITH fresh AS ({RECORD_INBOUND} RETURNING 1)"  # noqa: S608 (the f-string joins this package's statements)
           f" SELECT EXISTS (SELECT 1 FROM fresh) AS fresh, {STANDING.removeprefix('SELECT ')}")
RETRYABLE = (asyncpg.exceptions.SerializationError, asyncpg.exceptions.DeadlockDetectedError)


async def _leave_as_is(conn: asyncpg.Connection) -> None:
    return None


@functools.lru_cache(maxsize=1024)
def numbered(sql: str, first: int = 1) -> str:
    """`?` placeholders as PostgreSQL's `$1, $2, ...`, from `$first` on (the shared statements hold no literal
    question marks); each statement's text is numbered once, then taken from the cache."""
    count = itertools.count(first)
    return PLACEHOLDER.sub(lambda _: f"${next(count)}", sql)


Held = tuple[str, tuple[Any, ...]]  # a write a unit of work holds back: its statement (`?` placeholders), its arguments


def table_of(sql: str) -> str:
    """The table a held write changes ("INSERT INTO outbox ..." changes outbox)."""
    return sql.split(None, 3)[2]


def batched(writes: Sequence[Held], notices: Sequence[tuple[str, str]]) -> tuple[str, list[Any]]:
    """Writes and NOTIFYs (channel, payload) as one statement and its arguments: each write a data-modifying WITH
    clause, which PostgreSQL runs once and to the end whatever the main query reads, and the NOTIFYs that query.
    PostgreSQL does not say in which order it runs the clauses, so `writes` must change one table each: rows of one
    table keep the order of their ids (texts to one number go out in the order they were queued)."""
    if len(writes) == 1 and not notices:
        return numbered(writes[0][0]), list(writes[0][1])
    clauses: list[str] = []
    args: list[Any] = []
    for n, (sql, values) in enumerate(writes, start=1):
        clauses.append(f"w{n} AS ({numbered(sql, len(args) + 1)})")
        args += values
    calls = []
    for channel, payload in notices:
        calls.append(f"pg_notify(${len(args) + 1}, ${len(args) + 2})")
        args += (channel, payload)
    with_ = f"WITH {', '.join(clauses)} " if clauses else ""
    return f"{with_}SELECT {', '.join(calls) or '1'}", args


def changed_rows(status: str) -> int:
    """The row count at the end of a command tag ("UPDATE 3", "INSERT 0 1", "DELETE 0")."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class PostgresTx(SqlTx):
    """One open SERIALIZABLE transaction."""

    GREATEST = "GREATEST"
    FIND = "strpos"
    LOCK_ROWS = " FOR UPDATE SKIP LOCKED"

    def __init__(self, conn: asyncpg.Connection, sessions_changed: SessionsChanged):
        self._conn = conn
        self._changed = sessions_changed
        self.changed_members: set[int] = set()
        self._held: list[Held] = []  # writes nobody reads back, sent with the next statement: one round trip

    async def arrive(self, message_id: str, now: float, phone_key: str,
                     replies_since: float | None) -> Standing | None:
        row = await self._one(ARRIVAL, message_id, now, phone_key, replies_since)
        assert row is not None  # one row, whether the id was new or not
        return standing_of(row) if row["fresh"] else None

    async def _write(self, sql: str, *args: Any) -> None:
        if any(table_of(held) == table_of(sql) for held, _ in self._held):
            await self.send_held()  # a second row for one table waits for the first: ids in the order written
        self._held.append((sql, args))

    async def send_held(self, notices: Sequence[tuple[str, str]] = ()) -> None:
        """Send the writes held back so far, with `notices` to NOTIFY (channel, payload), in one statement. Every
        other statement sends them first, so the unit reads what it wrote, in the order it wrote it."""
        if not self._held and not notices:
            return
        statement, args = batched(self._held, notices)
        self._held = []
        await self._conn.execute(statement, *args)

    async def _one(self, sql: str, *args: Any) -> Row | None:
        await self.send_held()
        row: Row | None = await self._conn.fetchrow(numbered(sql), *args)
        return row

    async def _all(self, sql: str, *args: Any) -> list[Row]:
        await self.send_held()
        return list(await self._conn.fetch(numbered(sql), *args))

    async def _run(self, sql: str, *args: Any) -> int:
        await self.send_held()
        return changed_rows(await self._conn.execute(numbered(sql), *args))

    async def _many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        await self.send_held()
        await self._conn.executemany(numbered(sql), rows)

    def _sessions_changed(self, member_id: int) -> None:
        self.changed_members.add(member_id)
        self._changed(member_id)  # this instance: at once, inside the unit of work


class PostgresStore(Watchers):
    shared = True

    def __init__(self, url: str, pool_size: int = POOL_SIZE):
        super().__init__()
        self.url = url
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._listening: asyncio.Task[None] | None = None
        self._sender: asyncpg.Connection | None = None  # asks for the sender's lock, and holds it once it has it
        self._sending = False

    def _require(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("store is not open")
        return self._pool

    async def open(self) -> None:
        # No reset query when a connection goes back to the pool (one round trip less per unit of work): units of
        # work leave no session state behind (locks are released explicitly, LISTEN and the sender's lock have
        # connections of their own), and asyncpg still rolls back a transaction left open.
        self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self.pool_size, reset=_leave_as_is)
        await self._migrate()
        self._listening = asyncio.create_task(self._listen_forever(), name="postgres-notifications")

    async def _migrate(self) -> None:
        async with self._require().acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                version = await conn.fetchval("SELECT max(version) FROM schema_version") or 0
                for number, (description, sql) in enumerate(MIGRATIONS, start=1):
                    if number <= version:
                        continue
                    log.info("applying migration %d: %s", number, description)
                    async with conn.transaction():
                        await conn.execute(sql)
                        await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", number)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)

    async def _listen_forever(self) -> None:
        """Hold a connection that LISTENs for other instances' session changes and queued texts; reconnect when it
        drops. Sessions cached meanwhile expire within the cache's short maximum age (see SignIn)."""
        while True:
            try:
                conn = await asyncpg.connect(self.url)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("cannot listen for notifications (%s); trying again", exc)
                await asyncio.sleep(LISTEN_RETRY)
                continue
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _, lost=lost: lost.set())
            await conn.add_listener(SESSIONS_CHANNEL, self._on_sessions)
            await conn.add_listener(OUTBOX_CHANNEL, self._on_outbox)
            self._listener = conn
            try:
                while not lost.is_set() and not conn.is_closed():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), LISTEN_RETRY)
            finally:
                self._listener = None
                with contextlib.suppress(Exception):
                    await conn.close(timeout=1)
            log.warning("the notification connection dropped; reconnecting")

    def _on_sessions(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if payload.isdigit():
            self._sessions_changed(int(payload))

    def _on_outbox(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self._texts_queued()

    async def close(self) -> None:
        if self._listening is not None:
            self._listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listening
            self._listening = None
        if self._sender is not None and not self._sender.is_closed():
            await self._sender.close(timeout=2)
        self._sender = None
        self._sending = False
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def run(self, work: Callable[[Tx], Awaitable[T]]) -> T:
        """Run `work` as one SERIALIZABLE transaction, again from the start when PostgreSQL refuses it for a
        conflict with a concurrent one. A cancelled caller cannot split it."""
        return await asyncio.shield(self._run(work))

    async def _run(self, work: Callable[[Tx], Awaitable[T]]) -> T:
        pool = self._require()
        attempt = 0
        while True:  # until it commits, or the last of RETRIES attempts is refused
            attempt += 1
            async with pool.acquire() as conn:
                # A unit of work refused for a conflict goes again one at a time: the retry lock is taken before
                # the transaction begins, so its snapshot follows the commit of the retry before it, and units that
                # conflict (two texts queued against one day's count) can't keep refusing each other.
                if attempt > 1:
                    await conn.execute("SELECT pg_advisory_lock($1)", RETRY_LOCK)
                tx = PostgresTx(conn, self._sessions_changed)
                try:
                    async with conn.transaction(isolation="serializable"):
                        result = await work(tx)
                        # The writes still held, and the NOTIFYs (delivered to the other instances at commit): one
                        # statement before the COMMIT.
                        notices = [(SESSIONS_CHANNEL, str(member_id)) for member_id in tx.changed_members]
                        if tx.queued:
                            notices.append((OUTBOX_CHANNEL, ""))
                        await tx.send_held(notices)
                except RETRYABLE:
                    if attempt == RETRIES:
                        raise
                    await asyncio.sleep(random.uniform(0, 0.001))  # noqa: S311 (jitter, not a secret)
                    continue
                finally:
                    if attempt > 1:
                        await conn.execute("SELECT pg_advisory_unlock($1)", RETRY_LOCK)
            # Committed. A lookup on this instance between the invalidation inside the unit of work and the COMMIT
            # read the session as it was and may have cached it under the new generation: invalidate once more,
            # before the caller answers, rather than wait for our own NOTIFY or the cache's maximum age.
            for member_id in tx.changed_members:
                self._sessions_changed(member_id)
            if tx.queued:
                self._texts_queued()
            return result

    async def scrub(self) -> None:
        """Nothing to fold: PostgreSQL keeps no copy of a wiped value that a dump or a query can see."""

    async def healthy(self) -> bool:
        async with self._require().acquire() as conn:
            return bool(await conn.fetchval("SELECT 1") == 1)

    async def schema_version(self) -> int:
        async with self._require().acquire() as conn:
            return int(await conn.fetchval("SELECT max(version) FROM schema_version") or 0)

    async def claim_sender(self) -> bool:
        """The sender holds a session-level advisory lock on its own connection: while that connection lives, no
        other instance gets it; when the instance dies, the connection closes and the lock is free. An instance
        that waits for the role asks again on the same connection: every queued text wakes it, and a connection
        per question would be a new server process (and TLS handshake) per text."""
        if self._sender is not None and self._sender.is_closed():
            lost, self._sender, self._sending = self._sending, None, False
            if lost:  # the lock went with the connection, and another instance may hold it now
                log.warning("the connection that held the sender's lock is gone")
                return False  # the caller learns of it; asking again starts a new take-over
        if self._sending:
            return True
        try:
            if self._sender is None:
                self._sender = await asyncpg.connect(self.url)
            self._sending = bool(await self._sender.fetchval("SELECT pg_try_advisory_lock($1)", SENDER_LOCK))
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("cannot ask for the sender's lock (%s)", exc)
            if self._sender is not None:
                self._sender.terminate()
            self._sender = None
            return False
        if self._sending:
            log.info("this instance sends the texts now")
        return self._sending

    async def release_sender(self) -> None:
        """Close the connection that holds the sender's lock, then wake the other instances: one takes the lock at
        once instead of at its next poll."""
        conn, self._sender, self._sending = self._sender, None, False
        if conn is not None and not conn.is_closed():
            await conn.close(timeout=2)
        async with self._require().acquire() as other:
            await other.execute("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)
        log.info("this instance gave up the sender's role")
