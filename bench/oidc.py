"""The OIDC provider's throughput (issue 17): /oidc/authorize and /oidc/token against /auth, in one run.

It starts one `smsbot serve` on a SQLite file with a client file declaring one confidential client, signs a member in
(an admin's INVITE by webhook, the code texted back by the Vonage emulator, the PIN, the login form), then measures,
for --duration seconds each, with --connections concurrent requests from one aiohttp client process:

    /auth with the session cookie (no database work: the session cache);
    /oidc/authorize with the session cookie (a code written, a 302 back to the tool);
    the code flow's two requests, /oidc/authorize then /oidc/token (client_secret_basic), each pair timed apart:
    the token request takes the code (one delete), writes an access token and signs an RS256 ID token.

Every answer's status is checked (200, 302, 200): a wrong one is counted and reported. The client is one Python
process on the same machine, so the /auth figure is mostly the client's own ceiling; the ratios say how far below it
the OIDC endpoints are. Figures are reported, never asserted.

Usage: .venv/bin/python bench/oidc.py [--duration 5] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
from gate import HarnessError, machine, sign_in, smsbot_serve

from support.procs import SESSION_COOKIE  # noqa: E402 (gate put tests/ on the path)
from support.vonage_emulator import running_emulator  # noqa: E402

CLIENT_SECRET = "bench-client-secret-0123456789-abcdefgh"  # noqa: S105
BACK = "https://tool.example.test/callback"
Step = Callable[[aiohttp.ClientSession], Awaitable[list[tuple[str, float, bool]]]]


async def measure(label: str, step: Step, connections: int, duration: float) -> dict[str, list[tuple[float, bool]]]:
    """Run `step` in `connections` loops for `duration` seconds; each step's requests as (seconds, as expected)."""
    timings: dict[str, list[tuple[float, bool]]] = {}
    deadline = time.monotonic() + duration
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as http:
        async def loop() -> None:
            while time.monotonic() < deadline:
                for name, seconds, ok in await step(http):
                    timings.setdefault(name, []).append((seconds, ok))

        await asyncio.gather(*(loop() for _ in range(connections)))
    return timings


def report(label: str, timings: list[tuple[float, bool]], duration: float) -> tuple[float, str]:
    seconds = sorted(t for t, _ in timings)
    wrong = sum(1 for _, ok in timings if not ok)
    rps = len(timings) / duration
    p50 = statistics.median(seconds) * 1000
    p99 = seconds[min(len(seconds) - 1, int(len(seconds) * 0.99))] * 1000
    return rps, f"{label:<34} {rps:>9.0f} {p50:>8.1f} {p99:>8.1f} {wrong:>6}"


async def run(base: str, cookie: str, connections: int, duration: float) -> list[str]:
    cookies = {"Cookie": f"{SESSION_COOKIE}={cookie}"}
    query = urlencode({"client_id": "tool", "redirect_uri": BACK, "response_type": "code", "scope": "openid profile",
                       "state": "s", "nonce": "n"})
    basic = "Basic " + base64.b64encode(f"tool:{CLIENT_SECRET}".encode()).decode()

    async def timed(call: Awaitable[aiohttp.ClientResponse], expect: int) -> tuple[float, bool, aiohttp.ClientResponse]:
        started = time.perf_counter()
        response = await call
        await response.read()
        return time.perf_counter() - started, response.status == expect, response

    async def auth(http: aiohttp.ClientSession) -> list[tuple[str, float, bool]]:
        seconds, ok, _ = await timed(http.get(f"{base}/auth", headers=cookies), 200)
        return [("/auth", seconds, ok)]

    async def authorize(http: aiohttp.ClientSession) -> list[tuple[str, float, bool]]:
        seconds, ok, _ = await timed(http.get(f"{base}/oidc/authorize?{query}", headers=cookies,
                                              allow_redirects=False), 302)
        return [("/oidc/authorize", seconds, ok)]

    async def flow(http: aiohttp.ClientSession) -> list[tuple[str, float, bool]]:
        first, ok, back = await timed(http.get(f"{base}/oidc/authorize?{query}", headers=cookies,
                                               allow_redirects=False), 302)
        code = parse_qs(urlsplit(back.headers.get("Location", "")).query).get("code", [""])[0]
        second, good, _ = await timed(http.post(f"{base}/oidc/token", headers={"Authorization": basic}, data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": BACK}), 200)
        return [("/oidc/authorize (in the flow)", first, ok), ("/oidc/token", second, good)]

    lines = [f"{'request':<34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'wrong':>6}"]
    rates = {}
    for label, step in (("/auth", auth), ("/oidc/authorize", authorize), ("flow", flow)):
        for name, timings in (await measure(label, step, connections, duration)).items():
            rates[name], line = report(name, timings, duration)
            lines.append(line)
    lines.append(f"/oidc/authorize / /auth: {rates['/oidc/authorize'] / rates['/auth']:.2f}x; "
                 f"/oidc/token / /auth: {rates['/oidc/token'] / rates['/auth']:.2f}x "
                 f"(code-flow pairs/s: {rates['/oidc/token']:.0f})")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder, running_emulator() as emu:
        tmp = pathlib.Path(folder)
        clients = tmp / "clients.toml"
        clients.write_text(f'[[client]]\nid = "tool"\nsecret = "{CLIENT_SECRET}"\nredirect_uris = ["{BACK}"]\n')
        try:
            with smsbot_serve(emu, tmp, SMSBOT_OIDC_CLIENTS=str(clients)) as served:
                cookie = sign_in(emu, served.base)
                lines = asyncio.run(run(served.base, cookie, args.connections, args.duration))
        except HarnessError as error:
            print(f"bench/oidc.py: {error}", file=sys.stderr)
            return 1
    print("\n".join(machine()))
    print(f"{args.connections} connections, {args.duration:g} s per row, one smsbot serve on SQLite")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
