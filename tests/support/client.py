"""What a client does to a running `smsbot serve`: texts in by Vonage's inbound webhook (signed as Vonage signs
them, when asked), a browser's sign-in, a proxy's /auth check, and a member made from scratch."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import time
import uuid

import requests

from .constants import ADMIN_MSISDN, CODE, NUMBER, PIN, SIG_SECRET
from .procs import SESSION_COOKIE, only, sent_to, wait_text
from .service import CSRF_INPUT
from .vonage_emulator import VonageEmulator

_ids = itertools.count(1)


def signing_string(params: dict[str, str]) -> str:
    """Vonage: drop `sig`, sort by key, replace `&` and `=` in values by `_`, concatenate `&key=value`."""
    return "".join(f"&{key}={params[key].replace('&', '_').replace('=', '_')}" for key in sorted(params)
                   if key != "sig")


def vonage_sig(params: dict[str, str], secret: str, method: str) -> str:
    text = signing_string(params).encode()
    if method == "md5hash":  # md5(string + secret), the secret appended directly
        return hashlib.md5(text + secret.encode()).hexdigest()
    return hmac.new(secret.encode(), text, getattr(hashlib, method)).hexdigest()


def signed(params: dict[str, str], method: str, *, secret: str = SIG_SECRET, timestamp: float | None = None,
           upper: bool = False) -> dict[str, str]:
    """`params` as Vonage signs them: with its `timestamp` and `nonce`, then `sig`."""
    stamped = {**params, "timestamp": str(int(time.time() if timestamp is None else timestamp)),
               "nonce": str(uuid.uuid4())}
    sig = vonage_sig(stamped, secret, method)
    return {**stamped, "sig": sig.upper() if upper else sig}


def webhook_fields(msisdn: str, text: str, message_id: str | None = None) -> dict[str, str]:
    """The fields of an SMS API inbound webhook, as Vonage sends them."""
    words = text.split()
    return {
        "msisdn": msisdn,
        "to": NUMBER,
        "messageId": message_id or f"0A00000{next(_ids):09d}",
        "text": text,
        "type": "text",
        "keyword": words[0].upper() if words else "",
        "message-timestamp": "2025-03-14 15:09:26",
        "api-key": "test-key",
    }


def post_webhook(http: requests.Session, base: str, how: str, fields: dict[str, str],
                 path: str = "/webhooks/inbound") -> requests.Response:
    """Post `fields` to the webhook at `path` as the SMS API does: a GET query string, a form or JSON."""
    url = f"{base}{path}"
    if how == "get":
        return http.get(url, params=fields, timeout=10)
    if how == "form":
        return http.post(url, data=fields, timeout=10)
    if how == "json":
        return http.post(url, json=fields, timeout=10)
    raise ValueError(how)


def text_in(http: requests.Session, base: str, how: str, msisdn: str, text: str,
            message_id: str | None = None) -> requests.Response:
    """One inbound text; the service must acknowledge it with 200 or 204."""
    response = post_webhook(http, base, how, webhook_fields(msisdn, text, message_id))
    assert response.status_code in (200, 204), (how, text, response.status_code, response.text)
    return response


def login(http: requests.Session, base: str, username: str, pin: str) -> requests.Response:
    """Sign in as a browser does: GET the form (CSRF cookie + hidden token), POST it back."""
    form = http.get(f"{base}/login", timeout=10)
    assert form.status_code == 200
    token = CSRF_INPUT.search(form.text)
    assert token, "the login form carries a hidden csrf_token"
    assert 'name="username"' in form.text and 'name="pin"' in form.text
    csrf_cookies = {c.name: c.value or "" for c in form.cookies}
    assert csrf_cookies, "the login form sets its CSRF cookie"
    assert SESSION_COOKIE not in csrf_cookies, "no session cookie before login"
    return http.post(f"{base}/login", data={"username": username, "pin": pin, "csrf_token": token.group(1)},
                     cookies=csrf_cookies, allow_redirects=False, timeout=10)


def auth(http: requests.Session, base: str, session_cookie: str | None) -> requests.Response:
    cookies = {SESSION_COOKIE: session_cookie} if session_cookie else {}
    return http.get(f"{base}/auth", cookies=cookies, allow_redirects=False, timeout=10)


def new_member(emu: VonageEmulator, http: requests.Session, base: str, msisdn: str, username: str) -> str:
    """The admin invites `msisdn` (SMSBOT_CONFIRM=none), it replies with the code and signs in with its PIN: the
    session cookie."""
    before = len(sent_to(emu, msisdn))
    text_in(http, base, "form", ADMIN_MSISDN, f"INVITE +{msisdn} {username}")
    code = only(CODE, wait_text(emu, msisdn, lambda t: "invited" in t, "the invite", after=before).text)
    text_in(http, base, "form", msisdn, code)
    pin = only(PIN, wait_text(emu, msisdn, lambda t: "PIN is" in t, "the PIN", after=before).text)
    signed_in = login(http, base, username, pin)
    assert signed_in.status_code == 303, signed_in.text
    cookie = signed_in.cookies.get(SESSION_COOKIE)
    assert cookie, "signed in: a session cookie"
    http.cookies.clear()
    return cookie
