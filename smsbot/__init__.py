"""smsbot: passwordless sign-in for a group, run by SMS. The engine: settings, storage, conversation, outbox."""

__version__ = "0.1.0"
