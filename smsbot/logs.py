"""Logging set-up. Our own log lines mask numbers; libraries that would log raw SQL parameters are kept quiet."""

from __future__ import annotations

import logging
import sys

# aiosqlite logs every statement with its parameters at DEBUG (numbers waiting in the outbox, PIN hashes); the
# Vonage SDK logs request bodies (numbers, PINs) and headers (credentials) at DEBUG and response bodies at WARNING;
# urllib3 logs URLs. Our own lines say what happened, masked.
LEAKY_LOGGERS = {"aiosqlite": logging.WARNING, "vonage": logging.ERROR, "vonage_http_client": logging.ERROR,
                 "urllib3": logging.ERROR}


def quiet_leaky_loggers() -> None:
    for name, level in LEAKY_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


def configure(level: str = "INFO") -> None:
    level = level.upper()
    logging.basicConfig(level=level if level in logging.getLevelNamesMapping() else "INFO",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    quiet_leaky_loggers()
