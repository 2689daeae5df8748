"""A rolling restart that nobody notices (contract: "Several instances"; README: "Deployment").

Three `smsbot serve` instances share one PostgreSQL database behind real nginx running deploy/nginx-instances.conf
(only its ports changed). While wrk drives GET /auth through nginx with a signed-in member's cookie, and a sender
posts signed inbound webhooks through nginx (each INVITE with a messageId of its own, posted again until
acknowledged, as Vonage does), every instance in turn is stopped with SIGTERM, started again on its port, and waited
for until /healthz answers. Then the member's requests that got anything but a 2xx (or no answer), the webhooks
never acknowledged, and the texts lost or doubled at the Vonage emulator must all be 0; the printout has the
requests served.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping

import pytest
import requests

from support.client import login, signed, webhook_fields
from support.constants import ADMIN_MSISDN as ADMIN
from support.constants import NUMBER, SECRET, SIG_SECRET
from support.instances import sent_by_ref, sms_arrivals
from support.procs import (
    CODE,
    PIN,
    SESSION_COOKIE,
    SmsbotProcess,
    free_port,
    most_in_any_second,
    only,
    sent_to,
    serve_env,
    wait_for,
    wait_text,
)
from support.proxies import BINARIES, ProxyProcess, deploy_file, nginx_serving
from support.vonage_emulator import VonageEmulator

pytestmark = pytest.mark.slow

WRK = shutil.which("wrk") or "/usr/bin/wrk"
WRK_SCRIPT = pathlib.Path(__file__).with_name("wrk_count.lua")
WRK_SECONDS = 120  # a bound only: wrk is stopped (SIGINT, and it reports) once the roll is over
RATE = 30  # SMSBOT_SMS_RATE, for the three together
UPSTREAMS = ("127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083")  # as deploy/nginx-instances.conf has them
ALICE = "14155550134"
WEBHOOK_EVERY = 0.2  # seconds between new webhooks
ACK_DEADLINE = 60.0  # seconds a webhook is posted again before it counts as never acknowledged
SETTLE = 2.0  # seconds between one instance's return and the next one's stop, and around the whole roll
# The INVITEs during the roll come from these admins in turn: one admin number gets at most 60 replies an hour.
ADMINS = tuple(f"141555510{n:02d}" for n in range(10))


@dataclasses.dataclass
class Instance:
    name: str
    port: int
    workdir: pathlib.Path
    env: Mapping[str, str]
    proc: SmsbotProcess | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = SmsbotProcess(["serve", "--host", "127.0.0.1", "--port", str(self.port)], self.workdir, self.env,
                                  self.workdir / f"{self.name}.log")
        self.proc.start()
        self.proc.wait_healthy(self.base, timeout=30)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


class Webhooks:
    """Posts a signed INVITE of a new number through nginx every WEBHOOK_EVERY seconds, each again until a 2xx."""

    def __init__(self, base: str):
        self.base = base
        self.invitees: list[str] = []  # acknowledged
        self.unacknowledged: list[str] = []
        self.answers_refused = 0  # posts answered with something other than a 2xx, or not at all
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with requests.Session() as http:
            http.trust_env = False
            n = 0
            while not self.stop.is_set():
                invitee = f"1415556{n:04d}"
                fields = webhook_fields(ADMINS[n % len(ADMINS)], f"INVITE +{invitee}", message_id=f"0C{n:014d}")
                n += 1
                deadline = time.monotonic() + ACK_DEADLINE
                while True:
                    try:
                        status = http.post(f"{self.base}/webhooks/inbound", data=signed(fields, "sha256"),
                                           timeout=10).status_code
                    except requests.RequestException:
                        status = 0
                    if status in (200, 204):
                        self.invitees.append(invitee)
                        break
                    self.answers_refused += 1
                    if time.monotonic() > deadline:
                        self.unacknowledged.append(invitee)
                        break
                    time.sleep(0.2)
                time.sleep(WEBHOOK_EVERY)

    def join(self) -> None:
        self.stop.set()
        self._thread.join(timeout=ACK_DEADLINE + 20)
        assert not self._thread.is_alive()


@pytest.fixture
def instances(tmp_path: pathlib.Path, emu: VonageEmulator,
              pg_url: str) -> Iterator[tuple[ProxyProcess, list[Instance]]]:
    """nginx on deploy/nginx-instances.conf in front of three instances."""
    for binary in (BINARIES["nginx"], WRK):
        if not pathlib.Path(binary).exists():
            pytest.skip(f"{binary} is missing (apt-get install nginx wrk; .ci/run does)")
    proxy_port = free_port()
    public = f"http://127.0.0.1:{proxy_port}"
    group: list[Instance] = []
    for name in ("a", "b", "c"):
        workdir = tmp_path / name
        workdir.mkdir()
        port = free_port()
        env = serve_env(emu, proxy_port, workdir / "unused.db", SECRET, NUMBER,
                        SMSBOT_DB=f"{pg_url}?application_name={name}", SMSBOT_PUBLIC_URL=public,
                        SMSBOT_ADMINS=",".join("+" + admin for admin in (ADMIN, *ADMINS)),
                        SMSBOT_SMS_RATE=str(RATE), SMSBOT_VONAGE_TIMEOUT="2", SMSBOT_TRUSTED_PROXIES="127.0.0.1",
                        VONAGE_SIGNATURE_SECRET=SIG_SECRET, VONAGE_SIGNATURE_METHOD="sha256")
        group.append(Instance(name, port, workdir, env))
    workdir = tmp_path / "nginx"
    workdir.mkdir()
    ports = {"listen 80;": f"listen 127.0.0.1:{proxy_port};"}
    ports.update({upstream: f"127.0.0.1:{i.port}" for upstream, i in zip(UPSTREAMS, group, strict=True)})
    proxy = ProxyProcess("nginx", workdir, proxy_port,
                         nginx_serving(workdir, deploy_file("nginx-instances.conf", ports)))
    try:
        for instance in group:
            instance.start()
        proxy.start()
        proxy.wait_ready()
        yield proxy, group
    finally:
        proxy.stop()
        for instance in group:
            instance.stop()


def signed_text(http: requests.Session, base: str, msisdn: str, text: str) -> None:
    answer = http.post(f"{base}/webhooks/inbound", data=signed(webhook_fields(msisdn, text), "sha256"), timeout=10)
    assert answer.status_code in (200, 204), answer.text


def member_cookie(http: requests.Session, emu: VonageEmulator, base: str) -> str:
    """Invite alice, redeem the code and sign in, all through nginx; her session cookie."""
    signed_text(http, base, ADMIN, f"INVITE +{ALICE} alice")
    code = only(CODE, wait_text(emu, ALICE, lambda t: "invited" in t, "the invite").text)
    signed_text(http, base, ALICE, code)
    pin = only(PIN, wait_text(emu, ALICE, lambda t: "PIN is" in t, "the PIN").text)
    answer = login(http, base, "alice", pin)
    assert answer.status_code == 303, answer.text
    cookie = answer.cookies.get(SESSION_COOKIE)
    assert cookie
    http.cookies.clear()
    return cookie


def upstream_errors(proxy: ProxyProcess) -> tuple[int, int]:
    """From nginx's error log: requests an instance refused to connect (nothing sent: nginx tries the next one,
    whatever the method), and requests sent to an instance that answered nothing (nginx tries the next one only for
    a method it may repeat: a sign-in form posted then would get 502)."""
    lines = [line for line in (proxy.workdir / "error.log").read_text(encoding="utf-8").splitlines()
             if "[error]" in line and "upstream" in line]
    refused = sum(1 for line in lines if "while connecting to upstream" in line)
    return refused, len(lines) - refused


def test_a_rolling_restart_behind_nginx_loses_no_request_and_no_text(
        instances: tuple[ProxyProcess, list[Instance]], emu: VonageEmulator, http: requests.Session) -> None:
    proxy, group = instances
    base = proxy.base
    cookie = member_cookie(http, emu, base)
    assert http.get(f"{base}/auth", cookies={SESSION_COOKIE: cookie}, timeout=10).status_code == 200
    texts_before, replies_before = len(emu.sent), sum(len(sent_to(emu, admin)) for admin in ADMINS)

    wrk = subprocess.Popen([WRK, "-t1", "-c4", f"-d{WRK_SECONDS}s", "--timeout", "10s", "-s", str(WRK_SCRIPT),
                            "-H", f"Cookie: {SESSION_COOKIE}={cookie}", f"{base}/auth"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    webhooks = Webhooks(base)
    restarts: list[str] = []
    try:
        time.sleep(SETTLE)
        for instance in group:
            assert instance.proc is not None
            stopping = time.monotonic()
            code = instance.proc.terminate(timeout=30)
            stopped = time.monotonic()
            assert code == 0, f"{instance.name} exited with {code} on SIGTERM:\n{instance.proc.output()}"
            instance.start()
            restarts.append(f"{instance.name}: exited {stopped - stopping:.2f} s after SIGTERM, "
                            f"healthy again {time.monotonic() - stopped:.2f} s later")
            time.sleep(SETTLE)
        assert wrk.poll() is None, "wrk finished before the roll did: make WRK_SECONDS longer"
    finally:
        webhooks.join()
        if wrk.poll() is None:
            wrk.send_signal(signal.SIGINT)  # the roll is over: wrk stops and reports what it saw
        out, _ = wrk.communicate(timeout=30)
    summary = json.loads(next(line[4:] for line in out.splitlines() if line.startswith("WRK ")))

    expected = texts_before + 2 * len(webhooks.invitees)  # an invite to the number and a reply to the admin, each
    wait_for(lambda: len(emu.sent) >= expected, 60, f"{expected - texts_before} texts for the acknowledged webhooks")
    time.sleep(1)  # anything doubled after the last expected text has time to show
    lost = [n for n in webhooks.invitees if not sent_to(emu, n)]
    doubled = [n for n in webhooks.invitees if len(sent_to(emu, n)) > 1]
    doubled_refs = {ref: len(texts) for ref, texts in sent_by_ref(emu).items() if len(texts) > 1}
    replies = sum(len(sent_to(emu, admin)) for admin in ADMINS) - replies_before
    refused, unanswered = upstream_errors(proxy)
    failed = summary["non2xx"] + sum(summary[k] for k in ("connect", "read", "write", "timeout"))
    most = most_in_any_second(sms_arrivals(emu))
    print("rolling restart: " + "; ".join(restarts))
    print(f"member /auth through nginx: {summary['requests']} requests in {summary['seconds']:.1f} s "
          f"({summary['requests'] / summary['seconds']:.0f}/s), {summary['ok']} 2xx, {summary['non2xx']} non-2xx, "
          f"socket errors connect {summary['connect']} read {summary['read']} write {summary['write']} timeout "
          f"{summary['timeout']}; p99 {summary['p99_ms']:.1f} ms, max {summary['max_ms']:.1f} ms")
    print(f"nginx: {refused} connections refused by a stopped instance and {unanswered} requests an instance "
          "took but did not answer, each passed on to another instance")
    print(f"webhooks: {len(webhooks.invitees)} acknowledged, {len(webhooks.unacknowledged)} never, "
          f"{webhooks.answers_refused} posts answered otherwise and sent again")
    print(f"texts: {expected - texts_before} asked for, {len(emu.sent) - texts_before} sent, {len(lost)} lost, "
          f"{len(doubled)} doubled; at most {most} SMS requests in any second (ceiling {RATE})")
    assert summary["requests"] > 0 and webhooks.invitees
    assert not webhooks.unacknowledged, f"webhooks never acknowledged: {webhooks.unacknowledged}"
    assert failed == 0, f"{failed} member requests through nginx failed: {summary}"
    assert unanswered == 0, "an instance stopping took requests it never answered (a sign-in form would get 502)"
    assert not lost and not doubled and not doubled_refs, (lost, doubled, doubled_refs)
    assert replies == len(webhooks.invitees), f"{replies} replies to the admin for {len(webhooks.invitees)} INVITEs"
    assert most <= RATE
