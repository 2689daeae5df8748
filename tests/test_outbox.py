"""The outbox: retries, leases, give-up, rate ceiling, wiping numbers and texts once done."""

from __future__ import annotations

import asyncio
import pathlib
import random
import sqlite3
from collections.abc import Awaitable

import pytest

from smsbot.clock import FakeClock
from smsbot.gateway import SendError
from smsbot.limiter import RateLimiter
from smsbot.messages import Kind
from smsbot.outbox import BACKOFF_CAP, backoff
from smsbot.store import OutboxRow, SqliteStore, Tx
from smsbot.store.sqlite import SqliteTx

from support.service import ADMIN, Wired


def rows(w: Wired) -> list[tuple[str, str | None, str | None, int, str | None]]:
    with sqlite3.connect(w.settings.db_path) as db:
        return db.execute("SELECT state, to_number, body, attempts, error FROM outbox ORDER BY id").fetchall()


async def test_a_sent_text_keeps_neither_number_nor_body(wired: Wired) -> None:
    out = await wired.text(ADMIN, "HELP")
    assert len(out) == 1
    assert rows(wired) == [("sent", None, None, 1, None)]


async def test_a_provider_outage_delays_but_never_drops(wired: Wired) -> None:
    wired.gateway.failures = [SendError("HTTP 500", transient=True), SendError("timeout", transient=True),
                              SendError("status 1 (Throttled)", transient=True, code="1")]
    assert await wired.text(ADMIN, "HELP") == []
    state, to, body, attempts, error = rows(wired)[0]
    assert state == "pending" and to == ADMIN and body and attempts == 1 and error == "HTTP 500"
    for _ in range(3):
        wired.clock.advance(BACKOFF_CAP)
        await wired.outbox.drain_once()
    assert [m.to for m in wired.gateway.sent] == [ADMIN]
    assert rows(wired)[0][:4] == ("sent", None, None, 4)


async def test_a_permanent_error_marks_the_text_failed_and_records_it(wired: Wired) -> None:
    wired.gateway.failures = [SendError("status 3 (Invalid parameters)", transient=False, code="3")]
    await wired.text(ADMIN, "HELP")
    assert rows(wired) == [("failed", None, None, 1, "status 3 (Invalid parameters)")]

    async def events(tx: Tx) -> list[str]:
        return [e.action for e in await tx.events(10)]

    assert "send-failed" in await wired.store.run(events)


async def test_a_text_that_keeps_failing_is_given_up_after_a_bounded_time(wired: Wired) -> None:
    wired.gateway.failures = [SendError("HTTP 503", transient=True)] * 1000
    await wired.text(ADMIN, "HELP")
    for _ in range(400):
        wired.clock.advance(BACKOFF_CAP)
        await wired.outbox.drain_once()
        if rows(wired)[0][0] == "failed":
            break
    state, to, body, attempts, error = rows(wired)[0]
    assert state == "failed" and to is None and body is None
    assert error and "gave up" in error
    assert wired.gateway.sent == []


async def test_claims_of_a_dead_worker_are_picked_up_after_restart(wired: Wired) -> None:
    await wired.text(ADMIN, "HELP")  # sent
    now = wired.clock.now()

    async def enqueue_and_claim(tx: Tx) -> None:
        await tx.enqueue(to_number=ADMIN, phone_key="k", phone_hint="**00", body="hello", kind=Kind.REPLY, now=now)
        await tx.claim_due(now, 300, 10)  # claimed, then the worker "dies"

    await wired.store.run(enqueue_and_claim)
    assert rows(wired)[-1][0] == "sending"
    assert await wired.outbox.drain_once() == 0, "a live lease is respected"
    assert await wired.outbox.release_abandoned() == 1
    assert await wired.outbox.drain_once() == 1
    assert wired.gateway.sent[-1].text == "hello"


def test_backoff_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    delays = [backoff(n, rng) for n in range(1, 30)]
    assert all(0 < d <= BACKOFF_CAP for d in delays)
    assert delays[0] < delays[5]
    late = [backoff(25, rng) for _ in range(50)]
    assert len(set(late)) > 40, "jittered"
    assert min(late) >= BACKOFF_CAP / 2


def most_in_any_second(stamps: list[float]) -> int:
    stamps = sorted(stamps)
    return max((sum(1 for s in stamps[i:] if s - start < 1.0) for i, start in enumerate(stamps)), default=0)


async def test_rate_limiter_never_exceeds_its_ceiling_in_any_second() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5, clock)
    stamps = []
    for _ in range(12):
        async with limiter.slot():
            stamps.append(clock.monotonic())
            await clock.sleep(0.01)  # the request itself
    assert most_in_any_second(stamps) == 5
    assert stamps[4] - stamps[0] < 0.1, "the first five go at once: the limiter holds back only what it must"
    assert stamps[-1] - stamps[0] < 3.0, "twelve requests at five a second take two windows and a bit, not more"


async def test_a_new_sender_counts_its_predecessors_last_second_against_the_ceiling() -> None:
    """A sender that stopped cleanly hands over the ages of its sends still in the window; counted by the next
    sender, the ceiling holds across the hand-over with no wait at all when there is room."""
    clock = FakeClock()
    old = RateLimiter(5, clock)
    stamps = []
    for _ in range(3):
        async with old.slot():
            stamps.append(clock.monotonic())
        await clock.sleep(0.1)
    new = RateLimiter(5, clock)
    new.count_recent(old.recent())
    for _ in range(5):
        async with new.slot():
            stamps.append(clock.monotonic())
    assert most_in_any_second(stamps) == 5
    assert stamps[4] == stamps[3], "room for two more: they go at once"
    assert stamps[5] - stamps[0] >= 1.0, "the third waits until the old sender's first send leaves the window"


async def test_rate_limiter_counts_concurrent_requests_until_they_finish() -> None:
    """However long each request takes, at most `rate` of them reach the provider in any second: counted from
    their starts, from their ends, or from any moment in between."""
    clock = FakeClock()
    limiter = RateLimiter(3, clock)
    rng = random.Random(11)
    spans: list[tuple[float, float]] = []

    async def request(seconds: float) -> None:
        async with limiter.slot():
            start = clock.monotonic()
            await clock.sleep(seconds)
            spans.append((start, clock.monotonic()))

    await asyncio.gather(*(request(rng.choice([0.0, 0.05, 0.3, 0.9])) for _ in range(30)))
    assert len(spans) == 30
    for share in (0.0, 0.5, 1.0):
        assert most_in_any_second([start + share * (end - start) for start, end in spans]) <= 3, share


async def test_a_fake_clock_wakes_concurrent_sleepers_in_order_and_never_early() -> None:
    clock = FakeClock()
    started, wall = clock.monotonic(), clock.now()
    woke: dict[str, float] = {}

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke[name] = clock.monotonic() - started

    await asyncio.gather(sleeper("late", 2.0), sleeper("early", 0.5), sleeper("now", 0.0))
    assert woke == {"now": 0.0, "early": 0.5, "late": 2.0}
    assert list(woke) == ["now", "early", "late"]
    assert clock.now() - wall == clock.monotonic() - started == 2.0, "now() and monotonic() move together"


async def test_outbox_worker_runs_in_the_background(wired: Wired) -> None:
    task = asyncio.create_task(wired.outbox.run())
    try:
        from smsbot import phone
        from smsbot.messages import InboundText

        await wired.pipeline.receive(InboundText("bg-1", phone.normalize(ADMIN, "US"), "HELP"))
        for _ in range(100):
            if wired.gateway.sent:
                break
            await asyncio.sleep(0.02)
        assert [m.to for m in wired.gateway.sent] == [ADMIN]
    finally:
        wired.outbox.stop()
        task.cancel()


async def test_texts_to_one_number_keep_their_order_through_retries(wired: Wired) -> None:
    now = wired.clock.now()

    async def queue(tx: Tx) -> None:
        for to, body in (("+14155550134", "first"), ("+14155550134", "second"), ("+14155550135", "other")):
            await tx.enqueue(to_number=to, phone_key=to, phone_hint="**", body=body, kind=Kind.REPLY, now=now)

    await wired.store.run(queue)
    wired.gateway.failures = [SendError("HTTP 500", transient=True)]
    await wired.outbox.drain_once()
    assert [m.text for m in wired.gateway.sent] == ["other"], "'second' waits for 'first'"
    wired.clock.advance(BACKOFF_CAP)
    await wired.outbox.drain_once()
    assert [m.text for m in wired.gateway.sent] == ["other", "first", "second"]


@pytest.mark.backends
async def test_the_sender_record_says_whether_the_last_sender_stopped_cleanly(wired: Wired) -> None:
    from smsbot import phone
    from smsbot.messages import InboundText

    store, now = wired.store, wired.clock.now()
    fresh = await store.run(lambda tx: tx.take_sender("one", now))
    assert fresh.stopped_cleanly, "a fresh database counts as stopped cleanly"
    await wired.pipeline.receive(InboundText("msg-1", phone.normalize(ADMIN, "US"), "HELP"))
    def claim(tx: Tx) -> Awaitable[list[OutboxRow]]:
        return tx.claim_due(now=now, lease_seconds=300, limit=20)

    assert await store.run(claim)

    died = await store.run(lambda tx: tx.take_sender("two", now + 1))  # "one" never stopped
    assert (died.instance, died.stopped_cleanly) == ("one", False)
    assert not await store.run(lambda tx: tx.stop_sender("one", [])), "a sender that lost the role marks nothing"
    assert not await store.run(claim), "the text is still claimed"
    assert await store.run(lambda tx: tx.stop_sender("two", [0.25, 0.0004]))
    assert await store.run(claim), "a clean stop puts the claims back in the queue"
    stopped = await store.run(lambda tx: tx.take_sender("three", now + 2))
    assert (stopped.instance, stopped.since, stopped.stopped_cleanly) == ("two", now + 1, True)
    assert stopped.recent_sends == [0.25, 0.0], "ages rounded down to the millisecond: never older than they were"


async def _schema_only(path: pathlib.Path) -> sqlite3.Connection:
    """A connection of our own to a database with smsbot's schema and nothing else, reading rows as the store's own
    connection does: for a `SqliteTx` driven outside the store's batches."""
    store = SqliteStore(path)
    await store.open()  # the schema, as smsbot makes it
    await store.close()
    db = sqlite3.connect(path, isolation_level=None)
    db.row_factory = sqlite3.Row
    return db


async def _claim_steps(path: pathlib.Path, waiting: int, due: int) -> tuple[int, list[int]]:
    """SQLite's virtual-machine steps (counted in thousands by a progress handler) for one claim of 20 texts, with
    `waiting` texts queued to as many numbers, the last `due` of them due and the others backing off (five minutes
    to go), and as many texts already sent; and the ids claimed."""
    db = await _schema_only(path)
    try:
        now = 1_800_000_000.0
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO outbox (phone_key, phone_hint, to_number, body, kind, state, created_at, next_attempt_at)"
            " VALUES (?, '**34', ?, 'text', 'reply', ?, ?, ?)",
            [(f"key-{i}", None if i % 2 else "+12025550142", "sent" if i % 2 else "pending", now,
              now if i % 2 or i // 2 >= waiting - due else now + 300) for i in range(2 * waiting)])
        db.execute("COMMIT")
        steps = 0

        def count() -> int:
            nonlocal steps
            steps += 1
            return 0

        db.set_progress_handler(count, 1000)
        claimed = await SqliteTx(db, lambda _: None).claim_due(now=now, lease_seconds=300, limit=20)
        db.set_progress_handler(None, 0)
        return steps, [row.id for row in claimed]
    finally:
        db.close()


@pytest.mark.parametrize("due", ["all", "none", "the last 5"])
async def test_a_claim_costs_the_same_however_many_texts_wait(tmp_path: pathlib.Path, due: str) -> None:
    """A provider outage leaves thousands of texts waiting, most of them backing off. Each claim walks the due texts
    in order and stops at its 20: it never reads, checks and sorts every due text (which held the event loop for
    15 ms a claim with 20,000 waiting), nor walks past the texts still backing off."""
    results = {}
    for waiting in (200, 20_000):
        count = {"all": waiting, "none": 0, "the last 5": 5}[due]
        results[waiting] = await _claim_steps(tmp_path / f"{waiting}.db", waiting, count)
    (few_steps, few), (many_steps, many) = results[200], results[20_000]
    first = {"all": list(range(1, 41, 2)), "none": [], "the last 5": list(range(391, 401, 2))}[due]
    assert few == first, "the texts due the longest, in order"
    assert many == [i + (40_000 - 400 if due == "the last 5" else 0) for i in first]
    assert many_steps <= few_steps + 2, f"{few_steps} thousand steps with 200 waiting, {many_steps} with 20,000"


async def test_the_next_text_due_is_the_earliest_pending_attempt_or_lease_end(tmp_path: pathlib.Path) -> None:
    """What the worker sleeps until: the earliest of the pending texts' next attempts and the texts being sent's
    lease ends; nothing else counts (sent texts, a lease not set); None when nothing waits."""
    db = await _schema_only(tmp_path / "due.db")
    tx = SqliteTx(db, lambda _: None)

    def add(state: str, next_attempt_at: float, lease_until: float | None = None) -> None:
        db.execute("INSERT INTO outbox (phone_key, phone_hint, body, kind, state, created_at, next_attempt_at,"
                   " lease_until) VALUES ('k', '**34', 't', 'reply', ?, 0, ?, ?)",
                   (state, next_attempt_at, lease_until))

    try:
        assert await tx.next_due_at() is None
        add("sent", 5.0)
        add("sending", 1.0, None)
        assert await tx.next_due_at() is None, "a sent text and a lease not set are not due"
        add("pending", 300.0)
        add("pending", 200.0)
        assert await tx.next_due_at() == 200.0
        add("sending", 1.0, 250.0)
        assert await tx.next_due_at() == 200.0
        add("sending", 1.0, 150.0)
        assert await tx.next_due_at() == 150.0, "a lease that ends first"
    finally:
        db.close()
