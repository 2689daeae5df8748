"""The package's shape holds: the core never imports the web layer or aiohttp, the SMS conversation (smsbot.sms)
never imports the machinery that carries it, the store and gateway never import the conversation, modules import
each other without a circle, every error derives from SmsbotError, one install name holds everything, and no test
module or benchmark imports a test module (what they share lives in tests/support/)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pathlib
import subprocess
import sys

import pytest

from smsbot.errors import SmsbotError

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORE = ROOT / "smsbot"
WEB = ROOT / "web"
ENTRY_POINTS = {"smsbot.__main__"}  # `python -m smsbot` starts the web layer's CLI: an edge, not the core


def module_name(path: pathlib.Path, package_dir: pathlib.Path, package: str) -> str:
    parts = list(path.relative_to(package_dir).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def modules(package_dir: pathlib.Path, package: str) -> dict[str, pathlib.Path]:
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        found[module_name(path, package_dir, package)] = path
    return found


CORE_MODULES = modules(CORE, "smsbot")
WEB_MODULES = modules(WEB, "smsbot.web")


def imports_of(name: str, path: pathlib.Path, *, top_level_only: bool = False, at_run_time: bool = False) -> set[str]:
    """Every module `name` imports (relative imports resolved), at module level or, unless told, anywhere; with
    `at_run_time`, not those under `if TYPE_CHECKING:`, which only mypy reads."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    if at_run_time:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                node.body = []
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from . import phone` is a module
    return found


# The machinery that carries the conversation: it may use smsbot.sms, never the other way round.
CARRIERS = {"smsbot.pipeline", "smsbot.outbox", "smsbot.signin", "smsbot.sessions", "smsbot.wiring", "smsbot.oidc",
            "smsbot.limiter"}


def imported_core(name: str) -> set[str]:
    return {m for m in imports_of(name, CORE_MODULES[name]) if m in CORE_MODULES}


def test_the_walk_sees_the_whole_package() -> None:
    assert {"smsbot.sms.engine", "smsbot.store.sqlite", "smsbot.gateway.vonage", "smsbot.wiring"} <= set(CORE_MODULES)
    assert {"smsbot.web.app", "smsbot.web.cli", "smsbot.web.views"} <= set(WEB_MODULES)
    assert "aiohttp" in imports_of("smsbot.web.app", WEB_MODULES["smsbot.web.app"]), "the walk finds imports"


@pytest.mark.parametrize("name", sorted(set(CORE_MODULES) - ENTRY_POINTS))
def test_the_core_never_imports_aiohttp_or_the_web_layer(name: str) -> None:
    imported = imports_of(name, CORE_MODULES[name])  # lazy imports inside functions count too
    bad = sorted(m for m in imported if m.split(".")[0] in ("aiohttp", "aiohttp_jinja2", "jinja2", "web")
                 or m == "smsbot.web" or m.startswith("smsbot.web."))
    assert not bad, f"{name} imports {bad}"


@pytest.mark.parametrize("name", sorted(n for n in CORE_MODULES if n.startswith("smsbot.sms.")))
def test_the_conversation_never_imports_the_machinery_that_carries_it(name: str) -> None:
    assert not imported_core(name) & CARRIERS, f"{name} imports {sorted(imported_core(name) & CARRIERS)}"


@pytest.mark.parametrize("name", sorted(n for n in CORE_MODULES if n.startswith(("smsbot.store", "smsbot.gateway"))))
def test_the_store_and_gateway_never_import_the_conversation_or_its_carriers(name: str) -> None:
    bad = sorted(m for m in imported_core(name) if m.startswith("smsbot.sms") or m in CARRIERS)
    assert not bad, f"{name} imports {bad}"


def test_the_layer_rules_see_real_imports() -> None:
    assert "smsbot.sms.engine" in imported_core("smsbot.pipeline"), "the pipeline carries the engine"
    assert "smsbot.store" in imported_core("smsbot.sms.engine")
    assert {n for n in CORE_MODULES if n.startswith("smsbot.sms.")} >= {"smsbot.sms.engine", "smsbot.sms.texts"}


@pytest.mark.slow  # a subprocess
def test_importing_the_whole_core_loads_no_aiohttp() -> None:
    names = sorted(set(CORE_MODULES) - ENTRY_POINTS)
    script = f"import sys\nfor n in {names!r}: __import__(n)\nprint(sorted(m for m in sys.modules " \
             "if m.split('.')[0] in ('aiohttp', 'jinja2') or m.startswith('smsbot.web')))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle, found by depth-first search (each reported once, from its smallest name)."""
    found: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == path[0]:
                found.append([*path, nxt])
            elif nxt not in path and nxt > path[0]:
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
    return found


def test_no_import_circles() -> None:
    everything = {**CORE_MODULES, **WEB_MODULES}
    graph = {name: {m for m in imports_of(name, path, at_run_time=True) if m in everything and m != name}
             for name, path in everything.items()}
    # A package's __init__ that re-exports its submodules is not a circle with them.
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    assert cycles(graph) == []


def test_the_cycle_finder_can_fail() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_every_error_derives_from_smsbot_error() -> None:
    classes = []
    for name in {**CORE_MODULES, **WEB_MODULES}:
        if name in ENTRY_POINTS:
            continue
        module = importlib.import_module(name)
        classes += [c for _, c in inspect.getmembers(module, inspect.isclass)
                    if issubclass(c, BaseException) and c.__module__ == name]
    assert len(classes) >= 7
    strays = [f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, SmsbotError)]
    assert not strays, f"errors outside the hierarchy: {strays}"


def imported_test_modules(source: str) -> set[str]:
    """The `test_*` modules a source imports, at module level or inside a function (tests/ is no package: a test
    module is imported by its bare name, so `aiohttp.test_utils` is none)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        else:
            continue
        found.update(name for name in names if name.startswith("test_"))
    return found


def test_no_test_module_or_benchmark_imports_a_test_module() -> None:
    sources = sorted([*(ROOT / "tests").glob("*.py"), *(ROOT / "bench").glob("*.py")])
    assert len(sources) > 20 and ROOT / "tests" / "test_instances.py" in sources, "the walk sees the tests"
    importing = {path.relative_to(ROOT).as_posix(): found for path in sources
                 if (found := imported_test_modules(path.read_text(encoding="utf-8")))}
    assert not importing, f"move what they share into tests/support/: {importing}"


def test_the_test_import_check_can_fail() -> None:
    fake = "\n".join(["from test_instances import Group", "import test_proxies as proxies",
                       "from support.instances import RATE", "", "", "def helper() -> None:",
                       "    from test_settings import APP_ID", ""])
    assert imported_test_modules(fake) == {"test_instances", "test_proxies", "test_settings"}
    assert imported_test_modules("from support.procs import wait_for\nimport aiohttp.test_utils\n") == set()


HEAVY = ("jinja2", "prometheus_client", "jwt", "cryptography", "asyncpg", "vonage")  # each loaded only when needed
APP_SCRIPT = """
import sys
from smsbot.settings import load
from smsbot.web.app import create_app
import smsbot.web.cli
create_app(load({env!r}, dev={dev!r}))
print(sorted(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize(("dev", "extra"), [(False, {}), (True, {}),
                                            (False, {"SMSBOT_METRICS_ADDRESS": "127.0.0.1:9999"})])
def test_an_app_loads_only_the_libraries_its_settings_need(tmp_path: pathlib.Path, dev: bool,
                                                           extra: dict[str, str]) -> None:
    """Start-up pays for no module the mode doesn't use: no Jinja2 before a page, no Vonage SDK before a send, no
    PostgreSQL driver on SQLite, no prometheus_client with metrics off, no JOSE without an OIDC provider."""
    env = {"SMSBOT_SECRET": "s" * 40, "SMSBOT_ADMINS": "+14155550100", "SMSBOT_NUMBER": "14155550199",
           "SMSBOT_PUBLIC_URL": "https://group.example.org", "SMSBOT_DB": str(tmp_path / "smsbot.db"),
           "VONAGE_API_KEY": "test-key", "VONAGE_API_SECRET": "test-secret-value", **extra}
    script = APP_SCRIPT.format(env=env, dev=dev, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True,
                         cwd=tmp_path)  # the installed package, not the checkout's folders
    wanted = ["prometheus_client"] if extra else []
    assert out.stdout.strip() == str(wanted), out.stdout + out.stderr


SEND_SCRIPT = """
import asyncio, sys
from smsbot.gateway.vonage import VonageGateway
from smsbot.settings import load

async def send() -> str:
    gateway = VonageGateway(load({env!r}))
    try:
        return await gateway.send_sms("+14155550134", "hello", "ref-1")
    finally:
        await gateway.close()

print(bool(asyncio.run(send())), sorted(m for m in sys.modules if m.split(".")[0].startswith("vonage")
                                         and "." not in m))
"""


@pytest.mark.slow
def test_a_text_sent_through_the_sdk_loads_only_its_sms_api(tmp_path: pathlib.Path) -> None:
    """The gateway builds the SDK's SMS client itself, not through the `vonage.Vonage` facade, which imports and
    builds every Vonage API (voice, video, numbers...) and cost the process about 10 MB more at its first text."""
    from support.vonage_emulator import running_emulator

    with running_emulator() as emu:
        env = {"SMSBOT_SECRET": "s" * 40, "SMSBOT_ADMINS": "+14155550100", "SMSBOT_NUMBER": "14155550199",
               "SMSBOT_PUBLIC_URL": "https://group.example.org", "SMSBOT_DB": str(tmp_path / "smsbot.db"),
               "VONAGE_API_KEY": emu.api_key, "VONAGE_API_SECRET": emu.api_secret, "VONAGE_REST_HOST": emu.host,
               "VONAGE_API_HOST": emu.host}
        out = subprocess.run([sys.executable, "-c", SEND_SCRIPT.format(env=env)], capture_output=True, text=True,
                             timeout=60, check=True, cwd=tmp_path, env={"REQUESTS_CA_BUNDLE": str(emu.ca_path)})
        assert [m.to for m in emu.sent] == ["14155550134"], out.stderr
    sent, modules = out.stdout.strip().split(" ", 1)
    assert sent == "True"
    assert modules == str(["vonage_http_client", "vonage_jwt", "vonage_sms", "vonage_utils"]), out.stdout
