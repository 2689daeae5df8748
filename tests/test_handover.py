"""Hand-overs of the sender's role on PostgreSQL wait only when they must (contract: "Several instances").

A new sender waits out the requests its predecessor may still have in flight (1 s + SMSBOT_VONAGE_TIMEOUT) only when
that predecessor died without stopping. On a fresh database the first text goes out at once; a sender stopped with
SIGTERM hands the role over cleanly and another instance sends the next text within 2 s; a SIGKILLed sender is
still waited out. Real `smsbot serve` processes, a real PostgreSQL cluster, texts observed at the Vonage emulator.
"""

from __future__ import annotations

import os
import pathlib
import signal
import time
from collections.abc import Iterator

import pytest
import requests

from support.client import text_in
from support.constants import ADMIN_MSISDN as ADMIN
from support.instances import RATE, Group, Instance, sms_arrivals
from support.procs import most_in_any_second, sent_to, wait_for, wait_text
from support.vonage_emulator import VonageEmulator

pytestmark = pytest.mark.slow

VONAGE_TIMEOUT = 5  # seconds: a wait of 1 s + this would miss every 2 s target below by far
WAIT = 1 + VONAGE_TIMEOUT
PROMPT = 2.0  # seconds: the contract's bound for a first text, and for the next text after a clean stop


@pytest.fixture
def instances(tmp_path: pathlib.Path, emu: VonageEmulator, pg_url: str) -> Iterator[Group]:
    group = Group(tmp_path, emu, pg_url, vonage_timeout=VONAGE_TIMEOUT)
    try:
        yield group
    finally:
        group.stop()


def invited(emu: VonageEmulator, http: requests.Session, via: Instance, invitee: str) -> float:
    """Post an INVITE for `invitee` to `via`; when (time.time()) the invite reached the emulator."""
    text_in(http, via.base, "form", ADMIN, f"INVITE +{invitee}")
    return wait_text(emu, invitee, lambda t: "invited" in t, f"the invite to {invitee}", timeout=60).at


def three_sending(group: Group, emu: VonageEmulator, http: requests.Session) -> tuple[Instance, list[Instance]]:
    """Three instances started, one text sent through them; the sender and the two others."""
    group.start("a", "b", "c")
    invited(emu, http, group.instances[0], "14155550610")
    sender = wait_for(group.sender, 10, "an instance to hold the sender's role")
    return sender, [i for i in group.instances if i is not sender]


def test_on_a_fresh_database_the_first_text_goes_out_within_two_seconds(
        instances: Group, emu: VonageEmulator, http: requests.Session) -> None:
    launched = time.time()
    (first,) = instances.start("a")
    healthy = time.time()
    arrived = invited(emu, http, first, "14155550601")
    print(f"fresh database: /healthz answered {healthy - launched:.2f} s after the launch, the first text reached "
          f"the provider {arrived - healthy:.2f} s after that ({arrived - launched:.2f} s after the launch)")
    assert arrived - healthy < PROMPT, f"the first text took {arrived - healthy:.2f} s from /healthz"
    assert "stopped cleanly: sending at once" in first.proc.output()


def test_a_sender_stopped_with_sigterm_hands_over_at_once(
        instances: Group, emu: VonageEmulator, http: requests.Session) -> None:
    sender, others = three_sending(instances, emu, http)
    assert sender.proc.proc is not None

    sender.proc.proc.send_signal(signal.SIGTERM)
    stopped = time.time()
    arrived = invited(emu, http, others[0], "14155550612")
    assert sender.proc.proc.wait(timeout=15) == 0
    exited = time.time()
    new_sender = wait_for(instances.sender, 10, "another instance to hold the sender's role")
    print(f"sender {sender.name} SIGTERMed: it exited {exited - stopped:.2f} s later; {new_sender.name} sent the "
          f"next text {arrived - stopped:.2f} s after the SIGTERM")
    assert new_sender in others
    assert arrived - stopped < PROMPT, f"the next text took {arrived - stopped:.2f} s after the SIGTERM"
    assert "stopped cleanly" in new_sender.proc.output()
    assert most_in_any_second(sms_arrivals(emu)) <= RATE


def test_a_sender_killed_with_sigkill_is_still_waited_out(
        instances: Group, emu: VonageEmulator, http: requests.Session) -> None:
    sender, others = three_sending(instances, emu, http)

    os.kill(sender.proc.pid, signal.SIGKILL)
    killed = time.time()
    arrived = invited(emu, http, others[0], "14155550622")
    new_sender = wait_for(instances.sender, 10, "another instance to hold the sender's role")
    print(f"sender {sender.name} SIGKILLed: {new_sender.name} sent the next text {arrived - killed:.2f} s later "
          f"(the wait is {WAIT} s)")
    assert arrived - killed >= WAIT, f"the next text went out {arrived - killed:.2f} s after the kill"
    assert arrived - killed < 60
    assert "did not stop cleanly" in new_sender.proc.output()
    assert len(sent_to(emu, "14155550622")) == 1
