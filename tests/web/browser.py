"""The page in a real headless Chromium (Debian's, driven by Playwright): fixtures shared by
the browser tests. Import the fixtures into a test module to use them.

Skipped when Chromium is missing, unless ``OUTSPOOL_TEST_BROWSER=required`` (CI).
Never runs ``playwright install``: the browser is the system's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.web.conftest import Served

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Dialog, Page, ViewportSize

CHROMIUM = Path("/usr/bin/chromium")
REQUIRED = os.environ.get("OUTSPOOL_TEST_BROWSER") == "required"  # read before env is cleared
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 820}


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    reason = None
    if not CHROMIUM.exists():
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "the playwright package is not installed (dependency group test)"
    if reason is not None:
        if REQUIRED:
            pytest.fail(f"OUTSPOOL_TEST_BROWSER=required but {reason}")
        pytest.skip(reason)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield browser
        browser.close()


OpenPage = Callable[..., "Page"]


@pytest.fixture
def open_page(chromium: Browser, served: Served) -> Iterator[OpenPage]:
    """``open_page(color_scheme="dark")``: a new page on the server; fails the test if the
    page ever opens a dialog (program output run as code) or throws."""
    contexts: list[Any] = []
    problems: list[str] = []

    def open_one(**options: Any) -> Page:
        context = chromium.new_context(
            base_url=served.url, viewport=VIEWPORT, accept_downloads=True, **options
        )
        contexts.append(context)
        opened = context.new_page()

        def on_dialog(dialog: Dialog) -> None:
            problems.append(f"dialog: {dialog.message}")
            dialog.dismiss()

        opened.on("dialog", on_dialog)
        opened.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        return opened

    yield open_one
    for context in contexts:
        context.close()
    assert problems == [], "the page ran program output as code, or failed"


@pytest.fixture
def page(open_page: OpenPage) -> Page:
    return open_page()
