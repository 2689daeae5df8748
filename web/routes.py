"""Who each route answers, tagged where the route is registered: the error pages, the cross-site check and the page
headers all read the tag, so no list of paths is kept beside them. Every handler is registered here, wrapped by
web/answers.py for its audience; the router's fallback answers 404 and 405 through the same wrapper."""

from __future__ import annotations

import enum
import pathlib
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Around = Callable[[Handler, "Audience | None", bool], Handler]  # web/answers.py's Answers.around
FALLBACK = "/{anything:.*}"  # registered last: what no route matched, path or method


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

    def __init__(self, around: Around) -> None:
        self.around = around
        self.paths: dict[str, Audience] = {}
        self.methods: dict[str, set[str]] = {}  # each path's methods, for a 405's Allow
        self.folders: dict[str, Audience] = {}

    def get(self, app: web.Application, path: str, handler: Handler, audience: Audience = Audience.PAGE, *,
            allow_head: bool = True) -> None:
        app.router.add_get(path, self.around(handler, audience, True), allow_head=allow_head)
        self._tag(path, audience, {"GET", "HEAD"} if allow_head else {"GET"})

    def post(self, app: web.Application, path: str, handler: Handler, audience: Audience = Audience.PAGE) -> None:
        app.router.add_post(path, self.around(handler, audience, False))
        self._tag(path, audience, {"POST"})

    def _tag(self, path: str, audience: Audience, methods: set[str]) -> None:
        self.paths[path] = audience
        self.methods.setdefault(path, set()).update(methods)

    def folder(self, prefix: str, audience: Audience) -> None:
        """Paths under `prefix` that match no route (a 404, a typo) answer like its routes."""
        self.folders[prefix] = audience

    def files(self, app: web.Application, prefix: str, folder: pathlib.Path) -> None:
        """The files of `folder` (not its subfolders), as pages at `prefix`/name. Only the files there at start are
        served: a name is looked up, never joined to a path."""
        found = {entry.name: entry for entry in folder.iterdir() if entry.is_file()}

        async def file(request: web.Request) -> web.FileResponse:
            entry = found.get(request.match_info["name"])
            if entry is None:
                raise web.HTTPNotFound()
            if request.method not in ("GET", "HEAD"):
                raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
            return web.FileResponse(entry)

        app.router.add_route("*", prefix + "/{name}", self.around(file, Audience.PAGE, False))

    def fallback(self, app: web.Application) -> None:
        """After every route: what none matched answers 404, or 405 with the path's methods, as the path's
        audience (a folder's, else a page)."""

        async def unmatched(request: web.Request) -> web.StreamResponse:
            methods = self.methods.get(request.path)
            if methods:
                raise web.HTTPMethodNotAllowed(request.method, sorted(methods))
            raise web.HTTPNotFound()

        app.router.add_route("*", FALLBACK, self.around(unmatched, None, False))

    def audience(self, path: str) -> Audience:
        if path in self.paths:
            return self.paths[path]
        under = [prefix for prefix in self.folders if path.startswith(prefix)]
        return self.folders[max(under, key=len)] if under else Audience.PAGE
