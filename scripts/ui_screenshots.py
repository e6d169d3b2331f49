"""Screenshots of the web UI's main views, light and dark, into docs/ui/ (shown in the README).

    .venv/bin/python scripts/ui_screenshots.py [--out docs/ui]

Runs the real daemon on demo models (as the browser tests do, tests/ui/harness.py), drives
Debian's headless Chromium through a few loads, a swap, chats and a failed request, then takes
each view at 1280x800 in both colour schemes, and the Models view at phone width (390 px).
Needs `chromium` and `chromium-driver` (apt-get) and selenium (the `test` extra).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

from tests.ui.harness import Browser, UIDaemon, demo_config, find_chromium  # noqa: E402

VIEWS = ("models", "activity", "swaps", "logs", "playground")
#: a peer, a profile, a selector and a GPU budget, so the Models view shows its sections for them
PARITY = """
[peers.studio]
proxy = "http://127.0.0.1:9"
models = ["llama-70b", "qwen-coder-32b"]

[profiles.coding]
description = "chat goes to the coder"
pins = { chat = "demo-coder" }

[selectors.fast]
strategy = "warm"
targets = ["demo-coder", "demo-chat"]
name = "Whichever is warm"

[resources]
gpu_memory = "24GiB"
"""


def _live(browser: Browser) -> None:
    browser.wait(lambda d: "live" in d.find_element(By.ID, "conn").get_attribute("class"))


def _chat(browser: Browser, model: str, text: str) -> None:
    Select(browser.driver.find_element(By.ID, "pg-model")).select_by_value(model)
    box = browser.driver.find_element(By.ID, "pg-input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)
    browser.wait(
        lambda d: d.execute_script(
            "const m = [...document.querySelectorAll('#pg-log .msg.assistant')].pop();"
            "return m && m.dataset.done;"
        ),
        60,
    )


def _stage(browser: Browser, daemon: UIDaemon, http: httpx.Client) -> None:
    """Make the views worth looking at: loads, a swap, chats, a failed request, a running model."""
    browser.driver.get(f"{daemon.url}/ui/#/playground")
    _live(browser)
    browser.wait(lambda d: len(Select(d.find_element(By.ID, "pg-model")).options) >= 3)
    _chat(browser, "demo-coder", "Write a haiku about swapping models")
    _chat(browser, "demo-chat", "Hello! Which model are you?")
    http.post("/v1/embeddings", json={"model": "demo-embed", "input": "a sentence to embed"})
    http.get("/upstream/demo-chat/no-such-page")
    body = {"model": "coder", "messages": [{"role": "user", "content": "hi"}]}
    http.post("/v1/chat/completions", json=body)
    _chat(browser, "demo-chat", "And now tell me about trio.")


def _stream_in_background(http: httpx.Client) -> threading.Thread:
    """A long streamed chat, so the Activity view has a request in flight."""
    body = {
        "model": "demo-chat",
        "stream": True,
        "max_tokens": 240,
        "messages": [{"role": "user", "content": "A long answer, please."}],
    }

    def run() -> None:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            for _ in response.iter_bytes():
                pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "ui")
    args = parser.parse_args()
    found = find_chromium()
    if isinstance(found, str):
        print(f"cannot take screenshots: {found}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as workdir:
        config = (
            demo_config(load_seconds=1.0)
            .replace("[routing.groups.chat]", PARITY + "\n[routing.groups.chat]")
            .replace('aliases = ["chat"]', 'aliases = ["chat"]\nmemory = "7GiB"')
            .replace('aliases = ["coder"]', 'aliases = ["coder"]\nmemory = "14GiB"')
        )
        daemon = UIDaemon(config, Path(workdir))
        browser = Browser(*found, width=1280, height=800)
        try:
            with httpx.Client(base_url=daemon.url, timeout=60, trust_env=False) as http:
                _stage(browser, daemon, http)
                for dark in (False, True):
                    browser.set_dark(dark)
                    scheme = "dark" if dark else "light"
                    for view in VIEWS:
                        browser.driver.find_element(
                            By.CSS_SELECTOR, f"a[data-view='{view}']"
                        ).click()
                        browser.wait(
                            lambda d, v=view: d.find_element(By.ID, f"view-{v}").is_displayed()
                        )
                        if view == "logs":
                            source = Select(browser.driver.find_element(By.ID, "logs-source"))
                            source.select_by_value("demo-chat")
                            browser.wait(
                                lambda d: "listening" in d.find_element(By.ID, "logs-out").text
                            )
                        streaming = None
                        if view == "activity":
                            streaming = _stream_in_background(http)
                            browser.wait(
                                lambda d: d.execute_script(
                                    "const c = document.querySelector("
                                    "'#inflight-table td[data-label=Chunks]');"
                                    "return c && /\\d/.test(c.textContent);"
                                ),
                                30,
                            )
                        browser.js("document.activeElement && document.activeElement.blur()")
                        browser.screenshot(args.out / f"{view}-{scheme}.png")
                        if streaming is not None:
                            streaming.join(30)
                browser.set_dark(False)
                browser.set_size(390, 844)
                browser.driver.find_element(By.CSS_SELECTOR, "a[data-view='models']").click()
                browser.screenshot(args.out / "models-phone.png")
        finally:
            browser.close()
            daemon.stop()
    print(f"screenshots written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
