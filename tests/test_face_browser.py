"""The web face in Chromium: axe-core on every page at a phone's and a laptop's size, light and dark; no sideways
scrolling at 390 px; error pages in the site's template; visible focus; the busy button; local times; the dev phone
as a messaging app; and the README's screenshots.

axe-core comes from npm (tests/axe: `npm ci --prefix tests/axe`, which .ci/run does) and is handed to each page by
Playwright's page.evaluate, over the DevTools protocol: the pages keep their Content-Security-Policy, and the tests
check that nothing on them breaks it.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import re
import struct
import zoneinfo
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from support.browser import (
    DESKTOP,
    INVITEE,
    IPHONE,
    LAPTOP,
    PHONE,
    WAIT_MS,
    DevPhones,
    dev_server,
    have_chromium,
    sign_in,
)
from support.constants import ADMIN

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = pytest.mark.slow

AXE = pathlib.Path(__file__).parent / "axe" / "node_modules" / "axe-core" / "axe.min.js"
SCHEMES = ("light", "dark")
FAILURES_PER_MINUTE = 3


@pytest.fixture
def server(tmp_path: pathlib.Path) -> Iterator[str]:
    with dev_server(tmp_path / "dev", SMSBOT_LOGIN_FAILURES_PER_MINUTE=str(FAILURES_PER_MINUTE)) as (_, base):
        yield base


class Watched:
    """Contexts whose pages are watched for script errors and Content-Security-Policy violations."""

    def __init__(self, browser: Browser, base: str):
        self.browser, self.base = browser, base
        self.contexts: list[BrowserContext] = []
        self.problems: list[str] = []

    def page(self, **options: Any) -> Page:
        context = self.browser.new_context(base_url=self.base, **options)
        self.contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.on("pageerror", lambda exc: self.problems.append(f"{page.url}: {exc}"))
        # A stylesheet, script, image or icon that fails to load (the favicon too, were it missing).
        page.on("response", lambda response: self.problems.append(f"{response.url}: {response.status}")
                if response.status >= 400 and response.request.resource_type not in ("document", "fetch", "xhr")
                else None)
        # Console errors, CSP violations among them; not the error statuses some of these tests ask for.
        page.on("console", lambda message: self.problems.append(f"{page.url}: {message.text}")
                if message.type == "error" and not message.text.startswith("Failed to load resource") else None)
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def watched(browser: Browser, server: str) -> Iterator[Watched]:
    made = Watched(browser, server)
    try:
        yield made
    finally:
        made.close()


def axe(page: Page) -> dict[str, Any]:
    if not page.evaluate("typeof axe !== 'undefined'"):
        page.evaluate(AXE.read_text(encoding="utf-8"))
    result: dict[str, Any] = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return result


def overflow(page: Page) -> int:
    """How far the page scrolls sideways, in CSS pixels (0: not at all)."""
    width: int = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    return width


def background(page: Page) -> str:
    color: str = page.evaluate("getComputedStyle(document.body).backgroundColor")
    return color


def luminance(css: str) -> float:
    r, g, b = (int(v) / 255 for v in re.findall(r"\d+", css)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_every_page_passes_axe_and_fits_a_phone_light_and_dark(watched: Watched) -> None:
    if not AXE.exists():
        missing = f"{AXE} is missing: run `npm ci --prefix tests/axe` (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(missing)  # in CI a skip would pass unseen
        pytest.skip(missing)
    from playwright.sync_api import expect

    rows: list[tuple[str, str, str, int, int, int, list[str]]] = []
    backgrounds: dict[tuple[str, str], str] = {}

    def audit(page: Page, name: str) -> None:
        for width, height in (PHONE, DESKTOP):
            page.set_viewport_size({"width": width, "height": height})
            for scheme in SCHEMES:
                page.emulate_media(color_scheme="dark" if scheme == "dark" else "light")
                result = axe(page)
                serious = [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
                           for v in result["violations"] if v["impact"] in ("serious", "critical")]
                rows.append((name, f"{width}x{height}", scheme, len(result["passes"]), len(result["violations"]),
                             len(serious), serious))
                backgrounds[(name, scheme)] = background(page)
                if width == PHONE[0]:
                    assert overflow(page) == 0, f"{name} scrolls sideways at {width} px ({scheme})"

    visitor = watched.page()
    visitor.goto("/login")
    audit(visitor, "/login")
    visitor.goto("/login?signed_out=this")
    expect(visitor.locator(".notice")).to_have_text("You signed out of this device.")
    audit(visitor, "/login, signed out")
    for path, status, title in (("/no/such/page", 404, "Page not found"), ("/logout", 405, "That can't be done here")):
        response = visitor.goto(path)
        assert response is not None and response.status == status
        expect(visitor.locator("h1")).to_have_text(title)
        expect(visitor.locator("header.site")).to_be_visible()  # the site's template
        expect(visitor.locator("main.card a.button")).to_be_visible()  # a way back
        assert "monospace" not in visitor.evaluate("getComputedStyle(document.body).fontFamily")
        audit(visitor, f"error {status}")

    phones_page = watched.page()
    phones_page.goto("/dev/phone")
    phones = DevPhones(phones_page)
    pin = phones.invite("alice")
    audit(phones_page, "/dev/phone, mid-story")

    sign_in(watched.page(user_agent=IPHONE).context, watched.base, "alice", pin)
    home = sign_in(watched.page(user_agent=LAPTOP).context, watched.base, "alice", phones.new_pin())
    expect(home.locator(".devices li")).to_have_count(2)
    audit(home, "/ with two devices")
    home.goto("/login")
    expect(home.locator("h1")).to_have_text("Signed in as alice")
    audit(home, "/login, signed in")

    for _ in range(FAILURES_PER_MINUTE + 1):  # last: the limit holds for every client on 127.0.0.1
        visitor.goto("/login")
        visitor.get_by_label("Username").fill("alice")
        visitor.get_by_label("PIN").fill("000000")
        # Until the answer's page has loaded: the next goto must not race the form's own navigation.
        with visitor.expect_navigation() as navigation:
            visitor.get_by_role("button", name="Sign in").click()
        answer = navigation.value
        assert answer is not None
    assert answer.status == 429 and answer.headers.get("retry-after", "").isdigit()
    expect(visitor.locator("h1")).to_have_text("Too many tries")
    expect(visitor.locator("main.card a.button")).to_have_attribute("href", "/login")
    audit(visitor, "error 429")

    print(f"axe-core {visitor.evaluate('axe.version')}: page | viewport | scheme | rules passed | violations | "
          "serious or critical")
    for name, size, scheme, passed, count, serious_count, _ in rows:
        print(f"{name} | {size} | {scheme} | {passed} | {count} | {serious_count}")
    found = [f"{name} {size} {scheme}: {v}" for name, size, scheme, _, _, _, serious in rows for v in serious]
    assert found == [], "\n".join(found)
    assert len(rows) == 8 * 4
    # Every page, error pages included, has the site's own colours, and dark mode is dark.
    assert {backgrounds[(name, "light")] for name, *_ in rows} == {backgrounds[("/login", "light")]}
    assert {backgrounds[(name, "dark")] for name, *_ in rows} == {backgrounds[("/login", "dark")]}
    assert luminance(backgrounds[("/login", "light")]) > 0.8 and luminance(backgrounds[("/login", "dark")]) < 0.1
    assert watched.problems == [], "script errors or CSP violations"


def test_focus_shows_the_busy_button_and_local_times(watched: Watched) -> None:
    from playwright.sync_api import expect

    phones_page = watched.page()
    phones_page.goto("/dev/phone")
    phones = DevPhones(phones_page)
    pin = phones.invite("alice")

    # Focus is visible: the keyboard's way into the form draws an outline.
    page = watched.page(timezone_id="Asia/Tokyo", locale="en-US")
    page.goto("/login")
    page.keyboard.press("Tab")  # the header's link to the home page
    page.keyboard.press("Tab")
    expect(page.locator("#username")).to_be_focused()
    outline = page.evaluate("(s => [s.outlineStyle, parseFloat(s.outlineWidth)])(getComputedStyle("
                            "document.activeElement))")
    assert outline[0] != "none" and outline[1] >= 2, outline

    # On submit the button says it is busy and can't be pressed twice; the sign-in goes through all the same.
    page.get_by_label("Username").fill("alice")
    page.get_by_label("PIN").fill(pin)
    # A listener added after face.js's keeps this one submit from leaving the page, so the page can be looked at.
    page.evaluate("document.addEventListener('submit', (e) => e.preventDefault(), {once: true})")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_function("document.querySelector('form[aria-busy=true] button[type=submit]:disabled')")
    seen = page.locator("form[aria-busy=true] button[type=submit]").text_content()
    page.evaluate("document.querySelector('form.stack').submit()")  # as the browser would have gone on to do
    page.wait_for_url(f"{watched.base}/")
    assert seen == "Signing in…"

    # Times in the reader's zone (here Tokyo), as "just now" and the like.
    first = page.locator(".devices time").first
    expect(first).to_have_text("just now")
    at = datetime.datetime.fromisoformat(str(first.get_attribute("datetime")).replace("Z", "+00:00"))
    tokyo = at.astimezone(zoneinfo.ZoneInfo("Asia/Tokyo"))
    assert f"{tokyo.hour % 12 or 12}:{tokyo.minute:02d}" in str(first.get_attribute("title"))
    assert "UTC" not in str(first.get_attribute("title"))

    # Without JavaScript the pages still work: sign in, see the times as the server wrote them.
    plain = watched.page(java_script_enabled=False)
    plain.goto("/login")
    plain.get_by_label("Username").fill("alice")
    plain.get_by_label("PIN").fill(phones.new_pin())
    plain.get_by_role("button", name="Sign in").click()
    plain.wait_for_url(f"{watched.base}/")
    expect(plain.locator(".devices time").first).to_have_attribute("title", re.compile(r" UTC$"))
    assert watched.problems == []


def test_the_dev_phone_feels_like_a_messaging_app(watched: Watched) -> None:
    from playwright.sync_api import expect

    page = watched.page(permissions=["clipboard-read", "clipboard-write"])
    page.goto("/dev/phone")
    phones = DevPhones(page)
    expect(phones.panel(ADMIN).locator(".label")).to_have_text("Admin")
    expect(phones.panel(ADMIN).locator(".number")).to_have_text("+1 415-555-0100")

    # Add a phone: the page says what happened, also when it was there already.
    page.get_by_label("Add a phone").fill("(415) 555-0177")
    page.get_by_role("button", name="Add phone").click()
    expect(page.locator("#add-status")).to_have_text("Added +1 415-555-0177: type a text in its panel below.")
    expect(phones.panel("+14155550177").locator("input[name=text]")).to_be_focused()
    page.get_by_label("Add a phone").fill("+1 415 555 0100")
    page.get_by_role("button", name="Add phone").click()
    expect(page.locator("#add-status")).to_have_text("+1 415-555-0100 is already here, as Admin.")
    page.get_by_label("Add a phone").fill("0")
    page.get_by_role("button", name="Add phone").click()
    expect(page.locator("#add-error")).to_contain_text("That phone number can't be used")
    expect(page.locator("#add-status")).to_have_text("")

    pin = phones.invite("alice")
    invitee = phones.panel(INVITEE)
    expect(invitee.locator(".label")).to_have_text("alice")
    expect(invitee.locator(".number")).to_have_text("+1 415-555-0134")
    expect(page.get_by_label("Text from alice")).to_be_visible()  # every compose box has a label
    order = [ADMIN, "+14155550177", INVITEE]
    assert page.locator("section.phone").evaluate_all("ps => ps.map(p => p.dataset.number)") == order

    # Timestamps, a link that can be followed, a copy button that copies.
    pin_text = phones.received(INVITEE, re.compile(r"PIN is \d"))
    expect(pin_text.locator("time")).to_have_attribute("datetime", re.compile(r"^\d{4}-\d\d-\d\dT"))
    expect(pin_text.locator("time")).to_have_text(re.compile(r"^\d{1,2}:\d\d"))
    expect(pin_text.locator("a")).to_have_attribute("href", f"{watched.base}/login")
    pin_text.get_by_role("button", name=f"Copy PIN {pin}").click()
    expect(pin_text.locator("button.copy")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == pin

    # A reload keeps every phone, the unused one too, in the same order, with the same texts.
    texts_before = invitee.locator(".thread li .body").all_inner_texts()
    page.reload()
    expect(page.locator("section.phone")).to_have_count(3)
    assert page.locator("section.phone").evaluate_all("ps => ps.map(p => p.dataset.number)") == order
    expect(phones.panel(INVITEE).locator(".thread li .body")).to_have_text(texts_before)
    expect(phones.panel("+14155550177").locator(".label")).to_have_text("Phone")

    # At 1280 px the add box stays small and the panels sit side by side.
    page.set_viewport_size({"width": DESKTOP[0], "height": DESKTOP[1]})
    add = page.locator("#add-phone").bounding_box()
    panels = [p.bounding_box() for p in page.locator("section.phone").all()]
    assert add is not None and add["width"] <= 32 * 16
    assert all(p is not None for p in panels) and len({p["y"] for p in panels if p}) == 1, "one row"
    assert watched.problems == []


def png_size(path: pathlib.Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_screenshot_script_pictures_every_page(tmp_path: pathlib.Path) -> None:
    if not have_chromium():
        pytest.skip("/usr/bin/chromium is missing")
    from screenshots import PAGES, SIZES, name, take

    shots = take(tmp_path / "docs")
    expected = {name(page, width, scheme) for page in PAGES for width, _ in SIZES for scheme in SCHEMES}
    assert {p.name for p in shots} == expected and len(expected) == 12
    for path in shots:
        width, height = png_size(path)
        viewport = dict(SIZES)[width]
        assert height >= viewport, (path.name, width, height)
    for page in PAGES:
        for width, _ in SIZES:
            light, dark = (tmp_path / "docs" / name(page, width, s) for s in SCHEMES)
            assert light.read_bytes() != dark.read_bytes()
    # The committed pictures are this script's, for the same pages and sizes.
    docs = pathlib.Path(__file__).resolve().parent.parent / "docs"
    for path in shots:
        assert png_size(docs / path.name)[0] == png_size(path)[0], path.name
