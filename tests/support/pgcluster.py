"""A throwaway PostgreSQL cluster for the tests and the benchmarks: initdb into a temporary directory, start on a
free loopback port.

PostgreSQL refuses to run as root. When this runs as root, the server's programs run as the `postgres` user
(`subprocess`'s `user=`/`group=`, no preexec_fn) in a temporary directory handed over to that user; otherwise they
run as the current user. Clients connect over TCP to 127.0.0.1 with trust authentication, as the `postgres` role.

The binaries are looked for in $SMSBOT_PG_BIN, then /usr/lib/postgresql/15/bin (Debian's `postgresql-15`), then
wherever `pg_config --bindir` says.

For the tests the cluster trades durability for speed (fsync, synchronous_commit and full_page_writes off): what
they check is smsbot's behaviour, and the crash tests kill smsbot, never this PostgreSQL. The benchmarks ask for a
durable one (`PgCluster(durable=True)`): a commit waits for its WAL to reach the disk, as SQLite's synchronous=FULL
waits for its own, so the two backends are compared on the same promise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import pwd
import secrets
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from .procs import free_port

T = TypeVar("T")

DEBIAN_BIN = pathlib.Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "postgres"
OS_USER = "postgres"  # who runs initdb and postgres when the tests run as root

SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",  # several `smsbot serve` instances, each with a pool, plus the tests' own
    "shared_buffers": "32MB",  # one cluster per xdist worker: keep each small
    "logging_collector": "off",  # pg_ctl -l sends the server's log to a file
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
}
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}  # not durable: for the tests
BENCH_SETTINGS = ("server_version", "fsync", "synchronous_commit", "full_page_writes", "wal_sync_method",
                  "shared_buffers", "max_connections")
PG_HBA = "local all all trust\nhost all all 127.0.0.1/32 trust\n"


def bin_dir() -> pathlib.Path | None:
    """Where PostgreSQL's programs are: $SMSBOT_PG_BIN, Debian's directory, or `pg_config --bindir`; None if nowhere."""
    candidates = [os.environ.get("SMSBOT_PG_BIN", ""), str(DEBIAN_BIN)]
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(out.stdout.strip())
    for candidate in filter(None, candidates):
        path = pathlib.Path(candidate)
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    return None


def unavailable() -> str | None:
    """Why a cluster can't run here, or None when it can."""
    if bin_dir() is None:
        return ("PostgreSQL is not installed (no initdb and pg_ctl in $SMSBOT_PG_BIN, "
                f"{DEBIAN_BIN} or pg_config --bindir; .ci/run installs postgresql-15)")
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
    `durable` keeps PostgreSQL's fsync, synchronous_commit and full_page_writes on; `settings` are more server
    settings, `name=value` each.
    """

    def __init__(self, durable: bool = False, settings: Sequence[str] = ()) -> None:
        problem = unavailable()
        if problem:
            raise RuntimeError(problem)
        self.bin = bin_dir() or DEBIAN_BIN
        self._settings = {**SETTINGS, **({} if durable else FAST),
                          **dict(setting.split("=", 1) for setting in settings)}
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
        return subprocess.run([str(self.bin / args[0]), *args[1:]], cwd=self.root, env=env, capture_output=True,
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
        settings = "".join(f"{key} = {value}\n" for key, value in self._settings.items())
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

    def create_database(self, name: str = "") -> str:
        """A new, empty database (named `name`, or a fresh name); returns its URL."""
        if not name:
            with self._lock:
                self._names += 1
                name = f"test_{self._names}_{secrets.token_hex(4)}"
        _run_async(self._execute(f'CREATE DATABASE "{name}" TEMPLATE template0'))
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of `url`, ending any connections still open to it."""
        name = url.rsplit("/", 1)[1]
        _run_async(self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def settings(self) -> str:
        """`name=value` of the settings that matter to a benchmark, as the running server reports them."""
        names = ", ".join(f"'{name}'" for name in BENCH_SETTINGS)
        return str(_run_async(self._execute(
            "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ', ' ORDER BY name) FROM pg_settings"
            f" WHERE name IN ({names})")))

    async def _execute(self, sql: str) -> Any:
        import asyncpg

        connection = await asyncpg.connect(self.url(), timeout=30)
        try:
            return await connection.fetchval(sql)
        finally:
            await connection.close()


@contextlib.contextmanager
def running(durable: bool = False, settings: Sequence[str] = ()) -> Iterator[PgCluster]:
    """A started cluster (see PgCluster), stopped and removed on exit."""
    cluster = PgCluster(durable, settings)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


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
    done = subprocess.run([str((bin_dir() or DEBIAN_BIN) / "pg_dump"), "--no-owner", "--no-privileges",
                           "--encoding=UTF8", "-d", url],
                          env=_scrubbed_env(), capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pg_dump failed ({done.returncode}): {done.stderr}")
    return done.stdout
