"""The OpenID Connect provider's routes: discovery, JWKS, /oidc/authorize, /oidc/token, /oidc/userinfo and
/oidc/logout (RP-initiated logout). The engine is smsbot/oidc.py; the sign-in is the site's own page."""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any
from urllib.parse import unquote, urlencode

from aiohttp import web

from smsbot.clock import Clock
from smsbot.oidc import OAuthError, Provider, valid_pkce_value
from smsbot.oidc_clients import Client, read_clients
from smsbot.settings import Settings
from smsbot.wiring import open_store

from .appkeys import CLOCK, OIDC, ROUTES, SETTINGS, SIGNIN, STORE
from .routes import Audience
from .views import COOKIES, current_session, read_form, session_cookie

log = logging.getLogger(__name__)
MAX_PARAMETER = 1000  # characters of any authorization request parameter (state and nonce are kept)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def with_query(uri: str, params: dict[str, str]) -> str:
    """`uri` with `params` added to its query (a registered redirect_uri may carry one of its own)."""
    if not params:
        return uri
    # Appended to the registered text as it is (it has no fragment): re-assembling it from parts would lose the
    # empty authority of a native app's `app.immich:///callback`.
    return uri + ("&" if "?" in uri else "?") + urlencode(params)


async def request_params(request: web.Request) -> dict[str, str]:
    """An authorization request's parameters, from the query (GET) or the form (POST), each at most once."""
    if request.method == "POST":
        return await read_form(request)
    params: dict[str, str] = {}
    for name, value in request.query.items():
        if name in params:
            raise web.HTTPBadRequest(text=f"The parameter {name} is repeated.")
        params[name] = value
    return params


async def authorize(request: web.Request) -> web.StreamResponse:
    """The authorization endpoint (RFC 6749 §4.1.1, OpenID Connect Core §3.1.2)."""
    provider = request.app[OIDC]
    params = await request_params(request)
    client = provider.clients.get(params.get("client_id", ""))
    redirect_uri = params.get("redirect_uri", "")
    # Never redirect to a URI that isn't registered exactly, nor for a client nobody declared (RFC 6749 §4.1.2.1).
    if client is None:
        raise web.HTTPBadRequest(text="This sign-in link names a tool this group hasn't set up.")
    if redirect_uri not in client.redirect_uris:
        raise web.HTTPBadRequest(text=f"This sign-in link would send you somewhere {client.name} didn't register.")
    state = params.get("state")

    def refuse(error: str, description: str) -> web.StreamResponse:
        answer = {"error": error, "error_description": description, "iss": provider.issuer}
        if state is not None:
            answer["state"] = state
        return web.Response(status=302, headers={"Location": with_query(redirect_uri, answer), **NO_STORE})

    if any(len(value) > MAX_PARAMETER for value in params.values()):
        return refuse("invalid_request", f"A parameter is longer than {MAX_PARAMETER} characters.")
    if "request" in params:
        return refuse("request_not_supported", "Request objects are not supported.")
    if "request_uri" in params:
        return refuse("request_uri_not_supported", "request_uri is not supported.")
    if params.get("response_type") != "code":
        return refuse("unsupported_response_type", "Only response_type=code is supported.")
    scopes = params.get("scope", "").split()
    if "openid" not in scopes:
        return refuse("invalid_scope", "The scope must include openid.")
    challenge = params.get("code_challenge")
    method = params.get("code_challenge_method", "plain" if challenge else None)
    if challenge is None and client.secret is None:
        return refuse("invalid_request", "A public client must send a PKCE code_challenge (S256).")
    if challenge is not None and (method != "S256" or not valid_pkce_value(challenge)):
        return refuse("invalid_request", "code_challenge_method must be S256, with a valid code_challenge.")
    prompt = params.get("prompt", "").split()
    session = await current_session(request)
    if session is None:
        if "none" in prompt:
            return refuse("login_required", "The member is not signed in.")
        # The sign-in page comes back here; slashes and colons stay plain so the way back passes its checks.
        back = "/oidc/authorize?" + urlencode(params, safe=":/")
        raise web.HTTPFound("/login?" + urlencode({"rd": back}))
    max_age = params.get("max_age", "")
    too_old = max_age.isascii() and max_age.isdigit() and provider.clock.now() - session.created_at > int(max_age)
    if "login" in prompt or too_old:
        # A new sign-in on a signed-in device would take a fresh PIN; ending the device's session for any link
        # that asks would let any site sign members out. OpenID Connect Core §3.1.2.6 allows this error instead.
        return refuse("login_required", "The member signed in on this device before; a new sign-in isn't offered.")
    kept = " ".join(s for s in dict.fromkeys(scopes) if s in ("openid", "profile", "groups", "offline_access"))
    code = await provider.issue_code(client=client, session_id=session.id, session_created_at=session.created_at,
                                     redirect_uri=redirect_uri, scope=kept, nonce=params.get("nonce"),
                                     code_challenge=challenge)
    answer = {"code": code, "iss": provider.issuer}
    if state is not None:
        answer["state"] = state
    return web.Response(status=302, headers={"Location": with_query(redirect_uri, answer), **NO_STORE})


def token_error(error: OAuthError, basic: bool = False) -> web.Response:
    headers = dict(NO_STORE)
    if error.status == 401 and basic:
        headers["WWW-Authenticate"] = 'Basic realm="token"'
    return web.json_response({"error": error.error, "error_description": error.description}, status=error.status,
                             headers=headers)


def authenticate(provider: Provider, request: web.Request, form: dict[str, str]) -> Client:
    """The client of a token request: client_secret_basic, client_secret_post, or none (public, with PKCE)."""
    header = request.headers.get("Authorization", "")
    if header[:6].lower() == "basic ":
        if "client_secret" in form:
            raise OAuthError("invalid_request", "Use one client authentication method, not two.")
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
            raw_id, raw_secret = decoded.split(":", 1)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise OAuthError("invalid_client", "The Authorization header can't be read.", 401) from None
        client_id, secret = unquote(raw_id), unquote(raw_secret)  # RFC 6749 §2.3.1: form-encoded, then Basic
        if "client_id" in form and form["client_id"] != client_id:
            raise OAuthError("invalid_request", "client_id differs from the authenticated client.")
    else:
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
    client = provider.clients.get(client_id)
    if client is None:
        raise OAuthError("invalid_client", "Client authentication failed.", 401)
    if client.secret is None:
        if secret:
            raise OAuthError("invalid_client", "This client is public: it has no secret.", 401)
        return client
    if not client.secret_matches(secret):
        raise OAuthError("invalid_client", "Client authentication failed.", 401)
    return client


async def token(request: web.Request) -> web.Response:
    """The token endpoint (RFC 6749 §3.2, §4.1.3, §6); errors as §5.2 says, in JSON."""
    provider = request.app[OIDC]
    basic = request.headers.get("Authorization", "")[:6].lower() == "basic "
    try:
        form = await read_form(request)
        client = authenticate(provider, request, form)
        grant_type = form.get("grant_type", "")
        if grant_type == "authorization_code":
            if not form.get("code") or "redirect_uri" not in form:
                raise OAuthError("invalid_request", "code and redirect_uri are required.")
            tokens = await provider.redeem_code(client, form["code"], form["redirect_uri"], form.get("code_verifier"))
        elif grant_type == "refresh_token":
            if not form.get("refresh_token"):
                raise OAuthError("invalid_request", "refresh_token is required.")
            tokens = await provider.refresh(client, form["refresh_token"], form.get("scope"))
        elif not grant_type:
            raise OAuthError("invalid_request", "grant_type is required.")
        else:
            raise OAuthError("unsupported_grant_type", "Only authorization_code and refresh_token are supported.")
    except OAuthError as error:
        return token_error(error, basic)
    except web.HTTPBadRequest:
        return token_error(OAuthError("invalid_request", "The form could not be read."))
    return web.json_response(tokens.response(), headers=NO_STORE)


async def userinfo(request: web.Request) -> web.Response:
    """The UserInfo endpoint (OpenID Connect Core §5.3), with the access token as a Bearer token (RFC 6750)."""
    header = request.headers.get("Authorization", "")
    presented = header[7:].strip() if header[:7].lower() == "bearer " else ""
    info = await request.app[OIDC].userinfo(presented) if presented and len(presented) <= 200 else None
    if info is None:
        error = 'Bearer error="invalid_token"' if presented else 'Bearer realm="userinfo"'
        return web.json_response({"error": "invalid_token"}, status=401,
                                 headers={"WWW-Authenticate": error, **NO_STORE})
    return web.json_response(info, headers=NO_STORE)


async def end_session(request: web.Request) -> web.StreamResponse:
    """RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): with an ID token this provider gave the tool
    for the member signed in here, the device is signed out, then sent to the tool's registered
    post_logout_redirect_uri (if it names one) or to the sign-in page."""
    provider = request.app[OIDC]
    params = await request_params(request)
    hint = params.get("id_token_hint", "")
    client = provider.clients.get(params.get("client_id", ""))
    claims: dict[str, Any] | None = None
    if hint:
        audience = client.id if client else str(_unverified_aud(hint))
        claims = await provider.verify_id_token(hint, audience)
        client = provider.clients.get(audience) if claims else client
    target = params.get("post_logout_redirect_uri")
    if target is not None and (client is None or target not in client.post_logout_redirect_uris):
        raise web.HTTPBadRequest(text="This sign-out link would send you somewhere the tool didn't register.")
    session = await current_session(request)
    signed_out = False
    if session is not None and claims is not None and claims.get("sub") == provider.sub(session.member_id):
        cookies = request.app[COOKIES]
        await request.app[SIGNIN].logout(session_cookie(request, cookies.session))
        signed_out = True
    if target is not None:
        state = params.get("state")
        response: web.HTTPException = web.HTTPFound(with_query(target, {"state": state} if state else {}))
    elif signed_out:
        response = web.HTTPSeeOther("/login?signed_out=this")
    else:
        response = web.HTTPSeeOther("/")  # no proof the tool asked: the member signs out from the home page
    if signed_out:
        request.app[COOKIES].clear_session(response)
    raise response


def _unverified_aud(token: str) -> object:
    import jwt

    try:
        aud = jwt.decode(token, options={"verify_signature": False}).get("aud")
    except jwt.PyJWTError:
        return ""
    return aud[0] if isinstance(aud, list) and aud else aud


async def discovery(request: web.Request) -> web.Response:
    return web.json_response(request.app[OIDC].discovery(), headers={"Access-Control-Allow-Origin": "*"})


async def jwks(request: web.Request) -> web.Response:
    return web.json_response(await request.app[OIDC].jwks(), headers={"Access-Control-Allow-Origin": "*"})


def setup_oidc(app: web.Application) -> None:
    """The provider's routes, when SMSBOT_OIDC_CLIENTS names a client file."""
    settings = app[SETTINGS]
    app[OIDC] = Provider(settings, read_clients(settings.oidc_clients), app[STORE], app[CLOCK])
    routes = app[ROUTES]
    routes.get(app, "/.well-known/openid-configuration", discovery, Audience.MACHINE)
    routes.get(app, "/oidc/jwks", jwks, Audience.MACHINE)
    routes.get(app, "/oidc/authorize", authorize, allow_head=False)  # a browser's: the sign-in page, or back
    routes.post(app, "/oidc/authorize", authorize)
    routes.post(app, "/oidc/token", token, Audience.CLIENT)
    routes.get(app, "/oidc/userinfo", userinfo, Audience.CLIENT, allow_head=False)
    routes.post(app, "/oidc/userinfo", userinfo, Audience.CLIENT)
    routes.get(app, "/oidc/logout", end_session, allow_head=False)
    app.on_startup.append(_first_key)  # after the database opened (cleanup contexts start first)


async def _first_key(app: web.Application) -> None:
    """The signing key is made at first start (or read), not during a member's first sign-in."""
    await app[OIDC].keys()


async def rotate_key(settings: Settings) -> str:
    """`smsbot oidc rotate-key`: a new signing key for every instance; the old one stays published until the
    tokens it signed have expired. Returns the new key's id."""
    store = open_store(settings)
    await store.open()
    try:
        return await Provider(settings, read_clients(settings.oidc_clients), store, Clock()).rotate_key()
    finally:
        await store.close()
