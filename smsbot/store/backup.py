"""`smsbot backup`: a consistent copy of the SQLite database, made beside a running `smsbot serve`.

The copy is SQLite's online backup API reading one snapshot: the source connection holds a read transaction for the
whole copy, so the pages come from one moment and the copy never restarts however often serve commits meanwhile (a
backup that lets go between steps starts over after every commit of another connection). In WAL mode a reader does
not hold serve's writes off; only serve's WAL truncation after sends waits until the copy is done, so the copy goes
as fast as it can (big steps, no sync until it is whole). It is written to a temporary file beside
the target, checked (`PRAGMA integrity_check`), synced, and only then given the target's name, by a hard link that
never replaces a file: a backup killed at any moment leaves no file under that name, or a whole and checked one.
It needs no process lock: it only reads, and it runs beside serve.
"""

from __future__ import annotations

import os
import pathlib
import sqlite3
import tempfile
import time
from dataclasses import dataclass

from ..errors import BackupError

# Pages per backup step (4 MiB at SQLite's default page size). Steps inside one read transaction let no writer in,
# and need not: in WAL mode serve writes on while the copy reads.
STEP_PAGES = 1024
COUNTED = ("members", "invites", "sessions")


@dataclass(frozen=True)
class BackupReport:
    """What a finished backup holds."""

    pages: int
    page_size: int
    size: int  # bytes of the copy
    schema_version: int
    counts: dict[str, int]  # rows of each COUNTED table
    seconds: float


def backup(source: pathlib.Path, target: pathlib.Path) -> BackupReport:
    """Copy the database at `source` to the new file `target` (mode 0600); raise BackupError, leaving no `target`,
    when it can't."""
    started = time.monotonic()
    if not source.is_file():
        raise BackupError(f"there is no SQLite database at {source}")
    if os.path.lexists(target):
        raise BackupError(f"{target} exists; smsbot backup never replaces a file: choose a new name, or remove it")
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkstemp makes the file 0600: the copy holds what the database holds (numbers of texts waiting to be sent).
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    os.close(fd)
    partial = pathlib.Path(name)
    try:
        try:
            _copy(source, partial)
            pages, page_size, version, counts = _check(partial)
        except sqlite3.Error as exc:
            raise BackupError(f"could not copy {source}: {exc}") from None
        _sync(partial)
        _publish(partial, target)
    finally:
        partial.unlink(missing_ok=True)  # after the link the copy lives on under the target's name
    return BackupReport(pages, page_size, target.stat().st_size, version, counts, time.monotonic() - started)


def _copy(source: pathlib.Path, partial: pathlib.Path) -> None:
    # Read-only: the backup never writes to the live database, and never creates one where there was none.
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    dst = sqlite3.connect(partial, isolation_level=None)
    try:
        src.execute("PRAGMA busy_timeout = 5000")
        # The partial file is thrown away if anything goes wrong, and synced once it is whole.
        dst.execute("PRAGMA journal_mode = OFF")
        dst.execute("PRAGMA synchronous = OFF")
        src.execute("BEGIN")
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot starts at the first read
        src.backup(dst, pages=STEP_PAGES)
        src.execute("COMMIT")
        # One self-contained file (the copy came with the source's WAL mode); serve turns WAL on again at start.
        dst.execute("PRAGMA journal_mode = DELETE")
    finally:
        dst.close()
        src.close()


def _check(partial: pathlib.Path) -> tuple[int, int, int, dict[str, int]]:
    """The copy's pages, page size, schema version and counted rows, once it passes its integrity check."""
    db = sqlite3.connect(f"{partial.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        problems = [row[0] for row in db.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise BackupError(f"the copy failed its integrity check: {'; '.join(problems[:5])}")
        counts = {table: int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608 (constants)
                  for table in COUNTED}
        pages = int(db.execute("PRAGMA page_count").fetchone()[0])
        page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()
    return pages, page_size, version, counts


def _sync(path: pathlib.Path, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(partial: pathlib.Path, target: pathlib.Path) -> None:
    """Give the whole, synced copy the target's name at once, and make the name durable."""
    try:
        os.link(partial, target)  # unlike rename, fails rather than replace a file that appeared meanwhile
    except FileExistsError:
        raise BackupError(f"{target} appeared while the copy was made; it was left as it is") from None
    except OSError:  # a file system without hard links: rename, having checked above that there is no target
        os.rename(partial, target)
    _sync(target.parent, os.O_RDONLY | os.O_DIRECTORY)
