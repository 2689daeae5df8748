"""`smsbot dev` is a playground: a `.env` written for production can't point it at the real database, secret or
provider, and it never talks to a real provider whatever the environment says."""

from __future__ import annotations

import hashlib
import pathlib
import re
from typing import Any

import pytest
import requests

from smsbot.clock import Clock
from smsbot.gateway import FakeGateway
from smsbot.messages import InboundText
from smsbot.settings import load
from smsbot.wiring import build

from support.constants import INVITE_CODE, PIN
from support.procs import clean_env, start_smsbot, wait_for, waiting_texts
from support.service import ADMIN, BASE_ENV

pytestmark = pytest.mark.slow  # every test runs smsbot dev

PROD_SECRET = "production-secret-0123456789-abcdefghij"
ALICE = "+12025550143"


async def production_database(db: pathlib.Path) -> None:
    """A production SQLite database with a member (alice) and a text still waiting to be sent."""
    settings = load({**BASE_ENV, "SMSBOT_DB": str(db), "SMSBOT_SECRET": PROD_SECRET})
    gateway = FakeGateway(settings.number)
    graph = build(settings, clock=Clock(), gateway=gateway)
    await graph.store.open()
    try:
        await graph.pipeline.receive(InboundText("m1", ADMIN, f"INVITE {ALICE} alice"))
        await graph.outbox.drain_once()
        code = INVITE_CODE.search(" ".join(m.text for m in gateway.sent if m.to == ALICE))
        assert code
        await graph.pipeline.receive(InboundText("m2", ALICE, code.group(1)))
        await graph.outbox.drain_once()
        await graph.pipeline.receive(InboundText("m3", ADMIN, "LIST"))  # its reply stays queued
    finally:
        await graph.store.close()


def fingerprint(db: pathlib.Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(db.parent.glob(db.name + "*"))}


async def test_dev_ignores_a_production_dotenv(tmp_path: pathlib.Path) -> None:
    prod = tmp_path / "prod" / "smsbot.db"
    await production_database(prod)
    assert waiting_texts(prod), "the production outbox has a text waiting"
    before = fingerprint(prod)
    work = tmp_path / "work"
    work.mkdir()
    dotenv = {**BASE_ENV, "SMSBOT_DB": str(prod), "SMSBOT_SECRET": PROD_SECRET, "VONAGE_API_KEY": "prod-key",
              "VONAGE_API_SECRET": "prod-api-secret", "VONAGE_SIGNATURE_SECRET": "prod-signature-secret"}
    (work / ".env").write_text("".join(f"{name}={value}\n" for name, value in dotenv.items()))
    proc, base = start_smsbot("dev", work, lambda port: clean_env({}), tmp_path / "dev.log")
    try:
        sent = requests.post(f"{base}/dev/phone/send", json={"from": ADMIN, "text": "LIST"}, timeout=5)
        assert sent.status_code == 200, sent.text
        wait_for(lambda: any(t["number"] == ADMIN and t["direction"] == "out"
                             for t in requests.get(f"{base}/dev/phone/texts", timeout=5).json()["texts"]),
                 10, "the dev admin's LIST reply")
    finally:
        proc.stop()
    output = proc.output()
    assert (work / "smsbot-dev.db").is_file(), "dev mode keeps its own database"
    assert fingerprint(prod) == before, "the production database is untouched"
    assert waiting_texts(prod), "its waiting text is still waiting"
    ignored = re.search(r"ignoring (.*) from \S*\.env", output)
    assert ignored, output
    assert ignored.group(1).split(", ") == ["SMSBOT_DB", "SMSBOT_SECRET", "VONAGE_API_KEY", "VONAGE_API_SECRET",
                                            "VONAGE_SIGNATURE_SECRET"]
    assert "Database: smsbot-dev.db" in output
    assert PROD_SECRET not in (work / "smsbot-dev.secret").read_text()


def dev_texts(base: str) -> list[dict[str, Any]]:
    texts: list[dict[str, Any]] = requests.get(f"{base}/dev/phone/texts", timeout=5).json()["texts"]
    return texts


def test_dev_takes_its_database_from_the_command_line_never_from_dotenv(tmp_path: pathlib.Path) -> None:
    (tmp_path / ".env").write_text("SMSBOT_DB=postgresql://smsbot:hunter2@127.0.0.1:1/smsbot\n"
                                   "SMSBOT_GROUP_NAME=Read From Dotenv\n")
    proc, base = start_smsbot("dev", tmp_path, lambda port: clean_env({}), tmp_path / "dev.log",
                              extra_args=["--db", "chosen.db"])
    try:
        assert "Read From Dotenv" in requests.get(f"{base}/dev/phone", timeout=5).text, "the rest of .env counts"
    finally:
        proc.stop()
    output = proc.output()
    assert "Database: chosen.db" in output and (tmp_path / "chosen.db").is_file()
    assert "ignoring SMSBOT_DB from" in output and "hunter2" not in output
    assert not (tmp_path / "smsbot-dev.db").exists()


def test_dev_never_talks_to_a_real_provider(tmp_path: pathlib.Path, emu: Any) -> None:
    """Vonage credentials and hosts in the real environment change nothing: the fake provider sends, and makes the
    PIN in verify mode too."""
    env = {"VONAGE_API_KEY": emu.api_key, "VONAGE_API_SECRET": emu.api_secret, "VONAGE_API_HOST": emu.host,
           "VONAGE_REST_HOST": emu.host, "REQUESTS_CA_BUNDLE": str(emu.ca_path), "SMSBOT_PIN_VIA": "verify",
           "SMSBOT_CONFIRM": "none"}
    proc, base = start_smsbot("dev", tmp_path, lambda port: clean_env(env), tmp_path / "dev.log")
    try:
        requests.post(f"{base}/dev/phone/send", json={"from": ADMIN, "text": f"INVITE {ALICE} alice"}, timeout=5)
        invite = wait_for(lambda: [t for t in dev_texts(base) if t["number"] == ALICE], 10, "alice's invite")
        code = INVITE_CODE.search(invite[0]["text"])
        assert code, invite
        requests.post(f"{base}/dev/phone/send", json={"from": ALICE, "text": code.group(1)}, timeout=5)
        wait_for(lambda: [t for t in dev_texts(base) if t["number"] == ALICE and PIN.search(t["text"])
                          and t["direction"] == "out"], 10, "alice's PIN, from the fake Verify")
    finally:
        proc.stop()
    assert emu.requests == [] and emu.sent == []
