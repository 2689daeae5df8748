"""The SQLite store: numbered migrations, one writer, and group commit.

Units of work that arrive together share one `BEGIN IMMEDIATE` transaction, each inside a savepoint of its own: a
unit that fails is undone alone, and the others commit together, with one fsync for all of them. No unit's caller
hears of it before that COMMIT has returned, so "acknowledged" still means "on disk".

Where the time goes, and so why it runs where it does: a statement of smsbot's takes some microseconds in SQLite,
while handing it to a thread and back (what aiosqlite does for each statement) cost far more than the statement
itself, in thread hops and event-loop wake-ups. So the statements run on the event loop's own thread, and only what
waits on the disk (the COMMIT's fsync, a WAL checkpoint, opening and migrating) goes to the store's one thread: one
hop per batch, not one per statement. The connection is never used by both at once: the batch in progress (or the
lock) is its only user.

Its schema is here; the statements are shared with PostgreSQL in `sql`, and what each method means is declared once,
in the protocols of `base`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import logging
import os
import pathlib
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import DatabaseInUse
from . import migrations
from .base import SessionsChanged, T, Tx, Watchers
from .sql import Row, SqlTx

log = logging.getLogger(__name__)

MIGRATIONS = migrations.render(migrations.SQLITE)
BATCH = 64  # units of work in one transaction at most: a bound on how long the loop runs statements in one go
PRAGMAS = ("journal_mode = WAL", "synchronous = FULL", "foreign_keys = ON", "busy_timeout = 5000",
           "secure_delete = ON")


class SqliteTx(SqlTx):
    """One unit of work inside the open SQLite transaction (its own savepoint)."""

    def __init__(self, db: sqlite3.Connection, sessions_changed: SessionsChanged):
        self._db = db
        self._changed = sessions_changed

    async def _one(self, sql: str, *args: Any) -> Row | None:
        cursor = self._db.execute(sql, args)
        try:
            row: Row | None = cursor.fetchone()
            return row
        finally:
            cursor.close()  # a statement left half-read would keep the next SAVEPOINT from opening

    async def _all(self, sql: str, *args: Any) -> list[Row]:
        cursor = self._db.execute(sql, args)
        try:
            return list(cursor.fetchall())
        finally:
            cursor.close()

    async def _run(self, sql: str, *args: Any) -> int:
        cursor = self._db.execute(sql, args)
        try:
            return cursor.rowcount
        finally:
            cursor.close()

    async def _many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self._db.executemany(sql, rows)

    def _sessions_changed(self, member_id: int) -> None:
        self._changed(member_id)


class Unit:
    """A unit of work waiting for the writer, and where its outcome goes."""

    def __init__(self, work: Callable[[Tx], Awaitable[Any]]):
        self.work = work
        self.done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.outcome: tuple[bool, Any] = (False, None)  # (succeeded, its result or its exception), until commit

    def settle(self, failure: BaseException | None = None) -> None:
        """Hand the caller its outcome; `failure` (the whole batch's) overrides the unit's own."""
        if self.done.done():
            return
        ok, value = self.outcome
        if failure is None and ok:
            self.done.set_result(value)
            return
        self.done.set_exception(failure if failure is not None else value)
        self.done.exception()  # a caller that went away (cancelled) leaves nobody to read it: no warning for that


class ProcessLock:
    """An exclusive flock(2) on `<database>.lock` beside the database file, for as long as the store is open.

    The kernel drops it when its holder ends, however it ends (SIGKILL included), so a crash leaves no stale lock.
    A file of its own, not the database: SQLite's own locks on the database are fcntl locks, which flock emulation
    (on NFS) would collide with, and a database file replaced under a running process would not carry the lock.
    """

    def __init__(self, database: pathlib.Path):
        real = database.resolve()  # a symlink or another spelling of the path names the same lock
        self.path = real.with_name(real.name + ".lock")
        self._fd: int | None = None

    def take(self, shown: pathlib.Path) -> None:
        """Take the lock, or raise DatabaseInUse naming `shown` (the database as configured)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            raise DatabaseInUse(str(shown), f"pid {holder}, lock file {self.path}" if holder.isdigit()
                                else f"lock file {self.path}") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))  # for the refusal message only: flock is the lock
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the one descriptor drops the flock
            self._fd = None


class SqliteStore(Watchers):
    """The one writer for the database file: one process at a time holds it (`ProcessLock`)."""

    shared = False

    def __init__(self, path: pathlib.Path | str):
        super().__init__()
        self.path = pathlib.Path(path)
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()  # the connection's one user: a batch, a checkpoint, a health check, close
        self._waiting: list[Unit] = []
        self._writer: asyncio.Task[None] | None = None
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._process_lock: ProcessLock | None = None

    async def open(self) -> None:
        """Take the process lock, then connect and migrate: a second process stops before touching the file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        process_lock = ProcessLock(self.path)
        process_lock.take(self.path)
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        try:
            self._db = await self._on_thread(self._connect)
        except BaseException:
            self._thread.shutdown()
            self._thread = None
            process_lock.release()
            raise
        self._process_lock = process_lock

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread off: the loop's thread runs the statements, the store's thread the commits, never both
        # at once (see the module's docstring).
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.row_factory = sqlite3.Row
            for pragma in PRAGMAS:
                db.execute(f"PRAGMA {pragma}").fetchall()  # read to the end: no statement left open
            self._migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    async def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writer)  # what was asked for before close is written first
        if self._db is not None:
            async with self._lock:
                db, self._db = self._db, None
                await self._on_thread(lambda: self._fold_and_close(db))
        if self._thread is not None:
            self._thread.shutdown()
            self._thread = None
        if self._process_lock is not None:
            self._process_lock.release()  # only once the connection is closed and the WAL folded in
            self._process_lock = None

    @staticmethod
    def _fold_and_close(db: sqlite3.Connection) -> None:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        db.close()

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        version = int(db.execute("PRAGMA user_version").fetchall()[0][0])
        for number, (description, sql) in enumerate(MIGRATIONS, start=1):
            if number <= version:
                continue
            log.info("applying migration %d: %s", number, description)
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in filter(str.strip, sql.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def _on_thread(self, call: Callable[[], T]) -> T:
        """Run `call` on the store's thread. A cancelled caller still waits for it to end (blocking the loop for
        at most that long): the connection must not be touched while the thread holds it."""
        if self._thread is None:
            raise RuntimeError("store is not open")
        running = self._thread.submit(call)
        try:
            return await asyncio.shield(asyncio.wrap_future(running))
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                running.result()
            raise

    async def run(self, work: Callable[[Tx], Awaitable[T]]) -> T:
        """Run `work` as one unit of work: all of it commits, or none. A cancelled caller cannot split it."""
        self._require()
        unit = Unit(work)
        self._waiting.append(unit)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="sqlite-writer")
        result: T = await asyncio.shield(unit.done)
        return result

    async def _write(self) -> None:
        """Write what is waiting, a batch at a time, until nothing is: the units that came during one batch's
        COMMIT make the next batch."""
        while self._waiting:
            batch, self._waiting = self._waiting[:BATCH], self._waiting[BATCH:]
            try:
                async with self._lock:
                    queued = await self._commit(batch)
            except BaseException as exc:
                for unit in batch:
                    unit.settle(exc if isinstance(exc, Exception) else RuntimeError("the store stopped"))
                if not isinstance(exc, Exception):
                    for unit in self._waiting:
                        unit.settle(RuntimeError("the store stopped"))
                    self._waiting = []
                    raise
                continue
            for unit in batch:
                unit.settle()
            if queued:
                self._texts_queued()

    async def _commit(self, batch: list[Unit]) -> bool:
        """Run the batch's units, each in its savepoint, and commit them together; whether any queued a text."""
        db = self._require()
        db.execute("BEGIN IMMEDIATE")
        try:
            changes = db.total_changes
            queued = False
            for unit in batch:
                tx = SqliteTx(db, self._sessions_changed)
                db.execute("SAVEPOINT unit")
                try:
                    unit.outcome = (True, await unit.work(tx))
                except Exception as exc:  # this unit's own failure: undone alone, and its caller gets it
                    db.execute("ROLLBACK TO unit")
                    unit.outcome = (False, exc)
                else:
                    queued = queued or tx.queued
                db.execute("RELEASE unit")
            if db.total_changes == changes:
                db.execute("COMMIT")  # nothing written: no page to sync, so no reason to leave the loop
            else:
                await self._on_thread(lambda: db.execute("COMMIT"))
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return queued

    async def claim_sender(self) -> bool:
        return True  # one instance: it sends

    async def release_sender(self) -> None:
        """One instance: nobody else to hand the role to."""

    async def scrub(self) -> None:
        """Fold the WAL into the database and truncate it, so wiped numbers leave no copy in -wal."""
        async with self._lock:
            db = self._require()
            await self._on_thread(lambda: db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())

    async def healthy(self) -> bool:
        async with self._lock:
            return len(self._require().execute("SELECT 1").fetchall()) == 1

    async def schema_version(self) -> int:
        async with self._lock:
            return int(self._require().execute("PRAGMA user_version").fetchall()[0][0])
