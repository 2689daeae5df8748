"""The in-process fake provider: dev mode's SMS network and the tests' recording phone line."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import SendError, VerifyConflict
from .base import Check


@dataclass(frozen=True)
class FakeText:
    to: str  # E.164
    sender: str
    text: str
    message_id: str


@dataclass
class FakeVerification:
    to: str
    code: str
    wrong: int = 0
    done: bool = False


class FakeGateway:
    """Keeps every text instead of sending it; dev mode shows them on the dev phone page.

    It plays Verify v2 too: a verification "texts" its code from Vonage, allows 3 wrong codes, one per number.
    """

    def __init__(self, sender: str = "") -> None:
        self.sender = sender
        self.sent: list[FakeText] = []
        self.failures: list[SendError] = []  # raised, in order, by the next sends
        self.verify_failures: list[SendError] = []  # raised, in order, by the next verification starts
        self.listeners: list[Callable[[FakeText], None]] = []
        self.verifications: dict[str, FakeVerification] = {}
        self._counter = 0

    async def start_verification(self, to: str, brand: str, code_length: int, timeout: int) -> str:
        if self.verify_failures:
            raise self.verify_failures.pop(0)
        for request_id, v in self.verifications.items():
            if v.to == to and not v.done:
                raise VerifyConflict(request_id)
        request_id = f"fake-verify-{len(self.verifications) + 1}"
        code = "".join(secrets.choice("0123456789") for _ in range(code_length))
        self.verifications[request_id] = FakeVerification(to, code)
        self._deliver(to, f"Your {brand} verification code is: {code}", "Vonage")
        return request_id

    async def check_code(self, request_id: str, code: str) -> Check:
        v = self.verifications.get(request_id)
        if v is None or v.done:
            return Check.GONE
        if hmac.compare_digest(code.encode(), v.code.encode()):
            v.done = True
            return Check.OK
        v.wrong += 1
        if v.wrong >= 3:
            v.done = True
            return Check.DEAD
        return Check.WRONG

    async def cancel_verification(self, request_id: str) -> bool:
        v = self.verifications.get(request_id)
        if v is None or v.done:
            return False
        v.done = True
        return True

    def _deliver(self, to: str, text: str, sender: str) -> str:
        self._counter += 1
        message = FakeText(to, sender, text, f"FAKE{self._counter:012d}")
        self.sent.append(message)
        for listener in list(self.listeners):
            listener(message)
        return message.message_id

    async def send_sms(self, to: str, text: str, client_ref: str) -> str:
        if self.failures:
            raise self.failures.pop(0)
        return self._deliver(to, text, self.sender)

    async def close(self) -> None:
        return None
