"""The inbound webhook: every Vonage format, duplicates, malformed requests."""

from __future__ import annotations

import asyncio
import json
import sqlite3

from smsbot.web.appkeys import OUTBOX, SETTINGS

from support.constants import ADMIN_MSISDN, NUMBER
from support.service import ADMIN, WebBench

HELP_FORM = {"msisdn": ADMIN_MSISDN, "to": NUMBER, "messageId": "0A0000000123ABCD1", "text": "HELP",
             "type": "text", "keyword": "HELP", "message-timestamp": "2026-11-26 10:00:00"}


def table_counts(bench: WebBench) -> dict[str, int]:
    with sqlite3.connect(bench.app[SETTINGS].db_path) as db:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("inbound", "outbox", "invites", "members", "events")}


async def replies(bench: WebBench) -> list[str]:
    await bench.app[OUTBOX].drain_once()
    return [m.text for m in bench.gateway.sent]


async def test_get_query_string(bench: WebBench) -> None:
    response = await bench.client.get("/webhooks/inbound", params=HELP_FORM)
    assert response.status == 204
    assert (await replies(bench))[0].startswith("Commands: INVITE")


async def test_post_form(bench: WebBench) -> None:
    response = await bench.client.post("/webhooks/inbound", data=HELP_FORM)
    assert response.status == 204
    assert len(await replies(bench)) == 1


async def test_post_json(bench: WebBench) -> None:
    response = await bench.client.post("/webhooks/inbound", json=HELP_FORM)
    assert response.status == 204
    assert len(await replies(bench)) == 1


async def test_messages_api_json(bench: WebBench) -> None:
    body = {"channel": "sms", "message_uuid": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab", "to": NUMBER,
            "from": ADMIN_MSISDN, "timestamp": "2026-11-26T10:00:00Z", "message_type": "text", "text": "LIST",
            "sms": {"num_messages": "1", "keyword": "LIST"}}
    response = await bench.client.post("/webhooks/inbound", json=body)
    assert response.status == 204
    assert (await replies(bench))[0].startswith("No members or invites yet")


async def test_a_repeated_message_id_changes_nothing(bench: WebBench) -> None:
    invite = dict(HELP_FORM, text="INVITE +14155550134 alice", keyword="INVITE")
    first = await bench.client.post("/webhooks/inbound", data=invite)
    before = table_counts(bench)
    again = await bench.client.post("/webhooks/inbound", json=invite)
    assert first.status == again.status == 204
    assert table_counts(bench) == before
    assert len(await replies(bench)) == 2  # the invite and the admin's reply, once


async def test_concurrent_duplicates_have_one_effect(bench: WebBench) -> None:
    invite = dict(HELP_FORM, messageId="0B00000000000001", text="INVITE +14155550134", keyword="INVITE")
    results = await asyncio.gather(*(bench.client.post("/webhooks/inbound", data=invite) for _ in range(10)))
    assert {r.status for r in results} == {204}
    counts = table_counts(bench)
    assert counts["inbound"] == 1 and counts["invites"] == 1 and counts["outbox"] == 2


async def test_malformed_requests_get_4xx_and_change_nothing(bench: WebBench) -> None:
    before = table_counts(bench)
    cases = [
        bench.client.get("/webhooks/inbound"),
        bench.client.post("/webhooks/inbound", data={k: v for k, v in HELP_FORM.items() if k != "msisdn"}),
        bench.client.post("/webhooks/inbound", data={k: v for k, v in HELP_FORM.items() if k != "messageId"}),
        bench.client.post("/webhooks/inbound", data={k: v for k, v in HELP_FORM.items() if k != "text"}),
        bench.client.post("/webhooks/inbound", data="{not json", headers={"Content-Type": "application/json"}),
        bench.client.post("/webhooks/inbound", data=json.dumps([1, 2]), headers={"Content-Type": "application/json"}),
        bench.client.post("/webhooks/inbound", data=b"<xml/>", headers={"Content-Type": "application/xml"}),
        bench.client.post("/webhooks/inbound", data=b"x" * 70_000, headers={"Content-Type": "text/plain"}),
    ]
    for case in cases:
        response = await case
        assert 400 <= response.status < 500, (response.status, await response.text())
    assert table_counts(bench) == before
    assert await replies(bench) == []


async def test_texts_we_do_not_act_on_are_acknowledged(bench: WebBench) -> None:
    binary = dict(HELP_FORM, type="binary", messageId="0C1")
    shortcode = dict(HELP_FORM, msisdn="12345", messageId="0C2")
    alphanumeric = dict(HELP_FORM, msisdn="VODAFONE", messageId="0C3")
    for body in (binary, shortcode, alphanumeric):
        assert (await bench.client.post("/webhooks/inbound", data=body)).status == 204
    assert await replies(bench) == []


async def test_status_webhook_answers(bench: WebBench) -> None:
    dlr = {"msisdn": "14155550134", "to": NUMBER, "messageId": "0A1", "status": "delivered", "err-code": "0"}
    assert (await bench.client.post("/webhooks/status", data=dlr)).status == 204
    assert (await bench.client.get("/webhooks/status", params=dlr)).status == 204


async def test_admin_from_national_and_msisdn_forms_is_one_person(bench: WebBench) -> None:
    out = await bench.text(ADMIN, "INVITE +1 (415) 555-0134 alice")
    assert len(out) == 2
    again = await bench.text(ADMIN, "INVITE 415.555.0134 alice")
    assert again[1] == (ADMIN, "Invited alice (**34) again with a new code; the old code no longer works.")
