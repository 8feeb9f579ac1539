"""The browser surface as a musician sees it, in headless Chromium against a live bridge on JACK:
the chord lane shows the chord the bridge sent (within 100 ms of the MIDI a peer records) and
the harmonizer's planned chords before they sound, the piano roll and activity lights follow the
input, the VA playhead moves with the transport, an SNC song's stems show by name, controls fit
their parameters, and the page never scrolls sideways at 1920, 1280, 1024x768 and 390x844.

Screenshots of the four sizes are saved in the test's temporary folder; with
``SCOREBRIDGE_SCREENSHOTS=DIR`` they are also copied there (docs/ holds the ones
docs/control.md shows)."""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bridge.web.live import chord_name
from tests.test_maps_live import oscsend, wait_until
from tests.test_snc_player import encode_song, stems_audio
from tests.test_web import browser, web_url  # noqa: F401 (fixture)

pytestmark = [pytest.mark.jack, pytest.mark.slow]

SIZES = {"1920": (1920, 1080), "1280": (1280, 800), "tablet": (1024, 768), "phone": (390, 844)}
# The melody the peer plays, one note per beat: each gets a rule chord under it at once.
MELODY = [72, 74, 76, 77, 79, 77, 76, 74, 72, 71, 72, 76]


@pytest.fixture(scope="module")
def song_dir(tmp_path_factory) -> Path:
    """A folder holding a 6 s SNC song of four named stems (vocals, drums, bass, keys), loud for
    3 s and quiet for 3 s (meters that move)."""
    folder = tmp_path_factory.mktemp("songs")
    stems = stems_audio(6.0, bursts=True)
    encode_song(folder, "four", stems, 0.8 * sum(stems.values()), "compact")
    for leftover in folder.glob("*.wav"):
        leftover.unlink()
    return folder


def write_curve(path: Path) -> Path:
    """A 60 s VA curve: valence rises, arousal falls."""
    t = np.arange(0, 60.5, 0.5)
    rows = [f"{s:.1f},{-1 + s / 30:.3f},{1 - s / 30:.3f}" for s in t]
    path.write_text("time_s,valence,arousal\n" + "\n".join(rows) + "\n")
    return path


def set_viewport(driver, width: int, height: int) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500})


# What overflows at this size: the page's width, and every visible element whose box leaves the
# screen or its parameter row (a value text running into the learn button).
OVERFLOW_JS = """
const out = {scrollWidth: document.scrollingElement.scrollWidth, innerWidth: innerWidth, outside: [], overlaps: []};
for (const node of document.querySelectorAll('body *')) {
  const box = node.getBoundingClientRect();
  if (box.width === 0 || node.closest('[hidden]')) continue;
  if (box.right > innerWidth + 0.5 || box.left < -0.5) {
    out.outside.push(node.tagName + '#' + node.id + '.' + node.className);
  }
}
for (const row of document.querySelectorAll('.param')) {
  const parts = [...row.children].map((c) => c.getBoundingClientRect());
  for (let i = 1; i < parts.length; i++) {
    if (parts[i].width && parts[i - 1].width && parts[i - 1].right > parts[i].left + 0.5) {
      out.overlaps.push(row.dataset.target + ':' + i);
    }
  }
}
return out;
"""


def check_sizes(driver, folder: Path, name: str, show: str = "") -> None:
    """At each size: no sideways scroll, nothing off screen or over its neighbour; a screenshot
    NAME-SIZE.png in ``folder`` (and in $SCOREBRIDGE_SCREENSHOTS when set), scrolled to the
    element with id ``show`` if given."""
    for size, (width, height) in SIZES.items():
        set_viewport(driver, width, height)
        if show:
            driver.execute_script(f"document.getElementById('{show}').scrollIntoView()")
        time.sleep(0.3)
        found = driver.execute_script(OVERFLOW_JS)
        shot = folder / f"{name}-{size}.png"
        driver.save_screenshot(str(shot))
        if os.environ.get("SCOREBRIDGE_SCREENSHOTS"):
            shutil.copy(shot, Path(os.environ["SCOREBRIDGE_SCREENSHOTS"]) / shot.name)
        assert found["scrollWidth"] <= found["innerWidth"], (size, found)
        assert not found["outside"] and not found["overlaps"], (size, found)


def test_the_page_fits_every_screen_and_its_controls_fit_their_parameters(start_bridge, browser, tmp_path,  # noqa: F811
                                                                          song_dir, monkeypatch):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    monkeypatch.setenv("SCOREBRIDGE_SNC_DIR", str(song_dir))
    curve = write_curve(tmp_path / "film.csv")
    bridge = start_bridge("--web-port", "0", "--allow-dir", str(tmp_path), "--slot", "rule=rule",
                          "--slot", "harmony=harmonizer@all/2", "--slot", "cont=continuation@all/3",
                          "--slot", "va=va@all/4", "--slot", "song=snc")
    oscsend(bridge, "/scorebridge/song/file", "s", "four")
    browser.get(web_url(bridge))
    wait = WebDriverWait(browser, 15)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-connected") == "1")

    # The song's stems by the names, roles and colours of its manifest, in place of gain_1..8.
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#slot-song .strip")) == 4)
    assert [s.get_attribute("data-stem") for s in browser.find_elements(By.CSS_SELECTOR, "#slot-song .strip")] == \
        ["vocals", "drums", "bass", "keys"]
    assert not browser.find_elements(By.ID, "song-gain_5")
    browser.find_element(By.CSS_SELECTOR, '[data-learn="song/mute_2"]').click()  # stems keep MIDI learn
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '.armed[data-target="song/mute_2"]'))
    oscsend(bridge, "/scorebridge/learn/cancel")
    # Played from the start, each stem's meter and the mix's move: loud, then 22 dB quieter. On a
    # loaded machine the player may still be decoding when the transport starts and then joins
    # the transport past the loud first 3 s (as it should), so the song is played from its start
    # up to 3 times (a start continues where the transport stopped: locate to beat 0 first).
    levels: dict[str, set[float]] = {"song/1": set(), "song/mix": set()}
    for _ in range(3):
        oscsend(bridge, "/scorebridge/transport/stop")
        oscsend(bridge, "/scorebridge/transport/locate", "f", "0")
        oscsend(bridge, "/scorebridge/transport/start")
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and not all(v and max(v) - min(v) > 15 for v in levels.values()):
            for meter, seen in levels.items():
                level = browser.find_element(By.CSS_SELECTOR, f'[data-meter="{meter}"]').get_attribute("data-level")
                if level:
                    seen.add(float(level))
            time.sleep(0.05)
        if all(v and max(v) - min(v) > 15 for v in levels.values()):
            break
    assert all(v and max(v) - min(v) > 15 for v in levels.values()), levels
    # A seed is typed (or drawn anew), never a slider over two billion values.
    seed = browser.find_element(By.ID, "harmony-seed")
    assert seed.get_attribute("type") == "number"
    browser.find_element(By.CSS_SELECTOR, '[data-seed="/scorebridge/harmony/seed"]').click()
    wait.until(lambda d: int(d.find_element(By.ID, "harmony-seed").get_attribute("value")) >= 0)
    # Huge ranges are typed too; ranges a hand can sweep are sliders with a step of about 1/200 to 1/2000.
    assert browser.find_element(By.ID, "song-offset_beats").get_attribute("type") == "number"
    temperature = browser.find_element(By.ID, "harmony-temperature")
    assert temperature.get_attribute("type") == "range"
    span = float(temperature.get_attribute("max")) - float(temperature.get_attribute("min"))
    assert 200 <= span / float(temperature.get_attribute("step")) <= 2000
    # A file is picked among the allowed folder's files.
    choices = browser.find_element(By.ID, "va-curve")
    assert choices.tag_name == "select" and str(curve) in \
        [o.get_attribute("value") for o in choices.find_elements(By.TAG_NAME, "option")]
    assert browser.find_element(By.ID, "harmony-style").tag_name == "select"
    assert browser.find_elements(By.CSS_SELECTOR, '[data-learn="harmony/seed"]')  # every control keeps learn
    # Every control is reachable from the keyboard: native inputs, selects and buttons, none skipped.
    unreachable = browser.execute_script(
        "return [...document.querySelectorAll('[data-address], [data-learn], [data-send], [data-seed], .solo')]"
        ".filter((n) => !n.closest('[hidden]') && !n.classList.contains('lamp') && (n.tabIndex < 0 || n.disabled))"
        ".map((n) => n.outerHTML)")
    assert not unreachable
    browser.execute_script("document.getElementById('start').focus()")
    ActionChains(browser).send_keys(Keys.TAB).perform()
    assert browser.switch_to.active_element.get_attribute("id") == "stop"

    check_sizes(browser, tmp_path, "mixer", show="slot-song")
    _, _, err = bridge.stop()
    # Connections are DEBUG news: the console stays quiet at the default level.
    assert not [line for line in err.splitlines() if "connection" in line.lower() or "GET /" in line], err[-2000:]


def test_the_chord_lane_shows_what_the_bridge_sends_and_plans(start_bridge, peer_for, browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    curve = write_curve(tmp_path / "film.csv")
    bridge = start_bridge("--web-port", "0", "--allow-dir", str(tmp_path), "--tempo", "120",
                          "--slot", "rule=rule@all/1", "--slot", "harmony=harmonizer@all/2", "--slot", "va=va@all/4",
                          "--slot", "cont=continuation@all/3")
    for args in (("/scorebridge/harmony/mode", "s", "clip"), ("/scorebridge/harmony/clip_bars", "i", "1"),
                 ("/scorebridge/va/curve", "s", str(curve))):
        oscsend(bridge, *args)
    peer = peer_for(bridge)
    browser.get(web_url(bridge))
    wait = WebDriverWait(browser, 15)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-connected") == "1")
    oscsend(bridge, "/scorebridge/transport/stop")  # the internal clock runs from boot: start at 0
    oscsend(bridge, "/scorebridge/transport/start")
    clock_offset = time.time() - time.perf_counter()  # the page stamps with Date.now()
    for pitch in MELODY:  # one note a beat at 120 BPM
        peer.send([0x90, pitch, 90])
        time.sleep(0.45)
        peer.send([0x80, pitch, 0])
        time.sleep(0.05)


    def harmony_planned_then_sounded() -> bool:
        shown = browser.execute_script("return window.scorebridgeShown")
        planned = [p for p in shown["planned"] if p["slot"] == "harmony"]
        sounded = [c for c in shown["chords"] if c["slot"] == "harmony" and c["chord"]]
        return any(p["chord"] == c["chord"] and p["at"] < c["at"] for p in planned for c in sounded)

    wait_until(harmony_planned_then_sounded, 6.0)  # the loop of bar 1 plays from bar 2 on
    shown = browser.execute_script("return window.scorebridgeShown")
    # Rule chords (channel 1) as the peer recorded them: each change, its time and its name.
    # (A note struck again while it sounds stacks: it stops at its last note-off, as the bridge counts.)
    sounding: Counter[int] = Counter()
    sent: list[tuple[float, str]] = []
    for at, message in peer.notes():
        if message[0] & 0x0F != 0:
            continue
        if message[0] & 0xF0 == 0x90 and message[2] > 0:
            sounding[message[1]] += 1
        elif sounding[message[1]] > 0:
            sounding[message[1]] -= 1
        sent.append((at + clock_offset, chord_name(sorted(p for p, n in sounding.items() if n > 0))))
    chords = [(at, chord) for at, chord in sent if chord]
    page = [(c["at"] / 1000, c["chord"]) for c in shown["chords"] if c["slot"] == "rule" and c["chord"]]
    assert len(page) >= 6, page
    delays = []
    for at, chord in page:
        before = [t for t, name in chords if name == chord and t <= at + 0.005]
        assert before, (chord, at, chords[:5])
        delays.append(at - before[-1])
    assert max(delays) < 0.1, delays

    # The harmonizer's planned chords were shown before they sounded.
    planned = [p for p in shown["planned"] if p["slot"] == "harmony"]
    assert planned, shown["planned"]
    assert all(p["start"] > p["beats"] for p in planned)
    sounded = [c for c in shown["chords"] if c["slot"] == "harmony" and c["chord"]]
    assert any(p["chord"] == c["chord"] and p["at"] < c["at"] for p in planned for c in sounded), (planned, sounded)

    # The continuation, silent while the melody plays, says when it will start, then plays.
    def states() -> list[tuple[str, float]]:
        shown = browser.execute_script("return window.scorebridgeShown")
        return [(s["state"], s["beats"]) for s in shown["states"] if s["slot"] == "cont"]

    assert wait_until(lambda: "playing" in [s for s, _ in states()], 8.0), states()
    seen = [s for s, _ in states()]
    playing_at = states()[seen.index("playing")][1]
    announced = [s for s in seen[:seen.index("playing")] if s.startswith("will start at bar")]
    assert seen[0] == "listening" and announced, seen
    assert seen[seen.index(announced[-1]) - 1] == "listening" and set(announced) == {announced[-1]}, seen
    bar = int(announced[-1].rsplit(" ", 1)[1])  # the bar it announced is the bar it played from
    assert 0 <= playing_at - 4 * (bar - 1) < 1, (seen, playing_at)

    # The VA playhead moves with the transport: about a second of curve time per second.
    canvas = browser.find_element(By.ID, "affect-curve")
    first = float(wait.until(lambda d: canvas.get_attribute("data-playhead")))
    time.sleep(1.0)
    second = float(canvas.get_attribute("data-playhead"))
    assert 0.7 < second - first < 1.3, (first, second)
    source = browser.find_element(By.ID, "affect-source").text
    assert "curve (va)" in source
    # Activity: the input port's light, the rule slot's latency, notes in the piano roll.
    assert browser.find_elements(By.CSS_SELECTOR, '[data-light^="in:"]')
    latency = browser.find_element(By.CSS_SELECTOR, '[data-light="slot:rule"] .latency').text
    assert latency.endswith("ms"), latency
    assert wait_until(lambda: int(browser.find_element(By.ID, "roll").get_attribute("data-notes") or 0) > 0)
    check_sizes(browser, tmp_path, "playing")
