"""The SMS conversation engine: one inbound text in, state changes and texts to send out.

It never touches HTTP. It works inside one store transaction, so a text's effects and its replies commit together.

Conversation states, per phone number (the diagram is in conversations/README.md):

    stranger ──INVITE by an admin──▶ awaiting_code ──code──▶ awaiting_username ──name──▶ member
                                          │   └──code (username given)───────────────────▶ member
                                          └──72 h pass──▶ expired ──any text──▶ stranger
    member ──REVOKE──▶ stranger;   anyone ──STOP──▶ opted_out ──START──▶ (previous state)
"""

from __future__ import annotations

import difflib
import enum
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from . import commands, phone, texts
from .clock import Clock
from .commands import Parsed, Role
from .keys import CODE_ALPHABET, CODE_LENGTH, Keys, SecretSource, same
from .settings import Settings
from .store import Invite, Member, Tx

log = logging.getLogger(__name__)

# At least one letter, so a username can never be mistaken for a phone number (REVOKE <username|phone>).
USERNAME = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9_-]{3,32}$")
CODE = re.compile(rf"^[{CODE_ALPHABET}]{{{CODE_LENGTH}}}$")
LOOKS_LIKE_CODE = re.compile(rf"^[A-Z0-9]{{{CODE_LENGTH}}}$")
GUESS = re.compile(rf"^[A-Za-z0-9]{{{CODE_LENGTH}}}$")  # shaped like a code, if not one we could have issued
MAX_CODE_TRIES = 5
# Strangers' replies a day: spoofed senders can't make us a pump. STOP and START confirmations have their own,
# larger allowance, so a stranger who asked for HELP still gets the STOP confirmation compliance requires.
STRANGER_HELP_PER_DAY = 3
STRANGER_OPT_REPLIES_PER_DAY = 10
STRANGER_REPLIES_PER_DAY = STRANGER_HELP_PER_DAY + STRANGER_OPT_REPLIES_PER_DAY
LIST_ITEMS_PER_PAGE_LIMIT = 30


class State(enum.Enum):
    STRANGER = "stranger"
    AWAITING_CODE = "awaiting_code"
    AWAITING_USERNAME = "awaiting_username"
    EXPIRED = "expired"
    MEMBER = "member"
    OPTED_OUT = "opted_out"


@dataclass(frozen=True)
class InboundText:
    message_id: str
    sender: str  # E.164
    text: str


@dataclass(frozen=True)
class Outgoing:
    to: str  # E.164
    body: str
    kind: str  # reply, invite, pin, ...


@dataclass
class Turn:
    """What one inbound text is handled with: who sent it, what we know of them, and what we will send."""

    msg: InboundText
    key: str
    is_admin: bool
    member: Member | None
    invite: Invite | None
    state: State
    out: list[Outgoing]

    def reply(self, body: str, kind: str = "reply") -> None:
        self.out.append(Outgoing(self.msg.sender, body, kind))

    @property
    def actor(self) -> str:
        return phone.mask(self.msg.sender)


Handler = Callable[["Engine", Tx, Turn, Parsed | None], Awaitable[bool]]


def valid_username(name: str) -> bool:
    """Letters, digits, _ and -; not a command word; and not shaped like an invite code (six capitals and digits),
    so the code stands alone in an invite text that names the username."""
    return bool(USERNAME.match(name)) and not commands.is_reserved(name) and not LOOKS_LIKE_CODE.match(name)


class Engine:
    """Handles inbound texts according to the declared state table below."""

    def __init__(self, settings: Settings, keys: Keys, clock: Clock, source: SecretSource):
        self.settings = settings
        self.keys = keys
        self.clock = clock
        self.source = source
        self.admin_keys = {keys.phone_key(a) for a in settings.admins}
        self.group = texts.cut_group(settings.group_name)

    # --- entry point -------------------------------------------------------------------------------------------

    async def handle(self, tx: Tx, msg: InboundText) -> list[Outgoing]:
        key = self.keys.phone_key(msg.sender)
        turn = Turn(msg, key, key in self.admin_keys, await tx.member_by_phone(key), await tx.invite_by_phone(key),
                    State.STRANGER, [])
        turn.state = await self._state_of(tx, turn)
        parsed = commands.parse(msg.text)
        for handler in STATE_TABLE[turn.state]:
            if await handler(self, tx, turn, parsed):
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

    def roles(self, turn: Turn) -> set[Role]:
        roles = {Role.ANYONE}
        if turn.is_admin:
            roles.add(Role.ADMIN)
        if turn.member is not None:
            roles.add(Role.MEMBER)
        if turn.invite is not None and turn.state is not State.EXPIRED:
            roles.add(Role.INVITEE)
        return roles

    # --- everyone ----------------------------------------------------------------------------------------------

    async def _may_answer(self, tx: Tx, turn: Turn, action: str, per_day: int) -> bool:
        """Strangers get a few replies a day; everyone else always gets one."""
        if self.roles(turn) != {Role.ANYONE}:
            return True
        now = self.clock.now()
        if await tx.count_since(turn.key, action, now - 86400) >= per_day:
            return False
        await tx.note(turn.key, action, now)
        return True

    async def on_stop(self, tx: Tx, turn: Turn, parsed: Parsed | None) -> bool:
        if parsed is None or parsed.command.name != "STOP":
            return False
        if await tx.opt_out(turn.key, self.clock.now()):
            if turn.member is not None:
                await tx.remove_pin(turn.member.id)
            await tx.record_event(self.clock.now(), turn.actor, "opt-out")
            if await self._may_answer(tx, turn, "stranger-opt-reply", STRANGER_OPT_REPLIES_PER_DAY):
                turn.reply(texts.STOPPED.format(group=self.group), kind="stop")
        return True

    async def on_start(self, tx: Tx, turn: Turn, parsed: Parsed | None) -> bool:
        if parsed is None or parsed.command.name != "START":
            return False
        if await tx.opt_in(turn.key):
            await tx.record_event(self.clock.now(), turn.actor, "opt-in")
            if await self._may_answer(tx, turn, "stranger-opt-reply", STRANGER_OPT_REPLIES_PER_DAY):
                turn.reply(texts.STARTED.format(group=self.group))
        return True

    async def on_help(self, tx: Tx, turn: Turn, parsed: Parsed | None) -> bool:
        if parsed is None or parsed.command.name != "HELP":
            return False
        roles = self.roles(turn)
        if roles == {Role.ANYONE}:
            if await self._may_answer(tx, turn, "stranger-help", STRANGER_HELP_PER_DAY):
                turn.reply(texts.HELP_STRANGER.format(group=self.group))
            return True
        if roles == {Role.ANYONE, Role.INVITEE}:
            template = texts.ASK_USERNAME if turn.state is State.AWAITING_USERNAME else texts.HELP_INVITEE
            turn.reply(template.format(group=self.group))
            return True
        usable = commands.usable_by(roles)
        asked = commands.BY_WORD.get(parsed.argument.upper()) if parsed.argument else None
        if asked is not None and asked in usable:
            turn.reply(texts.HELP_COMMAND.format(usage=asked.usage, help=asked.help))
        else:
            usages = ", ".join(c.usage for c in usable if c.name != "JOIN")  # the code alone works too
            turn.reply(texts.HELP_ROLE.format(usages=usages))
        return True

    # --- admins ------------------------------------------------------------------------------------------------

    async def on_admin_command(self, tx: Tx, turn: Turn, parsed: Parsed | None) -> bool:
        if not turn.is_admin or parsed is None:
            return False
        action = ADMIN_ACTIONS.get(parsed.command.name)
        if action is None:
            return False
        await action(self, tx, turn, parsed.argument)
        return True

    async def on_admin_unknown(self, tx: Tx, turn: Turn, parsed: Parsed | None) -> bool:
        """Admins always get an answer: a hint when a command word was misused or misspelt."""
        if not turn.is_admin:
            return False
        word = commands.first_word(turn.msg.text)
        known = commands.BY_WORD.get(word)
        if known is not None and known.roles & self.roles(turn):
            turn.reply(texts.USAGE.format(usage=known.usage))
            return True
        if known is not None:
            who = " and ".join(sorted(f"{r.value}s" for r in known.roles))
            turn.reply(texts.NOT_YOURS.format(name=known.name, who=who))
            return True
        names = [c.name for c in commands.usable_by(self.roles(turn))]
        close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
        hint = texts.DID_YOU_MEAN.format(name=close[0]) if close else ""
        turn.reply(texts.UNKNOWN.format(word=texts.shorten(word, 12) or "(empty)", hint=hint))
        return True

    async def invite(self, tx: Tx, turn: Turn, argument: str) -> None:
        target, username = self._split_invite(argument)
        if target is None:
            turn.reply(texts.INVITE_USAGE if not argument else texts.BAD_NUMBER.format(
                typed=texts.shorten(argument), reason=username or "it is not a valid number"))
            return
        if username is not None and not valid_username(username):
            turn.reply(texts.ADMIN_USERNAME_INVALID)
            return
        if phone.msisdn(target) == self.settings.number:
            turn.reply(texts.BAD_NUMBER.format(typed=texts.shorten(argument), reason="it is this group's own number"))
            return
        key = self.keys.phone_key(target)
        member = await tx.member_by_phone(key)
        if member is not None and member.locked_at is not None:
            await tx.reset_login_failures(member.id)
            await tx.record_event(self.clock.now(), turn.actor, "unlock", member.username)
            turn.out.append(Outgoing(target, texts.UNLOCKED.format(group=self.group), "reply"))
            turn.reply(texts.UNLOCKED_ADMIN.format(username=member.username))
            return
        if member is not None:
            turn.reply(texts.ALREADY_MEMBER.format(username=member.username))
            return
        if await tx.is_opted_out(key):
            turn.reply(texts.NUMBER_OPTED_OUT)
            return
        earlier = await tx.invite_by_phone(key)
        if username is not None:
            holder = await tx.invite_by_username(username)
            if await tx.member_by_username(username) is not None or (holder is not None and holder.phone_key != key):
                turn.reply(texts.ADMIN_USERNAME_TAKEN.format(username=username))
                return
        code = self.source.invite_code()
        now = self.clock.now()
        hours = self._hours()
        await tx.put_invite(phone_key=key, phone_hint=phone.mask(target), code_hash=self.keys.code_hash(key, code),
                            username=username, invited_by=turn.actor, now=now,
                            expires_at=now + self.settings.invite_ttl_hours * 3600)
        who = f"{username} ({phone.mask(target)})" if username else phone.mask(target)
        template = texts.INVITE_AS if username else texts.INVITE
        turn.out.append(Outgoing(target, template.format(group=self.group, username=username, code=code, hours=hours),
                                 "invite"))
        if target != turn.msg.sender:  # an admin inviting their own phone gets the invite as the one reply
            turn.reply((texts.REINVITED if earlier else texts.INVITED).format(who=who, hours=hours))
        await tx.record_event(now, turn.actor, "invite", who)

    def _split_invite(self, argument: str) -> tuple[str | None, str | None]:
        """(E.164, username or None); on failure (None, reason). The username is the last word, if any."""
        if not argument:
            return None, None
        region = self.settings.default_region
        try:
            return phone.normalize(argument, region), None
        except phone.PhoneError as whole:
            reason = whole.reason
        number, _, last = argument.rpartition(" ")
        if number and any(ch.isalpha() for ch in last):  # usernames have a letter; numbers never do
            try:
                return phone.normalize(number, region), last
            except phone.PhoneError as exc:
                reason = exc.reason
        return None, reason

    async def revoke(self, tx: Tx, turn: Turn, argument: str) -> None:
        if not argument:
            turn.reply(texts.REVOKE_USAGE)
            return
        now = self.clock.now()
        member: Member | None = None
        invite: Invite | None = None
        if any(ch.isalpha() for ch in argument):  # a username (they have letters; numbers don't)
            member = await tx.member_by_username(argument)
            invite = None if member else await tx.invite_by_username(argument)
        else:
            try:
                key = self.keys.phone_key(phone.normalize(argument, self.settings.default_region))
            except phone.PhoneError:
                key = None
            if key is not None:
                member = await tx.member_by_phone(key)
                invite = await tx.invite_by_phone(key)
        if member is not None:
            await tx.remove_member(member.id)
            await tx.withdraw_texts(member.phone_key, ("pin", "verify"))
            turn.reply(texts.REVOKED.format(username=member.username))
            await tx.record_event(now, turn.actor, "revoke", member.username)
        elif invite is not None:
            await tx.remove_invite(invite.id)
            await tx.withdraw_texts(invite.phone_key, ("invite",))
            who = f"{invite.username} ({invite.phone_hint})" if invite.username else invite.phone_hint
            turn.reply(texts.INVITE_CANCELLED.format(who=who))
            await tx.record_event(now, turn.actor, "cancel-invite", who)
        else:
            turn.reply(texts.NOT_FOUND.format(what=texts.shorten(argument)))

    async def list_all(self, tx: Tx, turn: Turn, argument: str) -> None:
        if argument and not commands.is_number(argument):
            turn.reply(texts.LIST_USAGE)
            return
        page = int(argument) if argument else 1
        now = self.clock.now()
        items = []
        for member in await tx.members():
            problem = await tx.delivery_problem(member.phone_key, "pin", "verify")
            items.append(f"{member.username} (PIN {problem})" if problem else member.username)
        for inv in await tx.invites():
            label = f"{inv.username} {inv.phone_hint}" if inv.username else inv.phone_hint
            problem = await tx.delivery_problem(inv.phone_key, "invite")
            state = f"invite {problem}" if problem else "expired" if inv.expires_at <= now else "invited"
            items.append(f"{label} ({state})")
        if not items:
            turn.reply(texts.LIST_EMPTY)
            return
        pages = paginate(items)
        if not 1 <= page <= len(pages):
            turn.reply(texts.LIST_NO_PAGE.format(page=page, pages=len(pages)))
            return
        turn.reply(render_page(pages, page))

    async def log(self, tx: Tx, turn: Turn, argument: str) -> None:
        if argument and not commands.is_number(argument):
            turn.reply(texts.LOG_USAGE)
            return
        page = int(argument) if argument else 1
        events = await tx.events(limit=200)
        if not events:
            turn.reply(texts.LOG_EMPTY)
            return
        items = [" ".join(filter(None, (time.strftime("%m-%d %H:%M", time.gmtime(e.at)), e.actor, e.action,
                                        e.detail))) for e in events]
        pages = paginate(items, "LOG")
        if not 1 <= page <= len(pages):
            turn.reply(texts.LIST_NO_PAGE.format(page=page, pages=len(pages)))
            return
        turn.reply(render_page(pages, page, "LOG"))

    # --- invitees ----------------------------------------------------------------------------------------------

    async def on_expired(self, tx: Tx, turn: Turn, parsed: Parsed | None) -> bool:
        assert turn.invite is not None
        await tx.remove_invite(turn.invite.id)
        await tx.record_event(self.clock.now(), turn.actor, "invite-expired", turn.invite.phone_hint)
        turn.reply(texts.INVITE_EXPIRED.format(group=self.group))
        return True

    async def on_code(self, tx: Tx, turn: Turn, parsed: Parsed | None) -> bool:
        invite = turn.invite
        assert invite is not None
        words = turn.msg.text.split()
        candidate = parsed.argument if parsed is not None and parsed.command.name == "JOIN" else \
            words[0] if len(words) == 1 else ""
        if not GUESS.match(candidate):  # chatter ("hi", "ok?") is not a guess and costs no try
            turn.reply(texts.CODE_HINT.format(group=self.group))
            return True
        if same(self.keys.code_hash(turn.key, candidate), invite.code_hash):
            await tx.record_event(self.clock.now(), turn.actor, "code-accepted", invite.phone_hint)
            if invite.username and not await tx.member_by_username(invite.username):
                await self._join(tx, turn, invite, invite.username)
            else:
                await tx.set_invite_stage(invite.id, State.AWAITING_USERNAME.value)
                turn.reply(texts.ASK_USERNAME.format(group=self.group))
            return True
        if await tx.count_invite_try(invite.id) >= MAX_CODE_TRIES:
            await tx.remove_invite(invite.id)
            await tx.record_event(self.clock.now(), turn.actor, "invite-cancelled", "too many wrong codes")
            turn.reply(texts.TOO_MANY_CODES)
        else:
            turn.reply(texts.WRONG_CODE)
        return True

    async def on_username(self, tx: Tx, turn: Turn, parsed: Parsed | None) -> bool:
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

    async def _join(self, tx: Tx, turn: Turn, invite: Invite, username: str) -> None:
        now = self.clock.now()
        await tx.remove_invite(invite.id)
        member = await tx.add_member(username, turn.key, invite.phone_hint, now)
        await tx.record_event(now, turn.actor, "join", username)
        await self._issue_pin(tx, turn, member)

    # --- members -----------------------------------------------------------------------------------------------

    async def on_login(self, tx: Tx, turn: Turn, parsed: Parsed | None) -> bool:
        if parsed is None or parsed.command.name != "LOGIN":
            return False
        assert turn.member is not None
        if turn.member.locked_at is not None:
            if await self._once_per(tx, turn.key, "locked-reply", 3600):
                turn.reply(texts.LOCKED)
            return True
        await self._issue_pin(tx, turn, turn.member)
        return True

    async def _once_per(self, tx: Tx, key: str, action: str, seconds: float) -> bool:
        """True (and noted) if this reply was not sent to this number in the last `seconds`."""
        now = self.clock.now()
        if await tx.count_since(key, action, now - seconds):
            return False
        await tx.note(key, action, now)
        return True

    async def on_member_other(self, tx: Tx, turn: Turn, parsed: Parsed | None) -> bool:
        turn.reply(texts.MEMBER_HINT)
        return True

    async def _issue_pin(self, tx: Tx, turn: Turn, member: Member) -> None:
        """A new PIN replaces any live one. In verify mode Vonage makes and sends the code: the outbox starts
        the verification, and only its request id is kept."""
        now = self.clock.now()
        hour = await tx.count_since(turn.key, "pin", now - 3600)
        day = await tx.count_since(turn.key, "pin", now - 86400)
        if hour >= self.settings.pin_cap_hour or day >= self.settings.pin_cap_day:
            await tx.record_event(now, turn.actor, "pin-capped", member.username)
            daily = day >= self.settings.pin_cap_day
            if await self._once_per(tx, turn.key, "pin-cap-day" if daily else "pin-cap-hour", 86400 if daily else 3600):
                turn.reply(texts.PIN_CAP_DAY if daily else texts.PIN_CAP)
            return
        await tx.note(turn.key, "pin", now)
        expires_at = now + self.settings.pin_ttl_minutes * 60
        details = {"group": self.group, "username": member.username, "url": self.settings.public_url,
                   "minutes": int(self.settings.pin_ttl_minutes)}
        if self.settings.pin_via == "verify":
            await tx.put_pin(member.id, pin_hash=None, request_id=None, now=now, expires_at=expires_at)
            turn.reply(texts.PIN_VERIFY.format(**details))
            turn.reply("", kind="verify")
        else:
            pin = self.source.pin()
            await tx.put_pin(member.id, pin_hash=self.keys.pin_hash(member.id, pin), request_id=None, now=now,
                             expires_at=expires_at)
            turn.reply(texts.PIN.format(pin=pin, **details), kind="pin")
        await tx.record_event(now, turn.actor, "pin-issued", member.username)

    # --- fallbacks ---------------------------------------------------------------------------------------------

    async def silence(self, tx: Tx, turn: Turn, parsed: Parsed | None) -> bool:
        log.info("no reply to a text from %s in state %s", turn.actor, turn.state.value)
        return True

    def _hours(self) -> str:
        return f"{self.settings.invite_ttl_hours:g}"


def paginate(items: list[str], command: str = "LIST") -> list[list[str]]:
    """Pack items into pages whose rendered text fits one SMS segment."""
    pages: list[list[str]] = []
    current: list[str] = []
    for item in items:
        item = item if len(item) <= 100 else item[:98] + ".."
        trial = current + [item]
        # Measure against the widest header and footer a page could get.
        if current and texts.septets(render_items(trial, 999, 999, True, command)) > texts.SEGMENT:
            pages.append(current)
            current = [item]
        else:
            current = trial
    if current:
        pages.append(current)
    return pages


def render_items(items: list[str], page: int, pages: int, more: bool, command: str = "LIST") -> str:
    footer = texts.LIST_MORE.format(command=command, next=page + 1) if more else ""
    return texts.LIST_PAGE.format(header=texts.LIST_HEADER.format(page=page, pages=pages), items=", ".join(items) + ".",
                                  footer=footer)


def render_page(pages: list[list[str]], page: int, command: str = "LIST") -> str:
    return render_items(pages[page - 1], page, len(pages), page < len(pages), command)


ADMIN_ACTIONS: dict[str, Callable[[Engine, Tx, Turn, str], Awaitable[None]]] = {
    "INVITE": Engine.invite,
    "REVOKE": Engine.revoke,
    "LIST": Engine.list_all,
    "LOG": Engine.log,
}

# The declared conversation: for each state, the handlers tried in order; the first that answers wins.
# STOP, START and HELP come first (compliance keywords beat everything else); after an invite expires, any text
# but STOP and START gets the expiry notice once.
STATE_TABLE: dict[State, list[Handler]] = {
    State.OPTED_OUT: [Engine.on_start, Engine.silence],
    State.STRANGER: [Engine.on_stop, Engine.on_start, Engine.on_help, Engine.on_admin_command,
                     Engine.on_admin_unknown, Engine.silence],
    State.AWAITING_CODE: [Engine.on_stop, Engine.on_start, Engine.on_help, Engine.on_admin_command, Engine.on_code],
    State.AWAITING_USERNAME: [Engine.on_stop, Engine.on_start, Engine.on_help, Engine.on_admin_command,
                              Engine.on_username],
    State.EXPIRED: [Engine.on_stop, Engine.on_start, Engine.on_admin_command, Engine.on_expired],
    State.MEMBER: [Engine.on_stop, Engine.on_start, Engine.on_help, Engine.on_admin_command, Engine.on_login,
                   Engine.on_admin_unknown, Engine.on_member_other],
}
