"""Devices: the sessions a member is signed in with, named from their User-Agent. DEVICES lists them by SMS; LOGOUT
signs a member out on every one (their own, or, from an admin, a member's)."""

from __future__ import annotations

from dataclasses import dataclass

from ..clock import Clock
from ..messages import fits_one_segment
from ..store import Action, Tx
from . import texts
from .commands import LOGOUT, Role
from .engine import Turn

BROWSERS = (("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome"),
            ("Safari/", "Safari"))
SYSTEMS = (("iPhone", "iPhone"), ("iPad", "iPad"), ("Android", "Android"), ("Windows", "Windows"),
           ("Mac OS X", "macOS"), ("CrOS", "ChromeOS"), ("Linux", "Linux"))


def device_name(user_agent: str) -> str:
    """'Chrome on Android' from a User-Agent header: enough to tell one's devices apart."""
    browser = next((name for mark, name in BROWSERS if mark in user_agent), "A browser")
    system = next((name for mark, name in SYSTEMS if mark in user_agent), "")
    return f"{browser} on {system}" if system else browser if user_agent else "Unknown browser"


def ago(seconds: float) -> str:
    """How long ago, as a person says it: 'just now', '5 min ago', '3 h ago', '2 days ago'."""
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    days = int(seconds // 86400)
    return f"{days} day{'s' if days != 1 else ''} ago"


def counted(count: int) -> str:
    return f"{count} device{'s' if count != 1 else ''}"


@dataclass(eq=False)
class Devices:
    clock: Clock

    async def show(self, tx: Tx, turn: Turn, argument: str) -> None:
        """DEVICES: one text naming each signed-in device, most recently used first, with when."""
        assert turn.member is not None
        sessions = await tx.sessions_of(turn.member.id)
        if not sessions:
            turn.reply(texts.NO_DEVICES)
            return
        now = self.clock.now()
        items = [f"{device_name(s.user_agent)} (used {ago(now - s.last_seen_at)})" for s in sessions]
        shown = len(items)
        while shown > 1 and not fits_one_segment(self._list_text(items, shown)):
            shown -= 1
        turn.reply(self._list_text(items, shown))

    @staticmethod
    def _list_text(items: list[str], shown: int) -> str:
        more = f", and {len(items) - shown} more" if shown < len(items) else ""
        return texts.DEVICES.format(count=counted(len(items)), items=", ".join(items[:shown]) + more)

    async def logout(self, tx: Tx, turn: Turn, argument: str) -> None:
        """LOGOUT: a member's own devices; LOGOUT <username>: an admin signs a member out, who stays a member."""
        now = self.clock.now()
        if not argument:
            if turn.member is None:
                turn.reply(texts.LOGOUT_WHO)
                return
            ended = await tx.remove_sessions(turn.member.id)
            await tx.record_event(now, turn.member.username, Action.LOGOUT_EVERYWHERE, counted(ended))
            turn.reply(texts.LOGGED_OUT.format(count=counted(ended)))
            return
        if Role.ADMIN not in turn.roles:
            turn.reply(LOGOUT.usage_reply)
            return
        member = await tx.member_by_username(argument)
        if member is None:
            turn.reply(texts.NOT_FOUND.format(what=texts.shorten(argument)))
            return
        ended = await tx.remove_sessions(member.id)
        await tx.record_event(now, turn.actor, Action.LOGOUT_MEMBER, f"{member.username}, {counted(ended)}")
        turn.reply(texts.ADMIN_LOGGED_OUT.format(username=member.username, count=counted(ended)))
