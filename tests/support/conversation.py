"""Reads and plays the SMS transcripts in conversations/ (the format is described in conversations/README.md)."""

from __future__ import annotations

import pathlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

CONVERSATIONS = pathlib.Path(__file__).resolve().parents[2] / "conversations"
CAPTURE_PATTERNS = {"code": r"[A-HJ-NP-Z2-9]{6}", "pin": r"\d{6}", "yes": r"\d{4}"}
VARIABLE = re.compile(r"\{([a-z][a-z0-9_]*)\}")
DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The settings a transcript may give before its first step, and the environment variable each one sets (None: a
# setting of the test itself). Any other `@key` is an error.
SETTINGS: dict[str, str | None] = {
    "admins": "SMSBOT_ADMINS",
    "group": "SMSBOT_GROUP_NAME",
    "url": "SMSBOT_PUBLIC_URL",
    "region": "SMSBOT_DEFAULT_REGION",
    "invite_ttl_hours": "SMSBOT_INVITE_TTL_HOURS",
    "pin_via": "SMSBOT_PIN_VIA",
    "confirm": "SMSBOT_CONFIRM",
    "http": None,
}
STEP_KEYS = ("wait", "login", "session")


@dataclass
class Step:
    line: int
    kind: str  # "text", "expect", "wait", "login", "session"
    sender: str = ""
    body: str = ""
    args: list[str] = field(default_factory=list)


@dataclass
class Transcript:
    path: pathlib.Path
    title: str
    settings: dict[str, str]
    steps: list[Step]

    @property
    def name(self) -> str:
        return self.path.stem


def parse(path: pathlib.Path) -> Transcript:
    title = ""
    settings: dict[str, str] = {}
    steps: list[Step] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.rstrip()
        if not line.strip():
            continue
        if line.startswith("#"):
            title = title or line.lstrip("# ").strip()
            continue
        if line.startswith("< "):
            who, sep, body = line[2:].partition(": ")
            if not sep:
                raise ValueError(f"{path.name}:{number}: a bot line reads '< +NUMBER: text'")
            steps.append(Step(number, "expect", who.strip(), body))
        elif line.startswith("@"):
            word, _, rest = line[1:].partition(" ")
            if word in STEP_KEYS:
                steps.append(Step(number, word, args=rest.split()))
            elif word not in SETTINGS:
                known = ", ".join(f"@{key}" for key in (*SETTINGS, *STEP_KEYS))
                raise ValueError(f"{path.name}:{number}: unknown '@{word}' (an @ line is one of {known})")
            elif steps:
                raise ValueError(f"{path.name}:{number}: settings (@{word}) come before the first text")
            else:
                settings[word] = rest.strip()
        elif "> " in line:
            who, _, body = line.partition("> ")
            steps.append(Step(number, "text", who.strip(), body))
        else:
            raise ValueError(f"{path.name}:{number}: cannot read {line!r}")
    return Transcript(path, title, settings, steps)


def all_transcripts() -> list[Transcript]:
    return [parse(p) for p in sorted(CONVERSATIONS.glob("*.txt"))]


def duration(text: str) -> float:
    match = DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use 30s, 11m, 73h or 2d)")
    return float(match.group(1)) * UNITS[match.group(2)]


class Variables:
    """Codes and PINs seen in bot texts, captured on first sight and checked on every later one."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def fill(self, text: str) -> str:
        return VARIABLE.sub(lambda m: self.values[m.group(1)], text)

    def match(self, expected: str, actual: str) -> bool:
        pattern, names = "", []
        position = 0
        for m in VARIABLE.finditer(expected):
            pattern += re.escape(expected[position:m.start()])
            name = m.group(1)
            if name in self.values:
                pattern += re.escape(self.values[name])
            else:
                kind = re.sub(r"\d+$", "", name)
                pattern += f"({CAPTURE_PATTERNS.get(kind, r'[^ ]+')})"
                names.append(name)
            position = m.end()
        pattern += re.escape(expected[position:])
        found = re.fullmatch(pattern, actual)
        if not found:
            return False
        self.values.update(zip(names, found.groups()))
        return True


@dataclass(frozen=True)
class Sent:
    to: str
    body: str


class Player:
    """Plays a transcript against a running service through four hooks, so the same transcript can run
    against the engine directly or through the real HTTP webhook."""

    def __init__(self, transcript: Transcript, *,
                 send: Callable[[str, str], Awaitable[None]],
                 delivered: Callable[[], Awaitable[list[Sent]]],
                 wait: Callable[[float], None],
                 login: Callable[[str, str], Awaitable[str | None]],
                 session_user: Callable[[str], Awaitable[str | None]]):
        self.t = transcript
        self.send, self.delivered, self.wait = send, delivered, wait
        self.login, self.session_user = login, session_user
        self.vars = Variables()
        self.devices: dict[str, str] = {}

    def fail(self, step: Step, message: str) -> AssertionError:
        return AssertionError(f"{self.t.path.name}:{step.line}: {message}")

    async def play(self) -> None:
        pending: list[Sent] = []
        for step in self.t.steps:
            if step.kind == "expect":
                if not pending:
                    raise self.fail(step, f"expected a text to {step.sender}, but nothing more was sent")
                got = pending.pop(0)
                if got.to != step.sender or not self.vars.match(step.body, got.body):
                    raise self.fail(step, f"expected\n  < {step.sender}: {step.body}\n"
                                          f"but got\n  < {got.to}: {got.body}")
                continue
            if pending:
                raise self.fail(step, f"unexpected text < {pending[0].to}: {pending[0].body}")
            if step.kind == "text":
                await self.send(step.sender, self.vars.fill(step.body))
                pending = await self.delivered()
            elif step.kind == "wait":
                self.wait(duration(step.args[0]))
            elif step.kind == "login":
                await self._login(step)
            elif step.kind == "session":
                await self._session(step)
        if pending:
            raise AssertionError(f"{self.t.path.name}: unexpected text at the end < {pending[0].to}: {pending[0].body}")

    async def _login(self, step: Step) -> None:
        # @login <username> <pin> => ok <device> | fail
        try:
            username, pin, arrow, outcome, *rest = step.args
        except ValueError:
            raise self.fail(step, "read '@login <username> <pin> => ok <device>' or '=> fail'") from None
        if arrow != "=>":
            raise self.fail(step, "missing '=>'")
        token = await self.login(username, self.vars.fill(pin))
        if outcome == "ok":
            if token is None:
                raise self.fail(step, f"login as {username} failed")
            self.devices[rest[0] if rest else "device"] = token
        elif token is not None:
            raise self.fail(step, f"login as {username} should have failed")

    async def _session(self, step: Step) -> None:
        # @session <device> => <username> | none
        device, _, expected = step.args
        user = await self.session_user(self.devices[device])
        if (user or "none") != expected:
            raise self.fail(step, f"session {device} belongs to {user or 'nobody'}, expected {expected}")
