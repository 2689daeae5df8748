"""A throwaway PostgreSQL cluster for the benchmarks: initdb in a temporary directory, a free loopback port, trust
authentication, stopped and deleted afterwards.

PostgreSQL refuses to run as root, so when this runs as root the cluster's files belong to the `postgres` user and
initdb and pg_ctl run as that user (`runuser`). fsync, synchronous_commit and full_page_writes keep their defaults
(on): a commit waits for its WAL to reach the disk, as SQLite's synchronous=FULL waits for its own, so the two
backends are compared on the same promise.

The binaries are looked for in $SMSBOT_PG_BIN, then /usr/lib/postgresql/15/bin (Debian's `postgresql-15`), then
wherever `pg_config --bindir` says.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence

DEBIAN_BIN = pathlib.Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "postgres"
SETTINGS_QUERY = ("SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ', ' ORDER BY name) FROM pg_settings"
                  " WHERE name IN ('server_version', 'fsync', 'synchronous_commit', 'full_page_writes',"
                  " 'wal_sync_method', 'shared_buffers', 'max_connections')")


class ClusterError(Exception):
    """The cluster could not be started (its log is in the message)."""


def bin_dir() -> pathlib.Path:
    candidates = [os.environ.get("SMSBOT_PG_BIN", ""), str(DEBIAN_BIN)]
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)  # noqa: S603
        candidates.append(out.stdout.strip())
    for candidate in filter(None, candidates):
        path = pathlib.Path(candidate)
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    raise ClusterError("no PostgreSQL binaries (initdb, pg_ctl) found: set SMSBOT_PG_BIN or install postgresql")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclasses.dataclass(frozen=True)
class Cluster:
    bin: pathlib.Path
    home: pathlib.Path  # data directory, socket and log live under it
    port: int
    as_user: str | None  # run the binaries as this user (when we are root)

    @property
    def data(self) -> pathlib.Path:
        return self.home / "data"

    @property
    def log(self) -> pathlib.Path:
        return self.home / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def command(self, name: str, *args: str) -> list[str]:
        argv = [str(self.bin / name), *args]
        return ["runuser", "-u", self.as_user, "--", *argv] if self.as_user else argv

    def run(self, name: str, *args: str) -> str:
        done = subprocess.run(self.command(name, *args), capture_output=True, text=True, check=False,  # noqa: S603
                              cwd=self.home)
        if done.returncode != 0:
            raise ClusterError(f"{name} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
                               f"{self.log.read_text(errors='replace') if self.log.exists() else ''}")
        return done.stdout

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, name)
        return self.url(name)

    def settings(self) -> str:
        """`name=value` of the settings that matter to a benchmark, as the running server reports them."""
        return self.run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-XAtc", SETTINGS_QUERY,
                        "postgres").strip()


@contextlib.contextmanager
def postgres_cluster(settings: Sequence[str] = (), attempts: int = 3) -> Iterator[Cluster]:
    """A running cluster on 127.0.0.1 (trust auth, superuser `postgres`); stopped and deleted on exit. `settings`
    are more server settings, `name=value` each."""
    binaries = bin_dir()
    as_user = SUPERUSER if os.geteuid() == 0 else None
    home = pathlib.Path(tempfile.mkdtemp(prefix="smsbot-pg-"))
    try:
        if as_user:
            owner = pwd.getpwnam(as_user)
            os.chown(home, owner.pw_uid, owner.pw_gid)
        cluster = Cluster(binaries, home, 0, as_user)
        # --no-sync only skips initdb's own flush of the files it writes; the server runs with fsync on.
        cluster.run("initdb", "-D", str(cluster.data), "-A", "trust", "-U", SUPERUSER, "--no-sync", "-E", "UTF8",
                    "--locale=C")
        for attempt in range(1, attempts + 1):
            cluster = dataclasses.replace(cluster, port=_free_port())
            options = " ".join([f"-p {cluster.port} -k {home} -c listen_addresses=127.0.0.1",
                                *(f"-c {setting}" for setting in settings)])
            try:
                cluster.run("pg_ctl", "-D", str(cluster.data), "-l", str(cluster.log), "-o", options, "-w", "start")
                break
            except ClusterError:  # another process may have taken the port meanwhile
                if attempt == attempts:
                    raise
        try:
            yield cluster
        finally:
            with contextlib.suppress(ClusterError):
                cluster.run("pg_ctl", "-D", str(cluster.data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(home, ignore_errors=True)
