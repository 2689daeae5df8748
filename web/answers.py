"""What every answer goes through, wrapped around each handler where its route is registered (web/routes.py): the
cross-site check, the error page a browser gets (a machine keeps the plain answer), the headers of the route's
audience, and `Connection: close` once the server is stopping.

Why a wrapper per route and not an aiohttp middleware: with any middleware at all, aiohttp runs every request through
its own middleware chain too (a cached build, a partial per layer, and a middleware of its own that sets the
request's current app). An empty pass-through middleware costs about 14,000 instructions a request, 6% of a bare
handler's, and forward auth is asked on every request a protected tool serves (bench/instructions.py). A wrapper
knows its route's audience when it is made, so it does not look it up per request either."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import hdrs, web

from smsbot.settings import Settings

from .appkeys import ROUTES
from .errorpages import error_page, for_a_machine
from .routes import Audience, Handler
from .security import PageHeaders, cross_site

log = logging.getLogger(__name__)
CRASHED = "Something went wrong on our side, and it has been logged."


class Answers:
    def __init__(self, settings: Settings, stopping: asyncio.Event):
        self.settings = settings
        self.headers = PageHeaders(settings)
        self.stopping = stopping  # set by `smsbot serve` at SIGTERM: each answer then closes its connection

    def around(self, handler: Handler, audience: Audience | None, safe: bool) -> Handler:
        """`handler` answering as `audience`; None: as the audience of the request's path (the router's fallback,
        which answers 404 and 405 for every path). `safe`: the route takes only GET and HEAD, which the cross-site
        check lets through, so it is not made."""
        settings, stopping = self.settings, self.stopping
        checked = not safe and (audience is None or audience.cross_site_checked)
        fixed = self.headers.of(audience) if audience is not None else None

        async def answered(request: web.Request) -> web.StreamResponse:
            heard = audience or request.app[ROUTES].audience(request.path)
            try:
                if checked and cross_site(request, heard, settings):
                    raise web.HTTPForbidden(text="Cross-site request refused.")
                response = await handler(request)
            except web.HTTPException as exc:
                if exc.status < 400 or for_a_machine(request, heard):
                    finish(exc, heard)
                    raise
                response = error_page(request, exc.status, exc.text or "", dict(exc.headers))
            except Exception:
                log.exception("error answering %s %s", request.method, request.path)
                response = (web.Response(status=500, text=CRASHED) if for_a_machine(request, heard)
                            else error_page(request, 500, "", {}))
            finish(response, heard)
            return response

        def finish(response: web.StreamResponse, heard: Audience) -> None:
            headers = response.headers
            for name, value in fixed or self.headers.of(heard):  # a header the handler set wins
                headers.setdefault(name, value)
            if stopping.is_set():  # say it, as well as do it
                response.force_close()
                headers[hdrs.CONNECTION] = "close"

        return answered
