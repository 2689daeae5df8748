"""Where a request's time goes (issue 19): py-spy samples `smsbot serve` while wrk floods it with one kind of webhook,
or with forward-auth checks.

It starts `smsbot serve` (on a SQLite file, or with --postgresql on a throwaway cluster) against the Vonage emulator,
as bench/backends.py does, floods it for --duration seconds with signed webhooks of one kind (strangers' "hello", no
reply; or admins' HELP, one reply queued), or with GET /auth (`auth`: with a signed-in member's session cookie;
`denied`: with none, the 401), and has py-spy (`.venv/bin/pip install py-spy`) sample the server
process the whole time, every thread, when it is on the CPU. It prints the rate wrk saw and, from py-spy's collapsed
stacks, the share of the samples each part of the server took: the functions that hold the most samples themselves
(self) and those under which the most samples fall (total).

Usage: .venv/bin/python bench/profile.py [--py-spy PATH] [--kind strangers|help|auth|denied] [--postgresql]
       [--duration 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import pathlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence

from backends import STRANGERS, Bodies, Flood, first_texts, flood, on_cluster
from gate import WRK_SCRIPT, Target, WrkParams, admin_pool, cpu_seconds, measure, sign_in, smsbot_serve

from support.pgcluster import PgCluster  # importable: gate puts tests/ on sys.path
from support.procs import SESSION_COOKIE
from support.vonage_emulator import running_emulator

TOP = 25
PER_SECOND = 6000  # fresh bodies written for each second of flood: more than the server can take


def short(frame: str) -> str:
    """`function (/path/to/file.py:12)` as `function (file.py)`: a function's samples, whatever its line."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rpartition('/')[2].rpartition(':')[0] or where})"


def shares(collapsed: pathlib.Path, thread: str = "") -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    """Samples in all, and per function (`name (file:line)`) the samples it held itself and those under it; with
    `thread`, only the samples of threads whose stacks pass through a function named so (`run (cli.py)`: the event
    loop's)."""
    own: collections.Counter[str] = collections.Counter()
    under: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [short(f) for f in stack.split(";")[1:]]  # less the thread's name
        if thread and thread not in frames:
            continue
        total += int(count)
        if frames:
            own[frames[-1]] += int(count)
        for frame in set(frames):
            under[frame] += int(count)
    return total, own, under


def report(collapsed: pathlib.Path, thread: str = "", top: int = TOP) -> list[str]:
    total, own, under = shares(collapsed, thread)
    if not total:
        return ["py-spy recorded no samples"]
    which = f"the threads under {thread}" if thread else "every thread"
    lines = [f"{total} samples of threads on the CPU ({which}; idle ones are not sampled)", "",
             "| self | function |", "|---|---|"]
    lines += [f"| {n / total:5.1%} | {name} |" for name, n in own.most_common(top)]
    lines += ["", "| total | function |", "|---|---|"]
    lines += [f"| {n / total:5.1%} | {name} |" for name, n in under.most_common(top)]
    return lines


async def profile(args: argparse.Namespace, tmp: pathlib.Path, cluster: PgCluster | None) -> list[str]:
    params = WrkParams(1, args.connections, args.duration, 1)
    admins = admin_pool(PER_SECOND * (args.duration + 1) + 10)
    kind = Flood("webhooks, strangers", STRANGERS, "hello") if args.kind == "strangers" else \
        Flood("webhooks, admins' HELP", admins, "HELP")
    db = cluster.create_database("smsbot") if cluster else ""
    with contextlib.ExitStack() as stack:
        emu = stack.enter_context(running_emulator())
        served = stack.enter_context(smsbot_serve(emu, tmp, name="serve", admins=admins, db=db))
        await asyncio.to_thread(first_texts, served.base, [kind])
        checks = None
        if args.kind in ("auth", "denied"):
            cookie = await asyncio.to_thread(sign_in, emu, served.base)
            signed_in = {"Cookie": f"{SESSION_COOKIE}={cookie}"} if args.kind == "auth" else {}
            checks = Target(f"GET /auth, {'a session' if signed_in else 'no session (401)'}", f"{served.base}/auth",
                            signed_in, 200 if signed_in else 401)
            script = tmp / "report.lua"
            script.write_text(WRK_SCRIPT, encoding="utf-8")
        out = tmp / "stacks.txt"
        command = [args.py_spy, "record", "--pid", str(served.pid), "--rate", str(args.rate), "--threads",
                   "--format", "raw", "--nonblocking", "--output", str(out), "--duration", str(args.duration + 2)]
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,  # noqa: S603 (as given)
                               text=True)
        cpu = cpu_seconds(served.pid)
        if checks is None:
            result = await flood(served.base, kind.label, kind, params, Bodies(tmp), PER_SECOND)
        else:
            result = await measure(script, checks, params, checks.expect)
        cpu = cpu_seconds(served.pid) - cpu  # the warm-up second too: a bound on the CPU per request
        _, err = await asyncio.to_thread(spy.communicate, timeout=60)
        if spy.returncode:
            raise RuntimeError(f"py-spy failed: {err}")
    backend = "PostgreSQL" if cluster else "SQLite"
    return [f"{result.label} on {backend}: {result.rps:,.0f}/s over {result.seconds:.1f} s "
            f"({args.connections} connections), p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms",
            f"the server's CPU: {cpu:.1f} s in {params.warmup + result.seconds:.0f} s of flood, so at most "
            f"{cpu / result.requests * 1000:.3f} ms a request", "",
            *report(out, args.thread, args.top)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    beside = pathlib.Path(sys.executable).with_name("py-spy")
    parser.add_argument("--py-spy", default=str(beside) if beside.exists() else shutil.which("py-spy"),
                        help="the py-spy executable (default: the one beside this Python, else on PATH)")
    parser.add_argument("--kind", choices=("strangers", "help", "auth", "denied"), default="help")
    parser.add_argument("--postgresql", action="store_true", help="on a throwaway PostgreSQL cluster, not SQLite")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--top", type=int, default=TOP, help=f"functions listed in each table (default {TOP})")
    parser.add_argument("--rate", type=int, default=200, help="py-spy's samples a second (default 200)")
    parser.add_argument("--thread", default="", help="only the samples of threads under this function, as the "
                        "report names it: 'run (cli.py)' is the event loop's thread")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args(argv)
    if not args.py_spy:
        print("profile: py-spy is not installed (.venv/bin/pip install py-spy)", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        print("profile: wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    if args.postgresql:
        return on_cluster("profile", lambda tmp, cluster: profile(args, tmp, cluster), [])
    with tempfile.TemporaryDirectory(prefix="smsbot-profile-") as tmp:
        print("\n".join(asyncio.run(profile(args, pathlib.Path(tmp), None))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
