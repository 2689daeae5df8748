"""The web face over HTTP: pages that explain themselves, the sign-out notices, error pages for browsers (and plain
answers for machines), times, the favicon, and the dev phone's server side. tests/test_face_browser.py looks at the
same pages in Chromium."""

from __future__ import annotations

import html as html_module
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from smsbot.clock import FakeClock
from smsbot.gateway import FakeGateway
from smsbot.sms import texts
from smsbot.web.appkeys import ROUTES
from smsbot.web.devphone import DevPhones, copyable, username_in

from support.constants import NUMBER, PIN_IS
from support.service import ADMIN, CSRF_INPUT, WebBench

SESSION = "__Host-smsbot_session"
CSRF = "__Host-smsbot_csrf"
ALICE = "+14155550134"
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
NOTICE = re.compile(r'<p class="notice" role="status">([^<]*)</p>')
ENDED = "This device was signed out. Sign in again with a new PIN: text LOGIN to the group's number."


def notice(html: str) -> str | None:
    found = NOTICE.findall(html)
    assert len(found) <= 1
    return html_module.unescape(found[0]) if found else None


def in_site_template(html: str) -> bool:
    return ('<link rel="stylesheet" href="/static/style.css">' in html and '<header class="site">' in html
            and '<link rel="icon" href="/static/favicon.svg"' in html)


async def csrf_of(bench: WebBench, cookies: dict[str, str], path: str = "/") -> tuple[str, dict[str, str]]:
    bench.client.session.cookie_jar.clear()
    page = await bench.client.get(path, cookies=cookies)
    token = CSRF_INPUT.search(await page.text())
    assert token, path
    return token.group(1), {**cookies, **{k: v.value for k, v in page.cookies.items()}}


async def sign_out(bench: WebBench, cookies: dict[str, str], scope: str = "this") -> Any:
    token, jar = await csrf_of(bench, cookies)
    bench.client.session.cookie_jar.clear()
    return await bench.client.post("/logout", data={"csrf_token": token, "scope": scope}, cookies=jar,
                                   allow_redirects=False)


async def new_pin(bench: WebBench) -> str:
    found = PIN_IS.search((await bench.text(ALICE, "LOGIN"))[0][1])
    assert found
    return found.group(1)


# ---------------------------------------------------------------------------------------------- the sign-in page


async def test_the_sign_in_page_says_what_this_is_and_how_to_get_in(bench: WebBench) -> None:
    html = await (await bench.client.get("/login")).text()
    assert "<h1>Sign in to Friends</h1>" in html
    assert "Friends is a private group" in html and "New here?" in html and "Ask one of the group's admins" in html
    # The group's number, as people read it and as a link that opens a new text to it.
    assert html.count('<a href="sms:+14155550199" class="number">+1 415-555-0199</a>') == 2
    assert in_site_template(html)
    assert notice(html) is None


async def test_a_failed_attempt_keeps_the_username(bench: WebBench) -> None:
    await bench.member_with_pin(ALICE, "alice")
    response, _ = await bench.login("alice", "000000")
    html = await response.text()
    assert response.status == 401
    assert re.search(r'<input id="username" name="username"[^>]* value="alice"', html)
    assert re.search(r'<input id="pin" name="pin"[^>]*>', html) and 'value="000000"' not in html, "never the PIN"
    assert 'role="alert" id="login-error">That username and PIN don&#39;t match' in html


async def test_signed_in_the_sign_in_page_says_so(bench: WebBench) -> None:
    pin = await bench.member_with_pin(ALICE, "alice")
    _, cookies = await bench.login("alice", pin)
    bench.client.session.cookie_jar.clear()
    response = await bench.client.get("/login", cookies=cookies, allow_redirects=False)
    html = await response.text()
    assert response.status == 200
    assert '<h1>Signed in as <span id="username">alice</span></h1>' in html
    assert '<a class="button" href="/">' in html
    assert re.search(r'<form method="post" action="/logout"', html) and CSRF_INPUT.search(html)
    assert 'name="pin"' not in html, "no sign-in form"
    assert (await bench.auth(cookies)).status == 200, "looking is not signing out"


# ---------------------------------------------------------------------------------------------- being signed out


async def test_signing_out_here_says_so(bench: WebBench) -> None:
    pin = await bench.member_with_pin(ALICE, "alice")
    _, cookies = await bench.login("alice", pin)
    response = await sign_out(bench, cookies)
    assert response.status == 303 and response.headers["Location"] == "/login?signed_out=this"
    bench.client.session.cookie_jar.clear()
    assert notice(await (await bench.client.get("/login?signed_out=this")).text()) == "You signed out of this device."

    _, cookies = await bench.login("alice", await new_pin(bench))
    response = await sign_out(bench, cookies, "all")
    assert response.status == 303 and response.headers["Location"] == "/login?signed_out=all"
    bench.client.session.cookie_jar.clear()
    assert notice(await (await bench.client.get("/login?signed_out=all")).text()) == "You signed out on every device."
    assert notice(await (await bench.client.get("/login?signed_out=nonsense")).text()) is None


async def test_a_device_signed_out_by_anything_else_hears_the_same_and_no_more(bench: WebBench) -> None:
    """REVOKE, an admin's LOGOUT, the member's LOGOUT by SMS, a sign-out on another device, expiry: the device's
    next visit gets one notice, word for word the same page whatever the cause, and then its cookie is gone."""
    pin = await bench.member_with_pin(ALICE, "alice")
    bench.client.session.cookie_jar.clear()
    form = await bench.client.get("/login")
    browser = {CSRF: form.cookies[CSRF].value}  # one browser's CSRF cookie, so the pages can be compared whole

    async def ended_by(cause: Callable[[dict[str, str]], Any], pin: str) -> tuple[str, str]:
        _, cookies = await bench.login("alice", pin)
        assert (await bench.auth(cookies)).status == 200
        await cause(cookies)
        assert (await bench.auth(cookies)).status == 401
        bench.client.session.cookie_jar.clear()
        home = await bench.client.get("/", cookies={**cookies, **browser}, allow_redirects=False)
        assert home.status == 303 and home.headers["Location"] == "/login"
        page = await bench.client.get("/login", cookies={SESSION: cookies[SESSION], **browser})
        cleared = page.cookies[SESSION]
        assert cleared.value == "" and cleared["max-age"] == "0", "the dead cookie is cleared"
        return await page.text(), page.headers["Content-Type"]

    pages = []
    pages.append(await ended_by(lambda c: bench.text(ADMIN, "LOGOUT alice"), pin))
    pages.append(await ended_by(lambda c: bench.text(ALICE, "LOGOUT"), await new_pin(bench)))

    async def elsewhere(cookies: dict[str, str]) -> None:
        _, other = await bench.login("alice", await new_pin(bench))
        assert (await sign_out(bench, other, "all")).status == 303

    pages.append(await ended_by(elsewhere, await new_pin(bench)))

    async def expire(cookies: dict[str, str]) -> None:
        bench.clock.advance(31 * 86400)

    pages.append(await ended_by(expire, await new_pin(bench)))

    async def revoked(cookies: dict[str, str]) -> None:
        await bench.text(ADMIN, "REVOKE alice")

    pages.append(await ended_by(revoked, await new_pin(bench)))
    assert {notice(html) for html, _ in pages} == {ENDED}
    assert len(set(pages)) == 1, "the same page whatever ended the session"
    for word in ("revoke", "expired", "admin"):
        assert word not in (notice(pages[0][0]) or "").lower()

    bench.client.session.cookie_jar.clear()
    again = await bench.client.get("/login", cookies=browser)
    assert notice(await again.text()) is None, "once the cookie is gone, no notice"


# ---------------------------------------------------------------------------------------------- error pages


async def test_browsers_get_error_pages_in_the_site_template(bench: WebBench) -> None:
    missing = await bench.client.get("/no/such/page", headers=HTML)
    html = await missing.text()
    assert missing.status == 404 and missing.content_type == "text/html"
    assert in_site_template(html) and "<h1>Page not found</h1>" in html and '<a class="button" href="/">' in html
    assert "Content-Security-Policy" in missing.headers

    wrong_method = await bench.client.get("/logout", headers=HTML)
    html = await wrong_method.text()
    assert wrong_method.status == 405 and wrong_method.headers["Allow"] == "POST"
    assert in_site_template(html) and "<h1>That can&#39;t be done here</h1>" in html

    bench.client.session.cookie_jar.clear()
    cross = await bench.client.post("/login", data={"username": "a", "pin": "1"},
                                    headers={**HTML, "Sec-Fetch-Site": "cross-site"})
    html = await cross.text()
    assert cross.status == 403 and in_site_template(html) and "Cross-site request refused." in html


async def test_machines_keep_their_plain_answers(bench: WebBench) -> None:
    bench.client.session.cookie_jar.clear()
    for path, status, body in (("/auth", 401, "Not signed in."), ("/webhooks/nothing", 404, "404: Not Found"),
                               ("/auth/nothing", 404, "404: Not Found")):
        for headers in (HTML, {"Accept": "*/*"}):
            response = await bench.client.get(path, headers=headers, allow_redirects=False)
            assert (response.status, await response.text()) == (status, body), (path, headers)
    forward = await bench.client.get("/auth/forward", headers={"Accept": "application/json"})
    assert (forward.status, await forward.text()) == (401, "Not signed in.")
    health = await bench.client.get("/healthz", headers=HTML)
    assert health.status == 200 and await health.json() == {"ok": True}
    script = await bench.client.get("/no/such/page", headers={"Accept": "*/*"})
    assert (script.status, script.content_type, await script.text()) == (404, "text/plain", "404: Not Found")
    style = await bench.client.get("/static/nothing.css", headers={"Accept": "text/css,*/*;q=0.1"})
    assert style.status == 404 and style.content_type != "text/html"


async def test_too_many_sign_ins_is_a_page_that_keeps_retry_after(make_bench: Callable[..., Any]) -> None:
    bench: WebBench = await make_bench(SMSBOT_LOGIN_FAILURES_PER_MINUTE="1")
    await bench.login("nobody", "000000")
    bench.client.session.cookie_jar.clear()
    form = await bench.client.get("/login")
    token = CSRF_INPUT.search(await form.text())
    assert token
    fields = {"username": "nobody", "pin": "000000", "csrf_token": token.group(1)}
    # The form's own CSRF cookie goes with it: a form that fails the CSRF check is refused before the limit.
    cookies = {k: v.value for k, v in form.cookies.items()}
    page = await bench.client.post("/login", data=fields, headers=HTML, allow_redirects=False, cookies=cookies)
    html = await page.text()
    assert page.status == 429 and 1 <= int(page.headers["Retry-After"]) <= 60
    assert in_site_template(html) and "<h1>Too many tries</h1>" in html
    assert re.search(r"Wait \d+ seconds?, then try again\.", html) and '<a class="button" href="/login">' in html
    script = await bench.client.post("/login", data=fields, allow_redirects=False, headers={"Accept": "*/*"},
                                     cookies=cookies)
    assert script.status == 429 and "Retry-After" in script.headers
    assert await script.text() == "Too many sign-in attempts from here. Try again in a minute."


async def test_a_crash_is_a_500_page_for_a_browser_and_logged(make_settings: Callable[..., Any],
                                                              aiohttp_client: Callable[..., Any],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    from smsbot.web import create_app

    app = create_app(make_settings(dev=False), gateway=FakeGateway(NUMBER), clock=FakeClock(),
                     run_worker=False)

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    app[ROUTES].get(app, "/broken", broken)  # as every route is registered: wrapped for its audience
    client = await aiohttp_client(app)
    with caplog.at_level(logging.ERROR):
        page = await client.get("/broken", headers=HTML)
        html = await page.text()
    assert page.status == 500 and in_site_template(html) and "<h1>Something went wrong</h1>" in html
    assert "a bug" not in html, "nothing of the error is shown"
    assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records), "but it is logged"
    plain = await client.get("/broken", headers={"Accept": "*/*"})
    assert plain.status == 500 and plain.content_type == "text/plain"
    assert "a bug" not in await plain.text() and plain.headers["X-Content-Type-Options"] == "nosniff"


async def test_a_favicon_is_served(bench: WebBench) -> None:
    for path in ("/static/favicon.svg", "/favicon.ico"):
        response = await bench.client.get(path)
        assert response.status == 200 and response.content_type == "image/svg+xml", path
        assert (await response.text()).startswith("<svg ")


# ---------------------------------------------------------------------------------------------- times


async def test_times_are_for_machines_and_people(bench: WebBench) -> None:
    pin = await bench.member_with_pin(ALICE, "alice")
    _, cookies = await bench.login("alice", pin)
    bench.clock.advance(3 * 3600 + 60)
    bench.client.session.cookie_jar.clear()
    html = await (await bench.client.get("/", cookies=cookies)).text()
    times = re.findall(r'<time datetime="(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)" title="(\d+ \w{3} \d{4}, \d\d:\d\d UTC)">'
                       r"([^<]+)</time>", html)
    assert [t[2] for t in times] == ["3 h ago", "just now"], "signed in 3 h ago, last seen now (this visit)"
    assert '<script src="/static/face.js" defer></script>' in html  # which writes them in the reader's time zone


# ---------------------------------------------------------------------------------------------- the dev phone


def test_the_dev_phone_reads_names_and_codes_from_the_real_texts() -> None:
    invite_as = texts.INVITE_AS.format(group="Dev Group", username="alice", code="4YWVNK", hours=72)
    invite = texts.INVITE.format(group="Dev Group", code="4YWVNK", hours=72)
    pin = texts.PIN.format(group="Dev Group", pin="012345", username="bob_2", url="http://127.0.0.1:8080",
                           minutes=10)
    confirm = texts.CONFIRM.format(what="Invite +14155550134 as alice", code="0423", minutes=10)
    assert (username_in(invite_as), username_in(invite), username_in(pin), username_in(confirm)) == \
        ("alice", None, "bob_2", None)
    assert copyable(invite_as) == copyable(invite) == [{"what": "code", "value": "4YWVNK"}]
    assert copyable(pin) == [{"what": "PIN", "value": "012345"}]
    assert copyable(confirm) == [{"what": "reply", "value": "YES 0423"}]
    assert copyable(texts.WRONG_CODE) == [] and copyable("Your PIN is 123456 (a text smsbot never sends)") == []


def test_dev_phones_keep_their_order_and_learn_names() -> None:
    phones = DevPhones()
    phones.add(ADMIN, admin=True)
    assert phones.add("+14155550177") == (phones.phones["+14155550177"], True)
    phones.record("+14155550134", "out", texts.INVITE_AS.format(group="G", username="alice", code="4YWVNK",
                                                                  hours=72))
    phones.record(ADMIN, "in", "INVITE +1 415 555 0134 alice")
    assert phones.add("+14155550177")[1] is False
    assert [(p["number"], p["label"], p["shown"]) for p in phones.listed()] == [
        (ADMIN, "Admin", "+1 415-555-0100"), ("+14155550177", "Phone", "+1 415-555-0177"),
        ("+14155550134", "alice", "+1 415-555-0134")]
    assert [t["copy"] for t in phones.since(0)] == [[{"what": "code", "value": "4YWVNK"}], []], \
        "only texts to the phone get copy buttons"


async def test_the_dev_phone_adds_phones_and_lists_them(make_settings: Callable[..., Any],
                                                       aiohttp_client: Callable[..., Any]) -> None:
    from smsbot.web import create_app
    from smsbot.web.appkeys import OUTBOX

    app = create_app(make_settings(dev=True), gateway=FakeGateway(NUMBER), clock=FakeClock(),
                     run_worker=False)
    client = await aiohttp_client(app)
    added = await client.post("/dev/phone/phones", json={"number": "(415) 555-0177"})
    assert added.status == 200
    assert await added.json() == {"number": "+14155550177", "shown": "+1 415-555-0177", "label": "Phone",
                                  "admin": False, "username": None, "new": True}
    again = await client.post("/dev/phone/phones", json={"number": "+1 415 555 0177"})
    assert (await again.json())["new"] is False
    form = await client.post("/dev/phone/phones", data={"number": "+1 415 555 0188"}, allow_redirects=False)
    assert form.status == 303 and form.headers["Location"] == "/dev/phone"
    for bad in ({"number": "call me"}, {"number": 5}, ["+14155550177"]):
        refused = await client.post("/dev/phone/phones", json=bad)
        assert refused.status == 400 and "error" in await refused.json(), bad
    sent = await client.post("/dev/phone/send", json={"from": ADMIN, "text": "INVITE +1 415 555 0134 alice"})
    assert sent.status == 200
    await app[OUTBOX].drain_once()
    listed = await (await client.get("/dev/phone/texts?after=0")).json()
    assert [(p["number"], p["label"]) for p in listed["phones"]] == [
        (ADMIN, "Admin"), ("+14155550177", "Phone"), ("+14155550188", "Phone"), ("+14155550134", "alice")]
    invite = [t for t in listed["texts"] if t["number"] == "+14155550134"]
    assert len(invite) == 1 and invite[0]["copy"][0]["what"] == "code"
    page = await (await client.get("/dev/phone")).text()
    assert in_site_template(page) and '<label for="new-number">Add a phone</label>' in page
