"""Settings: validated once, every problem listed; serve refuses to start on a bad configuration."""

from __future__ import annotations

import dataclasses
import io
import logging
import pathlib
import typing
from urllib.parse import unquote, unquote_plus, urlsplit

import pytest

from smsbot import logs
from smsbot.errors import SettingsError
from smsbot.gateway.vonage import vonage_key_check
from smsbot.settings import TABLE, Settings, environment, listing, load, masked_url, redacted, url_secrets
from smsbot.web.cli import dev_environment

from support.cases import PASSWORD_URLS
from support.constants import ADMIN, APP_ID
from support.service import BASE_ENV, rsa_pem


def test_a_good_configuration_loads_into_a_frozen_object() -> None:
    settings = load({**BASE_ENV, "SMSBOT_ADMINS": "+14155550100, (202) 555-0143", "SMSBOT_SMS_RATE": "5"})
    assert settings.admins == ("+14155550100", "+12025550143")
    assert settings.sms_rate == 5 and settings.pin_via == "sms" and settings.https
    with pytest.raises(AttributeError):
        settings.secret = "x"  # type: ignore[misc]


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        load({"SMSBOT_SECRET": "short", "SMSBOT_ADMINS": "+14155550100,not-a-phone,+1 900 555 0199",
              "SMSBOT_PIN_VIA": "carrier-pigeon", "SMSBOT_SMS_RATE": "fast", "VONAGE_SIGNATURE_METHOD": "crc32"})
    text = "\n".join(caught.value.problems)
    assert "SMSBOT_SECRET is only 5 characters" in text
    assert "'not-a-phone'" in text and "'+1 900 555 0199'" in text
    assert "premium-rate" in text
    assert "SMSBOT_PIN_VIA" in text and "SMSBOT_SMS_RATE" in text and "VONAGE_SIGNATURE_METHOD" in text
    assert "VONAGE_API_KEY" in text and "SMSBOT_NUMBER" in text
    assert len(caught.value.problems) >= 8


def test_no_admins_and_no_secret_are_refused() -> None:
    with pytest.raises(SettingsError) as caught:
        load({k: v for k, v in BASE_ENV.items() if k not in ("SMSBOT_SECRET", "SMSBOT_ADMINS")})
    problems = caught.value.problems
    assert any(p.startswith("SMSBOT_SECRET is not set") for p in problems)
    assert any(p.startswith("SMSBOT_ADMINS is empty") for p in problems)


def test_dotenv_is_read_and_the_real_environment_wins(tmp_path: pathlib.Path) -> None:
    (tmp_path / ".env").write_text('# comment\nexport SMSBOT_GROUP_NAME="Book Club"\nSMSBOT_DB=from-dotenv.db\n')
    env = environment({"SMSBOT_DB": "from-env.db"}, cwd=tmp_path)
    assert env["SMSBOT_GROUP_NAME"] == "Book Club" and env["SMSBOT_DB"] == "from-env.db"


def test_dev_mode_needs_no_configuration(tmp_path: pathlib.Path) -> None:
    env = dev_environment({"SMSBOT_DB": str(tmp_path / "dev.db")}, 8080)
    settings: Settings = load(env, dev=True)
    assert settings.dev and settings.admins == (ADMIN,)
    again = load(dev_environment({"SMSBOT_DB": str(tmp_path / "dev.db")}, 8080), dev=True)
    assert again.secret == settings.secret, "the dev secret persists, so the dev database stays usable"


def test_a_jwt_private_key_is_checked_at_start(tmp_path: pathlib.Path) -> None:
    pem = rsa_pem()
    app = {**BASE_ENV, "VONAGE_APPLICATION_ID": APP_ID}
    checks = [vonage_key_check]
    assert load({**app, "VONAGE_PRIVATE_KEY": pem.replace("\n", "\\n")}, checks=checks).vonage_application_id
    key_file = tmp_path / "vonage_private_key"  # no extension, as secrets are often mounted
    key_file.write_text(pem)
    assert load({**app, "VONAGE_PRIVATE_KEY": str(key_file)}, checks=checks).vonage_private_key == str(key_file)
    with pytest.raises(SettingsError) as caught:
        load({**app, "VONAGE_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----"},
             checks=checks)
    assert any(p.startswith("VONAGE_PRIVATE_KEY is not a usable private key") for p in caught.value.problems)


def test_the_application_id_and_private_key_come_together() -> None:
    with pytest.raises(SettingsError) as caught:
        load({**BASE_ENV, "VONAGE_APPLICATION_ID": APP_ID}, checks=[vonage_key_check])
    assert caught.value.problems == ["VONAGE_APPLICATION_ID and VONAGE_PRIVATE_KEY must be set together"]


def test_checks_see_the_settings_and_their_problems_join_the_table_s() -> None:
    seen: list[Settings] = []

    def check(settings: Settings) -> list[str]:
        seen.append(settings)
        return ["the check found a problem"]

    with pytest.raises(SettingsError) as caught:
        load({**BASE_ENV, "SMSBOT_SMS_RATE": "fast", "SMSBOT_GROUP_NAME": "Chess"}, checks=[check])
    assert caught.value.problems == ["SMSBOT_SMS_RATE must be a number, got 'fast'", "the check found a problem"]
    assert seen[0].group_name == "Chess" and seen[0].sms_rate == 30, "a bad value falls back to its default"
    assert load(BASE_ENV, checks=[lambda settings: []]).group_name == "Friends"


def test_a_multi_line_pem_key_in_dotenv_loads(tmp_path: pathlib.Path) -> None:
    pem = rsa_pem()
    assert pem.count("\n") > 20
    lines = [f"{k}={v}" for k, v in BASE_ENV.items()]
    lines += [f"VONAGE_APPLICATION_ID={APP_ID}", "# the key, as the dashboard downloads it:",
              f'VONAGE_PRIVATE_KEY="{pem}"', "export SMSBOT_GROUP_NAME='Book Club'"]
    (tmp_path / ".env").write_text("\n".join(lines) + "\n")
    settings = load(environment({}, cwd=tmp_path), checks=[vonage_key_check])
    assert settings.vonage_private_key == pem.strip() and settings.group_name == "Book Club"

    escaped = pem.strip().replace("\n", "\\n")  # the old one-line workaround still works
    (tmp_path / ".env").write_text("\n".join([*lines[:-2], f"VONAGE_PRIVATE_KEY={escaped}"]) + "\n")
    settings = load(environment({}, cwd=tmp_path), checks=[vonage_key_check])
    assert settings.vonage_private_key == escaped


def test_a_dotenv_value_means_what_it_says(tmp_path: pathlib.Path) -> None:
    (tmp_path / ".env").write_text("SMSBOT_SECRET='${HOME}-and-32-more-characters-xxxxxxxxxx'\nVONAGE_API_KEY\n")
    env = environment({}, cwd=tmp_path)
    assert env == {"SMSBOT_SECRET": "${HOME}-and-32-more-characters-xxxxxxxxxx"}, "no interpolation, no None"


def test_no_secret_appears_in_a_repr() -> None:
    pem = rsa_pem()
    secrets = {"SMSBOT_SECRET": "m" * 40, "VONAGE_API_SECRET": "api-secret-value-123",
               "VONAGE_PRIVATE_KEY": pem, "VONAGE_SIGNATURE_SECRET": "signature-secret-value-456"}
    settings = load({**BASE_ENV, **secrets, "VONAGE_APPLICATION_ID": APP_ID}, checks=[vonage_key_check])
    assert {row.env for row in TABLE if row.secret} == set(secrets)
    for shown in (repr(settings), str(settings), repr(dataclasses.replace(settings, group_name="x"))):
        assert "Friends" in shown or "'x'" in shown
        for value in secrets.values():
            assert value.strip() not in shown
        assert "BEGIN PRIVATE KEY" not in shown and "MII" not in shown


def test_secret_rows_and_hidden_fields_agree() -> None:
    hidden = {f.name for f in dataclasses.fields(Settings) if not f.repr}
    assert hidden == {row.attr for row in TABLE if row.secret} | {"db"}, "and SMSBOT_DB, whose URL may hold a password"


def test_every_default_has_its_field_s_type() -> None:
    hints = typing.get_type_hints(Settings)
    for row in TABLE:
        kind = typing.get_origin(hints[row.attr]) or hints[row.attr]
        assert isinstance(row.default, kind), row.env
    defaults = load(BASE_ENV)
    assert defaults.pin_via == "sms" and defaults.sms_rate == 30 and defaults.db_path == pathlib.Path("smsbot.db")


@pytest.mark.parametrize(("name", "value", "problem"), [
    ("SMSBOT_LOG_LEVEL", "loud", "SMSBOT_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, got 'loud'"),
    ("SMSBOT_LOCKOUT_FAILURES", "4", "SMSBOT_LOCKOUT_FAILURES must be at least 5, got '4'"),
    ("SMSBOT_DEFAULT_REGION", "zz", "SMSBOT_DEFAULT_REGION 'ZZ' is not a known region code (e.g. US, GB, DE)"),
    ("SMSBOT_NUMBER", "call me", "SMSBOT_NUMBER must be the virtual number's digits, e.g. 14155550100"),
    ("SMSBOT_PUBLIC_URL", "group.example.org", "SMSBOT_PUBLIC_URL must be an http(s) URL like "
     "https://group.example.org, got 'group.example.org'"),
    ("SMSBOT_TRUSTED_PROXIES", "127.0.0.1, proxy", "SMSBOT_TRUSTED_PROXIES entry 'proxy' is not an IP address or "
     "network"),
    ("SMSBOT_ADMINS", " , ", "SMSBOT_ADMINS is empty; give at least one admin phone number"),
])
def test_each_bad_value_is_named(name: str, value: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load({**BASE_ENV, name: value})
    assert caught.value.problems == [problem]


def test_values_are_normalised() -> None:
    settings = load({**BASE_ENV, "SMSBOT_LOG_LEVEL": "debug", "SMSBOT_PIN_VIA": " Verify ",
                     "SMSBOT_DEFAULT_REGION": "gb",
                     "SMSBOT_ADMINS": "020 7946 0958, +442079460958", "SMSBOT_PUBLIC_URL": "https://a.example/",
                     "SMSBOT_TRUSTED_PROXIES": "10.0.0.1/8", "SMSBOT_PIN_CAP_DAY": "7"})
    assert (settings.log_level, settings.pin_via, settings.default_region) == ("DEBUG", "verify", "GB")
    assert settings.admins == ("+442079460958",) and settings.public_url == "https://a.example"
    assert settings.trusted_proxies == ("10.0.0.0/8",) and settings.pin_cap_day == 7


def test_dev_mode_needs_no_number_or_vonage_credentials() -> None:
    env = {k: v for k, v in BASE_ENV.items() if k not in ("SMSBOT_NUMBER", "VONAGE_API_KEY", "VONAGE_API_SECRET")}
    assert load(env, dev=True).dev
    with pytest.raises(SettingsError) as caught:
        load(env)
    assert caught.value.problems == ["SMSBOT_NUMBER is required: the Vonage virtual number that sends every text",
                                     "VONAGE_API_KEY is required to send texts",
                                     "VONAGE_API_SECRET is required to send texts"]


@pytest.mark.slow  # a subprocess
def test_settings_do_not_import_the_gateway() -> None:
    """The private-key check is the edge's to pass in: loading settings with a key loads no gateway."""
    import json
    import subprocess
    import sys

    env = {**BASE_ENV, "VONAGE_APPLICATION_ID": APP_ID, "VONAGE_PRIVATE_KEY": "/nowhere/key.pem"}
    code = ("import json, sys, smsbot.settings; smsbot.settings.load(json.loads(sys.argv[1])); "
            "print(sorted(m for m in sys.modules if m.startswith(('smsbot.', 'vonage'))))")
    loaded = subprocess.run([sys.executable, "-c", code, json.dumps(env)], capture_output=True, text=True,
                            check=True).stdout
    assert loaded.strip() == "['smsbot.errors', 'smsbot.phone', 'smsbot.settings', 'smsbot.sms', 'smsbot.sms.commands']"




@pytest.mark.parametrize(("url", "password"), PASSWORD_URLS)
def test_a_database_password_is_never_shown(url: str, password: str) -> None:
    settings = load({**BASE_ENV, "SMSBOT_DB": url})
    shown = settings.database
    assert password not in shown and password not in unquote(shown) and password not in unquote_plus(shown)
    assert dict(listing(settings))["SMSBOT_DB"] == shown
    parts = urlsplit(shown)
    assert parts.username == "smsbot" and parts.path == "/smsbot", "the rest of the URL is shown as it is"
    assert "example.org" in parts.netloc
    assert redacted(f"could not connect with {url} ({password}, {unquote(url)})", url_secrets(url)).count("***") >= 2
    assert password not in redacted(f"could not connect with {url} ({password}, {unquote(url)})", url_secrets(url))


def test_what_is_no_secret_stays_readable() -> None:
    url = "postgresql://smsbot@db.example.org:5432/smsbot?sslmode=require&passfile=/run/pgpass&application_name=bot"
    assert masked_url(url) == url, "a passfile path is no secret"
    assert masked_url("smsbot.db") == "smsbot.db" and masked_url("/var/lib/smsbot/p@ss:word.db") == \
        "/var/lib/smsbot/p@ss:word.db", "a file path is shown as it is"
    assert masked_url("postgresql://smsbot@db.example.org/smsbot?options=-c%20work_mem%3D1") == \
        "postgresql://smsbot@db.example.org/smsbot?options=***", "a server setting is masked: an error may echo it"


@pytest.mark.parametrize("url", [
    "postgresql://smsbot:hunter2@pw@db.example.org/smsbot",  # asyncpg splits at the first @: hunter2, host pw@db...
    "postgresql://smsbot:hunter2/pw@db.example.org/smsbot",  # the path starts at the /: the rest would show
    "postgresql://smsbot:hunter2?pw@db.example.org/smsbot",
    "postgresql://smsbot:hunter2#pw@db.example.org/smsbot",
    "postgresql://smsbot@db.example.org/smsbot?password:hunter2pw",  # not name=value: asyncpg's error echoes it
    "postgresql://smsbot:hunter2pw@[db.example.org/smsbot",
])
def test_a_url_that_would_be_misread_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load({**BASE_ENV, "SMSBOT_DB": url})
    assert [p for p in caught.value.problems if p.startswith("SMSBOT_DB ")], caught.value.problems
    assert "hunter2" not in str(caught.value)


def test_no_log_line_shows_a_secret_the_settings_hold() -> None:
    url = "postgresql://smsbot:hunter2%40pw@db.example.org/smsbot?options=-c%20work_mem%3Dhunter3"
    settings = load({**BASE_ENV, "SMSBOT_DB": url, "VONAGE_API_SECRET": "abc"})
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(logs.Redacting(settings.secrets()))
    logger = logging.getLogger("test.redacting")
    logger.addHandler(handler)
    try:
        try:
            raise ValueError(f"bad password hunter2@pw for {url}")
        except ValueError:
            logger.exception("failed with %s and %s", "-c work_mem=hunter3", settings.secret)
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert "hunter" not in text and settings.secret not in text
    assert "ValueError: bad password *** for" in text, "the traceback is there, masked"
    assert "abc" not in settings.secrets(), "too short to mask: it would garble every line"


@pytest.mark.parametrize(("name", "value"), [
    ("SMSBOT_PUBLIC_URL", "https://admin:hunter2-pw@group.example.org"),  # would go into every text
    ("SMSBOT_PUBLIC_URL", "https://group.example.org/?token=hunter2-pw"),
    ("SMSBOT_PUBLIC_URL", "https://group.example.org/#hunter2-pw"),
    ("SMSBOT_PUBLIC_URL", "ftp://admin:hunter2-pw@group.example.org"),
    ("SMSBOT_PUBLIC_URL", "https://admin:hunter2-pw@group.example.org:port"),
    ("VONAGE_API_HOST", "key:hunter2-pw@api.nexmo.com"),
    ("VONAGE_REST_HOST", "https://rest.nexmo.com/?api_secret=hunter2-pw"),
    ("VONAGE_REST_HOST", "rest.nexmo.com/sms"),
])
def test_a_url_setting_holds_no_credentials_and_no_error_repeats_them(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load({**BASE_ENV, name: value})
    assert [p for p in caught.value.problems if p.startswith(f"{name} ")], caught.value.problems
    assert "hunter2" not in str(caught.value)


def test_vonage_host_overrides_are_hosts_with_an_optional_port() -> None:
    settings = load({**BASE_ENV, "VONAGE_API_HOST": "127.0.0.1:8443", "VONAGE_REST_HOST": "[::1]:8443"})
    assert (settings.vonage_api_host, settings.vonage_rest_host) == ("127.0.0.1:8443", "[::1]:8443")
    assert load({**BASE_ENV, "VONAGE_REST_HOST": "rest.nexmo.com"}).vonage_rest_host == "rest.nexmo.com"
