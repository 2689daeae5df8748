"""Settings: validated once, every problem listed; serve refuses to start on a bad configuration."""

from __future__ import annotations

import pathlib

import pytest

from smsbot.settings import Settings, SettingsError, environment, load
from smsbot.web.cli import dev_environment

from .conftest import BASE_ENV


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
    assert settings.dev and settings.admins == ("+14155550100",)
    again = load(dev_environment({"SMSBOT_DB": str(tmp_path / "dev.db")}, 8080), dev=True)
    assert again.secret == settings.secret, "the dev secret persists, so the dev database stays usable"


def test_a_jwt_private_key_is_checked_at_start(tmp_path: pathlib.Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    app = {**BASE_ENV, "VONAGE_APPLICATION_ID": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"}
    assert load({**app, "VONAGE_PRIVATE_KEY": pem.replace("\n", "\\n")}).vonage_application_id  # as a .env holds it
    key_file = tmp_path / "vonage_private_key"  # no extension, as secrets are often mounted
    key_file.write_text(pem)
    assert load({**app, "VONAGE_PRIVATE_KEY": str(key_file)}).vonage_private_key == str(key_file)
    with pytest.raises(SettingsError) as caught:
        load({**app, "VONAGE_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----"})
    assert any(p.startswith("VONAGE_PRIVATE_KEY is not a usable private key") for p in caught.value.problems)
