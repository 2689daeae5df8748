"""The SMS commands, declared once: name, aliases, arguments, who may use them, one line of help, an example, and
the handler that runs them.

HELP texts, usage replies and the README's command table all come from these declarations. A handler is given as a
function of the engine's features (`lambda f: f.admin.invite`), which mypy checks against `CommandHandler`'s
signature; the engine binds every one when it is built.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the features import these declarations: the types only, for mypy
    from ..store import Tx
    from .engine import Turn
    from .features import Features

MAX_TEXT = 1000  # longer texts are not commands; multipart texts are capped by Vonage at 3200


class Role(enum.Enum):
    ADMIN = "admin"
    MEMBER = "member"
    INVITEE = "invitee"
    ANYONE = "anyone"


class Args(enum.Enum):
    NONE = "none"  # the command word alone
    OPTIONAL_WORD = "optional word"  # at most one more word
    ONE_WORD = "one word"  # exactly one more word
    REST = "rest of the text"  # one or more words, kept as typed


CommandHandler = Callable[["Tx", "Turn", str], Awaitable[None]]
Binding = Callable[["Features"], CommandHandler]  # picks the handler among the engine's features


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    help: str
    roles: frozenset[Role]
    handler: Binding
    args: Args = Args.NONE
    aliases: tuple[str, ...] = ()
    example: str = ""  # a filled-in use, shown in the usage reply
    confirmable: bool = False  # SMSBOT_CONFIRM may make it wait for YES <code>; its handler asks confirm.needed()

    @property
    def words(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def usage_reply(self) -> str:
        """What an admin who misused the command is told."""
        return f"Usage: {self.usage}" + (f", e.g. {self.example}" if self.example else "")


ADMIN = frozenset({Role.ADMIN})
EVERYONE = frozenset({Role.ANYONE})

INVITE = Command("INVITE", "INVITE <phone> [username]",
                 "text an invite code to that number; give a username or they pick one", ADMIN,
                 lambda f: f.admin.invite, Args.REST, example="INVITE +14155550134 alice", confirmable=True)
REVOKE = Command("REVOKE", "REVOKE <username|phone>", "remove a member (signing out every device) or cancel an invite",
                 ADMIN, lambda f: f.admin.revoke, Args.REST, example="REVOKE alice", confirmable=True)
LIST = Command("LIST", "LIST [page]", "members by username and pending invites, a page per text", ADMIN,
               lambda f: f.admin.list, Args.OPTIONAL_WORD, example="LIST 2")
LOG = Command("LOG", "LOG [page]", "admin actions and security events, latest first, a page per text", ADMIN,
              lambda f: f.admin.log, Args.OPTIONAL_WORD, example="LOG 2")
YES = Command("YES", "YES <code>", "confirm the command you just sent, with the code from our reply", ADMIN,
              lambda f: f.confirm.yes, Args.ONE_WORD, example="YES 4821")
JOIN = Command("JOIN", "JOIN <code>", "join with the code from your invite (the code alone works too)",
               frozenset({Role.INVITEE}), lambda f: f.invites.join, Args.ONE_WORD)
LOGIN = Command("LOGIN", "LOGIN", "get a new PIN to sign in on a device", frozenset({Role.MEMBER}),
                lambda f: f.pins.login)
DEVICES = Command("DEVICES", "DEVICES", "the devices you are signed in on, and when each was last used",
                  frozenset({Role.MEMBER}), lambda f: f.devices.show)
LOGOUT = Command("LOGOUT", "LOGOUT [username]", "sign out on every device: yours, or (admins) a member's",
                 frozenset({Role.MEMBER, Role.ADMIN}), lambda f: f.devices.logout, Args.OPTIONAL_WORD,
                 example="LOGOUT alice")
HELP = Command("HELP", "HELP [command]", "the commands you can use", EVERYONE, lambda f: f.keywords.help,
               Args.OPTIONAL_WORD, ("INFO",))
STOP = Command("STOP", "STOP", "no more texts to this phone, until you text START", EVERYONE,
               lambda f: f.keywords.stop, aliases=("STOPALL", "UNSUBSCRIBE", "END", "QUIT", "CANCEL", "OPTOUT"))
START = Command("START", "START", "texts to this phone again after STOP", EVERYONE, lambda f: f.keywords.start,
                aliases=("UNSTOP",))

COMMANDS: tuple[Command, ...] = (INVITE, REVOKE, LIST, LOG, YES, JOIN, LOGIN, DEVICES, LOGOUT, HELP, STOP, START)
ADMIN_COMMANDS: tuple[Command, ...] = tuple(c for c in COMMANDS if Role.ADMIN in c.roles)

BY_WORD: dict[str, Command] = {word: command for command in COMMANDS for word in command.words}
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Parsed:
    command: Command
    argument: str  # "" when there is none; for REST the rest of the text, whitespace squeezed


def parse(text: str) -> Parsed | None:
    """Match a text against the declared grammar exactly; anything else is not a command."""
    if len(text) > MAX_TEXT:
        return None
    words = _WORD.findall(text)
    if not words:
        return None
    if not words[0].isascii():  # 'ﬅOP' or 'ſtop' upper-case to STOP: an exact match means ASCII only
        return None
    command = BY_WORD.get(words[0].upper())
    if command is None:
        return None
    rest = words[1:]
    if command.args is Args.NONE and rest:
        return None
    if command.args is Args.OPTIONAL_WORD and len(rest) > 1:
        return None
    if command.args is Args.ONE_WORD and len(rest) != 1:
        return None
    return Parsed(command, " ".join(rest))


def first_word(text: str) -> str:
    words = _WORD.findall(text[:MAX_TEXT])
    return words[0].upper() if words else ""


def usable_by(roles: set[Role]) -> list[Command]:
    roles = roles | {Role.ANYONE}
    return [c for c in COMMANDS if c.roles & roles]


def is_reserved(word: str) -> bool:
    """Command words cannot be usernames: a reply of HELP must never become someone's name."""
    return word.upper() in BY_WORD


def markdown_table() -> str:
    """The README's SMS command table, made from the declarations (a test keeps the README in step)."""
    who = {Role.ADMIN: "admins", Role.MEMBER: "members", Role.INVITEE: "invitees", Role.ANYONE: "everyone"}
    lines = ["| command | aliases | who | what it does |", "|---|---|---|---|"]
    for c in COMMANDS:
        roles = ", ".join(who[r] for r in Role if r in c.roles)
        aliases = ", ".join(f"`{a}`" for a in c.aliases) or "-"
        usage = c.usage.replace("|", "\\|")  # a bare | would end the table cell
        lines.append(f"| `{usage}` | {aliases} | {roles} | {c.help} |")
    return "\n".join(lines)
