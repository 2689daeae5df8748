"""The `smsbot` command line: check, and the entry points."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import smsbot as package
from smsbot.settings import TABLE

from support.procs import SMSBOT
from support.service import BASE_ENV


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
    from test_settings import APP_ID, rsa_pem

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
    from test_settings import APP_ID

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
