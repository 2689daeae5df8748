"""The store seam: the records smsbot keeps, and the storage interface as protocols.

A unit of work is a function of one open transaction (`Tx`), run whole or not at all by `Store.run`. `Tx` methods
are named for what the service means, never for the SQL, so a second backend is a new module, not a rewrite.
Phone numbers appear only as keyed HMACs, except in outbox rows still waiting to be sent.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Collection, Mapping
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


class Stage(enum.Enum):
    """Where an invite is: the engine's states of the same names, the values the invites table keeps and its CHECK
    allows."""

    AWAITING_CODE = "awaiting_code"
    AWAITING_USERNAME = "awaiting_username"


class Action(enum.Enum):
    """What an audit event records; LOG has a sentence for each (`admin.SENTENCES`)."""

    INVITE = "invite"
    CANCEL_INVITE = "cancel-invite"
    REVOKE = "revoke"
    UNLOCK = "unlock"
    LOGOUT_MEMBER = "logout-member"
    CONFIRM_ASKED = "confirm-asked"
    CONFIRMED = "confirmed"
    CONFIRM_DROPPED = "confirm-dropped"
    CONFIRM_EXPIRED = "confirm-expired"
    CONFIRM_CAPPED = "confirm-capped"
    CONFIRM_LOCKED = "confirm-locked"
    ADMIN_CAPPED = "admin-capped"
    REPLIES_CAPPED = "replies-capped"
    CODE_ACCEPTED = "code-accepted"
    INVITE_CANCELLED = "invite-cancelled"
    INVITE_EXPIRED = "invite-expired"
    JOIN = "join"
    PIN_ISSUED = "pin-issued"
    PIN_CAPPED = "pin-capped"
    LOGIN = "login"
    LOGOUT_EVERYWHERE = "logout-everywhere"
    LOGOUT_WEB = "logout-web"
    LOCKOUT = "lockout"
    OPT_OUT = "opt-out"
    OPT_IN = "opt-in"
    STRANGER_OPT_OUT = "stranger-opt-out"  # strangers' STOP and START in a row are one event with a count
    STRANGER_OPT_IN = "stranger-opt-in"
    BUDGET_REACHED = "budget-reached"
    SEND_FAILED = "send-failed"
    UNDELIVERED = "undelivered"
    SIGNATURE_REFUSED = "signature-refused"


class Counted(enum.Enum):
    """What the counters count per number (or, for SIGNIN, per web client): the only actions `Tx.note`,
    `Tx.count_since`, `Tx.first_since` and `budget.once_per` take. The values are what the counters table keeps in its
    action column; existing databases hold them, so a value never changes."""

    REPLY = "reply"  # a reply to a non-admin number, against its daily cap (pipeline)
    ADMIN_REPLY = "admin-reply"  # a reply to an admin number, against its hourly cap (pipeline)
    ADMIN_CAPPED = "admin-capped"  # the notice that an admin number reached its hourly cap, sent once an hour
    CONFIRM_ASKED = "confirm-asked"  # a confirmation code sent to an admin, a few an hour
    CONFIRM_WRONG = "confirm-wrong"  # a wrong YES code from an admin number, a few a day before the lock
    CONFIRM_LOCKED = "confirm-locked"  # the lock of an admin number's confirmable commands after too many wrong codes
    CONFIRM_CAPPED = "confirm-capped"  # the notice that an admin asked for too many codes, sent once an hour
    PIN = "pin"  # a PIN issued to a member's number, against the hourly and daily PIN caps
    PIN_CAP_DAY = "pin-cap-day"  # the notice that the daily PIN cap was reached, sent once a day
    PIN_CAP_HOUR = "pin-cap-hour"  # the notice that the hourly PIN cap was reached, sent once an hour
    LOCKED_REPLY = "locked-reply"  # the reply to a locked-out member's LOGIN, sent once an hour
    STRANGER_HELP = "stranger-help"  # a reply to a stranger's HELP, a few a day
    STRANGER_OPT_REPLY = "stranger-opt-reply"  # a reply to a stranger's STOP or START, a few more a day
    SIGNIN = "signin"  # a failed web sign-in (or one being weighed), per client address, not per number


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
    stage: Stage
    tries: int
    invited_by: str
    created_at: float
    expires_at: float
    invited_by_key: str | None  # the inviting admin's phone key (None on invites made before it was kept)


@dataclass(frozen=True)
class Standing:
    """What the store knows of one number, read in one statement: its member, its invite, whether it opted out and,
    for an admin's number, whether a command of theirs waits for YES, expired or not (any of them, all, or none), and
    how many replies it was sent against its hourly cap since the time asked (`Counted.ADMIN_REPLY`; 0 when no time
    was asked, for any number but an admin's)."""

    member: Member | None
    invite: Invite | None
    opted_out: bool
    awaiting_yes: bool
    admin_replies: int


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
class LastSender:
    """The instance that took the sender's role before this one, and whether it stopped cleanly."""

    instance: str
    since: float
    stopped_cleanly: bool
    recent_sends: list[float]  # seconds before its stop that its sends still counting in the rate window finished


@dataclass(frozen=True)
class Figures:
    """What a metrics scrape reads: texts waiting (and since when), members, and texts queued today."""

    waiting: int
    oldest_waiting_at: float | None
    members: int
    queued_today: int


@dataclass(frozen=True)
class Event:
    at: float
    actor: str
    action: str
    detail: str


def username_key(username: str) -> str:
    return username.casefold()


class Tx(OidcTx, Protocol):
    """One open transaction: the unit of work's whole view of the database. The SQL backends implement it without
    naming it (`store.sql.SqlTx`), and mypy checks them against it method by method."""

    async def record_inbound(self, message_id: str, now: float) -> bool:
        """False when this message id was seen before."""
        ...

    async def arrive(self, message_id: str, now: float, phone_key: str,
                     replies_since: float | None) -> Standing | None:
        """Record a text's message id and read its sender's standing (one statement where the database allows it);
        None when the id was seen before."""
        ...

    async def standing(self, phone_key: str, replies_since: float | None) -> Standing:
        """The number's member, invite, opt-out, command waiting for YES and, with `replies_since`, the admin's
        replies since then, in one statement: the engine reads them for every text, and the pipeline an admin's
        count."""
        ...

    async def is_opted_out(self, phone_key: str) -> bool:
        """Whether this number texted STOP (and not START since)."""
        ...

    async def opt_out(self, phone_key: str, now: float) -> bool:
        """Record a STOP; False when the number had already opted out."""
        ...

    async def opt_in(self, phone_key: str) -> bool:
        """Forget a STOP; False when the number had not opted out."""
        ...

    async def member_by_phone(self, phone_key: str) -> Member | None:
        """The member with this phone key, if any."""
        ...

    async def member_by_username(self, username: str) -> Member | None:
        """The member with this username, compared case-insensitively, if any."""
        ...

    async def member_by_id(self, member_id: int) -> Member | None:
        """The member with this id, if any."""
        ...

    async def username_taken(self, username: str) -> bool:
        """Whether a member has this username, or an invite holds it for its invitee."""
        ...

    async def add_member(self, username: str, phone_key: str, phone_hint: str, now: float) -> Member:
        """Make a member, with no PIN or session yet."""
        ...

    async def remove_member(self, member_id: int) -> None:
        """Delete the member; their sessions and PIN go with them (foreign keys cascade)."""
        ...

    async def members(self) -> list[Member]:
        """Every member, by username."""
        ...

    async def record_login_failure(self, member_id: int) -> int:
        """Count a wrong PIN in a row; return the count so far."""
        ...

    async def lock_member(self, member_id: int, now: float) -> None:
        """Lock the member's sign-in (their sessions are told)."""
        ...

    async def reset_login_failures(self, member_id: int) -> None:
        """Unlock the member and forget their wrong PINs."""
        ...

    async def invite_by_phone(self, phone_key: str) -> Invite | None:
        """The invite waiting for this phone key, expired or not."""
        ...

    async def put_invite(self, *, phone_key: str, phone_hint: str, code_hash: str, username: str | None,
                         invited_by: str, invited_by_key: str, now: float, expires_at: float) -> None:
        """Create the invite for this number, replacing any earlier one (and its code)."""
        ...

    async def set_invite_stage(self, invite_id: int, stage: Stage) -> None:
        """Move the invite on to `stage`."""
        ...

    async def count_invite_try(self, invite_id: int) -> int:
        """Count a wrong code against the invite; return the tries so far."""
        ...

    async def remove_invite(self, invite_id: int) -> None:
        """Delete the invite (cancelled, expired or redeemed)."""
        ...

    async def invites(self) -> list[Invite]:
        """Every invite, oldest first."""
        ...

    async def invite_by_username(self, username: str) -> Invite | None:
        """The invite that holds this username for its invitee, if any."""
        ...

    async def put_pin(self, member_id: int, *, pin_hash: str | None, request_id: str | None, now: float,
                      expires_at: float) -> None:
        """Issue a PIN for the member, replacing any live one."""
        ...

    async def pin_of(self, member_id: int) -> Pin | None:
        """The member's live (or latest) PIN, if any."""
        ...

    async def set_pin_request(self, phone_key: str, request_id: str) -> bool:
        """Attach a Verify request id to the member's PIN. Texts to one number go out in order, so the newest
verification is the last one attached, and it wins (an earlier one was cancelled to start it)."""
        ...

    async def remember_pin(self, member_id: int, pin_hash: str) -> None:
        """Keep a code Vonage has confirmed as the PIN's keyed hash, so it is checked here from now on."""
        ...

    async def count_pin_try(self, member_id: int) -> int:
        """Count a try against the member's PIN; return the tries so far."""
        ...

    async def remove_pin(self, member_id: int) -> None:
        """Drop the member's PIN, if any."""
        ...

    async def add_session(self, member_id: int, token_hash: str, now: float, user_agent: str) -> None:
        """Start a session for the member under the token's hash."""
        ...

    async def session_by_token(self, token_hash: str) -> Session | None:
        """The session this token hash names, with its member's username and phone key, if any."""
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
        """End one session, whoever's it is."""
        ...

    async def sessions_of(self, member_id: int) -> list[Session]:
        """The member's sessions, most recently used first."""
        ...

    async def enqueue(self, *, to_number: str, phone_key: str, phone_hint: str, body: str, kind: Kind,
                      now: float) -> None:
        """Queue a text to go out after this unit of work commits (a write that may go with the unit's next
        statement)."""
        ...

    async def claim_due(self, now: float, lease_seconds: float, limit: int) -> list[OutboxRow]:
        """Take texts that are due, or whose earlier claim was abandoned, and lease them to this worker."""
        ...

    async def withdraw_texts(self, phone_key: str, kinds: tuple[Kind, ...]) -> int:
        """Texts of these kinds still waiting for this number will not go out (their number and body are wiped)."""
        ...

    async def release_claims(self) -> int:
        """Put every claimed text back in the queue (at start-up: those a dead sender held); return how many."""
        ...

    async def take_sender(self, instance: str, now: float) -> LastSender:
        """Record that `instance` holds the sender's role from now on, not yet stopped; return who held it before."""
        ...

    async def stop_sender(self, instance: str, recent_sends: list[float]) -> bool:
        """A clean stop of the sender `instance`, nothing of it in flight: its claims go back in the queue, and the
        role is marked stopped cleanly with the ages of its sends that still count in the rate window. False (and
        nothing changed) when another instance has taken the role since."""
        ...

    async def next_due_at(self) -> float | None:
        """When the next waiting text is due, or its claim runs out (None: nothing waits)."""
        ...

    async def finish_outbox(self, outbox_id: int, *, state: str, now: float, provider_id: str | None = None,
                            error: str | None = None) -> None:
        """Close a text for good; its number and body are wiped."""
        ...

    async def retry_outbox(self, outbox_id: int, *, next_attempt_at: float, error: str) -> None:
        """Put a text back in the queue, to be tried again at `next_attempt_at`."""
        ...

    async def put_confirmation(self, *, admin_key: str, command: str, argument: str, code_hash: str, now: float,
                               expires_at: float) -> None:
        """Hold an admin's command for YES, replacing the one they had waiting, if any."""
        ...

    async def confirmation_of(self, admin_key: str) -> Confirmation | None:
        """The admin's command waiting for YES, expired or not, if any."""
        ...

    async def count_confirmation_try(self, admin_key: str) -> int:
        """Count a wrong code; return the tries so far."""
        ...

    async def remove_confirmation(self, admin_key: str) -> None:
        """Drop the admin's waiting command, if any."""
        ...

    async def drop_expired_confirmations(self, now: float) -> int:
        """Drop every waiting command past its time; return how many."""
        ...

    async def add_part(self, *, phone_key: str, ref: str, total: int, part: int, text: str, now: float) -> None:
        """Keep one part of a multipart text (a part seen before is ignored)."""
        ...

    async def parts(self, phone_key: str, ref: str) -> list[tuple[int, int, str]]:
        """The parts of this multipart text received so far, as (part, total, text), in order."""
        ...

    async def remove_parts(self, phone_key: str, ref: str) -> None:
        """Forget a multipart text's parts (it is whole, and handled)."""
        ...

    async def drop_stale_parts(self, before: float) -> int:
        """Forget multipart texts whose first part came before `before` and are still incomplete."""
        ...

    async def forget_inbound_before(self, before: float) -> int:
        """Forget the inbound message ids seen before `before`; return how many."""
        ...

    async def record_delivery(self, *, client_ref: str, provider_id: str, status: str, error: str,
                              now: float) -> tuple[Kind, str] | None:
        """Note a receipt on the text it is about; return that text's (kind, phone hint), or None if unknown."""
        ...

    async def delivery_problem(self, phone_key: str, *kinds: Kind) -> str | None:
        """Why the latest text of these kinds to this number did not arrive, if it did not."""
        ...

    async def count_since(self, phone_key: str, action: Counted, since: float) -> int:
        """How many of `action` this number's counter has noted since `since`."""
        ...

    async def note(self, phone_key: str, action: Counted, now: float) -> None:
        """Count one event for the key (a write the unit never reads back: it may go with the unit's next statement)."""
        ...

    async def note_now(self, phone_key: str, action: Counted, now: float) -> int:
        """Count one event for the key, at once; return its id (for `unnote`)."""
        ...

    async def first_since(self, phone_key: str, action: Counted, since: float) -> float | None:
        """When the earliest event counted for the key since `since` happened, if any did."""
        ...

    async def unnote(self, counter_id: int) -> None:
        """Take back one counted event."""
        ...

    async def forget_counts_before(self, before: float) -> int:
        """Forget the counters' notes from before `before`; return how many."""
        ...

    async def bump_stat(self, name: str) -> None:
        """Add one to a service-wide statistic."""
        ...

    async def texts_queued_since(self, since: float, *, not_to: Collection[str] = ()) -> dict[Kind, int]:
        """Texts queued since `since` by kind, but those to the numbers whose keys `not_to` names."""
        ...

    async def figures(self, day_start: float) -> Figures:
        """The figures metrics report, in one statement (each part uses an index)."""
        ...

    async def event_since(self, action: Action, since: float) -> bool:
        """Whether an audit event of this action was recorded since `since`."""
        ...

    async def record_event(self, now: float, actor: str, action: Action, detail: str = "") -> None:
        """Record an audit event, which LOG shows (a write that may go with the unit's next statement)."""
        ...

    async def count_into_last_event(self, actions: tuple[Action, ...], now: float) -> bool:
        """Add one to the newest event's count (its detail) if it is one of `actions`, and move it to `now`; False
        when the newest event is another (then nothing changes)."""
        ...

    async def events(self, limit: int) -> list[Event]:
        """The latest `limit` audit events, newest first."""
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

    async def release_sender(self) -> None:
        """Give the sender's role up (after `Tx.stop_sender`), and tell the other instances it is free."""
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
