"""The README's reverse-proxy configurations, run as they are: real nginx and real Caddy (Debian's packages) in front
of `smsbot serve` (talking to the Vonage TLS emulator) and a tiny protected tool, all on free loopback ports.

deploy/nginx.conf and deploy/Caddyfile are the files the README shows; each test changes only their ports (and, for
Caddy, the site address), wraps them in what a test run needs (temporary paths, no admin API), and drives the stack
over real HTTP: the way to sign-in and back, the user the tool sees, REVOKE, scripts, hostile `rd` values and forged
forwarding headers. One test does the nginx round trip in Debian's Chromium.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import http.server
import itertools
import os
import pathlib
import re
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests

from support.cases import HOSTILE_RD
from support.constants import ADMIN_MSISDN, NUMBER
from support.procs import (
    CODE,
    PIN,
    SmsbotProcess,
    free_port,
    only,
    sent_to,
    serve_env,
    start_smsbot,
    wait_text,
)
from support.proxies import BINARIES, COMMANDS, ProxyProcess, client
from support.service import CSRF_INPUT
from support.vonage_emulator import VonageEmulator

pytestmark = pytest.mark.slow

SECRET = "proxies-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
MEMBER = "14155550134"
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
SCRIPT = {"Accept": "*/*"}
IDENTITY = ("Remote-User", "Remote-Groups", "X-Auth-User")
RD_INPUT = re.compile(r'name="rd" value="([^"]*)"')
WAIT_MS = 10_000
FAILURES_PER_MINUTE = 5

_ids = itertools.count(1)


# ---------------------------------------------------------------------------------------------- the protected tool


class Tool:
    """The protected tool: a tiny HTTP server that records, for every request, the path and the identity headers it
    was given (every copy of each), and answers with a page naming the user."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        tool = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen: dict[str, Any] = {"method": self.command, "path": self.path}
                seen.update({name: self.headers.get_all(name, []) for name in IDENTITY})
                seen["look-alikes"] = sorted(name for name in self.headers if "_" in name)  # Remote_User etc.
                tool.seen.append(seen)
                user = html.escape(", ".join(seen["Remote-User"]))
                body = f"<!doctype html><title>Wiki</title><h1>Wiki for {user}</h1>".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Tool:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


# ---------------------------------------------------------------------------------------------- the stack


@dataclasses.dataclass
class Stack:
    """A proxy in front of `smsbot serve` and the tool; `base` is the proxy's URL, smsbot's SMSBOT_PUBLIC_URL."""

    kind: str
    base: str
    emu: VonageEmulator
    tool: Tool
    smsbot: SmsbotProcess


@contextlib.contextmanager
def running_stack(kind: str, tmp_path: pathlib.Path, emu: VonageEmulator) -> Iterator[Stack]:
    binary = BINARIES[kind]
    if not os.path.exists(binary):
        pytest.skip(f"{binary} is missing (install Debian's {kind} package; .ci/run does)")
    with Tool() as tool, contextlib.ExitStack() as stops:
        for attempt in range(3):  # the proxy's port is picked before smsbot starts (it is the public URL): retry
            port = free_port()     # if something else took it meanwhile
            workdir = tmp_path / f"{kind}-{attempt}"
            workdir.mkdir()
            db = workdir / "smsbot.db"

            def env(_smsbot_port: int, port: int = port, db: pathlib.Path = db) -> dict[str, str]:
                return serve_env(emu, port, db, SECRET, NUMBER, SMSBOT_GROUP_NAME="Friends",
                                 SMSBOT_TRUSTED_PROXIES="127.0.0.1", SMSBOT_PIN_CAP_HOUR="100",
                                 SMSBOT_PIN_CAP_DAY="100",
                                 SMSBOT_LOGIN_FAILURES_PER_MINUTE=str(FAILURES_PER_MINUTE))

            smsbot, smsbot_base = start_smsbot("serve", workdir, env, workdir / "smsbot.log",
                                               extra_args=["--host", "127.0.0.1"])
            smsbot_port = int(urlsplit(smsbot_base).port or 0)
            proxy = ProxyProcess(kind, workdir, port, COMMANDS[kind](workdir, port, smsbot_port, tool.port))
            try:
                proxy.start()
                proxy.wait_ready()
            except BaseException as exc:
                proxy.stop()
                smsbot.stop()
                if isinstance(exc, AssertionError) and "address already in use" in proxy.output().lower() \
                        and attempt < 2:
                    continue
                raise
            stops.callback(smsbot.stop)
            stops.callback(proxy.stop)  # the proxy first (callbacks run last in, first out)
            yield Stack(kind, proxy.base, emu, tool, smsbot)
            return


@pytest.fixture(params=["nginx", "caddy"])
def stack(request: pytest.FixtureRequest, tmp_path: pathlib.Path, emu: VonageEmulator) -> Iterator[Stack]:
    with running_stack(request.param, tmp_path, emu) as running:
        yield running


@pytest.fixture
def nginx(tmp_path: pathlib.Path, emu: VonageEmulator) -> Iterator[Stack]:
    with running_stack("nginx", tmp_path, emu) as running:
        yield running


class SourceAddress(requests.adapters.HTTPAdapter):
    """Connections from a given local address (any of 127.0.0.0/8 works on loopback): another client."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs, source_address=(self.address, 0))


def client_from(address: str, headers: dict[str, str]) -> requests.Session:
    session = client(headers)
    session.mount("http://", SourceAddress(address))
    return session


# ---------------------------------------------------------------------------------------------- texts and sign-in


def text_in(stack: Stack, msisdn: str, text: str) -> None:
    """One inbound SMS API webhook, through the proxy as Vonage would reach smsbot."""
    fields = {"msisdn": msisdn, "to": NUMBER, "messageId": f"0B00000{next(_ids):09d}", "text": text, "type": "text",
              "keyword": text.split()[0].upper(), "message-timestamp": "2025-03-14 15:09:26", "api-key": "test-key"}
    with client({}) as direct:
        response = direct.post(f"{stack.base}/webhooks/inbound", data=fields, timeout=10)
    assert response.status_code in (200, 204), (text, response.status_code, response.text)


def invite(stack: Stack, username: str = "alice") -> str:
    """The admin invites MEMBER as `username`, who replies with the code: returns the PIN they get."""
    text_in(stack, ADMIN_MSISDN, f"INVITE +{MEMBER} {username}")
    code = only(CODE, wait_text(stack.emu, MEMBER, lambda t: "invited" in t, "the invite").text)
    before = len(sent_to(stack.emu, MEMBER))
    text_in(stack, MEMBER, code)
    return only(PIN, wait_text(stack.emu, MEMBER, lambda t: "PIN is" in t, "the PIN", after=before).text)


def fresh_pin(stack: Stack) -> str:
    """The member texts LOGIN: returns the new PIN."""
    before = len(sent_to(stack.emu, MEMBER))
    text_in(stack, MEMBER, "LOGIN")
    return only(PIN, wait_text(stack.emu, MEMBER, lambda t: "PIN is" in t, "a fresh PIN", after=before).text)


def login_form(browser: requests.Session, url: str) -> tuple[str, str | None]:
    """GET a sign-in page: its CSRF token and the `rd` it carries along (None when it carries none)."""
    form = browser.get(url, allow_redirects=False, timeout=10)
    assert form.status_code == 200, (url, form.status_code, form.headers.get("Location"), form.text[:200])
    token = CSRF_INPUT.search(form.text)
    assert token, "the sign-in form has a CSRF token"
    rd = RD_INPUT.search(form.text)
    return token.group(1), html.unescape(rd.group(1)) if rd else None


def sign_in(stack: Stack, browser: requests.Session, pin: str, token: str, rd: str | None,
            username: str = "alice") -> requests.Response:
    fields = {"username": username, "pin": pin, "csrf_token": token, **({"rd": rd} if rd is not None else {})}
    return browser.post(f"{stack.base}/login", data=fields, allow_redirects=False, timeout=10)


def rd_of(location: str) -> str:
    """The `rd` of a /login?rd=... URL."""
    values = parse_qs(urlsplit(location).query).get("rd", [])
    assert len(values) == 1, location
    return values[0]


# ---------------------------------------------------------------------------------------------- tests


def test_a_browser_signs_in_through_the_proxy_and_comes_back(stack: Stack) -> None:
    base, tool = stack.base, stack.tool
    page = f"{base}/wiki/page?x=1&y=a%20b&z=%C3%A9+%26"  # a query that only survives percent-encoded
    browser = client(BROWSER)

    # Not signed in, a browser asking for the page is sent to sign in, with the way back in rd.
    refused = browser.get(page, allow_redirects=False, timeout=10)
    assert refused.status_code == 302, (refused.status_code, refused.text[:200])
    assert refused.headers["Location"] == f"{base}/login?rd={quote(page, safe='')}"
    # A script, or a browser posting, gets 401; none of it reaches the tool.
    assert client(SCRIPT).get(page, allow_redirects=False, timeout=10).status_code == 401
    assert browser.post(page, data={"a": "b"}, allow_redirects=False, timeout=10).status_code == 401
    assert tool.seen == []

    # The sign-in form carries rd along; signing in goes straight back to the page.
    token, rd = login_form(browser, refused.headers["Location"])
    assert rd == page
    signed_in = sign_in(stack, browser, invite(stack), token, rd)
    assert signed_in.status_code == 303, (signed_in.status_code, signed_in.text[:300])
    assert signed_in.headers["Location"] == page

    # The tool gets the request, with the member's name and groups; copies the client sends are not passed on.
    shown = browser.get(signed_in.headers["Location"], allow_redirects=False, timeout=10)
    assert shown.status_code == 200 and "Wiki for alice" in shown.text, (shown.status_code, shown.text[:200])
    assert tool.seen == [{"method": "GET", "path": "/wiki/page?x=1&y=a%20b&z=%C3%A9+%26", "Remote-User": ["alice"],
                          "Remote-Groups": ["members"], "X-Auth-User": ["alice"], "look-alikes": []}]
    forged = browser.get(f"{base}/wiki/", headers={"Remote-User": "bob", "Remote-Groups": "members,admins",
                                                   "X-Auth-User": "bob", "Remote_User": "bob",
                                                   "REMOTE_GROUPS": "admins", "x_auth_user": "bob"},
                         allow_redirects=False, timeout=10)
    assert forged.status_code == 200
    assert tool.seen[-1] == {"method": "GET", "path": "/wiki/", "Remote-User": ["alice"],
                             "Remote-Groups": ["members"], "X-Auth-User": ["alice"], "look-alikes": []}
    # Signed in, the sign-in page sends the browser straight back too.
    again = browser.get(refused.headers["Location"], allow_redirects=False, timeout=10)
    assert (again.status_code, again.headers.get("Location")) == (303, page)

    # The admin revokes alice: her next request is refused (a browser is sent to sign in again).
    seen = len(tool.seen)
    text_in(stack, ADMIN_MSISDN, "REVOKE alice")
    revoked = browser.get(page, allow_redirects=False, timeout=10)
    assert revoked.status_code == 302 and revoked.headers["Location"] == refused.headers["Location"]
    as_script = browser.get(page, headers=SCRIPT, allow_redirects=False, timeout=10)
    assert as_script.status_code == 401
    assert len(tool.seen) == seen, "nothing reaches the tool after REVOKE"


def rd_table(base: str) -> list[tuple[str, str, str]]:
    """test_gate's hostile `rd` values, with its public host replaced by this stack's, so that each is hostile for
    its stated reason here too (each expects "/"), and three allowed ones as controls (each expects itself)."""
    host = urlsplit(base).hostname or ""
    hostile = [(rd.replace("group.example.org", host), why, "/") for rd, why in HOSTILE_RD]
    allowed = [("/wiki/page?x=1&y=%20#top", "control: a path", "/wiki/page?x=1&y=%20#top"),
               (f"{base}/wiki/", "control: the public URL", f"{base}/wiki/"),
               (f"http://{host.upper()}:8443/x", "control: the public host on another port",
                f"http://{host.upper()}:8443/x")]
    return hostile + allowed


def test_hostile_rd_values_never_send_the_browser_off_site(stack: Stack) -> None:
    base = stack.base
    member = client(BROWSER)  # stays signed in: visits /login?rd=... signed in
    token, _ = login_form(member, f"{base}/login")
    assert sign_in(stack, member, invite(stack), token, None).status_code == 303

    rows: list[tuple[str, str, tuple[str, str, str], tuple[str, str, str]]] = []
    for rd, why, target in rd_table(base):
        url = f"{base}/login?rd={quote(rd, safe='')}"  # through the proxy, as a link would carry it
        # Signed in: only an allowed rd redirects at once; otherwise the form is shown.
        visited = member.get(url, allow_redirects=False, timeout=10)
        # Not signed in: the form carries only an allowed rd along; signing in with rd posted anyway (a tampered
        # form) goes there only when allowed, else home.
        browser = client(BROWSER)
        token, carried = login_form(browser, url)
        answer = sign_in(stack, browser, fresh_pin(stack), token, rd)
        got = (f"{visited.status_code} {visited.headers.get('Location', '')}".strip(), repr(carried),
               f"{answer.status_code} {answer.headers.get('Location')}")
        expected = ("200", "None", "303 /") if target == "/" else (f"303 {target}", repr(rd), f"303 {target}")
        rows.append((repr(rd)[:60], why, got, expected))
    print(f"rd through {stack.kind} | why | signed-in GET /login?rd= | rd kept by the form | POST /login")
    for rd, why, got, _ in rows:
        print(" | ".join((rd, why, *got)))
    wrong = [(rd, why, got, expected) for rd, why, got, expected in rows if got != expected]
    assert wrong == []


def test_the_sign_in_limit_counts_each_client_behind_the_proxy(stack: Stack) -> None:
    """smsbot sees every request come from the proxy; with the proxy's X-Forwarded-For and SMSBOT_TRUSTED_PROXIES
    it limits failed sign-ins per real client (other loopback addresses here), which a forged X-Forwarded-For
    does not escape."""
    base = stack.base
    rotating = client_from("127.0.0.2", BROWSER)
    for i in range(FAILURES_PER_MINUTE):
        token, _ = login_form(rotating, f"{base}/login")
        failed = rotating.post(f"{base}/login", data={"username": "nobody", "pin": "000000", "csrf_token": token},
                               headers={"X-Forwarded-For": f"203.0.113.{i}"}, allow_redirects=False, timeout=10)
        assert failed.status_code == 401, (i, failed.status_code, failed.text[:200])
    token, _ = login_form(rotating, f"{base}/login")
    limited = rotating.post(f"{base}/login", data={"username": "nobody", "pin": "000000", "csrf_token": token},
                            headers={"X-Forwarded-For": "203.0.113.99"}, allow_redirects=False, timeout=10)
    assert limited.status_code == 429, (limited.status_code, limited.text[:200])

    other = client_from("127.0.0.3", BROWSER)
    token, _ = login_form(other, f"{base}/login")
    own_count = other.post(f"{base}/login", data={"username": "nobody", "pin": "000000", "csrf_token": token},
                           allow_redirects=False, timeout=10)
    assert own_count.status_code == 401, "another client is not limited by the first one's failures"


def test_forged_forwarding_headers_do_not_change_the_way_back(stack: Stack) -> None:
    base = stack.base
    page = f"{base}/wiki/?a=1"
    forged = client({**BROWSER, "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
                     "X-Forwarded-Uri": "//evil.example/", "X-Forwarded-Method": "GET"})
    refused = forged.get(page, allow_redirects=False, timeout=10)
    assert refused.status_code == 302
    assert refused.headers["Location"] == f"{base}/login?rd={quote(page, safe='')}"

    # Another Host header: nginx names it in rd (the sign-in form then drops it); Caddy serves no such site.
    other_host = client({**BROWSER, "Host": "evil.example"}).get(page, allow_redirects=False, timeout=10)
    assert stack.tool.seen == []
    location = other_host.headers.get("Location")
    if location is not None:
        assert location.startswith(f"{base}/login?"), location
        _, carried = login_form(client(BROWSER), location)
        assert carried is None, f"the sign-in form kept {rd_of(location)!r}"


# ---------------------------------------------------------------------------------------------- in Chromium


def test_chromium_signs_in_through_nginx(nginx: Stack, browser: Any) -> None:
    from playwright.sync_api import expect

    base = nginx.base
    pin = invite(nginx)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(f"{base}/wiki/")
        page.wait_for_url(f"{base}/login?rd={quote(base + '/wiki/', safe='')}")
        page.get_by_label("Username").fill("alice")
        page.get_by_label("PIN").fill(pin)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{base}/wiki/")
        expect(page.locator("h1")).to_have_text("Wiki for alice", timeout=WAIT_MS)
        assert nginx.tool.seen[-1]["Remote-User"] == ["alice"]
    finally:
        context.close()
