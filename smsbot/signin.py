"""Sign-in on the web: a username and PIN make a session; sessions slide and expire; wrong PINs lock a member out.

Each public method is one unit of work (or two, around a Verify check that must not hold the database).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from .clock import Clock
from .gateway import Check
from .keys import Keys, SecretSource, token_hash
from .messages import Outgoing
from .metrics import Metrics
from .pipeline import Pipeline
from .sessions import SessionCache
from .settings import Settings
from .sms import texts
from .sms.devices import counted
from .sms.invites import USERNAME
from .sms.pins import MAX_PIN_TRIES, Pins
from .store import Action, Member, Pin, Session, Store, Tx

log = logging.getLogger(__name__)
SHARED_CACHE_AGE = 0.5  # seconds
PIN_RESULT = {Check.OK: "right", Check.WRONG: "wrong", Check.DEAD: "ended", Check.GONE: "ended"}



@dataclass(frozen=True)
class Device:
    id: int
    created_at: float
    last_seen_at: float
    user_agent: str
    current: bool


@dataclass
class Attempt:
    """A sign-in being weighed; `answered` once its caller has answered it as failed."""

    answered: bool = False


@dataclass(eq=False)
class SignIn:
    settings: Settings
    store: Store
    pins: Pins
    pipeline: Pipeline
    clock: Clock
    source: SecretSource
    keys: Keys
    metrics: Metrics = field(default_factory=lambda: Metrics(enabled=False))

    async def login(self, username: str, pin: str, user_agent: str, answer_at: float | None = None) -> str | None:
        """A new session token when username and PIN match a live PIN, else None (whatever the reason).

        With `answer_at` (a time on the clock's monotonic scale), None comes at that moment and never earlier or
        later, whatever failed, so timing can't tell a member from a stranger; a token comes as soon as it is made,
        if that is before it. A sign-in still being weighed then (a slow Verify check) goes on without its caller:
        a wrong PIN is counted, and a right one signs nobody in but stays good for the next try.
        """
        if answer_at is None:
            return await self._weigh(username, pin, user_agent, None)
        attempt = Attempt()
        weighing = asyncio.ensure_future(self._weigh(username, pin, user_agent, attempt))
        self._weighing.add(weighing)  # held here until it is settled, even when its caller has gone
        weighing.add_done_callback(lambda _: self._weighed(weighing, attempt))
        try:
            done, _ = await asyncio.wait({weighing}, timeout=max(0.0, answer_at - self.clock.monotonic()))
        finally:
            attempt.answered = not weighing.done()
        if done and (token := weighing.result()) is not None:
            return token
        await self.clock.sleep(max(0.0, answer_at - self.clock.monotonic()))
        return None

    async def settle_late(self, within: float) -> None:
        """At stop: give sign-ins still being weighed after their answer up to `within` seconds to be settled (so a
        wrong code that came in just before still counts), then cut them off."""
        if self._weighing:
            _, cut = await asyncio.wait(set(self._weighing), timeout=within)
            for weighing in cut:
                weighing.cancel()

    def _weighed(self, weighing: asyncio.Future[str | None], attempt: Attempt) -> None:
        self._weighing.discard(weighing)
        if attempt.answered and not weighing.cancelled() and (error := weighing.exception()) is not None:
            log.error("a sign-in answered as failed could not be settled", exc_info=error)

    async def _weigh(self, username: str, pin: str, user_agent: str, attempt: Attempt | None) -> str | None:
        """The PIN is read in one transaction and settled in another, so a Verify v2 check (a network call) never
        holds the database; the second transaction acts only if the PIN is still the one that was checked."""
        now = self.clock.now()
        pin = pin[:16]

        async def find(tx: Tx) -> tuple[Member, Pin] | None:
            member = await tx.member_by_username(username) if USERNAME.match(username) else None
            live = await tx.pin_of(member.id) if member else None
            if member is None or live is None or live.expires_at <= now or live.tries >= MAX_PIN_TRIES:
                return None
            if member.locked_at is not None:
                return None
            return member, live

        found = await self.store.run(find)
        verdict = await self.pins.check(found[0], found[1], pin) if found else None
        if found is None or verdict is None:
            # The same work as a wrong PIN (a hash and one committed write), so timing says nothing.
            self.pins.spend_like_a_check(pin)
            await self.store.run(lambda tx: tx.bump_stat("failed-logins-without-live-pin"))
            self.metrics.signin_failures.inc("no-live-pin")
            log.info("login failed", extra={"event": "login-failed"})
            return None
        member, checked = found
        token = self.source.token()

        async def settle(tx: Tx) -> str | None:
            current = await tx.pin_of(member.id)
            if current is None or (current.created_at, current.request_id) != (checked.created_at,
                                                                               checked.request_id):
                return None  # used or replaced meanwhile
            if current.tries >= MAX_PIN_TRIES or current.expires_at <= now:
                return None  # killed by wrong tries that were settled first (guesses fired all at once)
            if verdict is Check.OK and attempt is not None and attempt.answered:
                # Its caller has answered "no" already. The PIN stays for the next try; a Verify code, which
                # Vonage won't confirm twice, stays as its keyed hash.
                if current.pin_hash is None:
                    await tx.remember_pin(member.id, self.keys.pin_hash(member.id, pin))
                log.info("a right PIN came after its sign-in was answered; it stays good for the next try")
                return None
            if verdict is Check.OK:
                await tx.remove_pin(member.id)
                await tx.reset_login_failures(member.id)
                await tx.add_session(member.id, token_hash(token), now, user_agent)
                await tx.record_event(now, member.username, Action.LOGIN)
                return token
            if verdict is Check.WRONG:
                await tx.count_pin_try(member.id)
                failures = await tx.record_login_failure(member.id)
                if failures >= self.settings.lockout_failures:
                    await self._lock(tx, member, failures, now)
            else:
                await tx.remove_pin(member.id)  # Vonage says the verification is over
            return None

        result = await self.store.run(settle)
        self.metrics.pin_checks.inc(PIN_RESULT[verdict])
        if result is None:
            self.metrics.signin_failures.inc("settled-meanwhile" if verdict is Check.OK else
                                             "wrong-pin" if verdict is Check.WRONG else "pin-ended")
        log.info("login %s", "succeeded" if result else "failed",
                 extra={"event": "login-succeeded" if result else "login-failed"})
        return result

    async def _lock(self, tx: Tx, member: Member, failures: int, now: float) -> None:
        """Too many wrong PINs in a row: no more PINs or sign-ins until an admin re-invites the member."""
        await tx.lock_member(member.id, now)
        self.metrics.lockouts.inc()
        await tx.remove_pin(member.id)
        await tx.record_event(now, member.username, Action.LOCKOUT, f"after {failures} wrong PINs")
        log.warning("member %s locked after %d wrong PINs in a row", member.username, failures)
        # The one text a web request can cause: a single notice to the admins, not to a number typed on the web.
        alert = texts.LOCKOUT_ALERT.format(username=member.username, failures=failures)
        await self.pipeline.enqueue(tx, [Outgoing(a, alert) for a in self.settings.admins], now)

    def __post_init__(self) -> None:
        # With several instances, another one's REVOKE reaches this cache by notification within milliseconds; if
        # notifications are lost (a dropped connection), no cached session outlives a change by more than this.
        self.cache = SessionCache(max_age=SHARED_CACHE_AGE if self.store.shared else None)
        self.store.watch_sessions(self.cache.forget_member)
        self.admin_keys = frozenset(self.keys.phone_key(a) for a in self.settings.admins)
        self._reading: dict[tuple[str, int], asyncio.Future[Session | None]] = {}
        self._weighing: set[asyncio.Future[str | None]] = set()  # sign-ins with a deadline, until settled

    def cached_session(self, token: str | None) -> Session | None:
        """The fast path of forward auth, with no await at all: the session if the cache holds it and it is live,
        else None, which says nothing (ask `session`)."""
        if not token or len(token) > 100:
            return None
        now = self.clock.now()
        cached = self.cache.get(token_hash(token), now)
        if cached is None:
            return None
        if self._expired(cached.session.created_at, cached.last_seen, now):
            return None
        if now > cached.last_seen:
            cached.last_seen = now
        return cached.session

    async def session(self, token: str | None) -> Session | None:
        """The live session for a cookie value, with sliding idle expiry and an absolute cap. A session in the cache
        costs no database work at all; its last use is written behind (`save_last_seen`)."""
        if not token or len(token) > 100:
            return None
        hashed = token_hash(token)
        now = self.clock.now()
        cached = self.cache.get(hashed, now)
        if cached is not None:
            if self._expired(cached.session.created_at, cached.last_seen, now):
                await self.store.run(lambda tx: tx.remove_session(cached.session.id))
                return None
            cached.last_seen = max(cached.last_seen, now)
            return cached.session
        if self.cache.known_unknown(hashed):
            return None
        # Many requests at once share a read of this session under way, but only one that began after the last
        # invalidation: a read from before a REVOKE could return the revoked session.
        key = (hashed, self.cache.generation)
        reading = self._reading.get(key)
        if reading is not None:
            return await asyncio.shield(reading)
        task = asyncio.ensure_future(self._read_session(hashed, now))
        self._reading[key] = task
        task.add_done_callback(lambda _: self._reading.pop(key, None))
        return await asyncio.shield(task)

    async def _read_session(self, hashed: str, now: float) -> Session | None:
        generation = self.cache.generation

        async def work(tx: Tx) -> Session | None:
            found = await tx.session_by_token(hashed)
            if found is not None and self._expired(found.created_at, found.last_seen_at, now):
                await tx.remove_session(found.id)
                return None
            return found

        found = await self.store.run(work)
        if found is None:
            self.cache.put_unknown(hashed, generation)
            return None
        self.cache.put(found, generation, now)
        if now > found.last_seen_at and (hit := self.cache.get(hashed, now)) is not None:
            hit.last_seen = now
        return found

    def _expired(self, created_at: float, last_seen: float, now: float) -> bool:
        return (now - created_at >= self.settings.session_max_days * 86400
                or now - last_seen >= self.settings.session_idle_days * 86400)

    def groups(self, session: Session) -> str:
        """The member's groups, for Remote-Groups: every member is in members, admins' phones in admins too."""
        return "members,admins" if session.phone_key in self.admin_keys else "members"

    async def save_last_seen(self) -> int:
        """Write the last use of every session used since the last write, in one unit of work; return how many."""
        due = self.cache.unsaved_last_seen()
        if due:
            await self.store.run(lambda tx: tx.touch_sessions(due))
        return len(due)

    async def logout(self, token: str | None, scope: str = "this", device: int | None = None) -> int:
        """End sessions of the member whose session `token` is: `this` one, the `others`, `all` of them, or the
        `device` with that session id (if it is theirs). Returns how many ended."""
        if not token:
            return 0
        now = self.clock.now()

        async def work(tx: Tx) -> int:
            found = await tx.session_by_token(token_hash(token))
            if found is None:
                return 0
            if scope == "others":
                ended = await tx.remove_sessions(found.member_id, keep=found.id)
            elif scope == "all":
                ended = await tx.remove_sessions(found.member_id)
            elif scope == "device" and device is not None:
                ended = int(await tx.remove_session_of(found.member_id, device))
            else:
                await tx.remove_session(found.id)
                ended = 1
            if scope in ("others", "all", "device"):
                await tx.record_event(now, found.username, Action.LOGOUT_WEB, f"{scope}, {counted(ended)}")
            return ended

        return await self.store.run(work)

    async def devices(self, session: Session) -> list[Device]:
        sessions = await self.store.run(lambda tx: tx.sessions_of(session.member_id))
        devices = [Device(s.id, s.created_at, max(s.last_seen_at, self.cache.last_seen(s.id) or 0.0), s.user_agent,
                          s.id == session.id) for s in sessions]
        return sorted(devices, key=lambda d: d.last_seen_at, reverse=True)
