"""The engine's features: the objects whose methods handle commands and states. Declarations pick their handler
from here (`lambda f: f.admin.invite`), so mypy checks every binding."""

from __future__ import annotations

from dataclasses import dataclass

from .admin import Admin
from .confirm import Confirmations
from .devices import Devices
from .invites import Invites
from .keywords import Keywords
from .pins import Pins


@dataclass(frozen=True)
class Features:
    keywords: Keywords
    admin: Admin
    confirm: Confirmations
    invites: Invites
    pins: Pins
    devices: Devices
