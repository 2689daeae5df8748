"""A throwaway PostgreSQL cluster for the tests: initdb into a temporary directory, start on a free loopback port.

PostgreSQL refuses to run as root. When the tests run as root, the server's programs run as the `postgres` user
(`subprocess`'s `user=`/`group=`, no preexec_fn) in a temporary directory handed over to that user; otherwise they
run as the current user. Clients connect over TCP to 127.0.0.1 with trust authentication, as the `postgres` role.

The cluster trades durability for speed (fsync, synchronous_commit and full_page_writes off): what the tests check
is smsbot's behaviour, and the crash tests kill smsbot, never this PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import pwd
import secrets
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from .procs import free_port

T = TypeVar("T")

PG_BIN = pathlib.Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "postgres"
OS_USER = "postgres"  # who runs initdb and postgres when the tests run as root

SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",  # several `smsbot serve` instances, each with a pool, plus the tests' own
    "shared_buffers": "32MB",  # one cluster per xdist worker: keep each small
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "logging_collector": "off",  # pg_ctl -l sends the server's log to a file
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
}
PG_HBA = "local all all trust\nhost all all 127.0.0.1/32 trust\n"


def unavailable() -> str | None:
    """Why a test cluster can't run here, or None when it can."""
    if not (PG_BIN / "initdb").is_file():
        return f"PostgreSQL 15 is not installed ({PG_BIN / 'initdb'} is missing; .ci/run installs it)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(OS_USER)
        except KeyError:
            return f"running as root and there is no {OS_USER!r} user to run PostgreSQL as"
    return None


def _world_searchable(path: pathlib.Path) -> bool:
    """Whether every directory from / down to `path` lets any user pass through (o+x)."""
    return all(part.stat().st_mode & stat.S_IXOTH for part in [path, *path.parents])


def _scrubbed_env() -> dict[str, str]:
    """The environment without libpq's PG* variables, so a surrounding shell's PGHOST etc. can't redirect us."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


class PgCluster:
    """One PostgreSQL server with its data directory, socket and log in a temporary directory.

    `start()` runs initdb and starts the server; `stop()` stops it at once (immediate mode) and removes the directory.
    `create_database()` / `drop_database()` make and remove empty databases; `url(name)` is a database's URL.
    """

    def __init__(self) -> None:
        self._as_root = os.geteuid() == 0
        self._account = pwd.getpwnam(OS_USER) if self._as_root else pwd.getpwuid(os.geteuid())
        self.root = self._make_root()
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = 0
        self._names = 0
        self._lock = threading.Lock()

    def _make_root(self) -> pathlib.Path:
        base = pathlib.Path(tempfile.gettempdir())
        if self._as_root and not _world_searchable(base):
            base = pathlib.Path("/tmp")  # the postgres user must be able to reach its directory
        root = pathlib.Path(tempfile.mkdtemp(prefix="smsbot-pg-", dir=base))  # mode 0700
        os.chown(root, self._account.pw_uid, self._account.pw_gid)
        return root

    def _run(self, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """Run one of the server's programs as the cluster's OS user, in the cluster's directory."""
        kwargs: dict[str, Any] = {}
        if self._as_root:
            kwargs = {"user": self._account.pw_uid, "group": self._account.pw_gid, "extra_groups": []}
        env = {**_scrubbed_env(), "HOME": str(self.root), "USER": self._account.pw_name,
               "LOGNAME": self._account.pw_name, "LC_ALL": "C"}
        return subprocess.run([str(PG_BIN / args[0]), *args[1:]], cwd=self.root, env=env, capture_output=True,
                              text=True, timeout=120, **kwargs)

    def _check(self, args: Sequence[str]) -> None:
        done = self._run(args)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
                               f"{self.read_log()}")

    def read_log(self) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        self._check(["initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                     "--no-locale", "--no-sync", "--no-instructions"])
        settings = "".join(f"{key} = {value}\n" for key, value in SETTINGS.items())
        settings += f"unix_socket_directories = '{self.root}'\n"
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# tests/support/pgcluster.py\n" + settings)
        (self.data / "pg_hba.conf").write_text(PG_HBA, encoding="utf-8")  # the file initdb made keeps its owner
        for attempt in range(5):
            # The port was free a moment ago; if another process took it since, take another.
            self.port = free_port()
            done = self._run(["pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log),
                              "-o", f"-p {self.port}"])
            if done.returncode == 0:
                return
            if "could not bind" not in self.read_log() or attempt == 4:
                raise RuntimeError(f"pg_ctl start failed ({done.returncode}):\n{done.stdout}{done.stderr}"
                                   f"{self.read_log()}")

    def stop(self) -> None:
        """Stop the server without a checkpoint (nothing in it is kept) and remove its directory."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(["pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(self.data)])
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, template: str = "template0") -> str:
        """A new, empty database (a copy of `template`); returns its URL."""
        with self._lock:
            self._names += 1
            name = f"test_{self._names}_{secrets.token_hex(4)}"
        _run_async(self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of `url`, ending any connections still open to it."""
        name = url.rsplit("/", 1)[1]
        _run_async(self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    async def _execute(self, sql: str) -> None:
        import asyncpg

        connection = await asyncpg.connect(self.url(), timeout=30)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()


def _run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end on a loop of its own, in a thread of its own.

    Works from sync fixtures and from inside a running event loop (an async test) alike, and leaves the calling
    thread's event loop alone.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coroutine))
        except BaseException as exc:  # handed to the caller
            error.append(exc)

    thread = threading.Thread(target=target, name="pgcluster")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def pg_dump(url: str) -> str:
    """The database at `url` as plain SQL (schema and every row), as pg_dump writes it."""
    done = subprocess.run([str(PG_BIN / "pg_dump"), "--no-owner", "--no-privileges", "--encoding=UTF8", "-d", url],
                          env=_scrubbed_env(), capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pg_dump failed ({done.returncode}): {done.stderr}")
    return done.stdout
