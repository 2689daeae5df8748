"""The one app factory, used by `smsbot serve`, `smsbot dev` and every test."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
from collections.abc import AsyncIterator

from aiohttp import web

from smsbot.clock import Clock
from smsbot.errors import DatabaseInUse, DatabaseUnavailable
from smsbot.gateway import FakeGateway, Gateway
from smsbot.keys import SecretSource
from smsbot.settings import Settings, redacted
from smsbot.wiring import build

from .answers import Answers
from .appkeys import (
    CLOCK,
    DEV_PHONES,
    GATEWAY,
    KEYS,
    METRICS,
    OIDC,
    OUTBOX,
    PIPELINE,
    ROUTES,
    SETTINGS,
    SIGNIN,
    STOPPING,
    STORE,
)
from .dev import setup_dev
from .devphone import DevPhones
from .metrics import setup_metrics
from .routes import Routes
from .security import Cookies, Csrf
from .templates import TEMPLATES, Templates
from .views import setup_views
from .webhooks import setup_webhooks

log = logging.getLogger(__name__)
HERE = pathlib.Path(__file__).parent
HOUSEKEEPING_EVERY = 60.0
LAST_SEEN_EVERY = 10.0  # seconds between writes of sessions' last use (forward auth keeps it in memory between)
WORKER_GRACE = 0.5  # seconds the outbox gets, after requests have drained, to finish a send and hand over the role


def create_app(settings: Settings, *, gateway: Gateway | None = None, clock: Clock | None = None,
               source: SecretSource | None = None, run_worker: bool = True) -> web.Application:
    """The app for `settings`, on the object graph `smsbot.wiring.build` makes; nothing is opened until it starts."""
    graph = build(settings, clock=clock, gateway=gateway, source=source)
    app = web.Application(client_max_size=256 * 1024)
    app[SETTINGS] = settings
    app[CLOCK] = graph.clock
    app[STORE] = graph.store
    app[GATEWAY] = graph.gateway
    app[OUTBOX] = graph.outbox
    app[PIPELINE] = graph.pipeline
    app[SIGNIN] = graph.signin
    app[KEYS] = graph.keys
    app[METRICS] = graph.metrics
    app[STOPPING] = asyncio.Event()  # set by `smsbot serve` at SIGTERM: each answer then closes its connection
    # Filled as the routes are registered, each with who it answers, its handler wrapped for that audience.
    routes = app[ROUTES] = Routes(Answers(settings, app[STOPPING]).around)
    keys = graph.keys

    app[TEMPLATES] = Templates()
    cookies = Cookies(settings)
    setup_views(app, cookies, Csrf(keys, cookies))
    setup_webhooks(app)
    if settings.oidc_clients:  # PyJWT and cryptography's keys are imported only for an OIDC provider
        from .oidc import setup_oidc

        setup_oidc(app)
    routes.files(app, "/static", HERE / "static")
    if settings.dev:
        phones = DevPhones()
        app[DEV_PHONES] = phones
        if isinstance(graph.gateway, FakeGateway):
            graph.gateway.listeners.append(phones.on_sent)
        setup_dev(app)
    routes.fallback(app)  # last: what no route matched

    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_last_seen_writer)
    app.cleanup_ctx.append(_gateway)
    app.cleanup_ctx.append(_late_sign_ins)
    setup_metrics(app)
    if run_worker:
        app.cleanup_ctx.append(_outbox_worker)
        app.cleanup_ctx.append(_housekeeping)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    store, settings = app[STORE], app[SETTINGS]
    try:
        await store.open()
    except DatabaseInUse:
        raise  # its message names the file and the way out, and holds no secret
    except Exception as exc:
        # The driver's error may echo what it was given: say what failed, with the URL's secrets masked.
        reason = redacted(f"{type(exc).__name__}: {exc}", settings.secrets())
        raise DatabaseUnavailable(f"cannot open the database {settings.database}: {reason}") from None
    log.info("database %s ready (schema version %d)", settings.database, await store.schema_version())
    yield
    await store.close()


async def _last_seen_writer(app: web.Application) -> AsyncIterator[None]:
    """Sessions' last use is written behind, in one batch every few seconds, and once more at stop."""
    signin = app[SIGNIN]

    async def every_few_seconds() -> None:
        while True:
            await asyncio.sleep(LAST_SEEN_EVERY)
            try:
                await signin.save_last_seen()
            except Exception:
                log.exception("could not write sessions' last use; trying again")

    task = asyncio.create_task(every_few_seconds(), name="last-seen")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await signin.save_last_seen()


async def _gateway(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[GATEWAY].close()


async def _late_sign_ins(app: web.Application) -> AsyncIterator[None]:
    """Sign-ins answered before their Verify check came back are settled before the gateway and database close."""
    yield
    settings = app[SETTINGS]
    await app[SIGNIN].settle_late(min(settings.vonage_timeout, settings.shutdown_timeout))


async def _housekeeping(app: web.Application) -> AsyncIterator[None]:
    async def every_minute() -> None:
        while True:
            try:
                await app[PIPELINE].housekeeping()
                if OIDC in app:
                    await app[OIDC].housekeeping()  # expired codes and tokens
            except Exception:
                log.exception("housekeeping failed; trying again in a minute")
            await asyncio.sleep(HOUSEKEEPING_EVERY)

    task = asyncio.create_task(every_minute(), name="housekeeping")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _outbox_worker(app: web.Application) -> AsyncIterator[None]:
    """The worker is told to stop when shutdown begins, and finishes the text it is sending while in-flight
    requests drain; only one still stuck after that is cut off (it goes out again after the next start)."""
    outbox = app[OUTBOX]
    task = asyncio.create_task(outbox.run(), name="outbox")

    async def stop_sending(app: web.Application) -> None:
        outbox.stop()

    app.on_shutdown.append(stop_sending)
    yield
    outbox.stop()
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), WORKER_GRACE)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
