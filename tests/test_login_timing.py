"""A failed sign-in is answered at one moment after the request arrived, whatever the reason, in both PIN modes: a
slow Verify check (made only for a member with a live PIN) can't tell who is a member.

Timed on the real clock, over real HTTP, with a fake Verify whose checks take a while. The figures themselves are
measured by bench/login_timing.py; these tests hold only bounds far apart from each other: never before the
deadline, and well before the slow check would end.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import pytest

from smsbot.clock import Clock, FakeClock
from smsbot.gateway import Check, FakeGateway
from smsbot.web.appkeys import SETTINGS

from support.service import ADMIN, WebBench, login_form

DEADLINE = 0.25  # SMSBOT_LOGIN_FAILURE_SECONDS in these tests (short: each failed attempt of a set-up waits it out)
SLACK = 0.5  # how late past the deadline a loaded machine may answer
CHECK = DEADLINE / 2  # how long the fake Verify takes to check a code: inside the deadline


class SlowVerify(FakeGateway):
    """The fake Verify, with checks that take `delay` seconds; `hold` makes them wait until it is set."""

    def __init__(self, sender: str, delay: float):
        super().__init__(sender)
        self.delay = delay
        self.hold: asyncio.Event | None = None

    async def check_code(self, request_id: str, code: str) -> Check:
        await asyncio.sleep(self.delay)
        if self.hold is not None:
            await self.hold.wait()
        return await super().check_code(request_id, code)


class MovableClock(Clock):
    """Real time for intervals and sleeps; the wall clock can be moved on (to expire PINs)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


class Timed:
    def __init__(self, bench: WebBench, gateway: SlowVerify, clock: MovableClock):
        self.bench, self.gateway, self.clock = bench, gateway, clock

    async def member(self, number: str, username: str) -> str:
        out = await self.bench.text(ADMIN, f"INVITE {number} {username}")
        code = re.search(r"code ([A-Z0-9]{6})", out[0][1])
        assert code
        return self.pin_in(await self.bench.text(number, code.group(1)))

    @staticmethod
    def pin_in(out: list[tuple[str, str]]) -> str:
        found = re.search(r"(?:PIN is|verification code is:) (\d{6})", " ".join(text for _, text in out))
        assert found, out
        return found.group(1)

    async def attempt(self, username: str, pin: str) -> tuple[int, float]:
        """The status of one sign-in and the seconds it took, from just before the POST to its last byte."""
        client = self.bench.client
        token, cookies = await login_form(client)
        client.session.cookie_jar.clear()
        started = time.monotonic()
        response = await client.post("/login", cookies=cookies, allow_redirects=False,
                                     data={"username": username, "pin": pin, "csrf_token": token})
        await response.read()
        return response.status, time.monotonic() - started

    async def locked(self, username: str) -> bool:
        rows = await self.bench.query(f"SELECT locked_at FROM members WHERE username = '{username}'")  # noqa: S608
        return rows[0][0] is not None


@pytest.fixture
def make_timed(make_settings: Callable[..., Any], aiohttp_client: Callable[..., Any]) -> Callable[..., Any]:
    async def make(mode: str, delay: float = CHECK) -> Timed:
        from smsbot.web import create_app

        settings = make_settings(dev=False, SMSBOT_PIN_VIA=mode, SMSBOT_LOGIN_FAILURE_SECONDS=str(DEADLINE),
                                 SMSBOT_LOGIN_FAILURES_PER_MINUTE="1000", SMSBOT_LOCKOUT_FAILURES="6",
                                 SMSBOT_PIN_CAP_HOUR="20")
        clock, gateway = MovableClock(), SlowVerify(settings.number, delay)
        app = create_app(settings, gateway=gateway, clock=clock, run_worker=False)
        # The bench's own clock is not the app's: these tests move time only through `clock`.
        return Timed(WebBench(await aiohttp_client(app), app, gateway, FakeClock()), gateway, clock)

    return make


def wrong(pin: str) -> str:
    return f"{(int(pin) + 1) % 10**6:06d}"


@pytest.mark.parametrize("mode", ["sms", "verify"])
async def test_every_failed_sign_in_is_answered_at_the_same_deadline_whatever_the_reason(
        make_timed: Callable[..., Any], mode: str) -> None:
    timed: Timed = await make_timed(mode)
    alice = await timed.member("+14155550101", "alice")  # a live PIN: a wrong one is checked (by Vonage, slowly)
    bob = await timed.member("+14155550102", "bob")  # signs in, so has no live PIN
    assert (await timed.attempt("bob", bob))[0] == 303
    carol = await timed.member("+14155550103", "carol")  # her PIN expires
    dead = await timed.member("+14155550104", "dave")  # wrong tries kill his PIN
    for _ in range(5 if mode == "sms" else 3):  # five tries kill a PIN; Vonage's Verify takes three
        await timed.attempt("dave", wrong(dead))
    erin = await timed.member("+14155550105", "erin")  # wrong tries (across PINs) lock her
    while not await timed.locked("erin"):
        for _ in range(3):
            await timed.attempt("erin", wrong(erin))
        if not await timed.locked("erin"):
            erin = timed.pin_in(await timed.bench.text("+14155550105", "LOGIN"))

    timings = {
        "unknown user": await timed.attempt("nobody", "123456"),
        "member without a live PIN": await timed.attempt("bob", bob),
        "wrong PIN for a live PIN": await timed.attempt("alice", wrong(alice)),
        "dead PIN": await timed.attempt("dave", dead),
        "locked member": await timed.attempt("erin", erin),
    }
    timed.clock.offset += 11 * 60
    timings["expired PIN"] = await timed.attempt("carol", carol)
    assert {reason: status for reason, (status, _) in timings.items()} == dict.fromkeys(timings, 401)
    for reason, (_, took) in timings.items():
        assert DEADLINE <= took < DEADLINE + SLACK, f"{reason}: answered after {took:.3f} s"


async def test_a_check_slower_than_the_deadline_is_answered_at_it_and_settled_later(
        make_timed: Callable[..., Any]) -> None:
    timed: Timed = await make_timed("verify", delay=0.0)
    pin = await timed.member("+14155550101", "alice")
    timed.gateway.hold = asyncio.Event()  # Vonage stops answering
    status, took = await timed.attempt("alice", wrong(pin))
    assert status == 401 and DEADLINE <= took < DEADLINE + SLACK
    timed.gateway.hold.set()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if await timed.bench.query("SELECT tries FROM pins") == [(1,)]:
            break
    assert await timed.bench.query("SELECT tries FROM pins") == [(1,)], "the wrong code counts when it is settled"

    timed.gateway.hold = asyncio.Event()
    status, took = await timed.attempt("alice", pin)
    assert status == 401 and DEADLINE <= took < DEADLINE + SLACK, "a right code too late is answered as failed"
    timed.gateway.hold.set()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if (await timed.bench.query("SELECT pin_hash FROM pins"))[0][0] is not None:
            break
    timed.gateway.hold = None
    status, took = await timed.attempt("alice", pin)
    assert status == 303, "Vonage confirmed the code late: it signs in on the next try, without asking again"
    assert took < DEADLINE


async def test_a_check_still_out_at_stop_is_settled_before_the_database_closes(
        make_timed: Callable[..., Any]) -> None:
    timed: Timed = await make_timed("verify", delay=0.0)
    pin = await timed.member("+14155550101", "alice")
    hold = timed.gateway.hold = asyncio.Event()
    assert (await timed.attempt("alice", wrong(pin)))[0] == 401
    asyncio.get_running_loop().call_later(0.2, hold.set)  # Vonage answers while the service stops
    await timed.bench.client.close()
    with sqlite3.connect(timed.bench.app[SETTINGS].db_path) as db:
        assert db.execute("SELECT tries FROM pins").fetchall() == [(1,)], "the wrong code counts"
