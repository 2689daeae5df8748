"""Admin commands a spoofed sender can't abuse (SMSBOT_CONFIRM), and devices under the member's control: what the
transcripts can't show. The numbers an unconfirmed command holds leave no trace once it runs or is dropped; a spoofed
INVITE against `smsbot serve` with signed webhooks reaches nobody; the per-hour cap; codes typed in halves; the web's
sign-out scopes."""

from __future__ import annotations

import pathlib
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from smsbot.signatures import sms_signature
from smsbot.web.appkeys import PIPELINE, STORE

from support.constants import ADMIN_MSISDN, INVITE_CODE, NUMBER, PIN_IS, YES
from support.privacy import assert_absent, database_files, forms
from support.procs import Serve, sent_to, serve_env, start_smsbot, wait_text
from support.service import ADMIN, CSRF_INPUT, WebBench
from support.vonage_emulator import VonageEmulator

INVITEE = "+12025550143"
ATTACKER = "+12025550166"


async def confirming(make_bench: Callable[..., Any], **env: str) -> WebBench:
    bench: WebBench = await make_bench(SMSBOT_CONFIRM="INVITE", **env)
    return bench


async def test_a_confirmed_or_dropped_command_leaves_no_number_behind(make_bench: Callable[..., Any]) -> None:
    bench = await confirming(make_bench)
    secrets = forms(INVITEE) + forms(ATTACKER) + forms("+12025550177")

    out = await bench.text(ADMIN, "INVITE (202) 555-0143 carol")
    assert out == [(ADMIN, out[0][1])] and "+12025550143" in out[0][1], "only the admin hears of it"
    waiting = b"".join(p.read_bytes() for p in database_files(bench))
    assert b"(202) 555-0143" in waiting, "while it waits, the command is kept as typed (the scan can fail)"
    code = YES.search(out[0][1])
    assert code
    out = await bench.text(ADMIN, f"YES {code.group(1)}")
    assert [to for to, _ in out] == [INVITEE, ADMIN]

    await bench.text(ADMIN, f"INVITE {ATTACKER} eve")  # dropped after three wrong codes
    for guess in ("0000", "0001", "0002"):
        await bench.text(ADMIN, f"YES {guess}")
    await bench.text(ADMIN, "INVITE 202-555-0177 dan")  # dropped when its time is up
    bench.clock.advance(11 * 60)
    await bench.app[PIPELINE].housekeeping()

    await bench.app[STORE].scrub()
    assert_absent({p.name: p.read_bytes() for p in database_files(bench)}, secrets)
    await bench.app[STORE].close()
    assert_absent({p.name: p.read_bytes() for p in database_files(bench)}, secrets)


async def test_admins_get_a_few_confirmations_an_hour(make_bench: Callable[..., Any]) -> None:
    bench = await confirming(make_bench)
    asked = [await bench.text(ADMIN, f"INVITE +1202555014{i} user{i}") for i in range(6)]
    assert all("YES" in out[0][1] for out in asked)
    capped = await bench.text(ADMIN, "INVITE +12025550149 user9")
    assert capped == [(ADMIN, capped[0][1])] and "Too many commands" in capped[0][1]
    assert await bench.text(ADMIN, "INVITE +12025550149 user9") == [], "the cap is said once an hour"
    bench.clock.advance(3601)
    assert "YES" in (await bench.text(ADMIN, "INVITE +12025550149 user9"))[0][1]


async def test_unlocking_a_member_waits_for_yes(make_bench: Callable[..., Any]) -> None:
    bench = await confirming(make_bench, SMSBOT_LOCKOUT_FAILURES="5")
    out = await bench.text(ADMIN, f"INVITE {INVITEE} carol")
    await bench.text(ADMIN, f"YES {YES.search(out[0][1]).group(1)}")  # type: ignore[union-attr]
    code = INVITE_CODE.search(bench.gateway.sent[-2].text)
    assert code
    await bench.text(INVITEE, code.group(1))
    for _ in range(5):
        await bench.login("carol", "000000")
    assert "locked" in (await bench.text(INVITEE, "LOGIN"))[0][1]
    out = await bench.text(ADMIN, f"INVITE {INVITEE}")
    assert out == [(ADMIN, out[0][1])] and out[0][1].startswith("Unlock carol's sign-in?")
    assert await bench.text(INVITEE, "LOGIN") == [], "still locked until the admin confirms"
    out = await bench.text(ADMIN, f"YES {YES.search(out[0][1]).group(1)}")  # type: ignore[union-attr]
    assert [to for to, _ in out] == [INVITEE, ADMIN] and "unlocked" in out[0][1]


async def test_a_code_typed_in_halves_joins(bench: WebBench) -> None:
    for number, name, spell in ((INVITEE, "carol", "{} {}"), ("+12025550144", "dave", "join {}-{}")):
        out = await bench.text(ADMIN, f"INVITE {number} {name}")
        code = INVITE_CODE.search(out[0][1])
        assert code
        typed = spell.format(code.group(1)[:3].lower(), code.group(1)[3:])
        out = await bench.text(number, typed)
        assert "PIN is" in out[0][1], (typed, out)


async def device_cookies(bench: WebBench, number: str, username: str, count: int) -> list[dict[str, str]]:
    pin = await bench.member_with_pin(number, username)
    devices = []
    for n in range(count):
        if n:
            pin = PIN_IS.search((await bench.text(number, "LOGIN"))[0][1]).group(1)  # type: ignore
        _, cookies = await bench.login(username, pin, **{"User-Agent": f"Mozilla/5.0 (X11; Linux) Firefox/{n}"})
        devices.append({"__Host-smsbot_session": cookies["__Host-smsbot_session"]})
    return devices


async def sign_out(bench: WebBench, cookies: dict[str, str], **fields: str) -> Any:
    bench.client.session.cookie_jar.clear()
    page = await bench.client.get("/", cookies=cookies)
    token = CSRF_INPUT.search(await page.text())
    assert token
    csrf = {k: v.value for k, v in page.cookies.items()}
    return await bench.client.post("/logout", data={"csrf_token": token.group(1), **fields},
                                   cookies={**cookies, **csrf}, allow_redirects=False)


async def test_the_home_page_ends_one_other_device_the_others_or_all(bench: WebBench) -> None:
    phone, laptop, tablet = await device_cookies(bench, INVITEE, "carol", 3)
    (bob,) = await device_cookies(bench, "+12025550144", "bob", 1)
    page = await (await bench.client.get("/", cookies=phone)).text()
    assert page.count('name="scope" value="device"') == 2, "a form for each other device"
    assert 'value="others"' in page and 'value="all"' in page and "signed in" in page and "last seen" in page
    device_ids = re.findall(r'name="device" value="(\d+)"', page)

    # Another member's device is not this member's to end.
    bob_page = await (await bench.client.get("/", cookies=bob)).text()
    (bob_id,) = re.findall(r'name="device" value="(\d+)"', bob_page) or [None]
    assert bob_id is None, "bob has one device, his own"
    response = await sign_out(bench, phone, scope="device", device="999999")
    assert response.status == 303 and response.headers["Location"] == "/"
    assert (await bench.auth(bob)).status == 200

    response = await sign_out(bench, phone, scope="device", device=device_ids[0])
    assert response.status == 303 and response.headers["Location"] == "/"
    ended = [c for c in (laptop, tablet) if (await bench.auth(c)).status == 401]
    assert len(ended) == 1 and (await bench.auth(phone)).status == 200

    response = await sign_out(bench, phone, scope="others")
    assert response.status == 303 and response.headers["Location"] == "/"
    assert [(await bench.auth(c)).status for c in (phone, laptop, tablet)] == [200, 401, 401]

    response = await sign_out(bench, phone, scope="all")
    assert response.status == 303 and response.headers["Location"] == "/login?signed_out=all"
    assert (await bench.auth(phone)).status == 401 and (await bench.auth(bob)).status == 200
    (eve,) = await device_cookies(bench, "+12025550145", "eve", 1)
    for bad in ({"scope": "everyone"}, {"scope": "device", "device": "x"}, {"scope": "device"}):
        assert (await sign_out(bench, eve, **bad)).status == 400, bad
        assert (await bench.auth(eve)).status == 200, "a refused form ends nothing"


# ---------------------------------------------------------------------------------------------- against serve

SIG_SECRET = "spoof-test-signature-secret-0123456789"


def signed_webhook(http: requests.Session, base: str, msisdn: str, text: str, n: int) -> None:
    """A text as Vonage delivers it, correctly signed: Vonage signs what it forwards, whoever sent the text."""
    fields = {"msisdn": msisdn.lstrip("+"), "to": NUMBER, "messageId": f"0B{n:014d}", "text": text,
              "type": "text", "message-timestamp": "2026-12-01 10:00:00", "timestamp": str(int(time.time()))}
    fields["sig"] = sms_signature(fields, SIG_SECRET, "sha256")
    response = http.post(f"{base}/webhooks/inbound", data=fields, timeout=10)
    assert response.status_code == 204, response.text


@pytest.mark.slow
def test_a_spoofed_admin_text_reaches_nobody(tmp_path: pathlib.Path, emu: VonageEmulator,
                                             http: requests.Session) -> None:
    """Someone sends a text that Vonage delivers, signed, as if from the admin's number. The INVITE it asks for
    sends the invitee nothing; the real admin gets the confirmation request; YES guesses from other numbers do
    nothing; the spoofer's own YES guesses from the admin's number are capped at three, and each one is seen by the
    admin."""
    db = tmp_path / "smsbot.db"

    def env(port: int) -> dict[str, str]:
        return serve_env(emu, port, db, "spoof-secret-0123456789-abcdefghijklmnop", NUMBER,
                         SMSBOT_CONFIRM="", VONAGE_SIGNATURE_SECRET=SIG_SECRET, VONAGE_SIGNATURE_METHOD="sha256")

    proc, base = start_smsbot("serve", tmp_path, env, tmp_path / "serve.log")
    serve = Serve(proc, base, db)
    admin = ADMIN_MSISDN
    try:
        signed_webhook(http, base, admin, f"INVITE {ATTACKER} eve", 1)
        asked = wait_text(emu, admin, lambda t: "YES" in t, "the confirmation request")
        assert ATTACKER in asked.text and "someone may be using your number" in asked.text
        code = YES.search(asked.text)
        assert code
        guesses = [f"{(int(code.group(1)) + k) % 10000:04d}" for k in (1, 2, 3)]
        for n, guess in enumerate(guesses):  # the spoofer guesses from their own phone and another number
            signed_webhook(http, base, ATTACKER, f"YES {guess}", 10 + n)
            signed_webhook(http, base, "12025550150", f"YES {guess}", 20 + n)
        signed_webhook(http, base, ATTACKER, f"YES {code.group(1)}", 30)  # even the right code, from elsewhere
        signed_webhook(http, base, admin, "LIST", 40)  # a fence: the reply comes after all of the above
        wait_text(emu, admin, lambda t: t.startswith("No members or invites"), "LIST")
        assert sent_to(emu, ATTACKER.lstrip("+")) == [], "no text reaches the invitee a spoofer named"
        assert sent_to(emu, "12025550150") == [], "strangers' YES gets silence"

        # Guessing as the admin: three tries, each answered on the admin's phone, then the command is gone.
        for n, guess in enumerate(guesses):
            signed_webhook(http, base, admin, f"YES {guess}", 50 + n)
        wait_text(emu, admin, lambda t: t.startswith("Wrong code 3 times"), "the drop notice")
        signed_webhook(http, base, admin, f"YES {code.group(1)}", 60)
        wait_text(emu, admin, lambda t: t.startswith("Nothing is waiting"), "nothing left to confirm")
        assert sent_to(emu, ATTACKER.lstrip("+")) == []
        wrong = [m for m in sent_to(emu, admin) if m.text.startswith("That code isn't right")]
        assert len(wrong) == 2, "the admin saw every guess"
    finally:
        serve.proc.stop()
    text = (tmp_path / "serve.log").read_text()
    assert ATTACKER.lstrip("+") not in text, "the log masks numbers"


def test_the_settings_default_confirms_invite(make_settings: Callable[..., Any]) -> None:
    from smsbot.settings import load

    from support.service import BASE_ENV

    assert load({k: v for k, v in BASE_ENV.items() if k != "SMSBOT_CONFIRM"}).confirm == ("INVITE",)
    settings = make_settings(SMSBOT_CONFIRM="revoke, INVITE")
    assert settings.confirm == ("INVITE", "REVOKE")
    with pytest.raises(Exception, match="SMSBOT_CONFIRM"):
        make_settings(SMSBOT_CONFIRM="LIST")
