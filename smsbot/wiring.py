"""The one place the object graph is built: from settings, plus the seams for time, the provider and randomness.

`create_app` and every test fixture build through here, so what runs in production is what the tests run.
"""

from __future__ import annotations

from dataclasses import dataclass

from .budget import Budget
from .clock import Clock
from .gateway import FakeGateway, Gateway
from .keys import Keys, SecretSource
from .metrics import Metrics
from .outbox import Outbox
from .pipeline import Pipeline
from .settings import Settings
from .signin import SignIn
from .sms import texts
from .sms.admin import Admin
from .sms.confirm import Confirmations
from .sms.devices import Devices
from .sms.engine import Engine
from .sms.features import Features
from .sms.invites import Invites
from .sms.keywords import Keywords
from .sms.pins import Pins
from .store import SqliteStore, Store


@dataclass(frozen=True)
class Graph:
    """Everything a running smsbot is made of. Nothing is opened until the store's `open()`."""

    settings: Settings
    clock: Clock
    source: SecretSource
    keys: Keys
    gateway: Gateway
    store: Store
    outbox: Outbox
    engine: Engine
    pipeline: Pipeline
    signin: SignIn
    metrics: Metrics


def default_gateway(settings: Settings) -> Gateway:
    """The fake provider in dev mode, else Vonage (imported only then, so the rest never loads the SDK)."""
    if settings.dev:
        return FakeGateway(settings.number)
    from .gateway.vonage import VonageGateway

    return VonageGateway(settings)


def open_store(settings: Settings) -> Store:
    """The store SMSBOT_DB names: PostgreSQL for a postgresql:// URL, else a SQLite file. Not opened yet."""
    if settings.postgres_url:
        from .store.postgres import PostgresStore  # only then is asyncpg loaded

        return PostgresStore(settings.postgres_url)
    return SqliteStore(settings.db_path)


def build(settings: Settings, *, clock: Clock | None = None, gateway: Gateway | None = None,
          source: SecretSource | None = None) -> Graph:
    clock = clock or Clock()
    source = source or SecretSource()
    gateway = gateway or default_gateway(settings)
    keys = Keys(settings.secret)
    metrics = Metrics(enabled=bool(settings.metrics_address))
    store = open_store(settings)
    group = texts.cut_group(settings.group_name)
    admins = {keys.phone_key(number): number for number in settings.admins}
    budget = Budget(settings, frozenset(admins))
    pins = Pins(settings, keys, clock, source, gateway, group, budget)
    confirm = Confirmations(settings, keys, clock, source, metrics)
    features = Features(keywords=Keywords(group, clock),
                        admin=Admin(settings, keys, clock, source, group, confirm, budget), confirm=confirm,
                        invites=Invites(keys, clock, pins, group, admins), pins=pins, devices=Devices(clock))
    engine = Engine(keys, clock, settings.admins, features)
    # A sender taking over from one that died without stopping waits out the requests it may still have had in
    # flight. SQLite has one instance, started again only after the last one is gone: nothing to wait for.
    handover = 1.0 + settings.vonage_timeout if store.shared and not settings.dev else 0.0  # dev: no provider
    outbox = Outbox(store, gateway, clock, settings.sms_rate, verifier=pins.start_verification,
                    pin_ttl=pins.ttl, handover=handover, metrics=metrics)
    store.watch_outbox(outbox.wake)
    pipeline = Pipeline(settings, store, engine, keys, clock, budget)
    signin = SignIn(settings, store, pins, pipeline, clock, source, keys, metrics)
    metrics.watch(store, clock, settings.daily_sms_budget, outbox.holds_sender_role)
    return Graph(settings, clock, source, keys, gateway, store, outbox, engine, pipeline, signin, metrics)
