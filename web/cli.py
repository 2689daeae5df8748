"""The `smsbot` command: `serve` for production, `dev` for the offline playground."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import pathlib
import secrets
import sys
from collections.abc import Sequence

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from smsbot import __version__, logs, phone
from smsbot.errors import SettingsError
from smsbot.gateway.vonage import vonage_key_check
from smsbot.oidc import KEY_OVERLAP
from smsbot.settings import Check, Settings, environment, listing, load

log = logging.getLogger("smsbot")
DEV_ADMIN = "+14155550100"
DEV_SECRET_FILE = "smsbot-dev.secret"  # noqa: S105 (a file name)


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Access log without query strings: a GET webhook carries numbers and codes in its query."""

    @property
    def enabled(self) -> bool:
        """Only when INFO lines are kept: forward auth is answered thousands of times a second."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %d %.1fms", request.remote, request.method, request.path, response.status,
                         time * 1000)


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


def start_logging(settings: Settings) -> None:
    logs.configure(settings.log_level)
    dotenv = pathlib.Path.cwd() / ".env"
    log.debug("settings read from the environment%s", f" over {dotenv}" if dotenv.is_file() else " (no .env file)")


def run(settings: Settings, host: str, port: int) -> None:
    from .app import create_app

    # SMSBOT_SHUTDOWN_TIMEOUT bounds the whole stop: requests in flight get most of it, the outbox worker a
    # little, and closing the database the rest.
    drain = max(0.5, settings.shutdown_timeout - 1.5)
    app = create_app(settings)
    # Everything made so far (modules, the SDK, the app) lives as long as the process: keep it out of the garbage
    # collector's scans, which otherwise walk it again and again under load.
    gc.freeze()
    web.run_app(app, host=host, port=port, shutdown_timeout=drain,
                access_log_class=PathOnlyAccessLogger, print=None)


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
    oidc = sub.add_parser("oidc", help="the OpenID Connect provider's keys")
    oidc.add_subparsers(dest="oidc_command", required=True).add_parser(
        "rotate-key", help="sign with a new key from now on; the old one stays published until its tokens expire")
    args = parser.parse_args(argv)
    env = environment()  # the real environment over .env, for logging as for everything else

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
        from .oidc import rotate_key

        print(f"signing with new key {asyncio.run(rotate_key(settings))}; the old one stays published for "
              f"{KEY_OVERLAP} s")
        raise SystemExit(0)
    if args.command == "serve":
        settings = _settings_or_exit(env, dev=False, checks=SERVE_CHECKS)
        start_logging(settings)
        if not settings.vonage_signature_secret:
            log.warning("VONAGE_SIGNATURE_SECRET is not set: anyone who can reach /webhooks/inbound can post texts "
                        "as any number. Enable signed webhooks in Vonage and set it.")
        log.info("smsbot serving on http://%s:%d (public URL %s, %d admin(s), PIN via %s)", args.host, args.port,
                 settings.public_url, len(settings.admins), settings.pin_via)
        run(settings, args.host, args.port)
    else:
        settings = _settings_or_exit(dev_environment(env, args.port), dev=True)
        start_logging(settings)
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
