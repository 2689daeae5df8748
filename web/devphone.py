"""Dev mode's phones: every text to and from any number, in memory, for the dev phone page.

This is the only place where numbers, codes and PINs are shown in clear, and it exists only under `smsbot dev`.
The phones are kept here, not in the page, so a reload shows the same phones in the same order: the admins first,
then each other phone as it was added or first texted. A phone is named by the username its texts give it.
"""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass

from smsbot import phone
from smsbot.gateway import FakeText
from smsbot.sms import texts

USERNAME = r"[A-Za-z0-9_-]{1,32}"
INVITE_CODE = r"[A-Z0-9]{6}"
PIN = r"[0-9]{6}"
YES_CODE = r"[0-9]{4}"


def reading(template: str, **captures: str) -> re.Pattern[str]:
    """A pattern that matches the texts made from one of smsbot.sms.texts' templates, capturing the named fields
    (the others match anything), so that the dev phone reads the texts as they are written, not a copy of them."""
    parts = re.split(r"\{(\w+)\}", template)
    pattern = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>{captures[part]})" if part in captures
                      else ".+?" for i, part in enumerate(parts))
    return re.compile(pattern, re.DOTALL)


# Texts that name the phone's user.
NAMING = (reading(texts.INVITE_AS, username=USERNAME), reading(texts.PIN, username=USERNAME),
          reading(texts.PIN_VERIFY, username=USERNAME))
# Texts with something to type back, and what the copy button copies: (pattern, what it is, the field, prefix).
COPYABLE = (
    (reading(texts.INVITE, code=INVITE_CODE), "code", "code", ""),
    (reading(texts.INVITE_AS, code=INVITE_CODE), "code", "code", ""),
    (reading(texts.PIN, pin=PIN), "PIN", "pin", ""),
    (reading(texts.CONFIRM, code=YES_CODE), "reply", "code", "YES "),
)


def username_in(text: str) -> str | None:
    for pattern in NAMING:
        found = pattern.fullmatch(text)
        if found:
            return found.group("username")
    return None


def copyable(text: str) -> list[dict[str, str]]:
    """What a text asks its reader to type somewhere: the invite code, the PIN, the YES reply."""
    found = []
    for pattern, what, field, prefix in COPYABLE:
        match = pattern.fullmatch(text)
        if match:
            found.append({"what": what, "value": prefix + match.group(field)})
    return found


@dataclass(frozen=True)
class DevText:
    id: int
    number: str  # E.164 of the dev phone
    direction: str  # "in" (phone to service) or "out" (service to phone)
    text: str
    at: float

    def shown(self) -> dict[str, object]:
        return {"id": self.id, "number": self.number, "direction": self.direction, "text": self.text, "at": self.at,
                "copy": copyable(self.text) if self.direction == "out" else []}


@dataclass
class DevPhone:
    number: str
    admin: bool
    username: str | None = None

    def shown(self) -> dict[str, object]:
        if self.username:
            label = f"{self.username} (admin)" if self.admin else self.username
        else:
            label = "Admin" if self.admin else "Phone"
        return {"number": self.number, "shown": phone.formatted(self.number), "label": label, "admin": self.admin,
                "username": self.username}


class DevPhones:
    def __init__(self) -> None:
        self.texts: list[DevText] = []
        self.phones: dict[str, DevPhone] = {}  # in the order they came
        self._ids = itertools.count(1)

    def add(self, number: str, admin: bool = False) -> tuple[DevPhone, bool]:
        """The phone with this number, and whether it is new."""
        known = self.phones.get(number)
        if known is not None:
            return known, False
        self.phones[number] = added = DevPhone(number, admin)
        return added, True

    def record(self, number: str, direction: str, text: str) -> DevText:
        entry = DevText(next(self._ids), number, direction, text, time.time())
        self.texts.append(entry)
        device, _ = self.add(number)
        if direction == "out":
            device.username = username_in(text) or device.username
        return entry

    def on_sent(self, message: FakeText) -> None:
        self.record(message.to, "out", message.text)

    def since(self, after: int) -> list[dict[str, object]]:
        return [t.shown() for t in self.texts if t.id > after]

    def listed(self) -> list[dict[str, object]]:
        return [p.shown() for p in self.phones.values()]
