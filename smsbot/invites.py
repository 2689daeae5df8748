"""Joining: an invitee redeems their code (alone or as JOIN <code>), picks a username if the admin gave none, and
becomes a member with a first PIN."""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import commands, texts
from .clock import Clock
from .engine import State, Turn
from .keys import CODE_ALPHABET, CODE_LENGTH, Keys, same
from .pins import Pins
from .store import Invite, Tx

# At least one letter, so a username can never be mistaken for a phone number (REVOKE <username|phone>).
USERNAME = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9_-]{3,32}$")
CODE = re.compile(rf"^[{CODE_ALPHABET}]{{{CODE_LENGTH}}}$")
LOOKS_LIKE_CODE = re.compile(rf"^[A-Z0-9]{{{CODE_LENGTH}}}$")
GUESS = re.compile(rf"^[A-Za-z0-9]{{{CODE_LENGTH}}}$")  # shaped like a code, if not one we could have issued
MAX_CODE_TRIES = 5


def valid_username(name: str) -> bool:
    """Letters, digits, _ and -; not a command word; and not shaped like an invite code (six capitals and digits),
    so the code stands alone in an invite text that names the username."""
    return bool(USERNAME.match(name)) and not commands.is_reserved(name) and not LOOKS_LIKE_CODE.match(name)


@dataclass(eq=False)
class Invites:
    keys: Keys
    clock: Clock
    pins: Pins
    group: str

    async def join(self, tx: Tx, turn: Turn, argument: str) -> None:
        await self._redeem(tx, turn, argument)

    async def code(self, tx: Tx, turn: Turn) -> bool:
        """A text while an invite waits for its code: the code alone, or chatter."""
        words = turn.msg.text.split()
        await self._redeem(tx, turn, words[0] if len(words) == 1 else "")
        return True

    async def _redeem(self, tx: Tx, turn: Turn, candidate: str) -> None:
        invite = turn.invite
        assert invite is not None
        if not GUESS.match(candidate):  # chatter ("hi", "ok?") is not a guess and costs no try
            turn.reply(texts.CODE_HINT.format(group=self.group))
            return
        if same(self.keys.code_hash(turn.key, candidate), invite.code_hash):
            await tx.record_event(self.clock.now(), turn.actor, "code-accepted", invite.phone_hint)
            if invite.username and not await tx.member_by_username(invite.username):
                await self._join(tx, turn, invite, invite.username)
            else:
                await tx.set_invite_stage(invite.id, State.AWAITING_USERNAME.value)
                turn.reply(texts.ASK_USERNAME.format(group=self.group))
            return
        if await tx.count_invite_try(invite.id) >= MAX_CODE_TRIES:
            await tx.remove_invite(invite.id)
            await tx.record_event(self.clock.now(), turn.actor, "invite-cancelled", "too many wrong codes")
            turn.reply(texts.TOO_MANY_CODES)
        else:
            turn.reply(texts.WRONG_CODE)

    async def username(self, tx: Tx, turn: Turn) -> bool:
        """A text once the code was right and the invitee still has to pick a username."""
        invite = turn.invite
        assert invite is not None
        name = turn.msg.text.strip()
        if CODE.match(name.upper()) and same(self.keys.code_hash(turn.key, name), invite.code_hash):
            turn.reply(texts.ASK_USERNAME.format(group=self.group))  # the code again: they still need a name
        elif not valid_username(name):
            turn.reply(texts.USERNAME_INVALID)
        elif await tx.username_taken(name):
            turn.reply(texts.USERNAME_TAKEN.format(username=name))
        else:
            await self._join(tx, turn, invite, name)
        return True

    async def expired(self, tx: Tx, turn: Turn) -> bool:
        """Any text after the invite expired: the notice, once (the invite is gone after it)."""
        assert turn.invite is not None
        await tx.remove_invite(turn.invite.id)
        await tx.record_event(self.clock.now(), turn.actor, "invite-expired", turn.invite.phone_hint)
        turn.reply(texts.INVITE_EXPIRED.format(group=self.group))
        return True

    async def _join(self, tx: Tx, turn: Turn, invite: Invite, username: str) -> None:
        now = self.clock.now()
        await tx.remove_invite(invite.id)
        member = await tx.add_member(username, turn.key, invite.phone_hint, now)
        await tx.record_event(now, turn.actor, "join", username)
        await self.pins.issue(tx, turn, member)
