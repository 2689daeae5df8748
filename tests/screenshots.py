"""The README's pictures: the sign-in page, the home page with two devices and the dev phone page mid-story, each at
390 px (a phone) and 1280 px, light and dark, as PNGs named `<page>-<width>-<scheme>.png`.

    .venv/bin/python tests/screenshots.py [folder]      # default: docs/

It lives beside the tests because it is one: it starts `smsbot dev` and drives Chromium with the helpers in
tests/support/browser.py, and tests/test_face_browser.py runs it into a temporary folder and checks every picture.
"""

from __future__ import annotations

import contextlib
import io
import pathlib
import sys
import tempfile
from typing import TYPE_CHECKING

from support.browser import DESKTOP, IPHONE, LAPTOP, PHONE, WAIT_MS, DevPhones, chromium, dev_server, sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Page

SIZES = (PHONE, DESKTOP)
SCHEMES = ("light", "dark")
PAGES = ("login", "home", "devphone")
DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def name(page: str, width: int, scheme: str) -> str:
    return f"{page}-{width}-{scheme}.png"


def shoot(page: Page, what: str, folder: pathlib.Path) -> list[pathlib.Path]:
    """The page as it is now, at each size and in each colour scheme."""
    shots = []
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        for scheme in SCHEMES:
            page.emulate_media(color_scheme="dark" if scheme == "dark" else "light")
            path = folder / name(what, width, scheme)
            page.screenshot(path=str(path), full_page=True, animations="disabled", caret="hide")
            shots.append(path)
    return shots


def take(folder: pathlib.Path) -> list[pathlib.Path]:
    """Play the story in `smsbot dev` and photograph it; returns the PNGs written to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    shots: list[pathlib.Path] = []
    with tempfile.TemporaryDirectory() as tmp, dev_server(pathlib.Path(tmp)) as (_, base), chromium() as browser:
        contexts = []

        def context(user_agent: str | None = None) -> Page:
            made = browser.new_context(base_url=base, user_agent=user_agent, locale="en-US",
                                       timezone_id="America/Los_Angeles")
            contexts.append(made)
            page = made.new_page()
            page.set_default_timeout(WAIT_MS)
            return page

        try:
            page = context()
            page.goto("/dev/phone")
            phones = DevPhones(page)
            pin = phones.invite("alice")  # mid-story: invited, confirmed, joined; the PIN is on the invitee's phone
            shots += shoot(page, "devphone", folder)

            visitor = context()
            visitor.goto("/login")
            shots += shoot(visitor, "login", folder)

            sign_in(context(IPHONE).context, base, "alice", pin)  # her phone...
            home = sign_in(context(LAPTOP).context, base, "alice", phones.new_pin())  # ...and her laptop
            shots += shoot(home, "home", folder)
        finally:
            for made in contexts:
                made.close()
    return shots


def main(argv: list[str]) -> int:
    folder = pathlib.Path(argv[0]) if argv else DOCS
    server_log = io.StringIO()
    with contextlib.redirect_stdout(server_log):  # smsbot dev's log, printed when it stops: only on failure
        try:
            shots = take(folder)
        except BaseException:
            sys.stderr.write(server_log.getvalue())
            raise
    for path in shots:
        print(f"{path} {path.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
