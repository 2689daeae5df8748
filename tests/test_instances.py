"""Several real `smsbot serve` processes on one PostgreSQL database, as behind a load balancer (contract: "Several
instances"), talking to the Vonage emulator through the real SDK.

A session made through one instance works through all, and a REVOKE through a third ends it on the others within a
second of its 2xx; the same messageId posted to several instances at once has one effect; texts queued by any
instance go out through the one sender; when the sender is SIGKILLed another takes over and sends what was waiting;
and the emulator never sees more than SMSBOT_SMS_RATE requests in any sliding second, fail-over included.

Each instance connects with its own `application_name` (a query parameter of its SMSBOT_DB URL), so the test can
ask PostgreSQL which one holds the sender's advisory lock.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import pathlib
import signal
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from support.client import auth, login, text_in
from support.constants import ADMIN_MSISDN, NUMBER
from support.instances import (
    FAILURES_PER_MINUTE,
    RATE,
    Group,
    Instance,
    key_of,
    query,
    sent_by_ref,
    sms_arrivals,
)
from support.procs import (
    CODE,
    PIN,
    SESSION_COOKIE,
    most_in_any_second,
    only,
    sent_to,
    wait_for,
    wait_text,
)
from support.service import CSRF_INPUT
from support.vonage_emulator import VonageEmulator

pytestmark = pytest.mark.slow

ALICE = "14155550134"


@pytest.fixture
def group(tmp_path: pathlib.Path, emu: VonageEmulator, pg_url: str) -> Iterator[Group]:
    instances = Group(tmp_path, emu, pg_url)
    try:
        instances.start("a", "b", "c")
        yield instances
    finally:
        instances.stop()


class AuthWatch:
    """Polls GET /auth on one instance from a thread of its own; records (started, answered, status) per request."""

    def __init__(self, base: str, cookie: str):
        self.base = base
        self.cookie = cookie
        self.seen: list[tuple[float, float, int]] = []
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"auth-{base}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with requests.Session() as http:
            http.trust_env = False
            while not self.stop.is_set():
                started = time.monotonic()
                status = auth(http, self.base, self.cookie).status_code
                self.seen.append((started, time.monotonic(), status))
                if status == 401:
                    return

    def count(self, status: int) -> int:
        return sum(1 for _, _, s in list(self.seen) if s == status)

    def join(self) -> None:
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()


def test_a_session_works_through_every_instance_and_a_revoke_through_one_ends_it_on_all_within_a_second(
        group: Group, emu: VonageEmulator, http: requests.Session) -> None:
    a, b, c = group.instances
    # A webhook to A, the code to B, the sign-in through B.
    text_in(http, a.base, "form", ADMIN_MSISDN, f"INVITE +{ALICE} alice")
    code = only(CODE, wait_text(emu, ALICE, lambda t: "invited" in t, "the invite").text)
    text_in(http, b.base, "form", ALICE, code)
    pin = only(PIN, wait_text(emu, ALICE, lambda t: "PIN is" in t, "the PIN").text)
    signed_in = login(http, b.base, "alice", pin)
    assert signed_in.status_code == 303, signed_in.text
    cookie = signed_in.cookies.get(SESSION_COOKIE)
    assert cookie, "signed in: a session cookie"
    http.cookies.clear()
    for instance in group.instances:
        answer = auth(http, instance.base, cookie)
        assert answer.status_code == 200, f"{instance.name}: /auth {answer.status_code}"
        assert answer.headers["X-Auth-User"] == "alice"

    # A and B answer /auth all along (from their caches); the REVOKE goes to C.
    watches = {i.name: AuthWatch(i.base, cookie) for i in (a, b)}
    try:
        wait_for(lambda: all(w.count(200) >= 20 for w in watches.values()), 10, "/auth answered 200 on A and B")
        text_in(http, c.base, "form", ADMIN_MSISDN, "REVOKE alice")
        acked_at = time.monotonic()
        wait_for(lambda: all(w.count(401) for w in watches.values()) or time.monotonic() > acked_at + 5, 10,
                 "A and B to refuse the session")
    finally:
        for watch in watches.values():
            watch.stop.set()
            watch.join()
    took = {}
    for name, watch in watches.items():
        refused = [answered for _, answered, status in watch.seen if status == 401]
        assert refused, f"{name} still accepted the session 5 s after the REVOKE was acknowledged"
        last_ok = max(started for started, _, status in watch.seen if status == 200) - acked_at
        took[name] = refused[0] - acked_at
        print(f"/auth on {name}: {watch.count(200)} answers 200, the last to a request sent {last_ok * 1000:+.0f} ms "
              f"from the REVOKE's 2xx; the first 401 answered {took[name] * 1000:+.0f} ms from it")
    assert auth(http, c.base, cookie).status_code == 401
    assert max(took.values()) < 1.0, f"the session outlived the REVOKE's 2xx by more than a second: {took}"


def test_the_same_message_posted_to_several_instances_at_once_has_one_effect(
        group: Group, emu: VonageEmulator) -> None:
    invitees = [f"1415555{n:04d}" for n in range(400, 410)]
    statuses: list[int] = []

    def post(instance: Instance, fields: dict[str, str], together: threading.Barrier) -> None:
        with requests.Session() as own:
            own.trust_env = False
            together.wait(timeout=10)
            statuses.append(own.post(f"{instance.base}/webhooks/inbound", data=fields, timeout=10).status_code)

    for n, invitee in enumerate(invitees):
        fields = {"msisdn": ADMIN_MSISDN, "to": NUMBER, "messageId": f"0B000000000{n:05d}",
                  "text": f"INVITE +{invitee}", "type": "text", "keyword": "INVITE",
                  "message-timestamp": "2025-03-14 15:09:26"}
        targets = group.instances if n % 2 else group.instances[:2]  # two or all three at the same moment
        together = threading.Barrier(len(targets))
        threads = [threading.Thread(target=post, args=(i, fields, together)) for i in targets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
    assert len(statuses) == 25 and set(statuses) <= {200, 204}, statuses

    ids = [f"0B000000000{n:05d}" for n in range(len(invitees))]
    assert query(group.url, "SELECT count(*) FROM inbound WHERE message_id = ANY($1)", ids)[0][0] == len(ids)
    rows = query(group.url, "SELECT phone_key, kind FROM outbox")
    for invitee in invitees:
        assert [r["kind"] for r in rows if r["phone_key"] == key_of(invitee)] == ["invite"], invitee
    assert [r["kind"] for r in rows if r["phone_key"] == key_of(ADMIN_MSISDN)] == ["reply"] * len(invitees)

    wait_for(lambda: not group.waiting() and len(emu.sent) >= 2 * len(invitees), 30, "every text sent")
    for invitee in invitees:
        assert len(sent_to(emu, invitee)) == 1, f"{invitee} got {len(sent_to(emu, invitee))} invites"
    assert len(sent_to(emu, ADMIN_MSISDN)) == len(invitees), "one reply to the admin per INVITE"
    assert most_in_any_second(sms_arrivals(emu)) <= RATE


def test_one_instance_sends_for_all_and_another_takes_over_when_it_is_killed(
        group: Group, emu: VonageEmulator, http: requests.Session) -> None:
    sender = wait_for(group.sender, 10, "an instance to take the sender's role")
    others = [i for i in group.instances if i is not sender]

    # A text queued by an instance that does not send goes out through the one that does.
    text_in(http, others[0].base, "form", ADMIN_MSISDN, f"INVITE +{ALICE} alice")
    wait_text(emu, ALICE, lambda t: "invited" in t, "the invite")
    wait_text(emu, ADMIN_MSISDN, lambda t: t.startswith("Invited alice"), "the admin's reply")
    assert "sent invite text" in sender.proc.output()
    assert not any("sent invite text" in i.proc.output() for i in others), "only the sender sends"

    # A backlog several seconds long at the rate, queued through the two others; the sender dies in the middle.
    invitees = [f"1415555{n:04d}" for n in range(500, 512)]
    before = len(emu.sent)
    for n, invitee in enumerate(invitees):
        text_in(http, others[n % 2].base, "json", ADMIN_MSISDN, f"INVITE +{invitee}")
    wait_for(lambda: len(emu.sent) >= before + 4, 20, "the sender to work through the backlog")
    assert sender.proc.proc is not None
    os.kill(sender.proc.pid, signal.SIGKILL)
    killed_at = time.time()
    assert sender.proc.proc.wait(timeout=10) == -signal.SIGKILL
    waiting = group.waiting()
    claimed = {r["id"] for r in waiting if r["state"] == "sending"}
    assert waiting, "texts were waiting when the sender died"

    expected = before + 2 * len(invitees)
    wait_for(lambda: len(emu.sent) >= expected and not group.waiting(), 60,
             "another instance to send what was waiting (contract: within 60 s)")
    new_sender = group.sender()
    assert new_sender in others, f"the sender's role went to {new_sender}"
    assert "this instance sends the texts now" in new_sender.proc.output()

    by_ref = sent_by_ref(emu)
    done_at = {ref: min(t.at for t in texts) for ref, texts in by_ref.items()}
    sent_after = max(done_at[f"smsbot-{r['id']}"] for r in waiting) - killed_at
    takeover = min(at for at in sms_arrivals(emu) if at > killed_at) - killed_at
    for invitee in invitees:  # one invite each; a text the killed sender held may go out twice (checked below)
        refs = {t.client_ref for t in sent_to(emu, invitee)}
        assert len(refs) == 1, f"{invitee} got {len(refs)} invites"
    resent = {ref: len(texts) for ref, texts in by_ref.items() if len(texts) > 1}
    for ref, texts in by_ref.items():
        assert len({t.text for t in texts}) == 1, f"{ref} was sent with different bodies"
    assert {int(ref[7:]) for ref in resent} <= claimed, f"sent twice without a crash in between: {resent}"
    most = most_in_any_second(sms_arrivals(emu))
    print(f"sender {sender.name} SIGKILLed with {len(waiting)} texts waiting ({len(claimed)} claimed by it); "
          f"{new_sender.name} took over: its first SMS request {takeover:.2f} s after the kill, every waiting text "
          f"sent {sent_after:.2f} s after it; {len(resent)} re-sent; at most {most} SMS requests in any second "
          f"(ceiling {RATE})")
    assert sent_after < 60
    assert most <= RATE, f"{most} SMS requests within one second, above SMSBOT_SMS_RATE={RATE}"


def test_simultaneous_failed_sign_ins_through_two_instances_weigh_no_more_than_the_limit(
        group: Group, http: requests.Session) -> None:
    a, b, _ = group.instances
    form = http.get(f"{a.base}/login", timeout=10)
    token = CSRF_INPUT.search(form.text)
    assert token
    cookies = {c.name: c.value or "" for c in form.cookies}
    start = threading.Barrier(100)

    def attempt(n: int) -> int:
        with requests.Session() as client:
            client.trust_env = False
            start.wait(timeout=30)
            return client.post(f"{(a, b)[n % 2].base}/login", cookies=cookies, allow_redirects=False, timeout=60,
                               data={"username": f"nobody{n}", "pin": "1", "csrf_token": token.group(1)}).status_code

    with concurrent.futures.ThreadPoolExecutor(100) as pool:
        statuses = collections.Counter(pool.map(attempt, range(100)))
    assert statuses == {401: FAILURES_PER_MINUTE, 429: 100 - FAILURES_PER_MINUTE}
    weighed = query(group.url, "SELECT value FROM stats WHERE name = 'failed-logins-without-live-pin'")
    assert [row["value"] for row in weighed] == [FAILURES_PER_MINUTE]
