"""The SMS conversation engine: one inbound text in, state changes and texts to send out.

It never touches HTTP. It works inside one store transaction, so a text's effects and its replies commit together.
This module holds the dispatch and the declared state table; what each command and state does lives with its
feature: `keywords` (STOP, START, HELP), `admin`, `invites` (codes and usernames) and `pins`.

Conversation states, per phone number (the diagram is in conversations/README.md):

    stranger ──INVITE by an admin──▶ awaiting_code ──code──▶ awaiting_username ──name──▶ member
                                          │   └──code (username given)───────────────────▶ member
                                          └──72 h pass──▶ expired ──any text──▶ stranger
    member ──REVOKE──▶ stranger;   anyone ──STOP──▶ opted_out ──START──▶ (previous state)
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import commands, phone
from .clock import Clock
from .commands import ADMIN_COMMANDS, DEVICES, HELP, JOIN, LOGIN, START, STOP, Command, CommandHandler, Parsed, Role
from .keys import Keys
from .messages import InboundText, Kind, Outgoing
from .store import Invite, Member, Tx

if TYPE_CHECKING:  # the features import Turn from here: the type only, for mypy
    from .features import Features

log = logging.getLogger(__name__)


class State(enum.Enum):
    STRANGER = "stranger"
    AWAITING_CODE = "awaiting_code"
    AWAITING_USERNAME = "awaiting_username"
    EXPIRED = "expired"
    MEMBER = "member"
    OPTED_OUT = "opted_out"


@dataclass
class Turn:
    """What one inbound text is handled with: who sent it, what we know of them, and what we will send."""

    msg: InboundText
    key: str
    is_admin: bool
    member: Member | None
    invite: Invite | None
    state: State = State.STRANGER
    parsed: Parsed | None = None
    confirmed: Parsed | None = None  # the held command YES <code> confirmed: the engine runs it next
    out: list[Outgoing] = field(default_factory=list)

    def reply(self, body: str, kind: Kind = Kind.REPLY) -> None:
        self.out.append(Outgoing(self.msg.sender, body, kind))

    def send(self, to: str, body: str, kind: Kind = Kind.REPLY) -> None:
        self.out.append(Outgoing(to, body, kind))

    @property
    def actor(self) -> str:
        return phone.mask(self.msg.sender)

    @property
    def roles(self) -> set[Role]:
        roles = {Role.ANYONE}
        if self.is_admin:
            roles.add(Role.ADMIN)
        if self.member is not None:
            roles.add(Role.MEMBER)
        if self.invite is not None and self.state is not State.EXPIRED:
            roles.add(Role.INVITEE)
        return roles


Fallback = Callable[[Tx, Turn], Awaitable[bool]]  # True when it answered the text


@dataclass(frozen=True)
class Step:
    """A state's row: the commands it takes (for senders with a role the command allows), then its fallbacks,
    tried in order until one answers."""

    takes: tuple[Command, ...]
    fallbacks: tuple[Callable[[Features], Fallback], ...]  # picked among the features, like command handlers


# Compliance keywords (STOP, START, HELP) come before everything else. After an invite expires, any text but STOP,
# START and an admin's command gets the expiry notice once.
KEYWORDS = (STOP, START, HELP)
STATE_TABLE: dict[State, Step] = {
    State.OPTED_OUT: Step((START,), (lambda f: f.keywords.silence,)),
    State.STRANGER: Step((*KEYWORDS, *ADMIN_COMMANDS), (lambda f: f.admin.unknown, lambda f: f.keywords.silence)),
    State.AWAITING_CODE: Step((*KEYWORDS, *ADMIN_COMMANDS, JOIN), (lambda f: f.invites.code,)),
    State.AWAITING_USERNAME: Step((*KEYWORDS, *ADMIN_COMMANDS), (lambda f: f.invites.username,)),
    State.EXPIRED: Step((STOP, START, *ADMIN_COMMANDS), (lambda f: f.invites.expired,)),
    State.MEMBER: Step((*KEYWORDS, *ADMIN_COMMANDS, LOGIN, DEVICES),
                       (lambda f: f.admin.unknown, lambda f: f.pins.member_hint)),
}


class Engine:
    """Handles inbound texts according to the declared state table, with the features that implement it."""

    def __init__(self, keys: Keys, clock: Clock, admins: tuple[str, ...], features: Features):
        self.keys = keys
        self.clock = clock
        self.admin_keys = frozenset(keys.phone_key(a) for a in admins)
        self.commands: dict[Command, CommandHandler] = {c: c.handler(features) for c in commands.COMMANDS}
        self.fallbacks: dict[State, tuple[Fallback, ...]] = {
            state: tuple(pick(features) for pick in step.fallbacks) for state, step in STATE_TABLE.items()}

    async def handle(self, tx: Tx, msg: InboundText) -> list[Outgoing]:
        key = self.keys.phone_key(msg.sender)
        turn = Turn(msg, key, key in self.admin_keys, await tx.member_by_phone(key), await tx.invite_by_phone(key))
        turn.state = await self._state_of(tx, turn)
        turn.parsed = commands.parse(msg.text)
        step = STATE_TABLE[turn.state]
        command = turn.parsed.command if turn.parsed else None
        if turn.parsed is not None and command in step.takes and command.roles & turn.roles:
            await self.commands[command](tx, turn, turn.parsed.argument)
            if turn.confirmed is not None:  # a right YES: the command it held runs now
                await self.commands[turn.confirmed.command](tx, turn, turn.confirmed.argument)
            return turn.out
        for fallback in self.fallbacks[turn.state]:
            if await fallback(tx, turn):
                break
        return turn.out

    async def _state_of(self, tx: Tx, turn: Turn) -> State:
        if await tx.is_opted_out(turn.key):
            return State.OPTED_OUT
        if turn.member is not None:
            return State.MEMBER
        if turn.invite is not None:
            if turn.invite.expires_at <= self.clock.now():
                return State.EXPIRED
            return State(turn.invite.stage)
        return State.STRANGER

