"""Provider faults against the real `smsbot serve` and the real SDK: an outage delays texts and never drops or
doubles them, the send rate stays under SMSBOT_SMS_RATE, a text that keeps failing is shown to the admins, and web
sign-in keeps working all the while."""

from __future__ import annotations

import collections
import pathlib
import time
from collections.abc import Iterator

import pytest
import requests

from support.client import auth, login, text_in
from support.constants import ADMIN_MSISDN, NUMBER, SECRET
from support.procs import (
    CODE,
    PIN,
    SESSION_COOKIE,
    Serve,
    only,
    sent_to,
    serve_env,
    start_smsbot,
    wait_for,
    wait_text,
    waiting_texts,
)
from support.vonage_emulator import SMS_PATH, VonageEmulator

pytestmark = pytest.mark.slow
RATE = 3
INVITEES = [f"1415555{n:04d}" for n in range(300, 308)]


@pytest.fixture
def serve(tmp_path: pathlib.Path, emu: VonageEmulator) -> Iterator[Serve]:
    emu.hang_seconds = 120  # a hung request never completes during the test: the provider never took it
    db = tmp_path / "smsbot.db"

    def env(port: int) -> dict[str, str]:
        return serve_env(emu, port, db, SECRET, NUMBER, SMSBOT_SMS_RATE=str(RATE), SMSBOT_VONAGE_TIMEOUT="2")

    proc, base = start_smsbot("serve", tmp_path, env, tmp_path / "serve.log", extra_args=["--host", "127.0.0.1"])
    try:
        yield Serve(proc, base, db)
    finally:
        proc.stop()


def max_in_any_second(stamps: list[float]) -> int:
    stamps = sorted(stamps)
    return max((sum(1 for s in stamps[i:] if s - start < 1.0) for i, start in enumerate(stamps)), default=0)


def test_an_outage_delays_texts_but_never_drops_or_doubles_them(serve: Serve, emu: VonageEmulator,
                                                                http: requests.Session) -> None:
    base = serve.base
    alice = "14155550134"
    text_in(http, base, "form", ADMIN_MSISDN, f"INVITE +{alice} alice")
    code = only(CODE, wait_text(emu, alice, lambda t: "code" in t, "invite").text)
    text_in(http, base, "form", alice, code)
    pin = only(PIN, wait_text(emu, alice, lambda t: "PIN is" in t, "PIN").text)
    signed_in = login(http, base, "alice", pin)
    assert signed_in.status_code == 303
    cookie = signed_in.cookies[SESSION_COOKIE]
    text_in(http, base, "form", alice, "LOGIN")
    spare_pin = only(PIN, wait_for(lambda: [m for m in sent_to(emu, alice) if "PIN is" in m.text][1:], 10,
                                   "a second PIN")[0].text)
    before = len(emu.sent)

    # The outage: 500s for 3 seconds, then throttling, internal errors, a hang and dropped connections.
    emu.fail_for(3.0, "http500")
    emu.inject("throttle", "throttle", "internal", "hang", "drop", "drop", "http503", "http429")
    started = time.monotonic()
    for number in INVITEES:
        text_in(http, base, "json", ADMIN_MSISDN, f"INVITE +{number}")

    # Web sign-in keeps working while texts are failing.
    assert auth(http, base, cookie).status_code == 200
    http.cookies.clear()  # a second device
    during = login(http, base, "alice", spare_pin)
    assert during.status_code == 303 and time.monotonic() - started < 8

    expected = len(INVITEES) * 2  # an invite and an admin reply each
    wait_for(lambda: len(emu.sent) - before >= expected, 60, f"{expected} texts after the outage")
    # Once no text is waiting or being sent, the outbox will send nothing more: a text sent twice is in by then.
    wait_for(lambda: not waiting_texts(serve.db), 30, "the outbox to finish every text")
    delivered = collections.Counter((m.to, m.text) for m in emu.sent[before:])
    assert sum(delivered.values()) == expected and max(delivered.values()) == 1, "every text exactly once"
    assert all(any(m.to == number for m in emu.sent[before:]) for number in INVITEES)

    requests_at = [r.at for r in emu.requests if r.path == SMS_PATH]
    assert max_in_any_second(requests_at) <= RATE, "never more than SMSBOT_SMS_RATE requests in a second"
    faulted = [r for r in emu.requests if r.path == SMS_PATH and r.fault]
    assert len(faulted) >= 8, "the faults really happened"


def test_a_text_that_keeps_failing_is_shown_to_the_admins(serve: Serve, emu: VonageEmulator,
                                                         http: requests.Session) -> None:
    emu.inject("invalid")  # a permanent error (status 3) on the next send: the invite
    text_in(http, serve.base, "form", ADMIN_MSISDN, "INVITE +14155550177 zed")
    wait_text(emu, ADMIN_MSISDN, lambda t: t.startswith("Invited zed"), "the admin's reply")
    text_in(http, serve.base, "form", ADMIN_MSISDN, "LIST")
    wait_text(emu, ADMIN_MSISDN, lambda t: "zed **77 (invite not sent)" in t, "LIST showing the failed invite")
    text_in(http, serve.base, "form", ADMIN_MSISDN, "LOG")
    wait_text(emu, ADMIN_MSISDN, lambda t: "not sent: invite to **77" in t, "LOG showing the failure")
