"""The session cache: the fast path of forward auth. A valid check is a dictionary lookup, no database write and no
wait on the writer.

Entries honour the idle and absolute expiry on every hit. Last-seen times are kept here and written behind, in
batches. The store tells the cache, inside the unit of work that makes the change, which member's sessions changed
(REVOKE, LOGOUT, lockout, expiry), and the entries go at once; a fill that read the database before such a change is
refused by the generation check, so no cached session outlives a REVOKE. A multi-instance backend drives the same
`forget_member` hook from its notifications.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from .store import Session

CAPACITY = 10_000  # sessions kept; the least recently used go first
UNKNOWN_CAPACITY = 10_000  # token hashes known to have no session (random cookies cost one database read each)


@dataclass
class Cached:
    session: Session
    last_seen: float  # the newest use, here
    stored_seen: float  # the last-seen time the database has
    read_at: float  # when it was read from the database


class SessionCache:
    def __init__(self, capacity: int = CAPACITY, unknown_capacity: int = UNKNOWN_CAPACITY,
                 max_age: float | None = None):
        self.max_age = max_age  # with several instances: an entry is read again this often, notified or not
        self.capacity = capacity
        self.unknown_capacity = unknown_capacity
        self.generation = 0  # moves on every invalidation; a fill that began before one is dropped
        self._by_token: collections.OrderedDict[str, Cached] = collections.OrderedDict()
        self._tokens_of: dict[int, set[str]] = {}  # member id to their cached token hashes
        self._unknown: collections.OrderedDict[str, None] = collections.OrderedDict()

    def get(self, token_hash: str, now: float) -> Cached | None:
        found = self._by_token.get(token_hash)
        if found is None:
            return None
        if self.max_age is not None and now - found.read_at > self.max_age:
            self._drop(token_hash)
            return None
        self._by_token.move_to_end(token_hash)
        return found

    def known_unknown(self, token_hash: str) -> bool:
        return token_hash in self._unknown

    def put(self, session: Session, generation: int, now: float) -> None:
        """Keep a session read from the database, unless an invalidation came since the read began."""
        if generation != self.generation:
            return
        self._unknown.pop(session.token_hash, None)
        self._by_token[session.token_hash] = Cached(session, session.last_seen_at, session.last_seen_at, now)
        self._tokens_of.setdefault(session.member_id, set()).add(session.token_hash)
        while len(self._by_token) > self.capacity:
            self._drop(next(iter(self._by_token)))

    def put_unknown(self, token_hash: str, generation: int) -> None:
        """Remember that no session has this token (tokens are random: one never becomes valid later)."""
        if generation != self.generation:
            return
        self._unknown[token_hash] = None
        while len(self._unknown) > self.unknown_capacity:
            self._unknown.popitem(last=False)

    def forget_member(self, member_id: int) -> None:
        """The member's sessions changed: drop every cached one of theirs (they are read again when used)."""
        self.generation += 1
        for token_hash in self._tokens_of.pop(member_id, set()):
            self._by_token.pop(token_hash, None)

    def clear(self) -> None:
        self.generation += 1
        self._by_token.clear()
        self._tokens_of.clear()
        self._unknown.clear()

    def _drop(self, token_hash: str) -> None:
        found = self._by_token.pop(token_hash, None)
        if found is not None:
            tokens = self._tokens_of.get(found.session.member_id)
            if tokens is not None:
                tokens.discard(token_hash)
                if not tokens:
                    del self._tokens_of[found.session.member_id]

    def unsaved_last_seen(self) -> dict[int, float]:
        """Session id to last use, for the sessions used since their time was last written; marked written."""
        due = {}
        for entry in self._by_token.values():
            if entry.last_seen > entry.stored_seen:
                due[entry.session.id] = entry.last_seen
                entry.stored_seen = entry.last_seen
        return due

    def last_seen(self, session_id: int) -> float | None:
        for entry in self._by_token.values():
            if entry.session.id == session_id:
                return entry.last_seen
        return None
