"""The web face over real HTTP: login, CSRF, cookies, sessions, forward auth, logout, health."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable

from smsbot.keys import token_hash
from smsbot.settings import Settings
from smsbot.web.app import create_app
from smsbot.web.appkeys import ROUTES, SETTINGS
from smsbot.web.routes import FALLBACK, Audience

from support.service import ADMIN, CSRF_INPUT, WebBench

SESSION = "__Host-smsbot_session"
CSRF = "__Host-smsbot_csrf"
ALICE = "+14155550134"
BOB = "+14155550135"


async def test_login_page_works_on_a_phone_without_javascript(bench: WebBench) -> None:
    response = await bench.client.get("/login")
    html = await response.text()
    assert response.status == 200
    assert 'name="username"' in html and 'name="pin"' in html
    assert 'inputmode="numeric"' in html and 'autocomplete="one-time-code"' in html
    assert CSRF_INPUT.search(html)
    assert '<meta name="viewport"' in html
    # Scripts only add touches (local times, a busy button): each is a file of ours, none is inline.
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", html, re.S)
    assert scripts and all(body.strip() == "" for body in scripts)
    assert re.findall(r"<script ([^>]*)>", html) == ['src="/static/face.js" defer']
    assert "<form method=\"post\" action=\"/login\"" in html


async def test_login_sets_a_secure_host_cookie_and_auth_answers(bench: WebBench) -> None:
    pin = await bench.member_with_pin(ALICE, "alice")
    response, cookies = await bench.login("ALICE", pin)
    assert response.status == 303 and response.headers["Location"] == "/"
    header = next(v for v in response.headers.getall("Set-Cookie") if v.startswith(SESSION))
    flags = {part.strip().lower() for part in header.split(";")}
    assert {"httponly", "secure", "path=/", "samesite=lax"} <= flags
    assert not any(f.startswith("domain") for f in flags)
    token = cookies[SESSION]
    assert len(token) >= 43  # 256 random bits, url-safe
    auth = await bench.auth({SESSION: token})
    assert auth.status == 200 and auth.headers["X-Auth-User"] == "alice"
    home = await bench.client.get("/", cookies={SESSION: token})
    assert "Signed in as" in await home.text() and "alice" in await home.text()


async def test_every_login_failure_looks_the_same(bench: WebBench) -> None:
    pin = await bench.member_with_pin(ALICE, "alice")
    wrong = f"{(int(pin) + 1) % 1000000:06d}"
    bench.client.session.cookie_jar.clear()
    form = await bench.client.get("/login")
    token = CSRF_INPUT.search(await form.text())
    assert token
    browser = {CSRF: form.cookies[CSRF].value}

    async def attempt(username: str, candidate: str) -> tuple[int, str, dict[str, str]]:
        bench.client.session.cookie_jar.clear()
        r = await bench.client.post("/login", data={"username": username, "pin": candidate,
                                                     "csrf_token": token.group(1)},
                                    cookies=browser, allow_redirects=False)
        headers = {k: v for k, v in r.headers.items() if k not in ("Date", "Content-Length")}
        # The page keeps the username the visitor typed; apart from that echo, every failure is the same.
        body = (await r.text()).replace(f'value="{username}"', 'value="(typed)"')
        assert r.status != 401 or 'value="(typed)"' in body
        return r.status, body, headers

    failures = [await attempt("nobody", pin), await attempt("alice", wrong), await attempt("alice", "abc")]
    assert {f[0] for f in failures} == {401}
    assert len({f[1] for f in failures}) == 1, "same body"
    assert all(f[2] == failures[0][2] for f in failures), "same headers"
    ok = await attempt("alice", pin)
    assert ok[0] == 303
    used = await attempt("alice", pin)
    assert used[:2] == failures[0][:2]


async def test_pin_dies_after_five_wrong_tries_and_expires(bench: WebBench) -> None:
    pin = await bench.member_with_pin(ALICE, "alice")
    wrong = f"{(int(pin) + 1) % 1000000:06d}"
    for _ in range(5):
        response, _ = await bench.login("alice", wrong)
        assert response.status == 401
    dead, _ = await bench.login("alice", pin)
    assert dead.status == 401
    out = await bench.text(ALICE, "LOGIN")
    fresh = out[0][1].split("PIN is ")[1][:6]
    bench.clock.advance(10 * 60 + 1)
    expired, _ = await bench.login("alice", fresh)
    assert expired.status == 401


async def test_login_without_the_csrf_token_is_refused_and_keeps_the_pin(bench: WebBench) -> None:
    pin = await bench.member_with_pin(ALICE, "alice")
    bench.client.session.cookie_jar.clear()
    forged = await bench.client.post("/login", data={"username": "alice", "pin": pin}, allow_redirects=False)
    assert forged.status == 403
    cross = await bench.client.post("/login", data={"username": "alice", "pin": pin, "csrf_token": "x"},
                                    headers={"Origin": "https://evil.example"}, allow_redirects=False)
    assert cross.status == 403
    response, _ = await bench.login("alice", pin, **{"Sec-Fetch-Site": "cross-site"})
    assert response.status == 403
    response, _ = await bench.login("alice", pin)
    assert response.status == 303, "the refused attempts did not use up the PIN"


async def test_session_fixation_is_impossible(bench: WebBench) -> None:
    """Django's test: a cookie set before login, or planted, never becomes an authenticated session."""
    pin = await bench.member_with_pin(ALICE, "alice")
    planted = "attacker-chosen-value-0123456789abcdefghijkl"
    bench.client.session.cookie_jar.clear()
    form = await bench.client.get("/login", cookies={SESSION: planted})
    token = CSRF_INPUT.search(await form.text())
    assert token
    csrf_before = form.cookies[CSRF].value
    response = await bench.client.post(
        "/login", data={"username": "alice", "pin": pin, "csrf_token": token.group(1)},
        cookies={SESSION: planted, CSRF: csrf_before}, allow_redirects=False)
    assert response.status == 303
    issued = response.cookies[SESSION].value
    assert issued != planted
    assert response.cookies[CSRF].value != csrf_before, "the CSRF nonce rotates at login"
    assert (await bench.auth({SESSION: planted})).status == 401
    assert (await bench.auth({SESSION: issued})).status == 200


async def test_each_device_has_its_own_session_and_logout_ends_only_one(bench: WebBench) -> None:
    pin = await bench.member_with_pin(ALICE, "alice")
    _, phone_cookies = await bench.login("alice", pin)
    out = await bench.text(ALICE, "LOGIN")
    second = out[0][1].split("PIN is ")[1][:6]
    _, laptop_cookies = await bench.login("alice", second)
    assert phone_cookies[SESSION] != laptop_cookies[SESSION]
    home = await bench.client.get("/", cookies=laptop_cookies)
    assert (await home.text()).count("<li ") == 2
    token = CSRF_INPUT.search(await home.text())
    assert token
    bench.client.session.cookie_jar.clear()
    logout = await bench.client.post("/logout", data={"csrf_token": token.group(1)}, cookies=laptop_cookies,
                                     allow_redirects=False)
    assert logout.status == 303
    assert (await bench.auth({SESSION: laptop_cookies[SESSION]})).status == 401, "a replayed cookie is refused"
    assert (await bench.auth({SESSION: phone_cookies[SESSION]})).status == 200


async def test_logout_refuses_a_wrong_token_and_a_cross_site_post(bench: WebBench) -> None:
    pin = await bench.member_with_pin(ALICE, "alice")
    _, cookies = await bench.login("alice", pin)
    bench.client.session.cookie_jar.clear()
    wrong = await bench.client.post("/logout", data={"csrf_token": "forged"}, cookies=cookies, allow_redirects=False)
    cross = await bench.client.post("/logout", data={}, cookies=cookies, allow_redirects=False,
                                    headers={"Sec-Fetch-Site": "cross-site"})
    assert wrong.status == cross.status == 403
    assert (await bench.auth({SESSION: cookies[SESSION]})).status == 200
    # A non-browser client holding only the session cookie may end its own session (the contract's POST /logout).
    plain = await bench.client.post("/logout", cookies=cookies, allow_redirects=False)
    assert plain.status == 303
    assert (await bench.auth({SESSION: cookies[SESSION]})).status == 401


async def test_revoke_signs_out_every_device_at_once(bench: WebBench) -> None:
    pin = await bench.member_with_pin(ALICE, "alice")
    bob_pin = await bench.member_with_pin(BOB, "bob")
    _, alice1 = await bench.login("alice", pin)
    out = await bench.text(ALICE, "LOGIN")
    _, alice2 = await bench.login("alice", out[0][1].split("PIN is ")[1][:6])
    _, bob = await bench.login("bob", bob_pin)
    out = await bench.text(ADMIN, "REVOKE Alice")
    assert out == [(ADMIN, "Revoked alice. Every device they signed in on is signed out.")]
    assert (await bench.auth({SESSION: alice1[SESSION]})).status == 401
    assert (await bench.auth({SESSION: alice2[SESSION]})).status == 401
    assert (await bench.auth({SESSION: bob[SESSION]})).status == 200
    assert await bench.text(ALICE, "LOGIN") == []


async def test_sessions_slide_and_expire_server_side(bench: WebBench) -> None:
    pin = await bench.member_with_pin(ALICE, "alice")
    _, cookies = await bench.login("alice", pin)
    for _ in range(12):  # a visit every 29 days keeps the session alive, up to the absolute limit
        bench.clock.advance(29 * 86400)
        assert (await bench.auth(cookies)).status == 200
    bench.clock.advance(29 * 86400)  # 377 days after login: past the 365-day absolute limit
    assert (await bench.auth(cookies)).status == 401

    pin = (await bench.text(ALICE, "LOGIN"))[0][1].split("PIN is ")[1][:6]
    _, cookies = await bench.login("alice", pin)
    bench.clock.advance(30 * 86400 + 1)  # idle for longer than 30 days
    assert (await bench.auth(cookies)).status == 401


async def test_only_a_hash_of_the_session_token_is_stored(bench: WebBench) -> None:
    pin = await bench.member_with_pin(ALICE, "alice")
    _, cookies = await bench.login("alice", pin)
    token = cookies[SESSION]
    settings_db = bench.app[SETTINGS].db_path
    with sqlite3.connect(settings_db) as db:
        stored = [row[0] for row in db.execute("SELECT token_hash FROM sessions")]
    assert stored == [token_hash(token)]


async def test_home_redirects_to_login_and_auth_refuses_without_a_session(bench: WebBench) -> None:
    home = await bench.client.get("/", allow_redirects=False)
    assert home.status == 303 and home.headers["Location"] == "/login"
    assert (await bench.auth({})).status == 401
    assert (await bench.auth({SESSION: "x" * 500})).status == 401


async def test_security_headers_and_health(bench: WebBench) -> None:
    response = await bench.client.get("/login")
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    health = await bench.client.get("/healthz")
    assert health.status == 200 and (await health.json())["ok"] is True


async def test_every_kind_of_answer_carries_its_headers(bench: WebBench) -> None:
    """Pages, a browser's 404 page, a plain 404, a refusal and the proxy's 401 each carry the headers of their route's
    audience, set by the app's one middleware."""
    page_404 = await bench.client.get("/nowhere", headers={"Accept": "text/html"})
    plain_404 = await bench.client.get("/nowhere", headers={"Accept": "*/*"})
    refused = await bench.client.post("/logout", headers={"Origin": "https://elsewhere.example"})
    assert (page_404.status, plain_404.status, refused.status) == (404, 404, 403)
    for response in (page_404, plain_404, refused):
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"], response.url
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    proxy = await bench.auth({})
    assert proxy.status == 401 and proxy.headers["Cache-Control"] == "no-store"
    assert "Content-Security-Policy" not in proxy.headers


async def test_what_no_route_matches_answers_404_or_405_as_its_path_does(bench: WebBench) -> None:
    """Every handler is wrapped where its route is registered, and what no route matches goes to the router's fallback
    through the same wrapper: a 405 names the path's methods, for the path's audience; static files are looked up by
    name among those there at start, never joined to a path."""
    wrong = await bench.client.post("/auth", headers={"Accept": "text/html"})
    assert wrong.status == 405 and wrong.headers["Allow"] == "GET,HEAD" and wrong.content_type == "text/plain"
    assert wrong.headers["Cache-Control"] == "no-store", "a proxy's path keeps its headers"
    head_only_get = await bench.client.head("/webhooks/inbound")
    assert head_only_get.status == 405 and set(head_only_get.headers["Allow"].split(",")) == {"GET", "POST"}
    page = await bench.client.put("/login", headers={"Accept": "text/html"})
    assert page.status == 405 and "be done here</h1>" in await page.text() and page.headers["Allow"] == "GET,HEAD,POST"
    style = await bench.client.get("/static/style.css")
    assert style.status == 200 and style.content_type == "text/css" and style.headers["ETag"]
    again = await bench.client.get("/static/style.css", headers={"If-None-Match": style.headers["ETag"]})
    assert again.status == 304
    assert (await bench.client.post("/static/style.css")).status == 405
    for path in ("/static/", "/static/..%2fapp.py", "/static/../app.py", "/static/templates", "/static/x/style.css"):
        response = await bench.client.get(path)
        assert response.status == 404, path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path


async def test_once_stopping_each_answer_closes_its_connection(bench: WebBench) -> None:
    """At SIGTERM `smsbot serve` sets the app's stopping event: for its lame-duck time each answer says, and does,
    `Connection: close`, so a proxy's keep-alive connection learns it is done instead of being cut under a request."""
    from smsbot.web.appkeys import STOPPING

    before = await bench.client.get("/healthz")
    assert before.status == 200 and before.headers.get("Connection", "").lower() != "close"
    bench.app[STOPPING].set()
    for response in (await bench.client.get("/healthz"), await bench.auth({}),
                     await bench.client.get("/nowhere", headers={"Accept": "text/html"})):
        assert response.headers["Connection"].lower() == "close", (response.url, response.status)


async def test_dev_routes_do_not_exist_under_serve(bench: WebBench) -> None:
    assert (await bench.client.get("/dev/phone")).status == 404
    assert (await bench.client.post("/dev/phone/send", json={"from": ALICE, "text": "HELP"})).status in (404, 405)


async def test_a_same_origin_browser_post_is_accepted_and_a_null_origin_alone_is_not(bench: WebBench) -> None:
    pin = await bench.member_with_pin(ALICE, "alice")
    refused, _ = await bench.login("alice", pin, Origin="null")
    assert refused.status == 403
    browser, _ = await bench.login("alice", pin, **{"Origin": "null", "Sec-Fetch-Site": "same-origin"})
    assert browser.status == 303


def test_devices_get_readable_names() -> None:
    from smsbot.sms.devices import device_name

    iphone = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
              "Version/17.0 Mobile/15E148 Safari/604.1")
    assert device_name(iphone) == "Safari on iPhone"
    assert device_name("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/156.0 Safari/537.36") == \
        "Chrome on Linux"
    assert device_name("Mozilla/5.0 (Windows NT 10.0; rv:128.0) Gecko/20100101 Firefox/128.0") == "Firefox on Windows"
    assert device_name("") == "Unknown browser"


def test_every_route_is_tagged_with_who_it_answers(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(dev=True), run_worker=False)
    routes = app[ROUTES]
    paths = {r.canonical for r in app.router.resources()} - {"/static/{name}", FALLBACK.replace(":.*", "")}
    assert paths and paths == set(routes.paths)
    # Each handler is wrapped for its audience where it is registered (web/answers.py): no aiohttp middleware or
    # response signal, each of which every request would pay for.
    assert not app.middlewares and not app.on_response_prepare
    assert routes.audience("/webhooks/inbound") is routes.audience("/webhooks/nowhere") is Audience.WEBHOOK
    assert routes.audience("/auth") is Audience.PROXY and routes.audience("/auth/forward") is Audience.MACHINE
    assert routes.audience("/dev/phone") is Audience.PAGE is routes.audience("/nowhere")
    assert routes.audience("/dev/phone/send") is Audience.MACHINE
