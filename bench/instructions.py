"""Instructions per request (issue 19): what the server executes for one request, counted by valgrind's callgrind,
which counts instructions, not seconds. On a shared machine whose requests/s move by a third from one run to the next,
the count is the same from run to run (within about 1%), so it shows what a change to the code did.

It starts the Vonage TLS emulator (on a thread here), signs a member in on a plain `smsbot serve` (its SQLite file
keeps the session), stops it, and starts under `valgrind --tool=callgrind` (instrumentation off until asked):
bench/gate.py's bare aiohttp app, and `smsbot serve` on the same file and settings. For each path it sends --warmup
requests uncounted, turns instrumentation on, sends --requests requests one after another on one keep-alive
connection, dumps the counts and turns it off again:

    the bare handler (GET, 200 "OK"), on asyncio's own loop (aiohttp's default) and on uvloop's (as smsbot runs);
    /auth with the session and with none (401); /auth/forward with the session and
    with none (302, a browser asking for a page); strangers' webhooks (no reply) on the bare app's floor (its checks
    only, bench/backends.py) and on smsbot; admins' HELP, each reply queued and sent through the Vonage SDK to the
    emulator (the count ends once every reply has reached it).

Every thread of the server is counted (the SQLite writer's and the outbox's sender's too), and the event loop's
thread (the main one) also alone. A request here is alone on the event loop, where
under wrk many share a loop turn, so the count is of one request at a time, with the loop's own work for it. Each
path's count is also given as the bare handler's over it: the share of a bare request it costs.

Usage: .venv/bin/python bench/instructions.py [--requests 1000] [--warmup 300]
Needs valgrind (Debian's package `valgrind`) and the test extras (the emulator uses trustme).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence

import requests
from gate import (
    FLOOR_PATH,
    UV_BARE,
    Target,
    admin_pool,
    bare_server,
    local_http,
    machine,
    sign_in,
    smsbot_serve,
    webhook,
)

from support.procs import SESSION_COOKIE, wait_for  # importable: gate puts tests/ on sys.path
from support.vonage_emulator import VonageEmulator, running_emulator

STRANGERS = [f"1415555{n:04d}" for n in range(2000, 3000)]  # numbers nobody invited: the engine stays silent


@dataclasses.dataclass
class Counted:
    """A process run by callgrind, with instrumentation off at start: `count` turns it on for some work, dumps the
    instructions it took, and turns it off again."""

    pid: int
    out: pathlib.Path  # callgrind's output file; the n-th dump is written to `<out>.<n>`
    dumps: int = 0

    def _control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.pid)], check=True,  # noqa: S603, S607
                       capture_output=True)

    def count(self, work: Callable[[], None]) -> tuple[int, int]:
        """The instructions `work` took in the process: in all, and on its main thread (the event loop's)."""
        self._control("--instr=on")
        work()
        self._control("--dump")
        self._control("--instr=off")
        self.dumps += 1
        main = pathlib.Path(f"{self.out}.{self.dumps}-01")  # with --separate-threads, a file per thread
        for _ in range(100):  # the dumps are written when the process next runs, just after the call
            if main.exists() and "totals:" in main.read_text(errors="replace"):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"callgrind wrote no dump {main}")
        time.sleep(0.5)  # the other threads' files
        totals = {dump.name: total(dump) for dump in self.out.parent.glob(f"{self.out.name}.{self.dumps}-*")}
        return sum(totals.values()), totals[main.name]


def total(dump: pathlib.Path) -> int:
    text = dump.read_text(errors="replace")
    return next((int(line.split()[1]) for line in text.splitlines() if line.startswith("totals:")), 0)


def callgrind(out: pathlib.Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
            f"--callgrind-out-file={out}"]


def gets(http: requests.Session, target: Target, n: int) -> Callable[[], None]:
    def send() -> None:
        for _ in range(n):
            response = http.get(target.url, headers=target.headers, allow_redirects=False, timeout=60)
            if response.status_code != target.expect:
                raise RuntimeError(f"{target.label}: {response.status_code}, not {target.expect}")
    return send


def posts(http: requests.Session, url: str, n: int, senders: Sequence[str] = STRANGERS, text: str = "hello",
          replied: VonageEmulator | None = None) -> Callable[[], None]:
    """Signed webhooks from `senders` in turn; with `replied`, wait until the emulator has had a text for each."""
    bodies = [webhook(senders[i % len(senders)], text) for i in range(n)]  # signed before counting

    def send() -> None:
        before = len(replied.sent) if replied else 0
        for body in bodies:
            response = http.post(url, data=body, timeout=60)
            if response.status_code not in (200, 204):
                raise RuntimeError(f"{url}: {response.status_code} {response.text}")
        if replied:
            wait_for(lambda: len(replied.sent) >= before + n, 300, f"{n} replies at the emulator", interval=0.2)
    return send


@contextlib.contextmanager
def counted_bare(tmp: pathlib.Path, loop: str = "") -> Iterator[tuple[str, Counted]]:
    out = tmp / f"bare{loop}.callgrind"
    with bare_server(tmp / f"bare{loop}.log", wrapper=callgrind(out), loop=loop) as bare:
        yield bare.base, Counted(bare.pid, out)


def measure(counted: Counted, label: str, make: Callable[[int], Callable[[], None]], args: argparse.Namespace,
            rows: dict[str, tuple[int, int]]) -> None:
    make(args.warmup)()
    in_all, main = counted.count(make(args.requests))
    rows[label] = in_all // args.requests, main // args.requests


def bench(args: argparse.Namespace, tmp: pathlib.Path) -> list[str]:
    rows: dict[str, tuple[int, int]] = {}
    db = tmp / "data" / "smsbot.db"
    db.parent.mkdir()
    admins = admin_pool(args.warmup + args.requests + 10)
    with running_emulator() as emu:
        with smsbot_serve(emu, tmp, name="sign-in", db=str(db), admins=admins) as served:
            cookie = sign_in(emu, served.base)
        with counted_bare(tmp) as (bare_base, bare), local_http() as http:
            measure(bare, "bare aiohttp handler", lambda n: gets(http, Target("bare", f"{bare_base}/", {}, 200), n),
                    args, rows)
            measure(bare, "webhook floor: the bare app's checks only", lambda n: posts(http, bare_base + FLOOR_PATH,
                                                                                        n), args, rows)
        with counted_bare(tmp, "uvloop") as (uv_base, uv_bare), local_http() as http:
            measure(uv_bare, UV_BARE, lambda n: gets(http, Target("bare", f"{uv_base}/", {}, 200), n), args, rows)
        out = tmp / "serve.callgrind"
        with smsbot_serve(emu, tmp, name="counted", db=str(db), admins=admins, wrapper=callgrind(out)) as served, \
                local_http() as http:
            smsbot = Counted(served.pid, out)
            base, host = served.base, served.base.removeprefix("http://")
            signed_in = {"Cookie": f"{SESSION_COOKIE}={cookie}"}
            forwarded = {"X-Forwarded-Proto": "http", "X-Forwarded-Host": host, "X-Forwarded-Uri": "/tool/page",
                         "X-Forwarded-Method": "GET", "Accept": "text/html,application/xhtml+xml"}
            for target in (Target("/auth, valid session", f"{base}/auth", signed_in, 200),
                           Target("/auth, no cookie (401)", f"{base}/auth", {}, 401),
                           Target("/auth/forward, valid session", f"{base}/auth/forward", {**forwarded, **signed_in},
                                  200),
                           Target("/auth/forward, no cookie (302)", f"{base}/auth/forward", forwarded, 302)):
                measure(smsbot, target.label, functools.partial(gets, http, target), args, rows)
            inbound = f"{base}/webhooks/inbound"
            measure(smsbot, "webhook, a stranger's text (no reply)", functools.partial(posts, http, inbound), args,
                    rows)
            measure(smsbot, "webhook, an admin's HELP (one reply, sent)",
                    lambda n: posts(http, inbound, n, admins[1:], "HELP", emu), args, rows)
    bare_count, uv_count = rows["bare aiohttp handler"][0], rows[UV_BARE][0]
    version = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout  # noqa: S603, S607
    return [*machine(), f"valgrind: {version.strip()}",
            f"{args.requests} counted requests a path, one after another on one keep-alive connection, after "
            f"{args.warmup} uncounted", "",
            "smsbot runs on uvloop; the bare handler on asyncio's own loop is aiohttp's default",
            "", "| path | instructions a request | on the event loop's thread | bare handler's / path's | the same on "
            "uvloop |", "|---|---|---|---|---|",
            *(f"| {label} | {count:,} | {main:,} | {bare_count / count:.2f} | {uv_count / count:.2f} |"
              for label, (count, main) in rows.items())]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1000, help="counted requests a path (default 1000)")
    parser.add_argument("--warmup", type=int, default=300, help="uncounted requests before (default 300)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("instructions: valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="smsbot-instructions-") as tmp:
        print("\n".join(bench(args, pathlib.Path(tmp))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
