"""Helpers for tests that run `smsbot` as a real subprocess: free ports, a clean environment, deadlines.

The process's stdout and stderr go to a log file; `SmsbotProcess.stop()` prints that log, so pytest shows it
(as captured output) whenever a test using the process fails.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import BinaryIO, TypeVar

import requests

from .constants import CODE as CODE  # re-exported: the tests import them from here too
from .constants import PIN as PIN
from .vonage_emulator import SentSms, VonageEmulator

T = TypeVar("T")

# What texts and pages of a `serve` on http://127.0.0.1 look like to a client.
SESSION_COOKIE = "smsbot_session"  # no __Host- prefix: the public URL is http

# Variables of the surrounding shell that would leak into the service under test.
_SCRUBBED_PREFIXES = ("SMSBOT_", "VONAGE_")
_SCRUBBED = {"REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
             "http_proxy", "https_proxy", "all_proxy"}


def listens_on(pid: int, port: int) -> bool:
    """Whether process `pid` holds a TCP socket listening on `port` (Linux: its descriptors' socket inodes, found
    among /proc/net/tcp and tcp6's listening sockets)."""
    try:
        links = [os.readlink(fd) for fd in pathlib.Path(f"/proc/{pid}/fd").iterdir()]
    except (FileNotFoundError, ProcessLookupError):
        return False
    inodes = {link[len("socket:["):-1] for link in links if link.startswith("socket:[")}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in pathlib.Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port and inode in inodes:  # 0A: LISTEN
                return True
    return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it: bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def most_in_any_second(stamps: Sequence[float]) -> int:
    """The most of `stamps` (seconds) that fall within any sliding one-second window [t, t + 1)."""
    ordered = sorted(stamps)
    most = first = 0
    for last, stamp in enumerate(ordered):
        while stamp - ordered[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The current environment without smsbot/Vonage/proxy settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(_SCRUBBED_PREFIXES) and k not in _SCRUBBED}
    env["PYTHONUNBUFFERED"] = "1"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


def _read(path: pathlib.Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# The console script pip installed beside this interpreter: the tests run the installed package, as users do.
SMSBOT = str(pathlib.Path(sys.executable).with_name("smsbot"))


class SmsbotProcess:
    """`smsbot <args>` (the installed console script) in `cwd`, output to `log_path` (stderr to `stderr_path`
    instead, if given); run by `wrapper` (a program and its arguments, as valgrind) if given."""

    def __init__(self, args: Sequence[str], cwd: pathlib.Path, env: Mapping[str, str], log_path: pathlib.Path,
                 stderr_path: pathlib.Path | None = None, wrapper: Sequence[str] = ()):
        self.args = [*wrapper, SMSBOT, *args]
        self.cwd = cwd
        self.env = dict(env)
        self.log_path = log_path
        self.stderr_path = stderr_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None
        self._err: BinaryIO | None = None

    def start(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        if self.stderr_path is not None:
            self._err = open(self.stderr_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.args, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=self._err or subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def output(self) -> str:
        """Everything the process wrote (stdout, then stderr when that goes to its own file)."""
        return _read(self.log_path) + (_read(self.stderr_path) if self.stderr_path is not None else "")

    def stderr(self) -> str:
        """What the process wrote to stderr alone (needs `stderr_path`)."""
        assert self.stderr_path is not None, "start the process with stderr_path to read stderr alone"
        return _read(self.stderr_path)

    def wait_healthy(self, base_url: str, timeout: float = 15.0) -> None:
        """Poll GET /healthz until this process answers 200; fail early, with the output, if the process exits.
        A 200 counts only once this process listens on the port: another test's server that took the port first
        answers /healthz too, while this one is still starting (it then exits: address already in use)."""
        assert self.proc is not None
        port = int(base_url.rsplit(":", 1)[1])

        def healthy() -> bool:
            code = self.proc.poll() if self.proc else None
            if code is not None:
                raise AssertionError(f"smsbot exited with code {code} before it was healthy:\n{self.output()}")
            try:
                answered = requests.get(f"{base_url}/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False
            return answered and self.proc is not None and listens_on(self.proc.pid, port)

        wait_for(healthy, timeout, f"{base_url}/healthz to answer 200", interval=0.1)

    def terminate(self, timeout: float) -> int:
        """SIGTERM and wait; returns the exit code (raises subprocess.TimeoutExpired if it hangs)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        """Always safe: end the process (TERM, then KILL), close the log, print the output for pytest."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for stream in (self._log, self._err):
            if stream is not None:
                stream.close()
        self._log = self._err = None
        code = self.proc.returncode if self.proc is not None else None
        print(f"----- {' '.join(self.args[1:])} (exit code {code}) output -----\n{self.output()}")


def start_smsbot(command: str, cwd: pathlib.Path, env: Callable[[int], Mapping[str, str]],
                 log_path: pathlib.Path, extra_args: Sequence[str] = (), attempts: int = 3,
                 stderr_path: pathlib.Path | None = None, wrapper: Sequence[str] = (),
                 timeout: float = 15.0) -> tuple[SmsbotProcess, str]:
    """Start `smsbot <command> --port <free port>` and wait for /healthz; retry if the port was taken meanwhile.

    `env(port)` gives the process environment for that port. Returns the process and its base URL.
    With `stderr_path`, stderr goes to that file instead of the log; with `wrapper`, that program runs smsbot.
    """
    last_error: AssertionError | None = None
    for _ in range(attempts):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = SmsbotProcess([command, "--port", str(port), *extra_args], cwd, env(port), log_path, stderr_path,
                             wrapper)
        proc.start()
        try:
            proc.wait_healthy(base, timeout)
            return proc, base
        except AssertionError as exc:
            proc.stop()
            if "address already in use" not in proc.output().lower():
                raise
            last_error = exc
    assert last_error is not None
    raise last_error


@dataclasses.dataclass
class Serve:
    """A running `smsbot serve`: the process, its base URL and its database file."""

    proc: SmsbotProcess
    base: str
    db: pathlib.Path


def serve_env(emu: VonageEmulator, port: int, db: pathlib.Path, secret: str, number: str,
              **extra: str) -> dict[str, str]:
    """The environment of a `smsbot serve` that talks to the Vonage emulator `emu` (an extra of "" removes)."""
    values = {
        "SMSBOT_SECRET": secret,
        "SMSBOT_ADMINS": "+1 415 555 0100",
        "SMSBOT_NUMBER": number,
        "SMSBOT_DB": str(db),
        "SMSBOT_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "VONAGE_API_KEY": emu.api_key,
        "VONAGE_API_SECRET": emu.api_secret,
        "VONAGE_REST_HOST": emu.host,
        "VONAGE_API_HOST": emu.host,
        "REQUESTS_CA_BUNDLE": str(emu.ca_path),
        "SMSBOT_CONFIRM": "none",  # INVITE at once; the spoofing test turns confirmation on
        **extra,
    }
    return clean_env({k: v for k, v in values.items() if v})


def sent_to(emu: VonageEmulator, msisdn: str) -> list[SentSms]:
    """What the emulator accepted for `msisdn` so far (SentSms records)."""
    return [m for m in list(emu.sent) if m.to == msisdn]


def wait_text(emu: VonageEmulator, msisdn: str, match: Callable[[str], bool], what: str, timeout: float = 10.0,
              after: int = 0) -> SentSms:
    """The first text to `msisdn` (from the `after`-th on) that `match`es, waiting for it."""
    def found() -> SentSms | None:
        return next((m for m in sent_to(emu, msisdn)[after:] if match(m.text)), None)

    try:
        return wait_for(found, timeout, f"a text to {msisdn}: {what}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; texts sent so far: {[(m.to, m.text) for m in emu.sent]}") from None


def only(pattern: re.Pattern[str], text: str) -> str:
    """The one match of `pattern` in `text` (a code or PIN standing alone); fails if there isn't exactly one."""
    found = pattern.findall(text)
    assert len(found) == 1, f"expected exactly one {pattern.pattern} standing alone in {text!r}, got {found}"
    return str(found[0])


def waiting_texts(db: pathlib.Path) -> list[tuple[int, str, str, int]]:
    """A running server's outbox rows still waiting or being sent (read-only, alongside the server)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None, timeout=5)
    try:
        rows = conn.execute("SELECT id, kind, state, attempts FROM outbox WHERE state IN ('pending', 'sending')"
                            " ORDER BY id").fetchall()
    finally:
        conn.close()
    return [(int(i), str(kind), str(state), int(attempts)) for i, kind, state, attempts in rows]
