"""The machinery of the crash tests (tests/test_crash.py, tests/test_crash_instances.py): a fork server that
starts `smsbot serve` in a fraction of a second, a deployment that kills and restarts it, the traffic Vonage would
send meanwhile, and the checks of what a dead server's database holds. tests/test_crash.py's docstring says why."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import pathlib
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Collection
from typing import Any, Protocol

import requests
import vonage  # noqa: F401 - imported here so the forked servers need not import it
import vonage_http_client  # noqa: F401
import vonage_sms  # noqa: F401
import vonage_verify  # noqa: F401

import smsbot.web.cli
from smsbot.keys import Keys

from .constants import ADMIN_MSISDN, NUMBER, PIN
from .procs import SmsbotProcess, clean_env, free_port, waiting_texts
from .service import CSRF_INPUT
from .vonage_emulator import SentSms, VonageEmulator

SECRET = "crash-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
MEMBERS = {f"1415555011{i}": f"member{i}" for i in range(1, 6)}
# The storm's INVITEs come from these admins in turn (the members' from ADMIN_MSISDN): an admin number gets at most
# 60 replies an hour (smsbot.pipeline.ADMIN_REPLIES_PER_HOUR) and its texts past that are not acted on, so one admin
# would stop causing invites after 60 INVITEs.
STORM_ADMINS = tuple(f"141555501{i:02d}" for i in range(20, 60))
SHUTDOWN_TIMEOUT = 5.0
KEYS = Keys(SECRET)
SEED_VARIABLE = "SMSBOT_CRASH_SEED"

CLIENTS = 3
PACE = 0.03  # seconds each client waits between posts
REPLAY_SHARE = 0.1  # share of posts that repeat an earlier message, acknowledged or not
RETRY_SHARE = 0.8  # share of failed posts whose message is posted again next
INVITE_SHARE = 0.4

def key_of(msisdn: str) -> str:
    return KEYS.phone_key("+" + msisdn)


# ------------------------------------------------------------------------------------------------ the fork server


class ForkServer:
    """A single-threaded helper process that forks `smsbot serve` children on request and reaps them.

    The test process itself has threads (the emulator, the clients); forking a server from it could copy a lock
    some other thread holds. The helper is forked once, before any of those threads exist.
    """

    def __init__(self, error_log: pathlib.Path):
        requests_r, requests_w = os.pipe()
        replies_r, replies_w = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12+ warns about fork with threads
            pid = os.fork()
        if pid == 0:  # the helper: never returns into pytest
            code = 1
            try:
                os.close(requests_w)
                os.close(replies_r)
                code = _fork_server_loop(requests_r, replies_w)
            except BaseException:
                with contextlib.suppress(Exception):
                    error_log.write_text(traceback.format_exc(), encoding="utf-8")
            finally:
                os._exit(code)
        os.close(requests_r)
        os.close(replies_w)
        self.pid = pid
        self.error_log = error_log
        self._to = os.fdopen(requests_w, "wb")
        self._from = os.fdopen(replies_r, "rb")
        self._lock = threading.Lock()

    def _ask(self, **request: Any) -> dict[str, Any]:
        with self._lock:
            self._to.write(json.dumps(request).encode() + b"\n")
            self._to.flush()
            line = self._from.readline()
        if not line:
            error = self.error_log.read_text() if self.error_log.exists() else ""
            raise AssertionError(f"the fork server died: {error}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise AssertionError(f"fork server: {reply['error']}")
        return reply

    def spawn(self, env: dict[str, str], port: int, log: pathlib.Path, cwd: pathlib.Path) -> int:
        """Fork a child that runs `smsbot serve --host 127.0.0.1 --port <port>`; its output goes to `log`."""
        return int(self._ask(op="spawn", env=env, port=port, log=str(log), cwd=str(cwd))["pid"])

    def wait(self, pid: int, timeout: float) -> int | None:
        """The child's exit code (negative: killed by that signal), or None if it is still running."""
        code = self._ask(op="wait", pid=pid, timeout=timeout)["code"]
        return None if code is None else int(code)

    def close(self) -> None:
        """Stop the helper; it SIGKILLs and reaps any child still running."""
        with contextlib.suppress(OSError, ValueError):
            self._to.write(b'{"op": "quit"}\n')
            self._to.flush()
        for stream in (self._to, self._from):
            with contextlib.suppress(OSError):
                stream.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done, _ = os.waitpid(self.pid, os.WNOHANG)
            if done:
                return
            time.sleep(0.01)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)


def _fork_server_loop(requests_fd: int, replies_fd: int) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the test process ends us (and our children) through the pipe
    inbox = os.fdopen(requests_fd, "rb")
    outbox = os.fdopen(replies_fd, "wb")
    children: set[int] = set()
    try:
        for line in inbox:
            request = json.loads(line)
            reply: dict[str, Any]
            try:
                if request["op"] == "quit":
                    break
                if request["op"] == "spawn":
                    pid = os.fork()
                    if pid == 0:
                        inbox.close()
                        outbox.close()
                        _serve(request)  # never returns
                    children.add(pid)
                    reply = {"pid": pid}
                elif request["op"] == "wait":
                    code = _reap(int(request["pid"]), float(request["timeout"]))
                    if code is not None:
                        children.discard(int(request["pid"]))
                    reply = {"code": code}
                else:
                    reply = {"error": f"unknown op {request['op']!r}"}
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            outbox.write(json.dumps(reply).encode() + b"\n")
            outbox.flush()
    finally:
        for pid in children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.waitpid(pid, 0)
    return 0


def _reap(pid: int, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.002)


def _serve(request: dict[str, Any]) -> None:
    """In the forked child: become `smsbot serve` with the given environment, then exit with its exit code."""
    code = 1
    try:
        out = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        sys.stdout = open(1, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)  # noqa: SIM115
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        root = logging.getLogger()  # pytest's capture handlers would swallow the server's log
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.setLevel(logging.WARNING)
        smsbot.web.cli.main(["serve", "--host", "127.0.0.1", "--port", str(request["port"])])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


# ------------------------------------------------------------------------------------------------ servers


class Running:
    """One running server: a fork of the fork server, or a real `python -m smsbot serve` process."""

    def __init__(self, forker: ForkServer | None, pid: int, proc: SmsbotProcess | None = None):
        self.forker = forker
        self.pid = pid
        self.proc = proc
        self.code: int | None = None
        self._released = False

    @property
    def real(self) -> bool:
        return self.proc is not None

    def poll(self) -> int | None:
        if self.code is None:
            if self.proc is not None:
                assert self.proc.proc is not None
                self.code = self.proc.proc.poll()
            else:
                assert self.forker is not None
                self.code = self.forker.wait(self.pid, 0)
        return self.code

    def wait(self, timeout: float) -> int | None:
        if self.code is None:
            if self.proc is not None:
                assert self.proc.proc is not None
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.code = self.proc.proc.wait(timeout)
            else:
                assert self.forker is not None
                self.code = self.forker.wait(self.pid, timeout)
        return self.code

    def kill(self) -> int:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        code = self.wait(10)
        assert code is not None, f"pid {self.pid} survived SIGKILL"
        self.release()
        return code

    def release(self) -> None:
        if self.proc is not None and not self._released:
            self._released = True
            self.proc.stop()  # closes its log and prints it (the real servers log at WARNING: short)


def quiet_port() -> int:
    """A free port below the range the OS hands out for port 0 and for outgoing connections.

    The servers here are killed and restarted on one port, and the traffic threads keep posting to it while no server
    holds it. A port from the OS's range could meanwhile go to another test's server (another pytest-xdist worker);
    one below that range is taken only by someone who picks it on purpose.
    """
    try:
        low = int(pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return free_port()
    picker = random.SystemRandom()
    for _ in range(50):
        port = picker.randrange(max(1024, low - 16384), low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    return free_port()


def crash_env(emu: VonageEmulator, db: str, public_url: str, **extra: str) -> dict[str, str]:
    """The environment of a server under the storm: caps out of the way, the emulator as Vonage."""
    return clean_env({
        "SMSBOT_SECRET": SECRET,
        "SMSBOT_ADMINS": ",".join("+" + n for n in (ADMIN_MSISDN, *STORM_ADMINS)),
        "SMSBOT_NUMBER": NUMBER,
        "SMSBOT_GROUP_NAME": "Crash",
        "SMSBOT_DB": db,
        "SMSBOT_PUBLIC_URL": public_url,
        "SMSBOT_SMS_RATE": "1000",
        "SMSBOT_CONFIRM": "none",
        "SMSBOT_PIN_CAP_HOUR": "100000",
        "SMSBOT_PIN_CAP_DAY": "100000",
        "SMSBOT_DAILY_SMS_BUDGET": "1000000",
        "SMSBOT_LOGIN_FAILURES_PER_MINUTE": "1000",
        "SMSBOT_SHUTDOWN_TIMEOUT": f"{SHUTDOWN_TIMEOUT:g}",
        "VONAGE_API_KEY": emu.api_key,
        "VONAGE_API_SECRET": emu.api_secret,
        "VONAGE_REST_HOST": emu.host,
        "VONAGE_API_HOST": emu.host,
        "REQUESTS_CA_BUNDLE": str(emu.ca_path),
        **extra,
    })


class PortTaken(AssertionError):
    """Another process took the port between two of our servers."""


class Deployment:
    """Everything a server needs (database, port, environment) and how to start one."""

    def __init__(self, tmp: pathlib.Path, emu: VonageEmulator, forker: ForkServer | None):
        self.tmp = tmp
        self.emu = emu
        self.forker = forker
        self.workdir = tmp / "work"
        self.workdir.mkdir()
        self.db = tmp / "data" / "smsbot.db"
        self.db.parent.mkdir()
        self.fork_log = tmp / "forked-servers.log"
        self.port = quiet_port()
        self.starts = 0
        self.health = requests.Session()
        self.health.trust_env = False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        return crash_env(self.emu, str(self.db), self.base, **extra)

    def start(self, real: bool = False) -> Running:
        """Start a server on this deployment's port (without waiting for it to be healthy)."""
        self.starts += 1
        if real:
            log = self.tmp / f"real-server-{self.starts}.log"
            proc = SmsbotProcess(["serve", "--host", "127.0.0.1", "--port", str(self.port)], self.workdir,
                                 self.env(SMSBOT_LOG_LEVEL="WARNING"), log)
            proc.start()
            return Running(None, proc.pid, proc)
        assert self.forker is not None
        with self.fork_log.open("a", encoding="utf-8") as out:
            out.write(f"===== start {self.starts} =====\n")
        return Running(self.forker, self.forker.spawn(self.env(), self.port, self.fork_log, self.workdir))

    def wait_healthy(self, server: Running, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            code = server.poll()
            if code is not None:
                if self.port_taken(server):
                    raise PortTaken(f"port {self.port} is taken")
                raise AssertionError(f"smsbot serve exited with code {code} before it was healthy:\n"
                                     f"{self.log_tail(server)}")
            with contextlib.suppress(requests.RequestException):
                if self.health.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            if time.monotonic() >= deadline:
                raise AssertionError(f"smsbot serve not healthy after {timeout:g} s:\n{self.log_tail(server)}")
            time.sleep(0.005)

    def start_healthy(self, real: bool = False) -> Running:
        for attempt in range(3):
            server = self.start(real)
            try:
                self.wait_healthy(server)
                return server
            except PortTaken:
                server.kill()
                if attempt == 2:
                    raise
                self.port = quiet_port()
            except BaseException:
                server.kill()
                raise
        raise AssertionError("unreachable")

    def port_taken(self, server: Running) -> bool:
        return "address already in use" in self.log_tail(server, lines=20).lower()

    def log_tail(self, server: Running | None = None, lines: int = 60) -> str:
        if server is not None and server.proc is not None:
            text = server.proc.output()
        else:
            text = self.fork_log.read_text(encoding="utf-8", errors="replace") if self.fork_log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        self.health.close()


# ------------------------------------------------------------------------------------------------ inbound traffic


@dataclasses.dataclass
class Msg:
    """One inbound text (one Vonage messageId) and the outbox rows it must cause, once."""

    mid: str
    msisdn: str
    text: str
    effects: tuple[tuple[str, str], ...]  # (phone key, outbox kind)
    posts: int = 0
    acked: bool = False


class Target(Protocol):
    """Where webhooks go: one server's base URL."""

    @property
    def base(self) -> str: ...


class Traffic:
    """Posts inbound webhooks as Vonage does, from several threads, and remembers which were acknowledged."""

    clients = CLIENTS
    pace = PACE
    replay_share = REPLAY_SHARE

    def __init__(self, deployment: Target, seed: int):
        self.deployment = deployment
        self.seed = seed
        self.lock = threading.Lock()
        self.messages: dict[str, Msg] = {}
        self.names: dict[str, str] = {key_of(n): n for n in (ADMIN_MSISDN, *STORM_ADMINS, *MEMBERS)}
        self._admins = itertools.cycle(STORM_ADMINS)
        self._fresh = iter(range(2000, 10000))
        self._serial = 0
        self.posts = 0
        self.replays = 0
        self.unacked_replays = 0
        self.unexpected: list[str] = []
        self.stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # messages
    def _new(self, msisdn: str, text: str, effects: list[tuple[str, str]]) -> Msg:
        self._serial += 1
        msg = Msg(f"0C{self.seed:08X}{self._serial:08d}", msisdn, text, tuple(effects))
        self.messages[msg.mid] = msg
        return msg

    def invite(self, msisdn: str | None = None, username: str | None = None) -> Msg:
        """An INVITE of `msisdn` from ADMIN_MSISDN, or of a fresh number from the next of STORM_ADMINS."""
        with self.lock:
            admin = ADMIN_MSISDN
            if msisdn is None:
                msisdn, admin = f"1415555{next(self._fresh):04d}", next(self._admins)
            self.names[key_of(msisdn)] = msisdn
            text = f"INVITE +{msisdn}" + (f" {username}" if username else "")
            return self._new(admin, text, [(key_of(msisdn), "invite"), (key_of(admin), "reply")])

    def login(self, msisdn: str) -> Msg:
        with self.lock:
            return self._new(msisdn, "LOGIN", [(key_of(msisdn), "pin")])

    def code(self, msisdn: str, code: str) -> Msg:
        """The invitee joins: their first PIN, and a note to the admin who invited them."""
        with self.lock:
            return self._new(msisdn, code, [(key_of(msisdn), "pin"), (key_of(ADMIN_MSISDN), "reply")])

    # posting
    @staticmethod
    def fields(msg: Msg) -> dict[str, str]:
        """The SMS API inbound webhook, as Vonage posts it (a form)."""
        return {"msisdn": msg.msisdn, "to": NUMBER, "messageId": msg.mid, "text": msg.text, "type": "text",
                "keyword": msg.text.split()[0].upper(), "message-timestamp": "2025-03-14 15:09:26"}

    def target(self, rng: random.Random) -> str:
        """The base URL a client posts its next message to."""
        return self.deployment.base

    def post(self, session: requests.Session, msg: Msg, base: str | None = None) -> bool:
        """Post the webhook (to `base`, else the deployment's); True if it was acknowledged (2xx)."""
        try:
            response = session.post(f"{base or self.deployment.base}/webhooks/inbound", data=self.fields(msg),
                                    timeout=(2, 15))
        except requests.RequestException:
            return self.record(msg, 0, "")
        return self.record(msg, response.status_code, response.text)

    def record(self, msg: Msg, status: int, text: str) -> bool:
        """Note one post of `msg` and its answer (status 0: no answer); True if it was acknowledged."""
        ok = status in (200, 204)
        with self.lock:
            msg.posts += 1
            self.posts += 1
            msg.acked = msg.acked or ok
            if status and not ok:
                self.unexpected.append(f"{msg.mid} {msg.text!r}: HTTP {status} {text[:200]}")
        return ok

    def _client(self, number: int) -> None:
        rng = random.Random(self.seed * 100 + number)
        with requests.Session() as session:
            session.trust_env = False
            retry: Msg | None = None  # not acknowledged: Vonage tries again (mostly)
            while not self.stop.is_set():
                with self.lock:
                    earlier = list(self.messages.values()) if rng.random() < self.replay_share else []
                if retry is not None and rng.random() < RETRY_SHARE:
                    msg = retry
                elif earlier:
                    msg = rng.choice(earlier)
                elif rng.random() < INVITE_SHARE:
                    msg = self.invite()
                else:
                    msg = self.login(rng.choice(list(MEMBERS)))
                if msg.posts:
                    with self.lock:
                        self.replays += 1
                        self.unacked_replays += not msg.acked
                ok = self.post(session, msg, self.target(rng))
                retry = None if ok else msg
                self.stop.wait(self.pace if ok else 0.02)

    def start(self) -> None:
        for number in range(self.clients):
            thread = threading.Thread(target=self._client, args=(number,), name=f"client-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def halt(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
            assert not thread.is_alive(), f"{thread.name} did not stop"
        self._threads.clear()

    def acked(self) -> set[str]:
        with self.lock:
            return {m.mid for m in self.messages.values() if m.acked}

    def name(self, key: str) -> str:
        return self.names.get(key, key[:12])


# ------------------------------------------------------------------------------------------------ database checks


@dataclasses.dataclass
class DbFacts:
    inbound: set[str]
    outbox: collections.Counter[tuple[str, str]]
    sending: set[int]


def read_db(path: pathlib.Path) -> DbFacts:
    """Check a database nobody else has open: integrity, foreign keys; return what the checks below need."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
        assert integrity == [("ok",)], f"PRAGMA integrity_check on {path}: {integrity}"
        broken = conn.execute("PRAGMA foreign_key_check").fetchall()
        assert broken == [], f"PRAGMA foreign_key_check on {path}: {broken}"
        inbound = {str(r[0]) for r in conn.execute("SELECT message_id FROM inbound")}
        outbox = collections.Counter({(str(k), str(kind)): int(n) for k, kind, n in conn.execute(
            "SELECT phone_key, kind, count(*) FROM outbox GROUP BY phone_key, kind")})
        sending = {int(r[0]) for r in conn.execute("SELECT id FROM outbox WHERE state = 'sending'")}
    finally:
        conn.close()
    return DbFacts(inbound, outbox, sending)


def snapshot(db: pathlib.Path, into: pathlib.Path) -> pathlib.Path:
    """Copy the files a killed server left (database and WAL, as they are on disk) to check them untouched."""
    if into.exists():
        shutil.rmtree(into)
    into.mkdir()
    copy = into / db.name
    for suffix in ("", "-wal", "-journal"):
        source = db.with_name(db.name + suffix)
        if source.exists():
            shutil.copyfile(source, copy.with_name(copy.name + suffix))
    return copy


def check_effects(facts: DbFacts, traffic: Traffic, acked: set[str], where: str) -> None:
    """Every acknowledged message is recorded, and the outbox holds exactly the texts of the recorded messages."""
    with traffic.lock:
        messages = dict(traffic.messages)
    unknown = facts.inbound - messages.keys()
    assert not unknown, f"{where}: inbound holds message ids nobody sent: {sorted(unknown)[:5]}"
    lost = acked - facts.inbound
    assert not lost, (f"{where}: {len(lost)} acknowledged message(s) missing from the inbound table: "
                      f"{[(m, messages[m].text) for m in sorted(lost)[:5]]}")
    expected: collections.Counter[tuple[str, str]] = collections.Counter()
    for mid in facts.inbound:
        expected.update(messages[mid].effects)
    if facts.outbox != expected:
        problems = []
        for key in sorted(set(expected) | set(facts.outbox)):
            if expected[key] != facts.outbox[key]:
                number, kind = traffic.name(key[0]), key[1]
                causes = [(m.mid, m.text, "acked" if m.mid in acked else "not acked") for m in messages.values()
                          if key in m.effects and m.mid in facts.inbound]
                problems.append(f"{kind} texts to {number}: {facts.outbox[key]} in the outbox, expected "
                                f"{expected[key]} from recorded messages {causes[:4]}")
        raise AssertionError(f"{where}: outbox does not match the recorded messages (exactly once):\n  "
                             + "\n  ".join(problems[:10]))


def wait_drained(db: pathlib.Path, timeout: float, claimed_by_the_dead: Collection[int] = ()) -> None:
    """Wait until the outbox has sent everything; say which rows are stuck if it does not."""
    deadline = time.monotonic() + timeout
    while waiting := waiting_texts(db):
        if time.monotonic() >= deadline:
            described = [f"#{i} {kind} {state}, {attempts} attempt(s)"
                         + (", claimed by a killed worker" if i in claimed_by_the_dead else "")
                         for i, kind, state, attempts in waiting[:10]]
            raise AssertionError(f"the outbox did not drain within {timeout:g} s: {len(waiting)} row(s) left: "
                                 f"{described}")
        time.sleep(0.1)


def outbox_rows(db: pathlib.Path) -> dict[int, sqlite3.Row]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None, timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        return {int(r["id"]): r for r in conn.execute("SELECT id, phone_key, kind, state, attempts FROM outbox")}
    finally:
        conn.close()


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def check_provider_side(emu: VonageEmulator, rows: dict[int, Any], claimed_at_crash: Collection[int]) -> int:
    """The provider's side, once every row is sent: each row sent with one body however often it was sent, to its
    own number, a PIN text with one PIN, and sent again only if a killed sender had claimed it. Returns the re-sends."""
    by_ref = sent_by_ref(emu)
    assert "" not in by_ref, "every text carries its outbox row as client-ref"
    resent = 0
    for ref, texts in by_ref.items():
        assert ref.startswith("smsbot-") and int(ref[7:]) in rows, f"a text for no outbox row: {ref}"
        row = rows[int(ref[7:])]
        assert {key_of(t.to) for t in texts} == {row["phone_key"]}, f"{ref} went to another number"
        bodies = {t.text for t in texts}
        assert len(bodies) == 1, f"outbox row {ref} ({row['kind']}) was sent with different bodies: {bodies}"
        if row["kind"] == "pin":
            assert len(PIN.findall(texts[0].text)) == 1, texts[0].text
        if len(texts) > 1:
            resent += len(texts) - 1
            assert int(ref[7:]) in claimed_at_crash, (
                f"{ref} was sent {len(texts)} times but was never claimed by a sender that was killed")
            assert len(texts) <= row["attempts"], f"{ref} sent {len(texts)} times in {row['attempts']} attempts"
    unsent = [i for i in rows if f"smsbot-{i}" not in by_ref]
    assert not unsent, f"outbox rows marked sent that the provider never got: {unsent[:10]}"
    return resent


def sent_by_ref(emu: VonageEmulator) -> dict[str, list[SentSms]]:
    groups: dict[str, list[SentSms]] = collections.defaultdict(list)
    for sms in list(emu.sent):
        groups[sms.client_ref or ""].append(sms)
    return groups


def web_login(base: str, username: str, pin: str) -> int:
    with requests.Session() as http:
        http.trust_env = False
        form = http.get(f"{base}/login", timeout=10)
        token = CSRF_INPUT.search(form.text)
        assert form.status_code == 200 and token, form.text[:300]
        response = http.post(f"{base}/login", data={"username": username, "pin": pin,
                                                    "csrf_token": token.group(1)},
                             allow_redirects=False, timeout=10)
        return response.status_code


def replay_hint(seed: int) -> str:
    return f"{SEED_VARIABLE}={seed}"
