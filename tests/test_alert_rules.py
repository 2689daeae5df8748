"""The alert rules in deploy/prometheus pass `promtool check rules`, and `promtool test rules` shows each rule
firing on one series and staying quiet on another."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

import pytest

from support.constants import RULES, RULES_DIR

RULE_TESTS = RULES_DIR / "smsbot-rules.test.yml"

pytestmark = [pytest.mark.slow,  # promtool runs as a subprocess
              pytest.mark.skipif(shutil.which("promtool") is None,
                                 reason="promtool not installed (Debian package prometheus)")]


def promtool(*args: str, cwd: pathlib.Path = RULES_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def alerts() -> list[str]:
    return re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.M)


def test_the_rules_are_valid() -> None:
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in checked.stdout


def test_each_rule_fires_on_one_series_and_not_on_another() -> None:
    tests = RULE_TESTS.read_text()
    # The quiet series is either a case of its own (exp_alerts: []) or a second series beside the firing one, which
    # promtool's exact match of the expected alerts then shows quiet.
    for alert in alerts():
        cases = re.findall(rf"alertname: {alert}\n\s+exp_alerts:(.*)", tests)
        assert any(case.strip() != "[]" for case in cases), f"{alert} is never shown firing"
    tested = promtool("test", "rules", RULE_TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_the_rule_tests_catch_a_broken_rule(tmp_path: pathlib.Path) -> None:
    """A threshold moved (5 minutes of waiting read as 50) makes `promtool test rules` fail."""
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    broken = RULES.read_text().replace("max(smsbot_outbox_oldest_seconds) > 300",
                                       "max(smsbot_outbox_oldest_seconds) > 3000")
    assert broken != RULES.read_text()
    (tmp_path / RULES.name).write_text(broken)
    tested = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert tested.returncode != 0
    assert "SmsbotTextsWaiting" in tested.stdout + tested.stderr
