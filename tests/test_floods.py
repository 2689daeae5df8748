"""What a spoofed sender can use up for others: floods of texts "from" an admin's, a member's or strangers' numbers
leave members their invites and PINs; each admin number gets 60 replies an hour; a LOGIN that can't be sent costs
nothing; 10 wrong YES codes in a day lock that number's confirmable commands. On SQLite and PostgreSQL."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from support.constants import PIN_IS, YES
from support.service import ADMIN, WebBench

pytestmark = pytest.mark.backends

ADMIN2 = "+14155550101"
ALICE = "+14155550134"
BOB = "+14155550135"
INVITEE = "+12025550143"
PAUSED = re.compile(r"^Too many texts from your number: replies pause until (\d\d:\d\d) UTC\. ")


async def two_admins(make_bench: Callable[..., Any], **env: str) -> WebBench:
    bench: WebBench = await make_bench(SMSBOT_ADMINS=f"{ADMIN},{ADMIN2}", **env)
    return bench


def pin_of(out: list[tuple[str, str]], to: str) -> str:
    found = [PIN_IS.search(body) for who, body in out if who == to]
    assert found and found[0], out
    return found[0].group(1)


async def test_a_flood_of_admin_texts_leaves_members_their_pins_and_invites(make_bench: Callable[..., Any]) -> None:
    bench = await two_admins(make_bench, SMSBOT_DAILY_SMS_BUDGET="100")
    await bench.member_with_pin(ALICE, "alice")
    for _ in range(150):  # more than SMSBOT_DAILY_SMS_BUDGET, within one hour
        await bench.text(ADMIN, "HELP")
    # The INVITE's reply, alice's joining, then 59 HELPs answered and the notice: texts past those got nothing.
    assert len([m for m in bench.gateway.sent if m.to == ADMIN]) == 62
    pin = pin_of(await bench.text(ALICE, "LOGIN"), ALICE)
    assert (await bench.login("alice", pin))[0].status == 303
    out = await bench.text(ADMIN2, f"INVITE {INVITEE} carol")
    assert [to for to, _ in out] == [INVITEE, ADMIN2] and "invited to join as carol" in out[0][1]


async def test_replies_to_admins_do_not_count_toward_the_daily_budget(make_bench: Callable[..., Any]) -> None:
    bench = await two_admins(make_bench, SMSBOT_DAILY_SMS_BUDGET="3")
    await bench.member_with_pin(ALICE, "alice")  # the invite and the PIN: 2 of 3
    for _ in range(10):
        assert len(await bench.text(ADMIN, "LIST")) == 1
        assert len(await bench.text(ADMIN2, "HELP")) == 1
    pin_of(await bench.text(ALICE, "LOGIN"), ALICE)  # the third
    assert await bench.text(ALICE, "LOGIN") == [
        (ADMIN, "Daily SMS budget of 3 texts reached: until midnight UTC only replies to admins go out."),
        (ADMIN2, "Daily SMS budget of 3 texts reached: until midnight UTC only replies to admins go out.")]


async def test_each_admin_number_gets_60_replies_an_hour_then_one_notice(make_bench: Callable[..., Any]) -> None:
    bench = await two_admins(make_bench)
    start = bench.clock.now()
    for n in range(60):
        assert len(await bench.text(ADMIN, "HELP")) == 1, n
        bench.clock.advance(30)  # the first reply at :00, the 60th at :29:30
    notice = await bench.text(ADMIN, "HELP")
    assert [to for to, _ in notice] == [ADMIN] and len(notice[0][1]) <= 160
    until = PAUSED.match(notice[0][1])
    assert until, notice
    assert until.group(1) == time.strftime("%H:%M", time.gmtime(start + 3600))
    assert await bench.text(ADMIN, f"INVITE {INVITEE} carol") == [], "past the notice: silence"
    assert await bench.text(ADMIN, "LIST") == []
    assert await bench.query("SELECT count(*) FROM invites") == [(0,)], "and commands past the cap don't run"
    log = await bench.text(ADMIN2, "LOG")
    assert "**00 got 60 replies in an hour; replies paused" in log[0][1], "the other admins can see it in LOG"
    assert len(await bench.text(ADMIN2, "HELP")) == 1, "the other admin is untouched"
    bench.clock.advance(start + 3601 - bench.clock.now())  # the first reply has left the window
    assert len(await bench.text(ADMIN, "HELP")) == 1, "a reply again"
    assert await bench.text(ADMIN, "HELP") == [], "the window is full again; the notice came less than an hour ago"
    bench.clock.advance(3600)
    assert len(await bench.text(ADMIN, "HELP")) == 1


async def test_a_login_the_budget_cannot_send_costs_no_pin_and_no_cap(make_bench: Callable[..., Any]) -> None:
    bench: WebBench = await make_bench(SMSBOT_DAILY_SMS_BUDGET="4", SMSBOT_PIN_CAP_HOUR="3",
                                       SMSBOT_LOGIN_FAILURES_PER_MINUTE="1000")
    first = await bench.member_with_pin(ALICE, "alice")  # 2 of 4
    await bench.member_with_pin(BOB, "bob")  # 4 of 4
    for _ in range(5):
        out = await bench.text(ALICE, "LOGIN")
        assert all(to == ADMIN for to, _ in out), "nothing to alice: the budget is spent"
    assert await bench.query("SELECT count(*) FROM counters WHERE action = 'pin'") == [(2,)], "no PIN counted"
    assert (await bench.login("alice", first))[0].status == 303, "the PIN she had is still the live one"
    bench.clock.advance(86400 - bench.clock.now() % 86400 + 60)  # a new UTC day: a new budget
    pin_of(await bench.text(ALICE, "LOGIN"), ALICE)


async def test_ten_wrong_yes_codes_in_a_day_lock_the_numbers_confirmable_commands(
        make_bench: Callable[..., Any]) -> None:
    bench = await two_admins(make_bench, SMSBOT_CONFIRM="INVITE,REVOKE")
    for hour in range(4):  # four commands 5 hours apart: 3 + 3 + 3 + 1 wrong codes, within 24 hours
        asked = await bench.text(ADMIN, f"INVITE +1202555014{hour} user{hour}")
        code = YES.search(asked[0][1])
        assert code, asked
        if hour == 3:
            break
        for k in (1, 2, 3):
            out = await bench.text(ADMIN, f"YES {(int(code.group(1)) + k) % 10000:04d}")
            assert [to for to, _ in out] == [ADMIN]
        bench.clock.advance(5 * 3600)
    out = await bench.text(ADMIN, "YES 99999")  # the tenth, 15 hours after the first
    until = re.search(r"until (\w{3} \d\d \d\d:\d\d) UTC", out[0][1])
    assert until, out
    assert out == [
        (ADMIN, f"10 wrong YES codes from your number in 24 hours: commands that need YES are refused until "
                f"{until.group(1)} UTC. Didn't send them? Tell the other admins."),
        (ADMIN2, f"Admin number **00 sent 10 wrong YES codes in 24 hours: its commands that need YES are refused "
                 f"until {until.group(1)} UTC. Someone may be using it.")]
    assert await bench.text(ADMIN, f"INVITE {INVITEE} carol") == [], "refused, with no second reply"
    assert await bench.text(ADMIN, "YES 1234") == [(ADMIN, "Nothing is waiting for a YES from you.")]
    assert (await bench.text(ADMIN, "LIST"))[0][1].startswith("No members"), "other commands still work"
    asked = await bench.text(ADMIN2, f"INVITE {INVITEE} carol")
    assert "Reply YES" in asked[0][1], "the other admins confirm as before"
    log = (await bench.text(ADMIN2, "LOG"))[0][1]
    assert "**00 sent 10 wrong YES codes: commands that need YES refused for 24 h" in log
    bench.clock.advance(23 * 3600)
    assert await bench.text(ADMIN, f"INVITE {INVITEE} carol") == []
    assert sum("YES codes" in m.text and "in 24 hours:" in m.text for m in bench.gateway.sent) == 2, "each told once"
    bench.clock.advance(3601)
    assert "Reply YES" in (await bench.text(ADMIN, f"INVITE {INVITEE} carol"))[0][1], "24 hours later"


async def test_wrong_yes_codes_count_over_a_sliding_day(make_bench: Callable[..., Any]) -> None:
    bench = await two_admins(make_bench, SMSBOT_CONFIRM="INVITE")
    for _ in range(3):  # 9 wrong codes a day, every day: never locked
        for _ in range(3):
            asked = await bench.text(ADMIN, f"INVITE {INVITEE} carol")
            assert "Reply YES" in asked[0][1]
            for guess in ("0000", "0001", "0002"):
                await bench.text(ADMIN, f"YES {guess}")
        bench.clock.advance(86401)
    assert not any("in 24 hours:" in m.text for m in bench.gateway.sent)


async def test_a_flood_from_a_members_number_or_strangers_leaves_others_their_pins(
        make_bench: Callable[..., Any]) -> None:
    bench: WebBench = await make_bench(SMSBOT_DAILY_SMS_BUDGET="20")
    await bench.member_with_pin(ALICE, "alice")
    await bench.member_with_pin(BOB, "bob")  # 4 of 20
    for _ in range(30):
        await bench.text(ALICE, "HELP")  # a spoofer with alice's number
    for n in range(10):  # and strangers, or one spoofer with many numbers
        for _ in range(3):
            await bench.text(f"+1202555016{n}", "HELP")
    pin_of(await bench.text(BOB, "LOGIN"), BOB)
    out = await bench.text(ADMIN, "INVITE +12025550170 dave")
    assert [to for to, _ in out] == ["+12025550170", ADMIN]
    warned = [m.text for m in bench.gateway.sent if m.to == ADMIN and "budget" in m.text]
    assert warned == ["Half of today's SMS budget of 20 went to replies: until midnight UTC, apart from replies to "
                      "admins, only invites and PINs go out."], "the admins are told once"


async def test_a_flood_past_a_cap_logs_once_an_hour(make_bench: Callable[..., Any]) -> None:
    bench: WebBench = await make_bench(SMSBOT_PIN_CAP_HOUR="1", SMSBOT_CONFIRM="REVOKE")
    await bench.member_with_pin(ALICE, "alice")
    for n in range(200):  # a spoofer with alice's number, and with the admin's (below the reply cap)
        await bench.text(ALICE, "LOGIN")
        if n < 50:
            await bench.text(ADMIN, "REVOKE alice")
    actions = dict(await bench.query("SELECT action, count(*) FROM events GROUP BY action"))
    assert actions["pin-capped"] == 1 and actions["confirm-capped"] == 1, actions


async def test_one_members_number_gets_20_replies_a_day(make_bench: Callable[..., Any]) -> None:
    bench: WebBench = await make_bench()
    await bench.member_with_pin(ALICE, "alice")
    await bench.member_with_pin(BOB, "bob")
    answered = [len(await bench.text(ALICE, text)) for text in ("HELP", "hi", "DEVICES", "STOP", "START") * 6]
    assert sum(answered) == 20 and answered[:20] == [1] * 20, "a spoofer can't bombard her phone"
    assert len(await bench.text(BOB, "HELP")) == 1, "nor use up what others get"
    pin_of(await bench.text(ALICE, "LOGIN"), ALICE)  # PINs have caps of their own
    bench.clock.advance(86401)
    assert len(await bench.text(ALICE, "HELP")) == 1


async def test_strangers_stop_and_start_from_many_numbers_cannot_push_events_out_of_log(
        make_bench: Callable[..., Any]) -> None:
    bench: WebBench = await make_bench()
    await bench.text(ADMIN, f"INVITE {INVITEE} carol")
    for area in ("202", "212", "310"):  # 300 numbers, more than the 200 events LOG reads
        for n in range(100):
            await bench.text(f"+1{area}55501{n:02d}", "STOP")
    log = (await bench.text(ADMIN, "LOG"))[0][1] + (await bench.text(ADMIN, "LOG 2"))[0][1]
    assert "strangers texted STOP or START; **00 invited carol (**43)" in log, log


async def test_past_its_cap_an_admin_number_is_still_opted_out_by_stop(make_bench: Callable[..., Any]) -> None:
    bench = await two_admins(make_bench)
    for _ in range(61):
        await bench.text(ADMIN, "LIST")
    assert await bench.text(ADMIN, "STOP") == []
    assert len(await bench.query("SELECT * FROM opt_outs")) == 1, "an opt-out is never lost"
    assert await bench.text(ADMIN, "START") == []
    assert len(await bench.query("SELECT * FROM opt_outs")) == 1, "other texts past the cap are not acted on"


async def test_an_invite_the_budget_cannot_send_is_not_made_and_the_admin_is_told(
        make_bench: Callable[..., Any]) -> None:
    bench: WebBench = await make_bench(SMSBOT_DAILY_SMS_BUDGET="2")
    await bench.member_with_pin(ALICE, "alice")  # 2 of 2
    assert await bench.text(ADMIN, f"INVITE {INVITEE} carol") == [
        (ADMIN, "Daily SMS budget of 2 texts reached, so that invite can't go out before midnight UTC. "
                "Send it again then.")]
    assert await bench.query("SELECT count(*) FROM invites") == [(0,)]
    bench.clock.advance(86400 - bench.clock.now() % 86400)
    assert [to for to, _ in await bench.text(ADMIN, f"INVITE {INVITEE} carol")] == [INVITEE, ADMIN]
