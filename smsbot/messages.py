"""The messages that cross the engine's edges: texts in (whole or a part of a multipart text), texts out, the
kinds of text the outbox knows, and what a text costs in GSM-7 (the encoding of one 160-character segment)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

# The GSM 03.38 basic character set, and the extension characters that cost two septets.
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = "^{}\\[~]|€"
SEGMENT = 160
_DROP_GSM7 = str.maketrans("", "", GSM7_BASIC + GSM7_EXTENDED)  # what survives str.translate is not GSM-7


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


def is_gsm7(text: str) -> bool:
    return not text.translate(_DROP_GSM7)


def septets(text: str) -> int:
    """Length in GSM-7 septets (extension characters count twice)."""
    return len(text) + sum(text.count(ch) for ch in GSM7_EXTENDED)


def fits_one_segment(text: str) -> bool:
    return septets(text) <= SEGMENT if is_gsm7(text) else len(text) <= 70
