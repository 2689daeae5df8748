"""What texts may cost: the daily SMS budget, shared so that no sender can spend what members need.

Texts to admins never count toward SMSBOT_DAILY_SMS_BUDGET (admin numbers have their own cap: `pipeline`).
Replies (everything but invites and PINs) may use at most half of the budget, so a flood of texts "from" a member's
number or from strangers' numbers, spoofed or not, always leaves invites and PINs the other half.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass

from .clock import Clock
from .messages import Kind, Outgoing
from .settings import Settings
from .sms import texts
from .store import Action, Counted, Tx

log = logging.getLogger(__name__)

ESSENTIAL = (Kind.INVITE, Kind.PIN, Kind.VERIFY)  # what members need; everything else is a reply


async def once_per(tx: Tx, clock: Clock, key: str, action: Counted, seconds: float) -> bool:
    """True (and noted) if this reply was not sent to this number in the last `seconds`."""
    now = clock.now()
    if await tx.count_since(key, action, now - seconds):
        return False
    await tx.note(key, action, now)
    return True


def day_start(now: float) -> float:
    return now - now % 86400


@dataclass
class Spent:
    """Today's texts to non-admins so far, all of them and the replies among them."""

    texts: int
    replies: int

    def add(self, kind: Kind) -> None:
        self.texts += 1
        if kind not in ESSENTIAL:
            self.replies += 1


@dataclass(eq=False)
class Budget:
    settings: Settings
    admin_keys: Collection[str]

    @property
    def replies_max(self) -> int:
        return (self.settings.daily_sms_budget + 1) // 2

    async def spent(self, tx: Tx, now: float) -> Spent:
        queued = await tx.texts_queued_since(day_start(now), not_to=self.admin_keys)
        return Spent(sum(queued.values()), sum(n for kind, n in queued.items() if kind not in ESSENTIAL))

    def takes(self, spent: Spent, kinds: Collection[Kind]) -> bool:
        """Whether texts of these kinds to a non-admin fit in what is left today."""
        replies = sum(kind not in ESSENTIAL for kind in kinds)
        return (spent.texts + len(kinds) <= self.settings.daily_sms_budget
                and (not replies or spent.replies + replies <= self.replies_max))

    async def warnings(self, tx: Tx, now: float, spent: Spent) -> list[Outgoing]:
        """What the admins are told, once a UTC day, when a text to a non-admin was held back."""
        budget = self.settings.daily_sms_budget
        whole = spent.texts >= budget
        action = Action.BUDGET_REACHED if whole else Action.REPLIES_CAPPED
        if await tx.event_since(action, day_start(now)):
            return []
        await tx.record_event(now, "smsbot", action, f"{budget} texts")
        if whole:
            log.warning("daily SMS budget of %d texts reached: only texts to admins go out until midnight UTC",
                        budget)
        else:
            log.warning("half of the daily SMS budget of %d texts went to replies: until midnight UTC only "
                        "invites, PINs and texts to admins go out", budget)
        body = (texts.BUDGET_REACHED if whole else texts.REPLIES_CAPPED).format(budget=budget)
        return [Outgoing(a, body) for a in self.settings.admins]
