"""The scaling benchmark (issue "Speed, round two"): 1, 2 and 3 `smsbot serve` instances on one PostgreSQL database
behind real nginx, beside a bare aiohttp handler behind the same nginx, measured with wrk in one run.

It starts a throwaway PostgreSQL cluster (tests/support/pgcluster.py, durable, as bench/backends.py's), the Vonage TLS
emulator (tests/support/vonage_emulator.py, on a thread here), bench/gate.py's bare aiohttp handler (one GET
answering 200 "OK"), three `smsbot serve` instances with bench/gate.py's settings on that one database (each
connecting with its own application_name, all with the same public URL and 127.0.0.1 as their trusted proxy), and
one nginx, run as tests/support/proxies.py runs it (a full configuration in a temporary directory, one worker
process, an access log). nginx serves deploy/nginx-instances.conf four times over, each copy on a port of its own
with its upstream renamed and its three servers changed, nothing else:

    1 instance:  a, and the file's two other servers marked `down` (nginx never sends them anything);
    2 instances: a and b, the third marked `down`;
    3 instances: a, b and c;
    bare:        the bare handler, the two others marked `down`.

It signs a member in through nginx, as a person would (an admin's INVITE by webhook, the code texted back, the PIN,
the login form), then measures through each copy, in rounds (each round the bare handler first, then every measure
on 1, 2 and 3 instances, which take turns going first):

    /auth with the session cookie;
    signed inbound webhooks of distinct messageIds from strangers saying "hello" (no reply);
    the same with admins' HELP (each queues a reply), from a pool of admin numbers taken in turn (gate.admin_pool)
    large enough that no number gets near smsbot's cap of 60 replies an hour in the whole run.

The webhooks come from bench/backends.py's bodies, signed here before each wrk run, one messageId each. All three
instances run throughout: with 1 or 2 behind nginx the others are idle, except that whichever instance holds the
sender's role sends the queued replies to the emulator (SMSBOT_SMS_RATE a second) whatever is being measured.

It prints the machine's core count, a table (requests/s, p50, p99 of each measure's median round on 1, 2 and 3
instances and of the bare handler; the ratio to 1 instance and to the bare handler, each the median of the rounds'
ratios), and the CPU each instance, nginx and the whole machine used while wrk ran: on a machine with fewer cores
than processes, more instances share the same cores rather than add any. After the rounds it checks that every
webhook answered 2xx left its messageId in the database and that no admin number was capped (the count of replies
queued to admins in the database, and of the texts the emulator was asked to send). Figures are reported, never
asserted: the exit status is non-zero only when the harness itself fails.

Usage: .venv/bin/python bench/scaling.py [--duration 5] [--rounds 3] [--connections 32] [--threads 1]
       [--bodies-per-second 4000]
Needs wrk and nginx (Debian's packages `wrk` and `nginx`; nginx at /usr/sbin/nginx, as tests/support/proxies.py
expects), PostgreSQL's binaries (tests/support/pgcluster.py says where it looks) and the test extras (the emulator uses
trustme).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

from backends import (
    ADMINS_HELP,
    AUTH,
    STRANGERS_HELLO,
    Bodies,
    bodies_argument,
    first_texts,
    flood,
    help_bodies,
    make_floods,
    on_cluster,
    webhook_checks,
)
from gate import (
    WRK_SCRIPT,
    HarnessError,
    Result,
    Served,
    Target,
    WrkParams,
    admin_pool,
    admin_replies,
    bare_server,
    cpu_seconds,
    machine,
    measure,
    median_result,
    probe,
    scalar,
    sign_in,
    smsbot_serve,
    to_bare,
    wrk,
    wrk_arguments,
)

from support.pgcluster import PgCluster, unavailable  # importable: gate puts tests/ on sys.path
from support.procs import SESSION_COOKIE, free_port
from support.proxies import BINARIES, ProxyProcess, deploy_file, nginx_serving
from support.vonage_emulator import running_emulator

INSTANCES = ("a", "b", "c")
UPSTREAMS = ("127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083")  # deploy/nginx-instances.conf's servers
COUNTS = (1, 2, 3)
BARE = "bare aiohttp handler"
MEASURES = (AUTH, STRANGERS_HELLO, ADMINS_HELP)


def site(key: str, port: int, upstreams: Sequence[int]) -> str:
    """deploy/nginx-instances.conf listening on 127.0.0.1:`port`, its upstream named smsbot_`key`, its servers
    127.0.0.1 on `upstreams` in turn and the file's remaining servers marked down."""
    ports = {"listen 80;": f"listen 127.0.0.1:{port};", "upstream smsbot {": f"upstream smsbot_{key} {{",
             "http://smsbot;": f"http://smsbot_{key};"}
    for slot, server in enumerate(UPSTREAMS):
        ports[server] = f"127.0.0.1:{upstreams[slot]}" if slot < len(upstreams) else f"{server} down"
    return deploy_file("nginx-instances.conf", ports)


@dataclasses.dataclass(frozen=True)
class Front:
    """nginx with a copy of deploy/nginx-instances.conf for each count of instances and one for the bare handler."""

    proxy: ProxyProcess
    bases: dict[int, str]  # instances behind it: nginx's base URL
    bare: str  # the bare handler's copy: nginx's base URL

    def worker_pids(self) -> list[int]:
        """nginx's worker processes (the children of its master)."""
        assert self.proxy.proc is not None
        master = self.proxy.proc.pid
        with contextlib.suppress(OSError):
            return [int(pid) for pid in pathlib.Path(f"/proc/{master}/task/{master}/children").read_text().split()]
        return []


@contextlib.contextmanager
def nginx_front(workdir: pathlib.Path, instances: Sequence[int], bare: int, public: int) -> Iterator[Front]:
    """Run nginx in front of the instances on ports `instances` (1, 2, then all 3 of them) and of the bare handler on
    port `bare`; the copy for all the instances on port `public`. Its error log is printed (to stderr) only when
    something fails."""
    workdir.mkdir()
    listen = {count: public if count == COUNTS[-1] else free_port() for count in COUNTS}
    bare_listen = free_port()
    copies = [site(f"{count}", listen[count], instances[:count]) for count in COUNTS]
    copies.append(site("bare", bare_listen, [bare]))
    proxy = ProxyProcess("nginx", workdir, public, nginx_serving(workdir, "\n".join(copies)))
    failed = False
    try:
        proxy.start()
        proxy.wait_ready()
        yield Front(proxy, {count: f"http://127.0.0.1:{port}" for count, port in listen.items()},
                    f"http://127.0.0.1:{bare_listen}")
    except BaseException:
        failed = True
        raise
    finally:
        with contextlib.redirect_stdout(io.StringIO()):  # stop() prints every log, the access log's many lines too
            proxy.stop()
        if failed:
            with contextlib.suppress(OSError):
                print((workdir / "error.log").read_text(errors="replace")[-20_000:], file=sys.stderr)


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def busy_seconds() -> float:
    """The CPU time the whole machine has spent busy so far, all cores together (from /proc/stat)."""
    fields = [int(x) for x in pathlib.Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class Cpu:
    """CPU seconds used during the measured wrk runs (not their warm-ups), per count of instances: by each instance,
    nginx's workers and the whole machine. Its start and stop are those of backends.flood's `stats`; `count` says
    which count of instances the next run is for."""

    instances: dict[str, int]  # name: pid
    nginx: Sequence[int]  # pids
    count: int = 0
    used: dict[tuple[int, str], float] = dataclasses.field(default_factory=dict)  # (count, who): seconds
    wall: dict[int, float] = dataclasses.field(default_factory=dict)  # count: seconds of wrk
    _before: dict[str, float] = dataclasses.field(default_factory=dict)

    def _snapshot(self) -> dict[str, float]:
        taken = {name: cpu_seconds(pid) for name, pid in self.instances.items()}
        taken["nginx"] = sum(cpu_seconds(pid) for pid in self.nginx)
        taken["machine"] = busy_seconds()
        taken["wall"] = time.monotonic()
        return taken

    async def start(self) -> None:
        self._before = self._snapshot()

    async def stop(self, label: str = "", webhooks: int = 0) -> None:
        after = self._snapshot()
        self.wall[self.count] = self.wall.get(self.count, 0.0) + after["wall"] - self._before["wall"]
        for who in after.keys() - {"wall"}:
            self.used[self.count, who] = self.used.get((self.count, who), 0.0) + after[who] - self._before[who]

    def lines(self) -> list[str]:
        out = []
        for count, wall in sorted(self.wall.items()):
            each = ", ".join(f"{name} {self.used[count, name] / wall:.2f}" for name in self.instances)
            out.append(f"CPU while wrk ran through {count} instance(s), in cores (CPU seconds a second): instances "
                       f"{each}; nginx {self.used[count, 'nginx'] / wall:.2f}; the whole machine "
                       f"{self.used[count, 'machine'] / wall:.2f} of {os.cpu_count()} (everything running on it)")
        return out


def row(result: Result, count: str, x_one: float | None, x_bare: float | None) -> str:
    def ratio(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    return (f"| {result.label} | {count} | {result.rps:,.0f} | {result.p50_ms:.2f} | {result.p99_ms:.2f} | "
            f"{ratio(x_one)} | {ratio(x_bare)} | {result.unexpected} | {result.socket_errors} |")


async def bench(args: argparse.Namespace, tmp: pathlib.Path, cluster: PgCluster) -> list[str]:
    header = machine()
    pg_url = cluster.create_database("smsbot")
    params = WrkParams(args.threads, args.connections, args.duration, args.warmup)
    script = tmp / "report.lua"
    script.write_text(WRK_SCRIPT, encoding="utf-8")
    bodies = Bodies(tmp)
    admins = admin_pool(help_bodies(args, floods_per_round=len(COUNTS)))  # one database counts every reply
    floods = make_floods(admins)
    public_port = free_port()  # nginx's port for 3 instances: the instances' public URL (SMSBOT_PUBLIC_URL)
    with running_emulator() as emu, contextlib.ExitStack() as stack:
        bare_base, _ = stack.enter_context(bare_server(tmp / "bare.log"))
        instances: list[Served] = []
        for name in INSTANCES:  # one after another: the first sets the schema up
            instances.append(stack.enter_context(smsbot_serve(
                emu, tmp, name=name, admins=admins, db=f"{pg_url}?application_name={name}",
                SMSBOT_PUBLIC_URL=f"http://127.0.0.1:{public_port}", SMSBOT_TRUSTED_PROXIES="127.0.0.1")))
        front = stack.enter_context(nginx_front(tmp / "nginx", [port_of(s.base) for s in instances],
                                                port_of(bare_base), public_port))
        cookie = await asyncio.to_thread(sign_in, emu, front.bases[COUNTS[-1]])
        bare = Target(f"{BARE} behind nginx", f"{front.bare}/", {}, 200)
        auth = {count: Target(AUTH, f"{base}/auth", {"Cookie": f"{SESSION_COOKIE}={cookie}"}, 200)
                for count, base in front.bases.items()}
        for target in (bare, *auth.values()):
            status = await asyncio.to_thread(probe, target)
            if status != 200:
                raise HarnessError(f"{target.label} at {target.url}: the probe got {status}, not 200")
        await asyncio.to_thread(first_texts, front.bases[COUNTS[-1]], floods)

        cpu = Cpu({name: s.pid for name, s in zip(INSTANCES, instances, strict=True)}, front.worker_pids())
        counted = dataclasses.replace(params, warmup=0)
        bare_rounds: list[Result] = []
        rounds: dict[tuple[str, int], list[Result]] = {(m, count): [] for m in MEASURES for count in COUNTS}
        turn = 0
        for _ in range(args.rounds):
            bare_rounds.append(await measure(script, bare, params, 200))
            for m in MEASURES:
                turn += 1
                for count in COUNTS[turn % len(COUNTS):] + COUNTS[:turn % len(COUNTS)]:  # each goes first in turn
                    cpu.count = count
                    if m == AUTH:
                        if params.warmup > 0:
                            await wrk(script, auth[count], params, params.warmup)
                        await cpu.start()
                        result = await measure(script, auth[count], counted, 200)
                        await cpu.stop()
                    else:
                        result = await flood(front.bases[count], m, floods[MEASURES.index(m) - 1], params, bodies,
                                             args.bodies_per_second, cpu)
                    rounds[m, count].append(result)
        await asyncio.sleep(1)  # let the last requests wrk cut off finish, whatever they do
        recorded = await scalar(pg_url, "SELECT count(*) FROM inbound")
        replies = await admin_replies(pg_url, emu, admins)
        nginx_version = subprocess.run([BINARIES["nginx"], "-v"], capture_output=True,  # noqa: S603
                                       text=True).stderr.strip()

    lines = [*header, f"{nginx_version}, worker_processes 1 (tests/support/proxies.py); deploy/nginx-instances.conf",
             f"cores: {os.cpu_count()} on this machine, for wrk, nginx, PostgreSQL and the instances together",
             f"wrk: {args.threads} thread(s), {args.connections} connections, {args.duration} s per measure after a "
             f"{args.warmup} s warm-up (not counted), through nginx; {args.rounds} rounds (the table shows each "
             "measure's median round, and the medians of the rounds' ratios)",
             f"admins' HELP comes from {len(admins):,} admin numbers in turn",
             "",
             "| measure | instances | req/s | p50 ms | p99 ms | x 1 instance | x bare | unexpected | socket errors |",
             "|---|---|---|---|---|---|---|---|---|", row(median_result(bare_rounds), "-", None, None)]
    for m in MEASURES:
        for count in COUNTS:
            runs = rounds[m, count]
            x_one = statistics.median(to_bare(runs, rounds[m, 1]))
            lines.append(row(median_result(runs), str(count), x_one, statistics.median(to_bare(runs, bare_rounds))))
    lines += ["", *cpu.lines()]
    answered = {m: sum(r.requests - r.unexpected for count in COUNTS for r in rounds[m, count]) for m in MEASURES[1:]}
    lines += webhook_checks("PostgreSQL, all instances", recorded, answered, replies)
    if any(r.unexpected or r.socket_errors for runs in (*rounds.values(), bare_rounds) for r in runs):
        lines.append("WARNING: some answers were not what the path should give, or connections failed; see the "
                     "unexpected and socket errors columns")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    wrk_arguments(parser, duration=5, rounds=3, rounds_of="the measures on 1, 2 and 3 instances")
    bodies_argument(parser)
    args = parser.parse_args(argv)
    missing = [what for what, there in (("wrk (Debian: apt-get install wrk)", shutil.which("wrk")),
                                        (f"nginx at {BINARIES['nginx']} (Debian: apt-get install nginx)",
                                         pathlib.Path(BINARIES["nginx"]).exists())) if not there]
    if missing or unavailable():
        print(f"scaling: {'; '.join(filter(None, [*missing, unavailable()]))}", file=sys.stderr)
        return 2
    if args.connections < args.threads or args.duration <= 0 or args.warmup < 0 or args.rounds < 1 \
            or args.bodies_per_second < 1:
        parser.error("need connections >= threads, duration > 0, warmup >= 0, rounds >= 1, bodies-per-second >= 1")
    return on_cluster("scaling", lambda tmp, cluster: bench(args, tmp, cluster))


if __name__ == "__main__":
    sys.exit(main())
