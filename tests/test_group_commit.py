"""The SQLite store's group commit: units of work that arrive together share one transaction and one COMMIT, each in
a savepoint of its own, and no caller hears of its unit before that COMMIT has returned."""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from smsbot.store import Counted, Tx
from smsbot.store.sqlite import BATCH, SqliteStore


@pytest.fixture
async def store(tmp_path: pathlib.Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "smsbot.db")
    await opened.open()
    yield opened
    await opened.close()


def commits(store: SqliteStore) -> list[str]:
    """Every COMMIT the store's connection runs from now on, as the name of the thread that ran it."""
    seen: list[str] = []
    store._require().set_trace_callback(
        lambda sql: seen.append(threading.current_thread().name) if sql == "COMMIT" else None)
    return seen


def on_disk(path: pathlib.Path, sql: str) -> list[tuple[object, ...]]:
    """What another connection (another process, as far as SQLite can tell) reads from the file."""
    with sqlite3.connect(path) as other:
        return other.execute(sql).fetchall()


async def note(tx: Tx, n: int) -> int:
    """A unit's write: one row in the per-number counters."""
    return await tx.note_now(f"key-{n}", Counted.REPLY, float(n))


def noting(n: int) -> Callable[[Tx], Awaitable[int]]:
    """The unit of work that notes `n`."""
    return lambda tx: note(tx, n)


async def test_units_that_arrive_together_share_one_commit(store: SqliteStore) -> None:
    seen = commits(store)
    ids = await asyncio.gather(*(store.run(noting(n)) for n in range(40)))
    assert len(set(ids)) == 40, "every unit ran, and got its own result"
    assert 1 <= len(seen) <= 2, f"40 units that came at once took {len(seen)} commits"
    assert all(name.startswith("sqlite") for name in seen), "a COMMIT that syncs runs on the store's thread"
    assert on_disk(store.path, "SELECT count(*) FROM counters") == [(40,)]


async def test_a_batch_holds_at_most_its_bound(store: SqliteStore) -> None:
    seen = commits(store)
    await asyncio.gather(*(store.run(noting(n)) for n in range(BATCH * 2 + 1)))
    assert len(seen) >= 3, "no more than BATCH units in one transaction"


async def test_a_failing_unit_is_undone_alone(store: SqliteStore) -> None:
    class Refused(Exception):
        pass

    async def fails(tx: Tx) -> int:
        await note(tx, 999)  # written, then undone with its savepoint
        raise Refused

    seen = commits(store)
    results = await asyncio.gather(store.run(lambda tx: note(tx, 1)), store.run(fails),
                                   store.run(lambda tx: note(tx, 2)), return_exceptions=True)
    assert isinstance(results[1], Refused), "the failing unit's caller gets its own exception"
    assert all(isinstance(r, int) for r in (results[0], results[2]))
    assert len(seen) == 1
    assert on_disk(store.path, "SELECT phone_key FROM counters ORDER BY phone_key") == [("key-1",), ("key-2",)]


async def test_nobody_hears_of_a_unit_before_its_commit(store: SqliteStore) -> None:
    """Each caller, when it resumes, finds its unit in the file already, as another process would."""
    found: list[list[tuple[object, ...]]] = []

    async def one(n: int) -> None:
        await store.run(lambda tx: note(tx, n))
        found.append(on_disk(store.path, f"SELECT count(*) FROM counters WHERE phone_key = 'key-{n}'"))

    await asyncio.gather(*(one(n) for n in range(10)))
    assert found == [[(1,)]] * 10


async def test_a_cancelled_caller_does_not_split_its_unit(store: SqliteStore) -> None:
    started = asyncio.Event()

    async def slow(tx: Tx) -> int:
        await note(tx, 1)
        started.set()
        await asyncio.sleep(0.05)
        return await note(tx, 2)

    caller = asyncio.create_task(store.run(slow))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await store.run(lambda tx: note(tx, 3))  # after the cancelled one, in order
    assert on_disk(store.path, "SELECT count(*) FROM counters") == [(3,)], "the whole unit committed"


async def test_a_read_only_batch_commits_on_the_loop(store: SqliteStore) -> None:
    """Nothing written, nothing to sync: the COMMIT runs on the loop's own thread."""
    await store.run(lambda tx: note(tx, 1))
    seen = commits(store)
    assert await store.run(lambda tx: tx.count_since("key-1", Counted.REPLY, 0)) == 1
    assert seen == [threading.current_thread().name]


async def test_close_writes_what_was_asked_for_first(tmp_path: pathlib.Path) -> None:
    store = SqliteStore(tmp_path / "smsbot.db")
    await store.open()
    pending = [asyncio.ensure_future(store.run(noting(n))) for n in range(5)]
    await asyncio.sleep(0)
    await store.close()
    assert all(p.done() and not p.exception() for p in pending)
    assert on_disk(store.path, "SELECT count(*) FROM counters") == [(5,)]
