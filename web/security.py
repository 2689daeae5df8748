"""Web security: cookies, CSRF tokens, the cross-site check and the headers every response carries."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from aiohttp import web

from smsbot.keys import Keys, same
from smsbot.oidc_clients import oidc_origins
from smsbot.settings import Settings

from .routes import Audience

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'{more}; "
       "frame-ancestors 'none'; base-uri 'none'; object-src 'none'")


def content_security_policy(settings: Settings) -> str:
    """The CSP every page carries. Browsers apply form-action to the redirect after a form, so a sign-in that
    goes back to a tool on a host within SMSBOT_COOKIE_DOMAIN needs those hosts allowed there."""
    more = ""
    if settings.cookie_domain:
        scheme, domain = urlsplit(settings.public_url).scheme, settings.cookie_domain
        more = f" {scheme}://{domain}:* {scheme}://*.{domain}:*"
    if settings.oidc_clients:  # a sign-in for an OIDC tool ends in a redirect to one of its registered URIs
        more += "".join(f" {origin}" for origin in oidc_origins(settings.oidc_clients))
    return CSP.format(more=more)


class Cookies:
    """Cookie names and flags; Secure when the public URL is https, with the `__Host-` prefix (host-only), or for
    the session cookie under SMSBOT_COOKIE_DOMAIN the `__Secure-` prefix (`__Host-` forbids a Domain attribute)."""

    def __init__(self, settings: Settings):
        self.secure = settings.https
        self.domain = settings.cookie_domain or None
        host_prefix = "__Host-" if self.secure else ""
        session_prefix = ("__Secure-" if self.domain else "__Host-") if self.secure else ""
        self.session = f"{session_prefix}smsbot_session"
        self.csrf = f"{host_prefix}smsbot_csrf"  # the CSRF nonce stays with this host
        self.max_age = int(settings.session_max_days * 86400)

    def set_session(self, response: web.StreamResponse, token: str) -> None:
        response.set_cookie(self.session, token, max_age=self.max_age, path="/", domain=self.domain,
                            secure=self.secure, httponly=True, samesite="Lax")

    def clear_session(self, response: web.StreamResponse) -> None:
        response.del_cookie(self.session, path="/", domain=self.domain, secure=self.secure, httponly=True,
                            samesite="Lax")

    def set_csrf(self, response: web.StreamResponse, nonce: str) -> None:
        response.set_cookie(self.csrf, nonce, path="/", secure=self.secure, httponly=True, samesite="Strict")


class Csrf:
    """Synchronizer tokens: a random nonce in an HttpOnly cookie, the form carries its HMAC."""

    def __init__(self, keys: Keys, cookies: Cookies):
        self.keys = keys
        self.cookies = cookies

    def nonce(self, request: web.Request) -> tuple[str, bool]:
        """The request's nonce, and whether it is new (and so must be set as a cookie)."""
        current = request.cookies.get(self.cookies.csrf, "")
        if 20 <= len(current) <= 100:
            return current, False
        return self.fresh(), True

    @staticmethod
    def fresh() -> str:
        return secrets.token_urlsafe(32)

    def token(self, nonce: str) -> str:
        return self.keys.csrf_token(nonce)

    def valid(self, request: web.Request, submitted: str) -> bool:
        nonce = request.cookies.get(self.cookies.csrf, "")
        if not nonce or not submitted or len(submitted) > 200:
            return False
        return same(self.keys.csrf_token(nonce), submitted)


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def cross_site(request: web.Request, audience: Audience, settings: Settings) -> bool:
    """A request to refuse: one that changes something, on a route a browser may post to (not a webhook, which
    Vonage posts, nor an OIDC tool's server), that says it comes from another site."""
    return (request.method not in SAFE_METHODS and audience.cross_site_checked
            and not same_origin(request, settings))


def same_origin(request: web.Request, settings: Settings) -> bool:
    """A browser request from this site, or from no browser: Fetch Metadata first, else Origin."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser (or a very old one); the CSRF token still has to match
    allowed = {_origin_of(settings.public_url), f"{request.scheme}://{request.host}"}
    return origin in allowed


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class PageHeaders:
    """The headers every answer carries: a page's (CSP, no sniffing, no framing, no caching, HSTS over https); a
    proxy's subrequest, which no browser renders, only that it is not to be cached."""

    def __init__(self, settings: Settings):
        page = {"Content-Security-Policy": content_security_policy(settings), "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY", "Cache-Control": "no-store"}
        if settings.https:
            page["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
        self.page = tuple(page.items())
        self.proxy = (("Cache-Control", "no-store"),)

    def of(self, audience: Audience) -> tuple[tuple[str, str], ...]:
        return self.page if audience.page_headers else self.proxy
