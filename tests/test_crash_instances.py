"""Several `smsbot serve` instances on one PostgreSQL database, SIGKILLed at random under load (issue 11; contract:
"Several instances").

Three instances share one database, as behind a load balancer: each inbound webhook goes to a random instance (a
dead one refuses the connection, and Vonage's retry goes to a random instance again), and earlier messages are
posted again. Meanwhile a random instance (one that answers /healthz; a tenth of the time any, so some die while
starting) is SIGKILLed and restarted, at least 200 times, now and then all of them at once (on PostgreSQL this is
also tests/test_crash.py's case: every instance restarted). After every kill the shared database is read in one
snapshot: every acknowledged message is recorded, and the outbox holds exactly the texts that the recorded messages
cause (each unit of work all or nothing, once). At the end every text has gone out through the real Vonage SDK to
the emulator, no outbox row was sent with two different bodies (so no number got two different PINs for one
request), a text sent twice was one that a killed sender had claimed, and the emulator never saw more than
SMSBOT_SMS_RATE SMS requests in any sliding second, fail-overs included.

One instance sends (it holds an advisory lock); when it dies another takes over after a hand-over wait of
1 s + SMSBOT_VONAGE_TIMEOUT. The sender is killed only once it has held the role for SENDER_HOLD seconds: killed
as often as the others, nearly every new sender would die in its hand-over wait and the storm would send nothing.
The test asks PostgreSQL which instance holds the lock (each instance connects with an application_name of its own).

The restarts are forks of tests/test_crash.py's fork server, with smsbot, the SDK and asyncpg imported already. The
random choices come from one seed; `SMSBOT_CRASH_SEED=<seed>` replays them, as for tests/test_crash.py.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import pathlib
import random
import signal
import time
from typing import Any

import asyncpg
import pytest
import requests

import smsbot.store.postgres  # noqa: F401 - imported here so the forked servers need not import it
from smsbot.store.postgres import SENDER_LOCK

from support.constants import INVITE_CODE, PIN
from support.crash import (
    MEMBERS,
    DbFacts,
    ForkServer,
    Running,
    Traffic,
    check_effects,
    check_provider_side,
    crash_env,
    key_of,
    quiet_port,
    replay_hint,
    sent_by_ref,
    wait_until,
    web_login,
)
from support.procs import most_in_any_second
from support.vonage_emulator import SMS_PATH, VonageEmulator

pytestmark = pytest.mark.slow

INSTANCES = ("a", "b", "c")
MIN_CYCLES = 200  # kills (of one instance, or of all at once)
MIN_SENDER_KILLS = 3  # the storm goes on until the sender alone has been killed this often, holding claims once
CYCLE_DEADLINE = 120.0  # seconds for all the cycles (about 40 on an idle 2-core machine)
RATE = 30  # SMSBOT_SMS_RATE, for all the instances together
VONAGE_TIMEOUT = 2
HANDOVER = 1 + VONAGE_TIMEOUT  # seconds a new sender waits before its first send
SENDER_HOLD = HANDOVER + 1.5  # a sender is killed only after it has held the role this long
WHOLE_KILLS = 3  # cycles, at random, that kill every instance at once
EARLY_SHARE = 0.1  # kills of any instance; the others are of one that answers /healthz (some land in start-up)
KILL_DELAY = (0.0, 0.08)  # seconds
DRAIN_TIMEOUT = 60.0
PUBLIC_URL = "http://group.example.test"  # the load balancer's address, the same for every instance


class Db:
    """The test's own connection to the shared database, on an event loop of its own (the test is synchronous)."""

    def __init__(self, url: str):
        self.loop = asyncio.new_event_loop()
        self.conn: asyncpg.Connection = self.loop.run_until_complete(asyncpg.connect(url))

    def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return list(self.loop.run_until_complete(self.conn.fetch(sql, *args)))

    def facts(self) -> DbFacts:
        """Recorded messages, texts per number and kind, and claimed texts, from one snapshot."""
        async def read() -> DbFacts:
            async with self.conn.transaction(isolation="repeatable_read", readonly=True):
                inbound = {str(r[0]) for r in await self.conn.fetch("SELECT message_id FROM inbound")}
                outbox = collections.Counter({(str(r[0]), str(r[1])): int(r[2]) for r in await self.conn.fetch(
                    "SELECT phone_key, kind, count(*) FROM outbox GROUP BY phone_key, kind")})
                sending = {int(r[0]) for r in await self.conn.fetch("SELECT id FROM outbox WHERE state = 'sending'")}
            return DbFacts(inbound, outbox, sending)

        return self.loop.run_until_complete(read())

    def sender(self) -> str | None:
        """The application_name of the connection that holds the sender's advisory lock in this database."""
        rows = self.fetch("""
            SELECT a.application_name FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 1
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
                          SENDER_LOCK >> 32, SENDER_LOCK & 0xFFFFFFFF)
        assert len(rows) <= 1, f"more than one instance holds the sender's lock: {rows}"
        return str(rows[0][0]) if rows else None

    def waiting(self) -> list[asyncpg.Record]:
        return self.fetch("SELECT id, kind, state, attempts FROM outbox WHERE state IN ('pending', 'sending')"
                          " ORDER BY id")

    def outbox(self) -> dict[int, asyncpg.Record]:
        return {int(r["id"]): r for r in self.fetch("SELECT id, phone_key, kind, state, attempts FROM outbox")}

    def close(self) -> None:
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


@dataclasses.dataclass(eq=False)
class Slot:
    """One instance's place: its port and log; a new process (a generation) after each kill."""

    name: str
    port: int
    log: pathlib.Path
    server: Running | None = None
    generation: int = 0
    up: bool = False  # this generation has answered /healthz

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def app(self) -> str:
        """The application_name of this generation's connections."""
        return f"{self.name}{self.generation}"


class Instances:
    """Three instances on one database, each restarted on its own port when it is killed."""

    def __init__(self, tmp: pathlib.Path, emu: VonageEmulator, fork_server: ForkServer, url: str):
        self.emu = emu
        self.forker = fork_server
        self.url = url
        self.workdir = tmp / "work"
        self.workdir.mkdir()
        self.slots = [Slot(name, quiet_port(), tmp / f"instance-{name}.log") for name in INSTANCES]
        self.health = requests.Session()
        self.health.trust_env = False

    @property
    def base(self) -> str:
        return self.slots[0].base

    def start(self, slot: Slot) -> None:
        slot.generation += 1
        env = crash_env(self.emu, f"{self.url}?application_name={slot.app}", PUBLIC_URL,
                        SMSBOT_SMS_RATE=str(RATE), SMSBOT_VONAGE_TIMEOUT=str(VONAGE_TIMEOUT),
                        SMSBOT_LOG_LEVEL="WARNING")
        with slot.log.open("a", encoding="utf-8") as out:
            out.write(f"===== {slot.app} =====\n")
        slot.server = Running(self.forker, self.forker.spawn(env, slot.port, slot.log, self.workdir))
        slot.up = False

    def is_up(self, slot: Slot) -> bool:
        """Whether this generation has answered /healthz (asked again until it has)."""
        if not slot.up and slot.server is not None:
            with contextlib.suppress(requests.RequestException):
                slot.up = self.health.get(f"{slot.base}/healthz", timeout=0.5).status_code == 200
        return slot.up

    def some_up(self, timeout: float = 20.0) -> list[Slot]:
        """The instances that answer /healthz, waiting until at least one does."""
        deadline = time.monotonic() + timeout
        while not (up := [s for s in self.slots if self.is_up(s)]):
            for slot in self.slots:
                if slot.server is not None and slot.server.poll() is not None:
                    self.kill(slot)  # reaped; a port taken meanwhile is changed, anything else fails
                    self.start(slot)
            if time.monotonic() >= deadline:
                raise AssertionError(f"no instance healthy after {timeout:g} s:\n"
                                     + "\n".join(self.tail(s, 20) for s in self.slots))
            time.sleep(0.005)
        return up

    def kill(self, slot: Slot) -> int:
        assert slot.server is not None
        code = slot.server.kill()
        slot.server = None
        if code != -signal.SIGKILL:
            if not self.port_taken(slot):
                raise AssertionError(f"{slot.app} exited with code {code} before it was killed:\n{self.tail(slot)}")
            slot.port = quiet_port()  # another process took the port meanwhile: on another one
        return code

    def wait_healthy(self, slot: Slot, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert slot.server is not None
            if slot.server.poll() is not None:
                self.kill(slot)  # reaped; a port taken meanwhile is changed, anything else fails
                self.start(slot)
            if self.is_up(slot):
                return
            if time.monotonic() >= deadline:
                raise AssertionError(f"{slot.app} not healthy after {timeout:g} s:\n{self.tail(slot)}")
            time.sleep(0.005)

    def port_taken(self, slot: Slot) -> bool:
        return "address already in use" in self.tail(slot, lines=20).lower()

    def tail(self, slot: Slot, lines: int = 60) -> str:
        text = slot.log.read_text(encoding="utf-8", errors="replace") if slot.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def problems(self) -> list[str]:
        found = []
        for slot in self.slots:
            text = slot.log.read_text(encoding="utf-8", errors="replace") if slot.log.exists() else ""
            found += [f"{slot.name}: {line}" for line in text.splitlines() if " ERROR " in line or "Traceback" in line]
        return found

    def close(self) -> None:
        for slot in self.slots:
            if slot.server is not None:
                slot.server.kill()
                slot.server = None
        self.health.close()


class SpreadTraffic(Traffic):
    """The crash test's traffic, each post to a random instance, at a pace the rate ceiling can keep up with."""

    clients = 2
    pace = 0.08
    replay_share = 0.3

    def __init__(self, instances: Instances, seed: int):
        super().__init__(instances, seed)
        self.instances = instances

    def target(self, rng: random.Random) -> str:
        return rng.choice(self.instances.slots).base


@dataclasses.dataclass
class SenderKill:
    at: float  # time.time(), as the emulator stamps requests
    claimed: set[int]  # outbox rows the dead sender had claimed
    waiting: int  # texts waiting or claimed then
    alone: bool  # the others lived on


@dataclasses.dataclass
class Run:
    """One run of the test: the instances, their database, the traffic, and what the kills did."""

    instances: Instances
    db: Db
    traffic: SpreadTraffic
    emu: VonageEmulator
    rng: random.Random
    http: requests.Session = dataclasses.field(default_factory=requests.Session)
    kills: int = 0  # cycles: of one instance, or of all at once
    whole_kills: int = 0  # of every instance at once
    down_before_kill: int = 0  # kills of an instance still starting
    sender_kills: list[SenderKill] = dataclasses.field(default_factory=list)
    claimed_at_crash: set[int] = dataclasses.field(default_factory=set)  # outbox rows a killed sender held

    def __post_init__(self) -> None:
        self.http.trust_env = False

    def base(self) -> str:
        """A random instance's address, as a load balancer would pick."""
        return self.rng.choice(self.instances.slots).base

    def close(self) -> None:
        self.traffic.stop.set()
        for thread in self.traffic._threads:
            thread.join(timeout=10)
        self.instances.close()
        self.http.close()
        self.db.close()


def start_and_make_members(run: Run) -> None:
    """Three instances starting together set the schema up; members join without kills."""
    instances, traffic, emu = run.instances, run.traffic, run.emu
    for slot in instances.slots:
        instances.start(slot)
    for slot in instances.slots:
        instances.wait_healthy(slot)
    for msisdn, username in MEMBERS.items():
        assert traffic.post(run.http, traffic.invite(msisdn, username), run.base())
    for msisdn in MEMBERS:
        wait_until(lambda: any(s.to == msisdn for s in emu.sent), 20, f"the invite to {msisdn}")
        invite = next(s for s in list(emu.sent) if s.to == msisdn)
        invite_code = INVITE_CODE.search(invite.text)
        assert invite_code, invite.text
        assert traffic.post(run.http, traffic.code(msisdn, invite_code.group(1)), run.base())
    for msisdn in MEMBERS:
        wait_until(lambda: any(s.to == msisdn and "PIN" in s.text for s in emu.sent), 20,
                   f"the first PIN of {msisdn}")


def kill_and_restart(run: Run) -> float:
    """The storm: texts stream in to random instances while one instance, or now and then all of them, is killed
    and restarted, until there were enough kills of the sender holding claims. When it started."""
    instances, db, rng, slots = run.instances, run.db, run.rng, run.instances.slots
    run.traffic.start()
    storm_started = time.monotonic()
    holder, held_since = None, 0.0
    whole_at = set(rng.sample(range(10, MIN_CYCLES), WHOLE_KILLS))
    while ((run.kills < MIN_CYCLES or sum(k.alone for k in run.sender_kills) < MIN_SENDER_KILLS
            or not run.claimed_at_crash)
           and time.monotonic() - storm_started < CYCLE_DEADLINE):
        now_holder = db.sender()
        if now_holder != holder:
            holder, held_since = now_holder, time.monotonic()
        sender = next((s for s in slots if s.server is not None and s.app == holder), None)
        early = rng.random() < EARLY_SHARE  # any instance, answering /healthz or still starting
        if run.kills + 1 in whole_at:
            victims = list(slots)
        else:
            candidates = slots if early else instances.some_up()
            if sender in candidates and time.monotonic() - held_since < SENDER_HOLD:
                candidates = [s for s in candidates if s is not sender]
                if not candidates:
                    time.sleep(0.01)
                    continue
            victims = [rng.choice(candidates)]
        time.sleep(rng.uniform(*KILL_DELAY))
        starting = sum(not instances.is_up(v) for v in victims)
        codes = [instances.kill(victim) for victim in victims]
        killed_at = time.time()
        if -signal.SIGKILL not in codes:
            for victim in victims:
                instances.start(victim)
            continue  # each had exited already (its port was taken): not a cycle
        run.kills += 1
        run.down_before_kill += starting
        run.whole_kills += len(victims) > 1
        check_after_a_kill(run, victims, sender, killed_at)
        for victim in victims:
            instances.start(victim)
    return storm_started


def check_after_a_kill(run: Run, victims: list[Slot], sender: Slot | None, killed_at: float) -> None:
    """The shared database, as the dead left it and the living go on: a snapshot is consistent. A killed sender's
    claims are noted."""
    acked = run.traffic.acked()
    try:
        facts = run.db.facts()
        check_effects(facts, run.traffic, acked, f"after kill {run.kills} ({', '.join(v.app for v in victims)})")
    except AssertionError as exc:
        logs = "\n".join(f"--- {v.name} (tail) ---\n{run.instances.tail(v, 30)}" for v in run.instances.slots)
        raise AssertionError(f"{exc}\n{logs}") from None
    if sender is not None and sender in victims:
        # Its claims stay marked until the next sender's hand-over wait is over.
        run.sender_kills.append(SenderKill(killed_at, set(facts.sending), len(run.db.waiting()), len(victims) == 1))
        run.claimed_at_crash |= facts.sending


def retry_and_drain(run: Run) -> None:
    """Vonage retries everything never acknowledged, and some that were, at random instances; the outbox drains."""
    traffic = run.traffic
    for slot in run.instances.slots:
        run.instances.wait_healthy(slot)
    with traffic.lock:
        pending = [m for m in traffic.messages.values() if not m.acked]
        acked_msgs = [m for m in traffic.messages.values() if m.acked]
    for msg in pending:
        assert traffic.post(run.http, msg, run.base()), f"retry of {msg.mid} not acknowledged"
    for msg in run.rng.sample(acked_msgs, min(100, len(acked_msgs))):
        assert traffic.post(run.http, msg, run.base()), f"replay of {msg.mid} not acknowledged"
        traffic.replays += 1
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while waiting := run.db.waiting():
        assert time.monotonic() < deadline, (
            f"the outbox did not drain within {DRAIN_TIMEOUT:g} s: {len(waiting)} row(s) left, "
            f"{[tuple(r) for r in waiting[:10]]}; sender {run.db.sender()}")
        time.sleep(0.1)


def check_the_last_pins_sign_in(run: Run) -> None:
    """The PIN each member got last signs them in, through any instance."""
    rows = run.db.outbox()
    by_ref = sent_by_ref(run.emu)
    for msisdn, username in MEMBERS.items():
        last = max(i for i, r in rows.items() if r["phone_key"] == key_of(msisdn) and r["kind"] == "pin")
        pin = PIN.search(by_ref[f"smsbot-{last}"][0].text)
        assert pin, by_ref[f"smsbot-{last}"][0].text
        assert web_login(run.base(), username, pin.group(0)) == 303, f"{username} cannot sign in"


def check_the_final_state(run: Run) -> tuple[dict[int, Any], int]:
    """Everything acknowledged, each effect once, every text sent, one invite text per INVITE. The outbox rows and
    the count of texts sent again."""
    traffic, emu = run.traffic, run.emu
    facts = run.db.facts()
    everything = traffic.acked()
    assert everything == set(traffic.messages), "every message is acknowledged in the end"
    check_effects(facts, traffic, everything, "in the end")
    rows = run.db.outbox()
    stuck = {i: (r["kind"], r["state"]) for i, r in rows.items() if r["state"] != "sent"}
    assert not stuck, f"outbox rows not sent in the end: {dict(list(stuck.items())[:10])}"

    resent = check_provider_side(emu, rows, run.claimed_at_crash)
    for msg in traffic.messages.values():
        if msg.text.startswith("INVITE"):
            invitee = msg.text.split()[1].lstrip("+")
            bodies = {s.text for s in list(emu.sent) if s.to == invitee and "invited" in s.text}
            assert len(bodies) == 1, f"{msg.text!r} ({msg.mid}): the invitee got {len(bodies)} invite texts"
    return rows, resent


def test_sigkill_of_random_instances_loses_nothing_and_keeps_one_rate_ceiling(
        forker: ForkServer, emu: VonageEmulator, make_pg_url: Any, tmp_path: pathlib.Path,
        crash_seed: int) -> None:
    started = time.monotonic()
    url = make_pg_url()
    instances = Instances(tmp_path, emu, forker, url)
    run = Run(instances, Db(url), SpreadTraffic(instances, crash_seed), emu, random.Random(crash_seed))
    traffic, sender_kills = run.traffic, run.sender_kills
    try:
        start_and_make_members(run)
        storm_started = kill_and_restart(run)
        cycles_done = time.monotonic()
        traffic.halt()
        assert run.kills >= MIN_CYCLES, f"only {run.kills} kill/restart cycles in {CYCLE_DEADLINE:g} s"
        assert sum(k.alone for k in sender_kills) >= MIN_SENDER_KILLS and run.claimed_at_crash, (
            f"in {CYCLE_DEADLINE:g} s the sender was killed {len(sender_kills)} times (with the others "
            f"{len(sender_kills) - sum(k.alone for k in sender_kills)} times), holding "
            f"{len(run.claimed_at_crash)} claimed texts: fail-over went untested")
        assert not traffic.unexpected, f"webhooks answered other than 2xx: {traffic.unexpected[:5]}"
        acked_before = traffic.acked()
        committed_unacked = run.db.facts().inbound - acked_before

        retry_and_drain(run)
        drained = time.monotonic()
        check_the_last_pins_sign_in(run)
        for slot in instances.slots:
            instances.kill(slot)
        rows, resent = check_the_final_state(run)

        # Fail-overs: how soon a new sender sent, and when the texts the dead one had claimed went out.
        by_ref = sent_by_ref(emu)
        arrivals = sorted(r.at for r in list(emu.requests) if r.path == SMS_PATH)
        last_send = {ref: max(t.at for t in texts) for ref, texts in by_ref.items()}
        takeovers = [next(at for at in arrivals if at > k.at) - k.at for k in sender_kills if k.waiting]
        claimed_sent = [max(last_send[f"smsbot-{i}"] for i in k.claimed) - k.at for k in sender_kills if k.claimed]
        most = most_in_any_second(arrivals)
        problems = instances.problems()
        elapsed = time.monotonic() - started

        print(f"\nmulti-instance crash summary: {len(instances.slots)} instances on one PostgreSQL database, "
              f"{run.kills} SIGKILL cycles ({run.whole_kills} of every instance at once; {run.down_before_kill} "
              f"kills of an instance still starting) in {cycles_done - storm_started:.1f} s, {len(sender_kills)} of "
              f"them of the sender ({sum(k.alone for k in sender_kills)} of it alone); "
              f"{len(traffic.messages)} messages, {traffic.posts} webhook posts to random instances, "
              f"{len(acked_before)} acked during the kills, {len(committed_unacked)} committed but not acked, "
              f"{traffic.replays} re-posts of an earlier messageId ({traffic.unacked_replays} of unacked ones); "
              f"{len(rows)} texts, {len(run.claimed_at_crash)} claimed by a killed sender, {resent} re-sent; "
              f"{len(arrivals)} SMS requests, at most {most} in any 1 s window (ceiling {RATE}); take-over (kill to "
              f"the next SMS request) {_spread(takeovers)}; a killed sender's claimed texts sent "
              f"{_spread(claimed_sent)} after the kill; drain {drained - cycles_done:.1f} s; elapsed {elapsed:.1f} s")
        assert most <= RATE, f"{most} SMS requests within one second, above SMSBOT_SMS_RATE={RATE}"
        assert max(claimed_sent) < 60, f"a killed sender's texts were sent {max(claimed_sent):.1f} s after the kill"
        assert not problems, f"the instances logged errors: {problems[:10]}"
    except BaseException as exc:
        exc.add_note(f"replay with {replay_hint(crash_seed)}")
        raise
    finally:
        run.close()


def _spread(seconds: list[float]) -> str:
    if not seconds:
        return "(none)"
    ordered = sorted(seconds)
    return (f"{ordered[0]:.1f}-{ordered[-1]:.1f} s (median {ordered[len(ordered) // 2]:.1f} s, "
            f"{len(ordered)} fail-overs)")
