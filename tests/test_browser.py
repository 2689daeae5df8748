"""The dev playground in a real browser: `smsbot dev` as a subprocess, Chromium driven by Playwright.

The story is played as a person would: texts typed on /dev/phone, the code and the PIN read off the threads,
the sign-in done on /login in a separate browser context (another device).
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterator
from typing import Any

import pytest

from support.browser import INVITEE, INVITEE_TYPED, WAIT_MS
from support.constants import ADMIN, CODE, PIN, YES
from support.procs import SmsbotProcess, clean_env, only, start_smsbot

pytestmark = pytest.mark.slow



@pytest.fixture
def dev_server(tmp_path: pathlib.Path) -> Iterator[tuple[SmsbotProcess, str]]:
    workdir = tmp_path / "dev"
    workdir.mkdir()
    db = tmp_path / "data" / "dev.db"
    db.parent.mkdir()
    proc, base = start_smsbot("dev", workdir, lambda port: clean_env({"SMSBOT_DB": str(db)}), tmp_path / "dev.log")
    try:
        yield proc, base
    finally:
        proc.stop()




def test_the_story_on_the_dev_phone_page(dev_server: tuple[SmsbotProcess, str], browser: Any,
                                         tmp_path: pathlib.Path) -> None:
    from playwright.sync_api import expect

    _, base = dev_server
    expect.set_options(timeout=WAIT_MS)
    phones_context = browser.new_context(base_url=base)
    device_context = browser.new_context(base_url=base)  # the invitee's computer: its own cookies
    page = None
    try:
        page = phones_context.new_page()
        page.set_default_timeout(WAIT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto("/dev/phone")

        # The admin's phone is already there.
        admin = page.locator(f'section.phone[data-number="{ADMIN}"]')
        expect(admin).to_be_visible()
        expect(admin.locator(".label")).to_have_text("Admin")

        # Add the invitee's phone with the form, typed the way people type numbers: the page says so.
        page.get_by_label("Add a phone").fill(INVITEE_TYPED)
        page.get_by_role("button", name="Add phone").click()
        invitee = page.locator(f'section.phone[data-number="{INVITEE}"]')
        expect(invitee).to_be_visible()
        expect(invitee.locator(".label")).to_have_text("Phone")
        expect(invitee.locator(".number")).to_have_text("+1 415-555-0134")
        expect(page.locator("#add-status")).to_have_text("Added +1 415-555-0134: type a text in its panel below.")
        expect(page.locator("#add-error")).to_have_text("")

        # The admin invites alice from the admin phone's compose box.
        admin.locator(".compose input[name=text]").fill(f"INVITE {INVITEE_TYPED} alice")
        admin.locator(".compose button").click()
        expect(admin.locator(".thread li.in .body")).to_have_text([f"INVITE {INVITEE_TYPED} alice"])
        # Dev mode confirms an INVITE as serve does by default: the admin answers YES with the code it was sent.
        question = admin.locator(".thread li.out").filter(has_text="Reply YES")
        expect(question).to_have_count(1)
        expect(invitee.locator(".thread li.out")).to_have_count(0)
        yes = YES.search(question.locator(".body").inner_text())
        assert yes, question.inner_text()
        admin.locator(".compose input[name=text]").fill(f"YES {yes.group(1)}")
        admin.locator(".compose button").click()
        invite = invitee.locator(".thread li.out").filter(has_text="invited")
        expect(invite).to_have_count(1)
        expect(admin.locator(".thread li.out").filter(has_text="Invited alice")).to_have_count(1)
        code = only(CODE, invite.locator(".body").inner_text())
        expect(invitee.locator(".label")).to_have_text("alice")  # the invite named her

        # The invitee texts the code back and gets the PIN.
        invitee.locator(".compose input[name=text]").fill(code)
        invitee.locator(".compose input[name=text]").press("Enter")
        pin_text = invitee.locator(".thread li.out").filter(has_text=re.compile(r"PIN is \d"))
        expect(pin_text).to_have_count(1)
        pin = only(PIN, pin_text.locator(".body").inner_text())

        # Sign in on "another device".
        device = device_context.new_page()
        device.set_default_timeout(WAIT_MS)
        device.goto("/login")
        device.get_by_label("Username").fill("alice")
        device.get_by_label("PIN").fill(pin)
        with device.expect_response(lambda r: r.url == f"{base}/login" and r.request.method == "POST") as posted:
            device.get_by_role("button", name="Sign in").click()
        login = posted.value
        assert login.status == 303, (
            f"POST /login from the real login form answered {login.status} {login.text()!r}; request headers "
            f"Origin={login.request.all_headers().get('origin')!r} "
            f"Sec-Fetch-Site={login.request.all_headers().get('sec-fetch-site')!r}")
        device.wait_for_url(f"{base}/")
        expect(device.locator("h1")).to_have_text("Signed in as alice")
        checked = device_context.request.get("/auth", max_redirects=0)
        assert checked.status == 200, checked.text()
        assert checked.headers.get("x-auth-user") == "alice"
        other = phones_context.request.get("/auth", max_redirects=0)
        assert other.status == 401, "the dev phone page's context never signed in"

        # The admin revokes alice from the dev phone page: her device is signed out.
        admin.locator(".compose input[name=text]").fill("REVOKE alice")
        admin.locator(".compose button").click()
        expect(admin.locator(".thread li.out").filter(has_text="Revoked alice")).to_have_count(1)
        device.reload()
        device.wait_for_url(f"{base}/login")
        expect(device.get_by_label("PIN")).to_be_visible()
        expect(device.locator(".notice")).to_have_text(
            "This device was signed out. Sign in again with a new PIN: text LOGIN to the group's number.")
        revoked = device_context.request.get("/auth", max_redirects=0)
        assert revoked.status == 401, revoked.text()
        assert "x-auth-user" not in revoked.headers

        # Every text showed up once, in its own phone's thread; the admin heard that alice joined.
        expect(invitee.locator(".thread li.out")).to_have_count(2)
        expect(admin.locator(".thread li.out").filter(has_text="alice (**34) joined")).to_have_count(1)
        expect(page.locator("section.phone")).to_have_count(2)
        assert errors == [], f"JavaScript errors on the dev phone page: {errors}"
    finally:
        if page is not None:  # a picture of the dev phones, also when the story failed half-way
            shot = tmp_path / "devphone.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"dev phone page screenshot: {shot}")  # in the test's own folder, so parallel runs keep theirs
        device_context.close()
        phones_context.close()
