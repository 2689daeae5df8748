"""Keys derived from SMSBOT_SECRET, and every secret value the service mints or compares."""

from __future__ import annotations

import hashlib
import hmac
import secrets

# Capitals and digits without the look-alikes 0/O and 1/I.
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 6
PIN_LENGTH = 6
CONFIRM_LENGTH = 4


class Keys:
    """Purpose-bound HMAC keys, so a leak of one use cannot be replayed in another."""

    def __init__(self, secret: str):
        master = secret.encode("utf-8")
        self._phone = self._derive(master, b"phone")
        self._pin = self._derive(master, b"pin")
        self._code = self._derive(master, b"invite-code")
        self._csrf = self._derive(master, b"csrf")
        self._confirm = self._derive(master, b"confirm")
        self._client = self._derive(master, b"web-client")

    @staticmethod
    def _derive(master: bytes, purpose: bytes) -> bytes:
        return hmac.new(master, b"smsbot/v1/" + purpose, hashlib.sha256).digest()

    def phone_key(self, e164: str) -> str:
        """The only form of a phone number kept at rest."""
        return hmac.new(self._phone, e164.encode(), hashlib.sha256).hexdigest()

    def pin_hash(self, member_id: int, pin: str) -> str:
        return hmac.new(self._pin, f"{member_id}:{pin}".encode(), hashlib.sha256).hexdigest()

    def code_hash(self, phone_key: str, code: str) -> str:
        return hmac.new(self._code, f"{phone_key}:{code.upper()}".encode(), hashlib.sha256).hexdigest()

    def confirm_hash(self, admin_key: str, code: str) -> str:
        return hmac.new(self._confirm, f"{admin_key}:{code}".encode(), hashlib.sha256).hexdigest()

    def client_key(self, client: str) -> str:
        """The only form of a web client's address (or IPv6 /64) kept at rest, for the sign-in limit."""
        return hmac.new(self._client, client.encode(), hashlib.sha256).hexdigest()

    def csrf_token(self, nonce: str) -> str:
        return hmac.new(self._csrf, nonce.encode(), hashlib.sha256).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(a.encode(), b.encode())


def token_hash(token: str) -> str:
    """Session tokens are 256-bit random values: a plain SHA-256 is enough to keep them unusable at rest."""
    return hashlib.sha256(token.encode()).hexdigest()


class SecretSource:
    """Where codes, PINs and tokens come from; a seam so tests can predict them."""

    def invite_code(self) -> str:
        return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))

    def pin(self) -> str:
        return f"{secrets.randbelow(10**PIN_LENGTH):0{PIN_LENGTH}d}"

    def confirm_code(self) -> str:
        return f"{secrets.randbelow(10**CONFIRM_LENGTH):0{CONFIRM_LENGTH}d}"

    def token(self) -> str:
        return secrets.token_urlsafe(32)
