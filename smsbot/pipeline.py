"""The SMS pipeline: inbound texts (whole or in parts) through the engine into the outbox, within the daily
budget; delivery receipts; and the housekeeping that forgets what is no longer needed.

Each public method is one unit of work (one transaction). The web layer calls these; they never call the web.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from . import phone, texts
from .clock import Clock
from .engine import Engine
from .gateway import DLR_ERRORS
from .keys import Keys
from .messages import InboundPart, InboundText, Kind, Outgoing
from .settings import Settings
from .store import UNDELIVERED, Store, Tx

log = logging.getLogger(__name__)

PART_TIMEOUT = 15 * 60.0  # an incomplete multipart text is dropped this long after its first part
INBOUND_MEMORY = 7 * 86400.0  # message ids are remembered this long (Vonage retries for 24 hours)


def valid_unicode(text: str) -> str:
    """Lone surrogates (JSON can carry them) can't be stored as UTF-8; they become '?'."""
    return text.encode("utf-8", "replace").decode("utf-8")


@dataclass(eq=False)
class Pipeline:
    settings: Settings
    store: Store
    engine: Engine
    keys: Keys
    clock: Clock

    # --- inbound texts ------------------------------------------------------------------------------------------

    async def receive(self, msg: InboundText) -> list[Outgoing] | None:
        """Handle one inbound text exactly once. None means the message id was seen before."""
        now = self.clock.now()
        msg = InboundText(valid_unicode(msg.message_id), msg.sender, valid_unicode(msg.text))

        async def work(tx: Tx) -> list[Outgoing] | None:
            if not await tx.record_inbound(msg.message_id, now):
                return None
            return await self._handle(tx, msg, now)

        return self._handled(msg, await self.store.run(work))

    async def receive_part(self, part: InboundPart) -> list[Outgoing] | None:
        """Keep one part of a multipart text; when the last part arrives, handle the whole text once."""
        now = self.clock.now()
        part = InboundPart(valid_unicode(part.message_id), part.sender, valid_unicode(part.text),
                           valid_unicode(part.ref), part.total, part.part)
        key = self.keys.phone_key(part.sender)
        whole = InboundText(f"{part.message_id}+parts", part.sender, "")

        async def work(tx: Tx) -> list[Outgoing] | None:
            if not await tx.record_inbound(part.message_id, now):
                return None
            await tx.add_part(phone_key=key, ref=part.ref, total=part.total, part=part.part, text=part.text, now=now)
            parts = await tx.parts(key, part.ref)
            if {p for p, _, _ in parts} != set(range(1, part.total + 1)):
                return []  # wait for the rest
            await tx.remove_parts(key, part.ref)
            text = "".join(t for _, _, t in parts)
            return await self._handle(tx, InboundText(whole.message_id, part.sender, text), now)

        return self._handled(whole, await self.store.run(work))

    async def _handle(self, tx: Tx, msg: InboundText, now: float) -> list[Outgoing]:
        return await self.enqueue(tx, await self.engine.handle(tx, msg), now)

    async def enqueue(self, tx: Tx, out: list[Outgoing], now: float) -> list[Outgoing]:
        """Queue texts within the daily SMS budget: past it, only texts to admins go out, and admins are told once."""
        day_start = now - now % 86400
        queued: int | None = None  # counted only for a text to a non-admin: admins' texts are never held back
        kept: list[Outgoing] = []
        for text in out:
            key = self.keys.phone_key(text.to)
            if key not in self.engine.admin_keys:
                if queued is None:
                    queued = await tx.texts_queued_since(day_start)
                if queued >= self.settings.daily_sms_budget:
                    continue
            await tx.enqueue(to_number=text.to, phone_key=key, phone_hint=phone.mask(text.to), body=text.body,
                             kind=text.kind, now=now)
            if queued is not None:
                queued += 1
            kept.append(text)
        if len(kept) < len(out) and not await tx.event_since("budget-reached", day_start):
            budget = self.settings.daily_sms_budget
            await tx.record_event(now, "smsbot", "budget-reached", f"{budget} texts")
            log.warning("daily SMS budget of %d texts reached: only texts to admins go out until midnight UTC",
                        budget)
            warning = [Outgoing(a, texts.BUDGET_REACHED.format(budget=budget)) for a in self.settings.admins]
            kept += await self.enqueue(tx, warning, now)
        return kept

    def _handled(self, msg: InboundText, out: list[Outgoing] | None) -> list[Outgoing] | None:
        if out is None:
            log.info("duplicate inbound message %s ignored", msg.message_id,
                     extra={"event": "inbound-duplicate", "message_id": msg.message_id})
        else:
            # The store wakes the outbox once the texts are committed (smsbot.wiring: watch_outbox).
            log.info("text from %s handled: %d text%s queued", phone.mask(msg.sender), len(out),
                     "" if len(out) == 1 else "s", extra={"event": "inbound-handled", "message_id": msg.message_id,
                                                          "number": phone.mask(msg.sender)})
        return out

    async def record_delivery(self, *, client_ref: str, provider_id: str, status: str, error_code: str) -> bool:
        """Note a delivery receipt; an undelivered invite or PIN is logged and shown to admins in LIST."""
        now = self.clock.now()
        status = status.lower()
        meaning = DLR_ERRORS.get(error_code, f"error {error_code}") if error_code not in ("", "0") else ""
        error = f"{error_code}: {meaning}" if meaning else ""

        async def work(tx: Tx) -> tuple[Kind, str] | None:
            found = await tx.record_delivery(client_ref=client_ref, provider_id=provider_id, status=status,
                                             error=error, now=now)
            if found is not None and status in UNDELIVERED:
                kind, hint = found
                await tx.record_event(now, "vonage", "undelivered", f"{kind.value} to {hint}: {status} {error}".strip())
            return found

        found = await self.store.run(work)
        if found is None:
            log.info("delivery receipt for an unknown text (%s) ignored", client_ref or provider_id)
        elif status in UNDELIVERED:
            log.warning("%s text to %s was not delivered: %s (Vonage error %s)", found[0].value, found[1], status,
                        error or "none given")
        return found is not None

    async def housekeeping(self) -> None:
        """Drop incomplete multipart texts and unconfirmed commands past their time; forget old message ids."""
        now = self.clock.now()

        async def work(tx: Tx) -> tuple[int, int]:
            dropped = await tx.drop_stale_parts(now - PART_TIMEOUT)
            await tx.forget_inbound_before(now - INBOUND_MEMORY)
            await tx.forget_counts_before(now - 2 * 86400)
            return dropped, await tx.drop_expired_confirmations(now)

        dropped, unconfirmed = await self.store.run(work)
        if dropped:
            log.warning("dropped %d part(s) of multipart texts that never completed within %d minutes", dropped,
                        PART_TIMEOUT // 60)
        if unconfirmed:
            # Their argument may hold a number: leave no copy of it in the write-ahead log either.
            await self.store.scrub()
            log.info("dropped %d admin command(s) that waited for YES in vain", unconfirmed)

    async def record_security_event(self, action: str, detail: str) -> None:
        """An audit event from the web edge (a refused webhook signature)."""
        now = self.clock.now()
        await self.store.run(lambda tx: tx.record_event(now, "web", action, detail))
