"""The Models view with peers, profiles, selectors and a GPU memory budget configured (SPEC 6.3,
6.6, 6.7)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from selenium.webdriver.common.by import By

from tests.fakes import free_port
from tests.ui.harness import Browser, UIDaemon, demo_config

PARITY = f"""
[peers.box]
proxy = "http://127.0.0.1:{free_port()}"
models = ["remote-a", "org/remote-b"]

[profiles.coding]
description = "send chat to the coder"
pins = {{ chat = "demo-coder" }}

[selectors.fast]
strategy = "warm"
targets = ["demo-coder", "demo-chat"]
name = "Whichever is warm"

[resources]
gpu_memory = "24GiB"
"""


@pytest.fixture(scope="module")
def parity_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIDaemon]:
    # the routing tables come last in demo_config: peers and the rest go before them
    config = (
        demo_config()
        .replace("[routing.groups.chat]", PARITY + "\n[routing.groups.chat]")
        .replace('aliases = ["chat"]', 'aliases = ["chat"]\nmemory = "6GiB"')
        .replace('aliases = ["coder"]', 'aliases = ["coder"]\nmemory = "8GiB"')
    )
    instance = UIDaemon(config, tmp_path_factory.mktemp("parity"))
    try:
        yield instance
    finally:
        instance.stop()


def block_text(page: Browser, block: str) -> str:
    return page.js(
        "const b = document.getElementById(arguments[0]); return b.hidden ? '' : b.textContent;",
        block,
    )


def test_models_view_shows_peers_selectors_and_switches_profiles(
    page: Browser, parity_daemon: UIDaemon
) -> None:
    page.driver.get(f"{parity_daemon.url}/ui/#/models")
    page.wait(lambda d: "live" in d.find_element(By.ID, "conn").get_attribute("class"))
    page.wait(lambda d: "box/remote-a" in block_text(page, "peers"))
    assert "box/org/remote-b" in block_text(page, "peers")
    selectors = block_text(page, "selectors")
    assert "fast" in selectors
    assert "warm" in selectors
    assert "demo-coder, demo-chat" in selectors
    # a selector is ready while a target it would use is: live, from the model states
    assert "stopped" in block_text(page, "selectors")
    assert httpx.post(f"{parity_daemon.url}/api/models/load/demo-chat").status_code == 200
    page.wait(lambda d: "ready" in block_text(page, "selectors"), 30)
    # selectors and peers' models are not model cards
    cards = page.js(
        "return [...document.querySelectorAll('article.card')].map(c => c.dataset.model)"
    )
    assert sorted(cards) == ["demo-chat", "demo-coder", "demo-embed"]

    page.wait(lambda d: "coding" in block_text(page, "profiles"))
    assert "send chat to the coder" in block_text(page, "profiles")
    page.driver.find_element(By.XPATH, "//div[@id='profiles']//button[text()='Activate']").click()
    page.wait(lambda d: "active" in block_text(page, "profiles"))
    page.driver.find_element(By.XPATH, "//div[@id='profiles']//button[text()='Deactivate']").click()
    page.wait(
        lambda d: d.find_elements(By.XPATH, "//div[@id='profiles']//button[text()='Activate']")
    )


def test_models_view_shows_the_gpu_memory_in_use(page: Browser, parity_daemon: UIDaemon) -> None:
    assert httpx.post(f"{parity_daemon.url}/api/models/unload").status_code == 200
    page.driver.get(f"{parity_daemon.url}/ui/#/models")
    memory = page.wait(lambda d: d.find_element(By.ID, "memory"))
    page.wait(lambda d: memory.text.endswith("0 MiB of 24 GiB in use"))
    coder = page.driver.find_element(By.CSS_SELECTOR, "article.card[data-model='demo-coder']")
    assert coder.find_element(By.CSS_SELECTOR, ".chip.mem").text == "8.0 GiB"
    assert httpx.post(f"{parity_daemon.url}/api/models/load/demo-chat").status_code == 200
    page.wait(lambda d: memory.text.endswith("6.0 GiB of 24 GiB in use"), 30)
    # the longer toolbar and the sections still fit a phone
    page.set_size(390, 844)
    width = page.js("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1]
