"""The outbox worker: drains queued texts into the gateway, with a rate ceiling, retries and leases.

A text is written to the outbox in the same transaction as the change that caused it, so it survives a crash.
A provider outage delays texts; it never drops them. Once a text is done, its number and body are wiped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable

from .clock import Clock
from .gateway import Gateway, SendError
from .limiter import RateLimiter
from .messages import Kind
from .metrics import Metrics, code_bucket
from .store import Action, OutboxRow, Store, Tx

log = logging.getLogger(__name__)

LEASE_SECONDS = 300.0  # longer than the SDK can take on one call, retries included
BATCH = 20
BACKOFF_BASE = 2.0
BACKOFF_CAP = 300.0
GIVE_UP_AFTER = 24 * 3600.0
IDLE_POLL = 5.0
SENDER_POLL = 2.0  # seconds between an idle instance's attempts to take over sending


def backoff(attempts: int, rng: random.Random) -> float:
    """Capped exponential backoff with jitter: half fixed, half random, so retries never synchronise."""
    delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, attempts - 1))
    return float(delay / 2 + rng.uniform(0, delay / 2))


Verifier = Callable[[str, str], Awaitable[str]]  # (number, hint for logs) -> the verification's request id


class Outbox:
    """Sends what the engine queued. `verifier` starts a Verify v2 verification for a body-less VERIFY text; PINs
    and verifications not sent within `pin_ttl` seconds (the PINs' own lifetime, Pins.ttl) are given up."""

    def __init__(self, store: Store, gateway: Gateway, clock: Clock, rate: float, pin_ttl: float,
                 verifier: Verifier | None = None, rng: random.Random | None = None,
                 give_up_after: float = GIVE_UP_AFTER, handover: float = 0.0, instance: str | None = None,
                 metrics: Metrics | None = None):
        self.metrics = metrics or Metrics(enabled=False)
        self.handover = handover  # seconds a sender taking over from one that died waits (see _take_over)
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.store = store
        self.gateway = gateway
        self.clock = clock
        self.limiter = RateLimiter(rate, clock)
        self.verifier = verifier
        self.rng = rng or random.Random()
        self.give_up_after = give_up_after
        self.pin_ttl = pin_ttl
        self._wake = asyncio.Event()
        self._stopping = False
        self._role = False  # whether this instance holds the sender's role
        self._taking = asyncio.Lock()  # run() and a caller of drain_once may ask for the role at once

    def wake(self) -> None:
        self._wake.set()

    async def release_abandoned(self) -> int:
        """At start-up: texts a dead worker had claimed go back in the queue at once."""
        return await self.store.run(lambda tx: tx.release_claims())

    async def take_role(self) -> bool:
        """Become the sender unless another instance is (see _take_over); return whether this instance is."""
        async with self._taking:
            if not self._role and await self.store.claim_sender():
                await self._take_over()
                self._role = True
            return self._role

    async def drain_once(self) -> int:
        """As the sender, send every text that is due now; return how many were finished (sent, failed or
        suppressed). An instance that can't take the sender's role sends nothing."""
        finished = 0
        if self._stopping or not await self.take_role():
            return 0
        while not self._stopping and await self._still_sender():
            rows = await self.store.run(self._claim)
            if not rows:
                break
            for row in rows:
                if self._stopping or not await self._still_sender():
                    break  # the rest stay claimed; the next sender (or the next start) releases them
                finished += await self._deliver(row)
        if finished:
            await self.store.scrub()
        return finished

    async def _still_sender(self) -> bool:
        """Whether this instance still holds the sender's role: on a shared database the lock can go with its
        connection while this instance lives on, and another instance may take it."""
        if self._role and not await self.store.claim_sender():
            log.warning("this instance lost the sender's role; it stops sending until it holds the role again")
            self._role = False
        return self._role

    async def _claim(self, tx: Tx) -> list[OutboxRow]:
        return await tx.claim_due(now=self.clock.now(), lease_seconds=LEASE_SECONDS, limit=BATCH)

    async def _deliver(self, row: OutboxRow) -> int:
        if row.kind is not Kind.STOP and await self.store.run(lambda tx: tx.is_opted_out(row.phone_key)):
            await self._finish(row, "suppressed", error="recipient opted out")
            return 1
        if row.kind is Kind.VERIFY:
            return await self._verify(row)
        try:
            async with self.limiter.slot():
                started = time.monotonic()
                provider_id = await self.gateway.send_sms(row.to_number, row.body, client_ref=f"smsbot-{row.id}")
                self.metrics.observe_send(time.monotonic() - started)
        except SendError as exc:
            return await self._failed(row, exc)
        await self._finish(row, "sent", provider_id=provider_id)
        log.info("sent %s text #%d to %s (attempt %d)", row.kind.value, row.id, row.phone_hint, row.attempts,
                 extra={"event": "text-sent", "message_id": row.id, "number": row.phone_hint})
        return 1

    async def _verify(self, row: OutboxRow) -> int:
        if self.verifier is None:
            return await self._failed(row, SendError("no Verify v2 set up", transient=False, code="no-verify"))
        try:
            request_id = await self.verifier(row.to_number, row.phone_hint)
        except SendError as exc:
            return await self._failed(row, exc)
        if not await self.store.run(lambda tx: tx.set_pin_request(row.phone_key, request_id)):
            log.info("verification for %s started, but its PIN was replaced or used meanwhile", row.phone_hint)
        await self._finish(row, "sent", provider_id=request_id)
        log.info("started a verification for %s (attempt %d)", row.phone_hint, row.attempts)
        return 1

    async def _failed(self, row: OutboxRow, exc: SendError) -> int:
        now = self.clock.now()
        self.metrics.send_errors.inc(code_bucket(exc.code))
        # A PIN is useless once it has expired: stop trying then, not a day later.
        limit = self.pin_ttl if row.kind in (Kind.PIN, Kind.VERIFY) else self.give_up_after
        too_old = now - row.created_at >= limit
        if exc.transient and not too_old:
            delay = backoff(row.attempts, self.rng)
            log.warning("text #%d to %s not sent (%s); retrying in %.0f s", row.id, row.phone_hint, exc, delay,
                        extra={"event": "text-retry", "message_id": row.id, "number": row.phone_hint})
            await self.store.run(lambda tx: tx.retry_outbox(row.id, next_attempt_at=now + delay, error=str(exc)))
            return 0
        reason = str(exc) if not too_old else f"gave up after {row.attempts} attempts: {exc}"
        log.error("text #%d (%s) to %s failed for good: %s", row.id, row.kind.value, row.phone_hint, reason,
                  extra={"event": "text-failed", "message_id": row.id, "number": row.phone_hint})
        await self._finish(row, "failed", error=reason)
        return 1

    async def _finish(self, row: OutboxRow, state: str, provider_id: str | None = None,
                      error: str | None = None) -> None:
        now = self.clock.now()

        async def work(tx: Tx) -> None:
            await tx.finish_outbox(row.id, state=state, now=now, provider_id=provider_id, error=error)
            if state == "failed":
                await tx.record_event(now, "outbox", Action.SEND_FAILED,
                                      f"{row.kind.value} to {row.phone_hint}: {error}")

        await self.store.run(work)
        if state == "sent":
            self.metrics.texts_sent.inc()
        elif state == "failed":
            self.metrics.texts_failed.inc()

    def holds_sender_role(self) -> bool:
        return self._role

    async def run(self) -> None:
        """The worker loop, run as a background task for the life of the app. Only the instance that holds the
        sender's role sends (one, for a database several instances share); the others wait to take it over."""
        try:
            while not self._stopping:
                self._wake.clear()
                try:
                    if await self.take_role():
                        await self.drain_once()
                    timeout = await self._seconds_to_next() if self._role else SENDER_POLL
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("outbox worker error; carrying on")
                    timeout = IDLE_POLL
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            if self._role:  # stopped between sends, not cut off in one: nothing of this sender is in flight
                await self._step_down()
        finally:
            self._role = False

    async def _take_over(self) -> None:
        """Become the sender. A sender that died without stopping may have had requests on their way to the
        provider for as long as a call may take; waiting that long (and the rate's one-second window) keeps the
        ceiling one for all. One that stopped cleanly had none, so there is nothing to wait for. Then the texts it
        had claimed go back in the queue."""
        last = await self.store.run(lambda tx: tx.take_sender(self.instance, self.clock.now()))
        if last.stopped_cleanly:
            log.info("the last sender %s stopped cleanly: sending at once", last.instance or "(none yet)")
            self.limiter.count_recent(last.recent_sends)  # its last second of sends still counts
        elif self.handover:
            log.info("the last sender %s did not stop cleanly: waiting %g s for any request it had in flight",
                     last.instance or "(unknown)", self.handover)
            await self.clock.sleep(self.handover)
        released = await self.release_abandoned()
        if released:
            log.info("%d text(s) claimed by an earlier sender are queued again", released)

    async def _step_down(self) -> None:
        """A clean stop: this sender's claims go back in the queue and the role is marked stopped cleanly in one
        step, with when its sends of the last second finished (the next sender counts them against the ceiling),
        then the role is given up, so the next sender need not wait. (Cut off mid-send, it never gets here, and the
        next sender waits it out.)"""
        try:
            recent = self.limiter.recent()
            if await self.store.run(lambda tx: tx.stop_sender(self.instance, recent)):
                await self.store.release_sender()
        except Exception:
            log.exception("could not hand the sender's role over cleanly; the next sender will wait")

    async def _seconds_to_next(self) -> float:
        due = await self.store.run(lambda tx: tx.next_due_at())
        if due is None:
            return IDLE_POLL
        return min(IDLE_POLL, max(0.05, due - self.clock.now()))

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
