"""The SQLite store: numbered migrations, one writer, every unit of work one `BEGIN IMMEDIATE` transaction.

Its schema is here; the statements are shared with PostgreSQL in `sql`, and what each method means is declared once,
in the protocols of `base`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pathlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiosqlite

from ..errors import DatabaseInUse
from . import migrations
from .base import SessionsChanged, T, Tx, Watchers
from .sql import Row, SqlTx

log = logging.getLogger(__name__)

MIGRATIONS = migrations.render(migrations.SQLITE)


class SqliteTx(SqlTx):
    """One open SQLite transaction."""

    def __init__(self, db: aiosqlite.Connection, sessions_changed: SessionsChanged):
        self._db = db
        self._changed = sessions_changed

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
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._process_lock: ProcessLock | None = None

    async def open(self) -> None:
        """Take the process lock, then connect and migrate: a second process stops before touching the file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        process_lock = ProcessLock(self.path)
        process_lock.take(self.path)
        try:
            db = await aiosqlite.connect(self.path, isolation_level=None)
            db.row_factory = aiosqlite.Row
            self._db = db
            for pragma in ("journal_mode = WAL", "synchronous = FULL", "foreign_keys = ON", "busy_timeout = 5000",
                           "secure_delete = ON"):
                await db.execute(f"PRAGMA {pragma}")
            await self._migrate()
        except BaseException:
            if self._db is not None:
                with contextlib.suppress(Exception):
                    await self._db.close()
                self._db = None
            process_lock.release()
            raise
        self._process_lock = process_lock

    async def close(self) -> None:
        if self._db is not None:
            async with self._lock:
                await self._checkpoint()
                await self._db.close()
                self._db = None
        if self._process_lock is not None:
            self._process_lock.release()  # only once the connection is closed and the WAL folded in
            self._process_lock = None

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
            tx = SqliteTx(db, self._sessions_changed)
            await db.execute("BEGIN IMMEDIATE")
            try:
                result = await work(tx)
                await db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    await db.execute("ROLLBACK")
                raise
        if tx.queued:
            self._texts_queued()
        return result

    async def claim_sender(self) -> bool:
        return True  # one instance: it sends

    async def release_sender(self) -> None:
        """One instance: nobody else to hand the role to."""

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
