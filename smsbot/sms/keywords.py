"""The words everyone may text: STOP and START (carrier compliance) and HELP, and the silence strangers get."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from ..clock import Clock
from ..messages import Kind, fits_one_segment
from ..store import Action, Counted, Tx
from . import commands, texts
from .commands import JOIN, Role
from .engine import State, Turn
from .invites import LENGTHS

log = logging.getLogger(__name__)

# Strangers' replies a day: spoofed senders can't make us a pump. STOP and START confirmations have their own,
# larger allowance, so a stranger who asked for HELP still gets the STOP confirmation compliance requires.
STRANGER_HELP_PER_DAY = 3
STRANGER_OPT_REPLIES_PER_DAY = 10
STRANGER_REPLIES_PER_DAY = STRANGER_HELP_PER_DAY + STRANGER_OPT_REPLIES_PER_DAY
# Strangers' STOP and START are logged apart, and those in a row are one event with a count: however many numbers
# a spoofer uses, they can't push the other events out of the latest ones that LOG reads.
STRANGER_OPT = (Action.STRANGER_OPT_OUT, Action.STRANGER_OPT_IN)


@functools.cache  # a handful of role sets, and the text depends on nothing else: made once each, not every HELP
def help_text(roles: frozenset[Role]) -> str:
    """The commands `roles` may use, with their arguments when that fits one text, else their names (HELP <command>
    tells more)."""
    shown = [c for c in commands.usable_by(set(roles)) if c is not JOIN]  # the code alone works too
    full = texts.HELP_ROLE.format(usages=", ".join(c.usage for c in shown))
    return full if fits_one_segment(full) else texts.HELP_ROLE.format(usages=", ".join(c.name for c in shown))


@dataclass(eq=False)
class Keywords:
    group: str
    clock: Clock

    async def _may_answer(self, tx: Tx, turn: Turn, action: Counted, per_day: int) -> bool:
        """Strangers get a few replies a day; everyone else always gets one."""
        if turn.roles != {Role.ANYONE}:
            return True
        now = self.clock.now()
        if await tx.count_since(turn.key, action, now - 86400) >= per_day:
            return False
        await tx.note(turn.key, action, now)
        return True

    async def _opt_event(self, tx: Tx, turn: Turn, action: Action, stranger: Action) -> None:
        now = self.clock.now()
        if turn.roles != {Role.ANYONE}:
            await tx.record_event(now, turn.actor, action)
        elif not await tx.count_into_last_event(STRANGER_OPT, now):
            await tx.record_event(now, turn.actor, stranger)

    async def stop(self, tx: Tx, turn: Turn, argument: str) -> None:
        if await tx.opt_out(turn.key, self.clock.now()):
            if turn.member is not None:
                await tx.remove_pin(turn.member.id)
            await self._opt_event(tx, turn, Action.OPT_OUT, Action.STRANGER_OPT_OUT)
            if await self._may_answer(tx, turn, Counted.STRANGER_OPT_REPLY, STRANGER_OPT_REPLIES_PER_DAY):
                turn.reply(texts.STOPPED.format(group=self.group), kind=Kind.STOP)

    async def start(self, tx: Tx, turn: Turn, argument: str) -> None:
        if await tx.opt_in(turn.key):
            await self._opt_event(tx, turn, Action.OPT_IN, Action.STRANGER_OPT_IN)
            if await self._may_answer(tx, turn, Counted.STRANGER_OPT_REPLY, STRANGER_OPT_REPLIES_PER_DAY):
                turn.reply(texts.STARTED.format(group=self.group))

    async def help(self, tx: Tx, turn: Turn, argument: str) -> None:
        roles = turn.roles
        if roles == {Role.ANYONE}:
            if await self._may_answer(tx, turn, Counted.STRANGER_HELP, STRANGER_HELP_PER_DAY):
                turn.reply(texts.HELP_STRANGER.format(group=self.group))
            return
        if roles == {Role.ANYONE, Role.INVITEE}:
            template = texts.ASK_USERNAME if turn.state is State.AWAITING_USERNAME else texts.HELP_INVITEE
            turn.reply(template.format(group=self.group, **LENGTHS))
            return
        usable = commands.usable_by(roles)
        asked = commands.BY_WORD.get(argument.upper()) if argument else None
        if asked is not None and asked in usable:
            turn.reply(texts.HELP_COMMAND.format(usage=asked.usage, help=asked.help))
        else:
            turn.reply(help_text(frozenset(roles)))

    async def silence(self, tx: Tx, turn: Turn) -> bool:
        log.info("no reply to a text from %s in state %s", turn.actor, turn.state.value)
        return True
