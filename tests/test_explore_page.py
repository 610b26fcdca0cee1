"""The explorer page in a real headless browser (Debian's chromium through chromedriver and
selenium, as the playground's test): typed text is coloured, a character's top 5 are the
endpoint's, the unit picker recolours, the step-by-step bars sum to 1, memory shades, the
gates are drawn, the page fits 375 px, and the console stays free of errors. Skips, saying
why, where chromium is absent.

CHARRNN_EXPLORE_SCREENSHOTS=DIR keeps pictures of each view; CHARRNN_EXPLORE_RUN=RUN and
CHARRNN_EXPLORE_TEXT=FILE run the same checks on another model and text (the docs' pictures)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import small_text
from tests.serving import call
from tests.test_explore import ExploreProcess
from tests.test_serve_playground import _browser

pytestmark = pytest.mark.slow

SCREENSHOTS = os.environ.get("CHARRNN_EXPLORE_SCREENSHOTS")


def _logging_browser():
    # The console's messages are asked for before the browser starts.
    from selenium.webdriver import ChromeOptions

    original = ChromeOptions.__init__

    def with_logs(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.set_capability("goog:loggingPrefs", {"browser": "ALL"})

    ChromeOptions.__init__ = with_logs
    try:
        return _browser()
    finally:
        ChromeOptions.__init__ = original


def _snap(browser, name: str, element=None) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        target = Path(SCREENSHOTS) / f"{name}.png"
        (element or browser).screenshot(str(target)) if element is not None else browser.save_screenshot(str(target))


def _colours(browser) -> list[str]:
    return browser.execute_script("return [...document.querySelectorAll('#view span[data-i]')].map(s => s.style.backgroundColor)")


def test_the_explorer_page_in_a_browser(trained_run):
    run = os.environ.get("CHARRNN_EXPLORE_RUN") or trained_run
    text_file = os.environ.get("CHARRNN_EXPLORE_TEXT")
    text = Path(text_file).read_text(encoding="utf-8")[:1500] if text_file else small_text(3)[:600]
    browser = _logging_browser()
    server = ExploreProcess(run)
    try:
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        wait = WebDriverWait(browser, 30, poll_frequency=0.05)
        browser.get(server.url + "/explore")
        wait.until(lambda b: "vocabulary" in b.find_element(By.ID, "model").text)
        box = browser.find_element(By.ID, "text")
        box.send_keys(text[:20])
        wait.until(lambda b: "bits per character" in b.find_element(By.ID, "stats").text)
        first = _colours(browser)
        # Typing text colours every character anew, and the bpc follows.
        box.clear()
        browser.execute_script("arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'))", box, text[:-1])
        box.send_keys(text[-1])
        wait.until(lambda b: len(_colours(b)) == len(text))
        colours = _colours(browser)
        assert len(set(colours[1:])) > 3 and colours != first
        status, answer, _ = call(server.url + "/v1/explain", {"text": text})
        shown_bpc = browser.find_element(By.ID, "stats").text
        assert f"{answer['bpc']:.3f} bits per character" in shown_bpc and f"unigram baseline {answer['unigram_bpc']:.3f}" in shown_bpc
        # A character's top 5 on hover are the endpoint's.
        position = min(40, len(text) - 1)
        span = browser.find_element(By.CSS_SELECTOR, f'#view span[data-i="{position}"]')
        ActionChains(browser).move_to_element(span).perform()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#tip .guess"))
        rows = browser.execute_script("return [...document.querySelectorAll('#tip .guess')].map(r => [r.dataset.token, Number(r.dataset.p)])")
        assert [t for t, _ in rows] == [t for t, _ in answer["top"][position]]
        assert all(abs(p - q) <= 1e-6 for (_, p), (_, q) in zip(rows, answer["top"][position]))
        _snap(browser, "explore-surprise")
        # The unit picker recolours the text.
        feature = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#features button"))[0]
        feature.click()
        wait.until(lambda b: "unit" in b.find_element(By.ID, "legend").text and _colours(b) != colours)
        unit_colours = _colours(browser)
        _snap(browser, "explore-unit")
        browser.execute_script(
            "const u = document.getElementById('unit'); u.value = String((Number(u.value) + 1) % 32);"
            "u.dispatchEvent(new Event('change'))"
        )
        wait.until(lambda b: _colours(b) != unit_colours)
        # A stretch selected in the text lists the units most active across it.
        browser.execute_script(
            "const r = document.createRange(); const v = document.getElementById('view');"
            "r.setStart(v.querySelector('span[data-i=\"10\"]').firstChild, 0);"
            "r.setEnd(v.querySelector('span[data-i=\"30\"]').firstChild, 1);"
            "getSelection().removeAllRanges(); getSelection().addRange(r);"
        )
        browser.find_element(By.ID, "stretch-go").click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#stretch button")) == 10)
        assert "characters 10..30" in browser.find_element(By.ID, "stretch-note").text
        # Gates: one dot per unit of every sigmoid gate of every layer.
        model = browser.execute_script("return window.explorer.model")
        dots = len(browser.find_elements(By.CSS_SELECTOR, "#gates circle"))
        assert dots == model["layers"] * 3 * model["hidden"]
        _snap(browser, "explore-gates", browser.find_element(By.ID, "gates"))
        # Memory: the characters before the one under the pointer are shaded.
        browser.find_element(By.ID, "mode-memory").click()
        ActionChains(browser).move_to_element(browser.find_element(By.CSS_SELECTOR, f'#view span[data-i="{len(text) - 2}"]')).perform()
        wait.until(lambda b: b.execute_script("return window.explorer.memory && window.explorer.memory.position") == len(text) - 2)
        shaded = [c for c in _colours(browser) if c]
        assert len(shaded) >= min(100, len(text) - 3)
        _snap(browser, "explore-memory")
        # Step by step: the bars are the whole distribution, summing to 1; a step adds its character.
        bars = wait.until(lambda b: b.execute_script("return [...document.querySelectorAll('#bars .b')].map(r => Number(r.dataset.p))"))
        assert len(bars) == model["vocab_size"] and abs(sum(bars) - 1) < 1e-4
        slider = browser.find_element(By.ID, "temperature")
        browser.execute_script("arguments[0].value = 0.1; arguments[0].dispatchEvent(new Event('input'))", slider)
        wait.until(lambda b: b.execute_script("return Math.max(...[...document.querySelectorAll('#bars .b')].map(r => Number(r.dataset.p)))") > max(bars))
        before = box.get_attribute("value")
        browser.find_element(By.ID, "step").click()
        wait.until(lambda b: len(b.find_element(By.ID, "text").get_attribute("value")) == len(before) + 1)
        _snap(browser, "explore-step", browser.find_element(By.ID, "bars"))
        # Readable on a phone: nothing wider than the screen.
        browser.set_window_size(375, 800)
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 400, width
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        browser.quit()
        server.stop()
