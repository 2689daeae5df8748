"""Metrics: the second listener serves GET /metrics and the main one does not; the counters follow what happens,
the gauges are read from the database at each scrape (bounded when it is slow), and no input adds a series."""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from smsbot.metrics import SEND_ERROR_CODES, Metrics, Tally, code_bucket
from smsbot.store.base import Tx

from support.procs import free_port
from support.service import ADMIN, WebBench

CONTRACT_FAMILIES = ("smsbot_auth_checks_total", "smsbot_signins_total", "smsbot_webhooks_total",
                     "smsbot_texts_sent_total", "smsbot_texts_failed_total", "smsbot_outbox_waiting",
                     "smsbot_outbox_oldest_seconds", "smsbot_members")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)", re.M)


def samples(exposition: str) -> dict[str, float]:
    """Each series (name and labels, as exposed) with its value."""
    return {name + (labels or ""): float(value) for name, labels, value in SAMPLE.findall(exposition)}


def series(exposition: str) -> set[str]:
    return set(samples(exposition))


async def scrape(port: int) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return await response.text()


async def metered(make_bench: Callable[..., Awaitable[WebBench]]) -> tuple[WebBench, int]:
    port = free_port()
    return await make_bench(SMSBOT_METRICS_ADDRESS=f"127.0.0.1:{port}"), port


async def test_the_metrics_listener_serves_metrics_and_nothing_else(
        make_bench: Callable[..., Awaitable[WebBench]]) -> None:
    bench, port = await metered(make_bench)
    assert (await bench.client.get("/metrics")).status == 404  # not on the main listener
    exposition = await scrape(port)
    for family in CONTRACT_FAMILIES:
        assert re.search(rf"^{family}(\{{|\s)", exposition, re.M), family
    assert "process_resident_memory_bytes" in exposition
    async with aiohttp.ClientSession() as http:
        for path in ("/", "/login", "/auth", "/healthz", "/metrics/x"):
            async with http.get(f"http://127.0.0.1:{port}{path}") as response:
                assert response.status == 404, path
        async with http.post(f"http://127.0.0.1:{port}/metrics") as response:
            assert response.status == 405


@pytest.mark.slow  # promtool runs as a subprocess
@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)")
async def test_promtool_accepts_the_exposition(make_bench: Callable[..., Awaitable[WebBench]]) -> None:
    bench, port = await metered(make_bench)
    await bench.member_with_pin("+14155550134", "alice")
    checked = subprocess.run(["promtool", "check", "metrics"], input=await scrape(port), capture_output=True,
                             text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == ""  # no lint complaints either


async def test_counters_and_gauges_follow_the_story(make_bench: Callable[..., Awaitable[WebBench]]) -> None:
    bench, port = await metered(make_bench)
    before = samples(await scrape(port))
    assert before["smsbot_members"] == 0
    assert before['smsbot_auth_checks_total{result="allowed"}'] == 0
    pin = await bench.member_with_pin("+14155550134", "alice")
    assert (await bench.login("alice", "000000" if pin != "000000" else "111111"))[0].status == 401
    response, cookies = await bench.login("alice", await bench.member_with_pin("+14155550177", "bob"))
    assert response.status == 401  # bob's PIN is not alice's
    response, cookies = await bench.login("alice", pin)
    assert response.status == 303
    name = next(k for k in cookies if k.endswith("smsbot_session"))
    for _ in range(3):
        assert (await bench.client.get("/auth", headers={"Cookie": f"{name}={cookies[name]}"})).status == 200
    assert (await bench.client.get("/auth")).status == 401
    assert (await bench.client.get("/auth", headers={"Cookie": f"{name}=nope"})).status == 401
    after = samples(await scrape(port))
    assert after['smsbot_auth_checks_total{result="allowed"}'] == 3
    assert after['smsbot_auth_checks_total{result="denied"}'] == 2
    assert after['smsbot_signins_total{result="success"}'] == 1
    assert after['smsbot_signins_total{result="failure"}'] == 2
    assert after['smsbot_signin_failures_total{reason="wrong-pin"}'] == 2
    assert after['smsbot_pin_checks_total{result="right"}'] == 1
    assert after['smsbot_session_cache_lookups_total{result="hit"}'] >= 2
    assert after['smsbot_session_cache_lookups_total{result="miss"}'] >= 1
    assert after["smsbot_members"] == 2
    # invite text + PIN text for each, and the admin's replies: all sent, none waiting
    assert after["smsbot_texts_sent_total"] == len(bench.gateway.sent) > 0
    assert after['smsbot_webhooks_total{kind="inbound",result="accepted"}'] == 4
    assert after["smsbot_outbox_waiting"] == 0
    assert after["smsbot_daily_budget_used"] == len(bench.gateway.sent)
    assert after["smsbot_database_up"] == 1
    # a text queued and not yet sent shows as waiting, with its age
    await bench.client.post("/webhooks/inbound", data={"msisdn": "14155550100", "to": "14155550199",
                                                       "messageId": "0AFFFF", "text": "HELP", "type": "text"})
    bench.clock.advance(90)
    waiting = samples(await scrape(port))
    assert waiting["smsbot_outbox_waiting"] == 1
    assert 89 <= waiting["smsbot_outbox_oldest_seconds"] <= 91


async def test_a_million_distinct_bad_inputs_add_no_series(make_bench: Callable[..., Awaitable[WebBench]]) -> None:
    """Labels come from fixed sets, so the series are the same after any input. Over HTTP: a few thousand distinct
    usernames, cookies and webhooks through every counting path; in-process: a million distinct provider error
    codes through the bucket, and a million distinct label values refused by a tally."""
    bench, port = await metered(make_bench)
    await bench.member_with_pin("+14155550134", "alice")
    known = series(await scrape(port))
    distinct = 400  # six requests each: 2,400 distinct inputs over HTTP
    for i in range(distinct):
        token = secrets.token_urlsafe(8)
        await bench.client.post("/login", data={"username": f"user{i}{token}", "pin": f"{i:06d}"})
        await bench.client.get("/auth", headers={"Cookie": f"smsbot_session={token}"})
        await bench.client.get("/auth/forward", headers={"Cookie": f"__Host-smsbot_session={token}x"})
        await bench.client.post("/webhooks/inbound", data={"msisdn": f"1415{i:07d}", "messageId": token,
                                                           "text": f"JOIN {token}", "to": "14155550199"})
        await bench.client.post("/webhooks/status", data={"messageId": token, "status": token, "err-code": token})
        await bench.client.post("/webhooks/inbound", json={"bad": token})
    after = samples(await scrape(port))
    assert set(after) == known
    assert after['smsbot_auth_checks_total{result="denied"}'] == 2 * distinct
    assert after['smsbot_signins_total{result="failure"}'] == distinct

    metrics = Metrics()
    codes = {code_bucket(f"{n}") for n in range(1_000_000)} | {code_bucket(secrets.token_hex(4)) for _ in range(1000)}
    assert codes <= set(SEND_ERROR_CODES)
    for code in codes:
        metrics.send_errors.inc(code)
    refused = 0
    for n in range(1_000_000):
        try:
            metrics.auth_checks.inc(f"user{n}")
        except KeyError:
            refused += 1
    assert refused == 1_000_000
    assert len(metrics.send_errors.counts) == len(SEND_ERROR_CODES)
    assert len(metrics.auth_checks.counts) == 2


def test_a_tally_refuses_undeclared_label_values() -> None:
    tally = Tally("smsbot_x", "x", {"result": ("a", "b")})
    tally.inc("a")
    with pytest.raises(KeyError):
        tally.inc("+14155550134")
    assert tally.counts == {("a",): 1, ("b",): 0}


class StuckStore:
    """A store whose every unit of work waits far longer than a scrape may."""

    def __init__(self) -> None:
        self.started = 0

    async def run(self, work: Callable[[Tx], Awaitable[Any]]) -> Any:
        self.started += 1
        await asyncio.sleep(60)


async def test_a_slow_database_bounds_the_scrape_and_hides_stale_gauges() -> None:
    metrics = Metrics()
    store = StuckStore()
    metrics.watch(store, metrics.clock, 500, lambda: True)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(*(metrics.refresh(timeout=0.2) for _ in range(5)))
    await metrics.refresh(timeout=0.2)
    assert loop.time() - started < 2
    assert store.started == 1  # scrapes share the read under way: a slow database gets no pile of them
    exposition = metrics.exposition().decode()
    values = samples(exposition)
    assert values["smsbot_database_up"] == 0
    assert values["smsbot_sender_role_held"] == 1
    assert "smsbot_outbox_waiting" not in exposition
    assert ADMIN not in exposition
