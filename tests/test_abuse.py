"""Brute force and abuse limits: lockout, per-IP login limit, PIN caps, SMS budget, stranger replies, audit log."""

from __future__ import annotations

import asyncio
import collections
import re
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from smsbot.web.appkeys import OUTBOX, SETTINGS

from support.constants import ADMIN_MSISDN, INVITE_CODE, NUMBER, PIN_IS
from support.service import ADMIN, WebBench, login_form

ALICE = "+14155550134"
STRANGER = "+12025550188"
SESSION = "__Host-smsbot_session"


def pin_in(out: list[tuple[str, str]]) -> str:
    found = PIN_IS.search(out[0][1])
    assert found, out
    return found.group(1)


def wrong(pin: str) -> str:
    return f"{(int(pin) + 1) % 10**6:06d}"


async def test_twenty_wrong_pins_in_a_row_lock_the_member_until_an_admin_reinvites(
        make_bench: Callable[..., Any]) -> None:
    bench: WebBench = await make_bench(SMSBOT_LOGIN_FAILURES_PER_MINUTE="1000")
    pin = await bench.member_with_pin(ALICE, "alice")
    failures = 0
    while failures < 20:
        for _ in range(5):
            response, _ = await bench.login("alice", wrong(pin))
            assert response.status == 401
            failures += 1
        if failures < 20:
            bench.clock.advance(3600)  # stay under the PIN cap
            pin = pin_in(await bench.text(ALICE, "LOGIN"))
    assert await bench.text(ALICE, "LOGIN") == [
        (ADMIN, "alice is locked after 20 wrong PINs in a row. If it was them, INVITE their number to unlock."),
        (ALICE, "Your sign-in is locked after too many wrong PINs. Ask an admin to unlock it.")]
    for _ in range(3):
        assert (await bench.login("alice", pin))[0].status == 401
    admin_texts = [m.text for m in bench.gateway.sent if m.to == ADMIN and "locked" in m.text]
    assert len(admin_texts) == 1, "the admins get one text"
    assert await bench.text(ALICE, "LOGIN") == [], "the locked reply comes once an hour at most"
    out = await bench.text(ADMIN, f"INVITE {ALICE}")
    assert (ADMIN, "Unlocked alice. They can text LOGIN for a new PIN.") in out
    bench.clock.advance(3600)
    response, _ = await bench.login("alice", pin_in(await bench.text(ALICE, "LOGIN")))
    assert response.status == 303


async def test_a_locked_member_gets_the_same_answer_as_a_wrong_pin(make_bench: Callable[..., Any]) -> None:
    bench: WebBench = await make_bench(SMSBOT_LOGIN_FAILURES_PER_MINUTE="1000", SMSBOT_LOCKOUT_FAILURES="5")
    pin = await bench.member_with_pin(ALICE, "alice")
    await bench.member_with_pin("+14155550135", "bob")
    token, cookies = await login_form(bench.client)

    async def attempt(username: str, candidate: str) -> tuple[int, str, dict[str, str]]:
        bench.client.session.cookie_jar.clear()
        r = await bench.client.post("/login", cookies=cookies, allow_redirects=False,
                                    data={"username": username, "pin": candidate, "csrf_token": token})
        # The page keeps the username the visitor typed; apart from that echo, every failure is the same.
        body = (await r.text()).replace(f'value="{username}"', 'value="(typed)"')
        assert r.status != 401 or 'value="(typed)"' in body
        return r.status, body, {k: v for k, v in r.headers.items() if k not in ("Date", "Content-Length")}

    answers = [await attempt("nobody", pin), await attempt("bob", "000000")]
    for _ in range(5):
        answers.append(await attempt("alice", wrong(pin)))
    assert (ALICE, "Your sign-in is locked after too many wrong PINs. Ask an admin to unlock it.") in \
        await bench.text(ALICE, "LOGIN")
    answers.append(await attempt("alice", pin))  # the PIN that was right before the lock
    assert len(set(map(repr, answers))) == 1, "status, body and headers are the same for every failure"


async def test_failures_without_a_live_pin_lock_nobody(make_bench: Callable[..., Any]) -> None:
    bench: WebBench = await make_bench(SMSBOT_LOGIN_FAILURES_PER_MINUTE="1000")
    pin = await bench.member_with_pin(ALICE, "alice")
    assert (await bench.login("alice", pin))[0].status == 303  # the PIN is used: no live PIN now
    for _ in range(30):
        assert (await bench.login("alice", "123456"))[0].status == 401
    with sqlite3.connect(bench.app[SETTINGS].db_path) as db:
        assert db.execute("SELECT failed_logins, locked_at FROM members").fetchone() == (0, None)
    response, _ = await bench.login("alice", pin_in(await bench.text(ALICE, "LOGIN")))
    assert response.status == 303


async def test_login_attempts_are_limited_per_client_ip(make_bench: Callable[..., Any]) -> None:
    bench: WebBench = await make_bench(SMSBOT_LOGIN_FAILURES_PER_MINUTE="3")
    for _ in range(3):
        assert (await bench.login("nobody", "123456"))[0].status == 401
    limited, _ = await bench.login("nobody", "123456")
    assert limited.status == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
    # Without trusted proxies, X-Forwarded-For is ignored: it can't buy a fresh limit.
    spoofed, _ = await bench.login("nobody", "123456", **{"X-Forwarded-For": "203.0.113.9"})
    assert spoofed.status == 429
    bench.clock.advance(61)
    assert (await bench.login("nobody", "123456"))[0].status == 401


async def test_x_forwarded_for_counts_only_from_a_trusted_proxy(make_bench: Callable[..., Any]) -> None:
    bench: WebBench = await make_bench(SMSBOT_LOGIN_FAILURES_PER_MINUTE="2", SMSBOT_TRUSTED_PROXIES="127.0.0.1")
    for client in ("203.0.113.1", "203.0.113.2"):
        for _ in range(2):
            response, _ = await bench.login("nobody", "1", **{"X-Forwarded-For": f"198.51.100.7, {client}"})
            assert response.status == 401
    blocked, _ = await bench.login("nobody", "1", **{"X-Forwarded-For": "203.0.113.1"})
    assert blocked.status == 429


async def test_pin_issuance_is_capped_per_number(make_bench: Callable[..., Any]) -> None:
    bench: WebBench = await make_bench(SMSBOT_PIN_CAP_HOUR="3", SMSBOT_PIN_CAP_DAY="10")
    await bench.member_with_pin(ALICE, "alice")  # PIN 1 of the hour
    for _ in range(2):
        assert "PIN is" in (await bench.text(ALICE, "LOGIN"))[0][1]
    assert await bench.text(ALICE, "LOGIN") == [
        (ALICE, "You've asked for a lot of PINs this hour. Wait a while, then text LOGIN again.")]
    assert await bench.text(ALICE, "LOGIN") == [], "the cap is announced once"
    bench.clock.advance(3601)
    assert "PIN is" in (await bench.text(ALICE, "LOGIN"))[0][1]
    for _ in range(6):  # 10 a day, whatever the hours
        bench.clock.advance(3601)
        await bench.text(ALICE, "LOGIN")
    bench.clock.advance(3601)
    assert "PIN is" not in (await bench.text(ALICE, "LOGIN") or [("", "")])[0][1]


async def test_the_daily_budget_keeps_admin_replies_and_warns_once(make_bench: Callable[..., Any]) -> None:
    bench: WebBench = await make_bench(SMSBOT_DAILY_SMS_BUDGET="3")
    out = await bench.text(ADMIN, f"INVITE {ALICE} alice")
    code = INVITE_CODE.search(out[0][1])
    assert code
    joined = await bench.text(ALICE, code.group(1))  # the invite and the PIN: 2 of 3 (texts to admins don't count)
    assert [to for to, _ in joined] == [ALICE, ADMIN] and "joined" in joined[1][1]
    assert "PIN is" in (await bench.text(ALICE, "LOGIN"))[0][1]  # 3 of 3
    assert await bench.text(ALICE, "LOGIN") == [
        (ADMIN, "Daily SMS budget of 3 texts reached: until midnight UTC only replies to admins go out.")
    ], "over budget: nothing to members, and the admins are warned"
    assert len(await bench.text(ADMIN, "LIST")) == 1, "admins still get replies"
    await bench.text(ALICE, "LOGIN")
    assert sum("budget" in m.text for m in bench.gateway.sent) == 1, "warned once a day"


async def test_strangers_get_few_replies(bench: WebBench) -> None:
    replies = [await bench.text(STRANGER, "HELP") for _ in range(5)]
    assert [len(r) for r in replies] == [1, 1, 1, 0, 0]
    bench.clock.advance(86401)
    assert len(await bench.text(STRANGER, "HELP")) == 1


async def test_no_web_route_sends_a_text(make_bench: Callable[..., Any]) -> None:
    bench: WebBench = await make_bench(SMSBOT_LOGIN_FAILURES_PER_MINUTE="1000")
    await bench.member_with_pin(ALICE, "alice")
    sent = len(bench.gateway.sent)
    routes = {(r.method, r.resource.canonical) for r in bench.app.router.routes() if r.resource is not None}
    for method, path in sorted(routes):
        if path.startswith("/webhooks") or path.startswith("/static") or method == "*":  # "*": what no route matched
            continue
        for data in ({}, {"username": "alice", "pin": "123456", "phone": ALICE, "to": ALICE, "text": "LOGIN"}):
            await bench.client.request(method, path, data=data if method == "POST" else None,
                                       params=data if method == "GET" else None, allow_redirects=False)
    await bench.app[OUTBOX].drain_once()
    assert len(bench.gateway.sent) == sent


async def test_log_shows_events_latest_first_and_pages(bench: WebBench) -> None:
    for n in range(6):
        await bench.text(ADMIN, f"INVITE +1415555020{n} user_number_{n}")
    await bench.text(ADMIN, "REVOKE user_number_0")
    out = await bench.text(ADMIN, "LOG")
    assert len(out) == 1
    first = out[0][1]
    assert first.startswith("Page 1/") and " **00 cancelled the invite for user_number_0 (**00);" in first
    assert first.index("cancelled") < first.index("invited user_number_5"), "latest first"
    assert first.endswith(" LOG 2 for more.")
    second = (await bench.text(ADMIN, "LOG 2"))[0][1]
    assert second.startswith("Page 2/")
    assert "4155550" not in first + second, "numbers are masked"


async def test_refused_signatures_are_audited_at_most_once_a_minute(make_bench: Callable[..., Any]) -> None:
    bench: WebBench = await make_bench(VONAGE_SIGNATURE_SECRET="s" * 32)
    for _ in range(5):
        r = await bench.client.post("/webhooks/inbound", data={"msisdn": ADMIN_MSISDN, "messageId": "x",
                                                                "text": "HELP", "to": NUMBER})
        assert r.status == 401
    with sqlite3.connect(bench.app[SETTINGS].db_path) as db:
        events = db.execute("SELECT actor, action, detail FROM events").fetchall()
        assert db.execute("SELECT count(*) FROM inbound").fetchone()[0] == 0
    assert events == [("web", "signature-refused", "/webhooks/inbound: no sig parameter")]


async def test_the_daily_pin_cap_says_so(make_bench: Callable[..., Any]) -> None:
    bench: WebBench = await make_bench(SMSBOT_PIN_CAP_HOUR="10", SMSBOT_PIN_CAP_DAY="2")
    await bench.member_with_pin(ALICE, "alice")
    assert "PIN is" in (await bench.text(ALICE, "LOGIN"))[0][1]
    assert await bench.text(ALICE, "LOGIN") == [
        (ALICE, "You've had the most PINs allowed in a day. Text LOGIN again tomorrow.")]
    bench.clock.advance(2 * 3600)
    assert await bench.text(ALICE, "LOGIN") == [], "said once a day"


async def test_a_stranger_out_of_help_replies_still_gets_the_stop_confirmation(bench: WebBench) -> None:
    for _ in range(4):
        await bench.text(STRANGER, "HELP")
    assert await bench.text(STRANGER, "STOP") == [
        (STRANGER, "You won't get more texts from Friends. Reply START to opt back in.")]


async def test_an_admin_inviting_their_own_phone_gets_one_text(bench: WebBench) -> None:
    out = await bench.text(ADMIN, "INVITE +1 415 555 0100 boss")
    assert len(out) == 1 and out[0][0] == ADMIN and "join as boss" in out[0][1]


async def test_usernames_shaped_like_codes_are_refused(bench: WebBench) -> None:
    out = await bench.text(ADMIN, f"INVITE {ALICE} ZZTOP1")
    assert out == [(ADMIN, "A username is 3-32 letters, digits, _ or -, with at least one letter. "
                           "Try INVITE <phone> [username] again.")]
    assert len(await bench.text(ADMIN, f"INVITE {ALICE} zztop1")) == 2


@pytest.mark.backends
async def test_simultaneous_failed_sign_ins_from_one_client_weigh_no_more_than_the_limit(
        make_bench: Callable[..., Any]) -> None:
    bench: WebBench = await make_bench(SMSBOT_LOGIN_FAILURES_PER_MINUTE="5", SMSBOT_LOCKOUT_FAILURES="100")
    for n in range(20):  # a live PIN each, so every attempt that is weighed reaches a PIN check
        await bench.member_with_pin(f"+1415555{n:04d}", f"user{n}")
    token, cookies = await login_form(bench.client)

    async def attempt(n: int) -> int:
        response = await bench.client.post("/login", cookies=cookies, allow_redirects=False,
                                           data={"username": f"user{n % 20}", "pin": "1", "csrf_token": token})
        return int(response.status)

    statuses = await asyncio.gather(*(attempt(n) for n in range(100)))
    assert collections.Counter(statuses) == {401: 5, 429: 95}
    weighed = await bench.query("SELECT sum(tries) FROM pins")
    assert weighed == [(5,)], "only the attempts inside the limit reached a PIN"


async def test_ipv6_clients_are_counted_by_their_64(make_bench: Callable[..., Any]) -> None:
    bench: WebBench = await make_bench(SMSBOT_LOGIN_FAILURES_PER_MINUTE="2", SMSBOT_TRUSTED_PROXIES="127.0.0.1")
    for client in ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"):
        response, _ = await bench.login("nobody", "1", **{"X-Forwarded-For": client})
        assert response.status == 401
    same_64, _ = await bench.login("nobody", "1", **{"X-Forwarded-For": "2001:db8:1:2:abcd::9"})
    assert same_64.status == 429
    next_64, _ = await bench.login("nobody", "1", **{"X-Forwarded-For": "2001:db8:1:3::1"})
    assert next_64.status == 401


async def test_forms_that_fail_the_csrf_check_do_not_count_toward_the_sign_in_limit(
        make_bench: Callable[..., Any]) -> None:
    bench: WebBench = await make_bench(SMSBOT_LOGIN_FAILURES_PER_MINUTE="2")
    _, cookies = await login_form(bench.client)
    for _ in range(10):
        forged = await bench.client.post("/login", cookies=cookies, allow_redirects=False,
                                         data={"username": "nobody", "pin": "1", "csrf_token": "forged"})
        assert forged.status == 403
    assert (await bench.login("nobody", "1"))[0].status == 401, "the client's sign-in limit is untouched"


async def test_the_sign_in_limit_keeps_only_a_keyed_hash_of_the_client(make_bench: Callable[..., Any]) -> None:
    bench: WebBench = await make_bench(SMSBOT_LOGIN_FAILURES_PER_MINUTE="2", SMSBOT_TRUSTED_PROXIES="127.0.0.1")
    assert (await bench.login("nobody", "1", **{"X-Forwarded-For": "203.0.113.77"}))[0].status == 401
    rows = await bench.query("SELECT phone_key, action FROM counters")
    assert [action for _, action in rows] == ["signin"]
    assert "203.0.113" not in repr(rows) and re.fullmatch(r"[0-9a-f]{64}", rows[0][0])


async def test_a_successful_sign_in_gives_its_slot_back(make_bench: Callable[..., Any]) -> None:
    bench: WebBench = await make_bench(SMSBOT_LOGIN_FAILURES_PER_MINUTE="2")
    for n in range(3):
        pin = await bench.member_with_pin(f"+1415555{n:04d}", f"user{n}")
        assert (await bench.login(f"user{n}", pin))[0].status == 303
    assert (await bench.login("nobody", "1"))[0].status == 401
    assert (await bench.login("nobody", "1"))[0].status == 401
    assert (await bench.login("nobody", "1"))[0].status == 429
