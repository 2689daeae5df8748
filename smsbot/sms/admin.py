"""Admin commands: INVITE, REVOKE, LIST and LOG, and the hint an admin gets for a text that is not a command."""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from .. import phone
from ..budget import Budget
from ..clock import Clock
from ..keys import Keys, SecretSource
from ..messages import SEGMENT, Kind, septets
from ..settings import Settings
from ..store import Action, Event, Invite, Member, Tx
from . import commands, texts
from .commands import INVITE, LIST, LOG, REVOKE
from .confirm import LOCK_SECONDS, WRONG_PER_DAY, Confirmations
from .engine import Turn
from .invites import LENGTHS, MAX_CODE_TRIES, valid_username
from .keywords import STRANGER_OPT


@dataclass(eq=False)
class Admin:
    settings: Settings
    keys: Keys
    clock: Clock
    source: SecretSource
    group: str
    confirm: Confirmations
    budget: Budget

    async def unknown(self, tx: Tx, turn: Turn) -> bool:
        """Admins always get an answer: a hint when a command word was misused or misspelt."""
        if not turn.is_admin:
            return False
        word = commands.first_word(turn.msg.text)
        known = commands.BY_WORD.get(word)
        if known is not None and known.roles & turn.roles:
            turn.reply(known.usage_reply)
            return True
        if known is not None:
            who = " and ".join(sorted(f"{r.value}s" for r in known.roles))
            turn.reply(texts.NOT_YOURS.format(name=known.name, who=who))
            return True
        names = [c.name for c in commands.usable_by(turn.roles)]
        close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
        hint = texts.DID_YOU_MEAN.format(name=close[0]) if close else ""
        turn.reply(texts.UNKNOWN.format(word=texts.shorten(word, 12) or "(empty)", hint=hint))
        return True

    async def invite(self, tx: Tx, turn: Turn, argument: str) -> None:
        target, username, typed = self._split_invite(argument)
        if target is None:
            turn.reply(INVITE.usage_reply if not argument else texts.BAD_NUMBER.format(
                typed=texts.shorten(typed), reason=username or "it is not a valid number", example=INVITE.example))
            return
        if username is not None and not valid_username(username):
            turn.reply(texts.ADMIN_USERNAME_INVALID.format(usage=INVITE.usage, **LENGTHS))
            return
        if phone.msisdn(target) == self.settings.number:
            turn.reply(texts.BAD_NUMBER.format(typed=texts.shorten(argument), reason="it is this group's own number",
                                               example=INVITE.example))
            return
        key = self.keys.phone_key(target)
        member = await tx.member_by_phone(key)
        if member is not None and member.locked_at is not None:
            if self.confirm.needed(turn, INVITE):  # unlocking lets PIN guesses go on: a spoofer must not do it
                await self.confirm.hold(tx, turn, INVITE, argument, f"Unlock {member.username}'s sign-in")
                return
            await tx.reset_login_failures(member.id)
            await tx.record_event(self.clock.now(), turn.actor, Action.UNLOCK, member.username)
            turn.send(target, texts.UNLOCKED.format(group=self.group))
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
        if self.confirm.needed(turn, INVITE):
            what = f"Invite {target} as {username}" if username else f"Invite {target}"
            await self.confirm.hold(tx, turn, INVITE, argument, what)
            return
        now = self.clock.now()
        if key not in self.budget.admin_keys and not self.budget.takes(await self.budget.spent(tx, now),
                                                                       (Kind.INVITE,)):  # none that can't be sent
            turn.reply(texts.INVITE_OVER_BUDGET.format(budget=self.settings.daily_sms_budget))
            return
        code = self.source.invite_code()
        hours = f"{self.settings.invite_ttl_hours:g}"
        await tx.put_invite(phone_key=key, phone_hint=phone.mask(target), code_hash=self.keys.code_hash(key, code),
                            username=username, invited_by=turn.actor, invited_by_key=turn.key, now=now,
                            expires_at=now + self.settings.invite_ttl_hours * 3600)
        who = f"{username} ({phone.mask(target)})" if username else phone.mask(target)
        template = texts.INVITE_AS if username else texts.INVITE
        turn.send(target, template.format(group=self.group, username=username, code=code, hours=hours), Kind.INVITE)
        if target != turn.msg.sender:  # an admin inviting their own phone gets the invite as the one reply
            turn.reply((texts.REINVITED if earlier else texts.INVITED).format(who=who, hours=hours))
        await tx.record_event(now, turn.actor, Action.INVITE, who)

    def _split_invite(self, argument: str) -> tuple[str | None, str | None, str]:
        """(E.164, username or None, the number as typed); on failure (None, reason, what was typed for the
        number). The username is the last word, if any."""
        if not argument:
            return None, None, ""
        region = self.settings.default_region
        try:
            return phone.normalize(argument, region), None, argument
        except phone.PhoneError as whole:
            reason, typed = whole.reason, argument
        number, _, last = argument.rpartition(" ")
        if number and any(ch.isalpha() for ch in last):  # usernames have a letter; numbers never do
            try:
                return phone.normalize(number, region), last, number
            except phone.PhoneError as exc:
                reason, typed = exc.reason, number
        return None, reason, typed

    async def revoke(self, tx: Tx, turn: Turn, argument: str) -> None:
        if not argument:
            turn.reply(REVOKE.usage_reply)
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
        if (member is not None or invite is not None) and self.confirm.needed(turn, REVOKE):
            what = (f"Revoke {member.username}, signing them out everywhere" if member is not None
                    else f"Cancel the invite for {invite.username or invite.phone_hint}" if invite is not None else "")
            await self.confirm.hold(tx, turn, REVOKE, argument, what)
            return
        if member is not None:
            await tx.remove_member(member.id)
            await tx.withdraw_texts(member.phone_key, (Kind.PIN, Kind.VERIFY))
            turn.reply(texts.REVOKED.format(username=member.username))
            await tx.record_event(now, turn.actor, Action.REVOKE, member.username)
        elif invite is not None:
            await tx.remove_invite(invite.id)
            await tx.withdraw_texts(invite.phone_key, (Kind.INVITE,))
            who = f"{invite.username} ({invite.phone_hint})" if invite.username else invite.phone_hint
            turn.reply(texts.INVITE_CANCELLED.format(who=who))
            await tx.record_event(now, turn.actor, Action.CANCEL_INVITE, who)
        else:
            turn.reply(texts.NOT_FOUND.format(what=texts.shorten(argument)))

    async def list(self, tx: Tx, turn: Turn, argument: str) -> None:
        if argument and not phone.is_number(argument):
            turn.reply(LIST.usage_reply)
            return
        now = self.clock.now()
        items = []
        for member in await tx.members():
            problem = await tx.delivery_problem(member.phone_key, Kind.PIN, Kind.VERIFY)
            items.append(f"{member.username} (PIN {problem})" if problem else member.username)
        for inv in await tx.invites():
            label = f"{inv.username} {inv.phone_hint}" if inv.username else inv.phone_hint
            problem = await tx.delivery_problem(inv.phone_key, Kind.INVITE)
            state = f"invite {problem}" if problem else "expired" if inv.expires_at <= now else "invited"
            items.append(f"{label} ({state})")
        if not items:
            turn.reply(texts.LIST_EMPTY.format(usage=INVITE.usage))
            return
        turn.reply(page_of(items, int(argument) if argument else 1, LIST.name))

    async def log(self, tx: Tx, turn: Turn, argument: str) -> None:
        if argument and not phone.is_number(argument):
            turn.reply(LOG.usage_reply)
            return
        events = await tx.events(limit=200)
        if not events:
            turn.reply(texts.LOG_EMPTY)
            return
        turn.reply(page_of(log_items(events), int(argument) if argument else 1, LOG.name, "; ", LogEntry.shown))


T = TypeVar("T")

# LOG's sentences, by event action: {actor} is who did it (a masked number, a username or a part of smsbot), {detail}
# what the event recorded. Strangers' STOP and START have none: LOG sums those in a row up in one entry.
SENTENCES: dict[Action, str] = {
    Action.INVITE: "{actor} invited {detail}",
    Action.CANCEL_INVITE: "{actor} cancelled the invite for {detail}",
    Action.REVOKE: "{actor} revoked {detail}",
    Action.UNLOCK: "{actor} unlocked {detail}",
    Action.LOGOUT_MEMBER: "{actor} signed out {detail}",
    Action.CONFIRM_ASKED: "{actor} was asked to confirm {detail}",
    Action.CONFIRMED: "{actor} confirmed {detail}",
    Action.CONFIRM_DROPPED: "{actor}'s {detail} dropped after wrong codes",
    Action.CONFIRM_EXPIRED: "{actor}'s {detail} expired unconfirmed",
    Action.CONFIRM_CAPPED: "{actor}'s {detail} refused: too many YES requests this hour",
    Action.CONFIRM_LOCKED: f"{{actor}} sent {WRONG_PER_DAY} wrong YES codes: commands that need YES refused for "
                           f"{LOCK_SECONDS / 3600:g} h",
    Action.ADMIN_CAPPED: "{actor} got {detail} in an hour; replies paused",
    Action.REPLIES_CAPPED: "half of the daily budget of {detail} went to replies",
    Action.CODE_ACCEPTED: "{actor} used their invite code",
    Action.INVITE_CANCELLED: f"{{actor}}'s invite cancelled after {MAX_CODE_TRIES} wrong codes",
    Action.INVITE_EXPIRED: "the invite to {detail} expired",
    Action.JOIN: "{name} joined{rest}",
    Action.PIN_ISSUED: "{detail} got a PIN",
    Action.PIN_CAPPED: "{detail} asked for too many PINs",
    Action.LOGIN: "{actor} signed in",
    Action.LOGOUT_EVERYWHERE: "{actor} signed out on {detail}",
    Action.LOGOUT_WEB: "{actor} signed out on the web ({detail})",
    Action.LOCKOUT: "{actor} locked {detail}",
    Action.OPT_OUT: "{actor} texted STOP",
    Action.OPT_IN: "{actor} texted START",
    Action.BUDGET_REACHED: "daily budget of {detail} reached",
    Action.SEND_FAILED: "not sent: {detail}",
    Action.UNDELIVERED: "not delivered: {detail}",
    Action.SIGNATURE_REFUSED: "webhook with a bad signature refused ({detail})",
}

BY_VALUE = {action.value: template for action, template in SENTENCES.items()}  # as events keep their action
STRANGER_OPT_VALUES = {action.value for action in STRANGER_OPT}


def sentence(event: Event) -> str:
    template = BY_VALUE.get(event.action)
    if template is None:
        return " ".join(filter(None, (event.actor, event.action, event.detail)))
    name, _, rest = event.detail.partition(", ")
    return template.format(actor=event.actor, detail=event.detail, name=name, rest=f", {rest}" if rest else "")


@dataclass(frozen=True)
class LogEntry:
    day: str
    minute: str
    said: str

    def shown(self, previous: LogEntry | None) -> str:
        """The date once a day and the time once a minute, within a text."""
        if previous is None or previous.day != self.day:
            return f"{self.day} {self.minute} {self.said}"
        return self.said if previous.minute == self.minute else f"{self.minute} {self.said}"


def log_items(events: list[Event]) -> list[LogEntry]:
    """LOG's entries, latest first. Strangers' STOP and START in a row are summed up in one entry."""
    items: list[LogEntry] = []
    i = 0
    while i < len(events):
        event = events[i]
        if event.action in STRANGER_OPT_VALUES:
            j, count = i, 0
            while j < len(events) and events[j].action in STRANGER_OPT_VALUES:
                count += int(events[j].detail) if phone.is_number(events[j].detail) else 1
                j += 1
            said = f"{count} stranger{'s' if count != 1 else ''} texted STOP or START"
            i = j
        else:
            said = sentence(event)
            i += 1
        when = time.gmtime(event.at)
        items.append(LogEntry(time.strftime("%b %d", when), time.strftime("%H:%M", when), said))
    return items


def page_of(items: Sequence[T], page: int, command: str, separator: str = ", ",
            show: Callable[[T, T | None], str] = lambda item, previous: str(item)) -> str:
    """The text for one page of a list, or the answer that there is no such page."""
    pages = paginate(items, command, separator, show)
    if not 1 <= page <= len(pages):
        return texts.LIST_NO_PAGE.format(page=page, pages=len(pages))
    return render_page(pages, page, command, separator)


def paginate(items: Sequence[T], command: str = "LIST", separator: str = ", ",
             show: Callable[[T, T | None], str] = lambda item, previous: str(item)) -> list[list[str]]:
    """Pack items into pages whose rendered text fits one SMS segment. `show` writes an item as it reads after the
    one before it on the same page (None: it opens the page)."""
    pages: list[list[str]] = []
    current: list[str] = []
    previous: T | None = None
    most = len(items)  # never more pages than items: the widest header and footer a page can get
    for item in items:
        text = cut(show(item, previous))
        trial = current + [text]
        if current and septets(render_items(trial, most, most, True, command, separator)) > SEGMENT:
            pages.append(current)
            current = [cut(show(item, None))]
        else:
            current = trial
        previous = item
    if current:
        pages.append(current)
    return pages


def cut(item: str) -> str:
    return item if len(item) <= 100 else item[:98] + ".."


def render_items(items: list[str], page: int, pages: int, more: bool, command: str = "LIST",
                 separator: str = ", ") -> str:
    footer = texts.LIST_MORE.format(command=command, next=page + 1) if more else ""
    return texts.LIST_PAGE.format(header=texts.LIST_HEADER.format(page=page, pages=pages),
                                  items=separator.join(items) + ".", footer=footer)


def render_page(pages: list[list[str]], page: int, command: str = "LIST", separator: str = ", ") -> str:
    return render_items(pages[page - 1], page, len(pages), page < len(pages), command, separator)
