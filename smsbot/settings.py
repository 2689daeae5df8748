"""Settings: built once from the environment (and a .env file) at the edge, validated, then frozen."""

from __future__ import annotations

import ipaddress
import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import phonenumbers

from . import phone
from .errors import SettingsError

PIN_MODES = ("sms", "verify")
SIGNATURE_METHODS = ("md5hash", "md5", "sha1", "sha256", "sha512")
MIN_SECRET_LENGTH = 32


@dataclass(frozen=True)
class Settings:
    secret: str
    admins: tuple[str, ...]  # E.164
    db_path: pathlib.Path = pathlib.Path("smsbot.db")
    number: str = ""  # digits, the sender of every SMS
    public_url: str = "http://localhost:8080"
    group_name: str = "smsbot"
    default_region: str = "US"
    pin_via: str = "sms"
    sms_rate: float = 30.0
    invite_ttl_hours: float = 72.0
    pin_ttl_minutes: float = 10.0
    session_idle_days: float = 30.0
    session_max_days: float = 365.0
    shutdown_timeout: float = 10.0
    vonage_api_key: str = ""
    vonage_api_secret: str = field(default="", repr=False)
    vonage_application_id: str = ""
    vonage_private_key: str = field(default="", repr=False)
    vonage_signature_secret: str = field(default="", repr=False)
    vonage_signature_method: str = "sha256"
    vonage_api_host: str = ""
    vonage_rest_host: str = ""
    vonage_timeout: int = 10
    pin_cap_hour: int = 5
    pin_cap_day: int = 20
    daily_sms_budget: int = 500
    lockout_failures: int = 20
    login_failures_per_minute: int = 30
    trusted_proxies: tuple[str, ...] = ()
    dev: bool = False

    @property
    def https(self) -> bool:
        return self.public_url.startswith("https://")

    def with_changes(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def read_dotenv(path: pathlib.Path) -> dict[str, str]:
    """Parse a simple KEY=VALUE .env file (comments, blank lines, optional quotes, `export`)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        if line.startswith("export "):
            line = line[len("export ") :].strip()
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def environment(environ: Mapping[str, str] | None = None, cwd: pathlib.Path | None = None) -> dict[str, str]:
    """The effective environment: the .env file in the working directory, overridden by the real environment."""
    merged = read_dotenv((cwd or pathlib.Path.cwd()) / ".env")
    merged.update(os.environ if environ is None else environ)
    return merged


def _number(env: Mapping[str, str], name: str, default: float, problems: list[str], minimum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        problems.append(f"{name} must be a number, got {raw!r}")
        return default
    if value < minimum:
        problems.append(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value


def load(env: Mapping[str, str], *, dev: bool = False) -> Settings:
    """Build and validate settings; raise SettingsError listing every problem found."""
    problems: list[str] = []
    region = env.get("SMSBOT_DEFAULT_REGION", "US").strip().upper() or "US"
    if region not in phonenumbers.SUPPORTED_REGIONS:
        problems.append(f"SMSBOT_DEFAULT_REGION {region!r} is not a known region code (e.g. US, GB, DE)")
        region = "US"

    secret = env.get("SMSBOT_SECRET", "")
    if len(secret) < MIN_SECRET_LENGTH:
        what = "is not set" if not secret else f"is only {len(secret)} characters"
        problems.append(f"SMSBOT_SECRET {what}; it must be at least {MIN_SECRET_LENGTH} characters "
                        "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')")

    admins: list[str] = []
    for entry in (part.strip() for part in env.get("SMSBOT_ADMINS", "").split(",")):
        if not entry:
            continue
        try:
            admins.append(phone.normalize(entry, region))
        except phone.PhoneError as exc:
            problems.append(f"SMSBOT_ADMINS entry {entry!r} is not a valid phone number: {exc.reason}")
    if not admins and not any("SMSBOT_ADMINS" in p for p in problems):
        problems.append("SMSBOT_ADMINS is empty; give at least one admin phone number")

    number = "".join(ch for ch in env.get("SMSBOT_NUMBER", "") if ch in "0123456789")
    if env.get("SMSBOT_NUMBER", "").strip() and not number:
        problems.append("SMSBOT_NUMBER must be the virtual number's digits, e.g. 14155550100")

    public_url = env.get("SMSBOT_PUBLIC_URL", "").strip().rstrip("/") or "http://localhost:8080"
    parts = urlsplit(public_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        problems.append(f"SMSBOT_PUBLIC_URL must be an http(s) URL like https://group.example.org, got {public_url!r}")

    pin_via = env.get("SMSBOT_PIN_VIA", "sms").strip().lower() or "sms"
    if pin_via not in PIN_MODES:
        problems.append(f"SMSBOT_PIN_VIA must be one of {', '.join(PIN_MODES)}, got {pin_via!r}")

    method = env.get("VONAGE_SIGNATURE_METHOD", "sha256").strip().lower() or "sha256"
    if method not in SIGNATURE_METHODS:
        problems.append(f"VONAGE_SIGNATURE_METHOD must be one of {', '.join(SIGNATURE_METHODS)}, got {method!r}")

    api_key = env.get("VONAGE_API_KEY", "").strip()
    api_secret = env.get("VONAGE_API_SECRET", "").strip()
    app_id = env.get("VONAGE_APPLICATION_ID", "").strip()
    private_key = env.get("VONAGE_PRIVATE_KEY", "").strip()
    if not dev:
        if not api_key or not api_secret:
            problems.append("VONAGE_API_KEY and VONAGE_API_SECRET are required to send texts")
        if not number:
            problems.append("SMSBOT_NUMBER (the Vonage virtual number) is required")
    proxies: list[str] = []
    for entry in filter(None, (p.strip() for p in env.get("SMSBOT_TRUSTED_PROXIES", "").split(","))):
        try:
            proxies.append(str(ipaddress.ip_network(entry, strict=False)))
        except ValueError:
            problems.append(f"SMSBOT_TRUSTED_PROXIES entry {entry!r} is not an IP address or network")
    if bool(app_id) != bool(private_key):
        problems.append("VONAGE_APPLICATION_ID and VONAGE_PRIVATE_KEY must be set together")
    elif app_id:
        from .gateway.vonage import check_jwt_auth

        why = check_jwt_auth(app_id, private_key)
        if why:
            problems.append(f"VONAGE_PRIVATE_KEY is not a usable private key for VONAGE_APPLICATION_ID ({why})")

    settings = Settings(
        secret=secret,
        admins=tuple(dict.fromkeys(admins)),
        db_path=pathlib.Path(env.get("SMSBOT_DB", "").strip() or "smsbot.db"),
        number=number,
        public_url=public_url,
        group_name=env.get("SMSBOT_GROUP_NAME", "").strip() or "smsbot",
        default_region=region,
        pin_via=pin_via,
        sms_rate=_number(env, "SMSBOT_SMS_RATE", 30.0, problems, 0.1),
        invite_ttl_hours=_number(env, "SMSBOT_INVITE_TTL_HOURS", 72.0, problems, 0.01),
        session_idle_days=_number(env, "SMSBOT_SESSION_IDLE_DAYS", 30.0, problems, 0.001),
        session_max_days=_number(env, "SMSBOT_SESSION_MAX_DAYS", 365.0, problems, 0.001),
        shutdown_timeout=_number(env, "SMSBOT_SHUTDOWN_TIMEOUT", 10.0, problems, 0.1),
        vonage_api_key=api_key,
        vonage_api_secret=api_secret,
        vonage_application_id=app_id,
        vonage_private_key=private_key,
        vonage_signature_secret=env.get("VONAGE_SIGNATURE_SECRET", "").strip(),
        vonage_signature_method=method,
        vonage_api_host=env.get("VONAGE_API_HOST", "").strip(),
        vonage_rest_host=env.get("VONAGE_REST_HOST", "").strip(),
        vonage_timeout=int(_number(env, "SMSBOT_VONAGE_TIMEOUT", 10, problems, 1)),
        pin_cap_hour=int(_number(env, "SMSBOT_PIN_CAP_HOUR", 5, problems, 1)),
        pin_cap_day=int(_number(env, "SMSBOT_PIN_CAP_DAY", 20, problems, 1)),
        daily_sms_budget=int(_number(env, "SMSBOT_DAILY_SMS_BUDGET", 500, problems, 1)),
        lockout_failures=int(_number(env, "SMSBOT_LOCKOUT_FAILURES", 20, problems, 5)),
        login_failures_per_minute=int(_number(env, "SMSBOT_LOGIN_FAILURES_PER_MINUTE", 30, problems, 1)),
        trusted_proxies=tuple(proxies),
        dev=dev,
    )
    if problems:
        raise SettingsError(problems)
    return settings
