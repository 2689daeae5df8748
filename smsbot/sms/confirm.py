"""Confirmation of admin commands: a command listed in SMSBOT_CONFIRM waits for `YES <code>` from the same admin.

The sender of a text is not authenticated end to end: a spoofed text can arrive, correctly signed by Vonage, "from"
an admin's number. The code goes to the real admin's phone, which the spoofer can't read, and the unexpected
question warns the admin. Only a keyed hash of the code is kept; the command's argument (which may hold a number)
only until the command runs or is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import phone
from ..budget import once_per
from ..clock import Clock
from ..keys import CONFIRM_LENGTH, Keys, SecretSource, same
from ..metrics import Metrics
from ..settings import Settings
from ..store import Action, Counted, Tx
from . import commands, texts
from .commands import Command, Parsed
from .engine import Turn

CONFIRM_MINUTES = 10
CONFIRM_TRIES = 3
ASKED_PER_HOUR = 6
WRONG_PER_DAY = 10  # wrong codes from one admin number in any 24 hours, then its confirmable commands are refused
LOCK_SECONDS = 86400.0


@dataclass(eq=False)
class Confirmations:
    settings: Settings
    keys: Keys
    clock: Clock
    source: SecretSource
    metrics: Metrics = field(default_factory=lambda: Metrics(enabled=False))

    def needed(self, turn: Turn, command: Command) -> bool:
        assert command.confirmable, f"{command.name} is not declared confirmable"
        confirmed = turn.confirmed is not None and turn.confirmed.command is command
        return command.name in self.settings.confirm and not confirmed

    async def hold(self, tx: Tx, turn: Turn, command: Command, argument: str, what: str) -> None:
        """Keep the command until YES; reply with `what` it will do and the code. A few an hour per admin: a spoofer
        who sends command after command, each with three YES guesses, gets no more codes to guess."""
        now = self.clock.now()
        if await tx.count_since(turn.key, Counted.CONFIRM_LOCKED, now - LOCK_SECONDS):
            return  # refused after too many wrong codes: the number was told once, when it happened
        if await tx.count_since(turn.key, Counted.CONFIRM_ASKED, now - 3600) >= ASKED_PER_HOUR:
            self.metrics.confirmations.inc("capped")
            if await once_per(tx, self.clock, turn.key, Counted.CONFIRM_CAPPED, 3600):  # said and logged once an hour
                await tx.record_event(now, turn.actor, Action.CONFIRM_CAPPED, command.name)
                turn.reply(texts.CONFIRM_CAPPED)
            return
        await tx.note(turn.key, Counted.CONFIRM_ASKED, now)
        code = self.source.confirm_code()
        await tx.put_confirmation(admin_key=turn.key, command=command.name, argument=argument,
                                  code_hash=self.keys.confirm_hash(turn.key, code), now=now,
                                  expires_at=now + CONFIRM_MINUTES * 60)
        await tx.record_event(now, turn.actor, Action.CONFIRM_ASKED, command.name)
        self.metrics.confirmations.inc("asked")
        turn.reply(texts.CONFIRM.format(what=what, code=code, minutes=CONFIRM_MINUTES))

    async def yes(self, tx: Tx, turn: Turn, argument: str) -> None:
        now = self.clock.now()
        pending = await tx.confirmation_of(turn.key)
        if pending is None:
            turn.reply(texts.NOTHING_TO_CONFIRM)
            return
        if pending.expires_at <= now:
            await tx.remove_confirmation(turn.key)
            await tx.record_event(now, turn.actor, Action.CONFIRM_EXPIRED, pending.command)
            self.metrics.confirmations.inc("expired")
            turn.reply(texts.CONFIRM_EXPIRED.format(command=pending.command, minutes=CONFIRM_MINUTES))
            return
        right = phone.is_number(argument) and len(argument) == CONFIRM_LENGTH
        if not (right and same(self.keys.confirm_hash(turn.key, argument), pending.code_hash)):
            await tx.note(turn.key, Counted.CONFIRM_WRONG, now)
            self.metrics.confirmations.inc("wrong")
            if await tx.count_since(turn.key, Counted.CONFIRM_WRONG, now - 86400) >= WRONG_PER_DAY:
                await self._lock(tx, turn, pending.command)
            elif await tx.count_confirmation_try(turn.key) >= CONFIRM_TRIES:
                await tx.remove_confirmation(turn.key)
                await tx.record_event(now, turn.actor, Action.CONFIRM_DROPPED, pending.command)
                self.metrics.confirmations.inc("dropped")
                turn.reply(texts.CONFIRM_DROPPED.format(command=pending.command, tries=CONFIRM_TRIES))
            else:
                turn.reply(texts.CONFIRM_WRONG)
            return
        await tx.remove_confirmation(turn.key)
        await tx.record_event(now, turn.actor, Action.CONFIRMED, pending.command)
        self.metrics.confirmations.inc("confirmed")
        turn.confirmed = Parsed(commands.BY_WORD[pending.command], pending.argument)  # the engine runs it next

    async def _lock(self, tx: Tx, turn: Turn, command: str) -> None:
        """Ten wrong codes in a day: the waiting command is dropped and the number's confirmable commands are refused
        for the next 24 hours; it hears so once, and so does every other admin."""
        now = self.clock.now()
        await tx.remove_confirmation(turn.key)
        await tx.note(turn.key, Counted.CONFIRM_LOCKED, now)
        await tx.record_event(now, turn.actor, Action.CONFIRM_LOCKED, command)
        until = texts.utc(now + LOCK_SECONDS, day=True)
        turn.reply(texts.CONFIRM_LOCKED.format(wrong=WRONG_PER_DAY, until=until))
        for admin in self.settings.admins:
            if admin != turn.msg.sender:
                turn.send(admin, texts.CONFIRM_LOCKED_ADMINS.format(number=phone.mask(turn.msg.sender),
                                                                    wrong=WRONG_PER_DAY, until=until))
