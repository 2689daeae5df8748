"""The store seam: the records smsbot keeps, and the storage interface as protocols.

A unit of work is a function of one open transaction (`Tx`), run whole or not at all by `Store.run`. `Tx` methods
are named for what the service means, never for the SQL, so a second backend is a new module, not a rewrite.
Phone numbers appear only as keyed HMACs, except in outbox rows still waiting to be sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ..messages import Kind
from .oidc import OidcTx

T = TypeVar("T")
# Told a member id, inside the unit of work, whenever that member's sessions may have changed: a session ended, or
# the member was removed or locked. Session caches listen, so none outlives the change.
SessionsChanged = Callable[[int], None]
TextsQueued = Callable[[], None]  # told once a unit of work that queued texts has committed

UNDELIVERED = ("failed", "rejected", "expired", "undeliverable")


@dataclass(frozen=True)
class Member:
    id: int
    username: str
    phone_key: str
    phone_hint: str
    created_at: float
    failed_logins: int
    locked_at: float | None


@dataclass(frozen=True)
class Invite:
    id: int
    phone_key: str
    phone_hint: str
    code_hash: str
    username: str | None
    stage: str
    tries: int
    invited_by: str
    created_at: float
    expires_at: float
    invited_by_key: str | None  # the inviting admin's phone key (None on invites made before it was kept)


@dataclass(frozen=True)
class Confirmation:
    """An admin command waiting for `YES <code>`. `argument` is as typed, so it may hold a number in clear: only
    until the command runs or is dropped."""

    admin_key: str
    command: str
    argument: str
    code_hash: str
    tries: int
    created_at: float
    expires_at: float


@dataclass(frozen=True)
class Pin:
    member_id: int
    pin_hash: str | None
    request_id: str | None
    tries: int
    created_at: float
    expires_at: float


@dataclass(frozen=True)
class Session:
    id: int
    member_id: int
    username: str
    phone_key: str  # the member's
    created_at: float
    last_seen_at: float
    user_agent: str
    token_hash: str


@dataclass(frozen=True)
class OutboxRow:
    id: int
    phone_key: str
    phone_hint: str
    to_number: str
    body: str
    kind: Kind
    attempts: int
    created_at: float


@dataclass(frozen=True)
class Event:
    at: float
    actor: str
    action: str
    detail: str


def username_key(username: str) -> str:
    return username.casefold()


class Tx(OidcTx, Protocol):
    """One open transaction."""

    async def record_inbound(self, message_id: str, now: float) -> bool:
        """False when this message id was seen before."""
        ...

    async def is_opted_out(self, phone_key: str) -> bool:
        ...

    async def opt_out(self, phone_key: str, now: float) -> bool:
        ...

    async def opt_in(self, phone_key: str) -> bool:
        ...

    async def member_by_phone(self, phone_key: str) -> Member | None:
        ...

    async def member_by_username(self, username: str) -> Member | None:
        ...

    async def member_by_id(self, member_id: int) -> Member | None:
        ...

    async def username_taken(self, username: str) -> bool:
        ...

    async def add_member(self, username: str, phone_key: str, phone_hint: str, now: float) -> Member:
        ...

    async def remove_member(self, member_id: int) -> None:
        """Delete the member; their sessions and PIN go with them (foreign keys cascade)."""
        ...

    async def members(self) -> list[Member]:
        ...

    async def record_login_failure(self, member_id: int) -> int:
        ...

    async def lock_member(self, member_id: int, now: float) -> None:
        ...

    async def reset_login_failures(self, member_id: int) -> None:
        ...

    async def invite_by_phone(self, phone_key: str) -> Invite | None:
        ...

    async def put_invite(self, *, phone_key: str, phone_hint: str, code_hash: str, username: str | None,
                         invited_by: str, invited_by_key: str, now: float, expires_at: float) -> None:
        """Create the invite for this number, replacing any earlier one (and its code)."""
        ...

    async def set_invite_stage(self, invite_id: int, stage: str) -> None:
        ...

    async def count_invite_try(self, invite_id: int) -> int:
        ...

    async def remove_invite(self, invite_id: int) -> None:
        ...

    async def invites(self) -> list[Invite]:
        ...

    async def invite_by_username(self, username: str) -> Invite | None:
        ...

    async def put_pin(self, member_id: int, *, pin_hash: str | None, request_id: str | None, now: float,
                      expires_at: float) -> None:
        """Issue a PIN for the member, replacing any live one."""
        ...

    async def pin_of(self, member_id: int) -> Pin | None:
        ...

    async def set_pin_request(self, phone_key: str, request_id: str) -> bool:
        """Attach a Verify request id to the member's PIN. Texts to one number go out in order, so the newest
verification is the last one attached, and it wins (an earlier one was cancelled to start it)."""
        ...

    async def count_pin_try(self, member_id: int) -> int:
        ...

    async def remove_pin(self, member_id: int) -> None:
        ...

    async def add_session(self, member_id: int, token_hash: str, now: float, user_agent: str) -> None:
        ...

    async def session_by_token(self, token_hash: str) -> Session | None:
        ...

    async def touch_sessions(self, last_seen: Mapping[int, float]) -> None:
        """Record when sessions were last used (session id to time), as many as there are, in one go."""
        ...

    async def remove_sessions(self, member_id: int, *, keep: int | None = None) -> int:
        """End every session of the member (but the one `keep` names, if any); return how many ended."""
        ...

    async def remove_session_of(self, member_id: int, session_id: int) -> bool:
        """End one session, if it is the member's."""
        ...

    async def remove_session(self, session_id: int) -> None:
        ...

    async def sessions_of(self, member_id: int) -> list[Session]:
        ...

    async def enqueue(self, *, to_number: str, phone_key: str, phone_hint: str, body: str, kind: Kind,
                      now: float) -> None:
        ...

    async def claim_due(self, now: float, lease_seconds: float, limit: int) -> list[OutboxRow]:
        """Take texts that are due, or whose earlier claim was abandoned, and lease them to this worker."""
        ...

    async def withdraw_texts(self, phone_key: str, kinds: tuple[Kind, ...]) -> int:
        """Texts of these kinds still waiting for this number will not go out (their number and body are wiped)."""
        ...

    async def release_claims(self) -> int:
        ...

    async def next_due_at(self) -> float | None:
        ...

    async def finish_outbox(self, outbox_id: int, *, state: str, now: float, provider_id: str | None = None,
                            error: str | None = None) -> None:
        """Close a text for good; its number and body are wiped."""
        ...

    async def retry_outbox(self, outbox_id: int, *, next_attempt_at: float, error: str) -> None:
        ...

    async def put_confirmation(self, *, admin_key: str, command: str, argument: str, code_hash: str, now: float,
                               expires_at: float) -> None:
        """Hold an admin's command for YES, replacing the one they had waiting, if any."""
        ...

    async def confirmation_of(self, admin_key: str) -> Confirmation | None: ...

    async def count_confirmation_try(self, admin_key: str) -> int:
        """Count a wrong code; return the tries so far."""
        ...

    async def remove_confirmation(self, admin_key: str) -> None: ...

    async def drop_expired_confirmations(self, now: float) -> int: ...

    async def add_part(self, *, phone_key: str, ref: str, total: int, part: int, text: str, now: float) -> None:
        ...

    async def parts(self, phone_key: str, ref: str) -> list[tuple[int, int, str]]:
        ...

    async def remove_parts(self, phone_key: str, ref: str) -> None:
        ...

    async def drop_stale_parts(self, before: float) -> int:
        """Forget multipart texts whose first part came before `before` and are still incomplete."""
        ...

    async def forget_inbound_before(self, before: float) -> int:
        ...

    async def record_delivery(self, *, client_ref: str, provider_id: str, status: str, error: str,
                              now: float) -> tuple[Kind, str] | None:
        """Note a receipt on the text it is about; return that text's (kind, phone hint), or None if unknown."""
        ...

    async def delivery_problem(self, phone_key: str, *kinds: Kind) -> str | None:
        """Why the latest text of these kinds to this number did not arrive, if it did not."""
        ...

    async def count_since(self, phone_key: str, action: str, since: float) -> int:
        ...

    async def note(self, phone_key: str, action: str, now: float) -> None:
        ...

    async def forget_counts_before(self, before: float) -> int:
        ...

    async def bump_stat(self, name: str) -> None:
        ...

    async def texts_queued_since(self, since: float) -> int:
        ...

    async def event_since(self, action: str, since: float) -> bool:
        ...

    async def record_event(self, now: float, actor: str, action: str, detail: str = "") -> None:
        ...

    async def events(self, limit: int, offset: int = 0) -> list[Event]:
        ...


class Store(Protocol):
    """A database: schema migrations at open, and units of work one at a time, each whole or not at all."""

    async def open(self) -> None:
        """Connect, and create or upgrade the schema."""
        ...

    async def close(self) -> None: ...

    async def run(self, work: Callable[[Tx], Awaitable[T]]) -> T:
        """Run `work` as one transaction: all of it commits, or none. A cancelled caller cannot split it."""
        ...

    async def scrub(self) -> None:
        """Make sure wiped values (numbers and bodies of texts that are done) leave no copy behind on disk."""
        ...

    async def schema_version(self) -> int: ...

    async def healthy(self) -> bool:
        """Whether the database answers."""
        ...

    shared: bool  # whether several instances of smsbot may use this database at once

    def watch_sessions(self, listener: SessionsChanged) -> None:
        """Call `listener` with a member id whenever a unit of work may change that member's sessions, in this
        instance at once and, for a shared database, in the others as soon as they hear of it."""
        ...

    def watch_outbox(self, listener: TextsQueued) -> None:
        """Call `listener` when texts were queued (by any instance, for a shared database)."""
        ...

    async def claim_sender(self) -> bool:
        """Whether this instance is the one that sends texts now. Only one does at a time, so the rate ceiling is
        one for all; when it dies another takes over."""
        ...


class Watchers:
    """The listeners a store tells of changed sessions and queued texts."""

    def __init__(self) -> None:
        self._session_watchers: list[SessionsChanged] = []
        self._outbox_watchers: list[TextsQueued] = []

    def watch_sessions(self, listener: SessionsChanged) -> None:
        self._session_watchers.append(listener)

    def watch_outbox(self, listener: TextsQueued) -> None:
        self._outbox_watchers.append(listener)

    def _sessions_changed(self, member_id: int) -> None:
        for listener in self._session_watchers:
            listener(member_id)

    def _texts_queued(self) -> None:
        for listener in self._outbox_watchers:
            listener()
