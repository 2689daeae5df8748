"""Logging set-up. Our own log lines mask numbers; libraries that would log raw SQL parameters are kept quiet."""

from __future__ import annotations

import datetime
import json
import logging
import sys
from collections.abc import Sequence

from .settings import redacted

# The Vonage SDK logs request bodies (numbers, PINs) and headers (credentials) at DEBUG and response bodies at WARNING;
# urllib3 logs URLs. Our own lines say what happened, masked.
LEAKY_LOGGERS = {"vonage": logging.ERROR, "vonage_http_client": logging.ERROR, "urllib3": logging.ERROR}


def quiet_leaky_loggers() -> None:
    for name, level in LEAKY_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


class Redacting(logging.Filter):
    """Masks the given secrets wherever a log line holds one, in its message or its traceback: a library's error
    may echo what it was given (asyncpg, the database URL's password or a server setting)."""

    def __init__(self, secrets: Sequence[str]):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redacted(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redacted(record.exc_text, self.secrets)
        return True


# Fields a log call may pass in `extra=` for JSON logs; a number must be passed masked (phone.mask).
FIELDS = ("event", "message_id", "number")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the instance, and the FIELDS a call gave."""

    def __init__(self, instance: str):
        super().__init__()
        self.instance = instance

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "instance": self.instance,
        }
        line.update({name: record.__dict__[name] for name in FIELDS if name in record.__dict__})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(level: str = "INFO", form: str = "text", instance: str = "", secrets: Sequence[str] = ()) -> None:
    """Log to stderr at `level`, as readable `text` lines or as `json` objects (one a line); no line shows any of
    `secrets` (give the longest first)."""
    level = level.upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(instance) if form == "json" else logging.Formatter(TEXT_FORMAT))
    if secrets:
        handler.addFilter(Redacting(secrets))
    logging.basicConfig(level=level if level in logging.getLevelNamesMapping() else "INFO", handlers=[handler])
    quiet_leaky_loggers()
