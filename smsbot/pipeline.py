"""The SMS pipeline: inbound texts (whole or in parts) through the engine into the outbox, within the daily
budget and the caps on replies to each number (60 an hour to an admin's, 20 a day to any other); delivery receipts;
and the housekeeping that forgets what is no longer needed.

Each public method is one unit of work (one transaction). The web layer calls these; they never call the web.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from . import phone
from .budget import ESSENTIAL, Budget, Spent, once_per
from .clock import Clock
from .gateway import DLR_ERRORS
from .keys import Keys
from .messages import InboundPart, InboundText, Kind, Outgoing
from .settings import Settings
from .sms import commands, texts
from .sms.engine import Engine
from .store import UNDELIVERED, Action, Counted, Store, Tx
from .store.base import Standing

log = logging.getLogger(__name__)

PART_TIMEOUT = 15 * 60.0  # an incomplete multipart text is dropped this long after its first part
INBOUND_MEMORY = 7 * 86400.0  # message ids are remembered this long (Vonage retries for 24 hours)
ADMIN_REPLIES_PER_HOUR = 60  # the contract's number: replies to one admin number in any 60 minutes
REPLIES_PER_DAY = 20  # replies to any other number in any 24 hours (invites and PINs have caps of their own)
HOUR = 3600.0  # the admin cap's window


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
    budget: Budget

    # --- inbound texts ------------------------------------------------------------------------------------------

    async def receive(self, msg: InboundText) -> list[Outgoing] | None:
        """Handle one inbound text exactly once. None means the message id was seen before."""
        now = self.clock.now()
        msg = InboundText(valid_unicode(msg.message_id), msg.sender, valid_unicode(msg.text))

        key = self.keys.phone_key(msg.sender)

        async def work(tx: Tx) -> list[Outgoing] | None:
            # None: the message id was seen before. The standing holds an admin's replies of the last hour.
            standing = await tx.arrive(msg.message_id, now, key, replies_since=self._replies_since(key, now))
            if standing is None:
                return None
            return await self._handle(tx, msg, key, standing, now)

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
            return await self._handle(tx, InboundText(whole.message_id, part.sender, text), key,
                                      await tx.standing(key, replies_since=self._replies_since(key, now)), now)

        return self._handled(whole, await self.store.run(work))

    def _replies_since(self, key: str, now: float) -> float | None:
        """From when an admin number's replies count against its cap; None for any other number (nothing to count)."""
        return now - HOUR if key in self.engine.admin_keys else None

    async def _handle(self, tx: Tx, msg: InboundText, key: str, standing: Standing, now: float) -> list[Outgoing]:
        if key in self.engine.admin_keys:
            out = await self._from_admin(tx, msg, key, standing, now)
        else:
            out = await self._daily_replies(tx, msg, key, await self.engine.handle(tx, msg, key, standing), now)
        return await self.enqueue(tx, out, now)

    async def _daily_replies(self, tx: Tx, msg: InboundText, key: str, out: list[Outgoing],
                             now: float) -> list[Outgoing]:
        """Any number but an admin's gets at most 20 replies a day, so texts "from" one member's or invitee's
        number can't bombard their phone, nor use up the replies everyone shares in the budget."""
        kept = []
        for text in out:
            if text.to == msg.sender and text.kind not in ESSENTIAL:
                if await tx.count_since(key, Counted.REPLY, now - 86400) >= REPLIES_PER_DAY:
                    continue
                await tx.note(key, Counted.REPLY, now)
            kept.append(text)
        return kept

    async def _from_admin(self, tx: Tx, msg: InboundText, key: str, standing: Standing,
                          now: float) -> list[Outgoing]:
        """An admin number gets at most 60 replies in any hour, then one notice, then silence until the hour has
        passed. Past the cap its texts are not acted on, so a spoofed flood can't make the real admin's commands run
        (but STOP is honoured, silently: an opt-out is never lost)."""
        hour_ago = now - HOUR
        if standing.admin_replies < ADMIN_REPLIES_PER_HOUR:  # counted since hour_ago, read with the standing
            out = await self.engine.handle(tx, msg, key, standing)
            for text in out:
                if text.to == msg.sender and text.kind is not Kind.VERIFY:  # Verify texts the code, not us
                    await tx.note(key, Counted.ADMIN_REPLY, now)
            return out
        parsed = commands.parse(msg.text)
        if parsed is not None and parsed.command is commands.STOP:
            await self.engine.handle(tx, msg, key, standing)
        if not await once_per(tx, self.clock, key, Counted.ADMIN_CAPPED, HOUR):
            return []
        first = await tx.first_since(key, Counted.ADMIN_REPLY, hour_ago) or now
        until = texts.utc(first + HOUR)
        await tx.record_event(now, phone.mask(msg.sender), Action.ADMIN_CAPPED, f"{ADMIN_REPLIES_PER_HOUR} replies")
        log.warning("texts from admin number %s got %d replies within an hour: no more until %s UTC",
                    phone.mask(msg.sender), ADMIN_REPLIES_PER_HOUR, until)
        return [Outgoing(msg.sender, texts.ADMIN_CAPPED.format(time=until))]

    async def enqueue(self, tx: Tx, out: list[Outgoing], now: float) -> list[Outgoing]:
        """Queue texts within the daily SMS budget: texts to admins always go out and never count; past the budget,
        or past its half for replies, texts to others are held back, and admins are told once a day."""
        spent: Spent | None = None  # read only for a text to a non-admin
        kept: list[Outgoing] = []
        for text in out:
            key = self.keys.phone_key(text.to)
            if key not in self.engine.admin_keys:
                spent = spent or await self.budget.spent(tx, now)
                if not self.budget.takes(spent, (text.kind,)):
                    continue
                spent.add(text.kind)
            await tx.enqueue(to_number=text.to, phone_key=key, phone_hint=phone.mask(text.to), body=text.body,
                             kind=text.kind, now=now)
            kept.append(text)
        if len(kept) < len(out) and spent is not None:
            kept += await self.enqueue(tx, await self.budget.warnings(tx, now, spent), now)
        return kept

    def _handled(self, msg: InboundText, out: list[Outgoing] | None) -> list[Outgoing] | None:
        if out is None:
            log.info("duplicate inbound message %s ignored", msg.message_id,
                     extra={"event": "inbound-duplicate", "message_id": msg.message_id})
        else:
            # The store wakes the outbox once the texts are committed (smsbot.wiring: watch_outbox).
            number = phone.mask(msg.sender)
            log.info("text from %s handled: %d text%s queued", number, len(out), "" if len(out) == 1 else "s",
                     extra={"event": "inbound-handled", "message_id": msg.message_id, "number": number})
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
                await tx.record_event(now, "vonage", Action.UNDELIVERED,
                                      f"{kind.value} to {hint}: {status} {error}".strip())
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

    async def record_security_event(self, action: Action, detail: str) -> None:
        """An audit event from the web edge (a refused webhook signature)."""
        now = self.clock.now()
        await self.store.run(lambda tx: tx.record_event(now, "web", action, detail))
