"""Phone numbers: parse anything a person or Vonage writes into E.164, refuse what we must not text."""

from __future__ import annotations

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

from .errors import PhoneError

__all__ = ["PhoneError", "formatted", "from_msisdn", "mask", "msisdn", "normalize"]

_REFUSED_TYPES = {
    PhoneNumberType.PREMIUM_RATE: "it is a premium-rate number",
    PhoneNumberType.SHARED_COST: "it is a shared-cost number",
}
MAX_INPUT = 40
# What people type in numbers. Letters are refused: phonenumbers would read them as keypad digits (1-800-FLOWERS)
# or drop them, and we must never text a number nobody typed.
ALLOWED = set("0123456789 +-().\u00a0/")


def is_number(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts '²' and other digits that int() refuses."""
    return text.isascii() and text.isdigit()


def normalize(text: str, region: str) -> str:
    """Return the E.164 form (+14155550134) of a typed or msisdn-style number, or raise PhoneError."""
    raw = text.strip()
    if not raw or len(raw) > MAX_INPUT:
        raise PhoneError("it is not a phone number")
    if not any(ch.isdigit() for ch in raw):
        raise PhoneError("it has no digits")
    if any(ch.isalpha() for ch in raw):
        raise PhoneError("it has letters in it")
    if not set(raw) <= ALLOWED:
        raise PhoneError("it is not a phone number")
    if raw.startswith("00"):
        raw = "+" + raw[2:]
    try:
        parsed = phonenumbers.parse(raw, region)
    except NumberParseException:
        raise PhoneError("it is not a phone number") from None
    # number_type is UNKNOWN exactly when is_valid_number is false (both match the number against its region's
    # patterns, the costly part of a webhook's number): one call instead of both (tests/test_phone.py holds it).
    kind = phonenumbers.number_type(parsed)
    if kind == PhoneNumberType.UNKNOWN:
        raise PhoneError("it is not a valid number")
    reason = _REFUSED_TYPES.get(kind)
    if reason:
        raise PhoneError(reason)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def from_msisdn(msisdn: str, region: str) -> str:
    """Vonage sends international digits without '+'; turn them into E.164."""
    digits = msisdn.strip().lstrip("+")
    if not digits.isdigit():
        raise PhoneError("it is not a phone number")
    return normalize("+" + digits, region)


def msisdn(e164: str) -> str:
    """E.164 without the '+', as the Vonage APIs want it."""
    return e164.lstrip("+")


def mask(number: str) -> str:
    """A number fit for logs and texts about someone else: only the last two digits."""
    tail = number[-2:]
    if len(tail) == 2 and tail.isascii() and tail.isdigit():  # E.164, as every number but a typed one is
        return "**" + tail
    digits = [ch for ch in number if ch.isdigit()]
    return "**" + "".join(digits[-2:]) if len(digits) >= 2 else "**"


def formatted(number: str) -> str:
    """A number as people read it (+1 415-555-0134), for pages; E.164 or bare international digits in."""
    digits = number.lstrip("+")
    try:
        parsed = phonenumbers.parse("+" + digits, None)
    except NumberParseException:
        return "+" + digits
    if not phonenumbers.is_possible_number(parsed):
        return "+" + digits
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
