"""The backends benchmark (issue 11): /auth and inbound webhooks on PostgreSQL against SQLite, measured with wrk in
one run.

It starts a throwaway PostgreSQL cluster (tests/support/pgcluster.py, durable: fsync and synchronous_commit on, so
that a commit waits for the disk as SQLite's synchronous=FULL does; pg_stat_statements loaded, to count statements),
two Vonage TLS emulators (tests/support/vonage_emulator.py, on threads here) and two `smsbot serve` processes with the
same settings as bench/gate.py's but for SMSBOT_DB: one on a SQLite file, one on a PostgreSQL database. It signs a
member in on each, as a person would (an admin's INVITE by webhook, the code texted back, the PIN, the login form),
then measures, in rounds that alternate the backends:

    /auth with the session cookie (wrk, --connections);
    signed inbound webhooks of distinct messageIds from strangers saying "hello" (no reply: the engine's silence),
    at full speed over --webhook-connections;
    the same with admins' LIST (each queues a reply, which the outbox then sends to the emulator at SMSBOT_SMS_RATE:
    the replies pile up, round after round, on both backends alike).

wrk sends the webhooks from bodies signed here just before each run (a Lua script hands each request the next body),
so every request is a new messageId with a valid sha256 signature. After the rounds it checks that every webhook
answered 204 left its messageId in the database. For PostgreSQL it also tells, per webhook, the transactions begun,
the serialization failures (from the server's log) and the statements run (pg_stat_statements).

It prints a table (requests/s, p50, p99 of each backend's median round) and the ratios PostgreSQL/SQLite, each the
median of the rounds' ratios: /auth (target: at least 0.9x) and webhooks (target: at least 0.5x). Targets are reported,
not asserted: the exit status is non-zero only when the harness itself fails.

Usage: .venv/bin/python bench/backends.py [--duration 5] [--rounds 5] [--connections 32] [--webhook-connections 16]
Needs wrk (Debian's package `wrk`), PostgreSQL's binaries (tests/support/pgcluster.py says where it looks) and the test
extras (the emulator uses trustme).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import itertools
import pathlib
import shutil
import sqlite3
import statistics
import sys
import tempfile
import urllib.parse
from collections.abc import Iterator, Sequence

import asyncpg
import requests
from gate import (
    ADMINS,
    SECRET,
    SIGNATURE_SECRET,
    WRK_SCRIPT,
    HarnessError,
    Result,
    Target,
    WrkParams,
    machine,
    measure,
    median_result,
    probe,
    sign_in,
    text_in,
    webhook,
    wrk,
)

from support.constants import NUMBER
from support.pgcluster import PgCluster, running
from support.procs import SESSION_COOKIE, serve_env, start_smsbot  # importable: gate puts tests/ on sys.path
from support.vonage_emulator import VonageEmulator, running_emulator

SQLITE, POSTGRES = "SQLite", "PostgreSQL"
STRANGERS = [f"1415555{n:04d}" for n in range(2000, 3000)]  # numbers nobody invited: the engine stays silent
# wrk: each thread reads its own file of signed bodies (one urlencoded form a line) and sends the next one with each
# request. Requests beyond the file's lines would repeat messageIds; the harness writes more lines than a run needs
# and checks that it did.
WEBHOOK_SCRIPT = """
local files = 0
setup = function(thread)
  thread:set("bodies_file", string.format("%s.%d", BODIES, files))
  files = files + 1
end
init = function(args)
  bodies = {}
  for line in io.lines(bodies_file) do bodies[#bodies + 1] = line end
  sent = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end
request = function()
  sent = sent + 1
  return wrk.format(nil, nil, nil, bodies[(sent - 1) % #bodies + 1])
end
"""


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    base: str
    emu: VonageEmulator
    sqlite: pathlib.Path | None = None  # the database file, for SQLite
    url: str = ""  # the database URL, for PostgreSQL

    def inbound_rows(self) -> int:
        """How many messageIds the server has recorded (read beside the running server)."""
        if self.sqlite is not None:
            conn = sqlite3.connect(f"file:{self.sqlite}?mode=ro", uri=True, timeout=10)
            try:
                return int(conn.execute("SELECT count(*) FROM inbound").fetchone()[0])
            finally:
                conn.close()
        return asyncio.run(_pg_count(self.url))


async def _pg_count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM inbound"))
    finally:
        await conn.close()


STATEMENTS = """
SELECT coalesce(sum(calls) FILTER (WHERE query ILIKE 'BEGIN%'), 0), coalesce(sum(calls), 0) FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND query NOT ILIKE '%pg_stat_statements%'
"""


@dataclasses.dataclass
class PgStats:
    """What PostgreSQL did during each measured webhook run, summed per measure: transactions begun and statements
    run in smsbot's database (pg_stat_statements), serialization failures and deadlocks (the server's log)."""

    cluster: PgCluster
    url: str
    sums: dict[str, list[int]] = dataclasses.field(default_factory=dict)  # label: webhooks, begun, statements, failed
    _log_at: int = 0

    async def _query(self, sql: str) -> asyncpg.Record | None:
        conn = await asyncpg.connect(self.url)
        try:
            record: asyncpg.Record | None = await conn.fetchrow(sql)
            return record
        finally:
            await conn.close()

    async def install(self) -> None:
        """The extension's view, in smsbot's database before smsbot creates its tables (it touches none of them)."""
        await self._query("CREATE EXTENSION pg_stat_statements")

    async def start(self) -> None:
        await self._query("SELECT pg_stat_statements_reset()")
        self._log_at = self.cluster.log.stat().st_size

    async def stop(self, label: str, webhooks: int) -> None:
        record = await self._query(STATEMENTS)
        begun, statements = (int(record[0]), int(record[1])) if record else (0, 0)
        with open(self.cluster.log, "rb") as log:
            log.seek(self._log_at)
            text = log.read().decode(errors="replace")
        failed = text.count("could not serialize access") + text.count("deadlock detected")
        sums = self.sums.setdefault(label, [0, 0, 0, 0])
        for i, value in enumerate((webhooks, begun, statements, failed)):
            sums[i] += value

    def lines(self) -> list[str]:
        return [f"PostgreSQL, {label}: per webhook {begun / n:.2f} transactions begun, {failed / n:.2f} serialization "
                f"failures (each a unit of work retried), {statements / n:.1f} statements (pg_stat_statements; the "
                "pool's reset query counts as 4)" for label, (n, begun, statements, failed) in self.sums.items() if n]


@contextlib.contextmanager
def smsbot_serve(name: str, emu: VonageEmulator, tmp: pathlib.Path, db: str) -> Iterator[str]:
    """Yield the base URL of a running `smsbot serve` on database `db` (a file or a URL); its log is printed (to
    stderr) only when something fails."""
    home = tmp / name
    (home / "serve").mkdir(parents=True)

    def env(port: int) -> dict[str, str]:
        return serve_env(emu, port, home / "unused.db", SECRET, NUMBER, SMSBOT_DB=db,
                         SMSBOT_ADMINS=",".join(f"+{a}" for a in ADMINS), SMSBOT_GROUP_NAME="Bench",
                         SMSBOT_LOG_LEVEL="WARNING", VONAGE_SIGNATURE_SECRET=SIGNATURE_SECRET,
                         VONAGE_SIGNATURE_METHOD="sha256", SMSBOT_DAILY_SMS_BUDGET="1000000",
                         SMSBOT_CONFIRM="none")  # INVITE at once, where confirmation is a setting

    proc, base = start_smsbot("serve", home / "serve", env, home / "serve.log", extra_args=["--host", "127.0.0.1"])
    failed = False
    try:
        yield base
    except BaseException:
        failed = True
        raise
    finally:
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):  # stop() prints the log
            proc.stop()
        if failed:
            print(captured.getvalue(), file=sys.stderr)


# ---------------------------------------------------------------------------------------------- webhooks by wrk


@dataclasses.dataclass(frozen=True)
class Flood:
    """Webhooks at full speed: who texts what."""

    label: str
    senders: Sequence[str]
    text: str


FLOODS = (Flood("webhooks, strangers' texts (no reply)", STRANGERS, "hello"),
          Flood("webhooks, admins' LIST (one reply queued)", ADMINS, "LIST"))


@dataclasses.dataclass
class Bodies:
    """Signed webhook bodies written for wrk's threads, and how many."""

    directory: pathlib.Path
    runs: Iterator[int] = dataclasses.field(default_factory=itertools.count)
    written: int = 0

    def script(self, flood: Flood, threads: int, count: int) -> pathlib.Path:
        """A wrk script for one run, with `count` fresh bodies split among `threads` files."""
        prefix = self.directory / f"bodies-{next(self.runs)}"
        senders = itertools.cycle(flood.senders)
        per_thread = -(-count // threads)
        for thread in range(threads):
            lines = (urllib.parse.urlencode(webhook(next(senders), flood.text)) for _ in range(per_thread))
            pathlib.Path(f"{prefix}.{thread}").write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.written = per_thread * threads
        script = prefix.with_suffix(".lua")
        script.write_text(f"BODIES = {str(prefix)!r}\n{WEBHOOK_SCRIPT}{WRK_SCRIPT}", encoding="utf-8")
        return script


async def flood(backend: Backend, kind: Flood, params: WrkParams, bodies: Bodies, per_second: int,
                stats: PgStats | None = None) -> Result:
    """Warm up (uncounted), then measure: each wrk run with bodies of its own, so no messageId repeats."""
    target = Target(f"{kind.label}, {backend.name}", f"{backend.base}/webhooks/inbound", {}, 204)
    for seconds, measured in ((params.warmup, False), (params.duration, True)):
        if seconds <= 0:
            continue
        script = await asyncio.to_thread(bodies.script, kind, params.threads, per_second * seconds)
        if measured and stats:
            await stats.start()
        numbers = await wrk(script, target, params, seconds)
        if measured and stats:
            await stats.stop(kind.label, numbers[0])
        if numbers[0] > bodies.written:
            raise HarnessError(f"{target.label}: wrk sent {numbers[0]} webhooks but had {bodies.written} bodies, so "
                               "messageIds repeated; raise --bodies-per-second")
    requests_, micros, connect, read, write, status_errors, timeouts, p50, p99, most = numbers
    return Result(target.label, 204, requests_, micros / 1e6, p50 / 1000, p99 / 1000, most / 1000, status_errors,
                  connect + read + write + timeouts)


# ---------------------------------------------------------------------------------------------- report


def row(result: Result) -> str:
    return (f"| {result.label} | {result.rps:,.0f} | {result.p50_ms:.2f} | {result.p99_ms:.2f} | {result.max_ms:.1f} "
            f"| {result.unexpected} | {result.socket_errors} |")


async def bench(args: argparse.Namespace, tmp: pathlib.Path, cluster: PgCluster) -> list[str]:
    header = machine()
    auth_params = WrkParams(args.threads, args.connections, args.duration, args.warmup)
    hook_params = WrkParams(args.threads, args.webhook_connections, args.duration, args.warmup)
    auth_script = tmp / "report.lua"
    auth_script.write_text(WRK_SCRIPT, encoding="utf-8")
    bodies = Bodies(tmp)
    sqlite_file = tmp / "sqlite-data" / "smsbot.db"
    pg_url = cluster.create_database("smsbot")
    stats = PgStats(cluster, pg_url)
    await stats.install()
    with contextlib.ExitStack() as stack:
        backends = []
        for name, db in ((SQLITE, str(sqlite_file)), (POSTGRES, pg_url)):
            emu = stack.enter_context(running_emulator())
            base = stack.enter_context(smsbot_serve(name, emu, tmp, db))
            backends.append(Backend(name, base, emu, sqlite_file if name == SQLITE else None,
                                    pg_url if name == POSTGRES else ""))
        cookies = {b.name: await asyncio.to_thread(sign_in, b.emu, b.base) for b in backends}
        auth = {b.name: Target(f"/auth, valid session, {b.name}", f"{b.base}/auth",
                               {"Cookie": f"{SESSION_COOKIE}={cookies[b.name]}"}, 200) for b in backends}
        for b in backends:
            status = await asyncio.to_thread(probe, auth[b.name])
            if status != 200:
                raise HarnessError(f"{auth[b.name].label}: the probe got {status}, not 200")
            with requests.Session() as http:  # one webhook of each kind answered 204, as wrk's will be
                http.trust_env = False
                for f in FLOODS:
                    await asyncio.to_thread(text_in, http, b.base, f.senders[0], f.text)

        measures = ["/auth, valid session", *(f.label for f in FLOODS)]
        rounds: dict[tuple[str, str], list[Result]] = {(m, b.name): [] for m in measures for b in backends}
        for round_ in range(args.rounds):
            order = backends if round_ % 2 == 0 else backends[::-1]  # neither backend always goes first
            for b in order:
                status = await asyncio.to_thread(probe, auth[b.name])
                rounds[measures[0], b.name].append(await measure(auth_script, auth[b.name], auth_params, status))
            for f in FLOODS:
                for b in order:
                    rounds[f.label, b.name].append(await flood(b, f, hook_params, bodies, args.bodies_per_second,
                                                               stats if b.name == POSTGRES else None))
        await asyncio.sleep(1)  # let the last requests wrk cut off finish, whatever they do
        recorded = {b.name: await asyncio.to_thread(b.inbound_rows) for b in backends}
        settings = cluster.settings()

    answered = {b.name: sum(r.requests - r.unexpected for f in FLOODS for r in rounds[f.label, b.name])
                for b in backends}
    lines = [*header, f"PostgreSQL (throwaway cluster on this machine, TCP loopback): {settings}",
             "SQLite: WAL, synchronous=FULL (smsbot's settings)",
             f"wrk: {args.threads} thread(s); /auth over {args.connections} connections, webhooks over "
             f"{args.webhook_connections}; {args.duration} s per measure after a {args.warmup} s warm-up (not "
             f"counted); {args.rounds} rounds alternating the backends (the table shows each one's median round)",
             "", "| measure, backend | req/s | p50 ms | p99 ms | max ms | unexpected | socket errors |",
             "|---|---|---|---|---|---|---|"]
    ratios: dict[str, list[float]] = {}
    for m in measures:
        for b in backends:
            lines.append(row(median_result(rounds[m, b.name])))
        ratios[m] = [p.rps / s.rps for s, p in zip(rounds[m, SQLITE], rounds[m, POSTGRES], strict=True)]
    targets = {measures[0]: 0.9, FLOODS[0].label: 0.5, FLOODS[1].label: 0.5}
    lines.append("")
    for m in measures:
        ratio = statistics.median(ratios[m])
        lines.append(f"{m}: PostgreSQL/SQLite {ratio:.2f}x (rounds: {', '.join(f'{x:.2f}' for x in ratios[m])}); "
                     f"target at least {targets[m]}x: {'met' if ratio >= targets[m] else 'NOT met'}")
    lines += stats.lines()
    for b in backends:
        # Each webhook answered 2xx was committed; those wrk cut off at the end of a run may have been too.
        lines.append(f"{b.name}: {recorded[b.name]} messageIds recorded, for {answered[b.name]} webhooks answered 2xx "
                     f"in the measured runs (plus warm-ups and sign-in)")
        if recorded[b.name] < answered[b.name]:
            raise HarnessError(f"{b.name} answered {answered[b.name]} webhooks 2xx but recorded only "
                               f"{recorded[b.name]} messageIds")
    if any(r.unexpected or r.socket_errors for runs in rounds.values() for r in runs):
        lines.append("WARNING: some answers were not 2xx, or connections failed; see the unexpected and socket errors "
                     "columns")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=5, help="seconds of wrk per measure (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted wrk seconds before each (default 1)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds alternating the backends (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections for /auth (default 32)")
    parser.add_argument("--webhook-connections", type=int, default=16,
                        help="wrk connections for the webhooks (default 16)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--bodies-per-second", type=int, default=4000,
                        help="signed webhook bodies written per second of a run: more than it can send (default 4000)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("backends: wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    if (min(args.connections, args.webhook_connections) < args.threads or args.duration <= 0 or args.warmup < 0
            or args.rounds < 1 or args.bodies_per_second < 1):
        parser.error("need connections >= threads, duration > 0, warmup >= 0, rounds >= 1, bodies-per-second >= 1")
    with tempfile.TemporaryDirectory(prefix="smsbot-backends-") as tmp:
        try:
            with running(durable=True, settings=["shared_preload_libraries=pg_stat_statements"]) as cluster:
                lines = asyncio.run(bench(args, pathlib.Path(tmp), cluster))
        except (HarnessError, AssertionError, OSError, RuntimeError, requests.RequestException,
                asyncpg.PostgresError) as exc:
            print(f"backends: harness failure: {exc}", file=sys.stderr)
            return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
