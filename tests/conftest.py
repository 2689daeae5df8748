"""Shared fixtures: settings for tests, a wired service on a temporary database, and an HTTP client on the app."""

from __future__ import annotations

import pathlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeAlias

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from smsbot.clock import FakeClock
from smsbot.gateway import FakeGateway
from smsbot.settings import Settings, load
from smsbot.wiring import build

ADMIN = "+14155550100"
SECRET = "test-secret-0123456789-abcdefghijklmnop"

BASE_ENV = {
    "SMSBOT_SECRET": SECRET,
    "SMSBOT_ADMINS": ADMIN,
    "SMSBOT_NUMBER": "14155550199",
    "SMSBOT_GROUP_NAME": "Friends",
    "SMSBOT_PUBLIC_URL": "https://group.example.org",
    "VONAGE_API_KEY": "test-key",
    "VONAGE_API_SECRET": "test-secret-value",
    # An INVITE runs at once in the tests' own set-ups; the transcripts (which use the product's default) and
    # tests/test_confirm.py show it waiting for YES.
    "SMSBOT_CONFIRM": "none",
}


@pytest.fixture
def emu() -> Iterator[Any]:
    """The Vonage TLS emulator, on its own thread, for tests that run the real SDK or `smsbot serve`."""
    from .vonage_emulator import running_emulator

    with running_emulator() as emulator:
        yield emulator


@pytest.fixture
def http() -> Iterator[Any]:
    import requests

    session = requests.Session()
    session.trust_env = False  # no proxies from the environment for 127.0.0.1
    yield session
    session.close()


BACKENDS = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked `backends` run once on SQLite and once on PostgreSQL (a fresh database each)."""
    if metafunc.definition.get_closest_marker("backends") and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS)


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def make_settings(tmp_path: pathlib.Path, backend: str, request: pytest.FixtureRequest) -> Callable[..., Settings]:
    """Settings for a test, on the backend it runs on: a SQLite file in its folder or a new PostgreSQL database."""
    db = str(tmp_path / "smsbot.db") if backend == "sqlite" else request.getfixturevalue("make_pg_url")()

    def make(dev: bool = True, **env: str) -> Settings:
        merged = {**BASE_ENV, "SMSBOT_DB": db, **env}
        return load(merged, dev=dev)

    return make


class Wired:
    """A service on a real SQLite file with the fake gateway and a fake clock: the engine's test bench."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.clock = FakeClock()
        self.gateway = FakeGateway(settings.number)
        graph = build(settings.with_changes(sms_rate=1000), clock=self.clock, gateway=self.gateway)
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


@pytest.fixture
async def wired(make_settings: Callable[..., Settings]) -> AsyncIterator[Wired]:
    w = Wired(make_settings())
    await w.store.open()
    yield w
    await w.store.close()


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
            "msisdn": phone.msisdn(number), "to": "14155550199", "messageId": f"0A{self._ids:014d}", "text": body,
            "type": "text"})
        assert response.status == 204, await response.text()
        await self.app[OUTBOX].drain_once()
        new = self.gateway.sent[self._seen:]
        self._seen = len(self.gateway.sent)
        return [(m.to, m.text) for m in new]

    async def member_with_pin(self, number: str, username: str) -> str:
        """Invite `number` as `username`, redeem the code, return the PIN texted to it."""
        out = await self.text(ADMIN, f"INVITE {number} {username}")
        code = re.search(r"code ([A-Z0-9]{6})", out[0][1])
        assert code
        out = await self.text(number, code.group(1))
        pin = re.search(r"PIN is (\d{6})", out[0][1])
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


@pytest.fixture
def make_bench(make_settings: Callable[..., Settings], aiohttp_client: Callable[..., Any]) -> Callable[..., Any]:
    async def make(**env: str) -> WebBench:
        from smsbot.web import create_app

        settings = make_settings(dev=False, **env)
        clock, gateway = FakeClock(), FakeGateway(settings.number)
        app = create_app(settings, gateway=gateway, clock=clock, run_worker=False)
        client = await aiohttp_client(app)
        return WebBench(client, app, gateway, clock)

    return make


@pytest.fixture
async def bench(make_bench: Callable[..., Awaitable[WebBench]]) -> WebBench:
    return await make_bench()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """A throwaway PostgreSQL 15 cluster (tests/pgcluster.py), one per xdist worker; skips where it can't run."""
    from .pgcluster import PgCluster, unavailable

    reason = unavailable()
    if reason:
        pytest.skip(reason)
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def make_pg_url(pg_cluster: Any) -> Iterator[Callable[[], str]]:
    """Call it for a new, empty database on the test cluster: its postgresql:// URL. Each is dropped after the test."""
    urls: list[str] = []

    def make() -> str:
        urls.append(pg_cluster.create_database())
        return urls[-1]

    yield make
    for url in urls:
        pg_cluster.drop_database(url)


@pytest.fixture
def pg_url(make_pg_url: Callable[[], str]) -> str:
    """A new, empty database for this test: postgresql://postgres@127.0.0.1:<port>/<name>, dropped afterwards."""
    return make_pg_url()


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless (tests/browser.py); the test skips where it or Playwright is missing."""
    from .browser import CHROMIUM, chromium, have_chromium

    if not have_chromium():
        pytest.skip(f"{CHROMIUM} is missing (install Debian's chromium package to run the browser tests)")
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    with chromium() as launched:
        yield launched
