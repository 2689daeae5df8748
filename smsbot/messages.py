"""The messages that cross the engine's edges: texts in (whole or a part of a multipart text), texts out, and the
kinds of text the outbox knows."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    """What an outgoing text is for; the outbox treats some kinds apart."""

    REPLY = "reply"
    INVITE = "invite"
    PIN = "pin"
    VERIFY = "verify"  # no body: the outbox starts a Vonage Verify v2 verification, which texts the code
    STOP = "stop"  # the STOP confirmation: the one text that goes to a number that has just opted out


@dataclass(frozen=True)
class InboundText:
    message_id: str
    sender: str  # E.164
    text: str


@dataclass(frozen=True)
class InboundPart:
    """One part of a multipart text (Vonage's concat-ref, concat-total, concat-part)."""

    message_id: str
    sender: str  # E.164
    text: str
    ref: str
    total: int
    part: int


@dataclass(frozen=True)
class Outgoing:
    to: str  # E.164
    body: str
    kind: Kind = Kind.REPLY
