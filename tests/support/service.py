"""The tests' shared bench: the settings every test starts from, the engine on a fake gateway and clock (Wired),
and the whole app over real HTTP (WebBench) with a browser's sign-in."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, TypeAlias

from aiohttp import web
from aiohttp.test_utils import TestClient

from smsbot.clock import FakeClock
from smsbot.gateway import FakeGateway
from smsbot.settings import Settings
from smsbot.wiring import build

from .constants import ADMIN as ADMIN  # re-exported: the tests import it from here too
from .constants import INVITE_CODE, NUMBER, PIN_IS
from .constants import SECRET as SECRET

BASE_ENV = {
    "SMSBOT_SECRET": SECRET,
    "SMSBOT_ADMINS": ADMIN,
    "SMSBOT_NUMBER": NUMBER,
    "SMSBOT_GROUP_NAME": "Friends",
    "SMSBOT_PUBLIC_URL": "https://group.example.org",
    "VONAGE_API_KEY": "test-key",
    "VONAGE_API_SECRET": "test-secret-value",
    # An INVITE runs at once in the tests' own set-ups; the transcripts (which use the product's default) and
    # tests/test_confirm.py show it waiting for YES.
    "SMSBOT_CONFIRM": "none",
}


BACKENDS = ("sqlite", "postgresql")


def fast(settings: Settings) -> Settings:
    """`settings` with a send rate no test waits on."""
    return dataclasses.replace(settings, sms_rate=1000)


class Wired:
    """A service on a real SQLite file with the fake gateway and a fake clock: the engine's test bench."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.clock = FakeClock()
        self.gateway = FakeGateway(settings.number)
        graph = build(fast(settings), clock=self.clock, gateway=self.gateway)
        self.store, self.outbox = graph.store, graph.outbox
        self.pipeline, self.signin = graph.pipeline, graph.signin
        self._seen = 0
        self._ids = 0

    async def text(self, sender: str, body: str) -> list[tuple[str, str]]:
        """Send an inbound text, drain the outbox, return the texts it caused as (to, body)."""
        from smsbot import phone
        from smsbot.messages import InboundText

        self._ids += 1
        await self.pipeline.receive(InboundText(f"msg-{self._ids}", phone.normalize(sender, "US"), body))
        return await self.delivered()

    async def delivered(self) -> list[tuple[str, str]]:
        await self.outbox.drain_once()
        new = self.gateway.sent[self._seen:]
        self._seen = len(self.gateway.sent)
        return [(m.to, m.text) for m in new]


def rsa_pem() -> str:
    """A fresh RSA private key in PEM (PKCS#8), as VONAGE_PRIVATE_KEY may hold it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
WebClient: TypeAlias = TestClient[web.Request, web.Application]


async def login_form(client: WebClient) -> tuple[str, dict[str, str]]:
    """A fresh browser's visit to /login: the form's CSRF token and the cookies it set."""
    client.session.cookie_jar.clear()
    form = await client.get("/login")
    token = CSRF_INPUT.search(await form.text())
    assert token, "the login form has a CSRF token"
    return token.group(1), {k: v.value for k, v in form.cookies.items()}


async def web_login(client: WebClient, username: str, pin: str, **headers: str) -> tuple[Any, dict[str, str]]:
    """Log in as a browser would: fetch the form (CSRF cookie + token), post it. Returns (response, cookies)."""
    client.session.cookie_jar.clear()
    form = await client.get("/login")
    token = CSRF_INPUT.search(await form.text())
    assert token, "the login form has a CSRF token"
    cookies = {k: v.value for k, v in form.cookies.items()}
    client.session.cookie_jar.clear()
    response = await client.post("/login", data={"username": username, "pin": pin, "csrf_token": token.group(1)},
                                 cookies=cookies, allow_redirects=False, headers=headers)
    cookies.update({k: v.value for k, v in response.cookies.items()})
    client.session.cookie_jar.clear()
    return response, cookies


class WebBench:
    """The whole app over real HTTP (aiohttp test server) with the fake gateway and a fake clock."""

    def __init__(self, client: WebClient, app: Any, gateway: FakeGateway, clock: FakeClock):
        self.client, self.app, self.gateway, self.clock = client, app, gateway, clock
        self._ids = 0
        self._seen = 0

    async def text(self, sender: str, body: str) -> list[tuple[str, str]]:
        from smsbot import phone
        from smsbot.web.appkeys import OUTBOX

        self._ids += 1
        number = phone.normalize(sender, "US")
        response = await self.client.post("/webhooks/inbound", data={
            "msisdn": phone.msisdn(number), "to": NUMBER, "messageId": f"0A{self._ids:014d}", "text": body,
            "type": "text"})
        assert response.status == 204, await response.text()
        await self.app[OUTBOX].drain_once()
        new = self.gateway.sent[self._seen:]
        self._seen = len(self.gateway.sent)
        return [(m.to, m.text) for m in new]

    async def member_with_pin(self, number: str, username: str) -> str:
        """Invite `number` as `username`, redeem the code, return the PIN texted to it."""
        out = await self.text(ADMIN, f"INVITE {number} {username}")
        code = INVITE_CODE.search(out[0][1])
        assert code
        out = await self.text(number, code.group(1))
        pin = PIN_IS.search(out[0][1])
        assert pin, out
        return pin.group(1)

    async def login(self, username: str, pin: str, **headers: str) -> tuple[Any, dict[str, str]]:
        return await web_login(self.client, username, pin, **headers)

    async def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of a read-only statement, straight from the database the app uses (SQLite or PostgreSQL)."""
        from smsbot.web.appkeys import SETTINGS

        settings = self.app[SETTINGS]
        if settings.postgres_url:
            import asyncpg

            conn = await asyncpg.connect(settings.postgres_url)
            try:
                return [tuple(row) for row in await conn.fetch(sql)]
            finally:
                await conn.close()
        import sqlite3

        with sqlite3.connect(settings.db_path) as db:
            return list(db.execute(sql).fetchall())

    async def auth(self, cookies: dict[str, str]) -> Any:
        self.client.session.cookie_jar.clear()
        return await self.client.get("/auth", cookies=cookies)
