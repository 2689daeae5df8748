"""The OpenID Connect provider's records: signing keys and grants (codes, access and refresh tokens).

Every grant belongs to one device session (a foreign key that cascades), so whatever ends the session (REVOKE,
LOGOUT, that device's sign-out, expiry) ends what it gave the tools in the same statement. Grants are kept only as
keyed hashes of their values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_pem: str  # PKCS#8, encrypted with a key derived from SMSBOT_SECRET
    public_jwk: str  # JSON
    created_at: float
    retired_at: float | None  # when a newer key took over signing


@dataclass(frozen=True)
class Grant:
    """A code, access token or refresh token, with the session and member it speaks for."""

    id: int
    kind: str  # code, access or refresh
    client_id: str
    session_id: int
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    auth_time: float
    expires_at: float
    member_id: int
    username: str
    phone_key: str
    session_created_at: float
    session_last_seen_at: float


class OidcTx(Protocol):
    async def signing_keys(self) -> list[SigningKey]:
        """Every key, newest first."""
        ...

    async def add_signing_key(self, kid: str, private_pem: str, public_jwk: str, now: float) -> None:
        """Add a key that signs from now on; the ones before it are retired now."""
        ...

    async def drop_signing_keys(self, retired_before: float) -> int: ...

    async def add_grant(self, *, kind: str, value_hash: str, client_id: str, session_id: int, redirect_uri: str,
                        scope: str, nonce: str | None, code_challenge: str | None, auth_time: float,
                        expires_at: float) -> None: ...

    async def grant(self, kind: str, value_hash: str) -> Grant | None: ...

    async def take_grant(self, kind: str, value_hash: str) -> Grant | None:
        """The grant, removed in the same statement: of two that take one at once, only one gets it."""
        ...

    async def drop_expired_grants(self, now: float) -> int: ...


GRANT_COLUMNS = ("g.id, g.kind, g.client_id, g.session_id, g.redirect_uri, g.scope, g.nonce, g.code_challenge,"
                 " g.auth_time, g.expires_at, s.member_id, m.username, m.phone_key,"
                 " s.created_at AS session_created_at, s.last_seen_at AS session_last_seen_at")
GRANT_JOIN = "oidc_grants g JOIN sessions s ON s.id = g.session_id JOIN members m ON m.id = s.member_id"


class OidcSql(OidcTx):
    """The statements, in the SQL both backends speak (`?` placeholders)."""

    async def _one(self, sql: str, *args: Any) -> Any:
        raise NotImplementedError

    async def _all(self, sql: str, *args: Any) -> list[Any]:
        raise NotImplementedError

    async def _run(self, sql: str, *args: Any) -> int:
        raise NotImplementedError

    async def signing_keys(self) -> list[SigningKey]:
        rows = await self._all("SELECT kid, private_pem, public_jwk, created_at, retired_at FROM oidc_keys"
                               " ORDER BY created_at DESC")
        return [SigningKey(**dict(row)) for row in rows]

    async def add_signing_key(self, kid: str, private_pem: str, public_jwk: str, now: float) -> None:
        await self._run("UPDATE oidc_keys SET retired_at = ? WHERE retired_at IS NULL", now)
        await self._run("INSERT INTO oidc_keys (kid, private_pem, public_jwk, created_at) VALUES (?, ?, ?, ?)",
                        kid, private_pem, public_jwk, now)

    async def drop_signing_keys(self, retired_before: float) -> int:
        return await self._run("DELETE FROM oidc_keys WHERE retired_at < ?", retired_before)

    async def add_grant(self, *, kind: str, value_hash: str, client_id: str, session_id: int, redirect_uri: str,
                        scope: str, nonce: str | None, code_challenge: str | None, auth_time: float,
                        expires_at: float) -> None:
        await self._run(
            "INSERT INTO oidc_grants (kind, value_hash, client_id, session_id, redirect_uri, scope, nonce,"
            " code_challenge, auth_time, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            kind, value_hash, client_id, session_id, redirect_uri, scope, nonce, code_challenge, auth_time, expires_at)

    async def grant(self, kind: str, value_hash: str) -> Grant | None:
        row = await self._one(f"SELECT {GRANT_COLUMNS} FROM {GRANT_JOIN} WHERE g.value_hash = ? AND g.kind = ?",  # noqa: S608
                              value_hash, kind)
        return None if row is None else Grant(**dict(row))

    async def take_grant(self, kind: str, value_hash: str) -> Grant | None:
        found = await self.grant(kind, value_hash)
        if found is None or not await self._run("DELETE FROM oidc_grants WHERE id = ?", found.id):
            return None  # the delete decides: of two takers, the second removes nothing
        return found

    async def drop_expired_grants(self, now: float) -> int:
        return await self._run("DELETE FROM oidc_grants WHERE expires_at <= ?", now)
