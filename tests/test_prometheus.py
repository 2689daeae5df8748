"""A real Prometheus (Debian's package) scrapes two real `smsbot serve` processes on one PostgreSQL database, with
the alert rules loaded, and the test asks it over its HTTP API: each instance reports its own counters, the gauges
read from the database agree, one instance holds the sender's role, and every rule evaluates without error."""

from __future__ import annotations

import json
import pathlib
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from support.client import auth, login, text_in
from support.constants import ADMIN_MSISDN as ADMIN
from support.constants import INVITEE, NUMBER, RULES, SECRET
from support.procs import (
    CODE,
    PIN,
    SESSION_COOKIE,
    SmsbotProcess,
    free_port,
    only,
    serve_env,
    start_smsbot,
    wait_for,
    wait_text,
)
from support.vonage_emulator import VonageEmulator

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("prometheus") is None,
                                 reason="prometheus not installed (Debian package prometheus)")]

CONFIG = """
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [{rules}]
scrape_configs:
  - job_name: smsbot
    static_configs:
      - targets: [{targets}]
"""


class Prometheus:
    def __init__(self, tmp: pathlib.Path, targets: list[str]):
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api/v1"
        config = tmp / "prometheus.yml"
        config.write_text(CONFIG.format(rules=json.dumps(str(RULES)), targets=", ".join(map(json.dumps, targets))))
        self.log = tmp / "prometheus.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log.read_text()}")
            try:
                return requests.get(f"http://127.0.0.1:{self.port}/-/ready", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_for(ready, 30, "prometheus to be ready", interval=0.2)

    def query(self, promql: str) -> dict[str, float]:
        """An instant query: each result's instance label (or "" for an aggregate) with its value."""
        answer = requests.get(f"{self.api}/query", params={"query": promql}, timeout=5).json()
        assert answer["status"] == "success", answer
        return {r["metric"].get("instance", ""): float(r["value"][1]) for r in answer["data"]["result"]}

    def wait(self, promql: str, check: Any, what: str, timeout: float = 30.0) -> dict[str, float]:
        def settled() -> dict[str, float] | None:
            try:
                found = self.query(promql)
            except requests.RequestException:
                return None
            return found if check(found) else None

        try:
            return wait_for(settled, timeout, what, interval=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last answer to {promql}: {self.query(promql)}\n"
                                 f"{self.log.read_text()[-3000:]}") from None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture
def instances(tmp_path: pathlib.Path, emu: VonageEmulator, pg_url: str) -> Iterator[list[tuple[SmsbotProcess, str,
                                                                                               str]]]:
    started: list[tuple[SmsbotProcess, str, str]] = []
    try:
        for name in ("a", "b"):
            workdir = tmp_path / name
            workdir.mkdir()
            metrics = f"127.0.0.1:{free_port()}"

            def env(port: int, metrics: str = metrics) -> dict[str, str]:
                return serve_env(emu, port, workdir / "unused.db", SECRET, NUMBER, SMSBOT_DB=pg_url,
                                 SMSBOT_METRICS_ADDRESS=metrics,
                                 SMSBOT_VONAGE_TIMEOUT="2")  # a new sender waits 1 s + this before sending

            proc, base = start_smsbot("serve", workdir, env, tmp_path / f"{name}.log")
            started.append((proc, base, metrics))
        yield started
    finally:
        for proc, _, _ in started:
            proc.stop()


def test_prometheus_scrapes_each_instance_and_the_gauges_agree(
        tmp_path: pathlib.Path, emu: VonageEmulator, http: requests.Session,
        instances: list[tuple[SmsbotProcess, str, str]]) -> None:
    (_, a, a_metrics), (_, b, b_metrics) = instances
    text_in(http, a, "form", ADMIN, "INVITE +1 415 555 0134 alice")
    code = only(CODE, wait_text(emu, INVITEE, lambda t: "invited" in t, "the invite", timeout=30).text)
    text_in(http, b, "form", INVITEE, code)
    pin = only(PIN, wait_text(emu, INVITEE, lambda t: "PIN" in t, "the PIN", timeout=30).text)
    signed_in = login(http, a, "alice", pin)
    assert signed_in.status_code == 303
    cookie = signed_in.cookies[SESSION_COOKIE]
    for _ in range(5):
        assert auth(http, a, cookie).status_code == 200

    prometheus = Prometheus(tmp_path, [a_metrics, b_metrics])
    try:
        # Denied checks keep arriving at b while Prometheus scrapes, so rate() over the last minute is above 0.
        deadline = time.monotonic() + 60

        def denied_at_b() -> dict[str, float] | None:
            assert auth(http, b, secrets.token_urlsafe(16)).status_code == 401
            found = prometheus.query('rate(smsbot_auth_checks_total{result="denied"}[1m])')
            return found if len(found) == 2 and found[b_metrics] > 0 else None

        rates = wait_for(denied_at_b, deadline - time.monotonic(), "a rate of denied checks at b", interval=0.3)
        assert rates.get(a_metrics) == 0  # each instance counts its own
        allowed = prometheus.wait('smsbot_auth_checks_total{result="allowed"}', lambda r: len(r) == 2,
                                  "both instances' allowed checks")
        assert allowed == {a_metrics: 5, b_metrics: 0}
        members = prometheus.wait("smsbot_members", lambda r: len(r) == 2, "both instances' members")
        assert members == {a_metrics: 1, b_metrics: 1}  # read from the one database: they agree
        waiting = prometheus.wait("smsbot_outbox_waiting", lambda r: len(r) == 2, "both instances' outbox")
        assert set(waiting.values()) == {0}
        budget = prometheus.query("smsbot_daily_budget_used")
        assert budget[a_metrics] == budget[b_metrics] >= 4  # invite, admin's reply, PIN...
        assert prometheus.query("sum(smsbot_sender_role_held)") == {"": 1}
        assert prometheus.query("up") == {a_metrics: 1, b_metrics: 1}
        rules = requests.get(f"{prometheus.api}/rules", timeout=5).json()["data"]["groups"][0]["rules"]
        assert len(rules) >= 6
        assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]
        assert prometheus.query("ALERTS") == {}  # nothing is wrong
        print("rate(smsbot_auth_checks_total{result=\"denied\"}[1m]):", rates, "smsbot_members:", members)
    finally:
        prometheus.stop()
