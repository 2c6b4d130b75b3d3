"""Headless Chromium for the browser tests (Debian's chromium + chromium-driver, driven by
Selenium): a fresh profile per browser, no network services, muted audio, downloads to a folder.
`chromium_missing()` says why a test must skip."""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVER = ("/usr/bin/chromedriver",)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--mute-audio", "--autoplay-policy=no-user-gesture-required",
         "--window-size=900,900"]


def _first(paths) -> str | None:
    return next((p for p in paths if Path(p).is_file()), None)


def chromium_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    if _first(CHROMIUM) is None:
        return "no Chromium (apt-get install chromium chromium-driver)"
    if _first(DRIVER) is None:
        return "no chromedriver (apt-get install chromium-driver)"
    return None


def start_browser(downloads: Path):
    """A headless Chromium with its own profile, saving downloads to `downloads`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="acr-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = _first(CHROMIUM)
    for flag in FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=Service(_first(DRIVER)))
    driver.set_page_load_timeout(30)
    driver.acr_profile = profile
    return driver


def stop_browser(driver) -> None:
    try:
        driver.quit()
    finally:
        shutil.rmtree(driver.acr_profile, ignore_errors=True)


def wait_for(predicate, timeout: float = 60.0, every: float = 0.05):
    """Poll until predicate() is truthy; returns its value (AssertionError on timeout)."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {predicate}")
        time.sleep(every)
