"""Signed webhooks, multipart texts and delivery receipts, over real HTTP."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from smsbot.signatures import sms_signature
from smsbot.web.appkeys import OUTBOX, PIPELINE, SETTINGS

from support.constants import ADMIN_MSISDN, NUMBER
from support.service import ADMIN, WebBench

SECRET = "signature-secret-of-the-account-0123"


def inbound(message_id: str, text: str, msisdn: str = ADMIN_MSISDN, **extra: str) -> dict[str, str]:
    return {"msisdn": msisdn, "to": NUMBER, "messageId": message_id, "text": text, "type": "text",
            "keyword": text.split()[0].upper() if text.split() else "", "message-timestamp": "2027-01-15 08:00:00",
            **extra}


def sign(params: dict[str, str], now: float, method: str = "sha256", secret: str = SECRET) -> dict[str, str]:
    stamped = {**params, "timestamp": str(int(now)), "nonce": "5b1c2a3e-1111-2222-3333-444455556666"}
    return {**stamped, "sig": sms_signature(stamped, secret, method)}


def counts(bench: WebBench) -> tuple[int, int]:
    with sqlite3.connect(bench.app[SETTINGS].db_path) as db:
        return (db.execute("SELECT count(*) FROM inbound").fetchone()[0],
                db.execute("SELECT count(*) FROM outbox").fetchone()[0])


@pytest.mark.parametrize("method", ["md5hash", "md5", "sha1", "sha256", "sha512"])
async def test_signed_webhooks_in_every_method_and_format(make_bench: Callable[..., Any], method: str) -> None:
    bench = await make_bench(VONAGE_SIGNATURE_SECRET=SECRET, VONAGE_SIGNATURE_METHOD=method)
    now = bench.clock.now()
    get = await bench.client.get("/webhooks/inbound", params=sign(inbound("m1", "HELP"), now, method))
    form = await bench.client.post("/webhooks/inbound", data=sign(inbound("m2", "HELP"), now, method))
    body = await bench.client.post("/webhooks/inbound", json=sign(inbound("m3", "HELP"), now, method))
    assert [get.status, form.status, body.status] == [204, 204, 204]
    assert counts(bench) == (3, 3)


@pytest.mark.parametrize("case", ["missing", "wrong", "tampered", "other method", "stale", "wrong secret"])
async def test_bad_signatures_get_401_and_store_nothing(make_bench: Callable[..., Any], case: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    bench = await make_bench(VONAGE_SIGNATURE_SECRET=SECRET, VONAGE_SIGNATURE_METHOD="sha256")
    now = bench.clock.now()
    params = sign(inbound("m1", "INVITE +14155550134"), now)
    if case == "missing":
        params.pop("sig")
    elif case == "wrong":
        params["sig"] = "0" * 64
    elif case == "tampered":
        params["text"] = "INVITE +14155550135"
    elif case == "other method":
        params = sign(inbound("m1", "INVITE +14155550134"), now, "sha512")
    elif case == "stale":
        params = sign(inbound("m1", "INVITE +14155550134"), now - 26 * 3600)
    elif case == "wrong secret":
        params = sign(inbound("m1", "INVITE +14155550134"), now, secret="not-the-secret-of-the-account")
    for response in (await bench.client.post("/webhooks/inbound", data=params),
                     await bench.client.get("/webhooks/inbound", params=params),
                     await bench.client.post("/webhooks/status", data=params)):
        assert response.status == 401
    assert counts(bench) == (0, 0)
    assert "bad signature" in caplog.text


def messages_body(uuid: str, text: str) -> bytes:
    return json.dumps({"channel": "sms", "message_uuid": uuid, "to": NUMBER, "from": ADMIN_MSISDN,
                       "timestamp": "2027-01-15T08:00:00Z", "message_type": "text", "text": text,
                       "sms": {"num_messages": "1", "keyword": text.split()[0].upper()}}).encode()


def bearer(body: bytes, iat: float, secret: str = SECRET, **claims: object) -> dict[str, str]:
    token = jwt.encode({"iat": int(iat), "jti": "j1", "iss": "Vonage", "api_key": "a1b2c3d",
                        "payload_hash": hashlib.sha256(body).hexdigest(), **claims}, secret, algorithm="HS256")
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


async def test_messages_api_webhooks_need_a_valid_jwt(make_bench: Callable[..., Any]) -> None:
    bench = await make_bench(VONAGE_SIGNATURE_SECRET=SECRET)
    now = bench.clock.now()
    body = messages_body("aaaaaaaa-0000-0000-0000-000000000001", "HELP")
    bad = {
        "none": {"Content-Type": "application/json"},
        "stale": bearer(body, now - 26 * 3600),
        "wrong secret": bearer(body, now, secret="another-secret-of-thirty-two-chars!"),
        "tampered": bearer(messages_body("x", "LIST"), now),
    }
    for headers in bad.values():
        response = await bench.client.post("/webhooks/inbound", data=body, headers=headers)
        assert response.status == 401
    assert counts(bench) == (0, 0)
    good = await bench.client.post("/webhooks/inbound", data=body, headers=bearer(body, now))
    assert good.status == 204
    assert counts(bench) == (1, 1)


async def test_without_a_secret_unsigned_webhooks_are_accepted(bench: WebBench) -> None:
    assert (await bench.client.post("/webhooks/inbound", data=inbound("m1", "HELP"))).status == 204


async def parts_of(bench: WebBench, text: str, ref: str, order: list[int], size: int = 20,
                   repeat: int | None = None) -> list[Any]:
    chunks = [text[i:i + size] for i in range(0, len(text), size)]
    sent = []
    sequence = order + ([repeat] if repeat else [])
    for index in sequence:
        params = inbound(f"{ref}-{index}", chunks[index - 1], **{
            "concat": "true", "concat-ref": ref, "concat-total": str(len(chunks)), "concat-part": str(index)})
        sent.append(await bench.client.post("/webhooks/inbound", data=params))
    return sent


async def test_multipart_texts_are_reassembled_out_of_order_and_with_repeats(bench: WebBench) -> None:
    text = "INVITE +1 415 555 0134 a_rather_long_username_x"
    assert len(text) > 40
    responses = await parts_of(bench, text, "A1", [3, 1, 2], repeat=1)
    assert {r.status for r in responses} == {204}
    await bench.app[OUTBOX].drain_once()
    sent = [(m.to, m.text) for m in bench.gateway.sent]
    assert len(sent) == 2, "one invite, one reply: handled once"
    assert sent[1] == (ADMIN, "Invited a_rather_long_username_x (**34). Their code is valid for 72 hours.")


async def test_an_incomplete_multipart_text_is_dropped_after_a_while(bench: WebBench,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    await parts_of(bench, "INVITE +1 415 555 0134 someone_else_entirely", "B7", [1, 2])  # of 3
    bench.clock.advance(16 * 60)
    await bench.app[PIPELINE].housekeeping()
    assert "dropped 2 part(s)" in caplog.text
    with sqlite3.connect(bench.app[SETTINGS].db_path) as db:
        assert db.execute("SELECT count(*) FROM inbound_parts").fetchone()[0] == 0
    await bench.app[OUTBOX].drain_once()
    assert bench.gateway.sent == []


async def test_bad_part_numbers_are_refused(bench: WebBench) -> None:
    for extra in ({"concat-ref": "R", "concat-total": "2", "concat-part": "3"},
                  {"concat-ref": "R", "concat-total": "x", "concat-part": "1"},
                  {"concat": "true"}):
        response = await bench.client.post("/webhooks/inbound", data=inbound("p1", "hi", **extra))
        assert response.status == 400


async def test_an_undelivered_invite_shows_in_list_and_the_log(bench: WebBench,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    await bench.text(ADMIN, "INVITE +14155550134 alice")
    invite = bench.gateway.sent[0]
    dlr = {"msisdn": "14155550134", "to": NUMBER, "network-code": "310090", "messageId": invite.message_id,
           "price": "0.0075", "status": "failed", "scts": "2701150800", "err-code": "3",
           "client-ref": "smsbot-1", "message-timestamp": "2027-01-15 08:00:05"}
    assert (await bench.client.post("/webhooks/status", json=dlr)).status == 204
    assert "phone permanently unreachable" in caplog.text
    out = await bench.text(ADMIN, "LIST")
    assert out == [(ADMIN, "Page 1/1: alice **34 (invite not delivered).")]
    delivered = dict(dlr, messageId="unknown", **{"client-ref": "smsbot-2", "status": "delivered", "err-code": "0"})
    assert (await bench.client.get("/webhooks/status", params=delivered)).status == 204
    with sqlite3.connect(bench.app[SETTINGS].db_path) as db:
        rows = db.execute("SELECT id, delivery_status, delivery_error FROM outbox ORDER BY id").fetchall()
    assert rows[:2] == [(1, "failed", "3: phone permanently unreachable"), (2, "delivered", None)]


async def test_messages_api_status_callbacks_are_recorded(bench: WebBench) -> None:
    await bench.text(ADMIN, "HELP")
    status = {"message_uuid": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab", "to": ADMIN_MSISDN, "from": NUMBER,
              "timestamp": "2027-01-15T08:00:00Z", "status": "rejected", "channel": "sms", "client_ref": "smsbot-1",
              "error": {"type": "https://developer.vonage.com/api-errors/messages#1340", "title": "1340",
                        "detail": "Throttled"}}
    assert (await bench.client.post("/webhooks/status", json=status)).status == 204
    with sqlite3.connect(bench.app[SETTINGS].db_path) as db:
        assert db.execute("SELECT delivery_status FROM outbox WHERE id = 1").fetchone() == ("rejected",)


async def test_odd_receipts_are_acknowledged_and_match_nothing(bench: WebBench) -> None:
    await bench.text(ADMIN, "HELP")
    for receipt in ({"messageId": "%", "status": "failed", "err-code": "3"},
                    {"messageId": "_", "status": "failed", "err-code": "3"},
                    {"client-ref": "smsbot-" + "9" * 30, "messageId": "x", "status": "failed"},
                    {"status": "failed"}, {}):
        assert (await bench.client.post("/webhooks/status", data=receipt)).status == 204
    with sqlite3.connect(bench.app[SETTINGS].db_path) as db:
        assert db.execute("SELECT delivery_status FROM outbox").fetchall() == [(None,)]


async def test_an_unreadable_receipt_still_gets_204(bench: WebBench) -> None:
    response = await bench.client.post("/webhooks/status", data=b"not json",
                                       headers={"Content-Type": "application/json"})
    assert response.status == 204
