"""End to end, the Vonage side: the real `smsbot serve`, real HTTP, the real Vonage SDK against the TLS emulator.

Covered here: PINs through Verify v2 (SMSBOT_PIN_VIA=verify), signed webhooks in every method and format (and every
way a signature can be wrong), provider faults during the story, delivery receipts, multipart inbound texts, and
the start-up warning when webhooks are not signed.

Signatures are computed here from Vonage's description (vonage-facts.md 4.1, 4.2), never with the product's code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import pathlib
import re
import time
import uuid
from collections.abc import Callable, Iterator

import jwt
import pytest
import requests

from support.client import post_webhook, signed, vonage_sig
from support.constants import ADMIN_MSISDN, NUMBER, SIG_SECRET
from support.constants import APP_ID as APPLICATION_ID
from support.procs import (
    CODE,
    PIN,
    SESSION_COOKIE,
    Serve,
    SmsbotProcess,
    only,
    sent_to,
    serve_env,
    start_smsbot,
    wait_for,
    wait_text,
)
from support.service import CSRF_INPUT
from support.vonage_emulator import SMS_PATH, VERIFY_PATH, RecordedRequest, SentSms, VonageEmulator

pytestmark = pytest.mark.slow

SECRET = "e2e-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
INVITEE = "14155550134"
GROUP = "Old Mill Friends Club"  # longer than a Verify brand may be (16)

TEXT_TIMEOUT = 10.0
FAULT_TIMEOUT = 20.0  # a hung request costs the SDK timeout (SMSBOT_VONAGE_TIMEOUT, 10 s by default) plus a backoff

_ids = itertools.count(1)


# ---------------------------------------------------------------------------------------------- signing (Vonage's way)


def messages_jwt(body: bytes, *, secret: str = SIG_SECRET, iat: float | None = None,
                 payload_hash: str | None = None) -> str:
    """The HS256 JWT Vonage puts in `Authorization: Bearer` on Messages API webhooks."""
    claims = {"iat": int(time.time() if iat is None else iat), "jti": str(uuid.uuid4()), "iss": "Vonage",
              "payload_hash": payload_hash or hashlib.sha256(body).hexdigest(), "api_key": "test-key",
              "application_id": APPLICATION_ID}
    return jwt.encode(claims, secret, algorithm="HS256")


# ---------------------------------------------------------------------------------------------- webhooks


def sms_fields(msisdn: str, text: str, message_id: str | None = None, **extra: str) -> dict[str, str]:
    """An SMS API inbound webhook's fields, as Vonage sends them (all strings)."""
    words = text.split()
    return {"msisdn": msisdn, "to": NUMBER, "messageId": message_id or f"0A00000{next(_ids):09d}", "text": text,
            "type": "text", "keyword": words[0].upper() if words else "", "message-timestamp": "2025-03-14 15:09:26",
            "api-key": "test-key", **extra}


def messages_body(sender: str, text: str, message_uuid: str | None = None) -> bytes:
    """A Messages API (v1) inbound SMS webhook body."""
    return json.dumps({
        "channel": "sms", "message_uuid": message_uuid or str(uuid.uuid4()), "to": NUMBER, "from": sender,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "message_type": "text", "text": text,
        "sms": {"num_messages": "1", "keyword": text.split()[0].upper() if text.split() else ""},
        "usage": {"currency": "EUR", "price": "0.0057"},
    }).encode()


def sms_signed_messages_body(sender: str, text: str, method: str) -> bytes:
    """A flat Messages API webhook body carrying an SMS API style `sig` (the wrong scheme for the Messages API)."""
    fields = {"channel": "sms", "message_uuid": str(uuid.uuid4()), "to": NUMBER, "from": sender,
              "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "message_type": "text", "text": text}
    return json.dumps(signed(fields, method)).encode()


def post_sms(base: str, how: str, fields: dict[str, str], path: str = "/webhooks/inbound") -> requests.Response:
    with fresh_session() as http:
        return post_webhook(http, base, how, fields, path)


def post_messages(base: str, body: bytes, token: str | None) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    with fresh_session() as http:
        return http.post(f"{base}/webhooks/inbound", data=body, headers=headers, timeout=10)


@dataclasses.dataclass
class Texter:
    """Sends inbound texts to one service the way one Vonage set-up does: SMS API as `get`, `form` or `json`, or
    Messages API (`messages`); signed with `method` (SMS API) or a JWT (Messages API) when `method` is set."""

    base: str
    how: str
    method: str | None = None
    upper: bool = False

    def send(self, msisdn: str, text: str) -> requests.Response:
        if self.how == "messages":
            body = messages_body(msisdn, text)
            response = post_messages(self.base, body, messages_jwt(body) if self.method else None)
        else:
            fields = sms_fields(msisdn, text)
            if self.method:
                fields = signed(fields, self.method, upper=self.upper)
            response = post_sms(self.base, self.how, fields)
        assert response.status_code in (200, 204), (self.how, self.method, text, response.status_code,
                                                     response.text)
        return response


# ---------------------------------------------------------------------------------------------- the service


@pytest.fixture
def start_serve(tmp_path: pathlib.Path, emu: VonageEmulator) -> Iterator[Callable[..., Serve]]:
    """Start `smsbot serve` against the emulator; keyword arguments add to (or, as "", remove from) its env."""
    started: list[SmsbotProcess] = []

    def start(**extra: str) -> Serve:
        n = len(started)
        workdir = tmp_path / f"serve{n}"
        workdir.mkdir()
        db = tmp_path / f"data{n}" / "smsbot.db"
        db.parent.mkdir()

        def env(port: int) -> dict[str, str]:
            # The abuse limits are not what these tests are about: the verify story issues 4 PINs in a minute
            # and signs in 11 times from one address.
            limits = {"SMSBOT_PIN_CAP_HOUR": "10", "SMSBOT_LOGIN_FAILURES_PER_MINUTE": "100"}
            return serve_env(emu, port, db, SECRET, NUMBER, SMSBOT_GROUP_NAME=GROUP, **{**limits, **extra})

        proc, base = start_smsbot("serve", workdir, env, tmp_path / f"serve{n}.log",
                                  extra_args=["--host", "127.0.0.1"], stderr_path=tmp_path / f"serve{n}.err")
        started.append(proc)
        return Serve(proc, base, db)

    yield start
    for proc in started:
        proc.stop()


# ---------------------------------------------------------------------------------------------- helpers


def fresh_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxies from the environment for 127.0.0.1
    return session


def texts_to(emu: VonageEmulator, msisdn: str) -> list[str]:
    return [m.text for m in sent_to(emu, msisdn)]


def is_help(text: str) -> bool:
    return "commands" in text.lower()


def fence(emu: VonageEmulator, texter: Texter, timeout: float = TEXT_TIMEOUT) -> None:
    """Wait until everything caused so far has been sent: once the reply to a fresh HELP from the admin is out, so
    is every text queued before it (texts go out in the order they were queued, unless a fault delays one)."""
    before = len(sent_to(emu, ADMIN_MSISDN))
    texter.send(ADMIN_MSISDN, "HELP")
    wait_text(emu, ADMIN_MSISDN, is_help, "the admin's HELP reply (fence)", timeout, after=before)


def list_reply(emu: VonageEmulator, texter: Texter) -> str:
    before = len(sent_to(emu, ADMIN_MSISDN))
    texter.send(ADMIN_MSISDN, "LIST")
    return wait_text(emu, ADMIN_MSISDN, lambda t: t.startswith(("Page ", "No members")), "the LIST reply",
                     after=before).text


def login(base: str, username: str, pin: str) -> requests.Response:
    """Sign in as a fresh browser does: GET the form (CSRF cookie + hidden token), POST it back."""
    with fresh_session() as browser:
        form = browser.get(f"{base}/login", timeout=10)
        assert form.status_code == 200
        token = CSRF_INPUT.search(form.text)
        assert token, "the login form carries a hidden csrf_token"
        return browser.post(f"{base}/login", data={"username": username, "pin": pin, "csrf_token": token.group(1)},
                            allow_redirects=False, timeout=10)


def signs_in(base: str, username: str, pin: str) -> str:
    response = login(base, username, pin)
    assert response.status_code == 303, (username, pin, response.status_code, response.text)
    cookie = response.cookies.get(SESSION_COOKIE)
    assert cookie, f"a session cookie is set at login: {response.headers.get('Set-Cookie')}"
    return cookie


def refused(base: str, username: str, pin: str) -> None:
    """The PIN is refused as a PIN (4xx), not for a forged form (403) or too many attempts (429)."""
    response = login(base, username, pin)
    assert 400 <= response.status_code < 500 and response.status_code not in (403, 429), (
        username, pin, response.status_code, response.text)
    assert SESSION_COOKIE not in response.cookies


def auth(base: str, session_cookie: str) -> requests.Response:
    with fresh_session() as browser:
        return browser.get(f"{base}/auth", cookies={SESSION_COOKIE: session_cookie}, allow_redirects=False,
                           timeout=10)


def other_code(code: str) -> str:
    """A wrong code of the same shape."""
    return f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"


# Verify v2 as the emulator saw it.

def verify_requests(emu: VonageEmulator, method: str, path: str = VERIFY_PATH) -> list[RecordedRequest]:
    return [r for r in list(emu.requests) if r.method == method and r.path == path]


def wait_verification(emu: VonageEmulator, count: int = 1, timeout: float = TEXT_TIMEOUT) -> str:
    """The request id of the `count`-th verification Vonage accepted, waiting for it."""
    def started() -> str | None:
        ids = list(emu.verify_codes)
        return ids[count - 1] if len(ids) >= count else None

    return wait_for(started, timeout, f"verification #{count} to start")


def cancelled(emu: VonageEmulator, request_id: str) -> list[RecordedRequest]:
    return [r for r in verify_requests(emu, "DELETE", f"{VERIFY_PATH}/{request_id}") if r.fault is None]


def checks(emu: VonageEmulator, request_id: str) -> list[str]:
    return [str((r.json or {}).get("code")) for r in verify_requests(emu, "POST", f"{VERIFY_PATH}/{request_id}")]


def announcement(base: str, username: str = "alice") -> str:
    return f"Your {GROUP} PIN comes in the next text. Sign in as {username} at {base}/login in 10 min."


def assert_one_live_verification_at_a_time(emu: VonageEmulator) -> None:
    """Never two different PINs to one number: each verification but the last was cancelled before the next one
    was accepted."""
    ids = list(emu.verify_codes)
    for earlier, later in itertools.pairwise(ids):
        checked = checks(emu, earlier)
        if checked and checked[-1] == emu.verify_codes[earlier]:
            continue  # completed: signed in with it
        deleted = cancelled(emu, earlier)
        assert deleted, f"verification {earlier} was never cancelled though {later} started: {ids}"


# ---------------------------------------------------------------------------------------------- 1. Verify v2


def test_the_whole_story_with_pins_through_verify(start_serve: Callable[..., Serve], emu: VonageEmulator) -> None:
    serve = start_serve(SMSBOT_PIN_VIA="verify")
    base = serve.base
    texter = Texter(base, "form")

    texter.send(ADMIN_MSISDN, "INVITE +1 415 555 0134 alice")
    code = only(CODE, wait_text(emu, INVITEE, lambda t: "invited" in t, "the invite").text)
    wait_text(emu, ADMIN_MSISDN, lambda t: t.startswith("Invited alice"), "the INVITE reply")

    # The code brings our own text announcing the PIN, then a Verify v2 request that sends it.
    texter.send(INVITEE, f"JOIN {code}")
    first = wait_verification(emu)
    announced = wait_text(emu, INVITEE, lambda t: "PIN comes" in t, "the PIN announcement")
    assert announced.text == announcement(base)
    assert announced.from_ == NUMBER
    assert not PIN.search(announced.text), "in verify mode our own text carries no PIN"
    [start] = [r for r in verify_requests(emu, "POST") if r.fault is None]
    assert start.json["brand"] == GROUP[:16] == "Old Mill Friends"
    assert start.json["code_length"] == 6
    assert start.json["channel_timeout"] == 600
    assert [(s["channel"], s["to"]) for s in start.json["workflow"]] == [("sms", INVITEE)]
    assert announced.at <= start.at, "the announcement goes out before the verification starts"
    code1 = emu.verify_codes[first]
    assert not any(code1 in t for t in texts_to(emu, INVITEE)), "Vonage sends the code, not us"

    # A wrong code first: refused, and Vonage was asked (it counts the try too).
    wrong = other_code(code1)
    refused(base, "alice", wrong)
    assert checks(emu, first) == [wrong]

    # LOGIN while that verification is in flight: the old one is cancelled (DELETE), a new one starts.
    texter.send(INVITEE, "LOGIN")
    second = wait_verification(emu, 2)
    assert len(cancelled(emu, first)) == 1, "the verification in flight was cancelled"
    assert cancelled(emu, first)[0].at < [r for r in verify_requests(emu, "POST") if r.fault is None][-1].at
    wait_text(emu, INVITEE, lambda t: t == announcement(base), "the second announcement", after=2)
    code2 = emu.verify_codes[second]
    if code2 != code1:
        refused(base, "alice", code1)  # the cancelled verification's code no longer signs in

    cookie = signs_in(base, "alice", code2)
    checked = auth(base, cookie)
    assert checked.status_code == 200 and checked.headers.get("X-Auth-User") == "alice"
    assert checks(emu, second)[-1] == code2
    refused(base, "alice", code2)  # single use

    # Wrong codes count as tries here too: after five, even the right code is refused without asking Vonage.
    emu.max_code_attempts = 99  # let the product's own count (5) be the one that ends it
    texter.send(INVITEE, "LOGIN")
    third = wait_verification(emu, 3)
    assert not cancelled(emu, second), "a completed verification needs no cancelling"
    code3 = emu.verify_codes[third]
    for _ in range(5):
        refused(base, "alice", other_code(code3))
    refused(base, "alice", code3)
    assert checks(emu, third) == [other_code(code3)] * 5, "the sixth try never reached Vonage"

    # LOGIN once more gives a fresh PIN: the dead one's verification is cancelled, a second device signs in.
    texter.send(INVITEE, "LOGIN")
    fourth = wait_verification(emu, 4)
    assert len(cancelled(emu, third)) == 1
    cookie2 = signs_in(base, "alice", emu.verify_codes[fourth])
    assert cookie2 != cookie
    assert auth(base, cookie2).status_code == 200

    # REVOKE: every session ends at once, and a LOGIN from that phone starts no verification.
    texter.send(ADMIN_MSISDN, "REVOKE alice")
    assert auth(base, cookie).status_code == 401
    assert auth(base, cookie2).status_code == 401
    wait_text(emu, ADMIN_MSISDN, lambda t: t.startswith("Revoked alice"), "the REVOKE reply")
    texter.send(INVITEE, "LOGIN")
    fence(emu, texter)
    assert len(emu.verify_codes) == 4
    assert texts_to(emu, INVITEE).count(announcement(base)) == 4
    assert_one_live_verification_at_a_time(emu)
    assert all(m.from_ == NUMBER for m in emu.sent)


# ---------------------------------------------------------------------------------------------- 2. signatures


def test_our_signer_agrees_with_vonages_published_vectors() -> None:
    """The test's own signer, checked against Vonage's vectors (PHP SDK SignatureTest, facts 4.1)."""
    secret = "my_secret_key_for_testing"
    params = {"message-timestamp": "2013-11-21 15:27:30", "messageId": "020000001B0FE827", "msisdn": "14843472194",
              "text": "Test again", "timestamp": "1385047698", "to": "13239877404", "type": "text"}
    assert vonage_sig(params, secret, "md5hash") == "d2e7b1dc968737c5998ad624e02f90b7"
    assert vonage_sig(params, secret, "md5") == "DDEBD46008C2D4E93CCE578A332A52D5".lower()
    assert vonage_sig(params, secret, "sha1") == "27D0D05C2876C7CB1720DBCDBA4D492E1E55C09A".lower()
    assert vonage_sig(params, secret, "sha256") == (
        "DDB8397C2B90AAC7F3882D306475C9A5058C92322EEF43C92B298B6E0FC0D330".lower())
    assert vonage_sig(params, secret, "sha512") == (
        "E0D3C650F8C9D1A5C174D10DDDBFB003E561F59B265616208B0487C5D819481CD3C311D59CF6165ECD1139622D5BA3A256C0D763"
        "AC4A9AD9144B5A426B94FE82".lower())
    escaped = {"keyword": "TEST", "message-timestamp": "2017-04-04 22:57:47", "messageId": "0B00000042AC53BD",
               "msisdn": "14843472194", "nonce": "929d6744-bd28-42c8-b6cf-31d5b4f43732",
               "text": "Test with & and =", "timestamp": "1491346667", "to": "12192259404", "type": "text"}
    assert vonage_sig(escaped, secret, "md5hash") == "e06d9763e3fd0b9c31beb5fc2fcb011c"


@pytest.mark.parametrize(("method", "how", "upper"), [
    ("md5hash", "get", False),  # Vonage's dashboard default
    ("md5", "form", False),
    ("sha1", "json", False),
    ("sha256", "messages", False),  # Messages API: a JWT; the method signs the delivery receipt below
    ("sha512", "form", True),  # Vonage may send the hex in capitals
])
def test_the_story_with_signed_webhooks(start_serve: Callable[..., Serve], emu: VonageEmulator, method: str,
                                        how: str, upper: bool) -> None:
    serve = start_serve(VONAGE_SIGNATURE_SECRET=SIG_SECRET, VONAGE_SIGNATURE_METHOD=method)
    base = serve.base
    texter = Texter(base, how, method, upper)

    texter.send(ADMIN_MSISDN, "INVITE +1 415 555 0134 alice")
    invite = wait_text(emu, INVITEE, lambda t: "invited" in t, "the invite")
    wait_text(emu, ADMIN_MSISDN, lambda t: t.startswith("Invited alice"), "the INVITE reply")

    # A signed delivery receipt (the SMS API's, signed with the configured method) is accepted.
    dlr = signed(dlr_fields(invite, "delivered", "0"), method, upper=upper)
    assert post_sms(base, "get" if how == "get" else "form", dlr, "/webhooks/status").status_code in (200, 204)

    texter.send(INVITEE, only(CODE, invite.text))
    pin = only(PIN, wait_text(emu, INVITEE, lambda t: "PIN is" in t, "the PIN").text)
    cookie = signs_in(base, "alice", pin)
    assert auth(base, cookie).headers.get("X-Auth-User") == "alice"
    assert "alice" in list_reply(emu, texter)

    texter.send(ADMIN_MSISDN, "REVOKE alice")
    assert auth(base, cookie).status_code == 401
    wait_text(emu, ADMIN_MSISDN, lambda t: t.startswith("Revoked alice"), "the REVOKE reply")
    assert "VONAGE_SIGNATURE_SECRET is not set" not in serve.proc.stderr()


def test_every_bad_signature_gets_401_and_changes_nothing(start_serve: Callable[..., Serve],
                                                          emu: VonageEmulator) -> None:
    method = "md5hash"
    serve = start_serve(VONAGE_SIGNATURE_SECRET=SIG_SECRET, VONAGE_SIGNATURE_METHOD=method)
    base = serve.base
    good = Texter(base, "form", method)

    # A known state: one pending invite.
    good.send(ADMIN_MSISDN, "INVITE +1 415 555 0134 alice")
    invite = wait_text(emu, INVITEE, lambda t: "invited" in t, "the invite")
    before = list_reply(emu, good)
    assert "alice" in before and "invited" in before
    sent_before = len(emu.sent)

    def sms(text: str, msisdn: str = ADMIN_MSISDN) -> dict[str, str]:
        return sms_fields(msisdn, text)

    now = time.time()
    bob, carol, dave = "INVITE +14155550135 bob", "INVITE +14155550136 carol", "INVITE +14155550137 dave"
    missing = signed(sms(bob), method)
    del missing["sig"]
    wrong = {**signed(sms(bob), method), "sig": "0" * 32}
    tampered = {**signed(sms(carol), method), "text": "INVITE +14155550138 mallory"}
    tampered_original = {**tampered, "text": carol}
    other_method = signed(sms(dave), "md5")
    other_secret = signed(sms(dave), method, secret="not-the-" + SIG_SECRET)
    stale = signed(sms(dave), method, timestamp=now - 2 * 86400)
    future = signed(sms(dave), method, timestamp=now + 3600)
    no_timestamp = sms(dave)
    no_timestamp["sig"] = vonage_sig(no_timestamp, SIG_SECRET, method)
    revoke = signed(sms("REVOKE alice"), method)
    revoke["sig"] = revoke["sig"][:-1] + ("0" if revoke["sig"][-1] != "0" else "1")
    code_from_invitee = {**signed(sms(only(CODE, invite.text), INVITEE), method), "msisdn": "14155550139"}
    sms_cases: list[tuple[str, str, dict[str, str], str]] = [
        ("missing sig", "get", missing, "/webhooks/inbound"),
        ("wrong sig", "form", wrong, "/webhooks/inbound"),
        ("tampered text", "json", tampered, "/webhooks/inbound"),
        ("tampered sender", "form", code_from_invitee, "/webhooks/inbound"),
        ("signed with md5 (HMAC), not md5hash", "get", other_method, "/webhooks/inbound"),
        ("another secret", "form", other_secret, "/webhooks/inbound"),
        ("stale timestamp (2 days)", "json", stale, "/webhooks/inbound"),
        ("timestamp an hour ahead", "get", future, "/webhooks/inbound"),
        ("sig without timestamp", "form", no_timestamp, "/webhooks/inbound"),
        ("one hex digit off", "json", revoke, "/webhooks/inbound"),
        ("unsigned delivery receipt", "form", dlr_fields(invite, "failed", "3"), "/webhooks/status"),
    ]
    for case, how, fields, path in sms_cases:
        response = post_sms(base, how, fields, path)
        assert response.status_code == 401, (case, response.status_code, response.text)

    body = messages_body(ADMIN_MSISDN, "INVITE +14155550140 erin")
    tampered_body = body.replace(b"erin", b"eve")
    messages_cases: list[tuple[str, bytes, str | None]] = [
        ("missing JWT", body, None),
        ("stale JWT (26 hours)", body, messages_jwt(body, iat=now - 26 * 3600)),
        ("JWT from the future", body, messages_jwt(body, iat=now + 3600)),
        ("tampered body", tampered_body, messages_jwt(body)),
        ("JWT signed with another secret", body, messages_jwt(body, secret="not-the-" + SIG_SECRET)),
        ("JWT without payload_hash match", body, messages_jwt(body, payload_hash="0" * 64)),
        ("SMS-style sig instead of a JWT", sms_signed_messages_body(ADMIN_MSISDN, "INVITE +14155550140 erin", method),
         None),
    ]
    for case, payload, token in messages_cases:
        response = post_messages(base, payload, token)
        assert response.status_code == 401, (case, response.status_code, response.text)
    # A Basic header is no JWT either.
    with fresh_session() as http:
        response = http.post(f"{base}/webhooks/inbound", data=body, auth=("test-key", "test-secret-value"),
                             headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 401, ("Basic auth", response.status_code)

    # Nothing happened: no text went out, LIST is unchanged, alice's invite still works.
    after = list_reply(emu, good)
    assert after == before
    assert [m.text for m in emu.sent[sent_before:]] == [after], "only the LIST reply was sent"
    assert "not delivered" not in after, "the unsigned failed-delivery receipt was not believed"

    # The refused messages' ids were not used up: correctly signed, the same messageId / message_uuid now act.
    assert post_sms(base, "json", signed({k: v for k, v in tampered_original.items()
                                          if k not in ("sig", "timestamp", "nonce")}, method)).status_code in (200, 204)
    wait_text(emu, "14155550136", lambda t: "invited" in t, "carol's invite (same messageId, signed right)")
    assert post_messages(base, body, messages_jwt(body)).status_code in (200, 204)
    wait_text(emu, "14155550140", lambda t: "invited" in t, "erin's invite (same message_uuid, signed right)")
    fence(emu, good)
    assert not sent_to(emu, "14155550138"), "mallory was never invited"
    assert all(not sent_to(emu, n) for n in ("14155550135", "14155550137", "14155550139"))
    assert texts_to(emu, INVITEE) == [invite.text], "alice got nothing more"


# ---------------------------------------------------------------------------------------------- 3. faults


def test_texts_get_through_provider_faults_in_verify_mode(start_serve: Callable[..., Serve],
                                                          emu: VonageEmulator) -> None:
    serve = start_serve(SMSBOT_PIN_VIA="verify", SMSBOT_VONAGE_TIMEOUT="3")  # a hang costs 3 s, not 10
    base = serve.base
    texter = Texter(base, "json")
    emu.hang_seconds = 60.0  # longer than the product's SDK timeout; the emulator's stop ends it

    # INVITE: the connection is dropped, then a 500 (one fault on each of the two texts, or both on one).
    emu.inject("drop", "http500")
    texter.send(ADMIN_MSISDN, "INVITE +1 415 555 0134 alice")
    invite = wait_text(emu, INVITEE, lambda t: "invited" in t, "the invite", FAULT_TIMEOUT)
    wait_text(emu, ADMIN_MSISDN, lambda t: t.startswith("Invited alice"), "the INVITE reply", FAULT_TIMEOUT)

    # The code: the announcement is throttled (SMS API status 1), Verify answers 429 once.
    emu.inject("throttle")
    emu.inject("http429", path=VERIFY_PATH)
    texter.send(INVITEE, only(CODE, invite.text))
    first = wait_verification(emu, 1, FAULT_TIMEOUT)
    wait_text(emu, INVITEE, lambda t: t == announcement(base), "the announcement", FAULT_TIMEOUT)

    # LOGIN while it is in flight: SMS status 5 (internal error) on the announcement, Verify 500 once.
    emu.inject("internal")
    emu.inject("http500", path=VERIFY_PATH)
    texter.send(INVITEE, "LOGIN")
    second = wait_verification(emu, 2, FAULT_TIMEOUT)
    wait_text(emu, INVITEE, lambda t: t == announcement(base), "the second announcement", FAULT_TIMEOUT, after=2)
    assert cancelled(emu, first), "the first verification was cancelled before the second started"

    if emu.verify_codes[first] != emu.verify_codes[second]:
        refused(base, "alice", emu.verify_codes[first])
    cookie = signs_in(base, "alice", emu.verify_codes[second])
    assert auth(base, cookie).status_code == 200

    # REVOKE: the reply's send hangs past the SDK timeout and is sent again; the revocation itself is immediate.
    emu.inject("hang")
    started = time.monotonic()
    texter.send(ADMIN_MSISDN, "REVOKE alice")
    assert auth(base, cookie).status_code == 401
    wait_text(emu, ADMIN_MSISDN, lambda t: t.startswith("Revoked alice"), "the REVOKE reply after a hang",
              FAULT_TIMEOUT)
    assert time.monotonic() - started < FAULT_TIMEOUT, "the hung request was given up in time"

    fence(emu, texter)
    sms_faults = [r.fault for r in emu.requests if r.path == SMS_PATH and r.fault]
    verify_faults = [r.fault for r in emu.requests if r.path.startswith(VERIFY_PATH) and r.fault]
    assert sorted(sms_faults) == sorted(["drop", "http500", "throttle", "internal", "hang"]), sms_faults
    assert sorted(verify_faults) == ["http429", "http500"], verify_faults
    # Every text arrived, once each; one verification per PIN issued, never two live at once.
    assert texts_to(emu, INVITEE) == [invite.text, announcement(base), announcement(base)]
    admin = [t for t in texts_to(emu, ADMIN_MSISDN) if not is_help(t)]
    assert [t.split()[0] for t in admin] == ["Invited", "alice", "Revoked"], admin  # alice joined, between
    assert list(emu.verify_codes) == [first, second]
    assert_one_live_verification_at_a_time(emu)


def test_pin_texts_get_through_provider_faults_once_each(start_serve: Callable[..., Serve],
                                                         emu: VonageEmulator) -> None:
    """SMS mode: a PIN text retried after faults is the same PIN; never two different PINs from one issuance."""
    serve = start_serve()
    base = serve.base
    texter = Texter(base, "get")

    texter.send(ADMIN_MSISDN, "INVITE +1 415 555 0134 alice")
    invite = wait_text(emu, INVITEE, lambda t: "invited" in t, "the invite")
    emu.inject("throttle", "drop")  # both on the PIN text, one after the other
    texter.send(INVITEE, only(CODE, invite.text))
    pin1 = only(PIN, wait_text(emu, INVITEE, lambda t: "PIN is" in t, "the PIN", FAULT_TIMEOUT).text)
    emu.inject("http500")
    texter.send(INVITEE, "LOGIN")
    pin2 = only(PIN, wait_text(emu, INVITEE, lambda t: "PIN is" in t, "the second PIN", FAULT_TIMEOUT,
                               after=2).text)
    fence(emu, texter)
    pin_texts = [t for t in texts_to(emu, INVITEE) if "PIN is" in t]
    assert len(pin_texts) == 2, pin_texts
    if pin1 != pin2:
        refused(base, "alice", pin1)  # LOGIN replaced it
    assert auth(base, signs_in(base, "alice", pin2)).status_code == 200
    faults = [r.fault for r in emu.requests if r.path == SMS_PATH and r.fault]
    assert sorted(faults) == ["drop", "http500", "throttle"], faults


# ---------------------------------------------------------------------------------------------- 4. receipts


def dlr_fields(text: SentSms, status: str, err_code: str) -> dict[str, str]:
    """An SMS API delivery receipt for a text the emulator accepted."""
    return {"msisdn": text.to, "to": text.from_, "network-code": "310260", "messageId": text.message_id,
            "price": "0.00750000", "status": status, "scts": "2503141510", "err-code": err_code,
            "api-key": "test-key", "client-ref": text.client_ref or "",
            "message-timestamp": "2025-03-14 15:10:02"}


def test_a_failed_invite_shows_in_list(start_serve: Callable[..., Serve], emu: VonageEmulator) -> None:
    serve = start_serve(VONAGE_SIGNATURE_SECRET=SIG_SECRET, VONAGE_SIGNATURE_METHOD="sha256")
    base = serve.base
    texter = Texter(base, "json", "sha256")

    texter.send(ADMIN_MSISDN, "INVITE +1 415 555 0134 alice")
    invite = wait_text(emu, INVITEE, lambda t: "invited" in t, "the invite")
    reply = wait_text(emu, ADMIN_MSISDN, lambda t: t.startswith("Invited alice"), "the INVITE reply")
    assert invite.client_ref and re.fullmatch(r"smsbot-\d+", invite.client_ref), invite.client_ref
    assert "(invited)" in list_reply(emu, texter)

    # Receipts for the admin's reply (delivered) and the invite (accepted, then failed: absent subscriber).
    for text, status, err in ((reply, "delivered", "0"), (invite, "accepted", "0"), (invite, "failed", "3")):
        response = post_sms(base, "form", signed(dlr_fields(text, status, err), "sha256"), "/webhooks/status")
        assert response.status_code in (200, 204), (status, response.status_code, response.text)
    shown = list_reply(emu, texter)
    assert "(invite not delivered)" in shown and "alice" in shown, shown
    # A later "delivered" for the same text (another part, or a late receipt) does not hide the failure.
    response = post_sms(base, "get", signed(dlr_fields(invite, "delivered", "0"), "sha256"), "/webhooks/status")
    assert response.status_code in (200, 204)
    assert "(invite not delivered)" in list_reply(emu, texter)
    # A receipt for a text we never sent changes nothing and is still acknowledged.
    stranger = dataclasses.replace(invite, message_id="0B00000000000000", client_ref="smsbot-99999")
    response = post_sms(base, "form", signed(dlr_fields(stranger, "failed", "9"), "sha256"), "/webhooks/status")
    assert response.status_code in (200, 204)


# ---------------------------------------------------------------------------------------------- 5. multipart


def test_a_multipart_invite_is_reassembled(start_serve: Callable[..., Serve], emu: VonageEmulator) -> None:
    serve = start_serve()
    base = serve.base
    texter = Texter(base, "form")
    pieces = ["INVITE +1 41", "5 555 01", "34 alice"]
    ids = [f"0C0000000000000{i}" for i in range(1, 4)]

    def part(index: int, message_id: str | None = None) -> requests.Response:
        fields = sms_fields(ADMIN_MSISDN, pieces[index - 1], message_id or ids[index - 1], concat="true",
                            **{"concat-ref": "7f", "concat-total": "3", "concat-part": str(index)})
        response = post_sms(base, "form" if index != 2 else "json", fields)
        assert response.status_code in (200, 204), (index, response.status_code, response.text)
        return response

    part(3)
    part(1)
    part(1)  # Vonage retries a part (same messageId)
    part(3, "0C000000000000FF")  # the carrier repeats a part (new messageId)
    fence(emu, texter)
    assert not sent_to(emu, INVITEE), "nothing happens before the last part"
    assert [t for t in texts_to(emu, ADMIN_MSISDN) if not is_help(t)] == [], "no reply to a part"
    part(2)
    invite = wait_text(emu, INVITEE, lambda t: "invited" in t and "alice" in t, "the invite from the whole text")
    only(CODE, invite.text)
    wait_text(emu, ADMIN_MSISDN, lambda t: t.startswith("Invited alice"), "one INVITE reply")
    part(2)  # a retry of the last part after the whole text was handled
    fence(emu, texter)
    assert len(sent_to(emu, INVITEE)) == 1
    assert len([t for t in texts_to(emu, ADMIN_MSISDN) if t.startswith("Invited")]) == 1


# ---------------------------------------------------------------------------------------------- start-up


def test_serve_warns_loudly_when_webhooks_are_not_signed(start_serve: Callable[..., Serve]) -> None:
    serve = start_serve(VONAGE_SIGNATURE_SECRET="")
    serve.proc.terminate(timeout=8)
    warnings = [line for line in serve.proc.stderr().splitlines() if "VONAGE_SIGNATURE_SECRET" in line]
    assert warnings, f"no warning naming VONAGE_SIGNATURE_SECRET on stderr:\n{serve.proc.stderr()}"
    assert any("WARNING" in line for line in warnings), warnings
