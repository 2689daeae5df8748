"""The HTTP face of smsbot: login page, sessions, forward auth, Vonage webhooks and the dev phone."""

from .app import create_app

__all__ = ["create_app"]
