"""Sliding windows on the service's clock: at most so many events in any so many seconds. The send-rate ceiling is
one (RateLimiter); the web edge's throttle on audit events for refused webhook signatures is another."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import AsyncIterator, Iterable

from .clock import Clock


class SlidingWindow:
    """At most `capacity` events in any `window` seconds, timed on the clock's monotonic time, kept in memory."""

    def __init__(self, capacity: int, window: float, clock: Clock):
        self.capacity = capacity
        self.window = window
        self.clock = clock
        self._times: collections.deque[float] = collections.deque()

    def _current(self) -> float:
        now = self.clock.monotonic()
        while self._times and now - self._times[0] >= self.window:
            self._times.popleft()
        return now

    def wait(self, pending: int = 0) -> float:
        """Seconds until one more event fits beside `pending` ones not counted yet: 0 when it fits now."""
        now = self._current()
        if len(self._times) + pending < self.capacity:
            return 0.0
        return self.window - (now - self._times[0]) if self._times else 0.01

    def take(self) -> bool:
        """Count an event now if it fits; whether it did."""
        if self.wait():
            return False
        self.record()
        return True

    def record(self) -> None:
        """Count an event now, whether or not it fits."""
        self._times.append(self.clock.monotonic())

    def ages(self) -> list[float]:
        """How many seconds ago each event that still counts happened."""
        now = self._current()
        return [now - at for at in self._times]

    def add_ages(self, ages: Iterable[float]) -> None:
        """Count events that happened these many seconds ago."""
        now = self.clock.monotonic()
        self._times.extend(sorted(now - max(0.0, age) for age in ages))


class RateLimiter:
    """At most `rate` send requests in any sliding one-second window, as the provider sees them.

    A request is counted from when it finishes: a request's arrival at Vonage can lag its start (a new TLS
    connection), so counting from the start could let two requests land closer than the window allows.
    """

    def __init__(self, rate: float, clock: Clock):
        self.done = SlidingWindow(max(1, int(rate)), 1.0 if rate >= 1 else 1.0 / rate, clock)
        self.clock = clock
        self._in_flight = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        while wait := self.done.wait(self._in_flight):
            await self.clock.sleep(max(wait, 0.001) + 0.001)
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            self.done.record()

    def recent(self) -> list[float]:
        """How many seconds ago each request that still counts in the window finished (none may be in flight)."""
        return self.done.ages()

    def count_recent(self, ages: list[float]) -> None:
        """Count another sender's requests that finished these many seconds ago (or longer: counting them as more
        recent than they were only makes the ceiling stricter)."""
        self.done.add_ages(ages)
