"""Joining: an invitee redeems their code (alone or as JOIN <code>), picks a username if the admin gave none, and
becomes a member with a first PIN."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..clock import Clock
from ..keys import CODE_ALPHABET, CODE_LENGTH, Keys, same
from ..store import Action, Invite, Stage, Tx
from . import commands, texts
from .engine import Turn
from .pins import Pins

# At least one letter, so a username can never be mistaken for a phone number (REVOKE <username|phone>).
SHORTEST, LONGEST = 3, 32  # a username's length
USERNAME = re.compile(rf"^(?=.*[A-Za-z])[A-Za-z0-9_-]{{{SHORTEST},{LONGEST}}}$")
LENGTHS = {"shortest": SHORTEST, "longest": LONGEST}  # for the texts that say it
CODE = re.compile(rf"^[{CODE_ALPHABET}]{{{CODE_LENGTH}}}$")
LOOKS_LIKE_CODE = re.compile(rf"^[A-Z0-9]{{{CODE_LENGTH}}}$")
GUESS = re.compile(rf"^[A-Za-z0-9]{{{CODE_LENGTH}}}$")  # shaped like a code, if not one we could have issued
MAX_CODE_TRIES = 5
# A code as people type it: alone, or after JOIN, maybe split in two halves by a space or a dash.
TYPED_CODE = re.compile(r"^\s*(?:JOIN\s+)?([A-Za-z0-9]{3})([ -]?)([A-Za-z0-9]{3})\s*$", re.IGNORECASE)


def typed_code(text: str) -> str:
    """The code in a reply, or "" for chatter. Split in halves it must be made of code characters, so two short
    words ("hey you") are chatter, not a wrong code."""
    match = TYPED_CODE.match(text)
    if match is None:
        return ""
    first, split, second = match.groups()
    code = first + second
    return code if not split or CODE.match(code.upper()) else ""


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
    admins: Mapping[str, str]  # admin phone key to number: the inviting admin hears when their invitee joins

    async def join(self, tx: Tx, turn: Turn, argument: str) -> None:
        await self._redeem(tx, turn, typed_code(argument))

    async def code(self, tx: Tx, turn: Turn) -> bool:
        """A text while an invite waits for its code: the code alone (typed as 4YW VNK or 4YW-VNK too, with or
        without JOIN), or chatter."""
        await self._redeem(tx, turn, typed_code(turn.msg.text))
        return True

    async def _redeem(self, tx: Tx, turn: Turn, candidate: str) -> None:
        invite = turn.invite
        assert invite is not None
        if not GUESS.match(candidate):  # chatter ("hi", "ok?") is not a guess and costs no try
            turn.reply(texts.CODE_HINT.format(group=self.group))
            return
        if same(self.keys.code_hash(turn.key, candidate), invite.code_hash):
            await tx.record_event(self.clock.now(), turn.actor, Action.CODE_ACCEPTED, invite.phone_hint)
            if invite.username and not await tx.member_by_username(invite.username):
                await self._join(tx, turn, invite, invite.username)
            else:
                await tx.set_invite_stage(invite.id, Stage.AWAITING_USERNAME)
                turn.reply(texts.ASK_USERNAME.format(group=self.group, **LENGTHS))
            return
        if await tx.count_invite_try(invite.id) >= MAX_CODE_TRIES:
            await tx.remove_invite(invite.id)
            await tx.record_event(self.clock.now(), turn.actor, Action.INVITE_CANCELLED, "too many wrong codes")
            turn.reply(texts.TOO_MANY_CODES)
        else:
            turn.reply(texts.WRONG_CODE)

    async def username(self, tx: Tx, turn: Turn) -> bool:
        """A text once the code was right and the invitee still has to pick a username."""
        invite = turn.invite
        assert invite is not None
        name = turn.msg.text.strip()
        if CODE.match(name.upper()) and same(self.keys.code_hash(turn.key, name), invite.code_hash):
            turn.reply(texts.ASK_USERNAME.format(group=self.group, **LENGTHS))  # the code again: they still need a name
        elif not valid_username(name):
            turn.reply(texts.USERNAME_INVALID.format(**LENGTHS))
        elif await tx.username_taken(name):
            turn.reply(texts.USERNAME_TAKEN.format(username=name))
        else:
            await self._join(tx, turn, invite, name)
        return True

    async def expired(self, tx: Tx, turn: Turn) -> bool:
        """Any text after the invite expired: the notice, once (the invite is gone after it)."""
        assert turn.invite is not None
        await tx.remove_invite(turn.invite.id)
        await tx.record_event(self.clock.now(), turn.actor, Action.INVITE_EXPIRED, turn.invite.phone_hint)
        turn.reply(texts.INVITE_EXPIRED.format(group=self.group))
        return True

    async def _join(self, tx: Tx, turn: Turn, invite: Invite, username: str) -> None:
        now = self.clock.now()
        await tx.remove_invite(invite.id)
        member = await tx.add_member(username, turn.key, invite.phone_hint, now)
        await tx.record_event(now, turn.actor, Action.JOIN, f"{username}, invited by {invite.invited_by}")
        await self.pins.issue(tx, turn, member)
        inviter = self.admins.get(invite.invited_by_key or "")
        if inviter is not None and inviter != turn.msg.sender:  # after the PIN: the invitee's text comes first
            turn.send(inviter, texts.JOINED.format(username=username, hint=invite.phone_hint, group=self.group))
