"""Who each route answers, tagged where the route is registered: the error pages, the cross-site check and the page
headers all read the tag, so no list of paths is kept beside them."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Audience(enum.Enum):
    PAGE = "page"  # browsers: error pages, every page header, the cross-site check
    MACHINE = "machine"  # health checks, forward auth, the dev phone's script: plain errors, whose status they read
    WEBHOOK = "webhook"  # Vonage's servers: plain errors, no cross-site check (no browser, no cookies)
    PROXY = "proxy"  # a reverse proxy's subrequest, never rendered: plain errors, no page headers but no-store
    CLIENT = "client"  # an OIDC tool's server (token, userinfo): it proves who it is, never with a cookie, so no
    # cross-site check; plain errors

    @property
    def plain_errors(self) -> bool:
        return self is not Audience.PAGE

    @property
    def cross_site_checked(self) -> bool:
        return self not in (Audience.WEBHOOK, Audience.CLIENT)

    @property
    def page_headers(self) -> bool:
        return self is not Audience.PROXY


class Routes:
    """The audience of every registered path, and of the folders whose unknown paths answer the same audience."""

    def __init__(self) -> None:
        self.paths: dict[str, Audience] = {}
        self.folders: dict[str, Audience] = {}

    def get(self, app: web.Application, path: str, handler: Handler, audience: Audience = Audience.PAGE, *,
            allow_head: bool = True) -> None:
        app.router.add_get(path, handler, allow_head=allow_head)
        self.paths[path] = audience

    def post(self, app: web.Application, path: str, handler: Handler, audience: Audience = Audience.PAGE) -> None:
        app.router.add_post(path, handler)
        self.paths[path] = audience

    def folder(self, prefix: str, audience: Audience) -> None:
        """Paths under `prefix` that match no route (a 404, a typo) answer like its routes."""
        self.folders[prefix] = audience

    def audience(self, path: str) -> Audience:
        if path in self.paths:
            return self.paths[path]
        under = [prefix for prefix in self.folders if path.startswith(prefix)]
        return self.folders[max(under, key=len)] if under else Audience.PAGE
