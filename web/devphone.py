"""Dev mode's phones: every text to and from any number, in memory, for the dev phone page.

This is the only place where numbers, codes and PINs are shown in clear, and it exists only under `smsbot dev`.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass

from smsbot.gateway import FakeText


@dataclass(frozen=True)
class DevText:
    id: int
    number: str  # E.164 of the dev phone
    direction: str  # "in" (phone to service) or "out" (service to phone)
    text: str
    at: float


class DevPhones:
    def __init__(self) -> None:
        self.texts: list[DevText] = []
        self._ids = itertools.count(1)

    def record(self, number: str, direction: str, text: str) -> DevText:
        entry = DevText(next(self._ids), number, direction, text, time.time())
        self.texts.append(entry)
        return entry

    def on_sent(self, message: FakeText) -> None:
        self.record(message.to, "out", message.text)

    def since(self, after: int) -> list[dict[str, object]]:
        return [asdict(t) for t in self.texts if t.id > after]
