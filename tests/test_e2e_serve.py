"""End to end: the real `smsbot serve` process, real HTTP, and the real Vonage SDK talking to the TLS emulator.

Inbound texts are posted to /webhooks/inbound the way Vonage's SMS API posts them (GET query string, POST form,
POST JSON); what the service sends is read from the emulator's record of the SDK's requests.
"""

from __future__ import annotations

import concurrent.futures
import pathlib
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests

from support.client import auth, login, post_webhook, text_in, webhook_fields
from support.constants import ADMIN_MSISDN, INVITEE, NUMBER, SECRET
from support.procs import (
    CODE,
    PIN,
    SESSION_COOKIE,
    Serve,
    clean_env,
    only,
    sent_to,
    serve_env,
    start_smsbot,
    wait_for,
    wait_text,
)
from support.vonage_emulator import SMS_PATH, VonageEmulator

pytestmark = pytest.mark.slow

GROUP = "Friends"

TEXT_TIMEOUT = 10.0

@pytest.fixture
def serve(tmp_path: pathlib.Path, emu: VonageEmulator) -> Iterator[Serve]:
    workdir = tmp_path / "serve"
    workdir.mkdir()
    db = tmp_path / "data" / "smsbot.db"
    db.parent.mkdir()

    def env(port: int) -> dict[str, str]:
        return serve_env(emu, port, db, SECRET, NUMBER, SMSBOT_GROUP_NAME=GROUP)

    proc, base = start_smsbot("serve", workdir, env, tmp_path / "serve.log", extra_args=["--host", "127.0.0.1"])
    try:
        yield Serve(proc, base, db)
    finally:
        proc.stop()


# ---------------------------------------------------------------------------------------------- helpers


def fence(emu: VonageEmulator, http: requests.Session, base: str) -> None:
    """Wait until everything caused so far has been sent: texts go out in the order they were queued, so once the
    reply to a fresh HELP from the admin is out, so is every text queued before it."""
    before = len(sent_to(emu, ADMIN_MSISDN))
    text_in(http, base, "form", ADMIN_MSISDN, "HELP")
    wait_for(lambda: any(is_help(m.text) for m in sent_to(emu, ADMIN_MSISDN)[before:]), TEXT_TIMEOUT,
             "the admin's HELP reply (fence)")


def is_help(text: str) -> bool:
    return "commands" in text.lower()


# ---------------------------------------------------------------------------------------------- tests


def test_the_whole_story_over_real_http(serve: Serve, emu: VonageEmulator, http: requests.Session) -> None:
    base = serve.base

    # The admin invites by a GET webhook (query string).
    invite_fields = webhook_fields(ADMIN_MSISDN, "INVITE +1 415 555 0134 alice")
    response = post_webhook(http, base, "get", invite_fields)
    assert response.status_code in (200, 204), response.text
    invite = wait_text(emu, INVITEE, lambda t: "invited" in t, "the invite")
    wait_text(emu, ADMIN_MSISDN, lambda t: t.startswith("Invited alice"), "the admin's INVITE reply")
    assert invite.from_ == NUMBER
    code = only(CODE, invite.text)

    # The same webhook again (Vonage retries when unsure): no second invite, no second reply.
    response = post_webhook(http, base, "get", invite_fields)
    assert response.status_code in (200, 204), response.text
    # The same LIST four times at once: exactly one reply.
    list_fields = webhook_fields(ADMIN_MSISDN, "LIST")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        def post_list(_: int) -> requests.Response:
            with requests.Session() as own:  # requests.Session is not thread-safe: one each
                own.trust_env = False
                return post_webhook(own, base, "json", list_fields)

        answers = list(pool.map(post_list, range(4)))
    assert all(r.status_code in (200, 204) for r in answers), [(r.status_code, r.text) for r in answers]
    fence(emu, http, base)
    admin_texts = [m.text for m in sent_to(emu, ADMIN_MSISDN)]
    assert len(sent_to(emu, INVITEE)) == 1, [m.text for m in sent_to(emu, INVITEE)]
    assert len(admin_texts) == 3, f"INVITE reply, one LIST reply, HELP reply; got {admin_texts}"
    assert "alice" in admin_texts[1], f"LIST names the pending invite: {admin_texts[1]!r}"

    # The invitee replies with the code (a POST form; codes are case-insensitive) and gets a PIN.
    text_in(http, base, "form", INVITEE, code.lower())
    pin_text = wait_text(emu, INVITEE, lambda t: "invited" not in t and "PIN" in t, "the PIN").text
    pin = only(PIN, pin_text)
    assert f"{base}/login" in pin_text
    assert "alice" in pin_text

    # Sign in over HTTP.
    assert auth(http, base, None).status_code == 401
    response = login(http, base, "alice", pin)
    assert response.status_code == 303, (response.status_code, response.text)
    session_cookie = response.cookies.get(SESSION_COOKIE)
    assert session_cookie, f"a session cookie is set at login: {response.headers.get('Set-Cookie')}"
    set_cookie = ";".join(v for k, v in response.raw.headers.items() if k.lower() == "set-cookie")
    assert "httponly" in set_cookie.lower() and re.search(r"samesite=(lax|strict)", set_cookie, re.I), set_cookie

    checked = auth(http, base, session_cookie)
    assert checked.status_code == 200, checked.text
    assert checked.headers.get("X-Auth-User") == "alice"
    home = http.get(f"{base}/", cookies={SESSION_COOKIE: session_cookie}, allow_redirects=False, timeout=10)
    assert home.status_code == 200 and "Signed in as" in home.text and "alice" in home.text
    assert auth(http, base, session_cookie + "x").status_code == 401

    # The admin revokes alice (a POST JSON webhook): at once, the session no longer authenticates.
    text_in(http, base, "json", ADMIN_MSISDN, "REVOKE alice")
    revoked = auth(http, base, session_cookie)
    assert revoked.status_code == 401, "REVOKE takes effect as soon as the webhook is acknowledged"
    assert "X-Auth-User" not in revoked.headers
    wait_text(emu, ADMIN_MSISDN, lambda t: t.startswith("Revoked alice"), "the admin's REVOKE reply")
    home = http.get(f"{base}/", cookies={SESSION_COOKIE: session_cookie}, allow_redirects=False, timeout=10)
    assert home.status_code in (302, 303) and home.headers["Location"].endswith("/login")

    # Every text went out through the SDK from the group's number, once.
    assert all(m.from_ == NUMBER for m in emu.sent)
    assert len({m.message_id for m in emu.sent}) == len(emu.sent)


@pytest.mark.parametrize("how", ["get", "form", "json"])
def test_a_malformed_webhook_gets_400_and_changes_nothing(serve: Serve, emu: VonageEmulator,
                                                         http: requests.Session, how: str) -> None:
    fields = webhook_fields(ADMIN_MSISDN, "INVITE +1 415 555 0134 alice")
    del fields["msisdn"]
    response = post_webhook(http, serve.base, how, fields)
    assert response.status_code == 400, (response.status_code, response.text)
    fence(emu, http, serve.base)
    assert [m.text for m in emu.sent if not is_help(m.text)] == []


def test_serve_stops_cleanly_on_sigterm(serve: Serve, http: requests.Session) -> None:
    assert http.get(f"{serve.base}/healthz", timeout=5).status_code == 200  # leaves a keep-alive connection open
    try:
        code = serve.proc.terminate(timeout=8)
    except subprocess.TimeoutExpired:
        pytest.fail("smsbot serve did not exit within 8 s of SIGTERM")
    assert code == 0, f"exit code {code}"
    assert "Traceback" not in serve.proc.output()


def test_serve_runs_on_uvloop(serve: Serve, http: requests.Session) -> None:
    """The server's event loop is uvloop's, which the wheel depends on (on Linux), and it says so once at start."""
    assert http.get(f"{serve.base}/healthz", timeout=5).status_code == 200
    assert re.findall(r"event loop: (\S+)", serve.proc.output()) == ["uvloop"], serve.proc.output()


def test_texts_survive_provider_errors(serve: Serve, emu: VonageEmulator, http: requests.Session) -> None:
    emu.inject("http500", "throttle")
    text_in(http, serve.base, "get", ADMIN_MSISDN, "INVITE +14155550134 alice")
    invite = wait_text(emu, INVITEE, lambda t: "invited" in t, "the invite, after the provider recovers", 15)
    wait_text(emu, ADMIN_MSISDN, lambda t: t.startswith("Invited alice"),
              "the INVITE reply, after the provider recovers", 15)
    only(CODE, invite.text)
    faults = [r.fault for r in emu.requests if r.path == SMS_PATH]
    assert faults[:2] == ["http500", "throttle"], faults
    fence(emu, http, serve.base)
    assert len(sent_to(emu, INVITEE)) == 1, "sent once each, not once per attempt"
    assert len([m for m in sent_to(emu, ADMIN_MSISDN) if m.text.startswith("Invited")]) == 1


def test_serve_refuses_bad_settings_and_names_every_problem(tmp_path: pathlib.Path) -> None:
    env = clean_env({
        "SMSBOT_ADMINS": "+14155550100, not-a-phone",
        "SMSBOT_DB": str(tmp_path / "smsbot.db"),
        "SMSBOT_PIN_VIA": "pigeon",
    })
    result = subprocess.run([sys.executable, "-m", "smsbot", "serve", "--port", "9"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    print(result.stdout, result.stderr)
    assert result.returncode != 0
    for problem in ("SMSBOT_SECRET", "'not-a-phone'", "SMSBOT_PIN_VIA", "VONAGE_API_KEY", "SMSBOT_NUMBER"):
        assert problem in result.stderr, f"{problem} is not named on stderr"
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "smsbot.db").exists(), "nothing is created when the settings are refused"
