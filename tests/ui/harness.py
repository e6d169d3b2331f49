"""A real daemon and a real headless Chromium for the web UI tests and the screenshot script.

- :class:`UIDaemon`: ``python -m llama_swap_trio serve --listen 127.0.0.1:0`` on a config, its
  output collected by a thread (the tests are synchronous: selenium blocks), stopped with SIGTERM
  and checked to leave no upstream process group behind.
- :class:`Browser`: Debian's ``chromium`` through its ``chromedriver`` (both found on the machine;
  selenium is told their paths and never downloads anything: ``SE_OFFLINE``), with the console
  log readable and the colour scheme switchable.
- :func:`demo_config`: models like ``config/demo.toml``'s, on the built-in demo upstream.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tests.e2e.conftest import _descendant_groups, _group_members
from tests.fakes import free_port

# selenium must never fetch a driver or a browser (no network at test time)
os.environ["SE_OFFLINE"] = "true"

CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMEDRIVER_NAMES = ("chromedriver",)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # we run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--password-store=basic",
)


def find_chromium() -> tuple[str, str] | str:
    """``(chromium, chromedriver)`` paths, or the reason they cannot be used."""
    browser = next(filter(None, (shutil.which(name) for name in CHROMIUM_NAMES)), None)
    driver = next(filter(None, (shutil.which(name) for name in CHROMEDRIVER_NAMES)), None)
    if browser is None or driver is None:
        missing = " and ".join(
            name
            for name, found in (("chromium", browser), ("chromedriver", driver))
            if found is None
        )
        return f"no {missing} on PATH (Debian: apt-get install -y chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return browser, driver


def demo_config(*, extra: str = "", load_seconds: float = 0.6, loading_state: bool = True) -> str:
    """Three demo models (two that swap, one that stays), as in config/demo.toml."""
    python = shlex.quote(sys.executable)
    demo = f"{python} -m llama_swap_trio demo-upstream --port ${{PORT}} --model-id ${{MODEL_ID}}"
    return f"""
health_check_timeout = 30
start_port = {free_port()}
global_ttl = 600
send_loading_state = {"true" if loading_state else "false"}
{extra}

[models.demo-chat]
name = "Demo chat"
description = "A friendly chatty demo model"
cmd = "{demo} --startup-delay {load_seconds} --tokens-per-second 40"
aliases = ["chat"]
ttl = 300

[models.demo-coder]
name = "Demo coder"
description = "A faster demo model"
cmd = "{demo} --startup-delay {load_seconds} --tokens-per-second 80"
aliases = ["coder"]

[models.demo-embed]
name = "Demo embeddings"
description = "Deterministic embeddings"
cmd = "{demo}"

[routing.groups.chat]
members = ["demo-chat", "demo-coder"]

[routing.groups.embeddings]
members = ["demo-embed"]
swap = false
exclusive = false
persistent = true
"""


class UIDaemon:
    """The daemon as a subprocess in its own process group."""

    def __init__(self, config_text: str, workdir: Path, *, listen: str = "127.0.0.1:0") -> None:
        self.config_path = workdir / "config.toml"
        self.config_path.write_text(config_text)
        self.lines: list[str] = []
        self.url = ""
        self._ready = threading.Event()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_swap_trio",
                "serve",
                "--config",
                str(self.config_path),
                "--listen",
                listen,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(30) or not self.url:
            self.stop()
            raise AssertionError("daemon did not start:\n" + "\n".join(self.lines))
        self.groups: set[int] = set()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if "listening on http://" in line and not self.url:
                self.url = line.split("listening on ", 1)[1].strip()
                self._ready.set()
        self._ready.set()

    def note_upstreams(self) -> None:
        self.groups |= _descendant_groups(self.process.pid) - {self.process.pid}

    def stop(self) -> None:
        """SIGTERM, then SIGKILL of the group after 15 s; every upstream group must be gone."""
        if self.process.poll() is None:
            self.note_upstreams()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_group_members(g) for g in self.groups):
            time.sleep(0.05)
        left = {g for g in self.groups if _group_members(g)}
        for group in left:
            os.killpg(group, signal.SIGKILL)
        assert not left, f"upstream process groups left behind: {left}"


class Browser:
    """One headless Chromium with a fresh profile."""

    def __init__(self, chromium: str, chromedriver: str, *, width: int = 1280, height: int = 900):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self._profile = tempfile.TemporaryDirectory(prefix="lst-ui-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self._profile.name}")
        options.add_argument(f"--window-size={width},{height}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(executable_path=chromedriver)  # never selenium-manager's download
        self.driver = webdriver.Chrome(options=options, service=service)
        self.driver.set_page_load_timeout(30)
        self.set_size(width, height)

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            self._profile.cleanup()

    def set_size(self, width: int, height: int) -> None:
        """The viewport (not the window) is ``width`` by ``height`` CSS pixels."""
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
        )

    def set_dark(self, dark: bool) -> None:
        """Emulate the system's colour scheme (``prefers-color-scheme``)."""
        self.driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]},
        )

    def wait(self, condition: Callable[[Any], Any], timeout: float = 20, message: str = "") -> Any:
        """Wait until ``condition(driver)`` is truthy; its value is returned."""
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(condition, message)

    def js(self, script: str, *args: object) -> Any:
        return self.driver.execute_script(script, *args)

    def console(self) -> list[dict[str, Any]]:
        """Console entries since the last call."""
        return list(self.driver.get_log("browser"))

    def console_errors(self, allowed: Iterable[str] = ()) -> list[str]:
        """SEVERE console lines, except the browser's own network notices of ``allowed`` paths.

        Chromium prints "Failed to load resource: ... 404" for every error answer a page's
        ``fetch`` gets, whatever the page does with it; those the UI expects (a 404 from an
        endpoint this daemon may not have, the 401 of a wrong key) are named by ``allowed``.
        """
        allowed = tuple(allowed)
        errors = []
        for entry in self.console():
            if entry.get("level") != "SEVERE":
                continue
            text = entry.get("message", "")
            if entry.get("source") == "network" and any(path in text for path in allowed):
                continue
            errors.append(text)
        return errors

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
