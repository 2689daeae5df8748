"""Typed application keys: app state is wiring only, set once in create_app from the one object graph."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

from smsbot.clock import Clock
from smsbot.gateway import Gateway
from smsbot.keys import Keys
from smsbot.metrics import Metrics
from smsbot.outbox import Outbox
from smsbot.pipeline import Pipeline
from smsbot.settings import Settings
from smsbot.signin import SignIn
from smsbot.store import Store

from .devphone import DevPhones
from .routes import Routes

if TYPE_CHECKING:
    from smsbot.oidc import Provider

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
PIPELINE = web.AppKey("pipeline", Pipeline)
SIGNIN = web.AppKey("signin", SignIn)
OUTBOX = web.AppKey("outbox", Outbox)
GATEWAY = web.AppKey("gateway", Gateway)
CLOCK = web.AppKey("clock", Clock)
KEYS = web.AppKey("keys", Keys)
METRICS = web.AppKey("metrics", Metrics)
DEV_PHONES = web.AppKey("dev_phones", DevPhones)
ROUTES = web.AppKey("routes", Routes)
STOPPING = web.AppKey("stopping", asyncio.Event)
OIDC: web.AppKey[Provider] = web.AppKey("oidc")  # only with SMSBOT_OIDC_CLIENTS
