"""Headless Chromium under Selenium: for the dashboard's tests, its benchmark and the
script that draws its screenshots.

Selenium drives Debian's chromium through Debian's chromedriver: both come from the same
Debian source package, so their protocol versions always match, and selenium itself is pure
Python from PyPI. Both paths are explicit, so Selenium Manager never downloads anything.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"  # Debian package chromium
CHROMEDRIVER = "/usr/bin/chromedriver"  # Debian package chromium-driver, same source package
MISSING = f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian packages chromium and chromium-driver)"


def available() -> bool:
    return bool(shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER))


@contextmanager
def chromium(workdir: Path, width: int = 1200, height: int = 900) -> Iterator:
    """A headless Chromium with a fresh profile in `workdir`, quit on leaving."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # belt and braces: no Selenium Manager downloads
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        # Without these, the closed network refuses many connections.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # A page in the background would be throttled to a frame a second: the benchmark
        # measures the page as seen.
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        f"--user-data-dir={workdir / 'profile'}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(workdir / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()


def js(driver, expression: str):
    """The value of a JavaScript expression in the page."""
    return driver.execute_script(f"return {expression};")
