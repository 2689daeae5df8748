"""The `smsbot` command: `serve` for production, `dev` for the offline playground, `backup` for a copy."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import pathlib
import secrets
import signal
import socket
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import BaseRequest, StreamResponse

from smsbot import __version__, logs, phone
from smsbot.errors import BackupError, DatabaseInUse, DatabaseUnavailable, SettingsError
from smsbot.gateway.vonage import vonage_key_check
from smsbot.settings import Check, Settings, dotenv, dotenv_file, environment, listing, load, load_database
from smsbot.store.backup import backup

log = logging.getLogger("smsbot")
DEV_ADMIN = "+14155550100"
DEV_SECRET_FILE = "smsbot-dev.secret"  # noqa: S105 (a file name)
DEV_IGNORED = ("SMSBOT_DB", "SMSBOT_SECRET")  # and every VONAGE_ variable, when they come from .env
DEV_IGNORED_PREFIX = "VONAGE_"
LAME_DUCK = 0.5  # seconds a stopping server answers on the connections it has, each answer closing its connection


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Access log without query strings: a GET webhook carries numbers and codes in its query."""

    @property
    def enabled(self) -> bool:
        """Only when INFO lines are kept: forward auth is answered thousands of times a second."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %d %.1fms", request.remote, request.method, request.path, response.status,
                         time * 1000)


class UnquotedParseErrors(logging.Filter):
    """aiohttp logs a request it can't parse with its parser's error, which quotes the bad request line or header
    (a GET webhook's numbers and signature, a sign-in link's rd): keep the line and the error's name, drop the
    quote and the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.msg = f"{record.getMessage()}: HTTP {error.code} {type(error).__name__} (the request is not logged)"
            record.args = record.exc_info = record.exc_text = None
        return True


def dev_ignored(from_dotenv: Iterable[str], real: Mapping[str, str]) -> list[str]:
    """The variables dev mode takes from .env only when the real environment sets them: a `.env` written for
    production must not point the playground at the real database, its secret or the real provider."""
    return sorted(name for name in from_dotenv
                  if name not in real and (name in DEV_IGNORED or name.startswith(DEV_IGNORED_PREFIX)))


def dev_environment(env: dict[str, str], port: int) -> dict[str, str]:
    """Fill in what dev mode needs so it runs with no account and no configuration."""
    env = dict(env)
    env.setdefault("SMSBOT_DB", "smsbot-dev.db")
    env.setdefault("SMSBOT_ADMINS", DEV_ADMIN)
    env.setdefault("SMSBOT_NUMBER", "14155550199")
    env.setdefault("SMSBOT_GROUP_NAME", "Dev Group")
    env.setdefault("SMSBOT_PUBLIC_URL", f"http://127.0.0.1:{port}")
    if not env.get("SMSBOT_SECRET"):
        folder = pathlib.Path(env["SMSBOT_DB"]).resolve().parent if "://" not in env["SMSBOT_DB"] else pathlib.Path()
        secret_file = folder / DEV_SECRET_FILE
        if not secret_file.exists():
            secret_file.write_text(secrets.token_urlsafe(32) + "\n", encoding="utf-8")
            secret_file.chmod(0o600)
        env["SMSBOT_SECRET"] = secret_file.read_text(encoding="utf-8").strip()
    return env


SERVE_CHECKS: tuple[Check, ...] = (vonage_key_check,)


def _settings_or_exit(env: dict[str, str], dev: bool, checks: tuple[Check, ...] = ()) -> Settings:
    try:
        return load(env, dev=dev, checks=checks)
    except SettingsError as exc:
        print("smsbot cannot start; fix these settings (environment or .env):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def describe(settings: Settings) -> str:
    """What `serve` will do with these settings, for `smsbot check`."""
    pin = ("Vonage Verify v2 makes and texts each PIN (brand "
           f"{settings.group_name[:16]!r}); you pay per verification" if settings.pin_via == "verify"
           else "smsbot makes each PIN and texts it through the SMS API; you pay per text")
    if settings.vonage_signature_secret:
        signing = (f"on: SMS API webhooks need a valid {settings.vonage_signature_method} sig, "
                   "Messages API webhooks an HS256 JWT")
    else:
        signing = "OFF: anyone who can reach the webhook URLs can post texts as any number"
    cookies = "Secure __Host- cookies, HSTS" if settings.https else "NOT Secure (the public URL is http)"
    auth = "key/secret" + (" + JWT (application id)" if settings.vonage_application_id else "")
    lines = [
        "smsbot configuration is valid.",
        f"  Group:            {settings.group_name}",
        f"  Vonage number:    {settings.number} (sender of every text), {auth} auth",
        f"  Admins:           {', '.join(phone.mask(a) for a in settings.admins)}",
        f"  Database:         {settings.database}",
        f"  PINs:             {pin}",
        f"  Signed webhooks:  {signing}",
        f"  Send rate:        at most {settings.sms_rate:g} SMS API requests per second",
        f"  Sessions:         signed out after {settings.session_idle_days:g} idle days, "
        f"{settings.session_max_days:g} days at most",
        f"  Cookies:          {cookies}",
        "Paste these into the Vonage dashboard (API settings, or the number's settings):",
        f"  Inbound SMS webhook:       {settings.public_url}/webhooks/inbound",
        f"  Delivery receipt webhook:  {settings.public_url}/webhooks/status",
        f"  Forward auth for proxies:  {settings.public_url}/auth",
    ]
    if settings.vonage_api_host or settings.vonage_rest_host:
        lines.append(f"  Vonage hosts:     api {settings.vonage_api_host or 'default'}, "
                     f"rest {settings.vonage_rest_host or 'default'}")
    shown = listing(settings)
    width = max(len(name) for name, _ in shown)
    lines.append("Every setting (secrets only as set or not set):")
    lines.extend(f"  {name.ljust(width)}  {value}" for name, value in shown)
    return "\n".join(lines)


def start_logging(settings: Settings, port: int | None = None) -> None:
    """Logging as the settings ask; a server's JSON lines name it by host and port."""
    instance = f"{socket.gethostname()}:{port}" if port is not None else ""
    logs.configure(settings.log_level, settings.log_format, instance, settings.secrets())
    logging.getLogger("aiohttp.server").addFilter(UnquotedParseErrors())
    read = dotenv_file()
    log.debug("settings read from the environment%s", f" over {read}" if read.is_file() else " (no .env file)")


def event_loop() -> tuple[Callable[[], asyncio.AbstractEventLoop], str]:
    """The event loop a server runs on, and its name: uvloop's (libuv's, written in Cython), where it is installed,
    as it is wherever pyproject.toml puts it (not on Windows). Under it aiohttp's request handling and asyncpg's round
    trips take about a quarter fewer instructions (bench/instructions.py); asyncio's own loop is the fallback."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop, "asyncio"
    return uvloop.new_event_loop, f"uvloop {getattr(uvloop, '__version__', '')}".strip()


def run(settings: Settings, host: str, port: int) -> None:
    from .app import create_app

    # SMSBOT_SHUTDOWN_TIMEOUT bounds the whole stop: the lame duck's half second, then requests in flight get most
    # of it, the outbox worker a little (WORKER_GRACE), and closing the database the rest.
    drain = max(0.5, settings.shutdown_timeout - 1.5 - LAME_DUCK)
    app = create_app(settings)
    # Everything made so far (modules, the SDK, the app) lives as long as the process: keep it out of the garbage
    # collector's scans, which otherwise walk it again and again under load.
    gc.freeze()
    new_loop, name = event_loop()
    log.info("event loop: %s", name)
    try:
        with asyncio.Runner(loop_factory=new_loop) as runner:
            runner.run(serve(app, host, port, drain))
    except DatabaseInUse as exc:  # raised at start-up, before the port is bound or the database touched
        print(f"smsbot cannot start: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except DatabaseUnavailable as exc:
        log.error("smsbot cannot start: %s", exc)
        raise SystemExit(1) from None


def back_up(env: dict[str, str], target: pathlib.Path) -> None:
    """`smsbot backup FILE`: copy the SQLite database SMSBOT_DB names and say what the copy holds."""
    try:
        database = load_database(env)
    except SettingsError as exc:
        print(f"smsbot backup: {'; '.join(exc.problems)}", file=sys.stderr)
        raise SystemExit(2) from None
    if "://" in database:
        print("smsbot backup copies a SQLite database, and SMSBOT_DB is a PostgreSQL URL: back it up with pg_dump "
              "(pg_dump --format=custom --file=smsbot.dump <URL>) and restore it with pg_restore", file=sys.stderr)
        raise SystemExit(1)
    try:
        report = backup(pathlib.Path(database), target)
    except BackupError as exc:
        print(f"smsbot backup: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    counts = ", ".join(f"{table} {count}" for table, count in report.counts.items())
    print(f"smsbot backup: copied {database} to {target} in {report.seconds:.2f} s\n"
          f"  {report.pages} pages of {report.page_size} bytes, {report.size / 1e6:.1f} MB ({report.size} bytes), "
          f"schema version {report.schema_version}, integrity check ok\n"
          f"  {counts}")


async def serve(app: web.Application, host: str, port: int, drain: float) -> None:
    """Serve until SIGTERM (or SIGINT), then stop without dropping a request. New connections are refused at once,
    so a load balancer sends them elsewhere; those the kernel had already completed are taken and served. For
    LAME_DUCK seconds the open connections are still served, each answer closing its connection: a proxy's
    keep-alive connection learns it is done instead of being closed under a request it just sent. Then idle
    connections close, requests in flight finish within `drain`, and the clean-up contexts run. The outbox stops at
    the signal, so the sender's role is handed over meanwhile."""
    from .appkeys import OUTBOX, STOPPING

    stopping = app[STOPPING]  # each answer closes its connection once it is set
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):  # a signal during start-up stops the server once it has started
        loop.add_signal_handler(signum, stopping.set)
    runner = web.AppRunner(app, access_log_class=PathOnlyAccessLogger, shutdown_timeout=drain)
    await runner.setup()
    server = runner.server
    assert server is not None  # made by setup()
    try:
        # Bound once started up: until then a connection is refused (a load balancer tries another), not kept waiting.
        with socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                  backlog=128) as listener:
            site = web.SockSite(runner, listener)
            await site.start()
            log.info("smsbot serving on http://%s:%d", host, port)  # started up and bound: not before
            await stopping.wait()
            log.info("stopping: no new connections; requests in flight finish")
            app[OUTBOX].stop()
            waiting = _accept_waiting(listener)
            await site.stop()  # closing the socket resets the connections still in its queue: none are left
        for conn in waiting:
            await loop.connect_accepted_socket(server, conn)
        await asyncio.sleep(LAME_DUCK)
    finally:
        await runner.cleanup()


def _accept_waiting(listener: socket.socket) -> list[socket.socket]:
    """The connections in the listening socket's queue, accepted."""
    taken: list[socket.socket] = []
    while True:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return taken
        conn.setblocking(False)
        taken.append(conn)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="smsbot", description=__doc__)
    parser.add_argument("--version", action="version", version=f"smsbot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the service against Vonage")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    sub.add_parser("check", help="validate the configuration and say what serve will do (exit 0 or 1)")
    dev = sub.add_parser("dev", help="run offline with a fake SMS provider and the dev phone page")
    dev.add_argument("--port", type=int, default=8080)
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--db", help="SQLite file or PostgreSQL URL (default: SMSBOT_DB from the real environment, "
                                  "else smsbot-dev.db; never SMSBOT_DB from .env)")
    copy = sub.add_parser("backup", help="copy the SQLite database, also while serve runs (PostgreSQL: pg_dump)")
    copy.add_argument("file", type=pathlib.Path, help="a new file for the copy (an existing one is never replaced)")
    oidc = sub.add_parser("oidc", help="the OpenID Connect provider's keys")
    oidc.add_subparsers(dest="oidc_command", required=True).add_parser(
        "rotate-key", help="sign with a new key from now on; the old one stays published until its tokens expire")
    args = parser.parse_args(argv)
    env = environment()  # the real environment over .env, for logging as for everything else

    if args.command == "backup":
        back_up(env, args.file)
        raise SystemExit(0)

    if args.command == "check":
        try:
            checked = load(env, dev=False, checks=SERVE_CHECKS)
        except SettingsError as exc:
            print("smsbot configuration has problems:", file=sys.stderr)
            for problem in exc.problems:
                print(f"  - {problem}", file=sys.stderr)
            raise SystemExit(1) from None
        start_logging(checked)
        print(describe(checked))
        raise SystemExit(0)
    if args.command == "oidc":
        settings = _settings_or_exit(env, dev=False)
        if not settings.oidc_clients:
            print("SMSBOT_OIDC_CLIENTS is not set: there is no OpenID Connect provider to rotate keys for.",
                  file=sys.stderr)
            raise SystemExit(1)
        from smsbot.oidc import KEY_OVERLAP

        from .oidc import rotate_key

        print(f"signing with new key {asyncio.run(rotate_key(settings))}; the old one stays published for "
              f"{KEY_OVERLAP} s")
        raise SystemExit(0)
    if args.command == "serve":
        settings = _settings_or_exit(env, dev=False, checks=SERVE_CHECKS)
        start_logging(settings, args.port)
        if not settings.vonage_signature_secret:
            log.warning("VONAGE_SIGNATURE_SECRET is not set: anyone who can reach /webhooks/inbound can post texts "
                        "as any number. Enable signed webhooks in Vonage and set it.")
        log.info("smsbot starting (public URL %s, %d admin(s), PIN via %s)", settings.public_url,
                 len(settings.admins), settings.pin_via)
        run(settings, args.host, args.port)
    else:
        ignored = dev_ignored(dotenv(), os.environ)
        env = {name: value for name, value in env.items() if name not in ignored}
        if args.db:
            env["SMSBOT_DB"] = args.db
        settings = _settings_or_exit(dev_environment(env, args.port), dev=True)
        start_logging(settings, args.port)
        if ignored:
            log.warning("smsbot dev: ignoring %s from %s: dev mode keeps its own database and secret and sends "
                        "through its fake provider only (set them in the environment, or use --db)",
                        ", ".join(ignored), dotenv_file())
        shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host  # noqa: S104 (only printed)
        base = f"http://{shown_host}:{args.port}"
        print(f"""
smsbot dev: a fake SMS provider, nothing leaves this machine. Database: {settings.database}
  Dev phones:  {base}/dev/phone     (the admin is {', '.join(settings.admins)}; invitees appear when invited)
  Sign in:     {base}/login
  Try it:      on the admin's phone text  INVITE +1 415 555 0134 alice  then the YES <code> it asks for
Press Ctrl+C to stop.
""", flush=True)
        log.info("dev admin %s", ", ".join(phone.mask(a) for a in settings.admins))
        run(settings, args.host, args.port)
