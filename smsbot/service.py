"""The application layer: inbound texts through the engine into the outbox, and PIN login into sessions.

Each public method is one unit of work (one transaction). The web layer calls these; they never call the web.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from . import phone, texts
from .clock import Clock
from .commands import is_number
from .engine import USERNAME, Engine, InboundText, Outgoing
from .gateway import DLR_ERRORS, Check, SendError
from .keys import PIN_LENGTH, Keys, SecretSource, same, token_hash
from .outbox import Outbox
from .settings import Settings
from .store import UNDELIVERED, Member, Pin, Session, Store, Tx

log = logging.getLogger(__name__)

MAX_PIN_TRIES = 5
TOUCH_EVERY = 60.0  # seconds between last-seen updates of a session
PART_TIMEOUT = 15 * 60.0  # an incomplete multipart text is dropped this long after its first part
INBOUND_MEMORY = 7 * 86400.0  # message ids are remembered this long (Vonage retries for 24 hours)


def valid_unicode(text: str) -> str:
    """Lone surrogates (JSON can carry them) can't be stored as UTF-8; they become '?'."""
    return text.encode("utf-8", "replace").decode("utf-8")


@dataclass(frozen=True)
class InboundPart:
    """One part of a multipart text (Vonage's concat-ref, concat-total, concat-part)."""

    message_id: str
    sender: str
    text: str
    ref: str
    total: int
    part: int


@dataclass(frozen=True)
class Device:
    created_at: float
    last_seen_at: float
    user_agent: str
    current: bool


class Service:
    def __init__(self, settings: Settings, store: Store, outbox: Outbox, clock: Clock, source: SecretSource,
                 keys: Keys | None = None):
        self.settings = settings
        self.store = store
        self.outbox = outbox
        self.clock = clock
        self.source = source
        self.keys = keys or Keys(settings.secret)
        self.engine = Engine(settings, self.keys, clock, source)

    # --- inbound texts ------------------------------------------------------------------------------------------

    async def receive(self, msg: InboundText) -> list[Outgoing] | None:
        """Handle one inbound text exactly once. None means the message id was seen before."""
        now = self.clock.now()
        msg = InboundText(valid_unicode(msg.message_id), msg.sender, valid_unicode(msg.text))

        async def work(tx: Tx) -> list[Outgoing] | None:
            if not await tx.record_inbound(msg.message_id, now):
                return None
            return await self._handle(tx, msg, now)

        return self._handled(msg, await self.store.run(work))

    async def receive_part(self, part: InboundPart) -> list[Outgoing] | None:
        """Keep one part of a multipart text; when the last part arrives, handle the whole text once."""
        now = self.clock.now()
        part = InboundPart(valid_unicode(part.message_id), part.sender, valid_unicode(part.text),
                           valid_unicode(part.ref), part.total, part.part)
        key = self.keys.phone_key(part.sender)
        whole = InboundText(f"{part.message_id}+parts", part.sender, "")

        async def work(tx: Tx) -> list[Outgoing] | None:
            if not await tx.record_inbound(part.message_id, now):
                return None
            await tx.add_part(phone_key=key, ref=part.ref, total=part.total, part=part.part, text=part.text, now=now)
            parts = await tx.parts(key, part.ref)
            if {p for p, _, _ in parts} != set(range(1, part.total + 1)):
                return []  # wait for the rest
            await tx.remove_parts(key, part.ref)
            text = "".join(t for _, _, t in parts)
            return await self._handle(tx, InboundText(whole.message_id, part.sender, text), now)

        return self._handled(whole, await self.store.run(work))

    async def _handle(self, tx: Tx, msg: InboundText, now: float) -> list[Outgoing]:
        return await self._enqueue(tx, await self.engine.handle(tx, msg), now)

    async def _enqueue(self, tx: Tx, out: list[Outgoing], now: float) -> list[Outgoing]:
        """Queue texts within the daily SMS budget: past it, only texts to admins go out, and admins are told once."""
        day_start = now - now % 86400
        queued = await tx.texts_queued_since(day_start)
        kept: list[Outgoing] = []
        for text in out:
            key = self.keys.phone_key(text.to)
            if key not in self.engine.admin_keys and queued >= self.settings.daily_sms_budget:
                continue
            await tx.enqueue(to_number=text.to, phone_key=key, phone_hint=phone.mask(text.to), body=text.body,
                             kind=text.kind, now=now)
            queued += 1
            kept.append(text)
        if len(kept) < len(out) and not await tx.event_since("budget-reached", day_start):
            budget = self.settings.daily_sms_budget
            await tx.record_event(now, "smsbot", "budget-reached", f"{budget} texts")
            log.warning("daily SMS budget of %d texts reached: only texts to admins go out until midnight UTC",
                        budget)
            warning = [Outgoing(a, texts.BUDGET_REACHED.format(budget=budget), "reply") for a in self.settings.admins]
            kept += await self._enqueue(tx, warning, now)
        return kept

    def _handled(self, msg: InboundText, out: list[Outgoing] | None) -> list[Outgoing] | None:
        if out is None:
            log.info("duplicate inbound message %s ignored", msg.message_id)
        else:
            log.info("text from %s handled: %d text%s queued", phone.mask(msg.sender), len(out),
                     "" if len(out) == 1 else "s")
            if out:
                self.outbox.wake()
        return out

    async def record_delivery(self, *, client_ref: str, provider_id: str, status: str, error_code: str) -> bool:
        """Note a delivery receipt; an undelivered invite or PIN is logged and shown to admins in LIST."""
        now = self.clock.now()
        status = status.lower()
        meaning = DLR_ERRORS.get(error_code, f"error {error_code}") if error_code not in ("", "0") else ""
        error = f"{error_code}: {meaning}" if meaning else ""

        async def work(tx: Tx) -> tuple[str, str] | None:
            found = await tx.record_delivery(client_ref=client_ref, provider_id=provider_id, status=status,
                                             error=error, now=now)
            if found is not None and status in UNDELIVERED:
                kind, hint = found
                await tx.record_event(now, "vonage", "undelivered", f"{kind} to {hint}: {status} {error}".strip())
            return found

        found = await self.store.run(work)
        if found is None:
            log.info("delivery receipt for an unknown text (%s) ignored", client_ref or provider_id)
        elif status in UNDELIVERED:
            log.warning("%s text to %s was not delivered: %s (Vonage error %s)", found[0], found[1], status,
                        error or "none given")
        return found is not None

    async def housekeeping(self) -> None:
        """Drop incomplete multipart texts and forget old message ids."""
        now = self.clock.now()

        async def work(tx: Tx) -> int:
            dropped = await tx.drop_stale_parts(now - PART_TIMEOUT)
            await tx.forget_inbound_before(now - INBOUND_MEMORY)
            await tx.forget_counts_before(now - 2 * 86400)
            return dropped

        dropped = await self.store.run(work)
        if dropped:
            log.warning("dropped %d part(s) of multipart texts that never completed within %d minutes", dropped,
                        PART_TIMEOUT // 60)

    # --- web login and sessions -----------------------------------------------------------------------------------

    async def login(self, username: str, pin: str, user_agent: str) -> str | None:
        """A new session token when username and PIN match a live PIN, else None (whatever the reason).

        The PIN is read in one transaction and settled in another, so a Verify v2 check (a network call) never
        holds the database; the second transaction acts only if the PIN is still the one that was checked.
        """
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
        verdict = await self._check_pin(found[0], found[1], pin) if found else None
        if found is None or verdict is None:
            # The same work as a wrong PIN (a hash and one committed write), so timing says nothing.
            self.keys.pin_hash(0, pin)
            await self.store.run(lambda tx: tx.bump_stat("failed-logins-without-live-pin"))
            log.info("login failed")
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
            if verdict is Check.OK:
                await tx.remove_pin(member.id)
                await tx.reset_login_failures(member.id)
                await tx.add_session(member.id, token_hash(token), now, user_agent)
                await tx.record_event(now, member.username, "login")
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
        log.info("login %s", "succeeded" if result else "failed")
        return result

    async def _lock(self, tx: Tx, member: Member, failures: int, now: float) -> None:
        """Too many wrong PINs in a row: no more PINs or sign-ins until an admin re-invites the member."""
        await tx.lock_member(member.id, now)
        await tx.remove_pin(member.id)
        await tx.record_event(now, member.username, "lockout", f"after {failures} wrong PINs")
        log.warning("member %s locked after %d wrong PINs in a row", member.username, failures)
        # The one text a web request can cause: a single notice to the admins, not to a number typed on the web.
        alert = texts.LOCKOUT_ALERT.format(username=member.username, failures=failures)
        await self._enqueue(tx, [Outgoing(a, alert, "reply") for a in self.settings.admins], now)

    async def record_security_event(self, action: str, detail: str) -> None:
        now = self.clock.now()
        await self.store.run(lambda tx: tx.record_event(now, "web", action, detail))

    async def _check_pin(self, member: Member, live: Pin, pin: str) -> Check | None:
        """What the offered PIN is worth: checked here (sms mode) or by Vonage (verify mode)."""
        if live.pin_hash is not None:
            return Check.OK if same(self.keys.pin_hash(member.id, pin), live.pin_hash) else Check.WRONG
        if live.request_id is None:
            return None  # the verification has not started yet
        if not (is_number(pin) and len(pin) == PIN_LENGTH):
            return Check.WRONG
        try:
            return await self.outbox.gateway.check_code(live.request_id, pin)
        except SendError as exc:
            log.warning("could not check a code with Vonage Verify (%s); the member may try again", exc)
            return None

    async def session(self, token: str | None) -> Session | None:
        """The live session for a cookie value, with sliding idle expiry and an absolute cap."""
        if not token or len(token) > 100:
            return None
        now = self.clock.now()
        idle = self.settings.session_idle_days * 86400
        absolute = self.settings.session_max_days * 86400

        async def work(tx: Tx) -> Session | None:
            found = await tx.session_by_token(token_hash(token))
            if found is None:
                return None
            if now - found.created_at >= absolute or now - found.last_seen_at >= idle:
                await tx.remove_session(found.id)
                return None
            if now - found.last_seen_at >= TOUCH_EVERY:
                await tx.touch_session(found.id, now)
            return found

        return await self.store.run(work)

    async def logout(self, token: str | None) -> None:
        if not token:
            return

        async def work(tx: Tx) -> None:
            found = await tx.session_by_token(token_hash(token))
            if found is not None:
                await tx.remove_session(found.id)

        await self.store.run(work)

    async def devices(self, session: Session) -> list[Device]:
        sessions = await self.store.run(lambda tx: tx.sessions_of(session.member_id))
        return [Device(s.created_at, s.last_seen_at, s.user_agent, s.id == session.id) for s in sessions]

    async def healthy(self) -> bool:
        return await self.store.run(lambda tx: tx.healthy())
