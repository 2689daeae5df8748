"""Chromium helpers for the tests (and tests/screenshots.py) that use the web face as a person would: start
`smsbot dev`, drive Debian's Chromium with Playwright, play the story on the dev phone page."""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .constants import ADMIN
from .procs import SmsbotProcess, clean_env, start_smsbot

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Locator, Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
INVITEE_TYPED = "+1 415 555 0134"
INVITEE = "+14155550134"
WAIT_MS = 10_000
PHONE = (390, 844)
DESKTOP = (1280, 800)
# Two devices for the home page, as their User-Agents name them.
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.5 Mobile/15E148 Safari/604.1")
LAPTOP = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


@contextlib.contextmanager
def dev_server(folder: pathlib.Path, **env: str) -> Iterator[tuple[SmsbotProcess, str]]:
    """`smsbot dev` on a free port, its files in `folder`; yields the process and its base URL."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"SMSBOT_DB": str(folder / "dev.db"), **env}
    proc, base = start_smsbot("dev", folder, lambda port: clean_env(settings), folder / "dev.log")
    try:
        yield proc, base
    finally:
        proc.stop()


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless. Callers check that CHROMIUM exists first (tests skip without it)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


class DevPhones:
    """The dev phone page, used as a person would: type in a phone's compose box, read its thread."""

    def __init__(self, page: Page):
        self.page = page

    def panel(self, number: str) -> Locator:
        return self.page.locator(f'section.phone[data-number="{number}"]')

    def send(self, number: str, text: str) -> None:
        box = self.panel(number).locator(".compose input[name=text]")
        box.fill(text)
        box.press("Enter")

    def received(self, number: str, has_text: str | re.Pattern[str]) -> Locator:
        """The one text to `number` that has `has_text`, once it has arrived."""
        from playwright.sync_api import expect

        found = self.panel(number).locator(".thread li.out").filter(has_text=has_text)
        expect(found).to_have_count(1, timeout=WAIT_MS)
        return found

    @staticmethod
    def copy_value(text: Locator) -> str:
        """What the text's copy button copies (the code, the PIN, the YES reply)."""
        value = text.locator("button.copy").get_attribute("data-copy")
        assert value, "the text has a copy button"
        return value

    def invite(self, username: str = "alice") -> str:
        """The story up to the PIN: the admin invites, confirms with YES, the invitee replies with the code."""
        self.send(ADMIN, f"INVITE {INVITEE_TYPED} {username}")
        self.send(ADMIN, self.copy_value(self.received(ADMIN, "Reply YES")))
        code = self.copy_value(self.received(INVITEE, "invited"))
        self.send(INVITEE, code)
        return self.copy_value(self.received(INVITEE, re.compile(r"PIN is \d")))

    def new_pin(self) -> str:
        """LOGIN from the invitee's phone: the newest PIN."""
        before = self.panel(INVITEE).locator(".thread li.out").filter(has_text="PIN is").count()
        self.send(INVITEE, "LOGIN")
        texts = self.panel(INVITEE).locator(".thread li.out").filter(has_text="PIN is")
        from playwright.sync_api import expect

        expect(texts).to_have_count(before + 1, timeout=WAIT_MS)
        return self.copy_value(texts.last)


def sign_in(context: BrowserContext, base: str, username: str, pin: str) -> Page:
    """Sign in on /login in `context` (a device of its own); returns its page, on the home page."""
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{base}/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("PIN").fill(pin)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/")
    return page


def have_chromium() -> bool:
    return os.path.exists(CHROMIUM)
