"""One error hierarchy: every error smsbot raises on purpose derives from SmsbotError and carries what its handler
needs (a list of problems, a reason fit for a text, whether a retry can help)."""

from __future__ import annotations


class SmsbotError(Exception):
    """Base of every error smsbot raises on purpose."""
