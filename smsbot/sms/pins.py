"""PINs, in both modes: issued when a member joins or texts LOGIN, and checked at sign-in.

In sms mode smsbot makes the PIN, texts it and keeps only its keyed hash. In verify mode Vonage Verify v2 makes and
texts the code: the engine queues a body-less VERIFY text, the outbox has this module start the verification (and
keeps only its request id), and sign-in asks Vonage whether a code is right.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..budget import Budget, once_per
from ..clock import Clock
from ..gateway import Check, Gateway, SendError, VerifyConflict
from ..keys import PIN_LENGTH, Keys, SecretSource, same
from ..messages import Kind
from ..phone import is_number
from ..settings import Settings
from ..store import Action, Counted, Member, Pin, Tx
from . import texts
from .engine import Turn

log = logging.getLogger(__name__)

MAX_PIN_TRIES = 5
PIN_TTL_MINUTES = 10  # not a setting: the README, the texts and the transcripts promise 10 minutes


@dataclass(eq=False)
class Pins:
    settings: Settings
    keys: Keys
    clock: Clock
    source: SecretSource
    gateway: Gateway
    group: str
    budget: Budget

    @property
    def verify(self) -> bool:
        return self.settings.pin_via == "verify"

    @property
    def ttl(self) -> float:
        return PIN_TTL_MINUTES * 60.0

    # --- by SMS ------------------------------------------------------------------------------------------------

    async def login(self, tx: Tx, turn: Turn, argument: str) -> None:
        """LOGIN: a new PIN for a new device, unless the member is locked out."""
        assert turn.member is not None
        if turn.member.locked_at is not None:
            if await once_per(tx, self.clock, turn.key, Counted.LOCKED_REPLY, 3600):
                turn.reply(texts.LOCKED)
            return
        await self.issue(tx, turn, turn.member)

    async def member_hint(self, tx: Tx, turn: Turn) -> bool:
        turn.reply(texts.MEMBER_HINT)
        return True

    async def issue(self, tx: Tx, turn: Turn, member: Member) -> None:
        """A new PIN replaces any live one, within the per-number caps. A PIN the daily budget can't send is not
        made at all: the live PIN stays, and the caps are not spent."""
        now = self.clock.now()
        hour = await tx.count_since(turn.key, Counted.PIN, now - 3600)
        day = await tx.count_since(turn.key, Counted.PIN, now - 86400)
        if hour >= self.settings.pin_cap_hour or day >= self.settings.pin_cap_day:
            daily = day >= self.settings.pin_cap_day
            if await once_per(tx, self.clock, turn.key, Counted.PIN_CAP_DAY if daily else Counted.PIN_CAP_HOUR,
                              86400 if daily else 3600):  # said and logged once, however many LOGINs come
                await tx.record_event(now, turn.actor, Action.PIN_CAPPED, member.username)
                turn.reply(texts.PIN_CAP_DAY if daily else texts.PIN_CAP)
            return
        if turn.key not in self.budget.admin_keys:
            spent = await self.budget.spent(tx, now)
            if not self.budget.takes(spent, (Kind.PIN, Kind.VERIFY) if self.verify else (Kind.PIN,)):
                turn.out += await self.budget.warnings(tx, now, spent)
                return
        await tx.note(turn.key, Counted.PIN, now)
        expires_at = now + self.ttl
        details = {"group": self.group, "username": member.username, "url": self.settings.public_url,
                   "minutes": PIN_TTL_MINUTES}
        if self.verify:
            await tx.put_pin(member.id, pin_hash=None, request_id=None, now=now, expires_at=expires_at)
            turn.reply(texts.PIN_VERIFY.format(**details), kind=Kind.PIN)  # part of the PIN: never held back apart
            turn.reply("", kind=Kind.VERIFY)
        else:
            pin = self.source.pin()
            await tx.put_pin(member.id, pin_hash=self.keys.pin_hash(member.id, pin), request_id=None, now=now,
                             expires_at=expires_at)
            turn.reply(texts.PIN.format(pin=pin, **details), kind=Kind.PIN)
        await tx.record_event(now, turn.actor, Action.PIN_ISSUED, member.username)

    # --- by the outbox (verify mode) ---------------------------------------------------------------------------

    async def start_verification(self, to: str, hint: str) -> str:
        """Start a Verify v2 verification; return its request id, or raise SendError. One already in flight for the
        number is cancelled (or, when Vonage won't cancel it, reused), so a member is never stuck waiting for a
        verification they can't use."""
        timeout = max(15, min(900, int(self.ttl)))
        brand = self.group[:16]
        try:
            return await self.gateway.start_verification(to, brand, PIN_LENGTH, timeout)
        except VerifyConflict as conflict:
            if await self.gateway.cancel_verification(conflict.request_id):
                return await self.gateway.start_verification(to, brand, PIN_LENGTH, timeout)
            log.warning("reusing the verification already in flight for %s", hint)
            return conflict.request_id

    # --- at sign-in --------------------------------------------------------------------------------------------

    async def check(self, member: Member, live: Pin, pin: str) -> Check | None:
        """What the offered PIN is worth: checked here (sms mode) or by Vonage (verify mode). None when it can't be
        told now (the verification has not started, or Vonage did not answer)."""
        if live.pin_hash is not None:
            return Check.OK if same(self.keys.pin_hash(member.id, pin), live.pin_hash) else Check.WRONG
        if live.request_id is None:
            return None
        if not (is_number(pin) and len(pin) == PIN_LENGTH):
            return Check.WRONG
        try:
            return await self.gateway.check_code(live.request_id, pin)
        except SendError as exc:
            log.warning("could not check a code with Vonage Verify (%s); the member may try again", exc)
            return None

    def spend_like_a_check(self, pin: str) -> None:
        """The work a PIN check costs, for a sign-in that fails before one (timing tells nothing)."""
        self.keys.pin_hash(0, pin)
