"""Where a sign-in may send the browser next (`rd`), and the original URL a forward-auth proxy asks about.

An `rd` is followed only when it is a path on this host or an http(s) URL on the public host or, with
SMSBOT_COOKIE_DOMAIN, a host within that domain. Everything that browsers or servers read more loosely than a parser
would (backslashes, encoded slashes, control characters and spaces, userinfo, non-ASCII) is refused outright rather
than interpreted, so no reading of it can point elsewhere. Written by hand: the rule is a dozen lines of the standard
library's URL parser, and a library would still need this policy on top.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

MAX_LENGTH = 2000
# Refused anywhere in an rd: backslashes (browsers read \ as /), percent-encoded slashes and backslashes (servers
# that decode them turn a path into //host), control characters, spaces, and anything outside ASCII.
ENCODED_UNSAFE = re.compile(r"%(2f|5c|09|0a|0d|00)", re.IGNORECASE)
HOST = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


def unsafe(text: str) -> bool:
    """Anything but printable ASCII, a backslash, or an encoded slash, backslash or control character."""
    return any(c == "\\" or not "!" <= c <= "~" for c in text) or ENCODED_UNSAFE.search(text) is not None


def host_allowed(host: str, public_host: str, cookie_domain: str) -> bool:
    """The public host itself, or a host within the cookie domain (the domain or a subdomain of it)."""
    host = host.lower()
    if host == public_host.lower():
        return True
    domain = cookie_domain.lower()
    return bool(domain) and (host == domain or host.endswith("." + domain))


def safe_redirect(rd: str, public_host: str, cookie_domain: str = "") -> str | None:
    """`rd` when it may be followed after sign-in, else None."""
    if not rd or len(rd) > MAX_LENGTH or unsafe(rd):
        return None
    if rd.startswith("/"):
        return rd if not rd.startswith("//") else None
    try:
        parts = urlsplit(rd)
        port = parts.port  # raises on a port that is not a number
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        return None
    host = parts.hostname or ""
    if port is not None and not 0 < port < 65536:
        return None
    if not HOST.match(host) or not host_allowed(host, public_host, cookie_domain):
        return None
    return rd


def original_url(proto: str, host: str, uri: str) -> str | None:
    """The URL a proxy's X-Forwarded-Proto, -Host and -Uri describe, or None when they don't describe one."""
    proto = proto.split(",")[0].strip().lower()
    host = host.split(",")[0].strip()
    if proto not in ("http", "https") or not host or unsafe(host) or "/" in host or "@" in host:
        return None
    uri = uri or "/"
    if not uri.startswith("/"):
        uri = "/" + uri
    return f"{proto}://{host}{uri}"


def login_url(public_url: str, rd: str | None) -> str:
    """The sign-in page, carrying `rd` percent-encoded."""
    return f"{public_url}/login" + (f"?rd={quote(rd, safe='')}" if rd else "")
