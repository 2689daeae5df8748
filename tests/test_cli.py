"""The `smsbot` command line: check, and the entry points."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
import requests

import smsbot as package
from smsbot.settings import TABLE

from support.cases import PASSWORD_URLS
from support.constants import APP_ID
from support.procs import SMSBOT, clean_env, free_port, start_smsbot, wait_for
from support.service import BASE_ENV, rsa_pem

pytestmark = pytest.mark.slow  # every test runs the smsbot command


def smsbot(*args: str, env: dict[str, str], cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SMSBOT_", "VONAGE_"))}
    return subprocess.run([SMSBOT, *args], env={**clean, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_check_prints_what_serve_will_do(tmp_path: pathlib.Path) -> None:
    result = smsbot("check", env={**BASE_ENV, "SMSBOT_PIN_VIA": "verify", "VONAGE_SIGNATURE_SECRET": "s" * 32,
                                  "VONAGE_SIGNATURE_METHOD": "md5hash"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Vonage Verify v2" in out and "md5hash" in out
    assert "https://group.example.org/webhooks/inbound" in out and "https://group.example.org/webhooks/status" in out
    assert "4155550100" not in out, "admins are masked"


def test_check_says_signing_is_off_and_fails_on_bad_settings(tmp_path: pathlib.Path) -> None:
    ok = smsbot("check", env=BASE_ENV, cwd=tmp_path)
    assert ok.returncode == 0 and "OFF" in ok.stdout
    bad = smsbot("check", env={**BASE_ENV, "SMSBOT_ADMINS": "+1 415 555 0100, nope"}, cwd=tmp_path)
    assert bad.returncode == 1
    assert "'nope'" in bad.stderr


def test_check_reads_a_dotenv_file(tmp_path: pathlib.Path) -> None:
    (tmp_path / ".env").write_text("\n".join(f"{k}={v}" for k, v in BASE_ENV.items()) + "\n")
    result = smsbot("check", env={"SMSBOT_GROUP_NAME": "Env Wins"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Env Wins" in result.stdout


def test_check_lists_every_setting_and_no_secret(tmp_path: pathlib.Path) -> None:
    pem = rsa_pem()
    secrets = {"SMSBOT_SECRET": "m" * 40, "VONAGE_API_SECRET": "api-secret-value-123", "VONAGE_PRIVATE_KEY": pem,
               "VONAGE_SIGNATURE_SECRET": "signature-secret-value-456"}
    result = smsbot("check", env={**BASE_ENV, **secrets, "VONAGE_APPLICATION_ID": APP_ID}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for row in TABLE:
        assert any(line.split() and line.split()[0] == row.env for line in lines), row.env
    for name in secrets:
        assert [line.split(None, 1)[1] for line in lines if line.split()[:1] == [name]] == ["set"]
    assert "SMSBOT_GROUP_NAME" in result.stdout and "Friends" in result.stdout
    for value in secrets.values():
        assert value.strip() not in result.stdout + result.stderr
    assert "PRIVATE KEY" not in result.stdout + result.stderr


def test_check_refuses_a_bad_private_key(tmp_path: pathlib.Path) -> None:
    bad_key = "-----BEGIN PRIVATE KEY-----\\nnot a key\\n-----END PRIVATE KEY-----"
    result = smsbot("check", env={**BASE_ENV, "VONAGE_APPLICATION_ID": APP_ID, "VONAGE_PRIVATE_KEY": bad_key},
                    cwd=tmp_path)
    assert result.returncode == 1
    assert "VONAGE_PRIVATE_KEY is not a usable private key for VONAGE_APPLICATION_ID" in result.stderr


def test_the_log_level_in_dotenv_takes_effect(tmp_path: pathlib.Path) -> None:
    dotenv = "\n".join(f"{k}={v}" for k, v in BASE_ENV.items()) + "\n"
    (tmp_path / ".env").write_text(dotenv + "SMSBOT_LOG_LEVEL=LOUD\n")
    bad = smsbot("check", env={}, cwd=tmp_path)
    assert bad.returncode == 1
    assert "SMSBOT_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, got 'LOUD'" in bad.stderr

    (tmp_path / ".env").write_text(dotenv + "SMSBOT_LOG_LEVEL=debug\n")
    debug = smsbot("check", env={}, cwd=tmp_path)
    assert debug.returncode == 0, debug.stderr
    assert f"DEBUG smsbot: settings read from the environment over {tmp_path / '.env'}" in debug.stderr

    (tmp_path / ".env").write_text(dotenv)
    quiet = smsbot("check", env={}, cwd=tmp_path)
    assert quiet.returncode == 0 and "DEBUG" not in quiet.stderr


def test_version_is_the_packages_own(tmp_path: pathlib.Path) -> None:
    """`smsbot --version` and `python -m smsbot --version` print the one version, from smsbot/__init__.py."""
    from importlib.metadata import version

    assert version("smsbot") == package.__version__, "the installed metadata takes the version from smsbot/__init__.py"
    for command in ([SMSBOT], [sys.executable, "-m", "smsbot"]):
        result = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"smsbot {package.__version__}\n"


@pytest.mark.parametrize(("url", "password"), PASSWORD_URLS)
def test_check_never_shows_a_database_password(tmp_path: pathlib.Path, url: str, password: str) -> None:
    result = smsbot("check", env={**BASE_ENV, "SMSBOT_DB": url}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Database:         postgres" in result.stdout.replace("POSTGRES", "postgres")
    assert password not in result.stdout + result.stderr


def serve_that_cannot_start(url: str, cwd: pathlib.Path) -> str:
    """What `smsbot serve` on the database `url` says before it exits with status 1."""
    result = smsbot("serve", "--port", str(free_port()), env={**BASE_ENV, "SMSBOT_DB": url}, cwd=cwd)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    return output


def test_a_serve_that_cannot_reach_the_database_logs_no_password(tmp_path: pathlib.Path) -> None:
    url = (f"postgresql://smsbot:hunter2-user-pw@127.0.0.1:{free_port()}/smsbot"
           "?password=hunter2-query-pw&sslmode=disable")
    output = serve_that_cannot_start(url, tmp_path)
    assert "cannot open the database postgresql://smsbot:***@127.0.0.1:" in output
    assert "ConnectionRefusedError" in output, "the reason is told"
    assert "hunter2" not in output and "Traceback" not in output


def test_a_serve_on_postgresql_logs_no_password(tmp_path: pathlib.Path, pg_url: str) -> None:
    parts = urlsplit(pg_url)
    with_password = parts._replace(netloc=f"postgres:hunter2%40user@{parts.hostname}:{parts.port}",
                                   query="password=hunter2-query&sslpassword=hunter2-ssl").geturl()
    proc, base = start_smsbot("serve", tmp_path, lambda port: clean_env({
        **BASE_ENV, "SMSBOT_DB": with_password, "SMSBOT_LOG_LEVEL": "DEBUG"}), tmp_path / "serve.log")
    try:
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
    finally:
        proc.stop()
    output = proc.output()
    assert " ready (schema version " in output and "postgresql://postgres:***@" in output
    assert "hunter2" not in output


def test_an_error_that_echoes_a_server_setting_is_logged_masked(tmp_path: pathlib.Path, pg_url: str) -> None:
    """PostgreSQL's refusal of a bad server setting repeats its value: the log line masks it."""
    url = f"{pg_url}?work_mem=hunter2-setting&password=hunter2-query"
    output = serve_that_cannot_start(url, tmp_path)
    assert 'invalid value for parameter "work_mem": "***"' in output
    assert "hunter2" not in output and "Traceback" not in output


def test_a_request_aiohttp_cannot_parse_is_logged_without_its_url(tmp_path: pathlib.Path) -> None:
    """aiohttp's parser error quotes the bad request line or header: a GET webhook's number and signature, a
    sign-in link's rd. The log says a bad request came, and nothing of it."""
    proc, base = start_smsbot("serve", tmp_path, lambda port: clean_env({**BASE_ENV, "SMSBOT_DB": "s.db"}),
                              tmp_path / "serve.log")
    port = int(base.rsplit(":", 1)[1])
    bad = [b"GET /webhooks/inbound?msisdn=14155550143&sig=hunter2sig\x01 HTTP/1.1\r\nHost: a\r\n\r\n",
           b"GET /login?rd=https://wiki.example.org/?token=hunter2token HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n"]
    try:
        for raw in bad:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(raw)
                assert sock.recv(100).startswith(b"HTTP/1.0 400 ")
        wait_for(lambda: proc.output().count("Error handling request") >= 2, 10, "both bad requests logged")
    finally:
        proc.stop()
    output = proc.output()
    assert "hunter2" not in output and "4155550143" not in output
    assert "InvalidURLError" in output and "BadHttpMessage" in output, "what was wrong is told"
