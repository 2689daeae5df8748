"""Dev-mode routes: the dev phone page. Registered only by `smsbot dev`, never under `serve`."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web

from smsbot import phone
from smsbot.messages import InboundText

from .appkeys import DEV_PHONES, PIPELINE, ROUTES, SETTINGS
from .routes import Audience
from .templates import render
from .views import group_number, read_form


async def page(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    return render("dev_phone.html", request, {
        "admins": settings.admins, "group": settings.group_name, "number": group_number(settings.number),
    })


async def texts(request: web.Request) -> web.Response:
    """The texts after the one numbered `after`, and every phone in its place (the page polls this)."""
    try:
        after = int(request.query.get("after", "0"))
    except ValueError:
        raise web.HTTPBadRequest(text="after must be a number") from None
    phones = request.app[DEV_PHONES]
    return web.json_response({"texts": phones.since(after), "phones": phones.listed()})


async def posted_phone(request: web.Request, field: str, wanted: str) -> tuple[dict[str, Any] | web.Response, str]:
    """The posted fields (JSON from the page's script, or a form without JavaScript) and the phone number in
    `field`, normalised; or a 400 answer saying what was wrong, and ""."""
    if request.content_type == "application/json":
        try:
            data = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):
            return web.json_response({"error": f"Send a JSON object with {wanted}."}, status=400), ""
    else:
        data = await read_form(request)
    try:
        return data, phone.normalize(str(data.get(field, "")), request.app[SETTINGS].default_region)
    except phone.PhoneError as exc:
        return web.json_response({"error": f"That phone number can't be used: {exc.reason}."}, status=400), ""


async def send(request: web.Request) -> web.Response:
    """Text the service as a dev phone: the same path a Vonage webhook takes after parsing."""
    as_json = request.content_type == "application/json"
    data, number = await posted_phone(request, "from", "'from' and 'text'")
    if isinstance(data, web.Response):
        return data
    text = str(data.get("text", ""))[:1000]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return web.json_response({"error": "That text is not valid Unicode."}, status=400)
    if not text.strip():
        return web.json_response({"error": "Type a text to send."}, status=400)
    request.app[DEV_PHONES].record(number, "in", text)
    await request.app[PIPELINE].receive(InboundText(f"dev-{uuid.uuid4().hex}", number, text))
    if as_json:
        return web.json_response({"ok": True, "from": number})
    raise web.HTTPSeeOther("/dev/phone")


async def add_phone(request: web.Request) -> web.Response:
    """Add a phone to the page, typed as people type numbers: JSON {"number": ...} from the page's script, or the
    form without JavaScript (then back to the page)."""
    as_json = request.content_type == "application/json"
    data, number = await posted_phone(request, "number", "'number'")
    if isinstance(data, web.Response):
        return data
    added, new = request.app[DEV_PHONES].add(number)
    if not as_json:
        raise web.HTTPSeeOther("/dev/phone")
    return web.json_response({**added.shown(), "new": new})


def setup_dev(app: web.Application) -> None:
    routes = app[ROUTES]
    routes.get(app, "/dev/phone", page)
    routes.get(app, "/dev/phone/texts", texts, Audience.MACHINE)  # the page's script reads the status
    routes.post(app, "/dev/phone/phones", add_phone, Audience.MACHINE)
    routes.post(app, "/dev/phone/send", send, Audience.MACHINE)
    routes.folder("/dev/phone/", Audience.MACHINE)
    for admin in app[SETTINGS].admins:
        app[DEV_PHONES].add(admin, admin=True)
