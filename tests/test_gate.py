"""The gate: forward auth's fast path (a session cache that no REVOKE outlives), /auth/forward for Traefik and Caddy,
the groups a protected tool sees, sign-in redirects (`rd`) and their refusals, and a cookie shared by subdomains."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import pytest

from smsbot.sessions import SessionCache
from smsbot.settings import load
from smsbot.store import Session
from smsbot.web.appkeys import SETTINGS, SIGNIN, STORE
from smsbot.web.redirects import original_url, safe_redirect

from support.cases import HOSTILE_RD
from support.service import ADMIN, BASE_ENV, CSRF_INPUT, WebBench

SESSION = "__Host-smsbot_session"
ALICE = "+14155550134"
PUBLIC = "https://group.example.org"

HOSTILE_WITH_DOMAIN = [
    ("https://evilexample.org/", "look-alike: the domain without a dot"),
    ("https://example.org.evil.com/", "look-alike: the domain as a prefix"),
    ("https://wiki.example.org@evil.com/", "userinfo"),
    ("https://example.com/", "another domain"),
]
ALLOWED_RD = [
    ("/", "the home page"),
    ("/wiki/page?x=1&y=%20#top", "a path with a query and a fragment"),
    ("https://group.example.org/wiki/", "the public host"),
    ("http://GROUP.example.org:8443/x", "the public host, another port and case"),
]
ALLOWED_WITH_DOMAIN = [
    ("https://wiki.example.org/page", "a subdomain"),
    ("https://example.org/", "the domain itself"),
    ("https://a.b.example.org:8443/", "a deeper subdomain on another port"),
]


@pytest.mark.parametrize(("rd", "why"), HOSTILE_RD + HOSTILE_WITH_DOMAIN)
def test_hostile_redirects_are_refused(rd: str, why: str) -> None:
    domain = "example.org" if (rd, why) in HOSTILE_WITH_DOMAIN else ""
    assert safe_redirect(rd, "group.example.org", domain) is None, why


@pytest.mark.parametrize(("rd", "why"), ALLOWED_RD + ALLOWED_WITH_DOMAIN)
def test_safe_redirects_are_followed(rd: str, why: str) -> None:
    domain = "example.org" if (rd, why) in ALLOWED_WITH_DOMAIN else ""
    assert safe_redirect(rd, "group.example.org", domain) == rd, why


def test_the_original_url_comes_from_the_forwarded_headers() -> None:
    assert original_url("https", "wiki.example.org", "/a?b=c") == "https://wiki.example.org/a?b=c"
    assert original_url("HTTP, https", "wiki.example.org:8080", "") == "http://wiki.example.org:8080/"
    assert original_url("gopher", "wiki.example.org", "/") is None
    assert original_url("https", "", "/") is None
    assert original_url("https", "evil.example/x", "/") is None
    assert original_url("https", "a@evil.example", "/") is None


async def member_cookies(bench: WebBench, number: str = ALICE, username: str = "alice") -> dict[str, str]:
    pin = await bench.member_with_pin(number, username)
    response, cookies = await bench.login(username, pin)
    assert response.status == 303
    return {SESSION: cookies[SESSION]}


def count_units_of_work(bench: WebBench, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every unit of work the app's store runs from now on (the count is the list's one item)."""
    store = bench.app[STORE]
    real = store.run
    count = [0]

    async def counting(work: Callable[[Any], Awaitable[Any]]) -> Any:
        count[0] += 1
        return await real(work)

    monkeypatch.setattr(store, "run", counting)
    return count


async def test_auth_names_the_user_and_their_groups(bench: WebBench) -> None:
    cookies = await member_cookies(bench)
    response = await bench.auth(cookies)
    assert response.status == 200
    assert response.headers["X-Auth-User"] == "alice" and response.headers["Remote-User"] == "alice"
    assert response.headers["Remote-Groups"] == "members"
    admin = await member_cookies(bench, ADMIN, "boss")  # an admin who is a member too
    response = await bench.auth(admin)
    assert response.headers["Remote-User"] == "boss" and response.headers["Remote-Groups"] == "members,admins"


async def test_a_valid_check_costs_no_database_work(bench: WebBench, monkeypatch: pytest.MonkeyPatch) -> None:
    cookies = await member_cookies(bench)
    units = count_units_of_work(bench, monkeypatch)
    assert (await bench.auth(cookies)).status == 200
    first = units[0]
    assert first <= 1, "the first check reads the session once"
    for _ in range(50):
        assert (await bench.auth(cookies)).status == 200
    assert units[0] == first, "checks of a cached session run no unit of work"
    junk = {SESSION: "j" * 43}
    assert (await bench.auth(junk)).status == 401
    assert (await bench.auth(junk)).status == 401
    assert units[0] == first + 1, "an unknown token is looked up once"


async def test_no_cached_session_outlives_a_revoke_a_logout_or_an_expiry(bench: WebBench) -> None:
    phone_cookies = await member_cookies(bench)
    laptop_pin = (await bench.text(ALICE, "LOGIN"))[0][1].split("PIN is ")[1][:6]
    _, laptop = await bench.login("alice", laptop_pin)
    laptop = {SESSION: laptop[SESSION]}
    for cookies in (phone_cookies, laptop, phone_cookies):  # both cached now
        assert (await bench.auth(cookies)).status == 200

    # LOGOUT on one device: that one is out at once, the other is not.
    token, fields = await login_page(bench)
    out = await bench.client.post("/logout", data={"csrf_token": token}, cookies={**fields, **laptop},
                                  allow_redirects=False)
    assert out.status == 303
    assert (await bench.auth(laptop)).status == 401
    assert (await bench.auth(phone_cookies)).status == 200

    # REVOKE: out at once.
    await bench.text(ADMIN, "REVOKE alice")
    assert (await bench.auth(phone_cookies)).status == 401

    # Expiry is checked on cached hits too.
    cookies = await member_cookies(bench, "+14155550136", "carol")
    assert (await bench.auth(cookies)).status == 200
    bench.clock.advance(30 * 86400 + 1)
    assert (await bench.auth(cookies)).status == 401


async def test_lockout_reaches_the_cache(bench: WebBench) -> None:
    cookies = await member_cookies(bench)
    assert (await bench.auth(cookies)).status == 200
    forgotten: list[int] = []
    bench.app[STORE].watch_sessions(forgotten.append)
    for _ in range(bench.app[SETTINGS].lockout_failures // 5):  # five wrong tries kill a PIN: ask for another
        await bench.text(ALICE, "LOGIN")
        for _ in range(5):
            await bench.login("alice", "000000")
    assert forgotten, "the lockout told the session cache"
    # A lockout stops PINs, not devices already signed in: the cache reads the same answer again.
    assert (await bench.auth(cookies)).status == 200


async def test_last_use_is_written_behind(bench: WebBench) -> None:
    cookies = await member_cookies(bench)
    assert (await bench.auth(cookies)).status == 200
    bench.clock.advance(3600)
    assert (await bench.auth(cookies)).status == 200
    used = bench.clock.now()
    path = bench.app[SETTINGS].db_path

    def stored() -> float:
        with sqlite3.connect(path) as db:
            return float(db.execute("SELECT last_seen_at FROM sessions").fetchone()[0])

    assert stored() < used, "a check writes nothing"
    assert await bench.app[SIGNIN].save_last_seen() == 1
    assert stored() == used
    assert await bench.app[SIGNIN].save_last_seen() == 0, "nothing new to write"


def test_a_fill_that_began_before_an_invalidation_is_dropped() -> None:
    cache = SessionCache()
    session = Session(1, 7, "alice", "key", 0.0, 0.0, "", "hash")
    generation = cache.generation
    cache.forget_member(7)  # a REVOKE lands while the read is in flight
    cache.put(session, generation, 0.0)
    assert cache.get("hash", 0.0) is None
    cache.put(session, cache.generation, 0.0)
    assert cache.get("hash", 1e9) is not None, "no maximum age: only an invalidation ends an entry"
    cache.forget_member(7)
    assert cache.get("hash", 0.0) is None and cache.get("hash", 1e9) is None


def test_with_several_instances_an_entry_is_read_again_after_its_maximum_age() -> None:
    cache = SessionCache(max_age=0.5)
    session = Session(1, 7, "alice", "key", 0.0, 0.0, "", "hash")
    cache.put(session, cache.generation, 100.0)
    assert cache.get("hash", 100.5) is not None
    assert cache.get("hash", 100.51) is None, "older than its maximum age, even if no notification came"
    assert cache.get("hash", 100.0) is None, "and dropped, not just skipped"


async def login_page(bench: WebBench, query: str = "",
                     cookies: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    bench.client.session.cookie_jar.clear()
    page = await bench.client.get(f"/login{query}", cookies=cookies)
    token = CSRF_INPUT.search(await page.text())
    assert token
    return token.group(1), {k: v.value for k, v in page.cookies.items()}


FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "group.example.org",
             "X-Forwarded-Uri": "/wiki/page?x=1", "X-Forwarded-Method": "GET"}


async def test_auth_forward_sends_browsers_to_sign_in_and_others_away(bench: WebBench) -> None:
    bench.client.session.cookie_jar.clear()
    browser = await bench.client.get("/auth/forward", allow_redirects=False,
                                     headers={**FORWARDED, "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert browser.status == 302
    assert browser.headers["Location"] == f"{PUBLIC}/login?rd=" + quote("https://group.example.org/wiki/page?x=1",
                                                                        safe="")
    for headers in ({**FORWARDED, "Accept": "*/*"}, {**FORWARDED, "Accept": "application/json"},
                    {**FORWARDED, "X-Forwarded-Method": "POST", "Accept": "text/html"}):
        assert (await bench.client.get("/auth/forward", headers=headers, allow_redirects=False)).status == 401
    head = await bench.client.get("/auth/forward", allow_redirects=False,
                                  headers={**FORWARDED, "X-Forwarded-Method": "HEAD", "Accept": "text/html"})
    assert head.status == 302
    bare = await bench.client.get("/auth/forward", headers={"Accept": "text/html"}, allow_redirects=False)
    assert bare.status == 302 and bare.headers["Location"] == f"{PUBLIC}/login"

    cookies = await member_cookies(bench)
    bench.client.session.cookie_jar.clear()
    ok = await bench.client.get("/auth/forward", cookies=cookies, headers={**FORWARDED, "Accept": "text/html"})
    assert ok.status == 200 and ok.headers["Remote-User"] == "alice" and ok.headers["X-Auth-User"] == "alice"


RD_INPUT = re.compile(r'name="rd" value="([^"]*)"')


@pytest.mark.parametrize(("rd", "why"), HOSTILE_RD[:12] + [HOSTILE_RD[15]])
async def test_a_hostile_rd_is_dropped_from_the_form_and_ignored_at_sign_in(bench: WebBench, rd: str,
                                                                              why: str) -> None:
    pin = await bench.member_with_pin(ALICE, "alice")
    page = await bench.client.get("/login?rd=" + quote(rd, safe=""))
    assert not RD_INPUT.search(await page.text()), why
    token, fields = await login_page(bench)
    response = await bench.client.post("/login", data={"username": "alice", "pin": pin, "csrf_token": token,
                                                       "rd": rd}, cookies=fields, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/", why


async def test_rd_survives_a_failed_attempt_and_is_followed_after_sign_in(bench: WebBench) -> None:
    pin = await bench.member_with_pin(ALICE, "alice")
    rd = "https://group.example.org/wiki/page?x=1"
    token, fields = await login_page(bench, "?rd=" + quote(rd, safe=""))
    wrong = await bench.client.post("/login", data={"username": "alice", "pin": "000000", "csrf_token": token,
                                                    "rd": rd}, cookies=fields, allow_redirects=False)
    assert wrong.status == 401
    kept = RD_INPUT.search(await wrong.text())
    assert kept and kept.group(1) == "https://group.example.org/wiki/page?x=1"
    right = await bench.client.post("/login", data={"username": "alice", "pin": pin, "csrf_token": token, "rd": rd},
                                    cookies=fields, allow_redirects=False)
    assert right.status == 303 and right.headers["Location"] == rd
    signed_in = {SESSION: right.cookies[SESSION].value}

    bench.client.session.cookie_jar.clear()
    again = await bench.client.get("/login?rd=" + quote("/wiki/", safe=""), cookies=signed_in, allow_redirects=False)
    assert again.status == 303 and again.headers["Location"] == "/wiki/", "a signed-in visit goes straight back"
    hostile = await bench.client.get("/login?rd=" + quote("//evil.example/", safe=""), cookies=signed_in,
                                     allow_redirects=False)
    assert hostile.status == 200, "a hostile rd is never followed, signed in or not"


async def test_a_cookie_domain_shares_the_session_with_subdomains(make_bench: Callable[..., Any]) -> None:
    bench: WebBench = await make_bench(SMSBOT_COOKIE_DOMAIN="example.org")
    pin = await bench.member_with_pin(ALICE, "alice")
    rd = "https://wiki.example.org/page"
    token, fields = await login_page(bench, "?rd=" + quote(rd, safe=""))
    response = await bench.client.post("/login", data={"username": "alice", "pin": pin, "csrf_token": token,
                                                       "rd": rd}, cookies=fields, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == rd
    cookie = response.cookies["__Secure-smsbot_session"]
    assert cookie["domain"] == "example.org" and cookie["secure"] and cookie["httponly"]
    assert "__Host-smsbot_session" not in response.cookies
    assert "https://*.example.org:*" in response.headers["Content-Security-Policy"]
    bench.client.session.cookie_jar.clear()
    auth = await bench.client.get("/auth", cookies={"__Secure-smsbot_session": cookie.value})
    assert auth.status == 200 and auth.headers["Remote-User"] == "alice"


def test_the_cookie_domain_must_hold_the_public_host() -> None:
    assert load({**BASE_ENV, "SMSBOT_COOKIE_DOMAIN": ".Example.org"}).cookie_domain == "example.org"
    for bad in ("example.com", "org", "exa mple.org", "le.org"):
        with pytest.raises(Exception, match="SMSBOT_COOKIE_DOMAIN"):
            load({**BASE_ENV, "SMSBOT_COOKIE_DOMAIN": bad})


async def test_the_session_cookie_is_read_from_the_header_as_browsers_send_it(bench: WebBench) -> None:
    cookies = await member_cookies(bench)
    token = cookies[SESSION]
    for header in (f"{SESSION}={token}", f"a=1; {SESSION}={token}; b=2", f"a=1;{SESSION}={token}",
                   f"{SESSION}=planted; {SESSION}={token}"):
        bench.client.session.cookie_jar.clear()
        response = await bench.client.get("/auth", headers={"Cookie": header})
        assert response.status == 200, header
    for header in (f"x{SESSION}={token}", f"{SESSION}x={token}", "", f"{SESSION}=", f"{SESSION}={token}; {SESSION}=x"):
        bench.client.session.cookie_jar.clear()
        response = await bench.client.get("/auth", headers={"Cookie": header} if header else {})
        assert response.status == 401, header
    assert "Content-Security-Policy" not in response.headers and response.headers["Cache-Control"] == "no-store"


async def test_a_read_under_way_is_shared_only_until_an_invalidation(bench: WebBench,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cookies = await member_cookies(bench)
    token = cookies[SESSION]
    signin, store = bench.app[SIGNIN], bench.app[STORE]
    signin.cache.clear()
    real = store.run
    gate = asyncio.Event()
    reads = [0]

    async def slow(work: Callable[[Any], Awaitable[Any]]) -> Any:
        reads[0] += 1
        await gate.wait()
        return await real(work)

    monkeypatch.setattr(store, "run", slow)
    first = [asyncio.ensure_future(signin.session(token)) for _ in range(3)]
    for _ in range(10):  # let them all reach the database
        await asyncio.sleep(0)
    assert reads[0] == 1, "three requests at once share one read"
    signin.cache.forget_member(1)  # an invalidation lands while the read is under way
    later = asyncio.ensure_future(signin.session(token))
    for _ in range(10):
        await asyncio.sleep(0)
    assert reads[0] == 2, "a request after the invalidation does not join the older read"
    gate.set()
    await asyncio.gather(*first, later)
