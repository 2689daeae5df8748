"""The `smsbot` command line: check, and the entry points."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from .conftest import BASE_ENV


def smsbot(*args: str, env: dict[str, str], cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SMSBOT_", "VONAGE_"))}
    return subprocess.run([sys.executable, "-m", "smsbot", *args], env={**clean, **env}, cwd=cwd,
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
