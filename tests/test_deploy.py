"""deploy/smsbot.service: systemd accepts it, and `systemd-analyze security` rates its exposure at most 2.0."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from smsbot import settings

ROOT = pathlib.Path(__file__).resolve().parent.parent
UNIT = (ROOT / "deploy" / "smsbot.service").read_text(encoding="utf-8")
EXEC = "/opt/smsbot/venv/bin/smsbot "
MAX_EXPOSURE = 2.0

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is missing: install Debian's systemd package (.ci/run does)")


def analyze(*args: str, unit: str, tmp_path: pathlib.Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze <args> smsbot.service` on a copy of `unit` in tmp_path; no running systemd needed."""
    path = tmp_path / "smsbot.service"
    path.write_text(unit, encoding="utf-8")
    return subprocess.run(["systemd-analyze", *args, str(path)], capture_output=True, text=True, timeout=60,
                          check=False)


def exposure(output: str) -> float:
    found = re.search(r"Overall exposure level for smsbot\.service: (\d+\.\d)", output)
    assert found, f"no overall exposure in:\n{output}"
    return float(found.group(1))


@needs_systemd_analyze
def test_systemd_verify_accepts_the_unit(tmp_path: pathlib.Path) -> None:
    # The one change: ExecStart runs this checkout's smsbot instead of /opt/smsbot's, which verify requires to exist.
    assert UNIT.count(EXEC) == 1
    unit = UNIT.replace(EXEC, f"{sys.executable} -m smsbot ")
    verified = analyze("verify", unit=unit, tmp_path=tmp_path)
    assert (verified.returncode, verified.stdout + verified.stderr) == (0, "")


@needs_systemd_analyze
def test_security_exposure_is_at_most_two(tmp_path: pathlib.Path) -> None:
    rated = analyze("security", "--offline=true", f"--threshold={MAX_EXPOSURE * 10:.0f}", unit=UNIT,
                    tmp_path=tmp_path)
    assert exposure(rated.stdout) <= MAX_EXPOSURE, rated.stdout
    assert rated.returncode == 0, rated.stdout + rated.stderr


@needs_systemd_analyze
def test_the_exposure_check_fails_a_weaker_unit(tmp_path: pathlib.Path) -> None:
    """Without its sandboxing lines (Protect*, Private*, the system call filter) the unit rates above 2.0."""
    weaker = re.sub(r"^(Protect|Private|SystemCall|MemoryDeny)\w*=.*\n", "", UNIT, flags=re.MULTILINE)
    rated = analyze("security", "--offline=true", f"--threshold={MAX_EXPOSURE * 10:.0f}", unit=weaker,
                    tmp_path=tmp_path)
    assert exposure(rated.stdout) > MAX_EXPOSURE
    assert rated.returncode != 0


def unit_setting(name: str) -> str:
    values = re.findall(rf"^{name}=(.*)$", UNIT, flags=re.MULTILINE)
    assert len(values) == 1, f"{name} is set {len(values)} times"
    return str(values[0])


def test_systemd_waits_longer_than_smsbot_takes_to_stop() -> None:
    (shutdown,) = (row.default for row in settings.TABLE if row.env == "SMSBOT_SHUTDOWN_TIMEOUT")
    stop = re.fullmatch(r"(\d+)s", unit_setting("TimeoutStopSec"))
    assert stop and float(stop.group(1)) > shutdown
    assert unit_setting("KillSignal") == "SIGTERM"

