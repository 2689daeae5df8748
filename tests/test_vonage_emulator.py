"""Tests of the Vonage emulator, driven by the real Vonage Python SDK (v4)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import vonage_http_client
from vonage import Auth, HttpClientOptions, Vonage
from vonage_sms import SmsError, SmsMessage
from vonage_verify import SmsChannel, VerifyRequest

from support.vonage_emulator import SentSms, VonageEmulator, running_emulator

pytestmark = pytest.mark.slow  # every test starts the emulator

PHONE = "447700900001"
OTHER_PHONE = "447700900002"


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[VonageEmulator]:
    """A running emulator whose CA the SDK (requests) trusts."""
    with running_emulator() as emulator:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emulator.ca_path))
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        yield emulator


@pytest.fixture
def make_client(emu: VonageEmulator) -> Callable[..., Vonage]:
    """Factory of real SDK clients pointed at the emulator."""

    def make(secret: str | None = None, **options: Any) -> Vonage:
        opts = {"api_host": emu.host, "rest_host": emu.host, "timeout": 3, **options}
        return Vonage(Auth(emu.api_key, secret or emu.api_secret), HttpClientOptions(**opts))

    return make


@pytest.fixture
def client(make_client: Callable[..., Vonage]) -> Vonage:
    return make_client()


def sms(text: str = "hello", client_ref: str | None = None) -> SmsMessage:
    return SmsMessage(to=PHONE, from_="Acme", text=text, client_ref=client_ref)


def start(client: Vonage, to: str = PHONE, **kwargs: Any) -> str:
    req = VerifyRequest(brand="Acme", workflow=[SmsChannel(to=to)], **kwargs)
    return str(client.verify.start_verification(req).request_id)


def problem(err: vonage_http_client.HttpRequestError) -> dict[str, Any]:
    assert err.response.headers["Content-Type"].startswith("application/problem+json")
    body: dict[str, Any] = err.response.json()
    return body


# ---------------------------------------------------------------------- SMS API


def test_send_success_is_recorded(emu: VonageEmulator, client: Vonage) -> None:
    before = time.time()
    resp = client.sms.send(sms("hi there", client_ref="ref-1"))
    assert resp.message_count == "1"
    msg = resp.messages[0]
    assert msg.status == "0" and msg.to == PHONE and msg.client_ref == "ref-1"
    assert len(msg.message_id) == 16 and msg.message_id == msg.message_id.upper()
    int(msg.message_id, 16)
    assert (msg.remaining_balance, msg.message_price, msg.network) == ("10.0", "0.05", "12345")
    [sent] = emu.sent
    assert isinstance(sent, SentSms)
    assert (sent.to, sent.from_, sent.text, sent.type, sent.client_ref) == (
        PHONE,
        "Acme",
        "hi there",
        "text",
        "ref-1",
    )
    assert sent.message_id == msg.message_id and sent.at >= before
    [rec] = emu.requests
    assert (rec.method, rec.path, rec.fault) == ("POST", "/sms/json", None)
    assert rec.params["text"] == "hi there" and rec.headers["Authorization"].startswith("Basic ")


def test_client_ref_omitted_when_absent(emu: VonageEmulator, client: Vonage) -> None:
    client.sms.send(sms())
    assert emu.sent[0].client_ref is None
    assert "client-ref" not in client.http_client.last_response.json()["messages"][0]


def test_wrong_secret_is_bad_credentials(emu: VonageEmulator, make_client: Callable[..., Vonage]) -> None:
    with pytest.raises(SmsError, match="error code 4: Bad Credentials"):
        make_client(secret="wrong-secret").sms.send(sms())
    assert emu.sent == [] and len(emu.requests) == 1


def test_form_credentials_query_params_and_missing_fields(emu: VonageEmulator) -> None:
    url = f"https://{emu.host}/sms/json"
    creds = {"api_key": emu.api_key, "api_secret": emu.api_secret}
    ok = requests.post(
        url, data={**creds, "to": PHONE, "from": "Acme", "text": "x"}, verify=str(emu.ca_path), timeout=3
    )
    assert ok.json()["messages"][0]["status"] == "0"
    via_query = requests.post(
        url, params={**creds, "to": PHONE, "from": "Acme", "text": "q"}, verify=str(emu.ca_path), timeout=3
    )
    assert via_query.json()["messages"][0]["status"] == "0"
    missing = requests.post(url, data={**creds, "to": PHONE, "from": "Acme"}, verify=str(emu.ca_path), timeout=3)
    assert missing.status_code == 200
    assert missing.json() == {
        "message-count": "1",
        "messages": [{"status": "2", "error-text": "Missing text param"}],
    }
    bad = requests.post(
        url,
        data={"api_key": emu.api_key, "api_secret": "nope", "to": PHONE, "from": "A", "text": "x"},
        verify=str(emu.ca_path),
        timeout=3,
    )
    assert bad.json()["messages"][0] == {"status": "4", "error-text": "Bad Credentials"}
    assert [s.text for s in emu.sent] == ["x", "q"]


def test_form_body_labelled_json_is_accepted(emu: VonageEmulator, client: Vonage) -> None:
    # facts 1.2 / SDK issue #323: after a Verify v2 call the SDK keeps sending
    # "Content-Type: application/json" with the form-encoded SMS body.
    start(client)
    client.sms.send(sms("after verify"))
    rec = emu.requests[-1]
    assert rec.headers["Content-Type"] == "application/json" and rec.json is None
    assert emu.sent[-1].text == "after verify"


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("throttle", "error code 1: Throttled"),
        ("internal", "error code 5: Internal Error"),
        ("invalid", "error code 3: Invalid Parameters"),
    ],
)
def test_sms_status_faults(emu: VonageEmulator, client: Vonage, fault: str, message: str) -> None:
    emu.inject(fault)
    with pytest.raises(SmsError, match=message):
        client.sms.send(sms())
    assert emu.sent == [] and emu.requests[0].fault == fault
    client.sms.send(sms())  # the fault was used up (one per request)
    assert len(emu.sent) == 1


@pytest.mark.parametrize(
    ("fault", "exc"),
    [
        ("http500", vonage_http_client.ServerError),
        ("http503", vonage_http_client.HttpRequestError),
        ("http429", vonage_http_client.RateLimitedError),
    ],
)
def test_http_faults(emu: VonageEmulator, client: Vonage, fault: str,
                     exc: type[vonage_http_client.HttpRequestError]) -> None:
    emu.inject(fault)
    with pytest.raises(exc) as info:
        client.sms.send(sms())
    assert info.value.response.status_code == int(fault[4:])
    assert problem(info.value)["title"]
    # The SDK does not retry a POST on an HTTP error status: exactly one request.
    assert len(emu.requests) == 1 and emu.sent == []


def test_inject_is_fifo_one_per_request(emu: VonageEmulator, client: Vonage) -> None:
    emu.inject("throttle", "internal")
    for code in ("1", "5"):
        with pytest.raises(SmsError, match=f"error code {code}:"):
            client.sms.send(sms())
    client.sms.send(sms())
    assert [r.fault for r in emu.requests] == ["throttle", "internal", None]


def test_inject_rejects_unknown_fault(emu: VonageEmulator) -> None:
    with pytest.raises(ValueError):
        emu.inject("nope")
    with pytest.raises(ValueError):
        emu.fail_for(1, "nope")


def test_fail_for_window(emu: VonageEmulator, client: Vonage) -> None:
    emu.fail_for(60, "throttle")
    for _ in range(3):
        with pytest.raises(SmsError, match="error code 1"):
            client.sms.send(sms())
    emu.advance_time(61)
    client.sms.send(sms())
    emu.fail_for(0.3, "http500")
    with pytest.raises(vonage_http_client.ServerError):
        client.sms.send(sms())
    time.sleep(0.35)
    client.sms.send(sms())
    assert len(emu.sent) == 2


def test_hang_times_out_and_stop_is_quick(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_emulator() as emu:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emu.ca_path))
        client = Vonage(
            Auth(emu.api_key, emu.api_secret), HttpClientOptions(**emu.http_client_options(timeout=1))
        )
        emu.inject("hang")
        t0 = time.monotonic()
        # Observed: requests.exceptions.ReadTimeout after `timeout` seconds; the SDK does
        # not retry it (only RemoteDisconnected is retried), so exactly one request.
        with pytest.raises(requests.exceptions.ReadTimeout):
            client.sms.send(sms())
        assert time.monotonic() - t0 < 2.5
        assert [r.fault for r in emu.requests] == ["hang"] and emu.sent == []
        t1 = time.monotonic()
    assert time.monotonic() - t1 < 2  # stop() interrupts the 30 s hang
    assert emu.sent == []  # stopped before the hung request was processed


def test_hang_answers_normally_afterwards(emu: VonageEmulator, client: Vonage) -> None:
    emu.hang_seconds = 0.3
    emu.inject("hang")
    t0 = time.monotonic()
    assert client.sms.send(sms()).messages[0].status == "0"
    assert 0.3 <= time.monotonic() - t0 < 2 and len(emu.sent) == 1


def test_drop_is_retried_by_sdk(emu: VonageEmulator, client: Vonage) -> None:
    # Observed with vonage 4.9.1: the server closing the connection without a response
    # surfaces as ConnectionError(ProtocolError('Connection aborted.', RemoteDisconnected)),
    # which HttpClient.make_request retries (also for POST) up to pool_maxsize (10) times.
    # So one "drop" is invisible to the caller: the re-POST succeeds.
    emu.inject("drop")
    resp = client.sms.send(sms())
    assert resp.messages[0].status == "0"
    assert [r.fault for r in emu.requests] == ["drop", None]
    assert len(emu.sent) == 1


def test_drop_raises_connection_error_when_retries_exhausted(
    emu: VonageEmulator, make_client: Callable[..., Vonage]
) -> None:
    emu.inject(*["drop"] * 10)
    with pytest.raises(requests.exceptions.ConnectionError, match="RemoteDisconnected"):
        make_client().sms.send(sms())
    assert len(emu.requests) == 10  # 10 attempts = pool_maxsize default
    # pool_maxsize=1 disables the SDK's re-POST loop: the first drop is raised.
    emu.inject("drop")
    with pytest.raises(requests.exceptions.ConnectionError, match="RemoteDisconnected"):
        make_client(pool_maxsize=1).sms.send(sms())
    assert len(emu.requests) == 11 and emu.sent == []


def test_accept_then_drop_duplicates_sms(emu: VonageEmulator, client: Vonage) -> None:
    # Observed: the provider accepted the SMS, the answer was lost (RemoteDisconnected),
    # the SDK silently re-POSTed and a SECOND SMS was accepted. The caller only sees
    # the second message-id; the phone gets the text twice.
    emu.inject("accept_then_drop")
    resp = client.sms.send(sms("pay 10 EUR", client_ref="outbox-1"))
    assert [r.fault for r in emu.requests] == ["accept_then_drop", None]
    assert [s.text for s in emu.sent] == ["pay 10 EUR", "pay 10 EUR"]
    assert [s.client_ref for s in emu.sent] == ["outbox-1", "outbox-1"]
    first, second = emu.sent
    assert first.message_id != second.message_id
    assert resp.messages[0].message_id == second.message_id


def test_accept_then_drop_without_sdk_retry_raises(
    emu: VonageEmulator, make_client: Callable[..., Vonage]
) -> None:
    emu.inject("accept_then_drop")
    with pytest.raises(requests.exceptions.ConnectionError):
        make_client(pool_maxsize=1).sms.send(sms())
    assert len(emu.sent) == 1  # accepted although the client saw an error


# ---------------------------------------------------------------------- Verify v2


def test_verify_wrong_then_right_code(emu: VonageEmulator, client: Vonage) -> None:
    request_id = start(client)
    code = emu.verify_codes[request_id]
    assert len(code) == 4 and code.isdigit()
    rec = emu.requests[-1]
    assert rec.json["workflow"] == [{"channel": "sms", "to": PHONE}] and rec.json["brand"] == "Acme"
    wrong = "0000" if code != "0000" else "1111"
    with pytest.raises(vonage_http_client.HttpRequestError) as info:
        client.verify.check_code(request_id, wrong)
    assert info.value.response.status_code == 400
    assert problem(info.value)["title"] == "Invalid Code"
    assert problem(info.value)["detail"] == "The code you provided does not match the expected value."
    result = client.verify.check_code(request_id, code)
    assert (result.request_id, result.status) == (request_id, "completed")
    with pytest.raises(vonage_http_client.NotFoundError):
        client.verify.check_code(request_id, code)  # finished


def test_verify_checks_take_the_latency_asked_for_and_nothing_else_does(emu: VonageEmulator, client: Vonage) -> None:
    emu.check_latency = 1.0
    t0 = time.monotonic()
    request_id = start(client)
    assert time.monotonic() - t0 < 1.0, "starting a verification is not slowed"
    t0 = time.monotonic()
    assert client.verify.check_code(request_id, emu.verify_codes[request_id]).status == "completed"
    assert time.monotonic() - t0 >= 1.0


def test_verify_code_length(emu: VonageEmulator, client: Vonage) -> None:
    request_id = start(client, code_length=8)
    assert len(emu.verify_codes[request_id]) == 8


def test_verify_concurrent_is_409(emu: VonageEmulator, client: Vonage) -> None:
    first = start(client)
    with pytest.raises(vonage_http_client.HttpRequestError) as info:
        start(client)
    assert info.value.response.status_code == 409
    body = problem(info.value)
    assert body["title"] == "Conflict"
    assert body["detail"] == "Concurrent verifications to the same number are not allowed"
    assert body["request_id"] == first
    start(client, to=OTHER_PHONE)  # another number is fine
    client.verify.cancel_verification(first)
    start(client)  # allowed once the first one is over


def test_verify_three_wrong_codes_is_410(emu: VonageEmulator, client: Vonage) -> None:
    request_id = start(client)
    code = emu.verify_codes[request_id]
    wrong = "0000" if code != "0000" else "1111"
    statuses = []
    for _ in range(3):
        with pytest.raises(vonage_http_client.HttpRequestError) as info:
            client.verify.check_code(request_id, wrong)
        statuses.append(info.value.response.status_code)
    assert statuses == [400, 400, 410]
    assert (
        problem(info.value)["detail"]
        == "An incorrect code has been provided too many times. Workflow terminated."
    )
    with pytest.raises(vonage_http_client.NotFoundError):
        client.verify.check_code(request_id, code)  # the request is dead
    start(client)  # and no longer blocks the number


def test_verify_cancel_then_check_is_404(emu: VonageEmulator, client: Vonage) -> None:
    request_id = start(client)
    assert client.verify.cancel_verification(request_id) is None
    with pytest.raises(vonage_http_client.NotFoundError):
        client.verify.check_code(request_id, emu.verify_codes[request_id])
    with pytest.raises(vonage_http_client.NotFoundError):
        client.verify.cancel_verification(request_id)
    with pytest.raises(vonage_http_client.NotFoundError):
        client.verify.check_code("00000000-0000-4000-8000-000000000000", "1234")


def test_verify_expiry(emu: VonageEmulator, client: Vonage) -> None:
    request_id = start(client, channel_timeout=60)
    emu.advance_time(59)
    other = start(client, to=OTHER_PHONE)
    emu.advance_time(2)
    with pytest.raises(vonage_http_client.NotFoundError):
        client.verify.check_code(request_id, emu.verify_codes[request_id])
    assert client.verify.check_code(other, emu.verify_codes[other]).status == "completed"
    start(client)  # the expired request no longer blocks the number


def test_verify_requires_authorization(emu: VonageEmulator) -> None:
    url = f"https://{emu.host}/v2/verify"
    body: dict[str, Any] = {"brand": "Acme", "workflow": [{"channel": "sms", "to": PHONE}]}
    resp = requests.post(url, json=body, verify=str(emu.ca_path), timeout=3)
    assert resp.status_code == 401
    bearer = requests.post(
        url, json=body, headers={"Authorization": "Bearer x.y.z"}, verify=str(emu.ca_path), timeout=3
    )
    assert bearer.status_code == 202 and bearer.json()["request_id"] in emu.verify_codes


def test_verify_faults(emu: VonageEmulator, client: Vonage) -> None:
    emu.inject("throttle", path="/v2/verify")
    with pytest.raises(vonage_http_client.RateLimitedError):
        start(client)
    request_id = start(client)
    emu.inject("http500", path="/v2/verify")
    with pytest.raises(vonage_http_client.ServerError):
        client.verify.check_code(request_id, emu.verify_codes[request_id])
    client.sms.send(sms())  # faults for /v2/verify do not touch /sms/json
    assert client.verify.check_code(request_id, emu.verify_codes[request_id]).status == "completed"


def test_verify_check_accept_then_drop_gives_404(emu: VonageEmulator, client: Vonage) -> None:
    # Observed: the check succeeded server-side, the SDK re-POSTed after RemoteDisconnected
    # and the retry hit the now-finished request: the caller gets NotFoundError.
    request_id = start(client)
    emu.inject("accept_then_drop", path="/v2/verify")
    with pytest.raises(vonage_http_client.NotFoundError):
        client.verify.check_code(request_id, emu.verify_codes[request_id])
    assert [r.fault for r in emu.requests[-2:]] == ["accept_then_drop", None]


# ---------------------------------------------------------------------- async API


def test_async_start_stop(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        emu = VonageEmulator(api_key="k", api_secret="s", cert_dir=tmp_path)
        assert emu.ca_path.parent == tmp_path and emu.ca_path.read_text().startswith("-----BEGIN CERTIFICATE")
        await emu.start()
        try:
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emu.ca_path))
            client = Vonage(Auth("k", "s"), HttpClientOptions(**emu.http_client_options()))
            resp = await asyncio.to_thread(client.sms.send, sms())
            assert resp.messages[0].status == "0"
            raw = await asyncio.to_thread(
                requests.get, f"https://{emu.host}/nowhere", verify=str(emu.ca_path), timeout=3
            )
            assert raw.status_code == 404 and json.loads(raw.text)["title"] == "Not Found"
        finally:
            await emu.stop()
        assert emu.host.startswith("127.0.0.1:") and len(emu.sent) == 1

    asyncio.run(main())
