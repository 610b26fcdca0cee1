"""The playground page at `charrnn serve`'s root, in a real headless browser (Debian's
chromium through chromedriver and selenium): type a prompt, press Generate, watch the text
stream in. `make test` installs chromium where apt-get can; elsewhere this skips, saying why."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from tests.serving import ServerProcess

pytestmark = pytest.mark.slow

# Where to keep a picture of the page after the test (for the documentation); unset: nowhere.
SCREENSHOT_ENV = "CHARRNN_PLAYGROUND_SCREENSHOT"


def _browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("no chromium and chromedriver on PATH (Debian: apt-get install chromium chromium-driver; `make test` does it)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,800"):
        options.add_argument(flag)
    from selenium.webdriver.chrome.service import Service

    return webdriver.Chrome(service=Service(driver_path), options=options)


def test_playground_streams_text_into_the_page(trained_run):
    browser = _browser()
    server = ServerProcess(trained_run)
    try:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 20, poll_frequency=0.01)
        wait.until(lambda b: "LSTM 2x32" in b.find_element(By.ID, "model").text)
        browser.find_element(By.ID, "prompt").send_keys("[ROMEO] ")
        length = browser.find_element(By.ID, "length")
        length.clear()
        length.send_keys("8000")
        browser.find_element(By.ID, "go").click()
        # Seen while it streams: some text, but not yet all of it.
        partial = wait.until(lambda b: b.execute_script("return document.getElementById('generated').textContent"))
        lengths = {len(partial)}
        done = time.monotonic() + 20
        while "characters in" not in browser.find_element(By.ID, "status").text and time.monotonic() < done:
            lengths.add(len(browser.execute_script("return document.getElementById('generated').textContent")))
        status = browser.find_element(By.ID, "status").text
        assert status.startswith("8000 characters in"), status
        final = browser.execute_script("return document.getElementById('generated').textContent")
        assert len(final) == 8000 and len(lengths) > 2, f"the text did not appear piece by piece: lengths seen {sorted(lengths)}"
        assert browser.find_element(By.ID, "output").text.startswith("[ROMEO] ")
        if os.environ.get(SCREENSHOT_ENV):
            browser.save_screenshot(os.environ[SCREENSHOT_ENV])
    finally:
        browser.quit()
        server.stop()
