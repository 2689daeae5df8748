"""The OpenID Connect provider over real HTTP: each check the specs ask of a provider (RFC 6749 §4.1 and §5.2,
RFC 7636, OpenID Connect Core §3.1), the tokens and claims, userinfo, and revocation through the device session."""

from __future__ import annotations

import base64
import hashlib
import pathlib
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest

from support.service import ADMIN, CSRF_INPUT, WebBench

# Each runs on SQLite and on PostgreSQL (the grants' cascade from the sessions, the keys, the single-use takes).
pytestmark = pytest.mark.backends
ISSUER = "https://group.example.org"
WIKI_SECRET = "wiki-secret-0123456789-abcdefghijklmnop"
WIKI_BACK = "https://wiki.example.org/oauth2/callback"
APP_BACK = "https://photos.example.org/auth/callback?from=smsbot"
ALICE = "+14155550134"
BOB = "+14155550135"
CLIENTS = f'''
[[client]]
id = "wiki"
secret = "{WIKI_SECRET}"
redirect_uris = ["{WIKI_BACK}"]
name = "The wiki"
post_logout_redirect_uris = ["https://wiki.example.org/bye"]

[[client]]
id = "photos"
redirect_uris = ["{APP_BACK}", "app.immich:///oauth-callback"]
'''


@pytest.fixture
async def oidc(make_bench: Callable[..., Awaitable[WebBench]], tmp_path: pathlib.Path) -> WebBench:
    path = tmp_path / "clients.toml"
    path.write_text(CLIENTS)
    return await make_bench(SMSBOT_OIDC_CLIENTS=str(path))


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


async def signed_in(bench: WebBench, number: str = ALICE, username: str = "alice") -> dict[str, str]:
    pin = await bench.member_with_pin(number, username)
    response, cookies = await bench.login(username, pin)
    assert response.status == 303
    return cookies


async def authorize(bench: WebBench, cookies: dict[str, str] | None, **params: str) -> Any:
    bench.client.session.cookie_jar.clear()
    query = {"client_id": "wiki", "redirect_uri": WIKI_BACK, "response_type": "code", "scope": "openid profile",
             "state": "st-1", "nonce": "n-1", **params}
    return await bench.client.get("/oidc/authorize?" + urlencode({k: v for k, v in query.items() if v != "-"}),
                                  cookies=cookies or {}, allow_redirects=False)


def sent_back(response: Any, base: str = WIKI_BACK) -> dict[str, str]:
    assert response.status == 302, response.status
    location = response.headers["Location"]
    assert location.split("?")[0] == base.split("?")[0]
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def code_for(bench: WebBench, cookies: dict[str, str], **params: str) -> str:
    return sent_back(await authorize(bench, cookies, **params))["code"]


async def token(bench: WebBench, form: dict[str, str], basic: tuple[str, str] | None = ("wiki", WIKI_SECRET)) -> Any:
    headers = {}
    if basic:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
    return await bench.client.post("/oidc/token", data=form, headers=headers)


async def tokens_for(bench: WebBench, cookies: dict[str, str], **params: str) -> dict[str, Any]:
    code = await code_for(bench, cookies, **params)
    response = await token(bench, {"grant_type": "authorization_code", "code": code, "redirect_uri": WIKI_BACK})
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def userinfo(bench: WebBench, access: str) -> Any:
    return await bench.client.get("/oidc/userinfo", headers={"Authorization": f"Bearer {access}"})


async def test_discovery_names_the_endpoints_and_the_keys_verify_the_id_token(oidc: WebBench) -> None:
    config = await (await oidc.client.get("/.well-known/openid-configuration")).json()
    assert config["issuer"] == ISSUER
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]
    assert {"client_secret_basic", "client_secret_post"} <= set(config["token_endpoint_auth_methods_supported"])
    assert urlsplit(config["jwks_uri"]).path == "/oidc/jwks"
    keys = (await (await oidc.client.get("/oidc/jwks")).json())["keys"]
    assert len(keys) == 1 and keys[0]["kty"] == "RSA" and keys[0]["alg"] == "RS256" and "d" not in keys[0]

    cookies = await signed_in(oidc, ADMIN, "boss")
    body = await tokens_for(oidc, cookies)
    assert body["token_type"] == "Bearer" and body["expires_in"] == 600 and "refresh_token" not in body
    header = jwt.get_unverified_header(body["id_token"])
    assert header["alg"] == "RS256" and header["kid"] == keys[0]["kid"]
    public = jwt.PyJWK(keys[0]).key
    claims = jwt.decode(body["id_token"], public, algorithms=["RS256"], audience="wiki", issuer=ISSUER,
                        options={"verify_exp": False, "verify_iat": False})  # the fake clock runs ahead
    assert claims["nonce"] == "n-1" and claims["preferred_username"] == "boss"
    assert claims["groups"] == ["members", "admins"]
    assert claims["exp"] - claims["iat"] == 600 and claims["auth_time"] <= claims["iat"]
    info = await (await userinfo(oidc, body["access_token"])).json()
    assert info == {"sub": claims["sub"], "preferred_username": "boss", "name": "boss",
                    "groups": ["members", "admins"]}


async def test_the_private_key_is_kept_encrypted(oidc: WebBench) -> None:
    await oidc.client.get("/oidc/jwks")
    [(pem,)] = await oidc.query("SELECT private_pem FROM oidc_keys")
    assert "BEGIN ENCRYPTED PRIVATE KEY" in pem


async def test_sub_is_keyed_stable_and_differs_between_members(oidc: WebBench) -> None:
    alice = await signed_in(oidc)
    first = jwt.decode((await tokens_for(oidc, alice))["id_token"], options={"verify_signature": False})
    again = jwt.decode((await tokens_for(oidc, alice))["id_token"], options={"verify_signature": False})
    bob = await signed_in(oidc, BOB, "bob")
    other = jwt.decode((await tokens_for(oidc, bob))["id_token"], options={"verify_signature": False})
    assert first["sub"] == again["sub"] != other["sub"]
    [(member_id,)] = await oidc.query("SELECT id FROM members WHERE username = 'alice'")
    assert len(first["sub"]) == 64 and str(member_id) not in first["sub"][:4] and ALICE[1:] not in first["sub"]
    for plain in (str(member_id), ALICE, ALICE[1:]):
        assert first["sub"] != hashlib.sha256(plain.encode()).hexdigest()


async def test_unknown_client_or_unregistered_redirect_uri_gets_an_error_page_never_a_redirect(
        oidc: WebBench) -> None:
    cookies = await signed_in(oidc)
    for params in ({"client_id": "nobody"}, {"redirect_uri": WIKI_BACK + "/"}, {"redirect_uri": WIKI_BACK + "?x=1"},
                   {"redirect_uri": "https://evil.example/cb"}, {"redirect_uri": "-"},
                   {"redirect_uri": WIKI_BACK.upper()}):
        response = await authorize(oidc, cookies, **params)
        assert response.status == 400 and "Location" not in response.headers, params


async def test_other_authorization_errors_go_back_with_error_and_state(oidc: WebBench) -> None:
    cookies = await signed_in(oidc)
    cases = [({"response_type": "token"}, "unsupported_response_type"), ({"scope": "profile"}, "invalid_scope"),
             ({"code_challenge": pkce()[1], "code_challenge_method": "plain"}, "invalid_request"),
             ({"code_challenge": "short", "code_challenge_method": "S256"}, "invalid_request"),
             ({"request": "x.y.z"}, "request_not_supported"), ({"nonce": "n" * 1001}, "invalid_request")]
    for params, error in cases:
        answer = sent_back(await authorize(oidc, cookies, **params))
        assert answer["error"] == error and answer["state"] == "st-1" and "code" not in answer, params
    # A public client must use PKCE.
    answer = sent_back(await authorize(oidc, cookies, client_id="photos", redirect_uri=APP_BACK), APP_BACK)
    assert answer["error"] == "invalid_request" and answer["from"] == "smsbot"
    # A native app's own scheme (RFC 8252) is a registered URI like any other.
    native = await authorize(oidc, cookies, client_id="photos", redirect_uri="app.immich:///oauth-callback",
                             code_challenge=pkce()[1], code_challenge_method="S256")
    assert native.status == 302 and native.headers["Location"].startswith("app.immich:///oauth-callback?code=")
    # prompt=none for someone not signed in; prompt=login or an older sign-in than max_age for someone who is
    # (the device stays signed in: a link can't sign members out).
    assert sent_back(await authorize(oidc, None, prompt="none"))["error"] == "login_required"
    assert sent_back(await authorize(oidc, cookies, prompt="login"))["error"] == "login_required"
    oidc.clock.advance(120)
    assert sent_back(await authorize(oidc, cookies, max_age="60"))["error"] == "login_required"
    assert "code" in sent_back(await authorize(oidc, cookies, max_age="3600"))
    assert (await oidc.auth(cookies)).status == 200


async def test_not_signed_in_goes_through_the_sign_in_page_that_names_the_tool_and_back(oidc: WebBench) -> None:
    pin = await oidc.member_with_pin(ALICE, "alice")
    first = await authorize(oidc, None)
    assert first.status == 302 and first.headers["Location"].startswith("/login?rd=")
    page = await oidc.client.get(first.headers["Location"])
    html = await page.text()
    assert "Sign in to The wiki" in html
    csrf = CSRF_INPUT.search(html)
    assert csrf
    rd = parse_qs(urlsplit(first.headers["Location"]).query)["rd"][0]
    cookies = {k: v.value for k, v in page.cookies.items()}
    oidc.client.session.cookie_jar.clear()
    response = await oidc.client.post("/login", data={"username": "alice", "pin": pin, "csrf_token": csrf.group(1),
                                                      "rd": rd}, cookies=cookies, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == rd
    cookies.update({k: v.value for k, v in response.cookies.items()})
    oidc.client.session.cookie_jar.clear()
    back = await oidc.client.get(rd, cookies=cookies, allow_redirects=False)
    answer = sent_back(back)
    assert answer["state"] == "st-1" and answer["code"]


async def test_a_code_works_once_for_its_client_and_redirect_uri_within_60_seconds(oidc: WebBench) -> None:
    cookies = await signed_in(oidc)
    form = {"grant_type": "authorization_code", "redirect_uri": WIKI_BACK}
    code = await code_for(oidc, cookies)
    assert (await token(oidc, {**form, "code": code})).status == 200
    second = await token(oidc, {**form, "code": code})
    assert second.status == 400 and (await second.json())["error"] == "invalid_grant"

    code = await code_for(oidc, cookies)
    wrong_uri = await token(oidc, {**form, "code": code, "redirect_uri": WIKI_BACK + "/other"})
    assert (await wrong_uri.json())["error"] == "invalid_grant"
    assert (await token(oidc, {**form, "code": code})).status == 400  # a refused try used it up

    verifier, challenge = pkce()
    code = sent_back(await authorize(oidc, cookies, client_id="photos", redirect_uri=APP_BACK,
                                     code_challenge=challenge, code_challenge_method="S256"), APP_BACK)["code"]
    stolen = await token(oidc, {**form, "code": code, "redirect_uri": APP_BACK, "code_verifier": verifier})
    assert (await stolen.json())["error"] == "invalid_grant"  # presented by the wiki: not its code

    code = await code_for(oidc, cookies)
    oidc.clock.advance(61)
    late = await token(oidc, {**form, "code": code})
    assert late.status == 400 and (await late.json())["error"] == "invalid_grant"


async def test_pkce_s256_is_checked(oidc: WebBench) -> None:
    cookies = await signed_in(oidc)
    form = {"grant_type": "authorization_code", "redirect_uri": APP_BACK, "client_id": "photos"}
    verifier, challenge = pkce()
    params = {"client_id": "photos", "redirect_uri": APP_BACK, "code_challenge": challenge,
              "code_challenge_method": "S256"}
    for wrong in ({}, {"code_verifier": pkce()[0]}, {"code_verifier": challenge}):
        code = sent_back(await authorize(oidc, cookies, **params), APP_BACK)["code"]
        refused = await token(oidc, {**form, "code": code, **wrong}, basic=None)
        assert refused.status == 400 and (await refused.json())["error"] == "invalid_grant", wrong
    code = sent_back(await authorize(oidc, cookies, **params), APP_BACK)["code"]
    good = await token(oidc, {**form, "code": code, "code_verifier": verifier}, basic=None)
    assert good.status == 200, await good.text()
    # A verifier for a request that sent no challenge is refused too (RFC 9700 §2.1.1).
    code = await code_for(oidc, cookies)
    extra = await token(oidc, {"grant_type": "authorization_code", "redirect_uri": WIKI_BACK, "code": code,
                               "code_verifier": verifier})
    assert (await extra.json())["error"] == "invalid_grant"


async def test_client_authentication_basic_post_and_failures(oidc: WebBench) -> None:
    cookies = await signed_in(oidc)
    form = {"grant_type": "authorization_code", "redirect_uri": WIKI_BACK}
    code = await code_for(oidc, cookies)
    posted = await token(oidc, {**form, "code": code, "client_id": "wiki", "client_secret": WIKI_SECRET}, basic=None)
    assert posted.status == 200 and posted.headers["Cache-Control"] == "no-store"
    for basic, extra in ((("wiki", "wrong-secret"), {}), (None, {"client_id": "wiki"}),
                         (None, {"client_id": "wiki", "client_secret": "x" * 40}), (("nobody", WIKI_SECRET), {}),
                         (None, {"client_id": "photos", "client_secret": WIKI_SECRET})):
        code = await code_for(oidc, cookies)
        refused = await token(oidc, {**form, "code": code, **extra}, basic=basic)
        assert refused.status == 401 and (await refused.json())["error"] == "invalid_client", (basic, extra)
        if basic:
            assert refused.headers["WWW-Authenticate"].startswith("Basic")
        # A refused client did not use the code up: the right one still can.
        assert (await token(oidc, {**form, "code": code})).status == 200
    both = await token(oidc, {**form, "code": "x", "client_secret": WIKI_SECRET})
    assert (await both.json())["error"] == "invalid_request"
    assert (await (await token(oidc, {"code": "x"})).json())["error"] == "invalid_request"
    assert (await (await token(oidc, {"grant_type": "password"})).json())["error"] == "unsupported_grant_type"
    assert (await (await token(oidc, {**form})).json())["error"] == "invalid_request"


async def test_codes_and_tokens_are_kept_only_as_keyed_hashes(oidc: WebBench) -> None:
    cookies = await signed_in(oidc)
    code = await code_for(oidc, cookies, scope="openid offline_access")
    stored = await oidc.query("SELECT value_hash FROM oidc_grants")
    assert stored and all(code not in row[0] and row[0] != hashlib.sha256(code.encode()).hexdigest()
                          for row in stored)
    body = (await (await token(oidc, {"grant_type": "authorization_code", "code": code,
                                       "redirect_uri": WIKI_BACK})).json())
    dump = repr(await oidc.query("SELECT * FROM oidc_grants"))
    for value in (body["access_token"], body["refresh_token"], ALICE[1:]):
        assert value not in dump


async def test_access_tokens_last_ten_minutes(oidc: WebBench) -> None:
    cookies = await signed_in(oidc)
    access = (await tokens_for(oidc, cookies))["access_token"]
    assert (await userinfo(oidc, access)).status == 200
    oidc.clock.advance(601)
    expired = await userinfo(oidc, access)
    assert expired.status == 401 and "invalid_token" in expired.headers["WWW-Authenticate"]
    assert (await userinfo(oidc, "made-up")).status == 401
    assert (await oidc.client.get("/oidc/userinfo")).status == 401
    from smsbot.web.appkeys import OIDC

    await oidc.app[OIDC].housekeeping()  # what the minute's housekeeping runs: expired grants go
    assert await oidc.query("SELECT kind FROM oidc_grants") == []


async def test_refresh_only_with_offline_access_rotated_on_use(oidc: WebBench) -> None:
    cookies = await signed_in(oidc)
    assert "refresh_token" not in await tokens_for(oidc, cookies)
    body = await tokens_for(oidc, cookies, scope="openid offline_access")
    first = body["refresh_token"]
    renewed = await token(oidc, {"grant_type": "refresh_token", "refresh_token": first})
    assert renewed.status == 200
    second = (await renewed.json())["refresh_token"]
    assert second != first
    reused = await token(oidc, {"grant_type": "refresh_token", "refresh_token": first})
    assert reused.status == 400 and (await reused.json())["error"] == "invalid_grant"
    wider = await token(oidc, {"grant_type": "refresh_token", "refresh_token": second, "scope": "openid admin"})
    assert (await wider.json())["error"] == "invalid_scope"
    stranger = await token(oidc, {"grant_type": "refresh_token", "refresh_token": second, "client_id": "photos"},
                           basic=None)
    assert stranger.status == 400


@pytest.mark.parametrize("how", ["REVOKE", "LOGOUT", "sign-out"])
async def test_revoke_logout_or_the_devices_sign_out_ends_what_the_session_gave(oidc: WebBench, how: str) -> None:
    cookies = await signed_in(oidc)
    bob = await signed_in(oidc, BOB, "bob")
    body = await tokens_for(oidc, cookies, scope="openid offline_access")
    others = await tokens_for(oidc, bob, scope="openid offline_access")
    assert (await userinfo(oidc, body["access_token"])).status == 200
    if how == "REVOKE":
        await oidc.text(ADMIN, "REVOKE alice")
    elif how == "LOGOUT":
        await oidc.text(ALICE, "LOGOUT")
    else:
        oidc.client.session.cookie_jar.clear()
        assert (await oidc.client.post("/logout", cookies=cookies, allow_redirects=False)).status == 303
    assert (await userinfo(oidc, body["access_token"])).status == 401
    refused = await token(oidc, {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]})
    assert refused.status == 400 and (await refused.json())["error"] == "invalid_grant"
    # Bob is untouched.
    assert (await userinfo(oidc, others["access_token"])).status == 200
    assert (await token(oidc, {"grant_type": "refresh_token", "refresh_token": others["refresh_token"]})).status == 200


async def test_rp_initiated_logout_signs_the_device_out_and_goes_to_the_registered_uri(oidc: WebBench) -> None:
    cookies = await signed_in(oidc)
    body = await tokens_for(oidc, cookies)
    oidc.client.session.cookie_jar.clear()
    bad = await oidc.client.get("/oidc/logout?" + urlencode({
        "id_token_hint": body["id_token"], "post_logout_redirect_uri": "https://evil.example/"}),
        cookies=cookies, allow_redirects=False)
    assert bad.status == 400 and "Location" not in bad.headers
    assert (await oidc.auth(cookies)).status == 200
    oidc.client.session.cookie_jar.clear()
    done = await oidc.client.get("/oidc/logout?" + urlencode({
        "id_token_hint": body["id_token"], "post_logout_redirect_uri": "https://wiki.example.org/bye",
        "state": "s"}), cookies=cookies, allow_redirects=False)
    assert done.status == 302 and done.headers["Location"] == "https://wiki.example.org/bye?state=s"
    assert (await oidc.auth(cookies)).status == 401
    assert (await userinfo(oidc, body["access_token"])).status == 401


async def test_no_client_file_no_oidc_routes(bench: WebBench) -> None:
    assert (await bench.client.get("/.well-known/openid-configuration")).status == 404
    assert (await bench.client.post("/oidc/token", data={})).status == 404


async def test_rotate_key_signs_with_the_new_key_and_keeps_the_old_one_published_until_its_tokens_expire(
        oidc: WebBench) -> None:
    from smsbot.oidc import KEY_OVERLAP
    from smsbot.web.appkeys import OIDC

    cookies = await signed_in(oidc)
    old_token = (await tokens_for(oidc, cookies))["id_token"]
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    new_kid = await oidc.app[OIDC].rotate_key()
    new_token = (await tokens_for(oidc, cookies))["id_token"]
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid != old_kid
    published = {k["kid"]: k for k in (await (await oidc.client.get("/oidc/jwks")).json())["keys"]}
    assert set(published) == {old_kid, new_kid}
    jwt.decode(old_token, jwt.PyJWK(published[old_kid]).key, algorithms=["RS256"], audience="wiki",
               options={"verify_exp": False, "verify_iat": False})
    oidc.clock.advance(KEY_OVERLAP + 1)
    assert [k["kid"] for k in (await (await oidc.client.get("/oidc/jwks")).json())["keys"]] == [new_kid]
    await oidc.app[OIDC].rotate_key()  # a later rotation drops the long-retired key from the database
    assert len(await oidc.query("SELECT kid FROM oidc_keys")) == 2


def test_smsbot_oidc_rotate_key_adds_a_key_every_instance_signs_with(tmp_path: pathlib.Path) -> None:
    import os
    import sqlite3
    import subprocess

    from support.procs import SMSBOT
    from support.service import BASE_ENV

    (tmp_path / "clients.toml").write_text(CLIENTS)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SMSBOT_", "VONAGE_"))}, **BASE_ENV,
           "SMSBOT_DB": str(tmp_path / "smsbot.db"), "SMSBOT_OIDC_CLIENTS": str(tmp_path / "clients.toml")}
    for _ in range(2):
        result = subprocess.run([SMSBOT, "oidc", "rotate-key"], env=env, cwd=tmp_path, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "signing with new key" in result.stdout
    with sqlite3.connect(tmp_path / "smsbot.db") as db:
        keys = db.execute("SELECT retired_at IS NULL FROM oidc_keys ORDER BY created_at").fetchall()
    assert keys == [(0,), (1,)]
    unset = subprocess.run([SMSBOT, "oidc", "rotate-key"], env={**env, "SMSBOT_OIDC_CLIENTS": ""}, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert unset.returncode == 1 and "SMSBOT_OIDC_CLIENTS" in unset.stderr


async def test_authlibs_client_signs_in_and_the_id_token_verifies_against_the_jwks(oidc: WebBench) -> None:
    """The token level with an independent OIDC client (Authlib's, with PKCE S256 and client_secret_basic) and
    joserfc for the ID token's signature and claims."""
    import asyncio

    from authlib.integrations.requests_client import OAuth2Session  # type: ignore[import-untyped]
    from joserfc import jwt as jose_jwt
    from joserfc.jwk import KeySet

    cookies = await signed_in(oidc, ADMIN, "boss")
    base = str(oidc.client.make_url("")).rstrip("/")
    config = await (await oidc.client.get("/.well-known/openid-configuration")).json()
    client = OAuth2Session("wiki", WIKI_SECRET, token_endpoint_auth_method="client_secret_basic",
                           scope="openid profile groups offline_access", redirect_uri=WIKI_BACK,
                           code_challenge_method="S256")
    verifier = secrets.token_urlsafe(48)
    url, state = client.create_authorization_url(base + urlsplit(config["authorization_endpoint"]).path,
                                                 code_verifier=verifier, nonce="authlib-nonce")
    oidc.client.session.cookie_jar.clear()
    back = await oidc.client.get(url[len(base):], cookies=cookies, allow_redirects=False)
    answer = sent_back(back)
    assert answer["state"] == state and answer["iss"] == ISSUER
    token_url = base + urlsplit(config["token_endpoint"]).path
    tokens = await asyncio.to_thread(client.fetch_token, token_url, authorization_response=back.headers["Location"],
                                     code_verifier=verifier)
    assert tokens["token_type"] == "Bearer" and tokens["refresh_token"]
    keys = KeySet.import_key_set(await (await oidc.client.get("/oidc/jwks")).json())
    decoded = jose_jwt.decode(tokens["id_token"], keys, algorithms=["RS256"])
    assert decoded.header["alg"] == "RS256"
    claims = decoded.claims
    JWTClaimsRegistry = jose_jwt.JWTClaimsRegistry
    JWTClaimsRegistry(now=int(oidc.clock.now()), iss={"essential": True, "value": ISSUER},
                      aud={"essential": True, "value": "wiki"}, nonce={"essential": True, "value": "authlib-nonce"},
                      sub={"essential": True}, auth_time={"essential": True}).validate(claims)
    assert claims["preferred_username"] == "boss" and claims["groups"] == ["members", "admins"]
    # A tampered token fails the signature check.
    head, body, signature = tokens["id_token"].split(".")
    forged = base64.urlsafe_b64encode(b'{"sub":"someone-else"}').rstrip(b"=").decode()
    with pytest.raises(Exception, match="signature"):
        jose_jwt.decode(f"{head}.{forged}.{signature}", keys, algorithms=["RS256"])
    # Authlib refreshes with the rotated refresh token.
    renewed = await asyncio.to_thread(client.refresh_token, token_url, refresh_token=tokens["refresh_token"])
    assert renewed["refresh_token"] != tokens["refresh_token"]


@pytest.mark.parametrize(("text", "problem"), [
    ("[[client]]\nid = 'a'\nsecret = 'short'\nredirect_uris = ['https://a.example/cb']\n", "at least 32"),
    ("[[client]]\nid = 'a'\nredirect_uris = []\n", "redirect_uris"),
    ("[[client]]\nid = 'a'\nredirect_uris = ['https://a.example/cb#frag']\n", "fragment"),
    ("[[client]]\nid = 'a'\nredirect_uris = ['javascript:alert(1)']\n", "fragment"),
    ("[[client]]\nid = 'a'\nredirect_uris = ['ftp://a.example/cb']\n", "fragment"),
    ("[[client]]\nid = 'a'\nredirect_uris = ['https://a.example/cb']\n[[client]]\nid = 'a'\n"
     "redirect_uris = ['https://b.example/cb']\n", "declared twice"),
    ("[[client]]\nid = 'a'\nredirect_uri = ['https://a.example/cb']\n", "unknown keys"),
    ("[[client]\n", "not valid TOML"),
])
def test_a_bad_client_file_is_refused_at_start_saying_what_is_wrong(tmp_path: pathlib.Path, text: str,
                                                                     problem: str) -> None:
    from smsbot.errors import SettingsError
    from smsbot.settings import load

    from support.service import BASE_ENV

    path = tmp_path / "clients.toml"
    path.write_text(text)
    with pytest.raises(SettingsError) as caught:
        load({**BASE_ENV, "SMSBOT_OIDC_CLIENTS": str(path)})
    assert any(p.startswith("SMSBOT_OIDC_CLIENTS") and problem in p for p in caught.value.problems), \
        caught.value.problems
    with pytest.raises(SettingsError):
        load({**BASE_ENV, "SMSBOT_OIDC_CLIENTS": str(tmp_path / "missing.toml")})


async def test_a_code_sent_twice_at_once_gives_tokens_once(oidc: WebBench) -> None:
    import asyncio

    cookies = await signed_in(oidc)
    code = await code_for(oidc, cookies)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": WIKI_BACK}
    answers = await asyncio.gather(*(token(oidc, form) for _ in range(5)))
    assert sorted(a.status for a in answers) == [200, 400, 400, 400, 400]
