"""Error pages: a browser asking for a page gets 404, 405, 429, 500 (and any other error) as a page of the site,
with a way back; proxies, webhooks, health checks and scripts keep the plain answers they depend on."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from .appkeys import ROUTES, SETTINGS
from .templates import render

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

KEPT_HEADERS = ("Allow", "Retry-After")

HOME = ("/", "Go to the home page")
SIGN_IN = ("/login", "Back to sign in")
PAGES: dict[int, tuple[str, str | None, tuple[str, str]]] = {
    # status: (title, message or None for the error's own text, way back)
    404: ("Page not found", "There is no page at this address. Check the link, or start again from the home page.",
          HOME),
    405: ("That can't be done here", "This address doesn't take that kind of request. Start again from the home "
          "page.", HOME),
    429: ("Too many tries", None, SIGN_IN),
    500: ("Something went wrong", "Something went wrong on our side, and it has been logged. Please try again in a "
          "moment.", HOME),
}
OTHER_CLIENT_ERROR = ("That didn't work", None, HOME)
OTHER_SERVER_ERROR = ("Something went wrong", "The service can't answer right now. Please try again in a moment.",
                      HOME)


def for_a_machine(request: web.Request) -> bool:
    """A request whose error stays plain text: a route tagged for machines (nginx reads /auth's 401, Vonage the
    webhooks' answers), or a client that doesn't ask for HTML."""
    if request.app[ROUTES].audience(request.path).plain_errors:
        return True
    accepted = {part.split(";")[0].strip().lower() for part in request.headers.get("Accept", "").split(",")}
    return "text/html" not in accepted


def error_page(request: web.Request, status: int, own_text: str, headers: dict[str, str]) -> web.Response:
    title, message, (back_href, back_text) = PAGES.get(
        status, OTHER_SERVER_ERROR if status >= 500 else OTHER_CLIENT_ERROR)
    if message is None:
        message = own_text if own_text and not own_text.startswith(f"{status}:") else title + "."
    retry = headers.get("Retry-After", "")
    if status == 429 and retry.isdigit():
        seconds = int(retry)
        wait = f"{seconds} second{'s' if seconds != 1 else ''}"
        message = f"Too many sign-in attempts from here. Wait {wait}, then try again."
    settings = request.app[SETTINGS]
    context = {"status": status, "title": title, "message": message, "back_href": back_href, "back_text": back_text,
               "group": settings.group_name}
    response = render("error.html", request, context, status=status)
    for name in KEPT_HEADERS:
        if name in headers:
            response.headers[name] = headers[name]
    return response


def setup_error_pages(app: web.Application) -> None:
    """Register the middleware; it must come first, so that it also dresses the other middlewares' refusals."""

    @web.middleware
    async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400 or for_a_machine(request):
                raise
            return error_page(request, exc.status, exc.text or "", dict(exc.headers))
        except Exception:
            if for_a_machine(request):
                raise
            log.exception("error answering %s %s", request.method, request.path)
            return error_page(request, 500, "", {})

    app.middlewares.append(error_pages)
