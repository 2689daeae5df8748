"""The real clock's sleep lasts at least what was asked, on the event loop the servers run on (uvloop), which times
its timers in whole milliseconds."""

from __future__ import annotations

import asyncio
import random
import time

import uvloop

from smsbot.clock import Clock


async def _shortfalls(sleeps: int, rng: random.Random) -> list[float]:
    """How much earlier than asked each of `sleeps` sleeps of a few milliseconds ended (0 when it did not)."""
    clock, short = Clock(), []
    for _ in range(sleeps):
        seconds = rng.uniform(0.0002, 0.004)
        start = time.monotonic()
        await clock.sleep(seconds)
        short.append(max(0.0, seconds - (time.monotonic() - start)))
    return short


def test_a_sleep_on_uvloop_never_ends_early() -> None:
    """uvloop rounds a timer to the millisecond, and about a fifth of such sleeps ended early (by up to 1.1 ms) when
    the clock slept once: sign-in's answer at a fixed moment could come before it."""
    loop = uvloop.new_event_loop()
    try:
        short = loop.run_until_complete(_shortfalls(200, random.Random(19)))
    finally:
        loop.close()
    early = sum(s > 0 for s in short)
    assert max(short) == 0.0, f"{early} of 200 sleeps ended early, by up to {max(short) * 1e3:.2f} ms"


def test_a_sleep_on_asyncio_never_ends_early() -> None:
    assert max(asyncio.run(_shortfalls(50, random.Random(7)))) == 0.0
