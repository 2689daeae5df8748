"""The start-up benchmark (issue 19): how long `smsbot serve` and `smsbot dev` take from launch to a 200 from
/healthz, and how much memory each holds then.

On free loopback ports it starts the Vonage TLS emulator (tests/support/vonage_emulator.py, on a thread here), then,
in rounds that alternate the modes, launches the installed `smsbot serve` (on a SQLite file, with gate.py's
settings, Vonage pointed at the emulator) and `smsbot dev` (its defaults, in a folder of its own), each on a fresh
database; polls /healthz every 5 ms from the launch; reads the process's resident memory (VmRSS) once it answers;
and stops it. The first round of each mode is a warm-up (not counted): the disk cache then holds the modules.

It prints, per mode, the median and the range of the launch-to-/healthz times and the median RSS, with the load
average beside them. Targets are reported, not asserted: the exit status is non-zero only when the harness fails.

Usage: .venv/bin/python bench/startup.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence

import requests
from gate import ADMIN, SECRET, SIGNATURE_SECRET, HarnessError, local_http, machine

from support.constants import NUMBER
from support.procs import SmsbotProcess, clean_env, free_port, serve_env  # importable: gate puts tests/ on sys.path
from support.vonage_emulator import VonageEmulator, running_emulator

TARGET = 0.6  # seconds from launch to /healthz
MODES = ("serve", "dev")


def rss_mb(pid: int) -> float:
    """The process's resident memory, in MB."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise HarnessError(f"no VmRSS for pid {pid}")


def launch(mode: str, emu: VonageEmulator, home: pathlib.Path) -> tuple[float, float]:
    """Start `smsbot <mode>` once; seconds from launch to /healthz's 200, and its RSS then."""
    home.mkdir(parents=True)
    port = free_port()
    if mode == "serve":
        env = serve_env(emu, port, home / "smsbot.db", SECRET, NUMBER, SMSBOT_ADMINS=f"+{ADMIN}",
                        SMSBOT_LOG_LEVEL="WARNING", VONAGE_SIGNATURE_SECRET=SIGNATURE_SECRET,
                        VONAGE_SIGNATURE_METHOD="sha256")
        args = ["serve", "--port", str(port), "--host", "127.0.0.1"]
    else:
        env = clean_env({"SMSBOT_LOG_LEVEL": "WARNING"})
        args = ["dev", "--port", str(port)]
    proc = SmsbotProcess(args, home, env, home / "log")
    url = f"http://127.0.0.1:{port}/healthz"
    with local_http() as http:
        started = time.monotonic()
        proc.start()
        try:
            while True:
                if proc.proc is not None and proc.proc.poll() is not None:
                    raise HarnessError(f"smsbot {mode} exited with code {proc.proc.returncode}:\n{proc.output()}")
                with contextlib.suppress(requests.RequestException):
                    if http.get(url, timeout=1).status_code == 200:
                        took = time.monotonic() - started
                        break
                if time.monotonic() - started > 15:
                    raise HarnessError(f"smsbot {mode}: no 200 from /healthz within 15 s:\n{proc.output()}")
                time.sleep(0.005)
            return took, rss_mb(proc.pid)
        finally:
            with contextlib.redirect_stdout(io.StringIO()):  # stop() prints the log
                proc.stop()


def bench(rounds: int, tmp: pathlib.Path) -> list[str]:
    header = machine()
    times: dict[str, list[float]] = {m: [] for m in MODES}
    rss: dict[str, list[float]] = {m: [] for m in MODES}
    with running_emulator() as emu:
        for round_ in range(rounds + 1):
            for mode in MODES if round_ % 2 == 0 else MODES[::-1]:
                took, mb = launch(mode, emu, tmp / f"{mode}-{round_}")
                if round_:  # round 0 warms the disk cache
                    times[mode].append(took)
                    rss[mode].append(mb)
    lines = [*header, f"{rounds} launches of each mode (after one uncounted), alternating", "",
             "| mode | start to /healthz, median | range | RSS at /healthz, median |", "|---|---|---|---|"]
    for mode in MODES:
        lines.append(f"| smsbot {mode} | {statistics.median(times[mode]):.3f} s | {min(times[mode]):.3f}-"
                     f"{max(times[mode]):.3f} s | {statistics.median(rss[mode]):.1f} MB |")
    lines += ["", f"target: under {TARGET} s to /healthz; "
              f"load average after the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=7, help="counted launches of each mode (default 7)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("need rounds >= 1")
    with tempfile.TemporaryDirectory(prefix="smsbot-startup-") as tmp:
        try:
            lines = bench(args.rounds, pathlib.Path(tmp))
        except (HarnessError, OSError) as exc:
            print(f"startup: harness failure: {exc}", file=sys.stderr)
            return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
