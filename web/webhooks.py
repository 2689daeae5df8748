"""Vonage webhooks: inbound texts (SMS API as query, form or JSON; Messages API JSON) and delivery receipts.

With VONAGE_SIGNATURE_SECRET set, every webhook must be signed: SMS API ones with `sig`, Messages API ones with an
HS256 JWT. Anything else gets 401 and changes nothing. A 2xx is sent only once the text's effects are committed.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from smsbot import phone
from smsbot.errors import BadWebhook, SignatureError
from smsbot.limiter import SlidingWindow
from smsbot.messages import InboundPart, InboundText
from smsbot.phone import is_number
from smsbot.signatures import check_jwt, check_sms
from smsbot.store import Action

from .appkeys import CLOCK, METRICS, PIPELINE, ROUTES, SETTINGS
from .routes import Audience

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_PARTS = 20


AUDIT_SIGNATURE_EVERY = 60.0  # at most one audit event a minute for refused signatures, however many arrive
SIGNATURE_AUDITS = web.AppKey("signature_audits", SlidingWindow)


async def refused(request: web.Request, reason: str) -> web.Response:
    """401, and an audit event (rate-limited, so a flood of forgeries can't flood the log table)."""
    if request.app[SIGNATURE_AUDITS].take():
        await request.app[PIPELINE].record_security_event(Action.SIGNATURE_REFUSED, f"{request.path}: {reason}")
    return web.Response(status=401, text="Bad or missing webhook signature.")


@dataclass(frozen=True)
class Webhook:
    params: dict[str, str]
    body: bytes
    messages_api: bool


async def read_webhook(request: web.Request) -> Webhook:
    """All webhook fields as strings, from the query (GET) or the body (form or JSON), checked if signing is on."""
    if request.method == "GET":
        webhook = Webhook(_clean(dict(request.query)), b"", False)
    else:
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)
        body = await request.read()
        if len(body) > MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=len(body))
        params = _json_params(body) if request.content_type == "application/json" else await _form_params(request, body)
        webhook = Webhook(params, body, "message_uuid" in params)
    _check_signature(request, webhook)
    return webhook


def _json_params(body: bytes) -> dict[str, str]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadWebhook("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadWebhook("the JSON body must be an object")
    return _clean({str(k): v if isinstance(v, str) else json.dumps(v) if isinstance(v, (dict, list)) else str(v)
                   for k, v in data.items() if v is not None})


async def _form_params(request: web.Request, body: bytes) -> dict[str, str]:
    if request.content_type not in ("application/x-www-form-urlencoded", ""):
        raise web.HTTPUnsupportedMediaType(text="Send JSON or a urlencoded form.")
    try:
        text = body.decode(request.charset or "utf-8")
    except (LookupError, UnicodeDecodeError):
        raise BadWebhook("the form is not in a known character set") from None
    return _clean(dict(urllib.parse.parse_qsl(text, keep_blank_values=True)))


def _clean(params: dict[str, str]) -> dict[str, str]:
    """Refuse what can't be stored or signed: text that is not valid Unicode (JSON can carry lone surrogates)."""
    for key, value in params.items():
        try:
            key.encode("utf-8")
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadWebhook("a field is not valid Unicode") from None
    return params


def _check_signature(request: web.Request, webhook: Webhook) -> None:
    settings = request.app[SETTINGS]
    secret = settings.vonage_signature_secret
    if not secret:
        return
    now = request.app[CLOCK].now()
    try:
        if webhook.messages_api:
            check_jwt(request.headers.get("Authorization", ""), webhook.body, secret, now)
        else:
            check_sms(webhook.params, secret, settings.vonage_signature_method, now)
    except SignatureError as exc:
        log.warning("webhook %s refused: bad signature (%s)", request.path, exc)
        raise


def parse_inbound(params: Mapping[str, str], region: str) -> InboundText | InboundPart | None:
    """The inbound text (or part of one) in `params`, or None for a well-formed message we do not act on."""
    if "message_uuid" in params:  # Messages API
        message_id, sender, text = params.get("message_uuid", ""), params.get("from", ""), params.get("text")
        if params.get("channel", "sms") != "sms" or params.get("message_type", "text") != "text":
            return None
    else:
        message_id, sender, text = params.get("messageId", ""), params.get("msisdn", ""), params.get("text")
        if params.get("type", "text") not in ("text", "unicode"):
            return None
    if not message_id or len(message_id) > 100:
        raise BadWebhook("messageId is missing")
    if not sender:
        raise BadWebhook("msisdn is missing")
    if not is_number(sender.lstrip("+")) or len(sender) > 20:
        log.info("text %s from a sender that is not a phone number ignored", message_id)
        return None
    if text is None:
        raise BadWebhook("text is missing")
    part = _part_numbers(params)
    try:
        number = phone.from_msisdn(sender, region)
    except phone.PhoneError:
        log.info("text %s from an unusable number %s ignored", message_id, phone.mask(sender))
        return None
    if part is not None:
        ref, total, index = part
        return InboundPart(message_id, number, text, ref, total, index)
    return InboundText(message_id=message_id, sender=number, text=text)


def _part_numbers(params: Mapping[str, str]) -> tuple[str, int, int] | None:
    if "concat-ref" not in params and "concat" not in params:
        return None
    ref, total, index = params.get("concat-ref", ""), params.get("concat-total", ""), params.get("concat-part", "")
    if not ref or len(ref) > 40 or not is_number(total) or not is_number(index):
        raise BadWebhook("concat-ref, concat-total and concat-part must come together")
    if not 1 <= int(index) <= int(total) <= MAX_PARTS:
        raise BadWebhook("concat-part must be between 1 and concat-total")
    return ref, int(total), int(index)


async def inbound(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    try:
        webhook = await read_webhook(request)
        msg = parse_inbound(webhook.params, settings.default_region)
    except BadWebhook as exc:
        return web.Response(status=400, text=f"Bad webhook: {exc}.")
    except SignatureError as exc:
        return await refused(request, str(exc))
    pipeline = request.app[PIPELINE]
    if isinstance(msg, InboundPart):
        await pipeline.receive_part(msg)
    elif msg is not None:
        await pipeline.receive(msg)
    return web.Response(status=204)


def parse_receipt(params: Mapping[str, str]) -> tuple[str, str, str, str]:
    """(client_ref, provider id, status, error code) of an SMS API DLR or a Messages API status callback."""
    if "message_uuid" in params:
        error = params.get("error", "")
        try:
            details = json.loads(error) if error else {}
            code = str(details.get("title") or details.get("type") or "") if isinstance(details, dict) else ""
        except ValueError:
            code = ""
        return params.get("client_ref", ""), params["message_uuid"], params.get("status", ""), code
    return (params.get("client-ref", ""), params.get("messageId", ""), params.get("status", ""),
            params.get("err-code", ""))


async def status(request: web.Request) -> web.Response:
    """Delivery receipts: each outbound text's delivery status is recorded."""
    try:
        webhook = await read_webhook(request)
        client_ref, provider_id, state, code = parse_receipt(webhook.params)
    except BadWebhook as exc:
        # The contract promises this route 200 or 204 (a receipt we can't read is not worth Vonage's retries).
        log.info("an unreadable delivery receipt ignored: %s", exc)
        return web.Response(status=204)
    except SignatureError as exc:
        return await refused(request, str(exc))
    if (client_ref or provider_id) and state:
        await request.app[PIPELINE].record_delivery(client_ref=client_ref, provider_id=provider_id, status=state,
                                                   error_code=code)
    else:
        log.info("a delivery receipt without a message id or status ignored")
    return web.Response(status=204)


Handler = Callable[[web.Request], Awaitable[web.Response]]


def counted(kind: str, handler: Handler) -> Handler:
    """The handler, with each webhook counted by its answer (2xx accepted, 401 refused, else bad) and timed."""
    async def answer(request: web.Request) -> web.Response:
        started = time.monotonic()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            metrics = request.app[METRICS]
            metrics.webhooks.inc(kind, "accepted" if status < 300 else "refused" if status == 401 else "bad")
            metrics.observe_webhook(kind, time.monotonic() - started)

    return answer


def setup_webhooks(app: web.Application) -> None:
    app[SIGNATURE_AUDITS] = SlidingWindow(1, AUDIT_SIGNATURE_EVERY, app[CLOCK])
    routes = app[ROUTES]
    for path, kind, handler in (("/webhooks/inbound", "inbound", inbound), ("/webhooks/status", "status", status)):
        routes.get(app, path, counted(kind, handler), Audience.WEBHOOK, allow_head=False)
        routes.post(app, path, counted(kind, handler), Audience.WEBHOOK)
    routes.folder("/webhooks/", Audience.WEBHOOK)
