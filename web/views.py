"""Pages and checks for people and proxies: /login, /, /logout, /auth, /healthz."""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import time

import aiohttp_jinja2
from aiohttp import web

from smsbot.store import Session

from .appkeys import CLOCK, SETTINGS, SIGNIN, STORE
from .ratelimit import SlidingWindow, client_ip
from .security import Cookies, Csrf

log = logging.getLogger(__name__)

COOKIES = web.AppKey("cookies", Cookies)
LOGIN_LIMIT = web.AppKey("login_limit", SlidingWindow)
CSRF = web.AppKey("csrf", Csrf)
FAILURE_FLOOR = 0.03  # seconds
LOGIN_FAILED = "That username and PIN don't match, or the PIN has expired. Text LOGIN to get a new PIN."


async def read_form(request: web.Request) -> dict[str, str]:
    """The posted form's text fields; a body that isn't a readable form is the client's error (400)."""
    try:
        form = await request.post()
    except (ValueError, LookupError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="The form could not be read.") from None
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    try:
        for value in fields.values():
            value.encode("utf-8")
    except UnicodeEncodeError:
        raise web.HTTPBadRequest(text="The form could not be read.") from None
    return fields


async def current_session(request: web.Request) -> Session | None:
    token = request.cookies.get(request.app[COOKIES].session)
    return await request.app[SIGNIN].session(token)


def _render(request: web.Request, template: str, context: dict[str, object], status: int = 200,
            nonce: tuple[str, bool] | None = None) -> web.Response:
    csrf = request.app[CSRF]
    value, fresh = nonce or csrf.nonce(request)
    context = {**context, "csrf_token": csrf.token(value), "group": request.app[SETTINGS].group_name}
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    if fresh:
        request.app[COOKIES].set_csrf(response, value)
    return response


async def login_form(request: web.Request) -> web.Response:
    return _render(request, "login.html", {"error": None, "username": ""})


async def login_submit(request: web.Request) -> web.Response:
    started = time.monotonic()
    settings = request.app[SETTINGS]
    client = client_ip(request, settings.trusted_proxies)
    wait = request.app[LOGIN_LIMIT].wait(client)  # failed sign-ins are limited; successful ones are not
    if wait:
        return web.Response(status=429, text="Too many sign-in attempts from here. Try again in a minute.",
                            headers={"Retry-After": str(math.ceil(wait))})
    form = await read_form(request)
    username = str(form.get("username", "")).strip()[:64]
    pin = "".join(str(form.get("pin", "")).split())[:16]
    if not request.app[CSRF].valid(request, str(form.get("csrf_token", ""))):
        # Nothing is checked, so no PIN is used up by a forged or stale form.
        request.app[LOGIN_LIMIT].hit(client)
        return _render(request, "login.html", {"error": "This form had expired. Please try again.",
                                               "username": username}, status=403)
    token = await request.app[SIGNIN].login(username, pin, request.headers.get("User-Agent", ""))
    if token is None:
        request.app[LOGIN_LIMIT].hit(client)
        # Every failure takes at least this long, whatever went wrong, so timing tells nothing about the reason.
        await asyncio.sleep(max(0.0, FAILURE_FLOOR - (time.monotonic() - started)))
        return _render(request, "login.html", {"error": LOGIN_FAILED, "username": ""}, status=401)
    response = web.HTTPSeeOther("/")
    cookies = request.app[COOKIES]
    cookies.set_session(response, token)
    cookies.set_csrf(response, request.app[CSRF].fresh())  # a new CSRF nonce with the new session
    raise response


async def home(request: web.Request) -> web.Response:
    session = await current_session(request)
    if session is None:
        raise web.HTTPSeeOther("/login")
    devices = await request.app[SIGNIN].devices(session)
    return _render(request, "home.html", {"username": session.username, "devices": devices, "when": _when,
                                          "device_name": device_name})


async def logout(request: web.Request) -> web.Response:
    form = await read_form(request)
    # The page's form carries a CSRF token, and a wrong one is refused. A client that sends none may still end
    # its own session: cross-site requests are refused before this (Fetch Metadata / Origin), and the worst a
    # forged logout could do is sign someone out.
    if "csrf_token" in form and not request.app[CSRF].valid(request, form["csrf_token"]):
        raise web.HTTPForbidden(text="This form had expired. Please go back and try again.")
    cookies = request.app[COOKIES]
    await request.app[SIGNIN].logout(request.cookies.get(cookies.session))
    response = web.HTTPSeeOther("/login")
    cookies.clear_session(response)
    raise response


async def auth(request: web.Request) -> web.Response:
    """Forward auth for nginx auth_request, Caddy forward_auth and Traefik ForwardAuth."""
    session = await current_session(request)
    if session is None:
        return web.Response(status=401, text="Not signed in.")
    return web.Response(status=200, text="OK", headers={"X-Auth-User": session.username})


async def healthz(request: web.Request) -> web.Response:
    try:
        ok = await request.app[STORE].healthy()
    except Exception:
        log.exception("health check failed")
        ok = False
    return web.json_response({"ok": ok}, status=200 if ok else 503)


BROWSERS = (("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome"),
            ("Safari/", "Safari"))
SYSTEMS = (("iPhone", "iPhone"), ("iPad", "iPad"), ("Android", "Android"), ("Windows", "Windows"),
           ("Mac OS X", "macOS"), ("CrOS", "ChromeOS"), ("Linux", "Linux"))


def device_name(user_agent: str) -> str:
    """'Chrome on Android' from a User-Agent header: enough to tell one's devices apart."""
    browser = next((name for mark, name in BROWSERS if mark in user_agent), "A browser")
    system = next((name for mark, name in SYSTEMS if mark in user_agent), "")
    return f"{browser} on {system}" if system else browser if user_agent else "Unknown browser"


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def setup_views(app: web.Application, cookies: Cookies, csrf: Csrf) -> None:
    app[COOKIES] = cookies
    app[CSRF] = csrf
    app[LOGIN_LIMIT] = SlidingWindow(app[SETTINGS].login_failures_per_minute, 60.0, app[CLOCK])
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login_submit)
    app.router.add_get("/", home)
    app.router.add_post("/logout", logout)
    app.router.add_get("/auth", auth)
    app.router.add_get("/healthz", healthz)
