"""One process per SQLite file (contract: "Install and start"): a second `smsbot serve` or `smsbot dev` on the file
another one holds refuses to start, names the file and points to PostgreSQL; the first goes on unharmed, and once it
is SIGKILLed the file is free again (the kernel drops the lock with its holder)."""

from __future__ import annotations

import os
import pathlib
import signal

import pytest
import requests

from smsbot.errors import DatabaseInUse
from smsbot.store import SqliteStore

from support.client import auth, new_member, text_in
from support.constants import ADMIN, ADMIN_MSISDN, NUMBER, SECRET
from support.procs import SmsbotProcess, clean_env, free_port, serve_env, start_smsbot, wait_for
from support.vonage_emulator import VonageEmulator

ALICE = "14155550134"
BOB = "14155550135"


def refused(second: SmsbotProcess, db: str) -> str:
    """Start `second`, which must exit non-zero at once, having named `db` and PostgreSQL: its output."""
    second.start()
    assert second.proc is not None
    try:
        code = second.proc.wait(timeout=30)
    finally:
        second.stop()
    output = second.output()
    assert code != 0, f"the second process on {db} was expected to refuse to start:\n{output}"
    assert f"SQLite database {db} is in use" in output, output
    assert "several instances need PostgreSQL (SMSBOT_DB=postgresql://...)" in output, output
    assert "applying migration" not in output and "ready (schema version" not in output, (
        f"the refused process opened the database:\n{output}")
    return output


def second_serve(tmp: pathlib.Path, emu: VonageEmulator, db: pathlib.Path, name: str) -> SmsbotProcess:
    port = free_port()
    return SmsbotProcess(["serve", "--port", str(port)], tmp, serve_env(emu, port, db, SECRET, NUMBER),
                         tmp / f"{name}.log")


@pytest.mark.slow
def test_a_second_serve_on_the_file_refuses_and_the_first_serves_on_until_killed(
        tmp_path: pathlib.Path, emu: VonageEmulator, http: requests.Session) -> None:
    db = tmp_path / "smsbot.db"
    first, base = start_smsbot("serve", tmp_path, lambda port: serve_env(emu, port, db, SECRET, NUMBER),
                               tmp_path / "first.log")
    try:
        cookie = new_member(emu, http, base, ALICE, "alice")

        output = refused(second_serve(tmp_path, emu, db, "second"), str(db))
        print(output)

        # The first is unharmed: it answers, the session works, and a REVOKE through it ends the session.
        assert http.get(f"{base}/healthz", timeout=10).status_code == 200
        assert auth(http, base, cookie).status_code == 200
        bob = new_member(emu, http, base, BOB, "bob")
        text_in(http, base, "form", ADMIN_MSISDN, "REVOKE alice")
        assert auth(http, base, cookie).status_code == 401
        assert auth(http, base, bob).headers.get("X-Auth-User") == "bob"

        # SIGKILL leaves the lock file behind, but not the lock: a new serve starts on the file.
        os.kill(first.pid, signal.SIGKILL)
        assert first.proc is not None and first.proc.wait(timeout=10) == -signal.SIGKILL
        assert (tmp_path / "smsbot.db.lock").exists()
        after, after_base = start_smsbot("serve", tmp_path, lambda port: serve_env(emu, port, db, SECRET, NUMBER),
                                         tmp_path / "after.log")
        try:
            assert auth(http, after_base, bob).headers.get("X-Auth-User") == "bob"
            assert auth(http, after_base, cookie).status_code == 401
        finally:
            after.stop()
    finally:
        first.stop()


@pytest.mark.slow
def test_dev_holds_its_file_against_dev_and_serve_however_the_path_is_spelled(
        tmp_path: pathlib.Path, emu: VonageEmulator, http: requests.Session) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "link").symlink_to(work)
    first, base = start_smsbot("dev", work, lambda port: clean_env({}), tmp_path / "dev.log")
    try:
        assert (work / "smsbot-dev.db").exists()
        # The same file through a symlinked folder, from another working directory.
        through_link = str(tmp_path / "link" / "smsbot-dev.db")
        port = free_port()
        refused(SmsbotProcess(["dev", "--port", str(port)], tmp_path, clean_env({"SMSBOT_DB": through_link}),
                              tmp_path / "dev2.log"), through_link)
        refused(second_serve(tmp_path, emu, work / "smsbot-dev.db", "serve"), str(work / "smsbot-dev.db"))
        assert http.get(f"{base}/healthz", timeout=10).status_code == 200
        assert first.proc is not None and first.proc.poll() is None
        # And it still takes texts and answers them.
        sent = http.post(f"{base}/dev/phone/send", json={"from": ADMIN, "text": "LIST"}, timeout=10)
        assert sent.status_code == 200, sent.text
        wait_for(lambda: any(t["direction"] == "out" for t in http.get(f"{base}/dev/phone/texts", timeout=10)
                             .json()["texts"]), 10, "the reply to LIST on the dev phone page")
    finally:
        first.stop()


async def test_a_second_store_in_one_process_is_refused_too(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "smsbot.db"
    first = SqliteStore(path)
    await first.open()
    try:
        second = SqliteStore(path)
        with pytest.raises(DatabaseInUse) as refusal:
            await second.open()
        assert str(path) in str(refusal.value) and f"pid {os.getpid()}" in str(refusal.value)
        assert await first.healthy()
    finally:
        await first.close()
    again = SqliteStore(path)
    await again.open()  # closed, the file is free again
    await again.close()

