"""The SMS conversation engine: one inbound text in, state changes and texts to send out.

It never touches HTTP. It works inside one store transaction, so a text's effects and its replies commit together.
This module holds the dispatch and the declared conversation: the states, what each takes (`STATE_TABLE`) and
where each goes (`TRANSITIONS`, drawn in conversations/README.md by `mermaid()`). What each command and state does
lives with its feature: `keywords` (STOP, START, HELP), `admin`, `confirm` (YES), `invites` and `pins`.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import phone
from ..clock import Clock
from ..keys import Keys
from ..messages import InboundText, Kind, Outgoing
from ..store import Invite, Member, Stage, Tx
from ..store.base import Standing
from . import commands
from .commands import ADMIN_COMMANDS, DEVICES, HELP, JOIN, LOGIN, START, STOP, Command, CommandHandler, Parsed, Role

if TYPE_CHECKING:  # the features import Turn from here: the type only, for mypy
    from .features import Features

log = logging.getLogger(__name__)


class State(enum.Enum):
    """A phone's state, derived for every text: opted out, else an admin's command waiting for YES, else member,
    else the invite's (expired, or its stage), else stranger."""

    STRANGER = "stranger"
    AWAITING_CODE = Stage.AWAITING_CODE.value
    AWAITING_USERNAME = Stage.AWAITING_USERNAME.value
    EXPIRED = "expired"
    MEMBER = "member"
    AWAITING_YES = "awaiting_yes"  # an admin (member or not) whose command waits for YES <code>
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
    State.AWAITING_YES: Step((*KEYWORDS, *ADMIN_COMMANDS, LOGIN, DEVICES), (lambda f: f.admin.unknown,)),
}


@dataclass(frozen=True)
class Transition:
    source: State
    on: str  # what moves the phone, as the diagram says it
    target: State


S = State
TRANSITIONS: tuple[Transition, ...] = tuple(Transition(*row) for row in (
    (S.STRANGER, "admin INVITE phone (invite text with a code)", S.AWAITING_CODE),
    (S.AWAITING_CODE, "admin INVITE again (new code, old one dead) / a wrong code", S.AWAITING_CODE),
    (S.AWAITING_CODE, "right code, admin gave a free username (PIN sent)", S.MEMBER),
    (S.AWAITING_CODE, "right code, no username given (bot asks for one)", S.AWAITING_USERNAME),
    (S.AWAITING_USERNAME, "name invalid or taken (bot asks again)", S.AWAITING_USERNAME),
    (S.AWAITING_USERNAME, "a valid, free username (PIN sent)", S.MEMBER),
    (S.AWAITING_USERNAME, "admin INVITE again", S.AWAITING_CODE),
    (S.AWAITING_CODE, "too many wrong codes (invite cancelled) / admin REVOKE (invite cancelled)", S.STRANGER),
    (S.AWAITING_USERNAME, "admin REVOKE (invite cancelled)", S.STRANGER),
    (S.AWAITING_CODE, "invite_ttl_hours pass", S.EXPIRED),
    (S.AWAITING_USERNAME, "invite_ttl_hours pass", S.EXPIRED),
    (S.EXPIRED, "any other text (bot says the invite expired; the invite is deleted)", S.STRANGER),
    (S.EXPIRED, "admin INVITE again", S.AWAITING_CODE),
    (S.MEMBER, "LOGIN (new PIN replaces the old one)", S.MEMBER),
    (S.MEMBER, "admin REVOKE (every session ends, PIN dies)", S.STRANGER),
    (S.STRANGER, "an admin's command that SMSBOT_CONFIRM lists (bot texts a code)", S.AWAITING_YES),
    (S.MEMBER, "an admin's command that SMSBOT_CONFIRM lists (bot texts a code)", S.AWAITING_YES),
    (S.AWAITING_YES, "a wrong YES code", S.AWAITING_YES),
    (S.AWAITING_YES, "right YES code (the command runs) / too many wrong codes / YES too late, if a member",
     S.MEMBER),
    (S.AWAITING_YES, "right YES code (the command runs) / too many wrong codes / YES too late, if not",
     S.STRANGER),
    (S.STRANGER, "STOP", S.OPTED_OUT),
    (S.AWAITING_CODE, "STOP", S.OPTED_OUT),
    (S.AWAITING_USERNAME, "STOP", S.OPTED_OUT),
    (S.EXPIRED, "STOP", S.OPTED_OUT),
    (S.MEMBER, "STOP (live PIN dropped)", S.OPTED_OUT),
    (S.AWAITING_YES, "STOP", S.OPTED_OUT),
    (S.OPTED_OUT, "START, if it was a stranger", S.STRANGER),
    (S.OPTED_OUT, "START, if its invite is still pending", S.AWAITING_CODE),
    (S.OPTED_OUT, "START, if it was choosing a name", S.AWAITING_USERNAME),
    (S.OPTED_OUT, "START, if its invite ran out meanwhile", S.EXPIRED),
    (S.OPTED_OUT, "START, if it is a member", S.MEMBER),
    (S.OPTED_OUT, "START, if its command still waits for YES", S.AWAITING_YES),
))
INITIAL = State.STRANGER


def mermaid() -> str:
    """The conversation's diagram, from `TRANSITIONS` (conversations/README.md shows it; a test keeps it so)."""
    lines = ["stateDiagram-v2", f"    [*] --> {INITIAL.value}"]
    lines += [f"    {t.source.value} --> {t.target.value}: {t.on}" for t in TRANSITIONS]
    return "\n".join(lines)


class Engine:
    """Handles inbound texts according to the declared state table, with the features that implement it."""

    def __init__(self, keys: Keys, clock: Clock, admins: tuple[str, ...], features: Features):
        self.clock = clock
        self.admin_keys = frozenset(keys.phone_key(a) for a in admins)
        self.commands: dict[Command, CommandHandler] = {c: c.handler(features) for c in commands.COMMANDS}
        self.fallbacks: dict[State, tuple[Fallback, ...]] = {
            state: tuple(pick(features) for pick in step.fallbacks) for state, step in STATE_TABLE.items()}

    async def handle(self, tx: Tx, msg: InboundText, key: str, standing: Standing) -> list[Outgoing]:
        """The texts one inbound text causes; `key` is its sender's phone key, and `standing` what the store knows
        of them (`Tx.arrive` reads it with the message id), which the caller has already."""
        turn = Turn(msg, key, key in self.admin_keys, standing.member, standing.invite)
        turn.state = self._state_of(turn, standing)
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

    def _state_of(self, turn: Turn, standing: Standing) -> State:
        if standing.opted_out:
            return State.OPTED_OUT
        if turn.is_admin and turn.invite is None and standing.awaiting_yes:
            return State.AWAITING_YES
        if turn.member is not None:
            return State.MEMBER
        if turn.invite is not None:
            if turn.invite.expires_at <= self.clock.now():
                return State.EXPIRED
            return State(turn.invite.stage.value)
        return State.STRANGER

