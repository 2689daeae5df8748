"""`smsbot backup FILE` (contract: "Install and start"): a consistent copy of the SQLite database made while a real
`smsbot serve` takes webhooks and sign-ins; `smsbot serve` on the copy, put in place as the README's restore drill
says, has every member, invite and session of that moment. A backup SIGKILLed mid-copy leaves no file under the
target's name; an existing file is never replaced; on PostgreSQL it refuses and names pg_dump.

Both copy a database of about 50 MB (ballast rows in the audit log), whose copy takes a good tenth of a second: long
enough for serve to commit while the backup reads, and for the kill test to catch the partial file as it grows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pathlib
import random
import re
import shutil
import signal
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from smsbot.store import SqliteStore
from smsbot.web import cli

from support.client import auth, login, new_member, text_in
from support.constants import ADMIN_MSISDN, NUMBER, SECRET
from support.procs import CODE, PIN, SmsbotProcess, clean_env, only, serve_env, start_smsbot, wait_for, wait_text
from support.vonage_emulator import VonageEmulator

# Every admin command below gets a reply: stay under the 60 replies an admin number gets in an hour. The joins'
# INVITEs come from ADMIN; the traffic's other INVITEs, which go on until the backup is over, from INVITERS in turn.
MEMBERS_BEFORE = 5
INVITES_BEFORE = 3
JOINERS_MAX = 40
INVITES_MAX = 250
INVITERS = tuple(f"1415555{n:04d}" for n in range(900, 905))
LOAD_ENV = {"SMSBOT_SMS_RATE": "1000", "SMSBOT_DAILY_SMS_BUDGET": "100000",
            "SMSBOT_ADMINS": ",".join(f"+{a}" for a in (ADMIN_MSISDN, *INVITERS))}


def phone(n: int) -> str:
    return f"1415555{n:04d}"


def backup_process(tmp: pathlib.Path, db: pathlib.Path, target: pathlib.Path, name: str) -> SmsbotProcess:
    """`smsbot backup target` with SMSBOT_DB alone: it needs no other setting."""
    return SmsbotProcess(["backup", str(target)], tmp, clean_env({"SMSBOT_DB": str(db)}), tmp / f"{name}.log")


def rows(db: pathlib.Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return list(conn.execute(sql))
    finally:
        conn.close()


def partials(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(folder.glob(".*.partial"))


@dataclasses.dataclass
class Done:
    """One thing the traffic did: when its request went out and when its 2xx (or 303) came back."""

    sent: float
    acked: float
    username: str
    cookie: str = ""


class Traffic:
    """While it runs: new members join and sign in, the admin invites, and /auth is asked with every session."""

    def __init__(self, emu: VonageEmulator, base: str, cookies: dict[str, str]):
        self.emu, self.base, self.cookies = emu, base, cookies
        self.stop = threading.Event()
        self.joined: list[Done] = []
        self.invited: list[Done] = []
        self.auth_status: dict[int, int] = {}
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._guard, args=(work,), daemon=True)
                        for work in (self._join, self._invite, self._check)]

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _guard(self, work: Callable[[requests.Session], None]) -> None:
        with requests.Session() as http:
            http.trust_env = False
            try:
                work(http)
            except BaseException as exc:
                self.errors.append(exc)

    def _join(self, http: requests.Session) -> None:
        for n in range(JOINERS_MAX):
            if self.stop.is_set():
                return
            sent = time.monotonic()
            cookie = new_member(self.emu, http, self.base, phone(300 + n), f"joiner{n}")
            self.joined.append(Done(sent, time.monotonic(), f"joiner{n}", cookie))

    def _invite(self, http: requests.Session) -> None:
        for n in range(INVITES_MAX):
            if self.stop.wait(0.08):
                return
            sent = time.monotonic()
            text_in(http, self.base, "json", INVITERS[n % len(INVITERS)], f"INVITE +{phone(400 + n)} invitee{n}")
            self.invited.append(Done(sent, time.monotonic(), f"invitee{n}"))

    def _check(self, http: requests.Session) -> None:
        while not self.stop.is_set():
            for cookie in self.cookies.values():
                status = auth(http, self.base, cookie).status_code
                self.auth_status[status] = self.auth_status.get(status, 0) + 1


@pytest.mark.slow
def test_a_backup_under_load_restores_every_member_invite_and_session_of_its_moment(
        tmp_path: pathlib.Path, emu: VonageEmulator, http: requests.Session) -> None:
    data = tmp_path / "data"
    db = data / "smsbot.db"
    target = tmp_path / "backups" / "smsbot-copy.db"

    def env(port: int) -> dict[str, str]:
        return serve_env(emu, port, db, SECRET, NUMBER, **LOAD_ENV)

    data.mkdir()
    big_database(db)  # a copy that lasts long enough for commits to land while it reads
    serve, base = start_smsbot("serve", tmp_path, env, tmp_path / "serve.log")
    try:
        cookies = {f"member{n}": new_member(emu, http, base, phone(100 + n), f"member{n}")
                   for n in range(MEMBERS_BEFORE)}
        codes = {}
        for n in range(INVITES_BEFORE):
            text_in(http, base, "form", ADMIN_MSISDN, f"INVITE +{phone(200 + n)} pending{n}")
            codes[f"pending{n}"] = only(CODE, wait_text(emu, phone(200 + n), lambda t: "invited" in t,
                                                        "the invite").text)

        with Traffic(emu, base, cookies) as traffic:
            time.sleep(1.0)
            backup = backup_process(tmp_path, db, target, "backup")
            started = time.monotonic()
            backup.start()
            assert backup.proc is not None
            code = backup.proc.wait(timeout=60)
            ended = time.monotonic()
            backup.stop()
            # Traffic goes on after the copy (a loaded machine may take a while to send the next one).
            wait_for(lambda: any(d.sent > ended for d in traffic.joined + traffic.invited) or None, 30,
                     "traffic sent after the backup ended")
        assert not traffic.errors, traffic.errors
        assert code == 0, backup.output()
        report = backup.output()
        print(report)
        during = [d for d in traffic.joined + traffic.invited if d.sent < ended and d.acked > started]
        slowest = max((d.acked - d.sent for d in traffic.invited if d.sent < ended and d.acked > started), default=0)
        assert traffic.auth_status and set(traffic.auth_status) == {200}, traffic.auth_status

        # The copy: private, whole, consistent, and counted as printed.
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert not partials(target.parent)
        assert rows(target, "PRAGMA integrity_check") == [("ok",)]
        assert rows(target, "PRAGMA foreign_key_check") == []
        counts = {table: int(rows(target, f"SELECT count(*) FROM {table}")[0][0])
                  for table in ("members", "invites", "sessions")}
        printed = dict(re.findall(r"(members|invites|sessions) (\d+)", report))
        assert {t: int(c) for t, c in printed.items()} == counts, report
        members = {str(r[0]) for r in rows(target, "SELECT username FROM members")}
        invites = {str(r[0]) for r in rows(target, "SELECT username FROM invites")}
        members_then = set(cookies) | {d.username for d in traffic.joined if d.acked < started}
        invites_then = set(codes) | {d.username for d in traffic.invited if d.acked < started}
        assert members_then <= members, members_then - members
        assert invites_then <= invites, invites_then - invites
        # A moment, not a file read after the fact: nothing asked for after the backup ended is in it.
        later = {d.username for d in traffic.joined + traffic.invited if d.sent > ended}
        assert not later & (members | invites), later & (members | invites)
        assert later, "the traffic went on after the backup"

        # The restore drill (README, "Backups"): stop, set the old files aside, copy the backup in, start.
        assert serve.terminate(timeout=30) == 0
    finally:
        serve.stop()
    aside = tmp_path / "aside"
    aside.mkdir()
    for old in data.glob("smsbot.db*"):
        old.rename(aside / old.name)
    shutil.copy2(target, db)
    restored, base = start_smsbot("serve", tmp_path, env, tmp_path / "restored.log")
    try:
        sessions_then = {**cookies, **{d.username: d.cookie for d in traffic.joined if d.acked < started}}
        for username, cookie in sessions_then.items():
            answer = auth(http, base, cookie)
            assert answer.status_code == 200 and answer.headers["X-Auth-User"] == username, (username, answer)
        # An invite of that moment still works: the code from its text brings a PIN and a sign-in.
        before = len([m for m in emu.sent if m.to == phone(200)])
        text_in(http, base, "form", phone(200), codes["pending0"])
        pin = only(PIN, wait_text(emu, phone(200), lambda t: "PIN is" in t, "the PIN", after=before).text)
        assert login(http, base, "pending0", pin).status_code == 303
    finally:
        restored.stop()
    print(f"backup under load: copied members {counts['members']}, invites {counts['invites']}, sessions "
          f"{counts['sessions']}; of the moment it started {len(members_then)} members and {len(invites_then)} "
          f"invites, all in the copy; {len(during)} joins and invites acknowledged while it ran, "
          f"the slowest INVITE webhook then {slowest * 1000:.0f} ms, {sum(traffic.auth_status.values())} /auth answers "
          f"all 200; restored: {len(sessions_then)} sessions "
          f"answer 200, a pending invite's code signs in; backup took {ended - started:.2f} s")


def big_database(path: pathlib.Path) -> int:
    """A real smsbot database of about 50 MB: the schema, and ballast rows in the audit log. Its row count."""
    store = SqliteStore(path)

    async def create() -> None:
        await store.open()
        await store.close()

    asyncio.run(create())
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO events (at, actor, action, detail) VALUES (?, 'test', 'ballast', ?)",
                         ((i, os.urandom(100).hex()) for i in range(200_000)))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return 200_000


def whole_or_absent(target: pathlib.Path, events: int) -> bool:
    """Whether there is a file at `target` (then it must be a whole, valid copy)."""
    if not os.path.lexists(target):
        return False
    assert rows(target, "PRAGMA integrity_check") == [("ok",)], target
    assert rows(target, "SELECT count(*) FROM events") == [(events,)], target
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    return True


@pytest.mark.slow
def test_a_backup_killed_mid_copy_leaves_no_file_that_looks_complete(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "smsbot.db"
    events = big_database(db)
    out = tmp_path / "backups"
    out.mkdir()

    # Killed while the partial file grows: nothing under the target's name.
    target = out / "caught.db"
    backup = backup_process(tmp_path, db, target, "caught")
    backup.start()
    assert backup.proc is not None
    caught = 0
    while backup.proc.poll() is None and not caught:
        for partial in partials(out):
            try:
                caught = partial.stat().st_size
            except FileNotFoundError:
                continue
            if caught:
                backup.proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.0005)
    backup.proc.wait(timeout=30)
    backup.stop()
    assert backup.proc.returncode == -signal.SIGKILL, "the backup finished before it could be caught mid-copy"
    assert not os.path.lexists(target)
    left = partials(out)
    assert len(left) == 1 and 0 < left[0].stat().st_size < db.stat().st_size, [p.stat() for p in left]
    print(f"killed mid-copy at {caught} of {db.stat().st_size} bytes: no {target.name}, a partial file of "
          f"{left[0].stat().st_size} bytes under a hidden name")

    # Killed at random moments of a whole run: each time, no file, or a whole and valid one.
    clean = out / "clean.db"
    begun = time.monotonic()
    finished = backup_process(tmp_path, db, clean, "clean")
    finished.start()
    assert finished.proc is not None and finished.proc.wait(timeout=60) == 0, finished.output()
    finished.stop()
    took = time.monotonic() - begun
    assert whole_or_absent(clean, events)
    outcomes = []
    for n in range(5):
        target = out / f"random{n}.db"
        victim = backup_process(tmp_path, db, target, f"random{n}")
        victim.start()
        assert victim.proc is not None
        time.sleep(random.uniform(0.5, 1.0) * took)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=30)
        victim.stop()
        outcomes.append("whole" if whole_or_absent(target, events) else "absent")
    print(f"a whole backup took {took:.2f} s; killed at random moments: {outcomes}")

    # An existing file is never replaced.
    before = clean.stat()
    again = backup_process(tmp_path, db, clean, "again")
    again.start()
    assert again.proc is not None and again.proc.wait(timeout=60) != 0
    again.stop()
    assert "exists" in again.output() and "never replaces" in again.output(), again.output()
    assert (clean.stat().st_ino, clean.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_backup_refuses_postgresql_and_names_pg_dump(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    # No server listens there: the refusal comes before any connection.
    monkeypatch.setenv("SMSBOT_DB", "postgresql://smsbot:s3cret-pw@127.0.0.1:1/smsbot")
    with pytest.raises(SystemExit) as exit_status:
        cli.main(["backup", str(tmp_path / "copy.db")])
    assert exit_status.value.code != 0
    said = capsys.readouterr()
    assert "pg_dump" in said.err and "pg_restore" in said.err, said.err
    assert "s3cret-pw" not in said.err + said.out
    assert not (tmp_path / "copy.db").exists()


def test_backup_of_a_missing_database_makes_nothing(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SMSBOT_DB", str(tmp_path / "none.db"))
    with pytest.raises(SystemExit) as exit_status:
        cli.main(["backup", str(tmp_path / "copy.db")])
    assert exit_status.value.code != 0
    assert f"there is no SQLite database at {tmp_path / 'none.db'}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [], "neither a copy nor a database was created"
