"""The web UI in a real headless Chromium against the real daemon and demo upstreams (SPEC 6.3).

Every wait is on a condition (WebDriverWait), never a sleep. The page is reloaded by each test.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from tests.fakes import free_port
from tests.ui.conftest import OPTIONAL_ENDPOINTS
from tests.ui.harness import Browser, UIDaemon, demo_config

MODELS = ("demo-chat", "demo-coder", "demo-embed")
STATES = {"stopped", "starting", "ready", "stopping", "backoff", "sleeping", "shutdown"}


@pytest.fixture
def http(daemon: UIDaemon) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=daemon.url, timeout=30, trust_env=False) as client:
        yield client


def open_view(page: Browser, url: str, view: str) -> None:
    """Load the page afresh on ``view`` and wait until its feed is live."""
    page.driver.get("about:blank")
    page.driver.get(f"{url}/ui/#/{view}")
    page.wait(lambda d: "live" in d.find_element(By.ID, "conn").get_attribute("class"))


def card_state(page: Browser, model: str) -> str:
    return page.js(
        "const c = document.querySelector(`article.card[data-model='${arguments[0]}']`);"
        "return c ? c.dataset.state : null;",
        model,
    )


def wait_state(page: Browser, model: str, state: str, timeout: float = 30) -> None:
    page.wait(
        lambda d: card_state(page, model) == state,
        timeout,
        f"{model} never showed {state} (shows {card_state(page, model)})",
    )


def unload_all(http: httpx.Client) -> None:
    assert http.post("/api/models/unload").status_code == 200


def chat(page: Browser, model: str, text: str) -> None:
    Select(page.driver.find_element(By.ID, "pg-model")).select_by_value(model)
    box = page.driver.find_element(By.ID, "pg-input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def last_answer(page: Browser) -> dict[str, str | None]:
    return page.js(
        "const all = document.querySelectorAll('#pg-log .msg.assistant');"
        "const m = all[all.length - 1];"
        "if (!m) return null;"
        "return {text: m.querySelector('.content').textContent, done: m.dataset.done || null,"
        " streaming: m.classList.contains('streaming'), meta: m.querySelector('.meta').textContent,"
        " loading: m.querySelector('.loading').textContent};"
    )


def test_models_view_lists_every_model_with_its_state(
    page: Browser, daemon: UIDaemon, http: httpx.Client
) -> None:
    listed = {r["id"]: r["status"]["state"] for r in http.get("/v1/models").json()["data"]}
    open_view(page, daemon.url, "models")
    page.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "article.card")) == len(MODELS))
    for model in MODELS:
        assert card_state(page, model) in STATES
        assert card_state(page, model) == listed[model]
    text = page.driver.find_element(By.ID, "models-grid").text
    for label in ("IN FLIGHT", "QUEUED", "TTL LEFT", "LAST LOAD", "Demo chat"):
        assert label.lower() in text.lower()
    # first paint of the static shell (no data needed for it)
    paint = page.js(
        "const p = performance.getEntriesByName('first-contentful-paint')[0];"
        "return p ? p.startTime : null;"
    )
    assert paint is not None
    assert paint < 2000, paint


def test_load_makes_a_model_ready_on_screen_and_unload_stops_it(
    page: Browser, daemon: UIDaemon, http: httpx.Client
) -> None:
    unload_all(http)
    open_view(page, daemon.url, "models")
    wait_state(page, "demo-coder", "stopped")
    page.driver.find_element(By.CSS_SELECTOR, "button[aria-label='Load demo-coder']").click()
    wait_state(page, "demo-coder", "ready")
    assert http.get("/running").json()["running"][0]["model"] == "demo-coder"
    # the load's duration is shown as the model's last load time, from the feed's swap event
    page.wait(
        lambda d: (
            "s"
            in d.find_element(
                By.CSS_SELECTOR, "article.card[data-model='demo-coder'] .stats div:nth-child(4) dd"
            ).text
        )
    )
    unload = page.driver.find_element(By.CSS_SELECTOR, "button[aria-label='Unload demo-coder']")
    page.wait(lambda d: unload.is_enabled())
    unload.click()
    wait_state(page, "demo-coder", "stopped")
    assert http.get("/running").json()["running"] == []


def test_unload_all_stops_every_model(page: Browser, daemon: UIDaemon, http: httpx.Client) -> None:
    assert http.post("/api/models/load/demo-embed").status_code == 200
    assert http.post("/api/models/load/demo-chat").status_code == 200
    open_view(page, daemon.url, "models")
    wait_state(page, "demo-embed", "ready")
    page.driver.find_element(By.ID, "unload-all").click()
    for model in MODELS:
        wait_state(page, model, "stopped")


def test_playground_streams_tokens_and_a_second_model_swaps_in(
    page: Browser, daemon: UIDaemon, http: httpx.Client
) -> None:
    unload_all(http)
    open_view(page, daemon.url, "playground")
    page.wait(lambda d: len(Select(d.find_element(By.ID, "pg-model")).options) >= len(MODELS))
    chat(page, "demo-chat", "Hello there")
    # the loading state (send_loading_state) shows while demo-chat loads
    page.wait(lambda d: "demo-chat" in (last_answer(page) or {}).get("loading", ""))
    # tokens appear while the answer is still streaming, then it completes
    page.wait(lambda d: (a := last_answer(page)) and a["text"] and a["streaming"], 30)
    page.wait(lambda d: (last_answer(page) or {}).get("done") == "ok", 30)
    answer = last_answer(page)
    assert "demo-chat" in answer["text"]
    assert "tokens" in answer["meta"]

    chat(page, "demo-coder", "And you?")
    page.wait(lambda d: (last_answer(page) or {}).get("done") == "ok", 30)
    assert "demo-coder" in last_answer(page)["text"]

    page.driver.find_element(By.CSS_SELECTOR, "a[data-view='swaps']").click()
    swap = page.wait(
        lambda d: d.execute_script(
            "const s = document.querySelector(\"li.swap.ok[data-model='demo-coder']\");"
            "return s && {evicted: [...s.querySelectorAll('.chip.evict')].map(c => c.textContent),"
            " text: s.textContent};"
        ),
        30,
    )
    assert swap["evicted"] == ["demo-chat"]
    assert "ready in" in swap["text"]


def test_stop_aborts_the_stream_and_cancels_it_upstream(
    page: Browser, daemon: UIDaemon, http: httpx.Client
) -> None:
    assert http.post("/api/models/load/demo-chat").status_code == 200
    open_view(page, daemon.url, "playground")
    page.wait(lambda d: len(Select(d.find_element(By.ID, "pg-model")).options) >= len(MODELS))
    before = sum("client disconnected; stopping the stream" in line for line in daemon.lines)
    chat(page, "demo-chat", "Tell me a long story")
    page.wait(lambda d: (a := last_answer(page)) and a["text"], 30)
    page.driver.find_element(By.ID, "pg-stop").click()
    page.wait(lambda d: (last_answer(page) or {}).get("done") == "stopped", 10)
    assert "stopped" in last_answer(page)["meta"]
    # the demo upstream saw its client leave: the daemon cancelled the upstream request
    page.wait(
        lambda d: (
            sum("client disconnected; stopping the stream" in line for line in daemon.lines)
            > before
        ),
        10,
    )
    assert page.driver.find_element(By.ID, "pg-send").is_displayed()


def test_requests_appear_in_activity_live_and_in_the_history(
    page: Browser, daemon: UIDaemon, http: httpx.Client
) -> None:
    body = {"model": "demo-embed", "input": "earlier"}
    assert http.post("/v1/embeddings", json=body).status_code == 200
    open_view(page, daemon.url, "activity")
    table = page.driver.find_element(By.ID, "activity-table")
    # made before the page opened: only the history (/api/activity) knows it
    page.wait(lambda d: table.find_elements(By.CSS_SELECTOR, "tr[data-model='demo-embed']"))

    # a streamed request shows in flight while it runs (request_start, request_progress)
    stream_body = {
        "model": "demo-chat",
        "stream": True,
        "max_tokens": 120,
        "messages": [{"role": "user", "content": "a long one"}],
    }
    done = threading.Event()

    def stream() -> None:
        with http.stream("POST", "/v1/chat/completions", json=stream_body) as response:
            for _ in response.iter_bytes():
                pass
        done.set()

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    running = "#inflight-table tr[data-model='demo-chat']"
    page.wait(lambda d: d.find_elements(By.CSS_SELECTOR, running), 30)
    thread.join(60)
    assert done.is_set()
    page.wait(lambda d: not d.find_elements(By.CSS_SELECTOR, running), 30)

    chat_body = {"model": "demo-coder", "messages": [{"role": "user", "content": "hi"}]}
    assert http.post("/v1/chat/completions", json=chat_body).status_code == 200
    ok_row = "tr[data-model='demo-coder'][data-status='200']"
    # read in one script: the rows are redrawn as events arrive (an element could go stale)
    cells = page.wait(
        lambda d: d.execute_script(
            "const row = document.querySelector(`#activity-table ${arguments[0]}`);"
            "return row && Object.fromEntries([...row.cells].map("
            "c => [c.dataset.label, c.textContent]));",
            ok_row,
        ),
        30,
    )
    assert cells["Path"] == "/v1/chat/completions"
    assert "→" in cells["Tokens"]  # prompt → completion tokens
    assert cells["Tok/s"] != "—"
    assert cells["Queue"] != "—"
    # a failed request is listed too, marked as failed
    assert http.get("/upstream/demo-coder/no-such-page").status_code == 404
    failed_row = "tr.failed[data-model='demo-coder'][data-status='404']"
    page.wait(lambda d: table.find_elements(By.CSS_SELECTOR, failed_row), 30)
    assert not page.driver.find_element(By.ID, "history-note").is_displayed()


def test_logs_show_a_models_output_live(
    page: Browser, daemon: UIDaemon, http: httpx.Client
) -> None:
    def starts_shown() -> int:
        return int(
            page.js(
                "return document.getElementById('logs-out').textContent"
                ".split('loading demo-coder (pretending').length - 1"
            )
        )

    unload_all(http)
    open_view(page, daemon.url, "logs")
    source = page.wait(lambda d: d.find_element(By.ID, "logs-source"))
    page.wait(lambda d: len(Select(source).options) >= 2 + len(MODELS))
    Select(source).select_by_value("demo-coder")
    out = page.driver.find_element(By.ID, "logs-out")
    # the backlog: every earlier start of demo-coder in this daemon's life (maybe none)
    page.wait(
        lambda d: starts_shown() == sum("loading demo-coder (pretending" in x for x in daemon.lines)
    )
    before = starts_shown()
    assert http.post("/api/models/load/demo-coder").status_code == 200
    page.wait(lambda d: starts_shown() == before + 1, 30)
    # the proxy's own log is there too, with its backlog
    Select(source).select_by_value("proxy")
    page.wait(lambda d: "listening on http://" in out.text, 30)


def test_phone_width_renders_every_view_without_horizontal_scrolling(
    page: Browser, daemon: UIDaemon, http: httpx.Client
) -> None:
    assert http.post("/api/models/load/demo-chat").status_code == 200
    page.set_size(390, 844)
    open_view(page, daemon.url, "models")
    for view in ("models", "activity", "swaps", "logs", "playground"):
        page.driver.find_element(By.CSS_SELECTOR, f"a[data-view='{view}']").click()
        page.wait(lambda d, v=view: d.find_element(By.ID, f"view-{v}").is_displayed())
        width = page.js("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"{view}: {width[0]} px of content in a {width[1]} px viewport"


def test_follows_the_systems_dark_setting(page: Browser, daemon: UIDaemon) -> None:
    def background() -> float:
        rgb = page.js(
            "return getComputedStyle(document.body).backgroundColor.match(/\\d+/g).map(Number)"
        )
        return sum(rgb[:3]) / (3 * 255)

    open_view(page, daemon.url, "models")
    assert background() > 0.8
    page.set_dark(True)
    page.wait(lambda d: background() < 0.2)


def test_keyboard_reaches_the_views_and_the_buttons(page: Browser, daemon: UIDaemon) -> None:
    open_view(page, daemon.url, "models")
    page.driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)  # the skip link
    focused = [page.js("return document.activeElement.textContent.trim()")]
    for _ in range(10):
        page.driver.switch_to.active_element.send_keys(Keys.TAB)
        focused.append(page.js("return document.activeElement.textContent.trim()"))
    assert "Activity" in focused, focused
    assert "Load" in focused or "Unload all" in focused, focused
    activity = page.driver.find_element(By.CSS_SELECTOR, "a[data-view='activity']")
    activity.send_keys(Keys.ENTER)
    page.wait(lambda d: d.find_element(By.ID, "view-activity").is_displayed())


def test_a_reload_updates_the_models_without_a_page_reload(page: Browser, daemon: UIDaemon) -> None:
    open_view(page, daemon.url, "models")
    card = "article.card[data-model='demo-coder'] .card-desc"
    page.wait(lambda d: d.find_element(By.CSS_SELECTOR, card).text == "A faster demo model")
    config = daemon.config_path.read_text()
    daemon.config_path.write_text(config.replace("A faster demo model", "Now even faster"))
    try:
        daemon.process.send_signal(signal.SIGHUP)
        page.wait(lambda d: d.find_element(By.CSS_SELECTOR, card).text == "Now even faster", 30)
        # the feed's reload event is told in a toast
        page.wait(lambda d: "Configuration reloaded" in d.find_element(By.ID, "toasts").text)
    finally:
        daemon.config_path.write_text(config)
        daemon.process.send_signal(signal.SIGHUP)


# -- with api_keys ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIDaemon]:
    # without send_loading_state: the Playground shows the loading from the feed instead
    config = demo_config(extra='api_keys = ["right-key-123"]', loading_state=False)
    instance = UIDaemon(config, tmp_path_factory.mktemp("keyed"))
    try:
        yield instance
    finally:
        instance.stop()


def test_api_key_prompt_refuses_a_wrong_key_and_takes_the_right_one(
    browser: Browser, keyed_daemon: UIDaemon
) -> None:
    page = browser
    page.set_size(1280, 900)
    page.console()
    page.driver.get("about:blank")
    page.driver.get(f"{keyed_daemon.url}/ui/#/models")
    dialog = page.wait(lambda d: d.find_element(By.ID, "key-dialog"))
    page.wait(lambda d: dialog.is_displayed())
    assert "needs an API key" in dialog.text
    key = page.driver.find_element(By.ID, "key-input")
    key.send_keys("wrong-key")
    key.send_keys(Keys.ENTER)
    error = page.driver.find_element(By.ID, "key-error")
    page.wait(lambda d: error.is_displayed())
    assert "Wrong key" in error.text
    assert dialog.is_displayed()
    key.clear()
    key.send_keys("right-key-123")
    key.send_keys(Keys.ENTER)
    page.wait(lambda d: not dialog.is_displayed())
    page.wait(lambda d: "live" in d.find_element(By.ID, "conn").get_attribute("class"))
    page.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "article.card")) == len(MODELS))
    # kept for the browser session: a reload does not ask again
    page.driver.refresh()
    page.wait(lambda d: "live" in d.find_element(By.ID, "conn").get_attribute("class"))
    assert not page.driver.find_element(By.ID, "key-dialog").is_displayed()
    # the only console lines: the browser's notices of the 401 answers the prompt handled
    errors = page.console_errors(allowed=(*OPTIONAL_ENDPOINTS, "/v1/models"))
    assert not errors, errors
    for entry in page.console():
        assert "right-key-123" not in entry.get("message", "")


def test_with_a_key_the_playground_chats_and_shows_the_load_from_the_feed(
    browser: Browser, keyed_daemon: UIDaemon
) -> None:
    page = browser
    page.console()
    headers = {"authorization": "Bearer right-key-123"}
    assert httpx.post(f"{keyed_daemon.url}/api/models/unload", headers=headers).status_code == 200
    page.driver.get("about:blank")
    page.driver.get(f"{keyed_daemon.url}/ui/#/playground")  # the key is kept for the session
    page.wait(lambda d: "live" in d.find_element(By.ID, "conn").get_attribute("class"))
    page.wait(lambda d: len(Select(d.find_element(By.ID, "pg-model")).options) >= len(MODELS))
    chat(page, "demo-chat", "hello")
    page.wait(
        lambda d: "Loading demo-chat (starting)" in (last_answer(page) or {}).get("loading", "")
    )
    page.wait(lambda d: (last_answer(page) or {}).get("done") == "ok", 30)
    assert "demo-chat" in last_answer(page)["text"]
    assert not page.console_errors(allowed=OPTIONAL_ENDPOINTS)


def test_a_changed_key_brings_the_prompt_back(browser: Browser, keyed_daemon: UIDaemon) -> None:
    page = browser
    page.driver.get("about:blank")
    page.driver.get(f"{keyed_daemon.url}/ui/#/models")
    page.wait(lambda d: "live" in d.find_element(By.ID, "conn").get_attribute("class"))
    page.console()
    # when the config's key changes (a reload cuts the feed of clients with the old key)
    config = keyed_daemon.config_path.read_text().replace("right-key-123", "new-key-456")
    keyed_daemon.config_path.write_text(config)
    keyed_daemon.process.send_signal(signal.SIGHUP)
    # then the page reconnects, finds its key refused and asks again
    dialog = page.driver.find_element(By.ID, "key-dialog")
    page.wait(lambda d: dialog.is_displayed(), 30)
    assert "no longer accepts" in dialog.text
    key = page.driver.find_element(By.ID, "key-input")
    key.send_keys("new-key-456")
    key.send_keys(Keys.ENTER)
    page.wait(lambda d: not dialog.is_displayed())
    page.wait(lambda d: "live" in d.find_element(By.ID, "conn").get_attribute("class"))
    page.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "article.card")) == len(MODELS))
    assert not page.console_errors(allowed=(*OPTIONAL_ENDPOINTS, "/v1/models"))


def test_the_page_reconnects_by_itself_when_the_daemon_comes_back(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    port = free_port()
    workdir = tmp_path_factory.mktemp("restart")
    first = UIDaemon(demo_config(), workdir, listen=f"127.0.0.1:{port}")
    page = browser
    try:
        page.driver.get("about:blank")
        page.driver.get(f"{first.url}/ui/#/models")
        page.wait(lambda d: "live" in d.find_element(By.ID, "conn").get_attribute("class"))
    finally:
        first.stop()
    page.wait(lambda d: "retry" in d.find_element(By.ID, "conn").get_attribute("class"), 30)
    second = UIDaemon(demo_config(), workdir, listen=f"127.0.0.1:{port}")
    try:
        assert httpx.post(f"{second.url}/api/models/load/demo-embed").status_code == 200
        # no reload of the page: the feed reconnects and shows the new daemon's state
        page.wait(lambda d: "live" in d.find_element(By.ID, "conn").get_attribute("class"), 30)
        page.wait(lambda d: card_state(page, "demo-embed") == "ready", 30)
        # while the daemon was away, only the browser's own connection-refused notices
        errors = [e for e in page.console() if e.get("level") == "SEVERE"]
        assert all(e.get("source") == "network" for e in errors), errors
    finally:
        page.driver.get("about:blank")  # the page would go on retrying the stopped daemon
        second.stop()


#: WCAG 2 contrast of every visible text on the page, against its (first opaque) background
CONTRAST_JS = (Path(__file__).parent / "contrast.js").read_text()


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
def test_text_has_readable_contrast_in_both_schemes(
    page: Browser, daemon: UIDaemon, http: httpx.Client, dark: bool
) -> None:
    assert http.post("/api/models/load/demo-embed").status_code == 200
    page.set_dark(dark)
    for view in ("models", "activity", "swaps", "logs", "playground"):
        open_view(page, daemon.url, view)
        if view == "models":
            page.wait(lambda d: card_state(page, "demo-embed") == "ready")
        assert page.js(CONTRAST_JS) == [], view
