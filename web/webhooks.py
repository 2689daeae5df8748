"""Vonage webhooks: inbound texts (SMS API as query, form or JSON; Messages API JSON) and delivery receipts."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from aiohttp import web

from smsbot import phone
from smsbot.engine import InboundText

from .appkeys import SERVICE, SETTINGS

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024


class BadWebhook(Exception):
    """The request is not a webhook we understand; the reason goes into a 400 answer."""


async def read_params(request: web.Request) -> dict[str, str]:
    """All webhook fields as strings, from the query (GET) or the body (form or JSON)."""
    if request.method == "GET":
        return {k: v for k, v in request.query.items()}
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)
    body = await request.read()
    if len(body) > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=len(body))
    ctype = request.content_type
    if ctype == "application/json":
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise BadWebhook("the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise BadWebhook("the JSON body must be an object")
        return {str(k): v if isinstance(v, str) else json.dumps(v) if isinstance(v, (dict, list)) else str(v)
                for k, v in data.items() if v is not None}
    if ctype in ("application/x-www-form-urlencoded", "multipart/form-data", ""):
        form = await request.post() if body else {}
        return {k: v for k, v in form.items() if isinstance(v, str)}
    raise web.HTTPUnsupportedMediaType(text="Send JSON or a form.")


def parse_inbound(params: Mapping[str, str], region: str) -> InboundText | None:
    """The inbound text in `params`, or None for a well-formed message we do not act on."""
    if "message_uuid" in params:  # Messages API
        message_id, sender, text = params.get("message_uuid", ""), params.get("from", ""), params.get("text")
        if params.get("channel", "sms") != "sms":
            return None
    else:
        message_id, sender, text = params.get("messageId", ""), params.get("msisdn", ""), params.get("text")
        if params.get("type", "text") not in ("text", "unicode"):
            return None
    if not message_id or len(message_id) > 100:
        raise BadWebhook("messageId is missing")
    if not sender or not sender.lstrip("+").isdigit() or len(sender) > 20:
        raise BadWebhook("msisdn is missing or not digits")
    if text is None:
        raise BadWebhook("text is missing")
    if "concat" in params or "concat-ref" in params:
        log.warning("multipart text %s ignored: reassembly is not supported yet", message_id)
        return None
    try:
        number = phone.from_msisdn(sender, region)
    except phone.PhoneError:
        log.info("text %s from an unusable number %s ignored", message_id, phone.mask(sender))
        return None
    return InboundText(message_id=message_id, sender=number, text=text)


async def inbound(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    try:
        params = await read_params(request)
        msg = parse_inbound(params, settings.default_region)
    except BadWebhook as exc:
        return web.Response(status=400, text=f"Bad webhook: {exc}.")
    if msg is not None:
        await request.app[SERVICE].receive(msg)
    return web.Response(status=204)


async def status(request: web.Request) -> web.Response:
    """Delivery receipts: acknowledged; recording them per text comes with issue 3."""
    try:
        await read_params(request)
    except BadWebhook as exc:
        return web.Response(status=400, text=f"Bad webhook: {exc}.")
    return web.Response(status=204)


def setup_webhooks(app: web.Application) -> None:
    for path, handler in (("/webhooks/inbound", inbound), ("/webhooks/status", status)):
        app.router.add_get(path, handler, allow_head=False)
        app.router.add_post(path, handler)
