"""After the whole story, no form of any phone number, code or PIN is in the database files or the logs."""

from __future__ import annotations

import logging
import re

import pytest

from smsbot import logs
from smsbot.web.appkeys import STORE

from support.constants import INVITE_CODE, NUMBER, PIN_IS
from support.privacy import assert_absent, database_files, forms
from support.service import ADMIN, WebBench

INVITEE = "+12025550143"
SECOND = "+14155550177"


def captured(pattern: re.Pattern[str], text: str) -> str:
    found = pattern.search(text)
    assert found, f"{pattern!r} not in {text!r}"
    return found.group(1)


async def test_no_number_code_or_pin_survives_the_story(bench: WebBench, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    logs.quiet_leaky_loggers()  # as `smsbot serve` does at start
    seen: list[str] = []
    out = await bench.text(ADMIN, "INVITE (202) 555-0143")
    code = captured(INVITE_CODE, out[0][1])
    await bench.text(INVITEE, "WRONG1")
    await bench.text(INVITEE, f"join {code.lower()}")
    out = await bench.text(INVITEE, "carol")
    pin = captured(PIN_IS, out[0][1])
    response, cookies = await bench.login("carol", pin)
    assert response.status == 303
    out = await bench.text(INVITEE, "LOGIN")
    seen.append(captured(PIN_IS, out[0][1]))
    second_pin = await bench.member_with_pin(SECOND, "dave")
    await bench.text(ADMIN, "LIST")
    await bench.text(SECOND, "STOP")
    await bench.text(SECOND, "START")
    await bench.text(ADMIN, "REVOKE carol")
    await bench.text(ADMIN, f"REVOKE {SECOND}")

    secrets = forms(INVITEE) + forms(SECOND) + [code, pin, second_pin, *seen, cookies["__Host-smsbot_session"]]
    await bench.app[STORE].scrub()  # what the outbox worker does after each batch
    running = {p.name: p.read_bytes() for p in database_files(bench)}
    assert_absent(running, secrets)
    assert_absent({"logs": caplog.text.encode()}, secrets + [ADMIN, ADMIN.lstrip("+")])

    await bench.app[STORE].close()
    stopped = {p.name: p.read_bytes() for p in database_files(bench)}
    assert_absent(stopped, secrets)


async def test_the_scan_would_find_a_number_left_in_clear(bench: WebBench) -> None:
    """The check above can fail: before the outbox sends, the invite's number is in the database."""
    await bench.client.post("/webhooks/inbound", data={
        "msisdn": ADMIN.lstrip("+"), "to": NUMBER, "messageId": "priv-1", "text": f"INVITE {INVITEE}"})
    blobs = {p.name: p.read_bytes() for p in database_files(bench)}
    with pytest.raises(AssertionError):
        assert_absent(blobs, [INVITEE])
