"""The backends benchmark (issues 11 and "Speed, round two"): /auth and inbound webhooks on PostgreSQL against
SQLite and against a bare aiohttp handler, measured with wrk in one run.

It starts a throwaway PostgreSQL cluster (tests/support/pgcluster.py, durable: fsync and synchronous_commit on, so
that a commit waits for the disk as SQLite's synchronous=FULL does; pg_stat_statements loaded, to count statements),
two Vonage TLS emulators (tests/support/vonage_emulator.py, on threads here), bench/gate.py's bare aiohttp handler (one
GET answering 200 "OK") and two `smsbot serve` processes with bench/gate.py's settings but for SMSBOT_DB: one on a
SQLite file, one on a PostgreSQL database. It signs a member in on each, as a person would (an admin's INVITE by
webhook, the code texted back, the PIN, the login form), then measures, in rounds that alternate the backends:

    the bare handler (wrk, --connections), once a round, on asyncio's own loop (aiohttp's default: the issue's
    baseline), then the same on uvloop's, as smsbot runs (each measure's ratio to it is printed too);
    the webhook floor, once a round: strangers' webhooks, as below, to the bare app's POST handler, which makes only
    the checks the contract asks of an inbound text (form, sha256 signature, a valid sender number) with smsbot's own
    functions, stores nothing and answers 204: what a stranger's webhook would cost with a free database and engine;
    the PostgreSQL floor, once a round: the same to a bare app's handler that makes the checks, then records the
    messageId on PostgreSQL in a SERIALIZABLE transaction of its own (BEGIN, one insert, a durable COMMIT, on a pool
    as large as smsbot's): the least a webhook costs when each one is a unit of work on a shared database;
    /auth with the session cookie (wrk, --connections);
    signed inbound webhooks of distinct messageIds from strangers saying "hello" (no reply: the engine's silence),
    at full speed over --webhook-connections;
    the same with admins' HELP (each queues a reply, which the outbox then sends to the emulator at SMSBOT_SMS_RATE:
    the replies pile up, round after round, on both backends alike).

smsbot answers one admin number at most 60 times an hour (then one "Too many texts" notice, then silence), so the
admins' HELP comes from a pool of admin numbers (gate.admin_pool) large enough for the most HELP webhooks the run can
send (--bodies-per-second times the seconds of wrk), taken in turn from one wrk run to the next: no number gets near
the cap. After the rounds it counts, on each backend, the replies queued to admins and the texts the emulator was
asked to send, and fails if any admin number was capped (the figure would be the cap's, not a reply's).

wrk sends the webhooks from bodies signed here just before each run (a Lua script hands each request the next body),
so every request is a new messageId with a valid sha256 signature. After the rounds it checks that every webhook
answered 204 left its messageId in the database. For PostgreSQL it also tells, per webhook, the transactions begun,
the serialization failures (from the server's log) and the statements run (pg_stat_statements).

It prints a table (requests/s, p50, p99 of each backend's median round, and the ratio to the bare handler: the median
of the rounds' ratios), each measure's ratio to the bare handler against the issue's targets (/auth with a session at
least 0.7x, a stranger's webhook 0.5x, an admin's HELP 0.15x), and the ratios PostgreSQL/SQLite, again medians of the
rounds' ratios: /auth (target: at least 0.9x) and webhooks (target: at least 0.5x), and the floors' ratios to the bare
handler, with each backend's strangers' webhooks as a share of the floor, and PostgreSQL's as a share of the
PostgreSQL floor. Targets are reported, not asserted:
the exit status is non-zero only when the harness itself fails.

Usage: .venv/bin/python bench/backends.py [--duration 5] [--rounds 5] [--connections 32] [--webhook-connections 32]
       [--bodies-per-second 4000]
Needs wrk (Debian's package `wrk`), PostgreSQL's binaries (tests/support/pgcluster.py says where it looks) and the test
extras (the emulator uses trustme).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import math
import pathlib
import shutil
import statistics
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, Protocol

import asyncpg
import requests
from gate import (
    RECORDED_PATH,
    UV_BARE,
    WRK_SCRIPT,
    AdminReplies,
    HarnessError,
    Result,
    Served,
    Target,
    WrkParams,
    admin_pool,
    admin_replies,
    bare_server,
    cpu_seconds,
    cpu_share,
    local_http,
    machine,
    measure,
    median_result,
    per_request,
    probe,
    scalar,
    sign_in,
    smsbot_serve,
    text_in,
    to_bare,
    webhook,
    wrk,
    wrk_arguments,
)

from support.pgcluster import PgCluster, running
from support.procs import SESSION_COOKIE  # importable: gate puts tests/ on sys.path
from support.vonage_emulator import VonageEmulator, running_emulator

SQLITE, POSTGRES = "SQLite", "PostgreSQL"
BARE = "bare aiohttp handler"
AUTH = "/auth, valid session"
STRANGERS_HELLO = "webhooks, strangers' texts (no reply)"
ADMINS_HELP = "webhooks, admins' HELP (one reply queued)"
# What no backend can beat: the bare app answering strangers' webhooks after only the checks the contract asks of
# each (form, signature, a valid number), with smsbot's own functions and nothing stored (gate.py's `_checked`).
FLOOR = "webhook floor: the bare app's checks only, nothing stored"
RECORDED = "PostgreSQL floor: the checks, then the messageId recorded in a SERIALIZABLE transaction"
# The targets, as ratios of requests/s: to the bare handler's, and PostgreSQL's to SQLite's.
TO_BARE = {AUTH: 0.7, STRANGERS_HELLO: 0.5, ADMINS_HELP: 0.15}
PG_TO_SQLITE = {AUTH: 0.9, STRANGERS_HELLO: 0.5, ADMINS_HELP: 0.5}
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
    served: Served
    emu: VonageEmulator
    floods: tuple[Flood, ...]  # each backend's own: its database counts the replies to each admin number

    async def inbound_rows(self) -> int:
        """How many messageIds the server has recorded (read beside the running server)."""
        return await scalar(self.served.db, "SELECT count(*) FROM inbound")


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
                f"failures (each a unit of work retried), {statements / n:.1f} statements (pg_stat_statements, BEGIN "
                "and COMMIT included; smsbot's pool sends no reset query)"
                for label, (n, begun, statements, failed) in self.sums.items() if n]



# ---------------------------------------------------------------------------------------------- webhooks by wrk


@dataclasses.dataclass
class Flood:
    """Webhooks at full speed: who texts what. The senders take turns across wrk's runs: wrk sends only some of the
    bodies written for a run, so the next run begins with the sender after the last one it counted."""

    label: str
    senders: Sequence[str]
    text: str
    turn: int = 0  # the index in `senders` of the next run's first sender

    def sender(self, body: int) -> str:
        """The sender of the `body`-th body of the coming run."""
        return self.senders[(self.turn + body) % len(self.senders)]

    def sent(self, count: int) -> None:
        self.turn = (self.turn + count) % len(self.senders)


def make_floods(admins: Sequence[str]) -> tuple[Flood, ...]:
    return Flood(STRANGERS_HELLO, STRANGERS, "hello"), Flood(ADMINS_HELP, admins, "HELP")


def help_bodies(args: argparse.Namespace, floods_per_round: int = 1) -> int:
    """The most admin HELP webhooks one database can get in a run of `floods_per_round` HELP floods a round: bodies
    are written for each wrk run's seconds at --bodies-per-second (`Bodies.script`), and a run that sent more than it
    had fails (`flood`)."""
    threads, per_second, rounds = int(args.threads), int(args.bodies_per_second), int(args.rounds)
    per_run = sum(math.ceil(per_second * seconds / threads) * threads
                  for seconds in (int(args.warmup), int(args.duration)) if seconds > 0)
    return per_run * rounds * floods_per_round + 10  # + the harness's own texts


@dataclasses.dataclass
class Bodies:
    """Signed webhook bodies written for wrk's threads, and how many."""

    directory: pathlib.Path
    runs: Iterator[int] = dataclasses.field(default_factory=itertools.count)
    written: int = 0

    def script(self, flood: Flood, threads: int, count: int) -> pathlib.Path:
        """A wrk script for one run, with `count` fresh bodies split among `threads` files: the n-th body of thread
        t is the flood's (n * threads + t)-th, so the senders the threads use together stay in turn."""
        prefix = self.directory / f"bodies-{next(self.runs)}"
        per_thread = -(-count // threads)
        for thread in range(threads):
            lines = (urllib.parse.urlencode(webhook(flood.sender(n * threads + thread), flood.text))
                     for n in range(per_thread))
            pathlib.Path(f"{prefix}.{thread}").write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.written = per_thread * threads
        script = prefix.with_suffix(".lua")
        script.write_text(f"BODIES = {str(prefix)!r}\n{WEBHOOK_SCRIPT}{WRK_SCRIPT}", encoding="utf-8")
        return script


class Watch(Protocol):
    """What watches a flood's measured run (not its warm-up): PgStats, bench/scaling.py's Cpu."""

    async def start(self) -> None: ...

    async def stop(self, label: str, webhooks: int) -> None: ...


async def flood(base: str, label: str, kind: Flood, params: WrkParams, bodies: Bodies, per_second: int,
                stats: Watch | None = None, pid: int | None = None, path: str = "/webhooks/inbound") -> Result:
    """Warm up (uncounted), then measure: each wrk run with bodies of its own, so no messageId repeats. `stats` is
    told when the measured run starts and stops; with `pid`, the server's CPU time in it is measured too. The
    webhooks go to `path` (smsbot's, and the bare app's floor)."""
    target = Target(label, f"{base}{path}", {}, 204, pid)
    used = None
    for seconds, measured in ((params.warmup, False), (params.duration, True)):
        if seconds <= 0:
            continue
        script = await asyncio.to_thread(bodies.script, kind, params.threads, per_second * seconds)
        if measured and stats:
            await stats.start()
        before = cpu_seconds(pid) if measured and pid else None
        numbers = await wrk(script, target, params, seconds)
        if before is not None and pid:
            used = cpu_seconds(pid) - before
        kind.sent(numbers[0])
        if measured and stats:
            await stats.stop(kind.label, numbers[0])
        if numbers[0] > bodies.written:
            raise HarnessError(f"{target.label}: wrk sent {numbers[0]} webhooks but had {bodies.written} bodies, so "
                               "messageIds repeated; raise --bodies-per-second")
    requests_, micros, connect, read, write, status_errors, timeouts, p50, p99, most = numbers
    return Result(target.label, 204, requests_, micros / 1e6, p50 / 1000, p99 / 1000, most / 1000, status_errors,
                  connect + read + write + timeouts, per_request(used, requests_))


def first_texts(base: str, floods: Sequence[Flood]) -> None:
    """One webhook of each flood, from its first sender, answered 204 as wrk's will be (their first requests find
    the server warm); the admin's INVITE of `sign_in` comes from the same number."""
    with local_http() as http:
        for f in floods:
            text_in(http, base, f.senders[0], f.text)


# ---------------------------------------------------------------------------------------------- report


def row(result: Result, x_bare: float | None, cpu_x_bare: float | None) -> str:
    cpu = "-" if result.cpu_us is None else f"{result.cpu_us:.0f}"
    return (f"| {result.label} | {result.rps:,.0f} | {result.p50_ms:.2f} | {result.p99_ms:.2f} | {result.max_ms:.1f} "
            f"| {'-' if x_bare is None else f'{x_bare:.2f}'} | {cpu} | "
            f"{'-' if cpu_x_bare is None else f'{cpu_x_bare:.2f}'} | {result.unexpected} | {result.socket_errors} |")


def target_line(label: str, ratios: Sequence[float], what: str, target: float) -> str:
    ratio = statistics.median(ratios)
    return (f"{label}: {what} {ratio:.2f}x (rounds: {', '.join(f'{x:.2f}' for x in ratios)}); target at least "
            f"{target}x: {'met' if ratio >= target else 'NOT met'}")


async def bench(args: argparse.Namespace, tmp: pathlib.Path, cluster: PgCluster) -> list[str]:
    header = machine()
    auth_params = WrkParams(args.threads, args.connections, args.duration, args.warmup)
    hook_params = WrkParams(args.threads, args.webhook_connections, args.duration, args.warmup)
    auth_script = tmp / "report.lua"
    auth_script.write_text(WRK_SCRIPT, encoding="utf-8")
    bodies = Bodies(tmp)
    admins = admin_pool(help_bodies(args))
    pg_url = cluster.create_database("smsbot")
    stats = PgStats(cluster, pg_url)
    await stats.install()
    with contextlib.ExitStack() as stack:
        bare_base, bare_pid = stack.enter_context(bare_server(tmp / "bare.log",
                                                              postgres=cluster.create_database("floor")))
        uv_bare = stack.enter_context(bare_server(tmp / "bare-uvloop.log", loop="uvloop"))
        backends = []
        for name, db in ((SQLITE, ""), (POSTGRES, pg_url)):
            emu = stack.enter_context(running_emulator())
            served = stack.enter_context(smsbot_serve(emu, tmp, name=name, admins=admins, db=db))
            backends.append(Backend(name, served, emu, make_floods(admins)))
        cookies = {b.name: await asyncio.to_thread(sign_in, b.emu, b.served.base) for b in backends}
        bare = Target(BARE, f"{bare_base}/", {}, 200, bare_pid)
        uv_target = Target(UV_BARE, f"{uv_bare.base}/", {}, 200, uv_bare.pid)
        auth = {b.name: Target(f"{AUTH}, {b.name}", f"{b.served.base}/auth",
                               {"Cookie": f"{SESSION_COOKIE}={cookies[b.name]}"}, 200, b.served.pid)
                for b in backends}
        for target in (bare, *auth.values()):
            status = await asyncio.to_thread(probe, target)
            if status != 200:
                raise HarnessError(f"{target.label}: the probe got {status}, not 200")
        for b in backends:
            await asyncio.to_thread(first_texts, b.served.base, b.floods)

        measures = [AUTH, STRANGERS_HELLO, ADMINS_HELP]
        bare_rounds: list[Result] = []
        uv_rounds: list[Result] = []
        floor_flood, floor_rounds = Flood(FLOOR, STRANGERS, "hello"), []
        recorded_flood, recorded_rounds = Flood(RECORDED, STRANGERS, "hello"), []
        rounds: dict[tuple[str, str], list[Result]] = {(m, b.name): [] for m in measures for b in backends}
        for round_ in range(args.rounds):
            order = backends if round_ % 2 == 0 else backends[::-1]  # neither backend always goes first
            bare_rounds.append(await measure(auth_script, bare, auth_params, 200))
            uv_rounds.append(await measure(auth_script, uv_target, auth_params, 200))
            floor_rounds.append(await flood(bare_base, FLOOR, floor_flood, hook_params, bodies, args.bodies_per_second,
                                            pid=bare_pid))
            recorded_rounds.append(await flood(bare_base, RECORDED, recorded_flood, hook_params, bodies,
                                               args.bodies_per_second, pid=bare_pid, path=RECORDED_PATH))
            for b in order:
                status = await asyncio.to_thread(probe, auth[b.name])
                rounds[AUTH, b.name].append(await measure(auth_script, auth[b.name], auth_params, status))
            for i, label in enumerate(measures[1:]):
                for b in order:
                    rounds[label, b.name].append(await flood(
                        b.served.base, f"{label}, {b.name}", b.floods[i], hook_params, bodies, args.bodies_per_second,
                        stats if b.name == POSTGRES else None, b.served.pid))
        await asyncio.sleep(1)  # let the last requests wrk cut off finish, whatever they do
        recorded = {b.name: await b.inbound_rows() for b in backends}
        replies = {b.name: await admin_replies(b.served.db, b.emu, admins) for b in backends}
        settings = cluster.settings()

    lines = [*header, f"PostgreSQL (throwaway cluster on this machine, TCP loopback): {settings}",
             "SQLite: WAL, synchronous=FULL (smsbot's settings)",
             f"wrk: {args.threads} thread(s); the bare handler and /auth over {args.connections} connections, "
             f"webhooks over {args.webhook_connections}; {args.duration} s per measure after a {args.warmup} s "
             f"warm-up (not counted); {args.rounds} rounds, each the bare handler then the backends in turn, which "
             "alternate going first (the table shows each one's median round, and the median of the rounds' ratios "
             "to the bare handler)",
             f"admins' HELP comes from {len(admins):,} admin numbers in turn (at most {help_bodies(args):,} HELP "
             "webhooks per backend in this run)",
             "x bare (CPU): the bare handler's server CPU per request over the measure's (for PostgreSQL, smsbot's "
             "process only, not the database's), the median of the rounds' ratios",
             "", "| measure, backend | req/s | p50 ms | p99 ms | max ms | x bare | CPU us/req | x bare (CPU) | "
             "unexpected | socket errors |",
             "|---|---|---|---|---|---|---|---|---|---|", row(median_result(bare_rounds), None, None),
             *(row(median_result(runs), statistics.median(to_bare(runs, bare_rounds)), cpu_share(runs, bare_rounds))
               for runs in (uv_rounds, floor_rounds, recorded_rounds))]
    for m in measures:
        for b in backends:
            runs = rounds[m, b.name]
            lines.append(row(median_result(runs), statistics.median(to_bare(runs, bare_rounds)),
                             cpu_share(runs, bare_rounds)))
    lines.append("")
    for m in measures:
        for b in backends:
            lines.append(target_line(f"{m}, {b.name}", to_bare(rounds[m, b.name], bare_rounds), "to the bare handler",
                                     TO_BARE[m]))
    floor = to_bare(floor_rounds, bare_rounds)
    to_floor = {b.name: statistics.median(to_bare(rounds[STRANGERS_HELLO, b.name], floor_rounds)) for b in backends}
    lines.append(f"{FLOOR}: {statistics.median(floor):.2f}x the bare handler (rounds: "
                 f"{', '.join(f'{x:.2f}' for x in floor)}); strangers' webhooks to the floor: "
                 + ", ".join(f"{name} {x:.2f}x" for name, x in to_floor.items()))
    pg_floor = to_bare(recorded_rounds, bare_rounds)
    lines.append(f"{RECORDED}: {statistics.median(pg_floor):.2f}x the bare handler (rounds: "
                 f"{', '.join(f'{x:.2f}' for x in pg_floor)}); strangers' webhooks on PostgreSQL to it: "
                 f"{statistics.median(to_bare(rounds[STRANGERS_HELLO, POSTGRES], recorded_rounds)):.2f}x")
    lines.append(f"smsbot runs on uvloop; against the {UV_BARE}, the median of the rounds' ratios: "
                 + ", ".join(f"{m}, {b.name} {statistics.median(to_bare(rounds[m, b.name], uv_rounds)):.2f}x"
                             for m in measures for b in backends))
    for m in measures:
        ratios = to_bare(rounds[m, POSTGRES], rounds[m, SQLITE])
        lines.append(target_line(m, ratios, "PostgreSQL/SQLite", PG_TO_SQLITE[m]))
    lines += stats.lines()
    for b in backends:
        answered = {m: sum(r.requests - r.unexpected for r in rounds[m, b.name]) for m in measures[1:]}
        lines += webhook_checks(b.name, recorded[b.name], answered, replies[b.name])
    if any(r.unexpected or r.socket_errors for runs in (*rounds.values(), bare_rounds) for r in runs):
        lines.append("WARNING: some answers were not 2xx, or connections failed; see the unexpected and socket errors "
                     "columns")
    return lines


def bodies_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bodies-per-second", type=int, default=4000,
                        help="signed webhook bodies written per second of a run: more than it can send (default 4000)")


def on_cluster(name: str, work: Callable[[pathlib.Path, PgCluster], Coroutine[Any, Any, list[str]]],
               settings: Sequence[str] = ()) -> int:
    """Run `work` with a temporary directory and a durable throwaway PostgreSQL cluster (with `settings`), print the
    lines it returns; the exit status: 1 when the harness failed (said on stderr), else 0."""
    with tempfile.TemporaryDirectory(prefix=f"smsbot-{name}-") as tmp:
        try:
            with running(durable=True, settings=settings) as cluster:
                lines = asyncio.run(work(pathlib.Path(tmp), cluster))
        except (HarnessError, AssertionError, OSError, RuntimeError, requests.RequestException,
                asyncpg.PostgresError) as exc:
            print(f"{name}: harness failure: {exc}", file=sys.stderr)
            return 1
    print("\n".join(lines))
    return 0


def webhook_checks(who: str, recorded: int, answered: Mapping[str, int], replies: AdminReplies) -> list[str]:
    """The report's lines on what the webhooks left in the database, `answered` (2xx, by measure) in the measured
    runs; a HarnessError when a webhook answered 2xx left no messageId, when an admin's HELP was not answered by a
    reply queued, or when an admin number was capped."""
    hooks = sum(answered.values())
    # Each webhook answered 2xx was committed; those wrk cut off at the end of a run may have been too.
    if recorded < hooks:
        raise HarnessError(f"{who}: {hooks} webhooks answered 2xx but only {recorded} messageIds recorded")
    replies.check(who)
    if replies.queued < answered[ADMINS_HELP]:
        raise HarnessError(f"{who}: {answered[ADMINS_HELP]} admin HELP webhooks answered 2xx but only "
                           f"{replies.queued} replies queued to admins")
    return [f"{who}: {recorded:,} messageIds recorded, for {hooks:,} webhooks answered 2xx in the measured runs (plus "
            "warm-ups and sign-in)",
            replies.line(f"{who}, admins' HELP ({answered[ADMINS_HELP]:,} answered 2xx in the measured runs)")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    wrk_arguments(parser, duration=5, rounds=5, rounds_of="the measures, alternating the backends")
    parser.add_argument("--webhook-connections", type=int, default=32,
                        help="wrk connections for the webhooks (default 32, as the issue measures them)")
    bodies_argument(parser)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("backends: wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    if (min(args.connections, args.webhook_connections) < args.threads or args.duration <= 0 or args.warmup < 0
            or args.rounds < 1 or args.bodies_per_second < 1):
        parser.error("need connections >= threads, duration > 0, warmup >= 0, rounds >= 1, bodies-per-second >= 1")
    return on_cluster("backends", lambda tmp, cluster: bench(args, tmp, cluster),
                      ["shared_preload_libraries=pg_stat_statements"])


if __name__ == "__main__":
    sys.exit(main())
