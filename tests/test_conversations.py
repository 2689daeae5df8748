"""Every transcript in conversations/ is played against the engine; the marked ones also through HTTP."""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Callable

import pytest
from pytest_aiohttp import AiohttpClient

from smsbot import phone
from smsbot.clock import FakeClock
from smsbot.gateway import FakeGateway
from smsbot.messages import InboundText
from smsbot.settings import TABLE, Settings
from smsbot.web import create_app
from smsbot.web.appkeys import OUTBOX
from smsbot.wiring import build

from support.conversation import SETTINGS, Player, Sent, Transcript, all_transcripts
from support.service import WebClient, fast, web_login

pytestmark = pytest.mark.backends

TRANSCRIPTS = all_transcripts()
ROWS = {row.env: row for row in TABLE}
OVER_HTTP = [t for t in TRANSCRIPTS if t.settings.get("http") == "yes"]


def transcript_settings(t: Transcript, make_settings: Callable[..., Settings]) -> Settings:
    """The transcript's settings over the tests' own; SMSBOT_CONFIRM is the product's default unless the transcript
    says otherwise, so the transcripts show INVITE confirmed as a new installation does it."""
    env = {"SMSBOT_CONFIRM": ",".join(ROWS["SMSBOT_CONFIRM"].default)}
    for key, value in t.settings.items():
        name = SETTINGS[key]
        if name is not None:
            env[name] = value.replace(" ", ",") if key == "admins" else value
    return make_settings(**env)


def test_there_are_enough_transcripts() -> None:
    assert len(TRANSCRIPTS) >= 14
    assert len(OVER_HTTP) >= 2
    assert all(t.title for t in TRANSCRIPTS), "every transcript starts with a '#' line saying what it shows"


@pytest.mark.parametrize("transcript", TRANSCRIPTS, ids=lambda t: t.name)
async def test_transcript_against_engine(transcript: Transcript, make_settings: Callable[..., Settings]) -> None:
    settings = transcript_settings(transcript, make_settings)
    clock, gateway = FakeClock(), FakeGateway(settings.number)
    graph = build(fast(settings), clock=clock, gateway=gateway)
    store, outbox = graph.store, graph.outbox
    seen = 0
    await store.open()

    async def send(sender: str, text: str) -> None:
        number = phone.normalize(sender, settings.default_region)
        await graph.pipeline.receive(InboundText(uuid.uuid4().hex, number, text))

    async def delivered() -> list[Sent]:
        nonlocal seen
        await outbox.drain_once()
        new, seen = gateway.sent[seen:], len(gateway.sent)
        return [Sent(m.to, m.text) for m in new]

    async def session_user(token: str) -> str | None:
        found = await graph.signin.session(token)
        return found.username if found else None

    try:
        await Player(transcript, send=send, delivered=delivered, wait=clock.advance,
                     login=lambda u, p: graph.signin.login(u, p, "transcript"), session_user=session_user).play()
    finally:
        await store.close()


@pytest.mark.parametrize("transcript", OVER_HTTP, ids=lambda t: t.name)
async def test_transcript_over_http(transcript: Transcript, make_settings: Callable[..., Settings],
                                    aiohttp_client: AiohttpClient, tmp_path: pathlib.Path) -> None:
    settings = transcript_settings(transcript, make_settings)
    clock, gateway = FakeClock(), FakeGateway(settings.number)
    app = create_app(settings, gateway=gateway, clock=clock, run_worker=False)
    client: WebClient = await aiohttp_client(app)
    seen = 0

    async def send(sender: str, text: str) -> None:
        number = phone.normalize(sender, settings.default_region)
        form = {"msisdn": phone.msisdn(number), "to": settings.number, "messageId": uuid.uuid4().hex[:16].upper(),
                "text": text, "type": "text", "keyword": text.split()[0].upper() if text.split() else "",
                "message-timestamp": "2026-11-26 10:00:00"}
        response = await client.post("/webhooks/inbound", data=form)
        assert response.status in (200, 204), await response.text()

    async def delivered() -> list[Sent]:
        nonlocal seen
        await app[OUTBOX].drain_once()
        new, seen = gateway.sent[seen:], len(gateway.sent)
        return [Sent(m.to, m.text) for m in new]

    async def login(username: str, pin: str) -> str | None:
        response, cookies = await web_login(client, username, pin)
        if response.status != 303:
            return None
        return cookies.get("__Host-smsbot_session")

    async def session_user(token: str) -> str | None:
        client.session.cookie_jar.clear()
        response = await client.get("/auth", cookies={"__Host-smsbot_session": token})
        return response.headers.get("X-Auth-User") if response.status == 200 else None

    await Player(transcript, send=send, delivered=delivered, wait=clock.advance, login=login,
                 session_user=session_user).play()
