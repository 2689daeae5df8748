"""The OpenID Connect flow across real `smsbot serve` processes on one PostgreSQL database (contract: "Several
instances share the signing keys and the codes through the database"): the authorization request on one instance,
the token request on another, userinfo on a third, and a REVOKE through one ending what the others gave."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import pathlib
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
import requests

from support.client import login, text_in
from support.constants import ADMIN_MSISDN as ADMIN
from support.constants import NUMBER, SECRET
from support.procs import CODE, PIN, SESSION_COOKIE, SmsbotProcess, only, serve_env, start_smsbot, wait_text
from support.vonage_emulator import VonageEmulator

pytestmark = pytest.mark.slow

PUBLIC_URL = "http://group.example.test"
ALICE = "14155550134"
CLIENT_SECRET = "tool-secret-0123456789-abcdefghijklmnop"
BACK = "https://tool.example.test/callback"


def test_authorize_on_one_instance_token_on_another_and_revoke_through_a_third(
        tmp_path: pathlib.Path, emu: VonageEmulator, pg_url: str, http: requests.Session) -> None:
    clients = tmp_path / "clients.toml"
    clients.write_text(f'[[client]]\nid = "tool"\nsecret = "{CLIENT_SECRET}"\nredirect_uris = ["{BACK}"]\n')

    def start(name: str) -> tuple[SmsbotProcess, str]:
        workdir = tmp_path / name
        workdir.mkdir()
        return start_smsbot("serve", workdir, lambda port: serve_env(
            emu, port, workdir / "unused.db", SECRET, NUMBER, SMSBOT_DB=f"{pg_url}?application_name={name}",
            SMSBOT_PUBLIC_URL=PUBLIC_URL, SMSBOT_OIDC_CLIENTS=str(clients),
            SMSBOT_VONAGE_TIMEOUT="2"),  # a new sender waits 1 s + this before its first send
            tmp_path / f"{name}.log", extra_args=["--host", "127.0.0.1"])

    with concurrent.futures.ThreadPoolExecutor(3) as pool:  # started at once: one signing key is made, not three
        started = list(pool.map(start, ["a", "b", "c"]))
    try:
        (_, a), (_, b), (_, c) = started
        jwks = [http.get(f"{base}/oidc/jwks", timeout=10).json() for base in (a, b, c)]
        assert jwks[0] == jwks[1] == jwks[2] and len(jwks[0]["keys"]) == 1

        text_in(http, a, "form", ADMIN, f"INVITE +{ALICE} alice")
        text_in(http, b, "form", ALICE, only(CODE, wait_text(emu, ALICE, lambda t: "invited" in t, "invite").text))
        pin = only(PIN, wait_text(emu, ALICE, lambda t: "PIN is" in t, "the PIN").text)
        signed_in = login(http, b, "alice", pin)
        assert signed_in.status_code == 303
        cookie = {SESSION_COOKIE: signed_in.cookies[SESSION_COOKIE] or ""}

        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = urlencode({"client_id": "tool", "redirect_uri": BACK, "response_type": "code", "state": "s1",
                           "scope": "openid profile offline_access", "nonce": "n1", "code_challenge": challenge,
                           "code_challenge_method": "S256"})
        http.cookies.clear()
        back = http.get(f"{a}/oidc/authorize?{query}", cookies=cookie, allow_redirects=False, timeout=10)
        assert back.status_code == 302, back.text
        answer = {k: v[0] for k, v in parse_qs(urlsplit(back.headers["Location"]).query).items()}
        assert answer["state"] == "s1"
        form = {"grant_type": "authorization_code", "code": answer["code"], "redirect_uri": BACK,
                "code_verifier": verifier}
        tokens = http.post(f"{b}/oidc/token", data=form, auth=("tool", CLIENT_SECRET), timeout=10)
        assert tokens.status_code == 200, tokens.text
        again = http.post(f"{c}/oidc/token", data=form, auth=("tool", CLIENT_SECRET), timeout=10)
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"  # used, on any instance
        body = tokens.json()
        key = jwt.PyJWK(jwks[0]["keys"][0]).key
        claims = jwt.decode(body["id_token"], key, algorithms=["RS256"], audience="tool", issuer=PUBLIC_URL)
        assert claims["nonce"] == "n1" and claims["preferred_username"] == "alice"
        bearer = {"Authorization": f"Bearer {body['access_token']}"}
        assert http.get(f"{c}/oidc/userinfo", headers=bearer, timeout=10).json()["sub"] == claims["sub"]

        text_in(http, c, "form", ADMIN, "REVOKE alice")
        assert http.get(f"{a}/oidc/userinfo", headers=bearer, timeout=10).status_code == 401
        refused = http.post(f"{b}/oidc/token", auth=("tool", CLIENT_SECRET), timeout=10,
                            data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]})
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    finally:
        for proc, _ in started:
            proc.stop()
