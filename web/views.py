"""Pages and checks for people and proxies: /login, /, /logout, /auth, /auth/forward, /healthz."""

from __future__ import annotations

import datetime
import logging
import math
import pathlib
from urllib.parse import urlsplit

from aiohttp import web

from smsbot import phone
from smsbot.sms.devices import ago, device_name
from smsbot.store import Session

from .appkeys import CLOCK, KEYS, METRICS, OIDC, ROUTES, SETTINGS, SIGNIN, STORE
from .ratelimit import SignInLimit, client_ip
from .redirects import login_url, original_url, safe_redirect
from .routes import Audience
from .security import Cookies, Csrf
from .templates import render

log = logging.getLogger(__name__)
STATIC = pathlib.Path(__file__).parent / "static"

COOKIES = web.AppKey("cookies", Cookies)
LOGIN_LIMIT = web.AppKey("login_limit", SignInLimit)
PUBLIC_HOST = web.AppKey("public_host", str)
CSRF = web.AppKey("csrf", Csrf)
LOGOUT_SCOPES = ("this", "others", "all", "device")
LOGIN_FAILED = "That username and PIN don't match, or the PIN has expired. Text LOGIN to get a new PIN."
# The notices on the sign-in page. A session cookie that no longer works gets the same words whatever ended it
# (a REVOKE, an admin's LOGOUT, expiry, a sign-out on another device): the page tells nothing more.
NOTICES = {
    "this": "You signed out of this device.",
    "all": "You signed out on every device.",
    "ended": "This device was signed out. Sign in again with a new PIN: text LOGIN to the group's number.",
}


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


def session_cookie(request: web.Request, name: str) -> str | None:
    """The session cookie's value, read straight from the Cookie header: forward auth asks on every request a
    protected tool serves, and a full cookie parse (a Morsel per cookie) is a good part of its cost. Session tokens
    are URL-safe base64, never quoted. When the name comes twice the last counts, as in aiohttp's own parse."""
    header = request.headers.get("Cookie")
    if not header:
        return None
    prefix = name + "="
    found = None
    for part in header.split(";"):
        part = part.strip()
        if part.startswith(prefix):
            found = part[len(prefix):]
    return found


def cached_session(request: web.Request) -> tuple[str | None, Session | None]:
    """The session cookie's token, and its session if the cache answers at once: forward auth's fast path, with no
    await (not even a coroutine made). A token with no session here still needs `read_session`."""
    token = session_cookie(request, request.app[COOKIES].session)
    if not token:
        return None, None
    cached = request.app[SIGNIN].cached_session(token)
    if cached is not None:
        request.app[METRICS].session_cache.inc("hit")
    return token, cached


async def read_session(request: web.Request, token: str) -> Session | None:
    """The session for a token the cache did not answer for: from the database, or None."""
    request.app[METRICS].session_cache.inc("miss")
    return await request.app[SIGNIN].session(token)


async def current_session(request: web.Request) -> Session | None:
    token, session = cached_session(request)
    if session is None and token:
        session = await read_session(request, token)
    return session


def _render(request: web.Request, template: str, context: dict[str, object], status: int = 200,
            nonce: tuple[str, bool] | None = None) -> web.Response:
    csrf = request.app[CSRF]
    value, fresh = nonce or csrf.nonce(request)
    settings = request.app[SETTINGS]
    provider = request.app.get(OIDC)  # with an OIDC client's way back in rd, the page names the tool
    tool = provider.tool_for(str(context.get("rd") or "")) if provider is not None else None
    context = {**context, "csrf_token": csrf.token(value), "group": settings.group_name, "tool": tool,
               "number": group_number(settings.number)}
    response = render(template, request, context, status=status)
    if fresh:
        request.app[COOKIES].set_csrf(response, value)
    return response


def group_number(digits: str) -> dict[str, str] | None:
    """The group's number for a page: as people read it, and as an `sms:` link that opens a new text to it."""
    if not digits:
        return None
    return {"shown": phone.formatted(digits), "href": f"sms:+{digits}"}


def next_page(request: web.Request, rd: str) -> str | None:
    """Where to go after signing in: `rd` if it is safe to follow (see redirects.py), else None."""
    settings = request.app[SETTINGS]
    return safe_redirect(rd, request.app[PUBLIC_HOST], settings.cookie_domain)


async def login_form(request: web.Request) -> web.Response:
    rd = request.query.get("rd", "")
    target = next_page(request, rd)
    cookies = request.app[COOKIES]
    presented = session_cookie(request, cookies.session)
    session = await current_session(request) if presented else None
    if session is not None:
        if target is not None:
            raise web.HTTPSeeOther(target)  # already signed in: straight back to the page that sent them here
        return _render(request, "signed_in.html", {"username": session.username})
    notice = NOTICES["ended"] if presented else NOTICES.get(request.query.get("signed_out", ""))
    response = _render(request, "login.html", {"error": None, "notice": notice, "username": "",
                                               "rd": rd if target else ""})
    if presented:
        cookies.clear_session(response)  # the notice is shown once; the dead cookie is no use to anyone
    return response


async def login_submit(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    # A failed sign-in is answered at this moment, whatever went wrong (see SignIn.login): measured from the
    # request's start, so the slot taken below, the reading of the PIN and any Verify check all fall inside it.
    answer_at = request.app[CLOCK].monotonic() + settings.login_failure_seconds
    metrics = request.app[METRICS]
    form = await read_form(request)
    username = str(form.get("username", "")).strip()[:64]
    pin = "".join(str(form.get("pin", "")).split())[:16]
    target = next_page(request, str(form.get("rd", "")))
    rd = target or ""
    if not request.app[CSRF].valid(request, str(form.get("csrf_token", ""))):
        # Nothing is checked, so no PIN is used up by a forged or stale form, and the client's sign-in limit is
        # untouched (a page behind an untrusted proxy can't give everyone 429).
        metrics.signins.inc("failure")
        metrics.signin_failures.inc("form-expired")
        return _render(request, "login.html", {"error": "This form had expired. Please try again.", "notice": None,
                                               "username": username, "rd": rd}, status=403)
    # The slot is taken before anything is weighed, so simultaneous failures can't all slip under the limit.
    limit = request.app[LOGIN_LIMIT]
    slot = await limit.take(client_ip(request, settings.trusted_proxies))
    if slot.id is None:
        metrics.signins.inc("failure")
        metrics.signin_failures.inc("rate-limited")
        raise web.HTTPTooManyRequests(text="Too many sign-in attempts from here. Try again in a minute.",
                                      headers={"Retry-After": str(math.ceil(slot.wait))})
    token = await request.app[SIGNIN].login(username, pin, request.headers.get("User-Agent", ""), answer_at)
    metrics.signins.inc("failure" if token is None else "success")
    if token is None:
        # The username typed is kept (it was the visitor's own input); the page is otherwise the same whatever failed.
        return _render(request, "login.html", {"error": LOGIN_FAILED, "notice": None, "username": username, "rd": rd},
                       status=401)
    await limit.give_back(slot)  # failed sign-ins are limited; successful ones are not
    response = web.HTTPSeeOther(target or "/")
    cookies = request.app[COOKIES]
    cookies.set_session(response, token)
    cookies.set_csrf(response, request.app[CSRF].fresh())  # a new CSRF nonce with the new session
    raise response


async def home(request: web.Request) -> web.Response:
    session = await current_session(request)
    if session is None:
        raise web.HTTPSeeOther("/login")
    devices = await request.app[SIGNIN].devices(session)
    now = request.app[CLOCK].now()
    return _render(request, "home.html", {"username": session.username, "devices": devices,
                                          "when": lambda at: moment(at, now), "device_name": device_name})


async def logout(request: web.Request) -> web.Response:
    form = await read_form(request)
    # The page's form carries a CSRF token, and a wrong one is refused. A client that sends none may still end
    # its own session: cross-site requests are refused before this (Fetch Metadata / Origin), and the worst a
    # forged logout could do is sign someone out.
    if "csrf_token" in form and not request.app[CSRF].valid(request, form["csrf_token"]):
        raise web.HTTPForbidden(text="This form had expired. Please go back and try again.")
    cookies = request.app[COOKIES]
    scope = form.get("scope", "this")
    if scope not in LOGOUT_SCOPES:
        raise web.HTTPBadRequest(text=f"scope must be one of {', '.join(LOGOUT_SCOPES)}.")
    device = form.get("device", "")
    if scope == "device" and not (device.isascii() and device.isdigit() and len(device) <= 18):
        raise web.HTTPBadRequest(text="device must be the number of one of your devices.")
    token = session_cookie(request, cookies.session)
    session = await current_session(request)
    await request.app[SIGNIN].logout(token, scope, int(device) if scope == "device" else None)
    if scope == "others" or (scope == "device" and session is not None and int(device) != session.id):
        raise web.HTTPSeeOther("/")  # this device stays signed in
    response = web.HTTPSeeOther("/login?signed_out=all" if scope == "all" else "/login?signed_out=this")
    cookies.clear_session(response)
    raise response


def signed_in(request: web.Request, session: Session) -> web.Response:
    """The answer to a proxy for a valid session: who it is, for the protected tool."""
    user = session.username
    return web.Response(text="OK", headers={"X-Auth-User": user, "Remote-User": user,
                                            "Remote-Groups": request.app[SIGNIN].groups(session)})


async def auth(request: web.Request) -> web.Response:
    """Forward auth for nginx auth_request: 200 with the user, or 401."""
    token, session = cached_session(request)
    if session is None and token:
        session = await read_session(request, token)
    if session is None:
        request.app[METRICS].auth_checks.inc("denied")
        return web.Response(status=401, text="Not signed in.")
    request.app[METRICS].auth_checks.inc("allowed")
    return signed_in(request, session)


def wants_a_page(request: web.Request) -> bool:
    """The original request was a browser asking for a page: GET or HEAD, and text/html among what it accepts
    (a bare */* is what scripts and fetch() send)."""
    method = request.headers.get("X-Forwarded-Method", "GET").strip().upper()
    accepted = {part.split(";")[0].strip().lower() for part in request.headers.get("Accept", "").split(",")}
    return method in ("GET", "HEAD") and "text/html" in accepted


async def auth_forward(request: web.Request) -> web.Response:
    """Forward auth for Traefik ForwardAuth and Caddy forward_auth: as /auth when signed in; otherwise a browser
    asking for a page is sent to sign in, with the way back in `rd`, and anything else gets 401."""
    token, session = cached_session(request)
    if session is None and token:
        session = await read_session(request, token)
    if session is not None:
        request.app[METRICS].auth_checks.inc("allowed")
        return signed_in(request, session)
    request.app[METRICS].auth_checks.inc("denied")
    if not wants_a_page(request):
        return web.Response(status=401, text="Not signed in.")
    back = original_url(request.headers.get("X-Forwarded-Proto", ""), request.headers.get("X-Forwarded-Host", ""),
                        request.headers.get("X-Forwarded-Uri", ""))
    # Not HTTPFound: it would re-normalise the Location, and the original URL stays percent-encoded as built.
    return web.Response(status=302, headers={"Location": login_url(request.app[SETTINGS].public_url, back)})


async def healthz(request: web.Request) -> web.Response:
    try:
        ok = await request.app[STORE].healthy()
    except Exception:
        log.exception("health check failed")
        ok = False
    return web.json_response({"ok": ok}, status=200 if ok else 503)


def moment(timestamp: float, now: float) -> dict[str, str]:
    """A time for a page's `<time>`: ISO for the machine and for face.js (which shows it in the reader's own time
    zone), and, without JavaScript, how long ago ("3 h ago") with the UTC time as its title."""
    at = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return {"iso": at.isoformat(timespec="seconds").replace("+00:00", "Z"), "ago": ago(max(0.0, now - timestamp)),
            "utc": f"{at.day} {at:%b %Y, %H:%M} UTC"}


async def favicon(request: web.Request) -> web.FileResponse:
    """Browsers ask for /favicon.ico whatever a page links to (a JSON answer, a plain-text error)."""
    return web.FileResponse(STATIC / "favicon.svg", headers={"Content-Type": "image/svg+xml"})


def setup_views(app: web.Application, cookies: Cookies, csrf: Csrf) -> None:
    app[COOKIES] = cookies
    app[CSRF] = csrf
    app[PUBLIC_HOST] = urlsplit(app[SETTINGS].public_url).hostname or ""
    app[LOGIN_LIMIT] = SignInLimit(app[STORE], app[KEYS], app[CLOCK], app[SETTINGS].login_failures_per_minute)
    routes = app[ROUTES]
    routes.get(app, "/login", login_form)
    routes.post(app, "/login", login_submit)
    routes.get(app, "/", home)
    routes.post(app, "/logout", logout)
    routes.get(app, "/auth", auth, Audience.PROXY)
    routes.get(app, "/auth/forward", auth_forward, Audience.MACHINE)  # its 302 reaches browsers, its 401 proxies
    routes.folder("/auth/", Audience.MACHINE)
    routes.get(app, "/healthz", healthz, Audience.MACHINE)
    routes.get(app, "/favicon.ico", favicon)
