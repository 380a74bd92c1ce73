"""Fixtures for the dashboard tests: the system Chromium driven by Playwright, and a real farm.

The browser is Debian's ``/usr/bin/chromium`` (never a downloaded build: no ``playwright
install``), headless, with a fresh profile. Without it or without Playwright the tests skip and
say why. Pages open at 1280x800, the size the dashboard is designed for.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from peerfarm.testing.daemons import LocalFarm

CHROMIUM = os.environ.get("PEERFARM_CHROMIUM", "/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 800}
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
    pytest.skip(
        f"no Chromium at {CHROMIUM}: apt-get install chromium chromium-driver",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is missing: pip install playwright (no browsers)"
)


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A persistent-profile Chromium context in a fresh user data dir."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport=VIEWPORT,
            accept_downloads=False,
            timeout=30_000,
        )
        context.set_default_timeout(20_000)
        try:
            yield context
        finally:
            context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser_context: object) -> Iterator[object]:
    browser_context.clear_cookies()  # type: ignore[attr-defined]  # no login carried over
    page = browser_context.new_page()  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    try:
        yield page
    finally:
        if page.url.startswith("http"):  # no login (an action key in localStorage) carried over
            page.evaluate("localStorage.clear()")
        page.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFarm]:
    """Three real peers on loopback; module-scoped because starting them costs seconds."""
    root = tmp_path_factory.mktemp("farm")
    with LocalFarm(root) as farm:
        farm.start_all(["atlas", "birch", "cedar"], web=True, allow_command=True)
        yield farm
