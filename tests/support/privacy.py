"""What the privacy tests look for: every written form of a phone number, and where a database keeps bytes."""

from __future__ import annotations

import pathlib

from smsbot.web.appkeys import SETTINGS

from .service import WebBench


def forms(e164: str) -> list[str]:
    """The ways people write a US number: E.164, digits, national, and three punctuated."""
    digits = e164.lstrip("+")
    national = digits[1:]
    return [e164, digits, national, f"({national[:3]}) {national[3:6]}-{national[6:]}",
            f"{national[:3]}-{national[3:6]}-{national[6:]}", f"{national[:3]} {national[3:6]} {national[6:]}"]


def database_files(bench: WebBench) -> list[pathlib.Path]:
    db = pathlib.Path(bench.app[SETTINGS].db_path)
    return [p for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"),
                        db.with_name(db.name + "-journal")) if p.exists()]


def assert_absent(blobs: dict[str, bytes], secrets: list[str]) -> None:
    for name, blob in blobs.items():
        for secret in secrets:
            assert secret.encode() not in blob, f"{secret!r} found in {name}"
            assert secret.encode("utf-16-le") not in blob, f"{secret!r} (UTF-16) found in {name}"
