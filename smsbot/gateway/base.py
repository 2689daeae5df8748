"""The gateway seam: what the service asks of an SMS provider, and the errors and answers it gets back."""

from __future__ import annotations

import enum
from typing import Protocol

from ..errors import SendError, VerifyConflict

__all__ = ["DLR_ERRORS", "Check", "Gateway", "SendError", "VerifyConflict"]

# Delivery receipt `err-code`s: why a text did not reach the phone.
DLR_ERRORS = {
    "0": "delivered", "1": "unknown error", "2": "phone switched off or out of coverage",
    "3": "phone permanently unreachable", "4": "barred by the user", "5": "number ported, routing failed",
    "6": "blocked as spam", "7": "handset busy", "8": "network error",
    "9": "number opted out or blacklisted (illegal number)", "10": "message refused (illegal message)",
    "11": "unroutable", "12": "destination unreachable", "13": "age restriction", "14": "blocked by the carrier",
    "15": "prepaid account without funds", "50": "entity filter", "51": "header filter", "52": "content filter",
    "53": "consent filter", "54": "regulation error", "99": "general error",
}


class Check(enum.Enum):
    """What Verify v2 said of a code."""

    OK = "ok"  # 200 completed
    WRONG = "wrong"  # 400: counts as a failed try
    DEAD = "dead"  # 410 too many wrong codes, or 409 (no code step): the PIN is dead
    GONE = "gone"  # 404 expired, unknown or already used


class Gateway(Protocol):
    async def send_sms(self, to: str, text: str, client_ref: str) -> str:
        """Hand one text to the provider; return the provider's message id or raise SendError."""
        ...

    async def start_verification(self, to: str, brand: str, code_length: int, timeout: int) -> str:
        """Start a Verify v2 SMS verification; return its request id. Raises VerifyConflict or SendError."""
        ...

    async def check_code(self, request_id: str, code: str) -> Check:
        """Check a code against Verify v2. Raises SendError(transient) when Vonage can't answer now."""
        ...

    async def cancel_verification(self, request_id: str) -> bool: ...

    async def close(self) -> None: ...
