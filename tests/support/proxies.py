"""nginx and Caddy as the README's deploy files configure them (deploy/nginx.conf, deploy/nginx-instances.conf,
deploy/Caddyfile): a deploy file with its ports put in place, the full configuration around it for a test run
(temporary paths, no admin API), and the proxy run in the foreground."""

from __future__ import annotations

import contextlib
import grp
import os
import pathlib
import pwd
import signal
import subprocess
from collections.abc import Callable
from typing import BinaryIO

import requests

from .procs import clean_env, wait_for

DEPLOY = pathlib.Path(__file__).resolve().parent.parent.parent / "deploy"
BINARIES = {"nginx": "/usr/sbin/nginx", "caddy": "/usr/bin/caddy"}
# The ports (and Caddy's site address) as the deploy files write them; the tests put theirs in their place.
SMSBOT_AT = "127.0.0.1:8080"
TOOL_AT = "127.0.0.1:3000"
START_TIMEOUT = 15.0


def client(headers: dict[str, str]) -> requests.Session:
    """A session that sends `headers` and ignores the environment's proxy settings."""
    session = requests.Session()
    session.trust_env = False
    session.headers.update(headers)
    return session


def deploy_file(name: str, replacements: dict[str, str]) -> str:
    """A deploy file with the given strings replaced; each must be there, or the file no longer has the shape the
    tests (and the README's instructions) expect."""
    text = (DEPLOY / name).read_text(encoding="utf-8")
    for old, new in replacements.items():
        assert old in text, f"deploy/{name} no longer contains {old!r}"
        text = text.replace(old, new)
    return text


def nginx_command(workdir: pathlib.Path, port: int, smsbot_port: int, tool_port: int) -> list[str]:
    """deploy/nginx.conf as the one server of a full configuration whose files all live in `workdir`."""
    return nginx_serving(workdir, deploy_file("nginx.conf", {
        "listen 80;": f"listen 127.0.0.1:{port};", SMSBOT_AT: f"127.0.0.1:{smsbot_port}",
        TOOL_AT: f"127.0.0.1:{tool_port}"}))


def nginx_serving(workdir: pathlib.Path, site: str) -> list[str]:
    """nginx's command line for `site` (server and upstream blocks) in a full configuration whose files all live
    in `workdir`."""
    (workdir / "site.conf").write_text(site, encoding="utf-8")
    # Run as root (as CI is), the workers would switch to nobody and could not use the temporary paths.
    user = ""
    if os.geteuid() == 0:
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
    paths = "\n".join(f'    {kind}_temp_path "{workdir / kind}";'
                      for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main = f"""{user}
worker_processes 1;
pid "{workdir / 'nginx.pid'}";
error_log "{workdir / 'error.log'}" info;
events {{ worker_connections 256; }}
http {{
    access_log "{workdir / 'access.log'}";
{paths}
    include "{workdir / 'site.conf'}";
}}
"""
    (workdir / "nginx.conf").write_text(main, encoding="utf-8")
    return [BINARIES["nginx"], "-p", f"{workdir}/", "-c", str(workdir / "nginx.conf"),
            "-e", str(workdir / "error.log"), "-g", "daemon off;"]


def caddy_command(workdir: pathlib.Path, port: int, smsbot_port: int, tool_port: int) -> list[str]:
    """deploy/Caddyfile served over plain HTTP on `port`, with no admin API (tests run side by side)."""
    site = deploy_file("Caddyfile", {"group.example.org {": f"http://127.0.0.1:{port} {{",
                                     SMSBOT_AT: f"127.0.0.1:{smsbot_port}", TOOL_AT: f"127.0.0.1:{tool_port}"})
    (workdir / "Caddyfile").write_text("{\n\tadmin off\n}\n\n" + site, encoding="utf-8")
    return [BINARIES["caddy"], "run", "--adapter", "caddyfile", "--config", str(workdir / "Caddyfile")]


COMMANDS: dict[str, Callable[[pathlib.Path, int, int, int], list[str]]] = {
    "nginx": nginx_command, "caddy": caddy_command}


class ProxyProcess:
    """nginx or Caddy in the foreground, in its own session (so its workers can be ended with it), output and logs
    in `workdir`, printed at stop for pytest to show when a test fails."""

    def __init__(self, kind: str, workdir: pathlib.Path, port: int, command: list[str]):
        self.kind = kind
        self.workdir = workdir
        self.base = f"http://127.0.0.1:{port}"
        self.command = command
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    def start(self) -> None:
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        env = clean_env({"HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
                         "XDG_DATA_HOME": str(home / "data")})
        self._log = open(self.workdir / "output.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.command, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(encoding='utf-8', errors='replace')}"
                         for path in sorted(self.workdir.glob("*.log")) if path.name != "smsbot.log")

    def wait_ready(self) -> None:
        """Until /healthz answers 200 through the proxy (so smsbot is behind it); fail early if it exits."""
        assert self.proc is not None

        def ready() -> bool:
            code = self.proc.poll() if self.proc else None
            if code is not None:
                raise AssertionError(f"{self.kind} exited with code {code}:\n{self.output()}")
            try:
                with client({}) as direct:
                    return direct.get(f"{self.base}/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_for(ready, START_TIMEOUT, f"{self.kind} at {self.base} to pass /healthz to smsbot", interval=0.1)

    def stop(self) -> None:
        """Always safe: TERM (both stop at once on it), then KILL the whole process group if anything is left."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own group (start_new_session): nginx's workers
            self.proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None
        code = self.proc.returncode if self.proc is not None else None
        print(f"----- {self.kind} (exit code {code}) -----\n{self.output()}")
