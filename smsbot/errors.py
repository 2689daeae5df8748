"""One error hierarchy: every error smsbot raises on purpose derives from SmsbotError and carries what its handler
needs (every problem of a configuration, a reason fit for a text, whether trying again can help)."""

from __future__ import annotations


class SmsbotError(Exception):
    """Base of every error smsbot raises on purpose."""


class SettingsError(SmsbotError):
    """The configuration has problems; `problems` lists every one of them."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


class DatabaseInUse(SmsbotError):
    """Another process holds this SQLite file: one process per file (several instances need PostgreSQL)."""

    def __init__(self, path: str, holder: str):
        super().__init__(f"the SQLite database {path} is in use by another smsbot process ({holder}); one process "
                         "serves one SQLite file, and several instances need PostgreSQL "
                         "(SMSBOT_DB=postgresql://...)")
        self.path = path


class BackupError(SmsbotError):
    """Why `smsbot backup` made no copy; nothing was written under the target's name."""


class DatabaseUnavailable(SmsbotError):
    """The database could not be opened at start-up; the message names it as logs may show it, no password."""


class PhoneError(SmsbotError, ValueError):
    """A number we cannot use; `reason` is a short phrase fit for a text to an admin."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class SendError(SmsbotError):
    """A provider call that did not go through. `transient` says whether trying again later can help; `code` is
    the provider's status or our own short name for the failure."""

    def __init__(self, message: str, *, transient: bool, code: str = ""):
        super().__init__(message)
        self.transient = transient
        self.code = code


class VerifyConflict(SendError):
    """Verify v2 already has a verification in flight for this number (HTTP 409); `request_id` names it."""

    def __init__(self, request_id: str):
        super().__init__(f"a verification is already in flight: {request_id}", transient=True, code="http-409")
        self.request_id = request_id


class SignatureError(SmsbotError):
    """Why a webhook's signature was refused (for the log; the caller only ever answers 401)."""


class BadWebhook(SmsbotError):
    """A request that is not a webhook we understand; the reason goes into a 400 answer."""
