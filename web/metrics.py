"""The metrics listener: SMSBOT_METRICS_ADDRESS gets a second site, on an app of its own, that serves
`GET /metrics` and nothing else. The main listener has no such route (404)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from smsbot.metrics import Metrics

from .appkeys import METRICS, SETTINGS

log = logging.getLogger(__name__)
SCRAPED = web.AppKey("scraped", Metrics)
# The text format every Prometheus reads (2.x included); prometheus_client's newest type says version=1.0.0.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def metrics(request: web.Request) -> web.Response:
    """The exposition, after a bounded read of the database's gauges."""
    scraped = request.app[SCRAPED]
    await scraped.refresh()
    return web.Response(body=scraped.exposition(), headers={"Content-Type": CONTENT_TYPE})


def metrics_app(scraped: Metrics) -> web.Application:
    app = web.Application()
    app[SCRAPED] = scraped
    app.router.add_get("/metrics", metrics)
    return app


async def _listener(app: web.Application) -> AsyncIterator[None]:
    listen = app[SETTINGS].metrics_listen
    assert listen is not None
    runner = web.AppRunner(metrics_app(app[METRICS]), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, listen[0], listen[1])
    await site.start()
    log.info("metrics on http://%s/metrics", app[SETTINGS].metrics_address)
    yield
    await runner.cleanup()


def setup_metrics(app: web.Application) -> None:
    """Start the metrics listener with the app, when SMSBOT_METRICS_ADDRESS is set."""
    if app[SETTINGS].metrics_listen is not None:
        app.cleanup_ctx.append(_listener)
