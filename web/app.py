"""The one app factory, used by `smsbot serve`, `smsbot dev` and every test."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
from collections.abc import AsyncIterator

import aiohttp_jinja2
import jinja2
from aiohttp import web

from smsbot.clock import Clock
from smsbot.gateway import FakeGateway, Gateway, VonageGateway
from smsbot.keys import Keys, SecretSource
from smsbot.outbox import Outbox
from smsbot.service import Service
from smsbot.settings import Settings
from smsbot.store import Store

from .appkeys import CLOCK, DEV_PHONES, GATEWAY, KEYS, OUTBOX, SERVICE, SETTINGS, STORE
from .dev import setup_dev
from .devphone import DevPhones
from .security import Cookies, Csrf, setup_security
from .views import setup_views
from .webhooks import setup_webhooks

log = logging.getLogger(__name__)
HERE = pathlib.Path(__file__).parent
HOUSEKEEPING_EVERY = 60.0
WORKER_GRACE = 0.5  # seconds the outbox gets, after requests have drained, to finish a send


def create_app(settings: Settings, *, gateway: Gateway | None = None, clock: Clock | None = None,
               source: SecretSource | None = None, run_worker: bool = True) -> web.Application:
    """Wire the service for `settings`; nothing is opened until the app starts."""
    clock = clock or Clock()
    source = source or SecretSource()
    if gateway is None:
        gateway = FakeGateway(settings.number) if settings.dev else VonageGateway(settings)
    keys = Keys(settings.secret)
    store = Store(settings.db_path)
    outbox = Outbox.for_settings(settings, store, gateway, clock)
    app = web.Application(client_max_size=256 * 1024)
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[KEYS] = keys
    app[STORE] = store
    app[GATEWAY] = gateway
    app[OUTBOX] = outbox
    app[SERVICE] = Service(settings, store, outbox, clock, source, keys)

    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    setup_security(app, settings)
    cookies = Cookies(settings)
    setup_views(app, cookies, Csrf(keys, cookies))
    setup_webhooks(app)
    app.router.add_static("/static", HERE / "static")
    if settings.dev:
        phones = DevPhones()
        app[DEV_PHONES] = phones
        if isinstance(gateway, FakeGateway):
            gateway.listeners.append(phones.on_sent)
        setup_dev(app)

    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_gateway)
    if run_worker:
        app.cleanup_ctx.append(_outbox_worker)
        app.cleanup_ctx.append(_housekeeping)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    await store.open()
    log.info("database %s ready (schema version %d)", store.path, await store.schema_version())
    yield
    await store.close()


async def _gateway(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[GATEWAY].close()


async def _housekeeping(app: web.Application) -> AsyncIterator[None]:
    async def every_minute() -> None:
        while True:
            try:
                await app[SERVICE].housekeeping()
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
