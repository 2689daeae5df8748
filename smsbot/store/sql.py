"""The statements both backends share: each Tx method's SQL, written once.

SQLite and PostgreSQL speak the same SQL for everything smsbot asks, but for a few words (the class attributes);
placeholders are `?` here and the PostgreSQL store numbers them. Phone numbers appear only as keyed HMACs, except in
outbox rows still waiting to be sent and admin commands waiting for YES.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Collection, Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any, Protocol

from ..messages import Kind
from ..phone import is_number
from .base import (
    UNDELIVERED,
    Action,
    Confirmation,
    Counted,
    Event,
    Figures,
    Invite,
    LastSender,
    Member,
    OutboxRow,
    Pin,
    Session,
    Stage,
    Standing,
    username_key,
)
from .oidc import OidcSql

MEMBER_COLUMNS = tuple(f.name for f in fields(Member))  # the members table's, but username_key
INVITE_COLUMNS = tuple(f.name for f in fields(Invite))
RECORD_INBOUND = "INSERT INTO inbound (message_id, received_at) VALUES (?, ?) ON CONFLICT DO NOTHING"
COUNT_ONE = "INSERT INTO counters (phone_key, action, at) VALUES (?, ?, ?)"
CLAIM = "SELECT id, phone_key, phone_hint, to_number, body, kind, attempts, created_at FROM outbox AS o"
# Texts to one number go out in the order they were queued: a text waits while an earlier one to the same number is
# still waiting (so "your PIN comes in the next text" never follows the PIN).
CLAIMABLE = (" AND NOT EXISTS (SELECT 1 FROM outbox AS e WHERE e.phone_key = o.phone_key AND e.id < o.id"
             " AND e.state IN ('pending', 'sending'))")
# A number's standing: a one-row source holding its key (and, for an admin's number, the time its replies are counted
# from), LEFT JOINed to the four tables that may know it (each by its unique key's index), the member's and the
# invite's columns under a prefix each, and for an admin's number the count of its replies against the cap (by
# counters_lookup; nobody else's reads counters). The CASTs state the parameters' types on both databases rather than
# leaving them to PostgreSQL's inference from a bare `SELECT $1`.
STANDING_COLUMNS = ", ".join([f"m.{c} AS m_{c}" for c in MEMBER_COLUMNS] + [f"i.{c} AS i_{c}" for c in INVITE_COLUMNS])
STANDING = (  # the f-strings add only the records' own field names and an enum's value
    f"SELECT {STANDING_COLUMNS}, o.phone_key IS NOT NULL AS opted_out"  # noqa: S608
    ", c.admin_key IS NOT NULL AS awaiting_yes"
    ", CASE WHEN s.since IS NULL THEN 0 ELSE (SELECT count(*) FROM counters AS r WHERE r.phone_key = s.k"
    f" AND r.action = '{Counted.ADMIN_REPLY.value}' AND r.at >= s.since) END AS admin_replies"
    " FROM (SELECT CAST(? AS TEXT) AS k, CAST(? AS DOUBLE PRECISION) AS since) AS s"
    " LEFT JOIN members AS m ON m.phone_key = s.k"
    " LEFT JOIN invites AS i ON i.phone_key = s.k LEFT JOIN opt_outs AS o ON o.phone_key = s.k"
    " LEFT JOIN confirmations AS c ON c.admin_key = s.k")


def standing_of(row: Row) -> Standing:
    """A standing from a row of `STANDING`'s columns."""
    return Standing(_member(row, "m_"), _invite(row, "i_"), bool(row["opted_out"]), bool(row["awaiting_yes"]),
                    int(row["admin_replies"]))


class Row(Protocol):
    """A result row as both drivers give it: by position, by column name, and as a mapping."""

    def __getitem__(self, key: int | str) -> Any: ...

    def keys(self) -> Any: ...


class SqlTx(OidcSql, abc.ABC):
    """One open transaction, in the SQL both backends speak (`?` placeholders; the few words they spell apart are
    class attributes): the `Tx` protocol, which mypy checks it against below. A backend gives the four ways to run a
    statement and says when sessions changed."""

    GREATEST = "max"  # the larger of two values
    FIND = "instr"  # position of a string in another
    LOCK_ROWS = ""  # what a claim adds so that two senders never take the same row

    @abc.abstractmethod
    async def _one(self, sql: str, *args: Any) -> Row | None:
        """Run a query; its first row, if any."""

    @abc.abstractmethod
    async def _all(self, sql: str, *args: Any) -> list[Row]:
        """Run a query; every row."""

    @abc.abstractmethod
    async def _run(self, sql: str, *args: Any) -> int:
        """Run a statement; the number of rows it changed."""

    @abc.abstractmethod
    async def _many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Run a statement once for each row of arguments."""

    @abc.abstractmethod
    def _sessions_changed(self, member_id: int) -> None:
        """The member's sessions may have changed in this unit of work."""

    async def _write(self, sql: str, *args: Any) -> None:
        """Run a write whose outcome the unit of work never reads (a count, a queued text, an event). A backend whose
        every statement is a round trip may hold it and send it with the unit's next statement instead."""
        await self._run(sql, *args)

    async def _one_more(self, table: str, column: str, key: str, value: object) -> int:
        """Add one to a counter of one row; the new count (0 when there is no such row)."""
        row = await self._one(  # the f-string adds only this module's own table and column names
            f"UPDATE {table} SET {column} = {column} + 1 WHERE {key} = ? RETURNING {column}", value)  # noqa: S608
        return int(row[0]) if row else 0

    queued = False  # whether this unit of work queued a text: the store tells the outbox once it commits

    def _queued(self) -> None:
        """A text was queued in this unit of work."""
        self.queued = True

    # inbound dedupe
    async def record_inbound(self, message_id: str, now: float) -> bool:
        return await self._run(RECORD_INBOUND, message_id, now) == 1

    async def arrive(self, message_id: str, now: float, phone_key: str,
                     replies_since: float | None) -> Standing | None:
        fresh = await self.record_inbound(message_id, now)
        return await self.standing(phone_key, replies_since) if fresh else None

    async def standing(self, phone_key: str, replies_since: float | None) -> Standing:
        row = await self._one(STANDING, phone_key, replies_since)
        assert row is not None  # the one-row source gives one row, known or not
        return standing_of(row)

    # opt-outs
    async def is_opted_out(self, phone_key: str) -> bool:
        return await self._one("SELECT 1 FROM opt_outs WHERE phone_key = ?", phone_key) is not None

    async def opt_out(self, phone_key: str, now: float) -> bool:
        return await self._run("INSERT INTO opt_outs (phone_key, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                               phone_key, now) == 1

    async def opt_in(self, phone_key: str) -> bool:
        return await self._run("DELETE FROM opt_outs WHERE phone_key = ?", phone_key) > 0

    # members
    async def member_by_phone(self, phone_key: str) -> Member | None:
        row = await self._one("SELECT * FROM members WHERE phone_key = ?", phone_key)
        return _member(row)

    async def member_by_username(self, username: str) -> Member | None:
        row = await self._one("SELECT * FROM members WHERE username_key = ?", username_key(username))
        return _member(row)

    async def member_by_id(self, member_id: int) -> Member | None:
        return _member(await self._one("SELECT * FROM members WHERE id = ?", member_id))

    async def username_taken(self, username: str) -> bool:
        key = username_key(username)
        if await self._one("SELECT 1 FROM members WHERE username_key = ?", key):
            return True
        return await self._one("SELECT 1 FROM invites WHERE lower(username) = lower(?) AND username IS NOT NULL",
                               username) is not None

    async def add_member(self, username: str, phone_key: str, phone_hint: str, now: float) -> Member:
        row = await self._one(
            "INSERT INTO members (username, username_key, phone_key, phone_hint, created_at) VALUES (?, ?, ?, ?, ?)"
            " RETURNING id", username, username_key(username), phone_key, phone_hint, now)
        assert row is not None
        member = await self.member_by_id(int(row[0]))
        assert member is not None
        return member

    async def remove_member(self, member_id: int) -> None:
        await self._run("DELETE FROM members WHERE id = ?", member_id)
        self._sessions_changed(member_id)

    async def members(self) -> list[Member]:
        rows = await self._all("SELECT * FROM members ORDER BY username_key")
        return [m for m in map(_member, rows) if m is not None]

    async def record_login_failure(self, member_id: int) -> int:
        return await self._one_more("members", "failed_logins", "id", member_id)

    async def lock_member(self, member_id: int, now: float) -> None:
        await self._run("UPDATE members SET locked_at = ? WHERE id = ?", now, member_id)
        self._sessions_changed(member_id)

    async def reset_login_failures(self, member_id: int) -> None:
        await self._run("UPDATE members SET failed_logins = 0, locked_at = NULL WHERE id = ?", member_id)

    # invites
    async def invite_by_phone(self, phone_key: str) -> Invite | None:
        return _invite(await self._one("SELECT * FROM invites WHERE phone_key = ?", phone_key))

    async def put_invite(self, *, phone_key: str, phone_hint: str, code_hash: str, username: str | None,
                         invited_by: str, invited_by_key: str, now: float, expires_at: float) -> None:
        await self._run("DELETE FROM invites WHERE phone_key = ?", phone_key)
        await self._run(
            "INSERT INTO invites (phone_key, phone_hint, code_hash, username, stage, invited_by, invited_by_key,"
            " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            phone_key, phone_hint, code_hash, username, Stage.AWAITING_CODE.value, invited_by, invited_by_key, now,
            expires_at,
        )

    async def set_invite_stage(self, invite_id: int, stage: Stage) -> None:
        await self._run("UPDATE invites SET stage = ? WHERE id = ?", stage.value, invite_id)

    async def count_invite_try(self, invite_id: int) -> int:
        return await self._one_more("invites", "tries", "id", invite_id)

    async def remove_invite(self, invite_id: int) -> None:
        await self._run("DELETE FROM invites WHERE id = ?", invite_id)

    async def invites(self) -> list[Invite]:
        rows = await self._all("SELECT * FROM invites ORDER BY created_at, id")
        return [i for i in map(_invite, rows) if i is not None]

    async def invite_by_username(self, username: str) -> Invite | None:
        return _invite(await self._one(
            "SELECT * FROM invites WHERE lower(username) = lower(?) AND username IS NOT NULL", username))

    # PINs
    async def put_pin(self, member_id: int, *, pin_hash: str | None, request_id: str | None, now: float,
                      expires_at: float) -> None:
        await self._run(
            "INSERT INTO pins (member_id, pin_hash, request_id, tries, created_at, expires_at)"
            " VALUES (?, ?, ?, 0, ?, ?) ON CONFLICT (member_id) DO UPDATE SET pin_hash = excluded.pin_hash,"
            " request_id = excluded.request_id, tries = 0, created_at = excluded.created_at,"
            " expires_at = excluded.expires_at",
            member_id, pin_hash, request_id, now, expires_at,
        )

    async def pin_of(self, member_id: int) -> Pin | None:
        row = await self._one("SELECT * FROM pins WHERE member_id = ?", member_id)
        return None if row is None else Pin(**dict(row))

    async def set_pin_request(self, phone_key: str, request_id: str) -> bool:
        return await self._run(
            "UPDATE pins SET request_id = ? WHERE pin_hash IS NULL"
            " AND member_id = (SELECT id FROM members WHERE phone_key = ?)", request_id, phone_key) > 0

    async def remember_pin(self, member_id: int, pin_hash: str) -> None:
        await self._run("UPDATE pins SET pin_hash = ? WHERE member_id = ?", pin_hash, member_id)

    async def count_pin_try(self, member_id: int) -> int:
        return await self._one_more("pins", "tries", "member_id", member_id)

    async def remove_pin(self, member_id: int) -> None:
        await self._run("DELETE FROM pins WHERE member_id = ?", member_id)

    # sessions
    async def add_session(self, member_id: int, token_hash: str, now: float, user_agent: str) -> None:
        await self._run(
            "INSERT INTO sessions (token_hash, member_id, created_at, last_seen_at, user_agent) VALUES (?, ?, ?, ?, ?)",
            token_hash, member_id, now, now, user_agent[:200],
        )

    async def session_by_token(self, token_hash: str) -> Session | None:
        row = await self._one(
            "SELECT s.id, s.member_id, m.username, m.phone_key, s.created_at, s.last_seen_at, s.user_agent,"
            " s.token_hash FROM sessions s JOIN members m ON m.id = s.member_id WHERE s.token_hash = ?",
            token_hash,
        )
        return None if row is None else Session(**dict(row))

    async def touch_sessions(self, last_seen: Mapping[int, float]) -> None:
        await self._many(f"UPDATE sessions SET last_seen_at = {self.GREATEST}(last_seen_at, ?) WHERE id = ?",  # noqa: S608
                         [(at, session_id) for session_id, at in last_seen.items()])

    async def remove_sessions(self, member_id: int, *, keep: int | None = None) -> int:
        count = await self._run("DELETE FROM sessions WHERE member_id = ? AND id IS DISTINCT FROM ?", member_id, keep)
        if count:
            self._sessions_changed(member_id)
        return count

    async def remove_session_of(self, member_id: int, session_id: int) -> bool:
        if await self._run("DELETE FROM sessions WHERE member_id = ? AND id = ?", member_id, session_id):
            self._sessions_changed(member_id)
            return True
        return False

    async def remove_session(self, session_id: int) -> None:
        row = await self._one("DELETE FROM sessions WHERE id = ? RETURNING member_id", session_id)
        if row is not None:
            self._sessions_changed(int(row[0]))

    async def sessions_of(self, member_id: int) -> list[Session]:
        rows = await self._all(
            "SELECT s.id, s.member_id, m.username, m.phone_key, s.created_at, s.last_seen_at, s.user_agent,"
            " s.token_hash FROM sessions s JOIN members m ON m.id = s.member_id WHERE s.member_id = ?"
            " ORDER BY s.last_seen_at DESC",
            member_id,
        )
        return [Session(**dict(r)) for r in rows]

    # outbox
    async def enqueue(self, *, to_number: str, phone_key: str, phone_hint: str, body: str, kind: Kind,
                      now: float) -> None:
        self._queued()
        await self._write(
            "INSERT INTO outbox (phone_key, phone_hint, to_number, body, kind, created_at, next_attempt_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            phone_key, phone_hint, to_number, body, kind.value, now, now,
        )

    async def claim_due(self, now: float, lease_seconds: float, limit: int) -> list[OutboxRow]:
        """Up to `limit` texts to send now: first those whose sender's lease ran out (one died mid-batch: a batch at
        most), then the pending ones that are due, those due the longest first. Each query walks its state's range of
        outbox_due from the start and stops at the batch, so a claim costs the same whether 20 or 20,000 texts wait,
        due or backing off after an outage (a claim that sorted every due text took 15 ms with 20,000 waiting)."""
        rows = await self._all(f"{CLAIM} WHERE state = 'sending' AND lease_until <= ?{CLAIMABLE}"
                               f" ORDER BY id LIMIT ?{self.LOCK_ROWS}", now, limit)
        if len(rows) < limit:
            rows += await self._all(f"{CLAIM} WHERE state = 'pending' AND next_attempt_at <= ?{CLAIMABLE}"
                                    f" ORDER BY next_attempt_at, id LIMIT ?{self.LOCK_ROWS}", now, limit - len(rows))
        for row in rows:
            await self._run(
                "UPDATE outbox SET state = 'sending', lease_until = ?, attempts = attempts + 1 WHERE id = ?",
                now + lease_seconds, row["id"],
            )
        return [OutboxRow(**{**dict(r), "kind": Kind(r["kind"]), "attempts": r["attempts"] + 1}) for r in rows]

    async def withdraw_texts(self, phone_key: str, kinds: tuple[Kind, ...]) -> int:
        marks = ", ".join("?" for _ in kinds)
        return await self._run(  # the f-string below adds only "?" placeholders
            "UPDATE outbox SET state = 'suppressed', to_number = NULL, body = NULL, error = 'withdrawn'"  # noqa: S608
            f" WHERE phone_key = ? AND state IN ('pending', 'sending') AND kind IN ({marks})",
            phone_key, *(k.value for k in kinds))

    async def release_claims(self) -> int:
        return await self._run("UPDATE outbox SET state = 'pending', lease_until = NULL WHERE state = 'sending'")

    async def take_sender(self, instance: str, now: float) -> LastSender:
        row = await self._one("SELECT instance, since, stopped_cleanly, recent_sends FROM sender WHERE id = 1")
        await self._run(
            "INSERT INTO sender (id, instance, since, stopped_cleanly, recent_sends) VALUES (1, ?, ?, 0, '')"
            " ON CONFLICT (id) DO UPDATE SET instance = excluded.instance, since = excluded.since,"
            " stopped_cleanly = 0, recent_sends = ''", instance, now)
        if row is None:  # only if someone deleted the row: nothing known, so not a clean stop
            return LastSender("", 0.0, stopped_cleanly=False, recent_sends=[])
        recent = [float(age) for age in str(row[3]).split(",") if age]
        return LastSender(str(row[0]), float(row[1]), stopped_cleanly=bool(row[2]), recent_sends=recent)

    async def stop_sender(self, instance: str, recent_sends: list[float]) -> bool:
        ages = ",".join(f"{math.floor(age * 1000) / 1000:g}" for age in recent_sends)  # rounded down: more recent
        if not await self._run("UPDATE sender SET stopped_cleanly = 1, recent_sends = ? WHERE id = 1 AND instance = ?",
                               ages, instance):
            return False
        await self.release_claims()
        return True

    async def next_due_at(self) -> float | None:
        # The first entry of outbox_due's range for 'pending', and the few texts being sent: not a pass over every
        # waiting text.
        row = await self._one(
            "SELECT (SELECT min(next_attempt_at) FROM outbox WHERE state = 'pending'),"
            " (SELECT min(lease_until) FROM outbox WHERE state = 'sending')"
        )
        times = [] if row is None else [float(row[i]) for i in (0, 1) if row[i] is not None]
        return min(times) if times else None

    async def finish_outbox(self, outbox_id: int, *, state: str, now: float, provider_id: str | None = None,
                            error: str | None = None) -> None:
        await self._run(
            "UPDATE outbox SET state = ?, done_at = ?, provider_id = ?, error = ?, to_number = NULL, body = NULL,"
            " lease_until = NULL WHERE id = ?",
            state, now, provider_id, error, outbox_id,
        )

    async def retry_outbox(self, outbox_id: int, *, next_attempt_at: float, error: str) -> None:
        await self._run(
            "UPDATE outbox SET state = 'pending', next_attempt_at = ?, lease_until = NULL, error = ? WHERE id = ?",
            next_attempt_at, error, outbox_id,
        )

    # admin commands waiting for YES
    async def put_confirmation(self, *, admin_key: str, command: str, argument: str, code_hash: str, now: float,
                               expires_at: float) -> None:
        await self._run(
            "INSERT INTO confirmations (admin_key, command, argument, code_hash, tries, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, 0, ?, ?) ON CONFLICT (admin_key) DO UPDATE SET command = excluded.command,"
            " argument = excluded.argument, code_hash = excluded.code_hash, tries = 0,"
            " created_at = excluded.created_at, expires_at = excluded.expires_at",
            admin_key, command, argument, code_hash, now, expires_at)

    async def confirmation_of(self, admin_key: str) -> Confirmation | None:
        row = await self._one("SELECT * FROM confirmations WHERE admin_key = ?", admin_key)
        return None if row is None else Confirmation(**dict(row))

    async def count_confirmation_try(self, admin_key: str) -> int:
        return await self._one_more("confirmations", "tries", "admin_key", admin_key)

    async def remove_confirmation(self, admin_key: str) -> None:
        await self._run("DELETE FROM confirmations WHERE admin_key = ?", admin_key)

    async def drop_expired_confirmations(self, now: float) -> int:
        return await self._run("DELETE FROM confirmations WHERE expires_at <= ?", now)

    # multipart inbound texts
    async def add_part(self, *, phone_key: str, ref: str, total: int, part: int, text: str, now: float) -> None:
        await self._run(
            "INSERT INTO inbound_parts (phone_key, ref, total, part, text, received_at) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            phone_key, ref, total, part, text, now,
        )

    async def parts(self, phone_key: str, ref: str) -> list[tuple[int, int, str]]:
        rows = await self._all("SELECT part, total, text FROM inbound_parts WHERE phone_key = ? AND ref = ?"
                               " ORDER BY part", phone_key, ref)
        return [(int(r[0]), int(r[1]), str(r[2])) for r in rows]

    async def remove_parts(self, phone_key: str, ref: str) -> None:
        await self._run("DELETE FROM inbound_parts WHERE phone_key = ? AND ref = ?", phone_key, ref)

    async def drop_stale_parts(self, before: float) -> int:
        return await self._run(
            "DELETE FROM inbound_parts WHERE (phone_key, ref) IN"
            " (SELECT phone_key, ref FROM inbound_parts GROUP BY phone_key, ref HAVING min(received_at) < ?)",
            before,
        )

    async def forget_inbound_before(self, before: float) -> int:
        return await self._run("DELETE FROM inbound WHERE received_at < ?", before)

    # delivery receipts
    async def record_delivery(self, *, client_ref: str, provider_id: str, status: str, error: str,
                              now: float) -> tuple[Kind, str] | None:
        row = None
        if client_ref.startswith("smsbot-") and is_number(client_ref[7:]) and len(client_ref) <= 7 + 18:
            row = await self._one("SELECT id, kind, phone_hint, delivery_status FROM outbox WHERE id = ?",
                                  int(client_ref[7:]))
        if row is None and provider_id:
            row = await self._one(
                "SELECT id, kind, phone_hint, delivery_status FROM outbox"  # noqa: S608
                f" WHERE {self.FIND}(',' || provider_id || ',', ',' || ? || ',') > 0", provider_id)
        if row is None:
            return None
        if row["delivery_status"] not in UNDELIVERED:  # one failed part makes the whole text undelivered
            await self._run("UPDATE outbox SET delivery_status = ?, delivery_error = ?, delivered_at = ? WHERE id = ?",
                            status, error or None, now, row["id"])
        return Kind(row["kind"]), str(row["phone_hint"])

    async def delivery_problem(self, phone_key: str, *kinds: Kind) -> str | None:
        marks = ", ".join("?" for _ in kinds)
        row = await self._one(  # the f-string adds only "?" placeholders
            f"SELECT state, delivery_status FROM outbox WHERE phone_key = ? AND kind IN ({marks})"  # noqa: S608
            " ORDER BY id DESC LIMIT 1", phone_key, *(k.value for k in kinds))
        if row is None:
            return None
        if row["state"] == "failed":
            return "not sent"
        if row["delivery_status"] in UNDELIVERED:
            return "not delivered"
        return None

    # rate counters and limits
    async def count_since(self, phone_key: str, action: Counted, since: float) -> int:
        row = await self._one("SELECT count(*) FROM counters WHERE phone_key = ? AND action = ? AND at >= ?",
                              phone_key, action.value, since)
        return int(row[0]) if row else 0

    async def note(self, phone_key: str, action: Counted, now: float) -> None:
        await self._write(COUNT_ONE, phone_key, action.value, now)

    async def note_now(self, phone_key: str, action: Counted, now: float) -> int:
        row = await self._one(f"{COUNT_ONE} RETURNING id", phone_key, action.value, now)
        assert row is not None
        return int(row[0])

    async def first_since(self, phone_key: str, action: Counted, since: float) -> float | None:
        row = await self._one("SELECT min(at) FROM counters WHERE phone_key = ? AND action = ? AND at >= ?",
                              phone_key, action.value, since)
        return None if row is None or row[0] is None else float(row[0])

    async def unnote(self, counter_id: int) -> None:
        await self._run("DELETE FROM counters WHERE id = ?", counter_id)

    async def forget_counts_before(self, before: float) -> int:
        return await self._run("DELETE FROM counters WHERE at < ?", before)

    async def bump_stat(self, name: str) -> None:
        await self._run("INSERT INTO stats (name, value) VALUES (?, 1)"
                        " ON CONFLICT (name) DO UPDATE SET value = stats.value + 1", name)

    async def texts_queued_since(self, since: float, *, not_to: Collection[str] = ()) -> dict[Kind, int]:
        keys = sorted(not_to)
        marks = ", ".join("?" for _ in keys)
        rows = await self._all(  # the f-string adds only "?" placeholders
            "SELECT kind, count(*) FROM outbox WHERE created_at >= ?"  # noqa: S608
            f"{f' AND phone_key NOT IN ({marks})' if keys else ''} GROUP BY kind", since, *keys)
        return {Kind(r[0]): int(r[1]) for r in rows}

    async def figures(self, day_start: float) -> Figures:
        row = await self._one(
            "SELECT (SELECT count(*) FROM outbox WHERE state IN ('pending', 'sending')),"
            " (SELECT min(created_at) FROM outbox WHERE state IN ('pending', 'sending')),"
            " (SELECT count(*) FROM members), (SELECT count(*) FROM outbox WHERE created_at >= ?)", day_start)
        assert row is not None  # a SELECT of aggregates always gives one row
        oldest = None if row[1] is None else float(row[1])
        return Figures(int(row[0]), oldest, int(row[2]), int(row[3]))

    async def event_since(self, action: Action, since: float) -> bool:
        return await self._one("SELECT 1 FROM events WHERE action = ? AND at >= ? LIMIT 1", action.value,
                               since) is not None

    # audit
    async def record_event(self, now: float, actor: str, action: Action, detail: str = "") -> None:
        await self._write("INSERT INTO events (at, actor, action, detail) VALUES (?, ?, ?, ?)", now, actor,
                          action.value, detail)

    async def count_into_last_event(self, actions: tuple[Action, ...], now: float) -> bool:
        marks = ", ".join("?" for _ in actions)
        return await self._run(  # the f-string adds only "?" placeholders
            "UPDATE events SET at = ?,"  # noqa: S608
            " detail = CAST(CAST(COALESCE(NULLIF(detail, ''), '1') AS INTEGER) + 1 AS TEXT)"
            f" WHERE id = (SELECT max(id) FROM events) AND action IN ({marks})", now,
            *(a.value for a in actions)) == 1

    async def events(self, limit: int) -> list[Event]:
        rows = await self._all("SELECT at, actor, action, detail FROM events ORDER BY id DESC LIMIT ?", limit)
        return [Event(**dict(r)) for r in rows]


if TYPE_CHECKING:
    from .base import Tx

    def _is_a_tx(tx: SqlTx) -> Tx:
        return tx  # mypy checks SqlTx against the Tx protocol here, every method's signature


def _member(row: Row | None, prefix: str = "") -> Member | None:
    """The member in a row, its columns named `prefix` + field; None for no row, or a LEFT JOIN that found none."""
    if row is None or row[f"{prefix}id"] is None:
        return None
    return Member(**{c: row[prefix + c] for c in MEMBER_COLUMNS})


def _invite(row: Row | None, prefix: str = "") -> Invite | None:
    """The invite in a row, its columns named `prefix` + field; None for no row, or a LEFT JOIN that found none."""
    if row is None or row[f"{prefix}id"] is None:
        return None
    values = {c: row[prefix + c] for c in INVITE_COLUMNS}
    return Invite(**{**values, "stage": Stage(values["stage"])})
