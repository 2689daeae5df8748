"""Error pages: a browser asking for a page gets 404, 405, 429, 500 (and any other error) as a page of the site,
with a way back; proxies, webhooks, health checks and scripts keep the plain answers they depend on. The wrapper
around each handler (web/answers.py) decides which a request gets."""

from __future__ import annotations

from aiohttp import web

from .appkeys import SETTINGS
from .routes import Audience
from .templates import render

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


def for_a_machine(request: web.Request, audience: Audience) -> bool:
    """A request whose error stays plain text: a route tagged for machines (nginx reads /auth's 401, Vonage the
    webhooks' answers), or a client that doesn't ask for HTML."""
    if audience.plain_errors:
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
