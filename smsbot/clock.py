"""Time as a seam: the service asks a clock, tests move it."""

from __future__ import annotations

import asyncio
import time


class Clock:
    """Wall-clock seconds since the epoch, a monotonic clock for intervals, and sleeping on it."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds` on the monotonic clock, never less: uvloop times a sleep in whole milliseconds, so one may
        end up to a millisecond early, and the rest is then slept again (sign-in's answer at a fixed moment, the
        rate ceiling's window and the hand-over's wait all count on it)."""
        until = time.monotonic() + seconds
        await asyncio.sleep(seconds)
        while (left := until - time.monotonic()) > 0:
            await asyncio.sleep(left)


class FakeClock(Clock):
    """A clock that only moves when told to, or when something sleeps on it.

    `sleep` waits no real time: once the tasks that are ready to run have had their turn, the earliest sleeper moves
    the time to its wake-up time and wakes. So sleepers wake in order, and never early; one that starts sleeping
    after an earlier sleeper already moved the time wakes that much later, as a real sleep may.
    """

    def __init__(self, start: float = 1_800_000_000.0):
        self._now = start
        self._wake_ups: list[float] = []

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        wake_up = self._now + max(0.0, seconds)
        self._wake_ups.append(wake_up)
        try:
            await asyncio.sleep(0)
            while self._now < wake_up:
                if wake_up <= min(self._wake_ups):
                    self._now = wake_up
                else:
                    await asyncio.sleep(0)
        finally:
            self._wake_ups.remove(wake_up)
