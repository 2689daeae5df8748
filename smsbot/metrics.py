"""Prometheus metrics: counters kept where things happen, gauges read from the database when Prometheus scrapes.

Every label takes its values from a fixed set declared here, and each counter's series are made once, at start-up:
counting a label value not declared raises KeyError, so no input (a username, a number, a cookie, a provider's
error text) can add a series. Counters are plain integers, read by a collector at scrape time: forward auth counts
every answer, and an integer add costs less than a prometheus_client Counter's lock.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from .clock import Clock
from .store import Store
from .store.base import Figures

if TYPE_CHECKING:
    from .prometheus import Exposition

log = logging.getLogger(__name__)

READ_TIMEOUT = 2.0  # seconds a scrape waits for the database before it answers without the database's gauges
WEBHOOK_KINDS = ("inbound", "status")
WEBHOOK_RESULTS = ("accepted", "bad", "refused")
SIGNIN_FAILURES = ("no-live-pin", "wrong-pin", "pin-ended", "settled-meanwhile", "form-expired", "rate-limited")
PIN_RESULTS = ("right", "wrong", "ended")
CONFIRM_RESULTS = ("asked", "capped", "confirmed", "wrong", "dropped", "expired")
# Provider error codes worth a series of their own (SMS API statuses, our names, HTTP statuses); the rest: "other".
SEND_ERROR_CODES = (
    *(str(n) for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15, 22, 23, 29, 32, 33)),
    "timeout", "connection", "error", "no-verify",
    *(f"http-{n}" for n in (400, 401, 403, 404, 409, 410, 422, 429, 500, 502, 503, 504)),
    "other",
)
_KNOWN_CODES = frozenset(SEND_ERROR_CODES)


def code_bucket(code: str) -> str:
    """The label for a provider error code: the code itself when it is a known one, else "other"."""
    return code if code in _KNOWN_CODES else "other"


class Tally:
    """A counter family whose series are all made at start-up: one per combination of its labels' values."""

    def __init__(self, name: str, doc: str, labels: Mapping[str, tuple[str, ...]] | None = None):
        self.name = name
        self.doc = doc
        self.label_names = tuple(labels or {})
        self.counts: dict[tuple[str, ...], int] = dict.fromkeys(itertools.product(*(labels or {}).values()), 0)

    def inc(self, *values: str) -> None:
        self.counts[values] += 1  # KeyError for an undeclared value: the series are fixed


class Off(Tally):
    """A tally that counts nothing: metrics are off (SMSBOT_METRICS_ADDRESS unset)."""

    def inc(self, *values: str) -> None:
        pass


class Metrics:
    """This instance's metrics, on a registry of its own (several apps in one process never share series)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        tally = Tally if enabled else Off
        self.auth_checks = tally("smsbot_auth_checks", "Forward-auth answers (/auth, /auth/forward).",
                                 {"result": ("allowed", "denied")})
        self.session_cache = tally("smsbot_session_cache_lookups", "Session look-ups answered from the cache (hit) "
                                   "or not (miss: the database is asked).", {"result": ("hit", "miss")})
        self.signins = tally("smsbot_signins", "Sign-ins with a username and PIN.",
                             {"result": ("success", "failure")})
        self.signin_failures = tally("smsbot_signin_failures", "Failed sign-ins by reason.",
                                     {"reason": SIGNIN_FAILURES})
        self.pin_checks = tally("smsbot_pin_checks", "PINs checked at sign-in, by outcome.", {"result": PIN_RESULTS})
        self.lockouts = tally("smsbot_lockouts", "Members locked after too many wrong PINs in a row.")
        self.webhooks = tally("smsbot_webhooks", "Vonage webhooks received, by kind and result.",
                              {"kind": WEBHOOK_KINDS, "result": WEBHOOK_RESULTS})
        self.texts_sent = tally("smsbot_texts_sent", "Texts (and Verify v2 requests) the provider accepted.")
        self.texts_failed = tally("smsbot_texts_failed", "Texts that failed for good (no more retries).")
        self.send_errors = tally("smsbot_send_errors", "Provider calls that failed, by provider error code.",
                                 {"code": SEND_ERROR_CODES})
        self.confirmations = tally("smsbot_confirmations", "Admin confirmation questions and YES answers.",
                                   {"result": CONFIRM_RESULTS})
        self.sender_role: Callable[[], bool] = lambda: False
        self.figures: Figures | None = None  # the database's gauges, as the last scrape read them
        self.read_seconds = 0.0
        self._reading: asyncio.Future[None] | None = None
        self._store: Store | None = None
        self.clock = Clock()
        self.budget = 0
        self._exposition: Exposition | None = None
        if enabled:  # prometheus_client is imported only when metrics are on
            from .prometheus import Exposition
            self._exposition = Exposition(self, WEBHOOK_KINDS)

    def tallies(self) -> list[Tally]:
        return [t for t in vars(self).values() if isinstance(t, Tally)]

    def watch(self, store: Store, clock: Clock, budget: int, sender_role: Callable[[], bool]) -> None:
        """Where the scrape-time gauges come from."""
        self._store, self.clock, self.budget, self.sender_role = store, clock, budget, sender_role

    def observe_webhook(self, kind: str, seconds: float) -> None:
        if self._exposition is not None:
            self._exposition.webhook_seconds.labels(kind).observe(seconds)

    def observe_send(self, seconds: float) -> None:
        if self._exposition is not None:
            self._exposition.send_seconds.observe(seconds)

    async def refresh(self, timeout: float = READ_TIMEOUT) -> None:
        """Read the database's gauges, waiting at most `timeout`. Scrapes that come while a read is under way share
        it, so a slow database never has more than one of these reads queued from here."""
        if self._store is None:
            return
        if self._reading is None or self._reading.done():
            self._reading = asyncio.ensure_future(self._read(self._store))
        try:
            await asyncio.wait_for(asyncio.shield(self._reading), timeout)
        except Exception as exc:  # noqa: BLE001 (the scrape still answers: smsbot_database_up 0)
            log.warning("metrics: the database did not answer in time for a scrape (%s)", type(exc).__name__)
            self.figures = None

    async def _read(self, store: Store) -> None:
        started = time.monotonic()
        now = self.clock.now()
        self.figures = await store.run(lambda tx: tx.figures(now - now % 86400))
        self.read_seconds = time.monotonic() - started

    def exposition(self) -> bytes:
        """The metrics in Prometheus's text format (metrics must be on)."""
        if self._exposition is None:
            raise RuntimeError("metrics are off")
        return self._exposition.text()
