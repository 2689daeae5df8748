"""The OpenID Connect provider's engine: the client file, signing keys, codes and tokens, claims. No HTTP here.

Written to the specs rather than on a framework: the authorization code flow with PKCE (RFC 6749 §4.1, RFC 7636,
OpenID Connect Core §3.1), tokens and refresh tokens (RFC 6749 §5, §6) and userinfo. Signing and JWKs come from
PyJWT with cryptography. Codes and tokens are random values kept only as keyed hashes, each bound to the device
session that granted it, so whatever ends the session ends them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .clock import Clock
from .errors import SmsbotError
from .keys import Keys
from .oidc_clients import Client
from .store import Store, Tx
from .store.oidc import Grant, SigningKey

if TYPE_CHECKING:
    from .settings import Settings

CODE_SECONDS = 60
ACCESS_SECONDS = 600
ID_TOKEN_SECONDS = 600
KEY_REREAD = 60.0  # seconds: how often an instance looks for a key another instance (or rotate-key) added
# A retired key stays published this long after a newer one took over: an instance may sign with it until it next
# reads the keys, and every ID token it signed has expired by then.
KEY_OVERLAP = ID_TOKEN_SECONDS + KEY_REREAD + 60
SCOPES = ("openid", "profile", "groups", "offline_access")


class OAuthError(SmsbotError):
    """An error response of RFC 6749 (§4.1.2.1 for /authorize, §5.2 for /token)."""

    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(f"{error}: {description}")
        self.error, self.description, self.status = error, description, status


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of a verifier (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def valid_pkce_value(value: str) -> bool:
    """43 to 128 unreserved characters (RFC 7636 §4.1; a S256 challenge is 43)."""
    return 43 <= len(value) <= 128 and all(c.isascii() and (c.isalnum() or c in "-._~") for c in value)


@dataclass(frozen=True)
class Tokens:
    access_token: str
    id_token: str
    refresh_token: str | None
    scope: str

    def response(self) -> dict[str, Any]:
        body: dict[str, Any] = {"access_token": self.access_token, "token_type": "Bearer",
                                "expires_in": ACCESS_SECONDS, "id_token": self.id_token, "scope": self.scope}
        if self.refresh_token:
            body["refresh_token"] = self.refresh_token
        return body


class Provider:
    """The provider of one deployment: the clients, the keys (shared by every instance through the database)."""

    def __init__(self, settings: Settings, clients: dict[str, Client], store: Store, clock: Clock):
        self.issuer = settings.public_url.rstrip("/")
        self.clients = clients
        self.store = store
        self.clock = clock
        self.settings = settings
        self.admin_keys = frozenset(Keys(settings.secret).phone_key(a) for a in settings.admins)
        master = settings.secret.encode()
        self._grant_key = _derive(master, b"oidc-grant")
        self._sub_key = _derive(master, b"oidc-sub")
        self._key_password = base64.urlsafe_b64encode(_derive(master, b"oidc-signing-key"))
        self._keys: list[SigningKey] = []
        self._private: dict[str, Any] = {}
        self._read_at = float("-inf")

    # identifiers and hashes
    def sub(self, member_id: int) -> str:
        """A member's stable subject: keyed, so it reveals neither the member's number nor their row."""
        return hmac.new(self._sub_key, str(member_id).encode(), hashlib.sha256).hexdigest()

    def value_hash(self, value: str) -> str:
        return hmac.new(self._grant_key, value.encode(), hashlib.sha256).hexdigest()

    def groups(self, phone_key: str) -> list[str]:
        return ["members", "admins"] if phone_key in self.admin_keys else ["members"]

    def tool_for(self, rd: str) -> str | None:
        """The name of the tool a sign-in page's `rd` is on the way back to, if it is an authorization request."""
        parts = urlsplit(rd)
        if parts.path != "/oidc/authorize":
            return None
        client = self.clients.get(dict(parse_qsl(parts.query)).get("client_id", ""))
        return client.name if client else None

    # keys
    async def keys(self) -> list[SigningKey]:
        """The keys, read again from the database every KEY_REREAD seconds; one is made at first start."""
        now = self.clock.now()
        if self._keys and now - self._read_at < KEY_REREAD:
            return self._keys
        found = await self.store.run(lambda tx: tx.signing_keys())
        if not found:
            found = await self.store.run(lambda tx: self._first_key(tx, now))
        self._keys, self._read_at = found, now
        return found

    async def _first_key(self, tx: Tx, now: float) -> list[SigningKey]:
        found = await tx.signing_keys()
        if found:
            return found  # another instance made it first
        await self._add_key(tx, now)
        return await tx.signing_keys()

    async def _add_key(self, tx: Tx, now: float) -> str:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.BestAvailableEncryption(self._key_password))
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
        kid = base64.urlsafe_b64encode(secrets.token_bytes(12)).decode()
        jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
        await tx.add_signing_key(kid, pem.decode(), json.dumps(jwk, sort_keys=True), now)
        return kid

    async def rotate_key(self) -> str:
        """Add a key that signs from now on; the old one stays published until what it signed has expired."""
        now = self.clock.now()

        async def work(tx: Tx) -> str:
            await tx.drop_signing_keys(now - KEY_OVERLAP)
            return await self._add_key(tx, now)

        kid = await self.store.run(work)
        self._keys = []
        return kid

    async def jwks(self) -> dict[str, Any]:
        now = self.clock.now()
        published = [k for k in await self.keys() if k.retired_at is None or now - k.retired_at < KEY_OVERLAP]
        return {"keys": [json.loads(k.public_jwk) for k in published]}

    async def _signing_key(self) -> tuple[str, Any]:
        keys = await self.keys()
        key = next((k for k in keys if k.retired_at is None), keys[0])  # the one no newer key has retired
        private = self._private.get(key.kid)
        if private is None:
            private = serialization.load_pem_private_key(key.private_pem.encode(), self._key_password)
            self._private[key.kid] = private
        return key.kid, private

    async def verify_id_token(self, token: str, audience: str) -> dict[str, Any] | None:
        """The claims of an ID token this provider signed for `audience`, expired or not (an id_token_hint)."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            return None
        for key in await self.keys():
            if key.kid == kid:
                public = jwt.algorithms.RSAAlgorithm.from_jwk(key.public_jwk)
                try:
                    claims: dict[str, Any] = jwt.decode(
                        token, public, algorithms=["RS256"], audience=audience, issuer=self.issuer,  # type: ignore[arg-type]
                        options={"verify_exp": False, "verify_iat": False})
                except jwt.PyJWTError:
                    return None
                return claims
        return None

    def discovery(self) -> dict[str, Any]:
        base = self.issuer
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/oidc/authorize",
            "token_endpoint": f"{base}/oidc/token",
            "userinfo_endpoint": f"{base}/oidc/userinfo",
            "jwks_uri": f"{base}/oidc/jwks",
            "end_session_endpoint": f"{base}/oidc/logout",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["public"],
            "authorization_response_iss_parameter_supported": True,
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": list(SCOPES),
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "preferred_username",
                                 "name", "groups"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "code_challenge_methods_supported": ["S256"],
            "request_parameter_supported": False,
            "request_uri_parameter_supported": False,
        }

    # the code flow
    async def issue_code(self, *, client: Client, session_id: int, session_created_at: float, redirect_uri: str,
                         scope: str, nonce: str | None, code_challenge: str | None) -> str:
        code = secrets.token_urlsafe(32)
        now = self.clock.now()
        await self.store.run(lambda tx: tx.add_grant(
            kind="code", value_hash=self.value_hash(code), client_id=client.id, session_id=session_id,
            redirect_uri=redirect_uri, scope=scope, nonce=nonce, code_challenge=code_challenge,
            auth_time=session_created_at, expires_at=now + CODE_SECONDS))
        return code

    async def redeem_code(self, client: Client, code: str, redirect_uri: str, verifier: str | None) -> Tokens:
        """Tokens for a code (RFC 6749 §4.1.3): once, for its client and redirect_uri, within CODE_SECONDS. A code
        is used up by any try, right or wrong; taking it and writing the tokens are one unit of work."""

        def check(found: Grant | None, now: float) -> tuple[OAuthError | None, str]:
            if found is None or found.expires_at <= now or not self._live(found, now):
                return OAuthError("invalid_grant", "The code is unknown, used or expired."), ""
            if found.client_id != client.id:
                return OAuthError("invalid_grant", "The code was issued to another client."), ""
            if found.redirect_uri != redirect_uri:
                return OAuthError("invalid_grant", "redirect_uri differs from the authorization request's."), ""
            if found.code_challenge is None:
                if verifier is not None:
                    return OAuthError("invalid_grant", "code_verifier sent, but the request had no code_challenge."), ""
            elif verifier is None or not valid_pkce_value(verifier) or not hmac.compare_digest(
                    s256(verifier), found.code_challenge):
                return OAuthError("invalid_grant", "code_verifier does not match the code_challenge."), ""
            return None, found.scope

        return await self._exchange("code", code, check, nonce_from_grant=True)

    async def refresh(self, client: Client, refresh_token: str, scope: str | None) -> Tokens:
        """New tokens for a refresh token, which is used up (RFC 6749 §6: rotated on use)."""

        def check(found: Grant | None, now: float) -> tuple[OAuthError | None, str]:
            if found is None or found.expires_at <= now or not self._live(found, now) or found.client_id != client.id:
                return OAuthError("invalid_grant", "The refresh token is unknown, used, revoked or another's."), ""
            granted = found.scope.split()
            if scope is not None and not set(scope.split()) <= set(granted):
                return OAuthError("invalid_scope", "A refresh can't widen the scope."), ""
            return None, " ".join(s for s in granted if scope is None or s in scope.split())

        return await self._exchange("refresh", refresh_token, check, nonce_from_grant=False)

    def _live(self, grant: Grant, now: float) -> bool:
        """Whether the device session behind a grant is still live (the sessions' own idle and absolute expiry;
        an ended session took its grants with it)."""
        return (now - grant.session_created_at < self.settings.session_max_days * 86400
                and now - grant.session_last_seen_at < self.settings.session_idle_days * 86400)

    async def _exchange(self, kind: str, value: str,
                        check: Callable[[Grant | None, float], tuple[OAuthError | None, str]], *,
                        nonce_from_grant: bool) -> Tokens:
        """Take the code or refresh token, check it, and write the new tokens, in one unit of work; then sign."""
        now = self.clock.now()
        access = secrets.token_urlsafe(32)
        refresh = secrets.token_urlsafe(32)

        async def work(tx: Tx) -> tuple[OAuthError | Grant, str]:
            found = await tx.take_grant(kind, self.value_hash(value))
            refused, scope = check(found, now)
            if refused is not None or found is None:
                return refused or OAuthError("invalid_grant", "Unknown."), ""  # the take is kept: used up
            common = {"client_id": found.client_id, "session_id": found.session_id, "redirect_uri": "",
                      "scope": scope, "nonce": None, "code_challenge": None, "auth_time": found.auth_time}
            await tx.add_grant(kind="access", value_hash=self.value_hash(access), expires_at=now + ACCESS_SECONDS,
                               **common)  # type: ignore[arg-type]
            if "offline_access" in scope.split():
                # A refresh token lives as long as the device session it is bound to (which ends it).
                await tx.add_grant(kind="refresh", value_hash=self.value_hash(refresh),
                                   expires_at=now + 400 * 86400, **common)  # type: ignore[arg-type]
            return found, scope

        outcome, scope = await self.store.run(work)
        if isinstance(outcome, OAuthError):
            raise outcome
        grant = outcome
        nonce = grant.nonce if nonce_from_grant else None
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": self.sub(grant.member_id), "aud": grant.client_id, "azp": grant.client_id,
            "exp": int(now) + ID_TOKEN_SECONDS, "iat": int(now), "auth_time": int(grant.auth_time),
            "preferred_username": grant.username, "name": grant.username, "groups": self.groups(grant.phone_key)}
        if nonce is not None:
            claims["nonce"] = nonce
        kid, private = await self._signing_key()
        id_token = jwt.encode(claims, private, algorithm="RS256", headers={"kid": kid})
        return Tokens(access, id_token, refresh if "offline_access" in scope.split() else None, scope)

    async def userinfo(self, access_token: str) -> dict[str, Any] | None:
        """The claims for a live access token (RFC 6750 bearer), or None: unknown, expired, or its session ended."""
        now = self.clock.now()
        found = await self.store.run(lambda tx: tx.grant("access", self.value_hash(access_token)))
        if found is None or found.expires_at <= now or not self._live(found, now):
            return None
        return {"sub": self.sub(found.member_id), "preferred_username": found.username, "name": found.username,
                "groups": self.groups(found.phone_key)}

    async def housekeeping(self) -> int:
        now = self.clock.now()
        return await self.store.run(lambda tx: tx.drop_expired_grants(now))


def _derive(master: bytes, purpose: bytes) -> bytes:
    return hmac.new(master, b"smsbot/v1/" + purpose, hashlib.sha256).digest()
