"""Logging set-up. Our own log lines mask numbers; libraries that would log raw SQL parameters are kept quiet."""

from __future__ import annotations

import logging
import sys

# aiosqlite logs every statement with its parameters at DEBUG: numbers waiting in the outbox, PIN hashes.
LEAKY_LOGGERS = ("aiosqlite",)


def quiet_leaky_loggers() -> None:
    for name in LEAKY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def configure(level: str = "INFO") -> None:
    level = level.upper()
    logging.basicConfig(level=level if level in logging.getLevelNamesMapping() else "INFO",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    quiet_leaky_loggers()
