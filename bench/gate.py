"""The gate benchmark (issue 8): forward auth beside a bare aiohttp handler, measured with wrk in one run.

On free loopback ports it starts the Vonage TLS emulator (tests/support/vonage_emulator.py, on a thread here), a bare
aiohttp app (one GET handler answering 200 "OK", nothing else; and a POST handler for bench/backends.py's webhook floor)
on asyncio's own loop, the same app on uvloop's (smsbot's loop: its /auth is also given against it),
and `smsbot serve` with real settings whose Vonage hosts are the emulator; both servers are processes of this
interpreter. It signs a member in as a person would (an admin's INVITE by webhook, the code texted back, the PIN read
from what the emulator was asked to send, the login form and its CSRF token), then runs wrk against each path, one after
another:

    the bare handler; /auth with the session cookie and with none; /auth/forward with and without it;
    /auth with the cookie again while signed webhooks arrive (admins' LIST and HELP, some INVITEs) and the
    outbox sends their texts through the Vonage SDK to the emulator.

smsbot answers one admin number at most 60 times an hour (then one "Too many texts" notice, then silence), so the
admins' texts come from a pool of admin numbers (`admin_pool`: +1 202 555 0000 on, numbers the `phonenumbers`
library takes as valid US ones) large enough that none gets near the cap in a run, each number in turn. After the
run it counts the replies to admins, in the database (every one queued) and at the emulator (those sent so far), and
fails if any admin number was capped: the load would not have been what it says.

A second `smsbot serve` with metrics on (SMSBOT_METRICS_ADDRESS) runs beside the first (metrics off), scraped every
second as Prometheus would. Then /auth with a session is measured on each in back-to-back pairs (off then on, on then
off, in turn): the cost of counting is the median over the pairs of the on/off ratio of the server's CPU time per
request (read from /proc, steady on a shared machine) and of requests/s (target: under 5%).

It prints a table (requests/s, p50, p99, ratio to the bare handler) and /auth's p99 under that load against its idle
p99. Targets are reported, not asserted: the exit status is non-zero only when the harness itself fails.

Usage: .venv/bin/python bench/gate.py [--duration 6] [--connections 32] [--threads 1] [--load-rate 20]
       [--metric-pairs 8]
Needs wrk (Debian's package `wrk`) and the test extras (the emulator uses trustme).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import itertools
import math
import os
import pathlib
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from typing import NamedTuple

import aiohttp
import asyncpg
import requests
from aiohttp import web

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The harness reuses the tests' helpers (tests/support); smsbot itself is the installed package, as in the tests.
sys.path.insert(0, str(ROOT / "tests"))

from smsbot import phone  # noqa: E402
from smsbot.errors import SignatureError  # noqa: E402
from smsbot.pipeline import ADMIN_REPLIES_PER_HOUR  # noqa: E402
from smsbot.signatures import check_sms, sms_signature  # noqa: E402
from smsbot.sms import texts  # noqa: E402
from smsbot.store import Action  # noqa: E402
from smsbot.store.postgres import POOL_SIZE  # noqa: E402

from support.constants import ADMIN_MSISDN, NUMBER  # noqa: E402
from support.procs import (  # noqa: E402
    CODE,
    PIN,
    SESSION_COOKIE,
    clean_env,
    free_port,
    only,
    sent_to,
    serve_env,
    start_smsbot,
    wait_for,
    wait_text,
)
from support.service import CSRF_INPUT  # noqa: E402
from support.vonage_emulator import SentSms, VonageEmulator, running_emulator  # noqa: E402

# Made-up values for a throwaway server.
SECRET = "gate-bench-secret-0123456789-abcdefghijklmnop"  # noqa: S105
SIGNATURE_SECRET = "gate-bench-signature-secret"  # noqa: S105
FLOOR_PATH = "/webhooks/inbound"  # the bare app's webhook floor (`_checked`), at the path smsbot answers webhooks on
RECORDED_PATH = "/webhooks/recorded"  # its floor on PostgreSQL (`_recorded`), when given a database
ADMIN = ADMIN_MSISDN  # invites the member who signs in; the first number of every admin pool
MEMBER_PHONE, MEMBER = "14155550134", "bench"
RESULT_MARK = "GATE-RESULT"
METERED = "/auth, valid session, metrics on"
UV_BARE = "bare aiohttp handler on uvloop"
# wrk calls done() once, after every thread has finished; latency is in microseconds.
WRK_SCRIPT = f"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("{RESULT_MARK} %d %d %d %d %d %d %d %.1f %.1f %.1f\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""
WRK_TIMEOUT = "10s"  # long enough that slow answers count in the latencies instead of as timeouts
TEXT_TIMEOUT = 15.0
# Texts a pool of admin numbers takes per number (in turn) in one run: a quarter under the cap on replies, which
# leaves room for the few texts the harness sends itself (sign-in, probes) and for wrk's requests still in flight
# when a run ends (the next run begins with the numbers after those it counted).
PER_ADMIN = ADMIN_REPLIES_PER_HOUR * 3 // 4
POOL_PREFIX = "1202555"  # +1 202 555 xxxx: 10,000 numbers, all valid for phonenumbers (SMSBOT_ADMINS must parse)
ADMIN_REPLY = "admin-reply"  # smsbot.pipeline's counter: one row per reply queued to an admin's number
CAP_NOTICE = texts.ADMIN_CAPPED.split("{", 1)[0]  # how the notice to a capped admin number begins
HELP_REPLY = texts.HELP_ROLE.split("{", 1)[0]  # how the answer to an admin's HELP begins


class HarnessError(Exception):
    """The benchmark could not measure what it says it measures."""


def local_http() -> requests.Session:
    """A client for the loopback servers: no proxies from the environment."""
    http = requests.Session()
    http.trust_env = False
    return http


# ---------------------------------------------------------------------------------------------- the bare app


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="OK")


async def _checks(request: web.Request) -> dict[str, str] | None:
    """The checks the contract asks of every inbound text before anything is stored (its form read, its signature,
    its sender a valid number), with smsbot's own functions: the webhook's fields, or None if refused."""
    params = dict(urllib.parse.parse_qsl((await request.read()).decode("utf-8"), keep_blank_values=True))
    try:
        check_sms(params, SIGNATURE_SECRET, "sha256", time.time())
        phone.from_msisdn(params.get("msisdn", ""), "US")
    except (SignatureError, phone.PhoneError):
        return None
    return params


async def _checked(request: web.Request) -> web.Response:
    """A webhook's floor: its checks, then 204 and nothing else."""
    return web.Response(status=204 if await _checks(request) is not None else 400)


FLOOR_POOL = web.AppKey("floor_pool", asyncpg.Pool)
FLOOR_TABLE = "CREATE TABLE IF NOT EXISTS inbound (message_id TEXT PRIMARY KEY, received_at DOUBLE PRECISION)"
FLOOR_RECORD = "INSERT INTO inbound (message_id, received_at) VALUES ($1, $2) ON CONFLICT DO NOTHING"


async def _recorded(request: web.Request) -> web.Response:
    """A webhook's floor on PostgreSQL: its checks, then the least a unit of work is on a shared database (its
    messageId recorded in a SERIALIZABLE transaction of its own: BEGIN, the insert, a durable COMMIT), on a pool as
    large as smsbot's; retried on a serialization failure, as smsbot retries a unit."""
    params = await _checks(request)
    if params is None:
        return web.Response(status=400)
    async with request.app[FLOOR_POOL].acquire() as conn:
        while True:
            try:
                async with conn.transaction(isolation="serializable"):
                    await conn.execute(FLOOR_RECORD, params["messageId"], time.time())
                break
            except asyncpg.SerializationError:
                continue
    return web.Response(status=204)


async def _no_reset(conn: asyncpg.Connection) -> None:
    """smsbot's pool sends no reset query when a connection goes back to it; nor does the floor's."""


def run_bare(port: int, postgres: str = "", loop: str = "") -> None:
    """The baseline: aiohttp with one GET handler and nothing else, on asyncio's own loop (aiohttp's default), or on
    uvloop's (`loop` "uvloop", as smsbot runs); and, for bench/backends.py's floors, one POST handler that makes only a
    webhook's checks, and with `postgres` (a database URL) one that also records it."""
    app = web.Application()
    app.router.add_get("/", _ok)
    app.router.add_post(FLOOR_PATH, _checked)
    if postgres:
        async def pool(app: web.Application) -> AsyncIterator[None]:
            app[FLOOR_POOL] = await asyncpg.create_pool(postgres, min_size=1, max_size=POOL_SIZE, reset=_no_reset)
            async with app[FLOOR_POOL].acquire() as conn:
                await conn.execute(FLOOR_TABLE)
            yield
            await app[FLOOR_POOL].close()

        app.cleanup_ctx.append(pool)
        app.router.add_post(RECORDED_PATH, _recorded)
    event_loop = None  # run_app's own: asyncio's
    if loop == "uvloop":
        import uvloop

        event_loop = uvloop.new_event_loop()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=event_loop)


class Bare(NamedTuple):
    base: str
    pid: int


@contextlib.contextmanager
def bare_server(log_path: pathlib.Path, wrapper: Sequence[str] = (), postgres: str = "",
                loop: str = "") -> Iterator[Bare]:
    """Run `run_bare` in a child process on a free port (run by `wrapper` if given; with `postgres`, its floor on
    that database too; on uvloop with `loop` "uvloop"); yields its base URL and process id."""
    for _ in range(3):  # another process may take the free port before the child binds it
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with open(log_path, "ab") as log:
            options = [*(["--bare-postgres", postgres] if postgres else []), *(["--bare-loop", loop] if loop else [])]
            proc = subprocess.Popen([*wrapper, sys.executable, __file__, "--bare-port", str(port), *options],  # noqa: S603
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=clean_env({}))

        def ready(proc: subprocess.Popen[bytes] = proc, base: str = base) -> bool:
            """The child answers, or has exited (then its log says why)."""
            if proc.poll() is not None:
                return True
            try:
                with local_http() as http:
                    return http.get(base, timeout=1).status_code == 200
            except requests.RequestException:
                return False

        try:
            wait_for(ready, 120 if wrapper else 15, f"the bare app at {base}", interval=0.1)
            if proc.poll() is None:
                yield Bare(base, proc.pid)
                return
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        output = log_path.read_text(errors="replace")
        if "address already in use" not in output.lower():
            raise HarnessError(f"the bare app exited with code {proc.returncode}:\n{output}")
    raise HarnessError("no free port for the bare app after 3 tries")


# ---------------------------------------------------------------------------------------------- smsbot serve


def admin_pool(admin_texts: int) -> tuple[str, ...]:
    """Admin numbers (msisdns) for `admin_texts` texts from admins in one run, sent from each number in turn: enough
    that none gets more than PER_ADMIN replies, so never the cap's notice; ADMIN first, at least two."""
    size = max(2, math.ceil(admin_texts / PER_ADMIN))
    if size - 1 > 10_000:
        raise HarnessError(f"{admin_texts} admin texts in a run need {size} admin numbers, more than the pool has "
                           "(ask for fewer seconds, rounds or bodies per second)")
    return (ADMIN, *(f"{POOL_PREFIX}{n:04d}" for n in range(size - 1)))


def admins_setting(admins: Collection[str]) -> str:
    """SMSBOT_ADMINS for these msisdns."""
    return ",".join(f"+{admin}" for admin in admins)


_ids = itertools.count(1)


def webhook(msisdn: str, text: str) -> dict[str, str]:
    """An SMS API inbound webhook as Vonage sends it, signed (sha256) with the signature secret."""
    fields = {"msisdn": msisdn, "to": NUMBER, "messageId": f"0B00000{next(_ids):09d}", "text": text,
              "type": "text", "keyword": text.split()[0].upper(), "message-timestamp": "2025-03-14 15:09:26",
              "api-key": "test-key", "timestamp": str(int(time.time()))}
    fields["sig"] = sms_signature(fields, SIGNATURE_SECRET, "sha256")
    return fields


def text_in(http: requests.Session, base: str, msisdn: str, text: str) -> None:
    response = http.post(f"{base}/webhooks/inbound", data=webhook(msisdn, text), timeout=10)
    if response.status_code not in (200, 204):
        raise HarnessError(f"webhook {text!r} from {msisdn}: {response.status_code} {response.text}")


@dataclasses.dataclass(frozen=True)
class Served:
    """A running `smsbot serve`."""

    base: str
    pid: int
    db: str  # SMSBOT_DB: a SQLite file or a postgresql:// URL


@contextlib.contextmanager
def smsbot_serve(emu: VonageEmulator, tmp: pathlib.Path, metrics: str = "", *, name: str = "",
                 admins: Collection[str] = (ADMIN,), db: str = "", wrapper: Sequence[str] = (),
                 **extra: str) -> Iterator[Served]:
    """A running `smsbot serve` (with metrics at `metrics`, host:port, if given) named `name` in `tmp`, on database
    `db` (a SQLite file of its own if not given), run by `wrapper` if given (bench/instructions.py's valgrind); its
    log is printed (to stderr) only when something fails. `extra` settings come last: they may replace any of
    these."""
    name = name or ("serve-metrics" if metrics else "serve")
    workdir = tmp / name
    workdir.mkdir()
    if not db:
        sqlite_file = tmp / f"data-{name}" / "smsbot.db"
        sqlite_file.parent.mkdir()
        db = str(sqlite_file)

    def env(port: int) -> dict[str, str]:
        return serve_env(emu, port, workdir / "unused.db", SECRET, NUMBER, **{
            "SMSBOT_DB": db, "SMSBOT_ADMINS": admins_setting(admins), "SMSBOT_GROUP_NAME": "Bench",
            "SMSBOT_LOG_LEVEL": "WARNING", "VONAGE_SIGNATURE_SECRET": SIGNATURE_SECRET,
            "VONAGE_SIGNATURE_METHOD": "sha256", "SMSBOT_DAILY_SMS_BUDGET": "1000000",
            "SMSBOT_CONFIRM": "none",  # INVITE at once, where confirmation is a setting
            "SMSBOT_METRICS_ADDRESS": metrics, **extra})

    proc, base = start_smsbot("serve", workdir, env, tmp / f"{name}.log", extra_args=["--host", "127.0.0.1"],
                              wrapper=wrapper, timeout=120.0 if wrapper else 15.0)
    failed = False
    try:
        yield Served(base, proc.pid, db)
    except BaseException:
        failed = True
        raise
    finally:
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):  # stop() prints the log
            proc.stop()
        if failed:
            print(captured.getvalue(), file=sys.stderr)


def sign_in(emu: VonageEmulator, base: str) -> str:
    """Invite a member by webhook, redeem the code, sign in with the texted PIN; return the session cookie."""
    seen = len(sent_to(emu, MEMBER_PHONE))  # texts an earlier server sent the member
    with local_http() as http:
        text_in(http, base, ADMIN, f"INVITE +{MEMBER_PHONE} {MEMBER}")
        invite = wait_text(emu, MEMBER_PHONE, lambda t: "invited" in t, "the invite", TEXT_TIMEOUT, seen)
        text_in(http, base, MEMBER_PHONE, only(CODE, invite.text))
        pin_text = wait_text(emu, MEMBER_PHONE, lambda t: "PIN" in t and "invited" not in t, "the PIN",
                             TEXT_TIMEOUT, seen).text
        form = http.get(f"{base}/login", timeout=10)
        token = CSRF_INPUT.search(form.text)
        if form.status_code != 200 or token is None:
            raise HarnessError(f"GET /login: {form.status_code}, csrf token {'found' if token else 'missing'}")
        answer = http.post(f"{base}/login", allow_redirects=False, timeout=10,
                           data={"username": MEMBER, "pin": only(PIN, pin_text), "csrf_token": token.group(1)})
        cookie = answer.cookies.get(SESSION_COOKIE)
        if answer.status_code != 303 or not cookie:
            raise HarnessError(f"POST /login: {answer.status_code}, no session cookie: {answer.text[:200]}")
        return str(cookie)


# ---------------------------------------------------------------------------------------------- the database


async def scalar(db: str, sql: str) -> int:
    """One whole number from a running server's database (a SQLite file, read-only beside the server, or a
    postgresql:// URL); 0 for NULL."""
    if "://" in db:  # as smsbot's settings tell a URL from a file
        conn = await asyncpg.connect(db)
        try:
            return int(await conn.fetchval(sql) or 0)
        finally:
            await conn.close()
    lite = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        row = lite.execute(sql).fetchone()
        return int(row[0] or 0) if row else 0
    finally:
        lite.close()


@dataclasses.dataclass(frozen=True)
class AdminReplies:
    """What smsbot answered the admin numbers: from the database, every reply queued (so also those the outbox has
    not sent yet: it sends SMSBOT_SMS_RATE a second); from the emulator, the texts to admins it was asked to send."""

    queued: int  # replies queued to admin numbers
    most: int  # the most queued to one admin number
    capped: int  # admin numbers that reached the cap (each got the notice once)
    help_sent: int  # answers to HELP sent
    notices_sent: int  # cap notices sent
    other_sent: int  # any other text to an admin sent

    def line(self, who: str) -> str:
        return (f"{who}: {self.queued:,} replies queued to admin numbers, at most {self.most} to one number (the cap "
                f"is {ADMIN_REPLIES_PER_HOUR} an hour), {self.capped} number(s) capped; sent so far: "
                f"{self.help_sent:,} answers to HELP, {self.notices_sent} cap notices, {self.other_sent:,} other texts "
                "to admins")

    def check(self, who: str) -> None:
        """Fail when an admin number was capped: its texts were answered by the cap, not by what they asked."""
        if self.capped or self.notices_sent or self.most > ADMIN_REPLIES_PER_HOUR:
            raise HarnessError(f"an admin number reached the cap on replies, so admin texts measured the cap: "
                               f"{self.line(who)}")


async def admin_replies(db: str, emu: VonageEmulator, admins: Collection[str]) -> AdminReplies:
    """Count the replies to `admins` in the database `db` and among the texts `emu` was asked to send."""
    # The values put in the statements are the product's constants, not input.
    replies = f"SELECT count(*) FROM counters WHERE action = '{ADMIN_REPLY}'"  # noqa: S608
    most = (f"SELECT max(n) FROM (SELECT count(*) AS n FROM counters WHERE action = '{ADMIN_REPLY}' "  # noqa: S608
            "GROUP BY phone_key) AS per_number")
    capped = f"SELECT count(*) FROM events WHERE action = '{Action.ADMIN_CAPPED.value}'"  # noqa: S608
    numbers = set(admins)
    sent: list[SentSms] = [m for m in list(emu.sent) if m.to in numbers]
    help_sent = sum(1 for m in sent if m.text.startswith(HELP_REPLY))
    notices = sum(1 for m in sent if m.text.startswith(CAP_NOTICE))
    return AdminReplies(await scalar(db, replies), await scalar(db, most), await scalar(db, capped), help_sent,
                        notices, len(sent) - help_sent - notices)


# ---------------------------------------------------------------------------------------------- wrk


@dataclasses.dataclass(frozen=True)
class WrkParams:
    threads: int
    connections: int
    duration: int  # seconds: wrk takes whole ones
    warmup: int


@dataclasses.dataclass(frozen=True)
class Target:
    """One path to measure: what wrk sends, and the status that shows it measured the path it names."""

    label: str
    url: str
    headers: dict[str, str]
    expect: int
    pid: int | None = None  # the server's process, whose CPU time per request is then measured too


@dataclasses.dataclass(frozen=True)
class Result:
    label: str
    status: int  # of a probe request before the run
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    unexpected: int  # responses whose status class differs from the probe's expected one
    socket_errors: int
    cpu_us: float | None = None  # the server's CPU time (user and system) per request, when its pid is known

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) a process has used so far."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def per_request(cpu: float | None, requests: int) -> float | None:
    """CPU seconds spent on `requests` as microseconds a request (None when not measured)."""
    return cpu / max(1, requests) * 1e6 if cpu is not None else None


async def metrics_cost(script: pathlib.Path, off: Target, on: Target, params: WrkParams, pairs: int) -> list[str]:
    """/auth on the server without metrics and on the one with them (each target with its server's pid), in
    back-to-back pairs; the report lines."""
    cpu: dict[str, list[float]] = {off.label: [], on.label: []}  # server CPU microseconds per request
    rps: dict[str, list[float]] = {off.label: [], on.label: []}
    counted = dataclasses.replace(params, warmup=0)
    for pair in range(pairs):
        for target in (off, on) if pair % 2 == 0 else (on, off):
            await wrk(script, target, params, max(1, params.warmup))
            result = await measure(script, target, counted, probe(target))
            assert result.cpu_us is not None  # the targets carry their server's pid
            cpu[target.label].append(result.cpu_us)
            rps[target.label].append(result.rps)
    cpu_ratios = [a / b for a, b in zip(cpu[on.label], cpu[off.label], strict=True)]
    rps_ratios = [a / b for a, b in zip(rps[on.label], rps[off.label], strict=True)]
    on_us, off_us = statistics.median(cpu[on.label]), statistics.median(cpu[off.label])
    each_cpu = ", ".join(f"{x:.3f}" for x in cpu_ratios)
    each_rps = ", ".join(f"{x:.2f}" for x in rps_ratios)
    return [f"metrics: /auth with a session, on / off, {pairs} back-to-back pairs of {params.duration} s: server CPU "
            f"per request {on_us:.0f} us on, {off_us:.0f} us off, ratio {statistics.median(cpu_ratios):.3f} "
            f"(each: {each_cpu}); requests/s ratio {statistics.median(rps_ratios):.3f} (each: {each_rps}); "
            "target: a cost under 5% (a CPU ratio under 1.05, a requests/s ratio over 0.95)"]


@contextlib.contextmanager
def scraped(address: str) -> Iterator[list[float]]:
    """Scrape http://address/metrics every second, as Prometheus would, until the block ends; yields the time each
    scrape took."""
    took: list[float] = []
    stop = threading.Event()

    def scrape() -> None:
        with local_http() as http:
            while not stop.wait(1.0):
                started = time.monotonic()
                with contextlib.suppress(requests.RequestException):
                    if http.get(f"http://{address}/metrics", timeout=5).status_code == 200:
                        took.append(time.monotonic() - started)

    thread = threading.Thread(target=scrape, name="scraper", daemon=True)
    thread.start()
    try:
        yield took
    finally:
        stop.set()
        thread.join()


def probe(target: Target) -> int:
    """One request as wrk will send it; the answer's status."""
    with local_http() as http:
        return http.get(target.url, headers=target.headers, allow_redirects=False, timeout=10).status_code


async def wrk(script: pathlib.Path, target: Target, params: WrkParams, seconds: int) -> tuple[int, ...]:
    """Run wrk once; the numbers its done() callback printed."""
    args = ["wrk", "-t", str(params.threads), "-c", str(params.connections), "-d", f"{seconds}s",
            "--timeout", WRK_TIMEOUT, "-s", str(script)]
    for name, value in target.headers.items():
        args += ["-H", f"{name}: {value}"]
    proc = await asyncio.create_subprocess_exec(*args, target.url, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    line = next((ln for ln in out.decode().splitlines() if ln.startswith(RESULT_MARK)), None)
    if proc.returncode != 0 or line is None:
        raise HarnessError(f"wrk failed on {target.label} (exit {proc.returncode}):\n{out.decode()}{err.decode()}")
    return tuple(round(float(v)) for v in line.split()[1:])


async def measure(script: pathlib.Path, target: Target, params: WrkParams, status: int) -> Result:
    if params.warmup > 0:
        await wrk(script, target, params, params.warmup)
    before = cpu_seconds(target.pid) if target.pid else 0.0
    numbers = await wrk(script, target, params, params.duration)
    used = cpu_seconds(target.pid) - before if target.pid else None
    requests_, micros, connect, read, write, status_errors, timeouts, p50, p99, most = numbers
    unexpected = status_errors if target.expect < 400 else requests_ - status_errors
    return Result(target.label, status, requests_, micros / 1e6, p50 / 1000, p99 / 1000, most / 1000, unexpected,
                  connect + read + write + timeouts, per_request(used, requests_))


# ---------------------------------------------------------------------------------------------- load


@dataclasses.dataclass
class Load:
    """Signed inbound webhooks at a steady rate: admins' LIST and HELP, and every fifth an INVITE, from the admin
    numbers in turn."""

    base: str
    rate: float
    admins: Sequence[str]
    posted: int = 0
    failed: int = 0
    latencies: list[float] = dataclasses.field(default_factory=list)
    started: float = 0.0
    stopped: float = 0.0

    def texts(self) -> Iterator[tuple[str, str]]:
        senders = itertools.cycle(self.admins)
        invitees = itertools.count(1)
        while True:
            for command in ("LIST", "HELP", "LIST", "HELP"):
                yield next(senders), command
            n = next(invitees)
            yield next(senders), f"INVITE +1415556{n % 10000:04d} load{n}"

    async def _post(self, http: aiohttp.ClientSession, sender: str, text: str) -> None:
        start = time.perf_counter()
        try:
            async with http.post(f"{self.base}/webhooks/inbound", data=webhook(sender, text)) as response:
                await response.read()
                ok = response.status in (200, 204)
        except aiohttp.ClientError:
            ok = False
        if ok:
            self.posted += 1
            self.latencies.append(time.perf_counter() - start)
        else:
            self.failed += 1

    async def run(self, stop: asyncio.Event) -> None:
        """Post on a fixed schedule, not waiting for answers (Vonage doesn't), until `stop` is set."""
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        self.started = loop.time()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            for n, (sender, text) in enumerate(self.texts()):
                wait = self.started + n / self.rate - loop.time()
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), wait)
                if stop.is_set():
                    break
                task = asyncio.create_task(self._post(http, sender, text))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            self.stopped = loop.time()
            await asyncio.gather(*tasks)


@dataclasses.dataclass(frozen=True)
class Loaded:
    """/auth under load, and what the load did meanwhile."""

    result: Result
    load: Load
    sent_in_window: int  # texts the emulator accepted while wrk ran
    sent_in_all: int  # texts the load caused, from its start until the outbox had drained
    drain_seconds: float | None  # from the load's end until its last text was out; None: not within the timeout
    replies: AdminReplies


def load_texts(args: argparse.Namespace) -> int:
    """At most how many texts the load sends: it runs through the warm-ups and wrk's run, plus slack for the probe
    and for starting wrk."""
    seconds = max(1, int(args.warmup)) + int(args.warmup) + int(args.duration) + 30
    return math.ceil(float(args.load_rate) * seconds)


async def under_load(script: pathlib.Path, target: Target, params: WrkParams, emu: VonageEmulator, served: Served,
                     rate: float, admins: Sequence[str]) -> Loaded:
    load, stop = Load(served.base, rate, admins), asyncio.Event()
    sent_before = len(emu.sent)
    runner = asyncio.create_task(load.run(stop))
    await asyncio.sleep(max(1.0, params.warmup))  # let the outbox get busy first
    status = await asyncio.to_thread(probe, target)
    window_start = time.time()
    result = await measure(script, dataclasses.replace(target, label=f"{target.label}, under load"),
                           dataclasses.replace(params, warmup=0), status)
    window_end = time.time()
    stop.set()
    await runner
    in_window = sum(1 for m in list(emu.sent) if window_start <= m.at <= window_end)
    if load.posted == 0 or in_window == 0:
        raise HarnessError(f"the load did nothing: {load.posted} webhooks accepted, {load.failed} refused, "
                           f"{in_window} texts sent while wrk ran")
    drain = await drained(served.db)
    in_all = len(emu.sent) - sent_before
    replies = await admin_replies(served.db, emu, admins)
    replies.check("the load")
    return Loaded(result, load, in_window, in_all, drain, replies)


async def drained(db: str, timeout: float = 120.0) -> float | None:
    """Seconds until no text waits in the outbox of database `db` (every one sent, or failed for good), or None
    after `timeout`."""
    start = time.monotonic()
    while await scalar(db, "SELECT count(*) FROM outbox WHERE state IN ('pending', 'sending')"):
        if time.monotonic() - start > timeout:
            return None
        await asyncio.sleep(0.1)
    return time.monotonic() - start


# ---------------------------------------------------------------------------------------------- report


def machine() -> list[str]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "")
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout  # noqa: S603, S607
    return [f"machine: nproc {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), {model or 'cpu unknown'}, "
            f"load average before the run {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
            f"python {platform.python_version()} ({sys.executable}), aiohttp {aiohttp.__version__}, "
            f"{wrk_version.split(' Copyright')[0].strip()}"]


def median_result(runs: list[Result]) -> Result:
    """The run with the median requests/s."""
    return sorted(runs, key=lambda r: r.rps)[len(runs) // 2]


def table(rows: Sequence[Result | tuple[str, str]], bare: Result, ratios: dict[str, float],
          cpu_ratios: dict[str, float] | None = None) -> list[str]:
    """Requests/s and their ratio to the bare handler's; with `cpu_ratios`, also the server's CPU time per request
    and the bare handler's as a share of it (steadier than requests/s on a shared machine: wrk's own share of the
    cores moves requests/s, not the server's CPU per request)."""
    cpu = cpu_ratios is not None
    lines = ["| path | status | req/s | p50 ms | p99 ms | x bare | " + ("CPU us/req | x bare (CPU) | " if cpu else "")
             + "unexpected | socket errors |",
             "|---|---|---|---|---|---|" + ("---|---|" if cpu else "") + "---|---|"]
    for row in rows:
        if isinstance(row, tuple):
            lines.append(f"| {row[0]} | {row[1]} | - | - | - | - | " + ("- | - | " if cpu else "") + "- | - |")
            continue
        cells = ""
        if cpu_ratios is not None:
            cells = (f"{row.cpu_us:.0f} | " if row.cpu_us is not None else "- | ") + (
                f"{cpu_ratios[row.label]:.2f} | " if row.label in cpu_ratios else "- | ")
        lines.append(f"| {row.label} | {row.status} | {row.rps:,.0f} | {row.p50_ms:.2f} | {row.p99_ms:.2f} | "
                     f"{ratios.get(row.label, row.rps / bare.rps):.2f} | {cells}{row.unexpected} | "
                     f"{row.socket_errors} |")
    return lines


def cpu_share(runs: Sequence[Result], bare_runs: Sequence[Result]) -> float | None:
    """The median over interleaved rounds of the bare handler's CPU per request over the path's."""
    shares = [b.cpu_us / r.cpu_us for r, b in zip(runs, bare_runs, strict=True) if r.cpu_us and b.cpu_us]
    return statistics.median(shares) if shares else None


# ---------------------------------------------------------------------------------------------- main


def to_bare(runs: Sequence[Result], bare: Sequence[Result]) -> list[float]:
    """Each round's requests/s over the bare handler's (or any other baseline's) in the same round."""
    return [r.rps / b.rps for r, b in zip(runs, bare, strict=True)]


async def bench(args: argparse.Namespace, tmp: pathlib.Path) -> list[str]:
    header = machine()
    params = WrkParams(args.threads, args.connections, args.duration, args.warmup)
    script = tmp / "report.lua"
    script.write_text(WRK_SCRIPT, encoding="utf-8")
    metrics_address = f"127.0.0.1:{free_port()}"
    admins = admin_pool(load_texts(args))
    with running_emulator() as emu, bare_server(tmp / "bare.log") as bare, \
            bare_server(tmp / "bare-uvloop.log", loop="uvloop") as uv_bare, \
            smsbot_serve(emu, tmp, admins=admins) as served, \
            smsbot_serve(emu, tmp, metrics_address) as metered_served, scraped(metrics_address) as scrapes:
        base, pid, metered_base, metered_pid = served.base, served.pid, metered_served.base, metered_served.pid
        cookie = await asyncio.to_thread(sign_in, emu, base)
        metered_cookie = await asyncio.to_thread(sign_in, emu, metered_base)
        host = base.removeprefix("http://")
        forwarded = {"X-Forwarded-Proto": "http", "X-Forwarded-Host": host, "X-Forwarded-Uri": "/tool/page?x=1",
                     "X-Forwarded-Method": "GET", "Accept": "text/html,application/xhtml+xml"}
        signed_in = {"Cookie": f"{SESSION_COOKIE}={cookie}"}
        targets = [Target("bare aiohttp handler", f"{bare.base}/", {}, 200, bare.pid),
                   Target("/auth, valid session", f"{base}/auth", signed_in, 200, pid),
                   Target("/auth, no cookie", f"{base}/auth", {}, 401, pid),
                   Target("/auth/forward, valid session", f"{base}/auth/forward", {**forwarded, **signed_in}, 200, pid),
                   Target("/auth/forward, no cookie", f"{base}/auth/forward", forwarded, 302, pid),
                   Target(UV_BARE, f"{uv_bare.base}/", {}, 200, uv_bare.pid)]
        rows: list[Result | tuple[str, str]] = []
        rounds: dict[str, list[Result]] = {}
        for target in targets:
            status = probe(target)
            if target.url.endswith("/auth/forward") and status == 404:
                rows.append((target.label, "not available (404)"))
                continue
            if target.expect == 200 and status != 200:
                raise HarnessError(f"{target.label}: the probe got {status}, not 200; the measurement would not be "
                                   "of the path it names")
            rounds[target.label] = []
        # Rounds interleave the paths, so a machine that speeds up or slows down during the run weighs on all of
        # them alike; each path's ratio to the bare handler is the median of its rounds' ratios.
        for _ in range(args.rounds):
            for target in targets:
                if target.label in rounds:
                    rounds[target.label].append(await measure(script, target, params, probe(target)))
        results = {label: median_result(runs) for label, runs in rounds.items()}
        bare_runs = rounds["bare aiohttp handler"]
        ratios = {label: statistics.median(to_bare(runs, bare_runs)) for label, runs in rounds.items()}
        cpu_ratios = {label: share for label, runs in rounds.items()
                      if (share := cpu_share(runs, bare_runs)) is not None}
        rows = [results[t.label] if t.label in results else next(r for r in rows if isinstance(r, tuple)
                                                                  and r[0] == t.label) for t in targets]
        idle = results["/auth, valid session"]
        metered = Target(METERED, f"{metered_base}/auth", {"Cookie": f"{SESSION_COOKIE}={metered_cookie}"}, 200,
                         metered_pid)
        cost = await metrics_cost(script, targets[1], metered, params, args.metric_pairs)
        under = await under_load(script, targets[1], params, emu, served, args.load_rate, admins)
        rows.append(under.result)

    bare_result, loaded, load = results["bare aiohttp handler"], under.result, under.load
    webhook_ms = sorted(x * 1000 for x in load.latencies)
    p99_index = min(len(webhook_ms) - 1, int(len(webhook_ms) * 0.99))
    span = load.stopped - load.started
    drain = (f"{under.drain_seconds:.1f} s after the load stopped" if under.drain_seconds is not None
             else "NOT within 120 s of the load's end")
    lines = [*header,
             f"wrk: {params.threads} thread(s), {params.connections} connections, {params.duration} s per path "
             f"after a {params.warmup} s warm-up (not counted), --timeout {WRK_TIMEOUT}; {args.rounds} rounds of the "
             "paths one after another (the table shows each path's median round)",
             "", *table(rows, bare_result, ratios, cpu_ratios), "",
             f"/auth, valid session: {ratios[idle.label]:.2f}x the bare handler's requests/s, the median of "
             f"{args.rounds} interleaved rounds (each: "
             f"{', '.join(f'{x:.2f}' for x in to_bare(rounds[idle.label], bare_runs))}); "
             "target: at least 0.7x",
             f"/auth, no cookie (401): {ratios['/auth, no cookie']:.2f}x the bare handler's requests/s (each: "
             f"{', '.join(f'{x:.2f}' for x in to_bare(rounds['/auth, no cookie'], bare_runs))}"
             "); target: at least 0.85x",
             "x bare (CPU): the bare handler's server CPU per request over the path's, the median of the rounds' "
             "ratios",
             f"smsbot runs on uvloop; against the {UV_BARE} (x bare above: {ratios[UV_BARE]:.2f}), the median of the "
             "rounds' ratios: " + ", ".join(f"{label} {statistics.median(to_bare(rounds[label], rounds[UV_BARE])):.2f}x"
                                            for label in ("/auth, valid session", "/auth, no cookie")),
             *cost, f"{len(scrapes)} scrapes of /metrics during the run, median "
             f"{statistics.median(scrapes or [0]) * 1000:.1f} ms",
             f"/auth p99: idle {idle.p99_ms:.2f} ms, under load {loaded.p99_ms:.2f} ms = "
             f"{loaded.p99_ms / idle.p99_ms:.2f}x idle (target: within 2x)",
             f"load: signed webhooks at {args.load_rate:g}/s asked, {load.posted / span:.1f}/s posted over "
             f"{span:.1f} s ({load.posted} answered 2xx, {load.failed} not); webhook p50 "
             f"{statistics.median(webhook_ms):.1f} ms, p99 {webhook_ms[p99_index]:.1f} ms",
             f"outbox: {under.sent_in_window} texts went through the SDK to the emulator while wrk ran "
             f"({under.sent_in_window / loaded.seconds:.1f}/s); all {under.sent_in_all} texts of the load were out "
             f"{drain}",
             f"admins: the load's texts came from {len(admins)} admin numbers in turn; "
             + under.replies.line("replies").removeprefix("replies: "),
             f"load average after the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"]
    if any(r.unexpected or r.socket_errors for r in results.values()) or loaded.unexpected or loaded.socket_errors:
        lines.append("WARNING: some answers were not what the path should give, or connections failed; "
                     "see the unexpected and socket errors columns")
    return lines


def wrk_arguments(parser: argparse.ArgumentParser, *, duration: int, rounds: int, rounds_of: str) -> None:
    """The options of wrk's runs that the benchmarks share, with their defaults for this one."""
    parser.add_argument("--duration", type=int, default=duration,
                        help=f"seconds of wrk per measure (default {duration})")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted wrk seconds before each (default 1)")
    parser.add_argument("--rounds", type=int, default=rounds,
                        help=f"interleaved rounds of {rounds_of} (default {rounds})")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    wrk_arguments(parser, duration=6, rounds=3, rounds_of="the idle paths")
    parser.add_argument("--metric-pairs", type=int, default=8,
                        help="back-to-back pairs of /auth with metrics off and on (default 8)")
    parser.add_argument("--load-rate", type=float, default=20.0,
                        help="inbound webhooks per second during the load run, each causing a text or two (default 20)")
    parser.add_argument("--bare-port", type=int, help=argparse.SUPPRESS)  # this file, run as the bare app
    parser.add_argument("--bare-postgres", default="", help=argparse.SUPPRESS)  # its floor's database
    parser.add_argument("--bare-loop", default="", help=argparse.SUPPRESS)  # its event loop
    args = parser.parse_args(argv)
    if args.bare_port:
        run_bare(args.bare_port, args.bare_postgres, args.bare_loop)
        return 0
    if shutil.which("wrk") is None:
        print("gate: wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    if (args.connections < args.threads or args.duration <= 0 or args.warmup < 0 or args.load_rate <= 0
            or args.rounds < 1 or args.metric_pairs < 1):
        parser.error("need connections >= threads, duration > 0, warmup >= 0, load-rate > 0, rounds >= 1 and "
                     "metric-pairs >= 1")
    with tempfile.TemporaryDirectory(prefix="smsbot-gate-") as tmp:
        try:
            lines = asyncio.run(bench(args, pathlib.Path(tmp)))
        except (HarnessError, AssertionError, OSError, requests.RequestException) as exc:
            print(f"gate: harness failure: {exc}", file=sys.stderr)
            return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
