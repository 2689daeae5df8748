"""PINs through Vonage Verify v2 (SMSBOT_PIN_VIA=verify), against the fake gateway's Verify."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable

import pytest

from smsbot.gateway import Check, SendError
from smsbot.settings import Settings
from smsbot.store import Tx

from support.constants import INVITE_CODE
from support.service import ADMIN, Wired

ALICE = "+14155550134"


@pytest.fixture
async def verify(make_settings: Callable[..., Settings]) -> AsyncIterator[Wired]:
    w = Wired(make_settings(SMSBOT_PIN_VIA="verify"))
    await w.store.open()
    yield w
    await w.store.close()


async def join(w: Wired) -> str:
    out = await w.text(ADMIN, f"INVITE {ALICE} alice")
    code = INVITE_CODE.search(out[0][1])
    assert code
    everything = await w.text(ALICE, code.group(1))
    assert (ADMIN, "alice (**34) joined Friends with your invite.") in everything
    out = [text for text in everything if text[0] == ALICE]
    assert out[0] == (ALICE, "Your Friends PIN comes in the next text. Sign in as alice at "
                             "https://group.example.org/login in 10 min.")
    pin = re.fullmatch(r"Your Friends verification code is: (\d{6})", out[1][1])
    assert pin, out
    return pin.group(1)


async def pin_row(w: Wired) -> tuple[str | None, str | None, int] | None:
    async def work(tx: Tx) -> tuple[str | None, str | None, int] | None:
        member = await tx.member_by_username("alice")
        live = await tx.pin_of(member.id) if member else None
        return None if live is None else (live.pin_hash, live.request_id, live.tries)

    return await w.store.run(work)


async def test_only_the_request_id_is_kept_and_the_code_signs_in(verify: Wired) -> None:
    code = await join(verify)
    row = await pin_row(verify)
    assert row is not None and row[0] is None and row[1] == "fake-verify-1"
    assert await verify.signin.login("alice", code, "test") is not None
    assert await pin_row(verify) is None


async def test_wrong_codes_count_and_vonage_ending_it_kills_the_pin(verify: Wired) -> None:
    code = await join(verify)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    assert await verify.signin.login("alice", wrong, "t") is None
    assert await verify.signin.login("alice", wrong, "t") is None
    assert (await pin_row(verify) or ("", "", 0))[2] == 2
    assert await verify.signin.login("alice", wrong, "t") is None  # Vonage's third wrong code: 410, dead
    assert await pin_row(verify) is None
    assert await verify.signin.login("alice", code, "t") is None


async def test_vonage_unreachable_at_login_costs_no_try(verify: Wired, monkeypatch: pytest.MonkeyPatch) -> None:
    code = await join(verify)

    async def down(request_id: str, offered: str) -> Check:
        raise SendError("HTTP 503 from Vonage", transient=True)

    monkeypatch.setattr(verify.gateway, "check_code", down)
    assert await verify.signin.login("alice", code, "t") is None
    assert (await pin_row(verify) or ("", "", 9))[2] == 0
    monkeypatch.undo()  # Vonage is back
    assert await verify.signin.login("alice", code, "t") is not None


async def test_a_verification_in_flight_is_cancelled_and_replaced(verify: Wired) -> None:
    first = await join(verify)
    out = await verify.text(ALICE, "LOGIN")  # Verify answers 409 for the first one; we cancel it and start again
    second = re.search(r"code is: (\d{6})", out[1][1])
    assert second
    assert verify.gateway.verifications["fake-verify-1"].done
    assert (await pin_row(verify) or ("", "", 0))[1] == "fake-verify-2"
    assert await verify.signin.login("alice", first, "t") is None
    assert await verify.signin.login("alice", second.group(1), "t") is not None


async def test_when_vonage_will_not_cancel_the_verification_in_flight_is_reused(verify: Wired) -> None:
    first = await join(verify)

    async def refuse(request_id: str) -> bool:
        return False

    verify.gateway.cancel_verification = refuse  # type: ignore[method-assign]
    out = await verify.text(ALICE, "LOGIN")
    assert len(out) == 1, "no second code: the first one is still good"
    assert (await pin_row(verify) or ("", "", 0))[1] == "fake-verify-1"
    assert await verify.signin.login("alice", first, "t") is not None


async def test_a_failing_verify_start_is_retried(verify: Wired) -> None:
    out = await verify.text(ADMIN, f"INVITE {ALICE} alice")
    code = INVITE_CODE.search(out[0][1])
    assert code
    verify.gateway.verify_failures = [SendError("HTTP 429", transient=True)]  # the Verify start fails once
    out = [text for text in await verify.text(ALICE, code.group(1)) if text[0] == ALICE]
    assert len(out) == 1 and "comes in the next text" in out[0][1], "the verification did not start yet"
    assert await verify.signin.login("alice", "123456", "t") is None
    verify.clock.advance(5)
    out = await verify.delivered()
    assert out and out[0][1].startswith("Your Friends verification code is: ")


async def test_two_logins_in_a_row_leave_the_newest_code_working(verify: Wired) -> None:
    await join(verify)
    from smsbot import phone
    from smsbot.messages import InboundText

    sender = phone.normalize(ALICE, "US")
    await verify.pipeline.receive(InboundText("l1", sender, "LOGIN"))
    await verify.pipeline.receive(InboundText("l2", sender, "LOGIN"))
    out = await verify.delivered()
    codes = [t.split(": ")[1] for to, t in out if "verification code" in t]
    assert len(codes) == 2
    assert await verify.signin.login("alice", codes[0], "t") is None
    assert await verify.signin.login("alice", codes[1], "t") is not None


async def test_a_failed_verification_shows_in_list(verify: Wired) -> None:
    await join(verify)
    verify.gateway.verify_failures = [SendError("HTTP 422 invalid number", transient=False)]
    await verify.text(ALICE, "LOGIN")
    out = await verify.text(ADMIN, "LIST")
    assert out == [(ADMIN, "Page 1/1: alice (PIN not sent).")]
