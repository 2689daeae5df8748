"""Durability under process death (security.md §5; checklist items 4, 29 and 31).

`smsbot serve` is SIGKILLed at random moments while inbound texts stream in, more than a hundred times, and
restarted each time; Vonage's retries are played by re-posting earlier messages. After every kill, a copy of the
dead server's database files is checked: `PRAGMA integrity_check` is ok, every acknowledged message is recorded,
and the outbox holds exactly the texts that the recorded messages cause (each transaction all or nothing). At the
end every text has gone out through the real Vonage SDK to the emulator, texts claimed by a killed worker were sent
after the restart, and no outbox row was ever sent with two different bodies (so no number got two different PINs
for one request). A second test SIGTERMs the server with webhooks and an SMS send in flight. (A SIGKILL cannot
drop writes the OS has buffered: power loss, the reason for synchronous=FULL, needs something like LazyFS.)

Starting `python -m smsbot serve` costs most of a second of imports, too slow for a hundred restarts. So a small
single-threaded "fork server" process is forked before the emulator's thread exists, with smsbot, web and the
Vonage SDK imported; each server is a fork of it that calls `smsbot.web.cli.main(["serve", ...])`, the very code path
of the console script. Three servers (the first, one in the middle and the last) are real `python -m smsbot serve`
processes, and so is the one SIGTERMed in the second test: a fork ends with os._exit and would skip the
interpreter's exit, where leftover threads are joined.

This storm runs on SQLite. On PostgreSQL, tests/test_crash_instances.py runs it across three instances, killing
all of them at once now and then: there, an instance that restarts is a new sender, which waits 1 s +
SMSBOT_VONAGE_TIMEOUT before its first send, so at this test's pace (a kill within 0.3 s of /healthz) nothing would
ever be sent between kills.

The random choices (when to kill, which texts, replays and retries) come from one seed, drawn afresh each run.
A failure names it ("replay with SMSBOT_CRASH_SEED=..."), and so does the captured output; run again with
`SMSBOT_CRASH_SEED=<seed> .venv/bin/pytest tests/test_crash.py` to replay the same choices (the timing of a real
server under load cannot be replayed, so a replay makes a failure likely again, not certain).
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import random
import signal
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from support.constants import INVITE_CODE, PIN
from support.crash import (
    MEMBERS,
    SHUTDOWN_TIMEOUT,
    Deployment,
    ForkServer,
    Msg,
    PortTaken,
    Running,
    Traffic,
    check_effects,
    check_provider_side,
    key_of,
    outbox_rows,
    quiet_port,
    read_db,
    replay_hint,
    sent_by_ref,
    snapshot,
    wait_drained,
    wait_until,
    web_login,
)
from support.vonage_emulator import SMS_PATH, VonageEmulator, running_emulator

pytestmark = pytest.mark.slow

MIN_CYCLES = 100  # kills of a healthy server
MAX_CYCLES = 140
CYCLE_DEADLINE = 70.0  # seconds for all the kill/restart cycles
EARLY_KILL_SHARE = 0.1  # some kills land while the server is still starting
KILL_DELAY = (0.0, 0.3)  # seconds after /healthz answered
REAL_CYCLE = 50  # besides the first and the last server, this one is a real `python -m smsbot serve` too


@pytest.fixture
def emu() -> Iterator[VonageEmulator]:
    with running_emulator() as emulator:
        yield emulator


# ------------------------------------------------------------------------------------------------ SIGKILL


@dataclasses.dataclass
class Storm:
    """One run of the SIGKILL test: the deployment, the traffic, the server running now, and what the kills did."""

    deployment: Deployment
    traffic: Traffic
    emu: VonageEmulator
    rng: random.Random
    snapshots: pathlib.Path
    http: requests.Session = dataclasses.field(default_factory=requests.Session)
    server: Running | None = None
    kills: int = 0  # of a healthy server
    early_kills: int = 0  # during start-up
    real_kills: int = 0  # of a real `python -m smsbot serve`
    claimed_at_crash: set[int] = dataclasses.field(default_factory=set)  # outbox rows a killed worker held

    def __post_init__(self) -> None:
        self.http.trust_env = False

    def close(self) -> None:
        self.traffic.stop.set()
        if self.server is not None:
            self.server.kill()
        for thread in self.traffic._threads:
            thread.join(timeout=10)
        self.http.close()
        self.deployment.close()


def make_members(storm: Storm) -> None:
    """Members, without kills, on a real `python -m smsbot serve`: each invited, its code sent back, a PIN out."""
    traffic, emu = storm.traffic, storm.emu
    storm.server = storm.deployment.start_healthy(real=True)
    for msisdn, username in MEMBERS.items():
        assert traffic.post(storm.http, traffic.invite(msisdn, username))
    for msisdn in MEMBERS:
        wait_until(lambda: any(s.to == msisdn for s in emu.sent), 15, f"the invite to {msisdn}")
        invite = next(s for s in list(emu.sent) if s.to == msisdn)
        invite_code = INVITE_CODE.search(invite.text)
        assert invite_code, invite.text
        assert traffic.post(storm.http, traffic.code(msisdn, invite_code.group(1)))
    for msisdn in MEMBERS:
        wait_until(lambda: any(s.to == msisdn and "PIN" in s.text for s in emu.sent), 15,
                   f"the first PIN of {msisdn}")


def kill_and_restart(storm: Storm) -> None:
    """The storm: texts stream in from several threads while the server is killed and restarted, and the dead
    server's files are checked after every kill."""
    deployment, rng = storm.deployment, storm.rng
    storm.traffic.start()
    cycle_deadline = time.monotonic() + CYCLE_DEADLINE
    cycle = 0
    while storm.kills < MIN_CYCLES and cycle < MAX_CYCLES and time.monotonic() < cycle_deadline:
        cycle += 1
        real = cycle == REAL_CYCLE
        early = cycle > 1 and not real and rng.random() < EARLY_KILL_SHARE
        if storm.server is None:
            storm.server = deployment.start(real=real)
            if early:
                time.sleep(rng.uniform(0.0, 0.06))
            else:
                with contextlib.suppress(PortTaken):
                    deployment.wait_healthy(storm.server)
        server = storm.server
        if not early and server.poll() is None:
            time.sleep(rng.uniform(*KILL_DELAY))
        real = server.real
        code = server.kill()
        if code != -signal.SIGKILL and deployment.port_taken(server):
            deployment.port = quiet_port()  # not a cycle: try again on another port
            storm.server = None
            continue
        assert code == -signal.SIGKILL, f"cycle {cycle}: exit code {code}, not killed:\n{deployment.log_tail()}"
        storm.server = None
        if early:
            storm.early_kills += 1
        else:
            storm.kills += 1
            storm.real_kills += real
        check_dead_server(storm, cycle)


def check_dead_server(storm: Storm, cycle: int) -> None:
    """The dead server's files, checked untouched (no server runs until the next cycle): every acknowledged message
    recorded, with its effects once."""
    acked = storm.traffic.acked()
    copy = snapshot(storm.deployment.db, storm.snapshots)
    try:
        facts = read_db(copy)
        check_effects(facts, storm.traffic, acked, f"after kill {cycle}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- server log (tail) ---\n{storm.deployment.log_tail(lines=40)}") from None
    storm.claimed_at_crash |= facts.sending


def retry_on_the_last_start(storm: Storm) -> None:
    """The last start, a real process: Vonage retries everything never acknowledged, and some that were; then the
    outbox drains, the texts killed workers held included."""
    traffic = storm.traffic
    storm.server = storm.deployment.start_healthy(real=True)
    with traffic.lock:
        pending = [m for m in traffic.messages.values() if not m.acked]
        acked_msgs = [m for m in traffic.messages.values() if m.acked]
    for msg in pending:
        assert traffic.post(storm.http, msg), f"retry of {msg.mid} not acknowledged by a healthy server"
    for msg in storm.rng.sample(acked_msgs, min(100, len(acked_msgs))):
        assert traffic.post(storm.http, msg), f"replay of {msg.mid} not acknowledged by a healthy server"
        traffic.replays += 1
    wait_drained(storm.deployment.db, 40, storm.claimed_at_crash)


def check_the_last_pins_sign_in(storm: Storm) -> None:
    """The PIN each member got last is the one that signs them in."""
    rows = outbox_rows(storm.deployment.db)
    by_ref = sent_by_ref(storm.emu)
    for msisdn, username in MEMBERS.items():
        last = max(i for i, r in rows.items() if r["phone_key"] == key_of(msisdn) and r["kind"] == "pin")
        pin = PIN.search(by_ref[f"smsbot-{last}"][0].text)
        assert pin, by_ref[f"smsbot-{last}"][0].text
        assert web_login(storm.deployment.base, username, pin.group(0)) == 303, f"{username} cannot sign in"


def stop_with_sigterm(storm: Storm) -> float:
    """SIGTERM the last server: it exits with 0, without a traceback, within the shutdown timeout (+2 s). The
    seconds it took."""
    server = storm.server
    assert server is not None and server.proc is not None and server.proc.proc is not None
    stopping = time.monotonic()
    server.proc.proc.send_signal(signal.SIGTERM)
    stop_code = server.wait(SHUTDOWN_TIMEOUT + 2)
    stop_seconds = time.monotonic() - stopping
    output = server.proc.output()
    server.kill()  # if it is still running
    storm.server = None
    assert stop_code == 0, (f"exit code {stop_code} after SIGTERM "
                            f"(None: still running after {SHUTDOWN_TIMEOUT + 2:g} s)")
    assert "Traceback" not in output, output
    return stop_seconds


def check_the_final_state(storm: Storm) -> tuple[dict[int, Any], int]:
    """Everything acknowledged, each effect once, every text sent (texts a killed worker held, after a second
    claim), one invite text per INVITE, no error logged. The outbox rows and the count of duplicate sends."""
    deployment, traffic, emu = storm.deployment, storm.traffic, storm.emu
    facts = read_db(deployment.db)
    everything = traffic.acked()
    assert everything == set(traffic.messages), "every message is acknowledged in the end"
    check_effects(facts, traffic, everything, "after the final shutdown")
    rows = outbox_rows(deployment.db)
    stuck = {i: (r["kind"], r["state"]) for i, r in rows.items() if r["state"] != "sent"}
    assert not stuck, f"outbox rows not sent in the end: {dict(list(stuck.items())[:10])}"

    duplicates = check_provider_side(emu, rows, storm.claimed_at_crash)
    not_retried = [i for i in storm.claimed_at_crash if rows[i]["attempts"] < 2]
    assert not not_retried, f"rows claimed by a killed worker but not claimed again after restart: {not_retried}"
    assert storm.claimed_at_crash, "no kill fell while the worker held a claim: the recovery path went untested"
    for msg in traffic.messages.values():
        if msg.text.startswith("INVITE"):
            invitee = msg.text.split()[1].lstrip("+")
            bodies = {s.text for s in list(emu.sent) if s.to == invitee and "invited" in s.text}
            assert len(bodies) == 1, f"{msg.text!r} ({msg.mid}): the invitee got {len(bodies)} invite texts"
    log = deployment.fork_log.read_text(encoding="utf-8", errors="replace")
    problems = [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line]
    assert not problems, f"the forked servers logged errors: {problems[:10]}"
    return rows, duplicates


def test_sigkill_at_random_moments_loses_nothing_acknowledged(forker: ForkServer, emu: VonageEmulator,
                                                              tmp_path: pathlib.Path, crash_seed: int) -> None:
    started = time.monotonic()
    deployment = Deployment(tmp_path, emu, forker)
    storm = Storm(deployment, Traffic(deployment, crash_seed), emu, random.Random(crash_seed), tmp_path / "snapshot")
    traffic = storm.traffic
    try:
        make_members(storm)
        kill_and_restart(storm)
        cycles_done = time.monotonic()
        traffic.halt()
        assert storm.kills >= MIN_CYCLES, f"only {storm.kills} kill/restart cycles in {CYCLE_DEADLINE:g} s"
        assert not traffic.unexpected, f"webhooks answered other than 2xx: {traffic.unexpected[:5]}"
        acked_before = traffic.acked()
        committed_unacked = read_db(snapshot(deployment.db, storm.snapshots)).inbound - acked_before

        retry_on_the_last_start(storm)
        drained = time.monotonic()
        check_the_last_pins_sign_in(storm)
        stop_seconds = stop_with_sigterm(storm)
        rows, duplicates = check_the_final_state(storm)

        elapsed = time.monotonic() - started
        print(f"crash summary: {storm.kills} SIGKILL cycles of a healthy server ({storm.real_kills} of a real "
              f"`python -m smsbot serve`) + {storm.early_kills} during start-up, in {cycles_done - started:.1f} s; "
              f"{len(traffic.messages)} messages, {traffic.posts} webhook posts, {len(acked_before)} acked during "
              f"the kills, {len(committed_unacked)} committed but not acked (kill between COMMIT and response), "
              f"{traffic.replays} re-posts of an earlier messageId ({traffic.unacked_replays} of unacked ones); "
              f"{len(rows)} texts, {len(storm.claimed_at_crash)} claimed by a killed worker and sent after restart, "
              f"{duplicates} duplicate(s) of accepted texts (kill between provider acceptance and mark-sent); "
              f"drain {drained - cycles_done:.1f} s, SIGTERM exit in {stop_seconds:.2f} s; "
              f"elapsed {elapsed:.1f} s")
    except BaseException as exc:
        exc.add_note(f"replay with {replay_hint(crash_seed)}")
        raise
    finally:
        storm.close()


# ------------------------------------------------------------------------------------------------ SIGTERM


@dataclasses.dataclass
class Burst:
    """30 webhooks on connections opened beforehand, sent at once; three send only part of their body, and never
    the rest; ten hold back their body's last byte until `finish_held` (after the SIGTERM: then they are surely in
    flight, however fast the others were answered). Each connection's answer is read on its own thread."""

    traffic: Traffic
    port: int
    messages: list[Msg] = dataclasses.field(default_factory=list)
    sockets: dict[str, socket.socket] = dataclasses.field(default_factory=dict)
    threads: list[threading.Thread] = dataclasses.field(default_factory=list)
    answered: dict[str, float] = dataclasses.field(default_factory=dict)  # message id: when its answer began
    held: dict[str, bytes] = dataclasses.field(default_factory=dict)  # message id: the byte it holds back
    first_answer: threading.Event = dataclasses.field(default_factory=threading.Event)

    def send(self) -> None:
        self.messages = [self.traffic.invite() for _ in range(30)]
        partial = {m.mid for m in self.messages[:3]}
        self.held = {m.mid: b"" for m in self.messages[3:13]}
        for msg in self.messages:
            self.sockets[msg.mid] = socket.create_connection(("127.0.0.1", self.port), timeout=20)
        self.threads = [threading.Thread(target=self.read_answer, args=(m,), daemon=True) for m in self.messages]
        for thread in self.threads:
            thread.start()
        for msg in self.messages:
            body = urllib.parse.urlencode(self.traffic.fields(msg)).encode()
            head = (f"POST /webhooks/inbound HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                    "Content-Type: application/x-www-form-urlencoded\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
            if msg.mid in self.held:
                body, self.held[msg.mid] = body[:-1], body[-1:]
            self.sockets[msg.mid].sendall(head + (body[:20] if msg.mid in partial else body))

    def finish_held(self) -> None:
        for mid, rest in self.held.items():
            self.sockets[mid].sendall(rest)

    def read_answer(self, msg: Msg) -> None:
        data, first_at = b"", 0.0
        with contextlib.suppress(OSError):
            while chunk := self.sockets[msg.mid].recv(4096):
                first_at, data = first_at or time.monotonic(), data + chunk
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
        if self.traffic.record(msg, status, data.decode("utf-8", "replace")):
            self.answered[msg.mid] = first_at
            self.first_answer.set()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=20)

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()


@dataclasses.dataclass
class Exit:
    """How a SIGTERMed server ended: its exit code (None: still running), when, and its output."""

    code: int | None
    after: float  # seconds after SIGTERM
    db_closed_after: float | None  # seconds after SIGTERM that the app had closed its database (its WAL was gone)
    output: str


def wait_for_the_exit(server: Running, deployment: Deployment, sigterm_at: float, limit: float) -> Exit:
    """Wait for the exit (a while past the limit, to measure it), noting when the app closed its database; then
    make sure the server is gone."""
    assert server.proc is not None
    wal = deployment.db.with_name(deployment.db.name + "-wal")
    db_closed_after: float | None = None
    while server.poll() is None and time.monotonic() - sigterm_at < limit + 12:
        if db_closed_after is None and not wal.exists():
            db_closed_after = time.monotonic() - sigterm_at
        time.sleep(0.01)
    code = server.poll()
    exit_after = time.monotonic() - sigterm_at
    output = server.proc.output()
    server.kill()  # if it is still running
    return Exit(code, exit_after, db_closed_after, output)


def check_sent_after_a_restart(deployment: Deployment, emu: VonageEmulator, burst: Burst, acked: set[str],
                               hung_ref: str) -> None:
    """After a restart the texts go out, the one the stopped worker held included."""
    emu.clear_faults()
    server = deployment.start_healthy()
    try:
        wait_drained(deployment.db, 20)
        rows = outbox_rows(deployment.db)
        by_ref = sent_by_ref(emu)
        unsent = [i for i, r in rows.items() if r["state"] != "sent" or f"smsbot-{i}" not in by_ref]
        assert not unsent, f"outbox rows not sent after the restart: {unsent}"
        assert hung_ref.startswith("smsbot-") and rows[int(hung_ref[7:])]["attempts"] >= 2, (
            f"the text whose send hung ({hung_ref}) was not claimed again after the restart")
        for msg in burst.messages:
            invitee = msg.text.split()[1].lstrip("+")
            if msg.mid in acked:
                assert any(s.to == invitee for s in list(emu.sent)), f"acknowledged {msg.text!r}: no invite sent"
    finally:
        server.kill()


def test_sigterm_finishes_in_flight_webhooks_and_exits_within_the_shutdown_timeout(
        forker: ForkServer, emu: VonageEmulator, tmp_path: pathlib.Path, crash_seed: int) -> None:
    """A real `python -m smsbot serve` (a fork would skip the interpreter's own exit, where threads are joined),
    SIGTERMed while ~30 webhooks are in flight and the outbox worker waits on a hanging Vonage request."""
    deployment = Deployment(tmp_path, emu, forker)
    traffic = Traffic(deployment, crash_seed)
    emu.hang_seconds = 60.0  # longer than the test: the hanging request never answers
    burst = Burst(traffic, deployment.port)
    server: Running | None = None
    try:
        server = deployment.start_healthy(real=True)
        assert server.proc is not None and server.proc.proc is not None
        with requests.Session() as http:
            http.trust_env = False
            emu.inject("hang", path=SMS_PATH)
            assert traffic.post(http, traffic.invite())
        wait_until(lambda: any(r.fault == "hang" for r in list(emu.requests)), 10, "the outbox's hanging send")
        hung_ref = next(r for r in list(emu.requests) if r.fault == "hang").params.get("client-ref", "")

        # SIGTERM as soon as the first webhook of the burst is answered, so the others are being handled.
        burst.port = deployment.port
        burst.send()
        assert burst.first_answer.wait(10), "no webhook of the burst was acknowledged"
        sigterm_at = time.monotonic()
        server.proc.proc.send_signal(signal.SIGTERM)
        burst.finish_held()  # requests the server is reading at the SIGTERM: it must finish them
        limit = SHUTDOWN_TIMEOUT + 2
        ended = wait_for_the_exit(server, deployment, sigterm_at, limit)
        server = None
        burst.join()

        # Nothing acknowledged is lost: every 2xx has its effects, exactly once.
        acked = traffic.acked()
        check_effects(read_db(deployment.db), traffic, acked, "after SIGTERM")
        after_sigterm = [mid for mid, at in burst.answered.items() if at > sigterm_at]
        check_sent_after_a_restart(deployment, emu, burst, acked, hung_ref)

        closed = ended.db_closed_after
        print(f"\nsigterm summary: {len(acked & {m.mid for m in burst.messages})}/{len(burst.messages)} webhooks "
              f"of the burst acknowledged, {len(after_sigterm)} of them answered after SIGTERM; database closed "
              f"{closed if closed is None else round(closed, 2)} s and process exited "
              f"{ended.after:.2f} s after SIGTERM (exit code {ended.code})")
        assert after_sigterm, "no webhook in flight at SIGTERM was finished (all were answered before it)"
        assert "Traceback" not in ended.output, ended.output
        assert ended.code == 0 and ended.after <= limit, (
            f"`smsbot serve` did not exit within SMSBOT_SHUTDOWN_TIMEOUT={SHUTDOWN_TIMEOUT:g} s + 2 s of SIGTERM: "
            f"exit code {ended.code} ({'still running, killed' if ended.code is None else 'exited'}) after "
            f"{ended.after:.2f} s; the app had closed its database {closed} s after SIGTERM, while the outbox's "
            f"Vonage request ({hung_ref}) was hanging")
    finally:
        if server is not None:
            server.kill()
        burst.close()
        deployment.close()
