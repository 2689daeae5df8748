"""Several `smsbot serve` processes on one PostgreSQL database and one Vonage emulator, as behind a load balancer
(contract: "Several instances"): the group and the instances in it, the test's own queries on the shared database
(each instance connects with its own `application_name`, so a query can tell which one holds the sender's advisory
lock), and what reached the emulator."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import pathlib
from typing import Any

import asyncpg

from smsbot.keys import Keys
from smsbot.store.postgres import SENDER_LOCK

from .constants import NUMBER, SECRET
from .procs import SmsbotProcess, serve_env, start_smsbot
from .vonage_emulator import SMS_PATH, VonageEmulator

RATE = 5  # SMSBOT_SMS_RATE: one ceiling for all the instances together
VONAGE_TIMEOUT = 2  # seconds; a sender taking over from one that died waits 1 s + this before it sends
FAILURES_PER_MINUTE = 5  # SMSBOT_LOGIN_FAILURES_PER_MINUTE: one limit for all the instances together
PUBLIC_URL = "http://group.example.test"  # the load balancer's address, the same for every instance
KEYS = Keys(SECRET)


def key_of(msisdn: str) -> str:
    return KEYS.phone_key("+" + msisdn)


def query(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Rows of one statement on the shared database, from the test's own connection."""
    async def fetch() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(fetch())


@dataclasses.dataclass
class Instance:
    name: str
    proc: SmsbotProcess
    base: str


class Group:
    """`smsbot serve` instances on one PostgreSQL database and one Vonage emulator."""

    def __init__(self, tmp: pathlib.Path, emu: VonageEmulator, url: str, vonage_timeout: int = VONAGE_TIMEOUT):
        self.tmp = tmp
        self.emu = emu
        self.url = url
        self.vonage_timeout = vonage_timeout
        self.instances: list[Instance] = []

    def _start(self, name: str) -> Instance:
        workdir = self.tmp / name
        workdir.mkdir()

        def env(port: int) -> dict[str, str]:
            return serve_env(self.emu, port, workdir / "unused.db", SECRET, NUMBER,
                             SMSBOT_DB=f"{self.url}?application_name={name}", SMSBOT_PUBLIC_URL=PUBLIC_URL,
                             SMSBOT_SMS_RATE=str(RATE), SMSBOT_VONAGE_TIMEOUT=str(self.vonage_timeout),
                             SMSBOT_LOGIN_FAILURES_PER_MINUTE=str(FAILURES_PER_MINUTE))

        proc, base = start_smsbot("serve", workdir, env, self.tmp / f"{name}.log", extra_args=["--host", "127.0.0.1"])
        return Instance(name, proc, base)

    def start(self, *names: str) -> list[Instance]:
        """Start the instances at once (they set the schema up together) and wait until each answers /healthz."""
        with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
            futures = [pool.submit(self._start, name) for name in names]
            started = []
            for future in futures:
                try:
                    started.append(future.result())
                except Exception:
                    for other in futures:
                        if other.exception() is None and other is not future:
                            other.result().proc.stop()
                    raise
        self.instances.extend(started)
        return started

    def sender(self) -> Instance | None:
        """The instance whose connection holds the sender's advisory lock in this database, if any."""
        rows = query(self.url, """
            SELECT a.application_name FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 1
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
                     SENDER_LOCK >> 32, SENDER_LOCK & 0xFFFFFFFF)
        names = {row["application_name"] for row in rows}
        assert len(names) <= 1, f"more than one instance holds the sender's lock: {names}"
        return next((i for i in self.instances if i.name in names), None)

    def waiting(self) -> list[asyncpg.Record]:
        """Outbox rows still waiting or being sent."""
        return query(self.url, "SELECT id, kind, state FROM outbox WHERE state IN ('pending', 'sending') ORDER BY id")

    def stop(self) -> None:
        for instance in self.instances:
            instance.proc.stop()


def sms_arrivals(emu: VonageEmulator) -> list[float]:
    """When each SMS API request reached the emulator (time.time()), faulted or not."""
    return [r.at for r in list(emu.requests) if r.path == SMS_PATH]


def sent_by_ref(emu: VonageEmulator) -> dict[str, list[Any]]:
    by_ref: dict[str, list[Any]] = {}
    for sms in list(emu.sent):
        by_ref.setdefault(sms.client_ref or "", []).append(sms)
    return by_ref
