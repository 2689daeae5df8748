"""The send-rate ceiling: at most so many provider requests in any sliding window, timed on the service's clock."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import AsyncIterator

from .clock import Clock


class RateLimiter:
    """At most `rate` send requests in any sliding one-second window, as the provider sees them.

    A request is counted from when it finishes: a request's arrival at Vonage can lag its start (a new TLS
    connection), so counting from the start could let two requests land closer than the window allows.
    """

    def __init__(self, rate: float, clock: Clock):
        self.capacity = max(1, int(rate))
        self.window = 1.0 if rate >= 1 else 1.0 / rate
        self.clock = clock
        self._done: collections.deque[float] = collections.deque()
        self._in_flight = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        while True:
            now = self.clock.monotonic()
            while self._done and now - self._done[0] >= self.window:
                self._done.popleft()
            if len(self._done) + self._in_flight < self.capacity:
                break
            wait = self.window - (now - self._done[0]) if self._done else 0.01
            await self.clock.sleep(max(wait, 0.001) + 0.001)
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            self._done.append(self.clock.monotonic())

    def recent(self) -> list[float]:
        """How many seconds ago each request that still counts in the window finished (none may be in flight)."""
        now = self.clock.monotonic()
        return [now - done for done in self._done if now - done < self.window]

    def count_recent(self, ages: list[float]) -> None:
        """Count another sender's requests that finished these many seconds ago (or longer: counting them as more
        recent than they were only makes the ceiling stricter)."""
        now = self.clock.monotonic()
        self._done.extend(sorted(now - max(0.0, age) for age in ages))
