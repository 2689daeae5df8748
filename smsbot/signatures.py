"""Webhook authenticity: SMS API `sig` parameters and Messages API HS256 JWTs.

The SDK checks only the HMAC methods; Vonage's dashboard default, "MD5 hash" (md5hash), is md5(string + secret),
so the string to sign is built here for every method, the way Vonage builds it.
"""

from __future__ import annotations

import hashlib
import hmac
import warnings
from collections.abc import Mapping

from .errors import SignatureError
from .phone import is_number

HMAC_METHODS = {"md5": hashlib.md5, "sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}
MAX_AGE = 25 * 3600  # Vonage retries an inbound text for 24 hours, keeping its original timestamp
MAX_SKEW = 300  # a timestamp this far in the future is still believed (clock drift)
JWT_MAX_AGE = MAX_AGE  # Vonage may repeat a webhook's token when it retries; message_uuid dedupe stops replays


def signing_string(params: Mapping[str, str]) -> str:
    """Sorted `&key=value` pairs, without `sig`, with `&` and `=` in values replaced by `_`."""
    return "".join(f"&{key}={str(params[key]).replace('&', '_').replace('=', '_')}"
                   for key in sorted(params) if key != "sig")


def sms_signature(params: Mapping[str, str], secret: str, method: str) -> str:
    text = signing_string(params)
    if method == "md5hash":
        return hashlib.md5((text + secret).encode("utf-8"), usedforsecurity=False).hexdigest()
    return hmac.new(secret.encode("utf-8"), text.encode("utf-8"), HMAC_METHODS[method]).hexdigest()


def check_sms(params: Mapping[str, str], secret: str, method: str, now: float) -> None:
    """Raise SignatureError unless `params` carry a valid, fresh `sig`."""
    given = params.get("sig", "")
    if not given:
        raise SignatureError("no sig parameter")
    expected = sms_signature(params, secret, method)
    if not hmac.compare_digest(expected.lower().encode(), given.strip().lower().encode()):
        raise SignatureError(f"sig does not match ({method})")
    raw = params.get("timestamp", "")
    if not is_number(raw):
        raise SignatureError("no timestamp in a signed webhook")
    age = now - int(raw)
    if age > MAX_AGE or age < -MAX_SKEW:
        raise SignatureError(f"timestamp is {age:.0f} s old")


def check_jwt(authorization: str, body: bytes, secret: str, now: float) -> dict[str, object]:
    """Check a Messages API webhook's `Authorization: Bearer <JWT>`; return its claims or raise SignatureError."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise SignatureError("no bearer token")
    import jwt  # here, not at start-up: only Messages API webhooks are signed so

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PyJWT warns on short secrets; the secret is Vonage's to choose
            # Times are checked below against the service's clock, not PyJWT's.
            claims = jwt.decode(token.strip(), secret, algorithms=["HS256"],
                                options={"require": ["iat"], "verify_iat": False, "verify_exp": False,
                                         "verify_nbf": False})
    except jwt.PyJWTError as exc:
        raise SignatureError(f"token refused: {type(exc).__name__}") from None
    iat = claims.get("iat")
    if not isinstance(iat, (int, float)) or now - iat > JWT_MAX_AGE or iat - now > MAX_SKEW:
        raise SignatureError("token is stale or from the future")
    exp = claims.get("exp")
    if exp is not None and (not isinstance(exp, (int, float)) or exp < now - MAX_SKEW):
        raise SignatureError("token has expired")
    expected = hashlib.sha256(body).hexdigest()
    given = str(claims.get("payload_hash", ""))
    if not hmac.compare_digest(expected.encode(), given.lower().encode()):
        raise SignatureError("payload_hash does not match the body")
    return dict(claims)
