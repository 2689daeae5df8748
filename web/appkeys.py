"""Typed application keys: app state is wiring only, set once in create_app."""

from __future__ import annotations

from aiohttp import web

from smsbot.clock import Clock
from smsbot.gateway import Gateway
from smsbot.keys import Keys
from smsbot.outbox import Outbox
from smsbot.service import Service
from smsbot.settings import Settings
from smsbot.store import Store

from .devphone import DevPhones

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
SERVICE = web.AppKey("service", Service)
OUTBOX = web.AppKey("outbox", Outbox)
GATEWAY = web.AppKey("gateway", Gateway)
KEYS = web.AppKey("keys", Keys)
CLOCK = web.AppKey("clock", Clock)
DEV_PHONES = web.AppKey("dev_phones", DevPhones)
