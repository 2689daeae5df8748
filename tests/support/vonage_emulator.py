"""Local HTTPS emulator of the Vonage SMS API and Verify v2 API, for tests.

The real Vonage Python SDK (v4) can talk to it::

    with running_emulator() as emu:
        os.environ["REQUESTS_CA_BUNDLE"] = str(emu.ca_path)
        client = Vonage(Auth(emu.api_key, emu.api_secret),
                        HttpClientOptions(api_host=emu.host, rest_host=emu.host, timeout=5))

Endpoints: ``POST|GET /sms/json``, ``POST /v2/verify``, ``POST|DELETE /v2/verify/{id}``,
``POST /v2/verify/{id}/next_workflow``.  Faults can be queued with :meth:`VonageEmulator.inject`
or applied for a time window with :meth:`VonageEmulator.fail_for` (see :data:`FAULTS`); Verify code checks can be
given a latency (``check_latency``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import dataclasses
import json
import pathlib
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
import time
import urllib.parse
import uuid
import weakref
from collections.abc import Iterator
from typing import Any

import trustme
from aiohttp import web

__all__ = [
    "FAULTS",
    "RecordedRequest",
    "SentSms",
    "VonageEmulator",
    "running_emulator",
]

#: Fault names accepted by ``inject`` / ``fail_for``.
FAULTS = frozenset(
    {
        "http500",  # HTTP 500 + problem JSON (SDK: ServerError)
        "http503",  # HTTP 503 + problem JSON (SDK: HttpRequestError)
        "http429",  # HTTP 429 + problem JSON (SDK: RateLimitedError)
        "throttle",  # SMS: 200 + status "1" Throttled; Verify: as http429
        "internal",  # SMS: 200 + status "5" Internal Error; Verify: as http500
        "invalid",  # SMS: 200 + status "3" Invalid Parameters; Verify: HTTP 422
        "hang",  # wait ``hang_seconds`` (30 s) then answer normally
        "drop",  # close the connection without any HTTP response
        "accept_then_drop",  # process the request normally, then drop instead of answering
    }
)

SMS_PATH = "/sms/json"
VERIFY_PATH = "/v2/verify"
PROBLEM_JSON = "application/problem+json"
_DOCS = "https://developer.vonage.com/api-errors"


@dataclasses.dataclass(frozen=True)
class SentSms:
    """An SMS the emulator accepted (status "0")."""

    to: str
    from_: str
    text: str
    type: str
    client_ref: str | None
    message_id: str
    at: float


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request the emulator received (recorded before any fault is applied)."""

    method: str
    path: str
    at: float  # time.time() on arrival
    params: dict[str, str]  # query string merged with form fields (empty for JSON bodies)
    json: Any  # parsed JSON body, or None
    headers: dict[str, str]
    fault: str | None  # the fault applied to this request, if any


@dataclasses.dataclass
class _Verification:
    """Server-side state of one Verify v2 request."""

    request_id: str
    targets: frozenset[str]
    code: str
    workflow: list[dict[str, Any]]
    channel_timeout: float
    expires_at: float  # emulator clock
    step: int = 0
    wrong_attempts: int = 0
    state: str = "active"  # active | completed | cancelled | failed | expired


@dataclasses.dataclass(frozen=True)
class _Window:
    until: float
    fault: str
    path: str


class _Dropped(Exception):
    """Raised inside the emulator to close the connection without answering."""


def _path_matches(rule: str, path: str) -> bool:
    """A fault rule for ``/v2/verify`` also covers ``/v2/verify/<id>`` etc."""
    rule = rule.rstrip("/") or "/"
    return path == rule or path.startswith(rule.rstrip("/") + "/")


def _is_check(path: str) -> bool:
    """`/v2/verify/{id}`: a code check (when POSTed)."""
    rest = path[len(VERIFY_PATH):] if path.startswith(VERIFY_PATH + "/") else ""
    return bool(rest.strip("/")) and "/" not in rest.strip("/")


def _check_fault(fault: str) -> None:
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; expected one of {sorted(FAULTS)}")


class VonageEmulator:
    """An aiohttp HTTPS server mimicking the Vonage SMS and Verify v2 APIs.

    All state (``sent``, ``requests``, ``verify_codes``) may be read from other threads.
    """

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        api_secret: str = "test-secret-value",
        cert_dir: pathlib.Path | None = None,
    ) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.sent: list[SentSms] = []
        self.requests: list[RecordedRequest] = []
        self.verify_codes: dict[str, str] = {}
        self.host: str = ""
        self.port: int = 0
        #: how long the "hang" fault waits before answering (stop() interrupts it)
        self.hang_seconds: float = 30.0
        #: wrong codes allowed per verification; the last one gets HTTP 410
        self.max_code_attempts: int = 3
        #: how long each Verify code check takes before it answers (a real one crosses the Internet)
        self.check_latency: float = 0.0

        self._lock = threading.Lock()
        self._queued: dict[str, collections.deque[str]] = {}
        self._windows: list[_Window] = []
        self._verifications: dict[str, _Verification] = {}
        self._clock_offset = 0.0
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None

        if cert_dir is None:
            cert_dir = pathlib.Path(tempfile.mkdtemp(prefix="vonage-emu-"))
            weakref.finalize(self, shutil.rmtree, str(cert_dir), ignore_errors=True)
        cert_dir = pathlib.Path(cert_dir)
        cert_dir.mkdir(parents=True, exist_ok=True)
        self._ca = trustme.CA()
        self._server_cert = self._ca.issue_cert("127.0.0.1", "localhost", "::1")
        self.ca_path: pathlib.Path = cert_dir / "vonage-emulator-ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_path))

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen on 127.0.0.1 on a free port with TLS; sets ``host``."""
        if self._runner is not None:
            raise RuntimeError("emulator already started")
        self._stopping = asyncio.Event()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_cert.configure_cert(ctx)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(runner, sock, ssl_context=ctx)
        await site.start()
        self._runner = runner
        self.port = sock.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """Stop serving; hanging requests are dropped at once."""
        if self._runner is None:
            return
        assert self._stopping is not None
        self._stopping.set()
        runner, self._runner = self._runner, None
        await runner.cleanup()

    # ------------------------------------------------------------------ test controls

    def inject(self, *faults: str, path: str = SMS_PATH) -> None:
        """Queue faults for the next requests on ``path`` (one per request, FIFO).

        ``path`` also covers sub-paths (``/v2/verify`` matches ``/v2/verify/<id>``);
        when several queues match, the most specific non-empty one is used.
        Queued faults take precedence over ``fail_for`` windows.
        """
        for fault in faults:
            _check_fault(fault)
        with self._lock:
            self._queued.setdefault(path, collections.deque()).extend(faults)

    def fail_for(self, seconds: float, fault: str, path: str = SMS_PATH) -> None:
        """Apply ``fault`` to every request on ``path`` during the next ``seconds``."""
        _check_fault(fault)
        with self._lock:
            self._windows.append(_Window(self._now() + seconds, fault, path))

    def clear_faults(self) -> None:
        """Forget queued faults and fault windows."""
        with self._lock:
            self._queued.clear()
            self._windows.clear()

    def advance_time(self, seconds: float) -> None:
        """Move the emulator clock forward (Verify expiry and ``fail_for`` windows)."""
        with self._lock:
            self._clock_offset += seconds

    def http_client_options(self, timeout: int | None = 5) -> dict[str, Any]:
        """Options for ``vonage.Vonage(..., http_client_options=...)`` pointing here."""
        return {"api_host": self.host, "rest_host": self.host, "timeout": timeout}

    # ------------------------------------------------------------------ internals

    def _now(self) -> float:
        return time.monotonic() + self._clock_offset

    def _take_fault(self, path: str) -> str | None:
        with self._lock:
            keys = [k for k, q in self._queued.items() if q and _path_matches(k, path)]
            if keys:
                return self._queued[max(keys, key=len)].popleft()
            now = self._now()
            self._windows = [w for w in self._windows if w.until > now]
            for window in reversed(self._windows):
                if _path_matches(window.path, path):
                    return window.fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        """Single entry point: record, apply the fault, route."""
        raw = await request.read()
        params: dict[str, str] = dict(request.query)
        body_json: Any = None
        text = raw.decode("utf-8", errors="replace")
        if text.strip():
            # The SDK may label a form body as JSON (leaked Content-Type header, facts 1.2),
            # so decide by content rather than by header.
            try:
                body_json = json.loads(text)
            except ValueError:
                params.update(urllib.parse.parse_qsl(text, keep_blank_values=True))
        fault = self._take_fault(request.path)
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                at=time.time(),
                params=params,
                json=body_json,
                headers=dict(request.headers),
                fault=fault,
            )
        )
        try:
            return await self._respond(request, params, body_json, fault)
        except _Dropped:
            transport = request.transport
            if transport is not None:
                transport.close()
            # aiohttp fails to write this to the closed transport and moves on quietly.
            return web.Response(status=204)

    async def _respond(
        self, request: web.Request, params: dict[str, str], body: Any, fault: str | None
    ) -> web.Response:
        is_sms = request.path == SMS_PATH
        if fault == "drop":
            raise _Dropped
        if fault == "hang":
            assert self._stopping is not None
            try:
                await asyncio.wait_for(self._stopping.wait(), self.hang_seconds)
            except TimeoutError:
                pass
            else:
                raise _Dropped  # emulator is stopping
        if fault in ("http500", "http503", "http429"):
            return _http_fault(int(fault[4:]))
        if not is_sms and fault in ("throttle", "internal", "invalid"):
            return _http_fault({"throttle": 429, "internal": 500, "invalid": 422}[fault])
        if is_sms and fault == "throttle":
            return _sms_error("1", "Throttled")
        if is_sms and fault == "internal":
            return _sms_error("5", "Internal Error")
        if is_sms and fault == "invalid":
            return _sms_error("3", "Invalid Parameters")

        if self.check_latency and request.method == "POST" and _is_check(request.path):
            await asyncio.sleep(self.check_latency)
        response = self._route(request, params, body)
        if fault == "accept_then_drop":
            raise _Dropped  # the work above (e.g. a recorded SMS) stays done
        return response

    def _route(self, request: web.Request, params: dict[str, str], body: Any) -> web.Response:
        path, method = request.path, request.method
        if path == SMS_PATH and method in ("POST", "GET"):
            if isinstance(body, dict):  # a JSON body: treat its fields like form fields
                params = {**params, **{k: str(v) for k, v in body.items()}}
            return self._send_sms(request, params)
        if path.startswith(VERIFY_PATH):
            if not self._verify_authorized(request):
                return _problem(401, "Unauthorized", "You did not provide correct credentials.")
            parts = path[len(VERIFY_PATH) :].strip("/").split("/")
            if parts == [""] and method == "POST":
                return self._verify_start(body)
            if len(parts) == 1 and method == "POST":
                return self._verify_check(parts[0], body)
            if len(parts) == 1 and method == "DELETE":
                return self._verify_cancel(parts[0])
            if len(parts) == 2 and parts[1] == "next_workflow" and method == "POST":
                return self._verify_next(parts[0])
        return _problem(404, "Not Found", f"No emulated endpoint for {method} {path}.")

    # ------------------------------------------------------------------ SMS API

    def _basic_credentials(self, request: web.Request) -> tuple[str, str] | None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ("", "")
        key, _, secret = decoded.partition(":")
        return key, secret

    def _credentials_ok(self, key: str, secret: str) -> bool:
        return secrets.compare_digest(key, self.api_key) and secrets.compare_digest(secret, self.api_secret)

    def _send_sms(self, request: web.Request, params: dict[str, str]) -> web.Response:
        creds = self._basic_credentials(request)
        if creds is None and "api_key" in params and "api_secret" in params:
            creds = (params["api_key"], params["api_secret"])
        if creds is None:
            if "sig" in params:
                # Signed requests are not verified by the emulator (see facts 1.3).
                return _sms_error("14", "Invalid Signature")
            return _sms_error("2", "Missing api_key")
        if not self._credentials_ok(*creds):
            return _sms_error("4", "Bad Credentials")
        for field in ("from", "to", "text"):
            if not params.get(field):
                return _sms_error("2", f"Missing {field} param")
        message_id = secrets.token_hex(8).upper()
        client_ref = params.get("client-ref") or None
        self.sent.append(
            SentSms(
                to=params["to"],
                from_=params["from"],
                text=params["text"],
                type=params.get("type") or "text",
                client_ref=client_ref,
                message_id=message_id,
                at=time.time(),
            )
        )
        message: dict[str, str] = {
            "to": params["to"],
            "message-id": message_id,
            "status": "0",
            "remaining-balance": "10.0",
            "message-price": "0.05",
            "network": "12345",
        }
        if client_ref is not None:
            message["client-ref"] = client_ref
        return web.json_response({"message-count": "1", "messages": [message]})

    # ------------------------------------------------------------------ Verify v2

    def _verify_authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.strip():
            return False
        creds = self._basic_credentials(request)
        return creds is None or self._credentials_ok(*creds)  # Bearer JWTs are not checked

    def _active(self, request_id: str) -> _Verification | None:
        ver = self._verifications.get(request_id)
        if ver is None or ver.state != "active":
            return None
        if self._now() >= ver.expires_at:
            ver.state = "expired"
            return None
        return ver

    def _verify_start(self, body: Any) -> web.Response:
        invalid: list[dict[str, str]] = []
        if not isinstance(body, dict):
            return _invalid([{"name": "body", "reason": "must be a JSON object"}])
        brand = body.get("brand")
        if not isinstance(brand, str) or not 1 <= len(brand) <= 16:
            invalid.append({"name": "brand", "reason": "must be 1-16 characters"})
        workflow = body.get("workflow")
        targets: set[str] = set()
        steps: list[dict[str, Any]] = []
        if not isinstance(workflow, list) or not workflow:
            invalid.append({"name": "workflow", "reason": "must be a non-empty list"})
        else:
            for i, step in enumerate(workflow):
                if not isinstance(step, dict) or not step.get("channel") or not step.get("to"):
                    invalid.append({"name": f"workflow[{i}]", "reason": "needs channel and to"})
                else:
                    steps.append(step)
                    targets.add(str(step["to"]))
        code_length = body.get("code_length", 4)
        if not isinstance(code_length, int) or not 4 <= code_length <= 10:
            invalid.append({"name": "code_length", "reason": "must be 4-10"})
        channel_timeout = body.get("channel_timeout", 300)
        if not isinstance(channel_timeout, (int, float)) or not 15 <= channel_timeout <= 900:
            invalid.append({"name": "channel_timeout", "reason": "must be 15-900"})
        custom_code = body.get("code")
        if custom_code is not None and (
            not isinstance(custom_code, str) or not custom_code.isalnum() or not 4 <= len(custom_code) <= 10
        ):
            invalid.append({"name": "code", "reason": "must be 4-10 alphanumerics"})
        if invalid:
            return _invalid(invalid)

        for ver in list(self._verifications.values()):
            if ver.targets & targets and self._active(ver.request_id) is not None:
                return _problem(
                    409,
                    "Conflict",
                    "Concurrent verifications to the same number are not allowed",
                    type_="conflict",
                    request_id=ver.request_id,
                )
        request_id = str(uuid.uuid4())
        code = custom_code or "".join(secrets.choice("0123456789") for _ in range(code_length))
        self._verifications[request_id] = _Verification(
            request_id=request_id,
            targets=frozenset(targets),
            code=code,
            workflow=steps,
            channel_timeout=float(channel_timeout),
            expires_at=self._now() + float(channel_timeout),
        )
        self.verify_codes[request_id] = code
        return web.json_response({"request_id": request_id}, status=202)

    def _verify_check(self, request_id: str, body: Any) -> web.Response:
        ver = self._active(request_id)
        if ver is None:
            return _not_found(request_id)
        code = body.get("code") if isinstance(body, dict) else None
        if not isinstance(code, str) or not code:
            return _invalid([{"name": "code", "reason": "is required"}])
        if secrets.compare_digest(code, ver.code):
            ver.state = "completed"
            return web.json_response({"request_id": request_id, "status": "completed"})
        ver.wrong_attempts += 1
        if ver.wrong_attempts >= self.max_code_attempts:
            ver.state = "failed"
            return _problem(
                410,
                "Invalid Code",
                "An incorrect code has been provided too many times. Workflow terminated.",
                type_="gone",
            )
        return _problem(
            400,
            "Invalid Code",
            "The code you provided does not match the expected value.",
            type_="invalid-code",
        )

    def _verify_cancel(self, request_id: str) -> web.Response:
        ver = self._active(request_id)
        if ver is None:
            return _not_found(request_id)
        ver.state = "cancelled"
        return web.Response(status=204)

    def _verify_next(self, request_id: str) -> web.Response:
        ver = self._active(request_id)
        if ver is None:
            return _not_found(request_id)
        if ver.step + 1 >= len(ver.workflow):
            return _problem(409, "Conflict", "There are no more events left to trigger.")
        ver.step += 1
        ver.expires_at = self._now() + ver.channel_timeout
        return web.Response(status=200)


# ---------------------------------------------------------------------- response helpers


def _sms_error(status: str, text: str) -> web.Response:
    """SMS API error: HTTP 200 with a non-zero status in the body."""
    return web.json_response({"message-count": "1", "messages": [{"status": status, "error-text": text}]})


def _problem(status: int, title: str, detail: str, *, type_: str | None = None, **extra: Any) -> web.Response:
    """RFC 7807 problem response, as the Vonage REST APIs send them."""
    body = {
        "type": f"{_DOCS}#{type_ or status}",
        "title": title,
        "detail": detail,
        "instance": str(uuid.uuid4()),
        **extra,
    }
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM_JSON)


def _not_found(request_id: str) -> web.Response:
    return _problem(
        404,
        "Not Found",
        f"Request '{request_id}' was not found or it has been verified already.",
        type_="not-found",
    )


def _invalid(params: list[dict[str, str]]) -> web.Response:
    return _problem(
        422,
        "Invalid params",
        "The value of one or more parameters is invalid.",
        type_="invalid-params",
        invalid_parameters=params,
    )


def _http_fault(status: int) -> web.Response:
    if status == 429:
        resp = _problem(429, "Rate Limit Hit", "Please wait, then retry your request", type_="rate-limit")
        resp.headers["Retry-After"] = "1"
        return resp
    if status == 503:
        return _problem(503, "Service Unavailable", "The service is temporarily unavailable.")
    if status == 422:
        return _invalid([{"name": "emulator", "reason": "injected fault"}])
    return _problem(500, "Internal Server Error", "Something went wrong.", type_="internal-error")


# ---------------------------------------------------------------------- thread runner


@contextlib.contextmanager
def running_emulator(**kwargs: Any) -> Iterator[VonageEmulator]:
    """Run a :class:`VonageEmulator` on its own event loop in a background thread."""
    emu = VonageEmulator(**kwargs)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="vonage-emulator", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(emu.start(), loop).result(timeout=10)
        yield emu
    finally:
        try:
            asyncio.run_coroutine_threadsafe(emu.stop(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            if not thread.is_alive():
                loop.close()
