"""Shared fixtures: settings for tests, a wired service on a temporary database, and an HTTP client on the app."""

from __future__ import annotations

import os
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from smsbot.clock import FakeClock
from smsbot.gateway import FakeGateway
from smsbot.settings import Settings, load

from support.service import BACKENDS, BASE_ENV, WebBench, Wired

CHECKOUT = pathlib.Path(__file__).resolve().parent.parent
PG_FIXTURES = {"pg_cluster", "make_pg_url", "pg_url"}  # the test cluster: a test using one runs on PostgreSQL
SLOW_FIXTURES = {"emu", "browser", "forker"}  # the Vonage emulator, Chromium, the crash tests' fork server


def pytest_configure(config: pytest.Config) -> None:
    """The tests run against the installed package, as users get it, never the checkout's own files."""
    import smsbot

    if pathlib.Path(smsbot.__file__).resolve().parent == CHECKOUT / "smsbot":
        raise pytest.UsageError(
            f"smsbot was imported from the checkout ({smsbot.__file__}), not from an installed wheel. Install it "
            "with `.venv/bin/pip install '.[test]'` (not -e) and run `.venv/bin/pytest` (not `python -m pytest`, "
            "which puts the checkout first on sys.path).")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """What `-n auto` means here: half as many workers again as cores. Many tests wait more than they compute (on
    servers they start, on Chromium, on PostgreSQL, on a deadline), so one worker a core leaves the cores a third
    idle: on 2 cores the whole suite took 292 s with 2 workers and 250 s with 3."""
    return max(2, (os.cpu_count() or 1) * 3 // 2)


# The longest tests, with their seconds on a quiet 2-core machine (`--durations`). Each xdist worker starts on a
# contiguous share of the collection; these go first in the shares, spread so the shares weigh alike, instead of
# one of them starting last and keeping its worker busy after the others are done.
HEAVY = {
    "test_crash.py::test_sigkill_at_random_moments": 35, "test_crash_instances.py::": 32,
    "test_face_browser.py::test_every_page_passes_axe": 21, "test_rolling_restart.py::": 16,
    "test_e2e_vonage.py::test_texts_get_through_provider_faults": 15, "test_face_browser.py::test_the_screenshot": 12,
    "test_faults.py::test_an_outage": 11, "test_e2e_vonage.py::test_the_whole_story_with_pins": 11,
    "test_backup.py::test_a_backup_under_load": 11, "test_instances.py::test_one_instance_sends": 10,
    "test_backup.py::test_a_backup_killed": 10, "test_handover.py::test_a_sender_killed": 9,
    "test_prometheus.py::test_prometheus_scrapes": 9, "test_floods.py::test_strangers_stop_and_start": 8,
}


def heavy_first(items: list[pytest.Item], workers: int) -> list[pytest.Item]:
    """The collection reordered so that each worker's first share (as xdist's worksteal hands them out: contiguous,
    the pending count divided by the nodes left) begins with its part of the HEAVY tests."""
    def weight(item: pytest.Item) -> int:
        return next((seconds for prefix, seconds in HEAVY.items() if prefix in item.nodeid), 0)

    heavy = sorted((i for i in items if weight(i)), key=weight, reverse=True)
    rest = [i for i in items if not weight(i)]
    sizes: list[int] = []
    left = len(items)
    for n in range(workers):
        sizes.append(left // (workers - n))
        left -= sizes[-1]
    shares: list[list[pytest.Item]] = [[] for _ in range(workers)]
    loads = [0] * workers
    for item in heavy:  # the heaviest first, each to the lightest share that has room
        lightest = min((n for n in range(workers) if len(shares[n]) < sizes[n]), key=lambda n: loads[n])
        shares[lightest].append(item)
        loads[lightest] += weight(item)
    for share, size in zip(shares, sizes, strict=True):
        room = size - len(share)
        share.extend(rest[:room])
        del rest[:room]
    return [item for share in shares for item in share]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `pg` every test that runs on PostgreSQL (it uses the test cluster, directly or through another
    fixture, or runs with backend=postgresql), and `slow` every test that uses the emulator, a browser or the fork
    server, or is a Hypothesis test: `-m "not slow and not pg"` is the fast tier."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        if names & PG_FIXTURES or (callspec is not None and callspec.params.get("backend") == "postgresql"):
            item.add_marker(pytest.mark.pg)
        if names & SLOW_FIXTURES or getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker(pytest.mark.slow)
    workers = getattr(config, "workerinput", {}).get("workercount")  # set on xdist's workers, which collect
    if workers and workers > 1:
        items[:] = heavy_first(items, int(workers))


@pytest.fixture
def emu() -> Iterator[Any]:
    """The Vonage TLS emulator, on its own thread, for tests that run the real SDK or `smsbot serve`."""
    from support.vonage_emulator import running_emulator

    with running_emulator() as emulator:
        yield emulator


@pytest.fixture
def forker(tmp_path: pathlib.Path) -> Iterator[Any]:
    """The crash tests' fork server (tests/support/crash.py). Requested before `emu`, so it is forked while this
    process has no extra thread."""
    from support.crash import ForkServer

    server = ForkServer(tmp_path / "fork-server-error.txt")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def crash_seed() -> int:
    """The seed of a crash test's random choices: SMSBOT_CRASH_SEED when set, else a fresh one."""
    import os
    import random

    from support.crash import SEED_VARIABLE, replay_hint

    given = os.environ.get(SEED_VARIABLE, "").strip()
    if given and not given.isdigit():
        pytest.fail(f"{SEED_VARIABLE} is a whole number, not {given!r}")
    seed = int(given) if given else random.SystemRandom().randrange(1 << 30)
    print(f"\ncrash test seed {seed} ({'from ' + SEED_VARIABLE if given else 'replay with ' + replay_hint(seed)})")
    return seed


@pytest.fixture
def http() -> Iterator[Any]:
    import requests

    session = requests.Session()
    session.trust_env = False  # no proxies from the environment for 127.0.0.1
    yield session
    session.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked `backends` run once on SQLite and once on PostgreSQL (a fresh database each)."""
    if metafunc.definition.get_closest_marker("backends") and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS)


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def make_settings(tmp_path: pathlib.Path, backend: str, request: pytest.FixtureRequest) -> Callable[..., Settings]:
    """Settings for a test, on the backend it runs on: a SQLite file in its folder or a new PostgreSQL database."""
    db = str(tmp_path / "smsbot.db") if backend == "sqlite" else request.getfixturevalue("make_pg_url")()

    def make(dev: bool = True, **env: str) -> Settings:
        merged = {**BASE_ENV, "SMSBOT_DB": db, **env}
        return load(merged, dev=dev)

    return make


@pytest.fixture
async def wired(make_settings: Callable[..., Settings]) -> AsyncIterator[Wired]:
    w = Wired(make_settings())
    await w.store.open()
    yield w
    await w.store.close()


@pytest.fixture
def make_bench(make_settings: Callable[..., Settings], aiohttp_client: Callable[..., Any]) -> Callable[..., Any]:
    async def make(**env: str) -> WebBench:
        from smsbot.web import create_app

        settings = make_settings(dev=False, **env)
        clock, gateway = FakeClock(), FakeGateway(settings.number)
        app = create_app(settings, gateway=gateway, clock=clock, run_worker=False)
        client = await aiohttp_client(app)
        return WebBench(client, app, gateway, clock)

    return make


@pytest.fixture
async def bench(make_bench: Callable[..., Awaitable[WebBench]]) -> WebBench:
    return await make_bench()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """A throwaway PostgreSQL 15 cluster (tests/support/pgcluster.py), one per xdist worker; skips where it
    can't run."""
    from support.pgcluster import PgCluster, unavailable

    reason = unavailable()
    if reason:
        pytest.skip(reason)
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def make_pg_url(pg_cluster: Any) -> Iterator[Callable[[], str]]:
    """Call it for a new, empty database on the test cluster: its postgresql:// URL. Each is dropped after the test."""
    urls: list[str] = []

    def make() -> str:
        urls.append(pg_cluster.create_database())
        return urls[-1]

    yield make
    for url in urls:
        pg_cluster.drop_database(url)


@pytest.fixture
def pg_url(make_pg_url: Callable[[], str]) -> str:
    """A new, empty database for this test: postgresql://postgres@127.0.0.1:<port>/<name>, dropped afterwards."""
    return make_pg_url()


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless (tests/support/browser.py); the test skips where it or Playwright is missing."""
    from support.browser import CHROMIUM, chromium, have_chromium

    if not have_chromium():
        pytest.skip(f"{CHROMIUM} is missing (install Debian's chromium package to run the browser tests)")
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    with chromium() as launched:
        yield launched
