"""The Vonage adapter: the official SDK (SMS API and Verify v2) behind the gateway protocol.

The Vonage SDK is synchronous and not thread-safe: every call runs on one dedicated thread, which alone creates
and uses the client. It has no default timeout, so one is always set.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import pathlib
import queue
import re
import threading
from collections.abc import Callable
from typing import Any

from .. import phone
from ..errors import SendError, VerifyConflict
from ..messages import is_gsm7
from ..settings import Settings
from .base import Check

log = logging.getLogger(__name__)

# SMS API status codes (HTTP 200 with an error in the body). 1 and 5 are worth retrying.
SMS_STATUS = {
    "1": "Throttled", "2": "Missing parameters", "3": "Invalid parameters", "4": "Invalid credentials",
    "5": "Internal error", "6": "Invalid message", "7": "Number barred", "8": "Partner account barred",
    "9": "Partner quota violation (no credit)", "10": "Too many existing binds", "11": "Account not enabled for HTTP",
    "12": "Message too long", "14": "Invalid signature", "15": "Invalid sender address",
    "22": "Invalid network code", "23": "Invalid callback URL", "29": "Non-whitelisted destination (demo account)",
    "32": "Signature and API secret disallowed", "33": "Number de-activated",
}
TRANSIENT_SMS_STATUS = {"1", "5"}


class SdkThread:
    """One daemon thread that runs every SDK call in turn. A daemon, unlike a thread pool's workers, so a call
    hung on the network cannot hold the process past its shutdown timeout."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...]]
                                       | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="vonage-sdk", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            future, function, args = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(function(*args))
            except BaseException as exc:  # handed to the awaiting coroutine
                future.set_exception(exc)

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._calls.put((future, function, args))
        return await asyncio.wrap_future(future)

    def stop(self) -> None:
        self._calls.put(None)


class VonageGateway:
    """The official Vonage SDK (SMS API and Verify v2), called off the event loop on a single thread of its own."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._sdk = SdkThread()
        self._clients: dict[str, Any] = {}
        self._thread: threading.Thread | None = None

    def _client(self, api: str) -> Any:
        """The clients belong to the gateway thread, created there on first use. SMS and Verify get a client
        each: the SDK keeps one header dict per client, and a Verify call's JSON Content-Type would leak into
        the next SMS form post (vonage-python-sdk issue 323).

        Each is the SDK's own API class (vonage_sms.Sms, vonage_verify.Verify) on an HTTP client of its own, as the
        `vonage.Vonage` facade builds them, but without importing the facade: it imports and builds every Vonage API
        (voice, video, numbers, ...), whose pydantic models cost the process about 10 MB more at its first text
        (82 MB after a flood of HELP, 72 MB without)."""
        from vonage_http_client import Auth, HttpClient, HttpClientOptions

        current = threading.current_thread()
        if self._thread is not None and self._thread is not current:
            raise RuntimeError("the Vonage client is used from a second thread")
        self._thread = current
        if api not in self._clients:
            s = self._settings
            # pool_maxsize=1 turns off the SDK's own loop that re-POSTs after a dropped connection, and
            # max_retries=0 its urllib3 retries: every request then passes our rate limiter, and retries follow
            # the outbox's backoff.
            options: dict[str, Any] = {"timeout": s.vonage_timeout, "pool_maxsize": 1, "max_retries": 0}
            if s.vonage_api_host:
                options["api_host"] = s.vonage_api_host
            if s.vonage_rest_host:
                options["rest_host"] = s.vonage_rest_host
            # The SMS API takes key/secret; only Verify uses the application's JWT, so a bad private key can't
            # stop the texts.
            jwt = {"application_id": s.vonage_application_id, "private_key": private_key(s.vonage_private_key)} \
                if api == "verify" and s.vonage_application_id else {}
            auth = Auth(api_key=s.vonage_api_key, api_secret=s.vonage_api_secret, **jwt)
            http = HttpClient(auth, HttpClientOptions(**options), sdk_version())
            if api == "sms":
                from vonage_sms import Sms

                self._clients[api] = Sms(http)
            else:
                from vonage_verify import Verify

                self._clients[api] = Verify(http)
        return self._clients[api]

    async def _call(self, function: Callable[..., Any], *args: Any) -> Any:
        return await self._sdk.call(function, *args)

    def _send_blocking(self, to: str, text: str, client_ref: str) -> str:
        from vonage_sms import SmsMessage

        message = SmsMessage(to=phone.msisdn(to), from_=self._settings.number, text=text,
                             type="text" if is_gsm7(text) else "unicode", client_ref=client_ref)
        return _message_id(self._client("sms").send(message))

    async def send_sms(self, to: str, text: str, client_ref: str) -> str:
        try:
            result: str = await self._call(self._send_blocking, to, text, client_ref)
        except SendError:
            raise
        except Exception as exc:  # the SDK and requests raise many types; classify them all here
            raise classify(exc) from exc
        return result

    def _start_blocking(self, to: str, brand: str, code_length: int, timeout: int) -> str:
        from vonage_verify import SmsChannel, VerifyRequest

        request = VerifyRequest(brand=brand[:16], workflow=[SmsChannel(to=phone.msisdn(to))],
                                code_length=code_length, channel_timeout=timeout)
        return str(self._client("verify").start_verification(request).request_id)

    async def start_verification(self, to: str, brand: str, code_length: int, timeout: int) -> str:
        try:
            result: str = await self._call(self._start_blocking, to, brand, code_length, timeout)
        except Exception as exc:
            status, body = _http_status(exc)
            if status == 409 and isinstance(body.get("request_id"), str):
                raise VerifyConflict(body["request_id"]) from exc
            if status in (400, 422):
                raise SendError(f"Verify refused the request (HTTP {status}): {body.get('detail', '')}",
                                transient=False, code=f"http-{status}") from exc
            raise classify(exc) from exc
        return result

    def _check_blocking(self, request_id: str, code: str) -> str:
        return str(self._client("verify").check_code(request_id, code).status)

    async def check_code(self, request_id: str, code: str) -> Check:
        try:
            status_text = await self._call(self._check_blocking, request_id, code)
        except Exception as exc:
            status, _ = _http_status(exc)
            answers = {400: Check.WRONG, 404: Check.GONE, 409: Check.DEAD, 410: Check.DEAD}
            if status in answers:
                return answers[status]
            raise classify(exc) from exc
        return Check.OK if status_text == "completed" else Check.WRONG

    def _cancel_blocking(self, request_id: str) -> None:
        self._client("verify").cancel_verification(request_id)

    async def cancel_verification(self, request_id: str) -> bool:
        try:
            await self._call(self._cancel_blocking, request_id)
        except Exception as exc:
            log.warning("could not cancel verification %s: %s", request_id, classify(exc))
            return False
        return True

    async def close(self) -> None:
        self._sdk.stop()


def private_key(value: str) -> str:
    """VONAGE_PRIVATE_KEY as the SDK wants it: PEM text (a .env file can only hold it with escaped newlines),
    or the contents of the file it names."""
    value = value.strip()
    if "-----BEGIN" in value:
        return value.replace("\\n", "\n")
    return pathlib.Path(value).read_text(encoding="utf-8")


def sdk_version() -> str:
    """The installed Vonage SDK's version, for its User-Agent, as the `vonage.Vonage` facade gives it."""
    import importlib.metadata  # at the first text, not at start-up: it costs about 7 ms to import

    return importlib.metadata.version("vonage")


def check_jwt_auth(application_id: str, key: str) -> str | None:
    """Why the SDK would refuse this application id and private key, or None if it accepts them."""
    from vonage_http_client import Auth

    try:
        Auth(application_id=application_id, private_key=private_key(key)).generate_application_jwt()
    except Exception as exc:  # the SDK raises several types for bad keys
        return f"{type(exc).__name__}: {str(exc)[:120]}"
    return None


def vonage_key_check(settings: Settings) -> list[str]:
    """The Vonage SDK must accept the application id and private key, when they are set."""
    if not (settings.vonage_application_id and settings.vonage_private_key):
        return []
    why = check_jwt_auth(settings.vonage_application_id, settings.vonage_private_key)
    return [f"VONAGE_PRIVATE_KEY is not a usable private key for VONAGE_APPLICATION_ID ({why})"] if why else []


def _http_status(exc: Exception) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body of an SDK HTTP error, or (0, {})."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", 0) or 0
    try:
        body = response.json() if response is not None and hasattr(response, "json") else {}
    except ValueError:
        body = {}
    return int(status), body if isinstance(body, dict) else {}


def _message_id(response: Any) -> str:
    messages = getattr(response, "messages", None) or []
    ids = [m.message_id for m in messages if getattr(m, "message_id", None)]
    return ",".join(ids) or "unknown"


_CODE_IN_MESSAGE = re.compile(r"error code (\d+)")


def classify(exc: Exception) -> SendError:
    """Turn whatever the SDK raised into a SendError that says whether to retry and what the code meant."""
    import requests
    from vonage_http_client import HttpRequestError
    from vonage_sms import PartialFailureError, SmsError

    if isinstance(exc, PartialFailureError):
        response = exc.response if isinstance(exc.response, dict) else {}
        statuses = [str(m.get("status", "")) for m in response.get("messages", [])]
        bad = [s for s in statuses if s != "0"] or ["5"]
        transient = all(s in TRANSIENT_SMS_STATUS for s in bad)
        return SendError(f"part of a long text failed: status {bad[0]} ({SMS_STATUS.get(bad[0], 'unknown')})",
                         transient=transient, code=bad[0])
    if isinstance(exc, SmsError):
        match = _CODE_IN_MESSAGE.search(str(exc))
        code = match.group(1) if match else ""
        return SendError(f"status {code} ({SMS_STATUS.get(code, 'unknown')})",
                         transient=code in TRANSIENT_SMS_STATUS, code=code)
    if isinstance(exc, HttpRequestError):
        status = getattr(getattr(exc, "response", None), "status_code", 0) or 0
        transient = status == 429 or status >= 500 or status in (401, 403)
        return SendError(f"HTTP {status} from Vonage", transient=transient, code=f"http-{status}")
    if isinstance(exc, requests.Timeout):
        return SendError("Vonage did not answer in time", transient=True, code="timeout")
    if isinstance(exc, requests.RequestException):
        return SendError(f"connection to Vonage failed: {type(exc).__name__}", transient=True, code="connection")
    return SendError(f"unexpected {type(exc).__name__} from the Vonage SDK", transient=True, code="error")
