"""The throwaway PostgreSQL cluster and its fixtures: fresh databases that are empty and apart, several processes at
once, databases dropped even with connections open, and pg_dump output that shows the rows (for the privacy scan)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable

import asyncpg
import pytest

from support.pgcluster import PgCluster, pg_dump

PUBLIC_TABLES = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"


async def test_each_database_is_new_empty_and_apart(make_pg_url: Callable[[], str]) -> None:
    first, second = make_pg_url(), make_pg_url()
    assert first != second
    a, b = await asyncpg.connect(first), await asyncpg.connect(second)
    try:
        assert await a.fetchval("SELECT current_database()") != await b.fetchval("SELECT current_database()")
        assert await a.fetchval(PUBLIC_TABLES) == 0
        assert await b.fetchval(PUBLIC_TABLES) == 0

        await a.execute("CREATE TABLE only_here (x int)")
        assert await a.fetchval(PUBLIC_TABLES) == 1
        assert await b.fetchval(PUBLIC_TABLES) == 0
        assert await b.fetchval("SELECT to_regclass('only_here')") is None
    finally:
        await a.close()
        await b.close()


async def test_pg_url_is_a_superuser_on_loopback(pg_url: str, pg_cluster: PgCluster) -> None:
    assert pg_url.startswith(f"postgresql://postgres@127.0.0.1:{pg_cluster.port}/")
    connection = await asyncpg.connect(pg_url)
    try:
        assert await connection.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert int(await connection.fetchval("SHOW server_version_num")) >= 150000
        assert await connection.fetchval("SHOW server_encoding") == "UTF8"
        assert int(await connection.fetchval("SHOW max_connections")) >= 200
    finally:
        await connection.close()


async def test_a_dropped_database_is_gone_even_with_connections_open(pg_cluster: PgCluster) -> None:
    url = pg_cluster.create_database()
    name = url.rsplit("/", 1)[1]
    lingering = await asyncpg.connect(url)  # like a `smsbot serve` still running at teardown
    maintenance = await asyncpg.connect(pg_cluster.url())
    try:
        assert await maintenance.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name) == 1
        pg_cluster.drop_database(url)
        assert await maintenance.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name) == 0
        assert await maintenance.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name) == 0
    finally:
        await maintenance.close()
        lingering.terminate()


# Each process connects, records itself, then waits (holding its connection) until it sees the other's record too:
# both exit 0 only if the cluster served the two connections at the same time.
RENDEZVOUS = textwrap.dedent("""
    import asyncio, os, sys
    import asyncpg

    async def main() -> None:
        connection = await asyncpg.connect(sys.argv[1])
        await connection.execute("INSERT INTO arrivals VALUES ($1)", os.getpid())
        for _ in range(600):
            if await connection.fetchval("SELECT count(*) FROM arrivals") == 2:
                await connection.execute("INSERT INTO rows SELECT $1, g FROM generate_series(1, 100) g", os.getpid())
                await connection.close()
                return
            await asyncio.sleep(0.05)
        sys.exit("never saw the other process")

    asyncio.run(main())
""")


@pytest.mark.slow
async def test_two_processes_are_served_at_once(pg_url: str) -> None:
    setup = await asyncpg.connect(pg_url)
    try:
        await setup.execute("CREATE TABLE arrivals (pid int); CREATE TABLE rows (pid int, n int)")
        processes = [subprocess.Popen([sys.executable, "-c", RENDEZVOUS, pg_url], stderr=subprocess.PIPE, text=True)
                     for _ in range(2)]
        errors = [p.communicate(timeout=120)[1] for p in processes]
        assert [p.returncode for p in processes] == [0, 0], errors
        pids = {p.pid for p in processes}
        assert {r["pid"] for r in await setup.fetch("SELECT pid FROM arrivals")} == pids
        counts = await setup.fetch("SELECT pid, count(*) AS n FROM rows GROUP BY pid")
        assert {r["pid"]: r["n"] for r in counts} == dict.fromkeys(pids, 100)
    finally:
        await setup.close()


async def test_pg_dump_shows_the_rows(pg_url: str) -> None:
    connection = await asyncpg.connect(pg_url)
    try:
        await connection.execute("CREATE TABLE people (number text)")
        await connection.execute("INSERT INTO people VALUES ('+14155550123')")
    finally:
        await connection.close()
    dump = pg_dump(pg_url)
    assert "CREATE TABLE public.people" in dump
    assert "+14155550123" in dump  # a number at rest is there for the privacy scan to find
    assert "+14155550124" not in dump
