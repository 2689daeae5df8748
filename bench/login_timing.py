"""Benchmark: does /login take the same time whatever the reason it fails? (security.md checklist item 15)

Runs the app in-process over real HTTP (aiohttp test server, fake SMS gateway, a real SQLite file) and times
200 failed sign-ins of each kind. Prints p50 and p95 per kind and the largest p50 ratio. Usage:
    .venv/bin/python bench/login_timing.py [runs]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from smsbot.clock import FakeClock
from smsbot.gateway import FakeGateway
from smsbot.settings import load
from smsbot.web import create_app
from smsbot.web.appkeys import OUTBOX

# The tests' constants (tests/support); smsbot itself is the installed package, as in the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.constants import ADMIN, INVITE_CODE, PIN_IS  # noqa: E402
from support.service import CSRF_INPUT as CSRF  # noqa: E402


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load({"SMSBOT_SECRET": "b" * 40, "SMSBOT_ADMINS": ADMIN, "SMSBOT_DB": str(Path(tmp) / "b.db"),
                         "SMSBOT_LOGIN_FAILURES_PER_MINUTE": "1000000", "SMSBOT_DAILY_SMS_BUDGET": "100000",
                         "SMSBOT_LOCKOUT_FAILURES": "5"}, dev=True)
        clock, gateway = FakeClock(), FakeGateway()
        app = create_app(settings, gateway=gateway, clock=clock, run_worker=False)
        async with TestClient(TestServer(app)) as client:
            ids = iter(range(10**9))

            async def text(sender: str, body: str) -> str:
                await client.post("/webhooks/inbound", data={"msisdn": sender.lstrip("+"), "to": "1",
                                                             "messageId": f"b{next(ids)}", "text": body})
                await app[OUTBOX].drain_once()
                return gateway.sent[-1].text

            async def member(n: int) -> tuple[str, str]:
                number = f"+1415556{n:04d}"
                await text(ADMIN, f"INVITE {number} user{n}")
                invite = next(m.text for m in reversed(gateway.sent) if m.to == number)
                code = INVITE_CODE.search(invite)
                assert code
                pin = PIN_IS.search(await text(number, code.group(1)))
                assert pin
                return f"user{n}", pin.group(1)

            form = await client.get("/login")
            token = CSRF.search(await form.text())
            assert token
            cookies = {k: v.value for k, v in form.cookies.items()}

            async def attempt(username: str, pin: str) -> float:
                client.session.cookie_jar.clear()
                start = time.perf_counter()
                response = await client.post("/login", cookies=cookies, allow_redirects=False,
                                             data={"username": username, "pin": pin, "csrf_token": token.group(1)})
                await response.read()
                elapsed = time.perf_counter() - start
                assert response.status == 401, response.status
                return elapsed

            per_member = 4  # wrong tries per member: below the 5 that kill a PIN and lock
            live = [await member(n) for n in range(runs // per_member + 1)]
            timings: dict[str, list[float]] = {k: [] for k in ("unknown user", "wrong PIN", "expired PIN",
                                                               "used PIN", "locked member")}
            for i in range(runs):
                timings["unknown user"].append(await attempt(f"nobody{i}", "123456"))
                user, pin = live[i // per_member]
                timings["wrong PIN"].append(await attempt(user, f"{(int(pin) + 1) % 10**6:06d}"))
            locked_user, locked_pin = await member(9000)
            for _ in range(5):
                await attempt(locked_user, "000000")
            used_user, used_pin = await member(9001)
            client.session.cookie_jar.clear()
            await client.post("/login", cookies=cookies, allow_redirects=False,
                              data={"username": used_user, "pin": used_pin, "csrf_token": token.group(1)})
            for _ in range(runs):
                timings["locked member"].append(await attempt(locked_user, locked_pin))
                timings["used PIN"].append(await attempt(used_user, used_pin))
            clock.advance(11 * 60)
            for i in range(runs):
                user, pin = live[i // per_member]
                timings["expired PIN"].append(await attempt(user, pin))

    p50 = {k: statistics.median(v) * 1000 for k, v in timings.items()}
    for kind, values in timings.items():
        p95 = statistics.quantiles(values, n=20)[-1] * 1000
        print(f"{kind:14s} p50 {p50[kind]:6.2f} ms   p95 {p95:6.2f} ms   ({len(values)} runs)")
    print(f"largest p50 ratio: {max(p50.values()) / min(p50.values()):.2f}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
