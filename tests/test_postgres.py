"""Several instances on one PostgreSQL database keep every promise: two object graphs (two "instances") share a
fresh database; what SQLite's single writer gave for free holds between them; sessions end everywhere at once; one
sender; schema set-up by instances starting together; nothing of a number left in a pg_dump."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from smsbot.clock import FakeClock
from smsbot.gateway import FakeGateway
from smsbot.messages import InboundText, Kind
from smsbot.settings import load
from smsbot.sms import texts
from smsbot.store import Action, Counted, Tx, sqlite
from smsbot.store.postgres import MIGRATIONS, SENDER_LOCK, PostgresStore, batched, numbered
from smsbot.wiring import Graph, build

from support.constants import INVITE_CODE, PIN_IS, YES
from support.pgcluster import pg_dump
from support.privacy import forms
from support.service import ADMIN, BASE_ENV, fast

ALICE = "+12025550143"


class Instance:
    """One smsbot instance's object graph on the shared database, with its own clock and provider."""

    def __init__(self, url: str, **env: str):
        settings = load({**BASE_ENV, "SMSBOT_DB": url, **env}, dev=True)
        self.clock = FakeClock()
        self.gateway = FakeGateway(settings.number)
        self.graph: Graph = build(fast(settings), clock=self.clock, gateway=self.gateway)
        self._ids = 0

    async def text(self, sender: str, body: str, message_id: str | None = None) -> Any:
        self._ids += 1
        return await self.graph.pipeline.receive(InboundText(message_id or f"{id(self)}-{self._ids}", sender, body))


@pytest.fixture
async def two(pg_url: str) -> AsyncIterator[tuple[Instance, Instance]]:
    a, b = Instance(pg_url), Instance(pg_url)
    await asyncio.gather(a.graph.store.open(), b.graph.store.open())
    yield a, b
    await asyncio.gather(a.graph.store.close(), b.graph.store.close())


async def sent_code_and_pin(sender: Instance, admin_side: Instance) -> tuple[str, str]:
    await admin_side.text(ADMIN, f"INVITE {ALICE} alice")
    await sender.graph.outbox.drain_once()
    code = INVITE_CODE.search(sender.gateway.sent[0].text)
    assert code
    await admin_side.text(ALICE, code.group(1))
    await sender.graph.outbox.drain_once()
    pin = PIN_IS.search(sender.gateway.sent[-2].text)
    assert pin, [m.text for m in sender.gateway.sent]
    return code.group(1), pin.group(1)


def test_a_statement_may_hold_more_than_a_thousand_placeholders() -> None:
    """The budget's count leaves out every admin's number, one placeholder each: a group may have over 999 admins."""
    assert numbered(", ".join("?" * 1500)).endswith("$1499, $1500")


def test_held_writes_and_notices_are_numbered_through_one_statement() -> None:
    statement, args = batched([("INSERT INTO counters (phone_key, action, at) VALUES (?, ?, ?)", ("k", "pin", 1.0)),
                               ("INSERT INTO events (at, actor, action, detail) VALUES (?, ?, ?, ?)",
                                (2.0, "**01", "invited", ""))], [("smsbot_outbox", ""), ("smsbot_sessions", "7")])
    assert statement == ("WITH w1 AS (INSERT INTO counters (phone_key, action, at) VALUES ($1, $2, $3)), "
                         "w2 AS (INSERT INTO events (at, actor, action, detail) VALUES ($4, $5, $6, $7)) "
                         "SELECT pg_notify($8, $9), pg_notify($10, $11)")
    assert args == ["k", "pin", 1.0, 2.0, "**01", "invited", "", "smsbot_outbox", "", "smsbot_sessions", "7"]
    assert batched([("INSERT INTO events (at) VALUES (?)", (1.0,))], []) == ("INSERT INTO events (at) VALUES ($1)",
                                                                            [1.0])
    assert batched([], [("smsbot_outbox", "")]) == ("SELECT pg_notify($1, $2)", ["smsbot_outbox", ""])


def statements_sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements every asyncpg connection sends from now on (until `monkeypatch.undo()`), but the LISTENs of
    the notification connection, which may be (re)starting meanwhile."""
    sent: list[str] = []
    for name in ("execute", "fetch", "fetchrow", "fetchval", "executemany"):
        original = getattr(asyncpg.Connection, name)

        def spy(conn: asyncpg.Connection, query: str, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            if not query.startswith("LISTEN"):
                sent.append(query)
            return _original(conn, query, *args, **kwargs)

        monkeypatch.setattr(asyncpg.Connection, name, spy)
    return sent


async def test_an_admins_help_sends_its_writes_and_notify_in_one_statement(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four round trips: the admin's count of replies in the last hour comes with the message id and the standing,
    and the count of the reply and the queued reply are held back, and go with the outbox's NOTIFY in one round trip
    before the COMMIT; the reply is then there to send."""
    instance = Instance(pg_url)
    await instance.graph.store.open()
    try:
        await instance.text(ADMIN, "HELP")  # the first text of an instance prepares its statements
        sent = statements_sent(monkeypatch)
        assert len(await instance.text(ADMIN, "HELP")) == 1
        monkeypatch.undo()
        writes = [s for s in sent if "INSERT INTO counters" in s or "INSERT INTO outbox" in s or "pg_notify" in s]
        assert len(writes) == 1, sent
        assert "INSERT INTO counters" in writes[0] and "INSERT INTO outbox" in writes[0], writes
        assert "pg_notify" in writes[0], writes
        # BEGIN, the message id with the standing (the admin's replies in the last hour in it), the writes, COMMIT
        assert [s.split()[0].rstrip(";") for s in sent] == ["BEGIN", "WITH", "WITH", "COMMIT"], sent
        await instance.graph.outbox.drain_once()
        assert [m.text for m in instance.gateway.sent][-1].startswith("Commands:")
    finally:
        await instance.graph.store.close()


async def test_a_strangers_text_is_three_round_trips(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """BEGIN, the message id recorded with the sender's standing read in the same statement, COMMIT."""
    instance = Instance(pg_url)
    await instance.graph.store.open()
    try:
        await instance.text("+12025550150", "hello")
        sent = statements_sent(monkeypatch)
        assert await instance.text("+12025550151", "hello") == []
        assert await instance.text("+12025550151", "hello", message_id=f"{id(instance)}-2") is None
        monkeypatch.undo()
        assert len(sent) == 6, sent
        assert [s.split()[0].rstrip(";") for s in sent] == ["BEGIN", "WITH", "COMMIT"] * 2, sent
    finally:
        await instance.graph.store.close()


async def test_rows_written_in_one_unit_keep_their_order(pg_url: str) -> None:
    """PostgreSQL runs a statement's WITH clauses in no promised order: held writes to one table never share one."""
    store = PostgresStore(pg_url)
    await store.open()
    try:
        async def work(tx: Tx) -> None:
            for n in range(3):
                await tx.enqueue(to_number="+12025550143", phone_key="k", phone_hint="**43", body=f"text {n}",
                                 kind=Kind.REPLY, now=1.0)
                await tx.note("k", Counted.REPLY, 1.0)
                await tx.record_event(1.0, "**43", Action.INVITE, f"event {n}")

        await store.run(work)
        async with store._require().acquire() as conn:
            texts_ = [r["body"] for r in await conn.fetch("SELECT body FROM outbox ORDER BY id")]
            events = [r["detail"] for r in await conn.fetch("SELECT detail FROM events ORDER BY id")]
            counted = await conn.fetchval("SELECT count(*) FROM counters")
        assert texts_ == ["text 0", "text 1", "text 2"]
        assert events[-3:] == ["event 0", "event 1", "event 2"]
        assert counted == 3
    finally:
        await store.close()


def test_migrations_are_numbered_and_described_alike() -> None:
    assert [d for d, _ in MIGRATIONS] == [d for d, _ in sqlite.MIGRATIONS]


async def test_instances_starting_together_set_the_schema_up_once(make_pg_url: Callable[[], str]) -> None:
    url = make_pg_url()
    stores = [PostgresStore(url) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        assert [await s.schema_version() for s in stores] == [len(MIGRATIONS)] * 3
        async with stores[0]._require().acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM schema_version") == len(MIGRATIONS)
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_message_posted_to_two_instances_at_once_has_one_effect(two: tuple[Instance, Instance]) -> None:
    a, b = two
    results = await asyncio.gather(*(i.text(ADMIN, f"INVITE {ALICE} alice", "0A-same") for i in (a, b, a, b)))
    assert sum(r is not None for r in results) == 1, results
    await a.graph.outbox.drain_once()
    await b.graph.outbox.drain_once()
    invites = [m for m in a.gateway.sent + b.gateway.sent if m.to == ALICE]
    assert len(invites) == 1


async def test_an_admin_numbers_60_replies_an_hour_are_counted_across_instances(
        two: tuple[Instance, Instance]) -> None:
    a, b = two
    await asyncio.gather(*(side.text(ADMIN, "HELP") for _ in range(40) for side in (a, b)))
    await a.graph.outbox.drain_once()
    await b.graph.outbox.drain_once()
    sent = [m.text for m in a.gateway.sent + b.gateway.sent]
    assert len(sent) == 61 and sum(t.startswith("Too many texts from your number") for t in sent) == 1


async def test_guesses_at_both_instances_get_five_tries_and_a_code_joins_once(
        two: tuple[Instance, Instance]) -> None:
    a, b = two
    code, pin = await sent_code_and_pin(a, b)
    await asyncio.gather(*(i.text(ALICE, code) for i in (a, b, a, b)))  # the code again, at both: used already
    await a.graph.outbox.drain_once()
    assert sum("PIN is" in m.text for m in a.gateway.sent) == 1, "one join, one PIN"
    wrong = [f"{(int(pin) + n) % 10**6:06d}" for n in range(1, 10)]
    results = await asyncio.gather(*((a if n % 2 else b).graph.signin.login("alice", guess, "t")
                                     for n, guess in enumerate([*wrong, pin])))
    assert results[:9] == [None] * 9
    store = a.graph.store
    assert isinstance(store, PostgresStore)
    async with store._require().acquire() as conn:
        tries = await conn.fetchval("SELECT tries FROM pins")
        sessions = await conn.fetchval("SELECT count(*) FROM sessions")
    assert tries is None or tries <= 5, "never more than five tries counted against one PIN"
    assert sessions == (1 if results[9] is not None else 0)
    assert results[9] is None or (tries or 0) < 5, "the right PIN works only while fewer than five were wrong"


async def test_codes_and_logins_texted_to_both_instances_at_once_count_each_try_once(
        two: tuple[Instance, Instance]) -> None:
    a, b = two

    async def sent() -> list[str]:
        await a.graph.outbox.drain_once()
        return [m.text for m in a.gateway.sent if m.to == ALICE]

    await a.text(ADMIN, f"INVITE {ALICE} alice")
    code = INVITE_CODE.search((await sent())[0])
    assert code
    wrong = [c for c in ("AAAAAA", "BBBBBB", "CCCCCC", "DDDDDD", "EEEEEE", "FFFFFF", "GGGGGG") if c != code.group(1)]
    await asyncio.gather(*((a, b)[n % 2].text(ALICE, guess) for n, guess in enumerate(wrong)))
    replies = await sent()
    assert replies.count(texts.WRONG_CODE) == 4 and replies.count(texts.TOO_MANY_CODES) == 1, replies
    await a.text(ALICE, code.group(1))
    assert not any("PIN is" in t for t in await sent()), "the invite was cancelled after five wrong codes"

    await a.text(ADMIN, f"INVITE {ALICE} alice")
    code = INVITE_CODE.search((await sent())[-1])
    assert code
    await b.text(ALICE, code.group(1))  # joins: the first PIN of the hour
    await asyncio.gather(*((a, b)[n % 2].text(ALICE, "LOGIN") for n in range(10)))
    replies = await sent()
    assert sum("PIN is" in t for t in replies) == 5, "SMSBOT_PIN_CAP_HOUR holds for both instances together"
    assert replies.count(texts.PIN_CAP) == 1


async def test_a_revoke_through_one_instance_ends_the_session_on_the_other_at_once(
        two: tuple[Instance, Instance]) -> None:
    a, b = two
    _, pin = await sent_code_and_pin(a, a)
    token = await a.graph.signin.login("alice", pin, "phone")
    assert token
    assert (await b.graph.signin.session(token)) is not None
    assert b.graph.signin.cached_session(token) is not None, "b has it cached now"
    started = time.monotonic()
    await a.text(ADMIN, "REVOKE alice")
    while b.graph.signin.cached_session(token) is not None and time.monotonic() - started < 5:
        await asyncio.sleep(0.01)
    took = time.monotonic() - started
    assert b.graph.signin.cached_session(token) is None
    assert await b.graph.signin.session(token) is None
    assert took < 1.0, f"b's cache heard of the REVOKE after {took:.3f} s"


async def test_one_sender_at_a_time_and_another_takes_over(pg_url: str) -> None:
    a, b = Instance(pg_url), Instance(pg_url)
    await a.graph.store.open()
    await b.graph.store.open()
    try:
        assert await a.graph.store.claim_sender() is True
        assert await b.graph.store.claim_sender() is False, "a holds the sender's lock"
        assert await a.graph.store.claim_sender() is True, "and keeps it"
    finally:
        await a.graph.store.close()  # a dies: its lock connection closes
    try:
        deadline = time.monotonic() + 5
        while not await b.graph.store.claim_sender():
            assert time.monotonic() < deadline, "b never took over"
            await asyncio.sleep(0.1)
    finally:
        await b.graph.store.close()


async def test_an_instance_waiting_for_the_senders_role_asks_on_one_connection(pg_url: str) -> None:
    """Every queued text wakes every instance's outbox, and one that doesn't send then asks for the sender's lock:
    it keeps one connection for asking, rather than a new one (a new server process, a TLS handshake) each time."""
    a, b = Instance(pg_url), Instance(pg_url)
    await asyncio.gather(a.graph.store.open(), b.graph.store.open())

    async def sessions_so_far() -> int:
        """Sessions ever opened on the database (counted when they start; each read opens one too)."""
        await asyncio.sleep(0.3)  # closed sessions have flushed their statistics
        conn = await asyncpg.connect(pg_url)
        try:
            return int(await conn.fetchval("SELECT sessions FROM pg_stat_database WHERE datname = current_database()"))
        finally:
            await conn.close()

    try:
        assert await a.graph.store.claim_sender() is True
        assert await b.graph.store.claim_sender() is False
        before = await sessions_so_far()
        for _ in range(10):
            assert await b.graph.store.claim_sender() is False, "a holds the sender's lock"
        opened = await sessions_so_far() - before
        assert opened <= 2, f"{opened} sessions opened for ten attempts (one of them to count them)"
    finally:
        await a.graph.store.close()  # a dies: an attempt of b's, on the same connection, gets the lock
    try:
        deadline = time.monotonic() + 5
        while not await b.graph.store.claim_sender():
            assert time.monotonic() < deadline, "b never took over"
            await asyncio.sleep(0.05)
    finally:
        await b.graph.store.close()


async def test_a_sender_whose_lock_connection_is_cut_stops_sending_and_one_sender_remains(pg_url: str) -> None:
    """The sender's lock lives on one connection. When that connection is cut while the instance lives on (a
    restart of PostgreSQL, a proxy dropping an idle connection), the lock is free for another instance: the one that
    lost it stops sending, so that whoever holds the lock next is the only sender."""
    a, b = Instance(f"{pg_url}?application_name=a"), Instance(f"{pg_url}?application_name=b")
    await asyncio.gather(a.graph.store.open(), b.graph.store.open())
    assert await a.graph.store.claim_sender()
    workers = [asyncio.create_task(i.graph.outbox.run()) for i in (a, b)]
    conn = await asyncpg.connect(pg_url)

    async def holder() -> tuple[str, int] | None:
        row = await conn.fetchrow("""
            SELECT a.application_name, a.pid FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 1
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
                                  SENDER_LOCK >> 32, SENDER_LOCK & 0xFFFFFFFF)
        return (row[0], row[1]) if row else None

    async def until(check: Callable[[], Any], what: str) -> None:
        deadline = time.monotonic() + 10
        while not await check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)

    async def nothing_waiting() -> bool:
        return not await conn.fetchval("SELECT count(*) FROM outbox WHERE state IN ('pending', 'sending')")

    try:
        await a.text(ADMIN, f"INVITE {ALICE} alice")
        await until(lambda: asyncio.sleep(0, len(a.gateway.sent) == 2), "a to send the invite and the reply")
        first = await holder()
        assert first is not None and first[0] == "a"
        await conn.execute("SELECT pg_terminate_backend($1)", first[1])  # a lives on; its lock is gone

        async def taken_over() -> bool:
            now = await holder()
            return now is not None and now[1] != first[1]

        await until(taken_over, "an instance to take the lock")
        sender = await holder()
        assert sender is not None
        sent_before = {"a": len(a.gateway.sent), "b": len(b.gateway.sent)}
        for n in range(6):
            await (a if n % 2 else b).text(ADMIN, f"INVITE +1202555{n + 300:04d}")
        await until(nothing_waiting, "every text to be sent")
        sent = {"a": len(a.gateway.sent) - sent_before["a"], "b": len(b.gateway.sent) - sent_before["b"]}
        assert sent[sender[0]] == 12 and sum(sent.values()) == 12, f"{sender[0]} holds the lock; sent: {sent}"
    finally:
        for instance, worker in zip((a, b), workers, strict=True):
            instance.graph.outbox.stop()
            await asyncio.wait_for(worker, 10)
        await conn.close()
        await asyncio.gather(a.graph.store.close(), b.graph.store.close())


async def test_no_number_is_left_in_a_dump_once_texts_are_sent(pg_url: str) -> None:
    a = Instance(pg_url, SMSBOT_CONFIRM="INVITE")
    await a.graph.store.open()
    try:
        await a.text(ADMIN, "INVITE (202) 555-0177 dan")  # waits for YES: the number is kept until then
        dump = pg_dump(pg_url)
        assert "(202) 555-0177" in dump, "the scan can fail: a waiting command holds the number as typed"
        await a.graph.outbox.drain_once()
        yes = YES.search(a.gateway.sent[-1].text)
        assert yes
        await a.text(ADMIN, f"YES {yes.group(1)}")
        await a.graph.outbox.drain_once()
        await a.text(ADMIN, f"INVITE {ALICE} alice")
        for guess in ("0000", "0001", "0002"):
            await a.text(ADMIN, f"YES {guess}")
        await a.graph.outbox.drain_once()
        dump = pg_dump(pg_url)
        for secret in forms("+12025550177") + forms(ALICE):
            assert secret not in dump, f"{secret!r} in the dump"
    finally:
        await a.graph.store.close()
