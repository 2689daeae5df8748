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

    async def quiet(self) -> None:
        """Wait until none of this limiter's requests is in flight or still counts in the window: from then on
        another sender may use the whole ceiling."""
        while True:
            now = self.clock.monotonic()
            if not self._in_flight and (not self._done or now - self._done[-1] >= self.window):
                return
            wait = self.window - (now - self._done[-1]) if self._done and not self._in_flight else 0.01
            await self.clock.sleep(max(wait, 0.001) + 0.001)
