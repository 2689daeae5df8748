"""Benchmark: does /login take the same time whatever the reason it fails? (SECURITY.md, checklist item 15)

Runs the app in-process over real HTTP (aiohttp test server, a real SQLite file, the real clock) with the Vonage SDK
talking to the Vonage emulator (tests/support/vonage_emulator.py), whose Verify code checks take `--latency` seconds.
Times `runs` sign-ins of each kind, one at a time, and prints p50 and p95 per kind. Usage:
    .venv/bin/python bench/login_timing.py [--mode verify|sms] [--latency 0.15] [--runs 30]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the Vonage emulator lives with the tests (tests/support)

from smsbot.settings import load  # noqa: E402
from smsbot.web import create_app  # noqa: E402
from smsbot.web.appkeys import OUTBOX, SETTINGS  # noqa: E402

from support.vonage_emulator import running_emulator  # noqa: E402

ADMIN = "+14155550100"
NUMBER = "14155550199"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PIN = re.compile(r"PIN is (\d{6})")
KINDS = ("unknown user", "member without a live PIN", "wrong PIN for a live PIN", "success")


async def main(mode: str, latency: float, runs: int) -> None:
    logging.disable(logging.ERROR)  # the SDK logs every 400 a wrong code gets
    with running_emulator() as emu, tempfile.TemporaryDirectory() as tmp:
        os.environ["REQUESTS_CA_BUNDLE"] = str(emu.ca_path)
        emu.check_latency = latency
        emu.max_code_attempts = 10**6  # the bench's wrong tries must not end a verification
        settings = load({"SMSBOT_SECRET": "b" * 40, "SMSBOT_ADMINS": ADMIN, "SMSBOT_NUMBER": NUMBER,
                         "SMSBOT_DB": str(Path(tmp) / "b.db"), "SMSBOT_PIN_VIA": mode, "SMSBOT_CONFIRM": "none",
                         "VONAGE_API_KEY": emu.api_key, "VONAGE_API_SECRET": emu.api_secret,
                         "VONAGE_API_HOST": emu.host, "VONAGE_REST_HOST": emu.host,
                         "SMSBOT_LOGIN_FAILURES_PER_MINUTE": "1000000", "SMSBOT_DAILY_SMS_BUDGET": "100000",
                         "SMSBOT_LOCKOUT_FAILURES": "1000000", "SMSBOT_PIN_CAP_HOUR": "1000000",
                         "SMSBOT_PIN_CAP_DAY": "1000000", "SMSBOT_SMS_RATE": "1000"})
        app = create_app(settings, run_worker=False)
        async with TestClient(TestServer(app)) as client:
            ids = iter(range(10**9))

            async def text(sender: str, body: str) -> list[str]:
                """Texts to `sender`'s number that this inbound text caused (and anything waiting before it)."""
                before = len(emu.sent)
                await client.post("/webhooks/inbound", data={"msisdn": sender.lstrip("+"), "to": NUMBER,
                                                             "messageId": f"b{next(ids)}", "text": body})
                await app[OUTBOX].drain_once()
                return [m.text for m in emu.sent[before:] if m.to == sender.lstrip("+")]

            async def member(n: int) -> tuple[str, str]:
                number = f"+1415556{n:04d}"
                await text(ADMIN, f"INVITE {number} user{n}")
                invite = next(m.text for m in reversed(emu.sent) if m.to == number.lstrip("+"))
                code = re.search(r"code (\w{6})", invite)
                assert code
                texts = await text(number, code.group(1))
                if mode == "verify":  # Vonage texts the code itself: the emulator keeps it
                    return f"user{n}", list(emu.verify_codes.values())[-1]
                pin = PIN.search(" ".join(texts))
                assert pin, texts
                return f"user{n}", pin.group(1)

            async def attempt(username: str, pin: str, expect: int) -> float:
                client.session.cookie_jar.clear()
                form = await client.get("/login")
                token = CSRF.search(await form.text())
                assert token
                cookies = {k: v.value for k, v in form.cookies.items()}
                client.session.cookie_jar.clear()
                start = time.perf_counter()
                response = await client.post("/login", cookies=cookies, allow_redirects=False,
                                             data={"username": username, "pin": pin, "csrf_token": token.group(1)})
                await response.read()
                elapsed = time.perf_counter() - start
                assert response.status == expect, (username, response.status)
                return elapsed

            timings: dict[str, list[float]] = {kind: [] for kind in KINDS}
            used_user, used_pin = await member(9000)
            await attempt(used_user, used_pin, 303)
            for i in range(runs):  # interleaved, so a drift over the run touches every kind alike
                if i % 4 == 0:  # below the 5 wrong tries that kill a PIN
                    live_user, live_pin = await member(5000 + i)
                timings["unknown user"].append(await attempt(f"nobody{i}", "123456", 401))
                timings["member without a live PIN"].append(await attempt(used_user, used_pin, 401))
                timings["wrong PIN for a live PIN"].append(
                    await attempt(live_user, f"{(int(live_pin) + 1) % 10**6:06d}", 401))
                user, pin = await member(i)
                timings["success"].append(await attempt(user, pin, 303))
            deadline = app[SETTINGS].login_failure_seconds

    print(f"mode {mode}, Verify check latency {latency * 1000:.0f} ms, SMSBOT_LOGIN_FAILURE_SECONDS {deadline:g}")
    for kind, values in timings.items():
        p50 = statistics.median(values) * 1000
        p95 = statistics.quantiles(values, n=20)[-1] * 1000
        print(f"{kind:26s} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   ({len(values)} runs)")
    failures = [statistics.median(timings[k]) for k in KINDS if k != "success"]
    print(f"largest p50 ratio between failure reasons: {max(failures) / min(failures):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("verify", "sms"), default="verify")
    parser.add_argument("--latency", type=float, default=0.15, help="seconds each Verify code check takes")
    parser.add_argument("--runs", type=int, default=30)
    options = parser.parse_args()
    asyncio.run(main(options.mode, options.latency, options.runs))
