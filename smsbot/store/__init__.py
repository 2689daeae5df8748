"""Storage behind one seam: the protocols and records in `base`, the shared statements in `sql`, the migrations in
`migrations`, SQLite in `sqlite` and PostgreSQL in `postgres` (imported only when SMSBOT_DB names it)."""

from __future__ import annotations

from .base import (
    UNDELIVERED,
    Action,
    Confirmation,
    Counted,
    Event,
    Invite,
    Member,
    OutboxRow,
    Pin,
    Session,
    Stage,
    Store,
    Tx,
    username_key,
)
from .sqlite import SqliteStore

__all__ = ["UNDELIVERED", "Action", "Confirmation", "Counted", "Event", "Invite", "Member", "OutboxRow", "Pin",
           "Session", "SqliteStore", "Stage", "Store", "Tx", "username_key"]
