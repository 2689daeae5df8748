"""Typed application keys: app state is wiring only, set once in create_app from the one object graph."""

from __future__ import annotations

from aiohttp import web

from smsbot.clock import Clock
from smsbot.gateway import Gateway
from smsbot.keys import Keys
from smsbot.oidc import Provider
from smsbot.outbox import Outbox
from smsbot.pipeline import Pipeline
from smsbot.settings import Settings
from smsbot.signin import SignIn
from smsbot.store import Store
from smsbot.wiring import Graph

from .devphone import DevPhones

GRAPH = web.AppKey("graph", Graph)
SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
PIPELINE = web.AppKey("pipeline", Pipeline)
SIGNIN = web.AppKey("signin", SignIn)
OUTBOX = web.AppKey("outbox", Outbox)
GATEWAY = web.AppKey("gateway", Gateway)
KEYS = web.AppKey("keys", Keys)
CLOCK = web.AppKey("clock", Clock)
DEV_PHONES = web.AppKey("dev_phones", DevPhones)
OIDC = web.AppKey("oidc", Provider)  # only with SMSBOT_OIDC_CLIENTS
