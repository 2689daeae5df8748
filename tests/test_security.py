"""Checklist items that need a test of their own (see SECURITY.md for the whole list)."""

from __future__ import annotations

import ast
import asyncio
import pathlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from smsbot.gateway import SendError
from smsbot.messages import InboundText
from smsbot.store.postgres import PostgresStore

from support.constants import INVITE_CODE, PIN_IS
from support.service import ADMIN, WebBench, Wired, login_form

pytestmark = pytest.mark.backends

ROOT = pathlib.Path(__file__).resolve().parent.parent
ALICE = "+14155550134"
T = TypeVar("T")


async def test_two_concurrent_right_pins_make_exactly_one_session(bench: WebBench) -> None:
    pin = await bench.member_with_pin(ALICE, "alice")
    token, cookies = await login_form(bench.client)
    responses = await asyncio.gather(*(
        bench.client.post("/login", cookies=cookies, allow_redirects=False,
                          data={"username": "alice", "pin": pin, "csrf_token": token})
        for _ in range(10)))
    assert sorted(r.status for r in responses) == [303] + [401] * 9
    assert await bench.query("SELECT count(*) FROM sessions") == [(1,)]


async def test_case_variants_share_one_failure_counter_and_a_lock_does_not_count(
        make_bench: Callable[..., Any]) -> None:
    bench: WebBench = await make_bench(SMSBOT_LOGIN_FAILURES_PER_MINUTE="1000", SMSBOT_LOCKOUT_FAILURES="6")
    pin = await bench.member_with_pin(ALICE, "Alice")
    for name in ("alice", "ALICE", "Alice", "aLiCe", "alicE"):
        assert (await bench.login(name, f"{(int(pin) + 1) % 10**6:06d}"))[0].status == 401
    assert await bench.query("SELECT failed_logins FROM members") == [(5,)]
    bench.clock.advance(3600)
    fresh = (await bench.text(ALICE, "LOGIN"))[0][1].split("PIN is ")[1][:6]
    assert (await bench.login("alice", "000000" if fresh != "000000" else "111111"))[0].status == 401  # 6: locked
    for _ in range(5):
        await bench.login("alice", fresh)
    ((failures, locked),) = await bench.query("SELECT failed_logins, locked_at FROM members")
    assert failures == 6 and locked is not None, "attempts while locked are not counted"


def test_codes_pins_and_tokens_come_from_secrets_only() -> None:
    """`random` is allowed only for the outbox's retry jitter, never near a secret."""
    for path in (ROOT / "smsbot").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imports = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imports |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        if "random" in imports:
            assert path.name == "outbox.py", f"{path.name} imports random"
    keys = (ROOT / "smsbot" / "keys.py").read_text(encoding="utf-8")
    assert "secrets.choice" in keys and "secrets.randbelow" in keys and "secrets.token_urlsafe(32)" in keys


async def test_usernames_are_escaped_in_html(bench: WebBench) -> None:
    response = await bench.client.post("/login", data={"username": "<script>x</script>", "pin": "1",
                                                        "csrf_token": "x"})
    assert "<script>x" not in await response.text()
    assert "&lt;script&gt;" in await response.text()


async def test_revoke_and_stop_leave_no_live_pin(bench: WebBench) -> None:
    await bench.member_with_pin(ALICE, "alice")
    await bench.text(ALICE, "STOP")
    assert await bench.query("SELECT count(*) FROM pins") == [(0,)]


async def test_guesses_fired_all_at_once_get_only_five_tries(make_bench: Callable[..., Any], backend: str) -> None:
    bench: WebBench = await make_bench(SMSBOT_LOGIN_FAILURES_PER_MINUTE="1000")
    pin = await bench.member_with_pin(ALICE, "alice")
    token, cookies = await login_form(bench.client)
    guesses = [f"{(int(pin) + n) % 10**6:06d}" for n in range(1, 10)] + [pin]
    responses = await asyncio.gather(*(
        bench.client.post("/login", cookies=cookies, allow_redirects=False,
                          data={"username": "alice", "pin": guess, "csrf_token": token})
        for guess in guesses))
    statuses = [r.status for r in responses]
    assert set(statuses) <= {303, 401} and statuses.count(303) <= 1
    if backend == "sqlite":  # one writer settles them in the order they came: the right PIN came tenth, dead
        assert statuses.count(303) == 0, "the right PIN came after five wrong ones: dead"
    # Whatever order they are settled in, no more than five wrong tries are counted against the PIN (so no more
    # than five wrong guesses are ever weighed), and the right one wins only if fewer were settled before it.
    assert all(tries <= 5 for (tries,) in await bench.query("SELECT tries FROM pins"))
    assert all(failed <= 5 for (failed,) in await bench.query("SELECT failed_logins FROM members"))
    assert await bench.query("SELECT count(*) FROM sessions") == [(statuses.count(303),)]


async def test_revoke_withdraws_texts_still_waiting(bench: WebBench) -> None:
    from smsbot.web.appkeys import OUTBOX

    await bench.member_with_pin(ALICE, "alice")
    down = SendError("down", transient=True)
    bench.gateway.failures = [down, down]
    await bench.text(ALICE, "LOGIN")  # the PIN text fails once and waits for a retry
    await bench.text(ADMIN, "INVITE +14155550177")  # the invite waits too (the provider is "down")
    await bench.text(ADMIN, "REVOKE alice")
    await bench.text(ADMIN, "REVOKE +14155550177")
    bench.clock.advance(600)
    await bench.app[OUTBOX].drain_once()
    assert sum("PIN is" in m.text for m in bench.gateway.sent if m.to == ALICE) == 1, "no PIN after REVOKE"
    assert not any(m.to == "+14155550177" for m in bench.gateway.sent), "no invite after it was cancelled"


def test_leaky_loggers_are_quiet(caplog: Any) -> None:
    import logging

    from smsbot import logs

    logs.quiet_leaky_loggers()
    for name in ("vonage", "vonage_http_client", "urllib3"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO)


@pytest.mark.parametrize("end", ["REVOKE alice", "LOGOUT alice", "LOGOUT"])
async def test_a_lookup_racing_the_end_of_a_session_caches_nothing(wired: Wired, backend: str, end: str) -> None:
    """Lookups on the same instance between the cache's invalidation and the COMMIT that ends the session (an
    admin's REVOKE or LOGOUT, the member's LOGOUT; a lockout ends no session): none of them leaves the session
    cached once the command has returned (and so before any 2xx)."""
    await wired.text(ADMIN, f"INVITE {ALICE} alice")
    code = INVITE_CODE.search(" ".join(m.text for m in wired.gateway.sent if m.to == ALICE))
    assert code
    pin = PIN_IS.search(" ".join(text for to, text in await wired.text(ALICE, code.group(1))
                                                 if to == ALICE))
    assert pin
    token = await wired.signin.login("alice", pin.group(1), "phone")
    assert token and await wired.signin.session(token) is not None
    assert wired.signin.cached_session(token) is not None
    if isinstance(wired.store, PostgresStore) and wired.store._listening is not None:
        # This instance hears no NOTIFY, as when its listening connection has dropped: its own, which comes some
        # time after the COMMIT, would otherwise clean up after the race, or not, as timing has it.
        wired.store._listening.cancel()
        await asyncio.gather(wired.store._listening, return_exceptions=True)
    lookups: list[asyncio.Future[Any]] = []
    # Told of the change inside the unit of work, right after the cache was (its listener comes first).
    wired.store.watch_sessions(lambda member_id: lookups.extend(
        asyncio.ensure_future(wired.signin.session(token)) for _ in range(3)))
    run = wired.store.run
    cached_after: list[object] = []  # the cached session right after each COMMIT that ended it

    async def commit_after_the_lookups(work: Callable[[Any], Awaitable[T]]) -> T:
        before = len(lookups)

        async def held(tx: Any) -> T:
            result = await work(tx)
            if len(lookups) > before:  # this unit of work ends the session: COMMIT only after the lookups
                # On PostgreSQL they read the row as it was before the COMMIT; SQLite's one writer holds them back.
                await asyncio.wait(lookups, timeout=5.0 if wired.store.shared else 0.5)
                assert all(lookup.done() for lookup in lookups) == wired.store.shared
            return result

        result = await run(held)
        if len(lookups) > before:  # at once, before any 2xx (and before this instance's own NOTIFY can come)
            cached_after.append(wired.signin.cached_session(token))
        return result

    wired.store.run = commit_after_the_lookups  # type: ignore[method-assign]
    await wired.pipeline.receive(InboundText("racing", ALICE if end == "LOGOUT" else ADMIN, end))
    assert lookups, "the command ended the session"
    assert cached_after and cached_after == [None] * len(cached_after), "no lookup left the session cached"
    await asyncio.gather(*lookups)
    assert wired.signin.cached_session(token) is None
    assert await wired.signin.session(token) is None
