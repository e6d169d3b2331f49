"""Fixtures of the browser tests: Chromium (or a skip that says why), a daemon, a clean page.

The browser and the demo daemon are shared by a module's tests (a Chromium start costs seconds
on a small machine); each test opens the page afresh and leaves the models as it wants them.
Every test ends with the console checked: no error from the page.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ui.harness import Browser, UIDaemon, demo_config, find_chromium

#: answers the UI expects and handles, which Chromium still reports as console lines
OPTIONAL_ENDPOINTS = ("/api/activity", "/api/profiles")


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    found = find_chromium()
    if isinstance(found, str):
        pytest.skip(f"browser tests need Chromium: {found}")
    return found


@pytest.fixture(scope="module")
def browser(chromium: tuple[str, str]) -> Iterator[Browser]:
    instance = Browser(*chromium)
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIDaemon]:
    workdir: Path = tmp_path_factory.mktemp("ui-daemon")
    instance = UIDaemon(demo_config(extra='log_to_stdout = "both"'), workdir)
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Browser]:
    """The shared browser, light, desktop-sized; the console must stay free of errors."""
    browser.set_dark(False)
    browser.set_size(1280, 900)
    browser.driver.get("about:blank")  # no page of an earlier test still talks to its daemon
    browser.console()  # forget what earlier tests left
    yield browser
    errors = browser.console_errors(allowed=OPTIONAL_ENDPOINTS)
    assert not errors, f"console errors: {errors}"
