"""The systemd units in deploy/: systemd accepts them, and `systemd-analyze security` rates each service's exposure
at most 2.0."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from smsbot import settings

DEPLOY = pathlib.Path(__file__).resolve().parent.parent / "deploy"
UNITS = {path.name: path.read_text(encoding="utf-8") for path in sorted(DEPLOY.glob("smsbot*.*"))}
SERVICES = sorted(name for name in UNITS if name.endswith(".service"))
EXEC = "ExecStart=/opt/smsbot/venv/bin/smsbot "
MAX_EXPOSURE = 2.0

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is missing: install Debian's systemd package (.ci/run does)")


def analyze(*args: str, units: dict[str, str], tmp_path: pathlib.Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze <args>` on copies of `units` (file name: text) in tmp_path; no running systemd needed."""
    for name, text in units.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return subprocess.run(["systemd-analyze", *args, *(str(tmp_path / name) for name in units)],
                          capture_output=True, text=True, timeout=60, check=False)


def exposure(output: str, service: str) -> float:
    found = re.search(rf"Overall exposure level for {re.escape(service)}: (\d+\.\d)", output)
    assert found, f"no overall exposure in:\n{output}"
    return float(found.group(1))


def rate(service: str, text: str, tmp_path: pathlib.Path) -> tuple[float, int]:
    """The service's overall exposure, and the exit status of a security check that fails above MAX_EXPOSURE."""
    rated = analyze("security", "--offline=true", f"--threshold={MAX_EXPOSURE * 10:.0f}", units={service: text},
                    tmp_path=tmp_path)
    return exposure(rated.stdout, service), rated.returncode


@pytest.mark.slow  # systemd-analyze
@needs_systemd_analyze
def test_systemd_verify_accepts_the_units(tmp_path: pathlib.Path) -> None:
    assert set(UNITS) == {"smsbot.service", "smsbot-backup.service", "smsbot-backup.timer"}
    # The one change: smsbot.service runs this checkout's smsbot instead of /opt/smsbot's, which verify requires to
    # exist. (The backup's ExecStart is /bin/sh.)
    assert UNITS["smsbot.service"].count(EXEC) == 1
    units = {**UNITS, "smsbot.service": UNITS["smsbot.service"].replace(EXEC, f"ExecStart={sys.executable} -m smsbot ")}
    verified = analyze("verify", units=units, tmp_path=tmp_path)
    assert (verified.returncode, verified.stdout + verified.stderr) == (0, "")


@pytest.mark.slow  # systemd-analyze
@needs_systemd_analyze
@pytest.mark.parametrize("service", SERVICES)
def test_security_exposure_is_at_most_two(service: str, tmp_path: pathlib.Path) -> None:
    score, status = rate(service, UNITS[service], tmp_path)
    assert score <= MAX_EXPOSURE and status == 0


@pytest.mark.slow  # systemd-analyze
@needs_systemd_analyze
def test_the_exposure_check_fails_a_weaker_unit(tmp_path: pathlib.Path) -> None:
    """Without its sandboxing lines (Protect*, Private*, the system call filter) smsbot.service rates above 2.0."""
    weaker = re.sub(r"^(Protect|Private|SystemCall|MemoryDeny)\w*=.*\n", "", UNITS["smsbot.service"],
                    flags=re.MULTILINE)
    score, status = rate("smsbot.service", weaker, tmp_path)
    assert score > MAX_EXPOSURE and status != 0


def unit_setting(service: str, name: str) -> str:
    values = re.findall(rf"^{name}=(.*)$", UNITS[service], flags=re.MULTILINE)
    assert len(values) == 1, f"{name} is set {len(values)} times in {service}"
    return str(values[0])


def test_systemd_waits_longer_than_smsbot_takes_to_stop() -> None:
    (shutdown,) = (row.default for row in settings.TABLE if row.env == "SMSBOT_SHUTDOWN_TIMEOUT")
    stop = re.fullmatch(r"(\d+)s", unit_setting("smsbot.service", "TimeoutStopSec"))
    assert stop and float(stop.group(1)) > shutdown
    assert unit_setting("smsbot.service", "KillSignal") == "SIGTERM"


def test_the_backup_runs_as_the_service_user_on_the_service_database() -> None:
    """Two dynamic users would take the state directory from each other (systemd gives it to the unit that starts)."""
    for name in ("User", "Environment", "EnvironmentFile"):
        assert unit_setting("smsbot-backup.service", name) == unit_setting("smsbot.service", name), name
    service_state = unit_setting("smsbot.service", "StateDirectory")
    assert service_state in unit_setting("smsbot-backup.service", "StateDirectory").split()
