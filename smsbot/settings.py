"""Settings: one declared table of environment variables, loaded once at the edge, validated, then frozen.

The table (`TABLE`) is the single source: loading and validation, `smsbot check`'s listing and the README's
configuration table are all made from it.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import os
import pathlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import SplitResult, parse_qsl, unquote, unquote_plus, urlsplit, urlunsplit

import phonenumbers
from dotenv import dotenv_values

from . import phone
from .errors import SettingsError, SmsbotError
from .sms import commands

PIN_MODES = ("sms", "verify")
CONFIRMABLE = tuple(c.name for c in commands.COMMANDS if c.confirmable)  # SMSBOT_CONFIRM may list these
POSTGRES_SCHEMES = ("postgresql", "postgres")
SIGNATURE_METHODS = ("md5hash", "md5", "sha1", "sha256", "sha512")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
MIN_SECRET_LENGTH = 32
DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")
SECRET_RULE = (f"it must be at least {MIN_SECRET_LENGTH} characters "
               "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')")


class Invalid(SmsbotError, ValueError):
    """A parser's complaints about one variable's value; each reads after the variable's name."""

    def __init__(self, *problems: str):
        super().__init__("; ".join(problems))
        self.problems = problems


class Need(enum.Enum):
    OPTIONAL = "optional"
    ALWAYS = "always"  # dev mode fills these in itself
    TO_SERVE = "to serve"  # dev mode talks to no provider, so it needs no number or credentials


# A parser turns a variable's raw text (never blank) into the field's value, or raises Invalid. It sees its own
# row (for the bounds) and the values of the rows above it.
Parser = Callable[[str, "Setting", Mapping[str, Any]], Any]
Check = Callable[["Settings"], list[str]]


@dataclass(frozen=True)
class Setting:
    """One row of the table: an environment variable and the Settings field it fills."""

    env: str
    attr: str
    parse: Parser
    default: Any  # the value when the variable is unset or blank
    doc: str
    minimum: float | None = None
    unit: str = ""  # of the minimum, as the README shows it
    choices: tuple[str, ...] = ()
    secret: bool = False  # shown only as set / not set, never in a repr or a log line
    need: Need = Need.OPTIONAL
    missing: str = "is required"  # the problem, after the name, when a needed variable is not set
    together: str = ""  # a variable that must be set exactly when this one is
    show: Callable[[Any], str] | None = None  # how `smsbot check` shows the value, if not as plain text

    def needed(self, dev: bool) -> bool:
        return self.need is Need.ALWAYS or (self.need is Need.TO_SERVE and not dev)

    def bounds(self) -> str:
        """The allowed values, as the README shows them."""
        allowed = []
        if self.minimum is not None:
            allowed.append(f"at least {self.minimum:g} {self.unit}".rstrip())
        if self.choices:
            allowed.append(", ".join(f"`{c}`" for c in self.choices))
        if self.together:
            allowed.append(f"set together with {self.together}")
        return "; ".join(allowed) or "-"


def text(raw: str, row: Setting, done: Mapping[str, Any]) -> str:
    return raw.strip()


def choices(raw: str, row: Setting, done: Mapping[str, Any]) -> tuple[str, ...]:
    """Any of the row's choices, comma-separated and matched ignoring case, or `none` for none of them."""
    given = [entry.upper() for entry in _entries(raw)]
    if given == ["NONE"]:
        return ()
    unknown = [entry for entry in given if entry not in row.choices]
    if unknown or not given:
        raise Invalid(f"must be `none` or any of {', '.join(row.choices)}, comma-separated, got {raw.strip()!r}")
    return tuple(c for c in row.choices if c in given)


def database(raw: str, row: Setting, done: Mapping[str, Any]) -> str:
    """A SQLite file path, or a postgresql:// URL; any other scheme is refused, never taken for a file name. A URL
    that asyncpg would read otherwise than we show it is refused too, and no problem repeats the URL."""
    value = raw.strip()
    scheme, found, _ = value.partition("://")
    if not found:
        return value
    if scheme.lower() not in POSTGRES_SCHEMES:
        raise Invalid(f"must be a file path or a postgresql:// URL, got the scheme {scheme!r}")
    example = "like postgresql://user:password@host:5432/smsbot"
    try:
        parts = urlsplit(value)
        parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise Invalid(f"is not a URL asyncpg can read ({example}, with name=value parameters)") from None
    if parts.netloc.count("@") > 1 or "@" in value[len(scheme) + 3 + len(parts.netloc):] or parts.fragment:
        # asyncpg splits at the first @, and a / ? or # ends the password: the rest would be taken for the host,
        # the database or the parameters, and shown or echoed in errors.
        raise Invalid("has an @, /, ? or # in its password: percent-encode them (%40, %2F, %3F, %23)")
    if not parts.hostname or not parts.path.strip("/"):
        raise Invalid(f"must name the host and the database, {example}")
    return value


# Query parameters of a PostgreSQL URL that hold nothing secret (asyncpg's connection options). Any other one is
# masked: password and sslpassword, and the server settings asyncpg passes on, whose values an error may echo.
SAFE_PARAMETERS = frozenset({
    "host", "port", "user", "dbname", "database", "passfile", "service", "servicefile", "sslmode", "sslcert",
    "sslkey", "sslrootcert", "sslcrl", "sslnegotiation", "ssl_min_protocol_version", "ssl_max_protocol_version",
    "target_session_attrs", "krbsrvname", "gsslib", "application_name", "connect_timeout"})
MASK = "***"
REDACT_FROM = 4  # characters: a log line masks secrets this long or longer


class QueryField(NamedTuple):
    written: str  # name=value as in the URL
    name: str
    value: str  # as written (percent-encoded)
    secret: bool


def _url_fields(value: str) -> tuple[SplitResult, str, str | None, list[QueryField]]:
    """A database URL taken apart: its parts, its netloc without the password, the password as written (None
    without one), and its query's fields."""
    parts = urlsplit(value)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    fields = []
    for written in filter(None, parts.query.split("&")):
        name, _, text = written.partition("=")
        fields.append(QueryField(written, name, text, unquote_plus(name).lower() not in SAFE_PARAMETERS))
    return parts, f"{user}@{hostport}" if at else hostport, password if colon else None, fields


def url_secrets(value: str) -> tuple[str, ...]:
    """The secrets of a database URL (its password and every masked parameter's value), as written and decoded,
    longest first; none for a file path."""
    if "://" not in value:
        return ()
    _, _, password, fields = _url_fields(value)
    written = [password or "", *(field.value for field in fields if field.secret)]
    found = {form for text in written for form in (text, unquote(text), unquote_plus(text)) if form}
    return tuple(sorted(found, key=len, reverse=True))


def redacted(text: str, secrets: Iterable[str]) -> str:
    """`text` with each of `secrets` in it replaced by the mask (give the longest first)."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def masked_url(value: str) -> str:
    """A database URL as logs and `smsbot check` show it: the password and every secret parameter's value masked.
    A file path is shown as it is."""
    if "://" not in value:
        return value
    parts, netloc, password, fields = _url_fields(value)
    if password is not None:
        user, _, hostport = netloc.rpartition("@")
        netloc = f"{user}:{MASK}@{hostport}"
    query = "&".join(f"{field.name}={MASK}" if field.secret else field.written for field in fields)
    return urlunsplit((parts.scheme, netloc, parts.path, query, MASK if parts.fragment else ""))


def number(raw: str, row: Setting, done: Mapping[str, Any]) -> float:
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        raise Invalid(f"must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise Invalid(f"must be a finite number, got {raw!r}")
    if row.minimum is not None and value < row.minimum:
        raise Invalid(f"must be at least {row.minimum:g}, got {raw!r}")
    return value


def whole_number(raw: str, row: Setting, done: Mapping[str, Any]) -> int:
    return int(number(raw, row, done))


def choice(raw: str, row: Setting, done: Mapping[str, Any]) -> str:
    """One of the row's choices, matched ignoring case, spelled as declared."""
    given = raw.strip()
    for allowed in row.choices:
        if given.lower() == allowed.lower():
            return allowed
    raise Invalid(f"must be one of {', '.join(row.choices)}, got {given!r}")


def server_secret(raw: str, row: Setting, done: Mapping[str, Any]) -> str:
    # Not stripped: every key derives from the exact text, and changing it forgets every member.
    if len(raw) < MIN_SECRET_LENGTH:
        raise Invalid(f"is only {len(raw)} characters; {SECRET_RULE}")
    return raw


def region(raw: str, row: Setting, done: Mapping[str, Any]) -> str:
    code = raw.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise Invalid(f"{code!r} is not a known region code (e.g. US, GB, DE)")
    return code


def _entries(raw: str) -> list[str]:
    return [entry for entry in (part.strip() for part in raw.split(",")) if entry]


def phone_numbers(raw: str, row: Setting, done: Mapping[str, Any]) -> tuple[str, ...]:
    """Comma-separated numbers in any format that parses in SMSBOT_DEFAULT_REGION, as E.164."""
    numbers, problems = [], []
    for entry in _entries(raw):
        try:
            numbers.append(phone.normalize(entry, done["default_region"]))
        except phone.PhoneError as exc:
            problems.append(f"entry {entry!r} is not a valid phone number: {exc.reason}")
    if problems:
        raise Invalid(*problems)
    if not numbers:
        raise Invalid(row.missing)
    return tuple(dict.fromkeys(numbers))


def digits(raw: str, row: Setting, done: Mapping[str, Any]) -> str:
    value = "".join(ch for ch in raw if ch in "0123456789")
    if not value:
        raise Invalid("must be the virtual number's digits, e.g. 14155550100")
    return value


def listen_address(raw: str, row: Setting, done: Mapping[str, Any]) -> str:
    """`host:port` (an IPv6 host in brackets), port 1 to 65535."""
    host, _, port = raw.strip().rpartition(":")
    if not host.strip("[]") or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise Invalid(f"must be host:port, like 127.0.0.1:9464, got {raw.strip()!r}")
    return raw.strip()


def http_url(raw: str, row: Setting, done: Mapping[str, Any]) -> str:
    """An http(s) base URL, which goes into texts and pages: no user name or password, query or fragment in it
    (nor in the problem, which shows such a URL only as far as its host)."""
    url = raw.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises for a port that is not a number)
    except ValueError:
        parts = urlsplit("")
    if any(mark in url for mark in "@?#"):
        raise Invalid("must be a plain http(s) URL like https://group.example.org, without a user name, password, "
                      "query or fragment: it goes into every text")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"must be an http(s) URL like https://group.example.org, got {url!r}")
    return url


def host_port(raw: str, row: Setting, done: Mapping[str, Any]) -> str:
    """`host` or `host:port` (an IPv6 address in brackets), nothing more; the problem does not repeat it."""
    value = raw.strip()
    try:
        parts = urlsplit(f"//{value}")
        parts.port  # noqa: B018 (raises for a port that is not a number)
    except ValueError:
        parts = urlsplit("")
    if not parts.hostname or parts.netloc != value or "@" in value:
        raise Invalid("must be a host name or address with an optional :port, like api-eu.vonage.com or "
                      "127.0.0.1:8443 (no scheme, path, query or credentials)")
    return value


def cookie_domain(raw: str, row: Setting, done: Mapping[str, Any]) -> str:
    domain = raw.strip().lower().lstrip(".")
    if not DOMAIN.match(domain):
        raise Invalid(f"must be a domain name with at least one dot, like example.org, got {raw.strip()!r}")
    public_host = (urlsplit(done["public_url"]).hostname or "").lower()
    if public_host != domain and not public_host.endswith("." + domain):
        raise Invalid(f"must be SMSBOT_PUBLIC_URL's host ({public_host}) or a parent domain of it, got {domain!r}")
    return domain


def networks(raw: str, row: Setting, done: Mapping[str, Any]) -> tuple[str, ...]:
    found, problems = [], []
    for entry in _entries(raw):
        try:
            found.append(str(ipaddress.ip_network(entry, strict=False)))
        except ValueError:
            problems.append(f"entry {entry!r} is not an IP address or network")
    if problems:
        raise Invalid(*problems)
    return tuple(found)


def client_file(raw: str, row: Setting, done: Mapping[str, Any]) -> str:
    from .oidc_clients import ClientFileError, read_clients

    try:
        read_clients(raw)
    except ClientFileError as error:
        raise Invalid(str(error)) from None
    return raw


def _masked(numbers: tuple[str, ...]) -> str:
    return ", ".join(phone.mask(n) for n in numbers)


# Row order is the README's order, and a parser may use the values of the rows above it (admins use the region).
TABLE: tuple[Setting, ...] = (
    Setting("SMSBOT_SECRET", "secret", server_secret, "", minimum=MIN_SECRET_LENGTH, unit="characters",
            secret=True, need=Need.ALWAYS,
            missing=f"is not set; {SECRET_RULE}",
            doc="server secret; keys for number HMACs, PIN hashes and CSRF tokens derive "
                "from it. Changing it forgets every member"),
    Setting("SMSBOT_DEFAULT_REGION", "default_region", region, "US",
            doc="two-letter region for numbers written in national format, as in SMSBOT_ADMINS"),
    Setting("SMSBOT_ADMINS", "admins", phone_numbers, (), need=Need.ALWAYS, show=_masked,
            missing="is empty; give at least one admin phone number",
            doc="comma-separated admin phone numbers, any format that parses with SMSBOT_DEFAULT_REGION"),
    Setting("SMSBOT_NUMBER", "number", digits, "", need=Need.TO_SERVE,
            missing="is required: the Vonage virtual number that sends every text",
            doc="the group's Vonage virtual number, digits; the sender of every text"),
    Setting("VONAGE_API_KEY", "vonage_api_key", text, "", need=Need.TO_SERVE, missing="is required to send texts",
            doc="Vonage API key"),
    Setting("VONAGE_API_SECRET", "vonage_api_secret", text, "", secret=True, need=Need.TO_SERVE,
            missing="is required to send texts", doc="Vonage API secret"),
    Setting("SMSBOT_DB", "db", database, "smsbot.db", show=lambda v: masked_url(v),
            doc="SQLite database file, or a PostgreSQL URL `postgresql://user:password@host:port/dbname` (then "
                "several instances may share it)"),
    Setting("SMSBOT_PUBLIC_URL", "public_url", http_url, "http://localhost:8080",
            doc="public base URL, used in texts (so no user name, password, query or fragment); `https://` turns on "
                "Secure `__Host-` cookies and HSTS"),
    Setting("SMSBOT_COOKIE_DOMAIN", "cookie_domain", cookie_domain, "",
            doc="optional parent domain (e.g. `example.org`): the session cookie is set for it, so tools on its "
                "subdomains share one sign-in, and sign-in redirects may go to its hosts"),
    Setting("SMSBOT_GROUP_NAME", "group_name", text, "smsbot",
            doc="the group's name in texts (cut to 24 characters)"),
    Setting("SMSBOT_CONFIRM", "confirm", choices, ("INVITE",), choices=CONFIRMABLE,
            show=lambda v: ", ".join(v) or "none",
            doc="admin commands that take effect only after the admin replies `YES <code>` (a spoofed sender can't "
                "read the code): comma-separated, or `none`"),
    Setting("SMSBOT_PIN_VIA", "pin_via", choice, "sms", choices=PIN_MODES,
            doc="`sms`: smsbot makes each PIN and texts it; `verify`: Vonage Verify v2 does"),
    Setting("SMSBOT_SMS_RATE", "sms_rate", number, 30.0, minimum=0.1, unit="per second",
            doc="ceiling on outbound SMS API requests per second (any sliding one-second window)"),
    Setting("SMSBOT_INVITE_TTL_HOURS", "invite_ttl_hours", number, 72.0, minimum=0.01, unit="hours",
            doc="how long an invite code is valid"),
    Setting("SMSBOT_SESSION_IDLE_DAYS", "session_idle_days", number, 30.0, minimum=0.001, unit="days",
            doc="a device unused this long is signed out"),
    Setting("SMSBOT_SESSION_MAX_DAYS", "session_max_days", number, 365.0, minimum=0.001, unit="days",
            doc="a device is signed out this long after signing in, used or not"),
    Setting("SMSBOT_PIN_CAP_HOUR", "pin_cap_hour", whole_number, 5, minimum=1,
            doc="PINs one number can get per hour; past that it gets one \"wait an hour\" text"),
    Setting("SMSBOT_PIN_CAP_DAY", "pin_cap_day", whole_number, 20, minimum=1,
            doc="PINs one number can get per day"),
    Setting("SMSBOT_DAILY_SMS_BUDGET", "daily_sms_budget", whole_number, 500, minimum=1,
            doc="texts queued per UTC day to numbers that are not admins' (texts to admins never count); replies "
                "may use half of it, invites and PINs all of it; past it only texts to admins go out, and the admins "
                "are warned once"),
    Setting("SMSBOT_LOCKOUT_FAILURES", "lockout_failures", whole_number, 20, minimum=5,
            doc="wrong PINs in a row (across PINs) that lock a member until an admin INVITEs their number again"),
    Setting("SMSBOT_LOGIN_FAILURES_PER_MINUTE", "login_failures_per_minute", whole_number, 30, minimum=1,
            doc="failed sign-ins per client (an IPv4 address, or an IPv6 /64) in any minute, for all instances "
                "together; past it /login answers 429 with Retry-After. Forms that fail the CSRF check don't count"),
    Setting("SMSBOT_LOGIN_FAILURE_SECONDS", "login_failure_seconds", number, 1.0, minimum=0.25, unit="seconds",
            doc="every failed sign-in is answered this long after it arrived, whatever went wrong, so timing tells "
                "nothing (not even who is a member); a Verify check that takes longer fails the sign-in, and a right "
                "code it confirms later signs in on the next try"),
    Setting("SMSBOT_TRUSTED_PROXIES", "trusted_proxies", networks, (),
            doc="comma-separated proxy IPs or networks (e.g. `127.0.0.1`) whose X-Forwarded-For gives the client IP"),
    Setting("SMSBOT_VONAGE_TIMEOUT", "vonage_timeout", whole_number, 10, minimum=1, unit="second",
            doc="how long each Vonage API call may take"),
    Setting("SMSBOT_SHUTDOWN_TIMEOUT", "shutdown_timeout", number, 10.0, minimum=0.1, unit="seconds",
            doc="how long a stop (SIGTERM) may take: requests in flight finish, the outbox stops, the database closes"),
    Setting("SMSBOT_OIDC_CLIENTS", "oidc_clients", client_file, "",
            doc="path of a TOML file of OpenID Connect clients (see \"OpenID Connect provider\"); unset, no OIDC "
                "routes"),
    Setting("SMSBOT_LOG_LEVEL", "log_level", choice, "INFO", choices=LOG_LEVELS, doc="log level"),
    Setting("SMSBOT_LOG_FORMAT", "log_format", choice, "text", choices=LOG_FORMATS,
            doc="`text`: one readable line per event; `json`: one JSON object per line (time, level, logger, "
                "message, and fields such as event, message_id, the masked number, the instance)"),
    Setting("SMSBOT_METRICS_ADDRESS", "metrics_address", listen_address, "",
            doc="`host:port` of a second listener that serves Prometheus metrics at `GET /metrics` and nothing "
                "else; unset, there are no metrics"),
    Setting("VONAGE_APPLICATION_ID", "vonage_application_id", text, "", together="VONAGE_PRIVATE_KEY",
            doc="optional Vonage application id, for JWT auth (Verify v2, Messages API)"),
    Setting("VONAGE_PRIVATE_KEY", "vonage_private_key", text, "", secret=True,
            doc="the application's private key: PEM text (multi-line in quotes, or with `\\n` escapes) or a file path"),
    Setting("VONAGE_SIGNATURE_SECRET", "vonage_signature_secret", text, "", secret=True,
            doc="signature secret for signed inbound webhooks; unset, anyone who can reach them can post texts"),
    Setting("VONAGE_SIGNATURE_METHOD", "vonage_signature_method", choice, "sha256", choices=SIGNATURE_METHODS,
            doc="the account's webhook signature method"),
    Setting("VONAGE_API_HOST", "vonage_api_host", host_port, "",
            doc="`host[:port]` override for Vonage's API host (a regional endpoint, or a local emulator trusted "
                "through REQUESTS_CA_BUNDLE)"),
    Setting("VONAGE_REST_HOST", "vonage_rest_host", host_port, "", doc="`host[:port]` override for Vonage's REST host"),
)


@dataclass(frozen=True)
class Settings:
    """The validated configuration: one field per row of TABLE (the defaults live there), plus dev mode."""

    secret: str = field(repr=False)
    default_region: str
    admins: tuple[str, ...]  # E.164
    number: str  # digits, the sender of every SMS
    vonage_api_key: str
    vonage_api_secret: str = field(repr=False)
    db: str = field(repr=False)  # a PostgreSQL URL may hold a password
    public_url: str
    cookie_domain: str
    group_name: str
    confirm: tuple[str, ...]
    pin_via: str
    sms_rate: float
    invite_ttl_hours: float
    session_idle_days: float
    session_max_days: float
    pin_cap_hour: int
    pin_cap_day: int
    daily_sms_budget: int
    lockout_failures: int
    login_failures_per_minute: int
    login_failure_seconds: float
    trusted_proxies: tuple[str, ...]
    vonage_timeout: int
    shutdown_timeout: float
    oidc_clients: str
    log_level: str
    log_format: str
    metrics_address: str
    vonage_application_id: str
    vonage_private_key: str = field(repr=False)
    vonage_signature_secret: str = field(repr=False)
    vonage_signature_method: str
    vonage_api_host: str
    vonage_rest_host: str
    dev: bool

    @property
    def postgres_url(self) -> str | None:
        """The PostgreSQL URL when SMSBOT_DB is one, else None (a SQLite file)."""
        return self.db if "://" in self.db else None

    @property
    def db_path(self) -> pathlib.Path:
        """The SQLite file (meaningless for PostgreSQL)."""
        return pathlib.Path(self.db)

    @property
    def database(self) -> str:
        """SMSBOT_DB as logs may show it."""
        return masked_url(self.db)

    def secrets(self) -> tuple[str, ...]:
        """Every secret value these settings hold (the secret rows', SMSBOT_DB's password), longest first: no log
        line shows them. Values shorter than REDACT_FROM are left alone: masking them would garble every line."""
        found = {getattr(self, row.attr) for row in TABLE if row.secret} | set(url_secrets(self.db))
        return tuple(sorted((s for s in found if len(s) >= REDACT_FROM), key=len, reverse=True))

    @property
    def metrics_listen(self) -> tuple[str, int] | None:
        """SMSBOT_METRICS_ADDRESS as (host, port), or None when metrics are off."""
        if not self.metrics_address:
            return None
        host, _, port = self.metrics_address.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def https(self) -> bool:
        return self.public_url.startswith("https://")


def dotenv_file(cwd: pathlib.Path | None = None) -> pathlib.Path:
    return (cwd or pathlib.Path.cwd()) / ".env"


def dotenv(cwd: pathlib.Path | None = None) -> dict[str, str]:
    """The variables the .env file in the working directory sets (none when there is no such file)."""
    # No ${VAR} interpolation: a value means what it says, as the real environment's values do.
    values = dotenv_values(dotenv_file(cwd), interpolate=False)
    return {key: value for key, value in values.items() if value is not None}


def environment(environ: Mapping[str, str] | None = None, cwd: pathlib.Path | None = None) -> dict[str, str]:
    """The effective environment: the .env file in the working directory, overridden by the real environment."""
    merged = dotenv(cwd)
    merged.update(os.environ if environ is None else environ)
    return merged


def load(env: Mapping[str, str], *, dev: bool = False, checks: Iterable[Check] = ()) -> Settings:
    """Build and validate settings from the table, then run `checks` on them; raise SettingsError listing every
    problem found."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    for row in TABLE:
        raw = env.get(row.env, "")
        values[row.attr] = row.default
        if row.together and bool(raw.strip()) != bool(env.get(row.together, "").strip()):
            problems.append(f"{row.env} and {row.together} must be set together")
        if not raw.strip():
            if row.needed(dev):
                problems.append(f"{row.env} {row.missing}")
            continue
        try:
            values[row.attr] = row.parse(raw, row, values)
        except Invalid as exc:
            problems.extend(f"{row.env} {problem}" for problem in exc.problems)
    settings = Settings(**values, dev=dev)
    for check in checks:
        problems.extend(check(settings))
    if problems:
        raise SettingsError(problems)
    return settings


def load_database(env: Mapping[str, str]) -> str:
    """SMSBOT_DB alone, checked as `load` checks it (for `smsbot backup`, which needs no other setting)."""
    row = next(row for row in TABLE if row.env == "SMSBOT_DB")
    raw = env.get(row.env, "")
    if not raw.strip():
        return str(row.default)
    try:
        return str(row.parse(raw, row, {}))
    except Invalid as exc:
        raise SettingsError([f"{row.env} {problem}" for problem in exc.problems]) from None


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ", ".join(value)
    return str(value)


def listing(settings: Settings) -> list[tuple[str, str]]:
    """Each variable with its value as `smsbot check` shows it; secrets only as "set" or "not set"."""
    shown = []
    for row in TABLE:
        value = getattr(settings, row.attr)
        if row.secret:
            shown.append((row.env, "set" if value else "not set"))
            continue
        what = (row.show or _plain)(value) or "not set"
        shown.append((row.env, f"{what} (default)" if value == row.default and value else what))
    return shown


def markdown_table() -> str:
    """The README's configuration table, made from TABLE (a test keeps the README in step)."""
    lines = ["| variable | default | allowed | meaning |", "|---|---|---|---|"]
    for row in TABLE:
        if row.need is Need.OPTIONAL:
            default = f"`{_plain(row.default)}`" if row.default else "-"
        else:
            default = "(required)" if row.need is Need.ALWAYS else "(required, not in dev mode)"
        meaning = row.doc + (". Secret: shown only as set or not set" if row.secret else "")
        cells = [row.env, default, row.bounds(), meaning]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)
