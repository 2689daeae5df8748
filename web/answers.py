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

    def finish(self, audience: Audience, response: web.StreamResponse) -> None:
        self.headers.add(audience, response)
        if self.stopping.is_set():  # say it, as well as do it
            response.force_close()
            response.headers[hdrs.CONNECTION] = "close"

    def around(self, handler: Handler, audience: Audience | None) -> Handler:
        """`handler` answering as `audience`; None: as the audience of the request's path (the router's fallback,
        which answers 404 and 405 for every path)."""
        settings, finish = self.settings, self.finish

        async def answered(request: web.Request) -> web.StreamResponse:
            heard = audience or request.app[ROUTES].audience(request.path)
            try:
                if cross_site(request, heard, settings):
                    raise web.HTTPForbidden(text="Cross-site request refused.")
                response = await handler(request)
            except web.HTTPException as exc:
                if exc.status < 400 or for_a_machine(request, heard):
                    finish(heard, exc)
                    raise
                response = error_page(request, exc.status, exc.text or "", dict(exc.headers))
            except Exception:
                log.exception("error answering %s %s", request.method, request.path)
                response = (web.Response(status=500, text=CRASHED) if for_a_machine(request, heard)
                            else error_page(request, 500, "", {}))
            finish(heard, response)
            return response

        return answered
