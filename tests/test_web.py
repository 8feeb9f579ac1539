"""The browser surface: its WebSocket speaks the OSC address table as JSON (tested with a real
websockets client), it refuses foreign origins and missing tokens, and in headless Chromium a
moved control changes the engine parameter and an OSC change shows on the page."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.test_maps_live import Controller, OscListener, oscsend, surfaces, wait_until  # noqa: F401 (fixture)

pytestmark = pytest.mark.jack


def web_url(bridge) -> str:
    return re.search(r"web (http://\S+)", bridge.online_line).group(1)


def socket_url(bridge) -> str:
    parts = urlsplit(web_url(bridge))
    return f"ws://{parts.netloc}/ws" + (f"?{parts.query}" if parts.query else "")


class Browserless:
    """A WebSocket client that keeps the newest value per address."""

    def __init__(self, url: str, **kwargs) -> None:
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(url, **kwargs))
        self.values: dict[str, list] = {}

    def pump(self, seconds: float = 0.3) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                batch = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            except TimeoutError:
                return
            for address, args in batch:
                self.values[address] = args

    def send(self, address: str, *args) -> None:
        self.ws.send(json.dumps({"address": address, "args": list(args)}))

    def close(self) -> None:
        self._stack.close()


def test_websocket_speaks_the_osc_addresses_both_ways(start_bridge, surfaces):  # noqa: F811
    bridge = start_bridge("--web-port", "0", "--map", "browser")
    page = surfaces(Browserless, socket_url(bridge))
    other = surfaces(Browserless, socket_url(bridge))
    osc = surfaces(OscListener, bridge.osc_port)
    page.pump(0.5)
    described = json.loads(page.values["/scorebridge/describe"][0])
    assert [p["name"] for p in described["slots"]["rule"]["params"]][:3] == ["key", "sevenths", "voices"]
    assert "thru" in described["engines"] and len(described["surface"]) == 14
    assert page.values["/scorebridge/rule/velocity"] == [72]  # the current values come with it

    page.send("/scorebridge/rule/velocity", 33)  # as OSC would: validated, applied, fed back
    assert wait_until(lambda: 33 in osc.values("/scorebridge/rule/velocity"))
    other.pump(0.3)
    assert other.values["/scorebridge/rule/velocity"] == [33]
    page.pump(0.3)
    assert page.values["/scorebridge/rule/velocity"] == [72]  # not echoed to the browser that moved it

    oscsend(bridge, "/scorebridge/rule/key", "s", "Am")  # from OSC: every browser shows it
    page.pump(0.3)
    assert page.values["/scorebridge/rule/key"] == ["Am"]
    page.send("/scorebridge/rule/voices", 9)  # refused like over OSC, the reply goes to this browser
    page.pump(0.3)
    assert "outside 3..4" in page.values["/scorebridge/error"][0]
    page.send("/surface/pad/3")  # the browser map's pad toggles sevenths
    assert wait_until(lambda: 1 in osc.values("/scorebridge/rule/sevenths") or
                      True in osc.values("/scorebridge/rule/sevenths"))
    page.ws.send("not json")
    page.pump(0.3)
    assert "malformed" in page.values["/scorebridge/error"][0]


def test_foreign_origins_and_missing_tokens_are_refused(start_bridge):
    bridge = start_bridge("--web-port", "0")
    url = socket_url(bridge)
    with pytest.raises(InvalidStatus) as refused, connect(url, origin="http://evil.example"):
        pass
    assert refused.value.response.status_code == 403
    with connect(url, origin=web_url(bridge).rstrip("/")) as ws:  # the page's own origin is fine
        assert json.loads(ws.recv(timeout=2))
    locked = start_bridge("--web-port", "0", "--web-allow-remote", "--web-token", "s3cret")
    assert "s3cret" not in locked.online_line  # the token is never printed
    bare = web_url(locked).split("?")[0].replace("http://", "ws://") + "ws"
    for wrong in (bare, bare + "?token=guess", bare + "?token=%C3%A9"):
        with pytest.raises(InvalidStatus), connect(wrong):
            pass
    with connect(bare + "?token=s3cret") as ws:
        assert json.loads(ws.recv(timeout=2))
    page = urllib.request.urlopen(web_url(locked), timeout=5).read().decode()
    assert "<script src=\"app.js\"></script>" in page and "cdn" not in page.lower()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path: Path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (bash .ci/setup test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1400"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.mark.slow
def test_headless_chromium_moves_a_parameter_and_shows_osc_changes(start_bridge, surfaces, browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    learned = tmp_path / "learned.toml"
    bridge = start_bridge("--web-port", "0", "--map", "browser", "--learn-map", str(learned))
    osc = surfaces(OscListener, bridge.osc_port)
    knobs = surfaces(Controller.for_bridge, bridge)
    browser.get(web_url(bridge))
    wait = WebDriverWait(browser, 10)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-connected") == "1")
    velocity = wait.until(lambda d: d.find_element(By.ID, "rule-velocity"))
    wait.until(lambda d: velocity.get_attribute("value") == "72")

    velocity.send_keys(Keys.END)  # move the slider (keyboard) to its maximum
    assert wait_until(lambda: 127 in osc.values("/scorebridge/rule/velocity"), 5.0)
    browser.find_element(By.ID, "rule-sevenths").click()
    assert wait_until(lambda: True in osc.values("/scorebridge/rule/sevenths")
                      or 1 in osc.values("/scorebridge/rule/sevenths"), 5.0)
    Select(browser.find_element(By.ID, "rule-key")).select_by_value("G")
    assert wait_until(lambda: "G" in osc.values("/scorebridge/rule/key"), 5.0)

    browser.find_element(By.CSS_SELECTOR, '[data-learn="rule/voices"]').click()  # MIDI learn from the page
    wait.until(lambda d: "armed" in d.find_element(By.CSS_SELECTOR, '[data-target="rule/voices"]')
               .get_attribute("class"))
    knobs.send(0xB0, 21, 127)
    wait.until(lambda d: "learned: cc 21 ch1" in d.find_element(By.ID, "message").text)
    knobs.send(0xB0, 21, 127)
    wait.until(lambda d: d.find_element(By.ID, "rule-voices").get_attribute("value") == "4")
    assert 'cc = 21' in learned.read_text()

    oscsend(bridge, "/scorebridge/rule/velocity", "i", "42")  # changed elsewhere: the page follows
    wait.until(lambda d: d.find_element(By.ID, "rule-velocity").get_attribute("value") == "42")
    oscsend(bridge, "/scorebridge/affect/valence", "f", "0.5")
    wait.until(lambda d: d.find_element(By.ID, "valence").get_attribute("value") == "0.5")
    oscsend(bridge, "/scorebridge/rule/engine", "s", "thru")  # an engine swap redraws the slot
    wait.until(lambda d: d.find_elements(By.ID, "rule-transpose"))
    assert not browser.find_elements(By.ID, "rule-velocity")
    browser.find_element(By.ID, "panic").click()
    wait.until(lambda d: "panic" in d.find_element(By.ID, "message").text)
    browser.save_screenshot(str(tmp_path / "surface.png"))
