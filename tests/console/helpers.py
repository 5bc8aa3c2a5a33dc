"""The console as ops run it (``multipair console``), and a headless Chromium to look at it.

Selenium's calls block, and the simulator runs in the test's own event
loop: every browser call goes through a thread (``asyncio.to_thread``), so
the terminals keep answering while the browser waits for a page.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from tests.poll import poll_until
from tests.worker.helpers import WAIT, LoggedProcess

T = TypeVar("T")

TOKEN = "console-test-token-0123456789"
CHROMIUM_HELP = (
    "no headless Chromium for the browser tests: install Debian's `chromium` and "
    "`chromium-driver` (apt-get install -y chromium chromium-driver) and `selenium` "
    "(the test extra)"
)


def find_chromium() -> tuple[str, str] | None:
    """The browser and its driver: Debian's ``chromium`` and ``chromedriver``, if installed."""
    browser = next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p),
        None,
    )
    driver = shutil.which("chromedriver")
    return None if browser is None or driver is None else (browser, driver)


@dataclass
class ConsoleProcess(LoggedProcess):
    """``python -m multipair.cli --json console --port 0``, logging to a file."""

    env: dict[str, str]
    log_path: Path
    proc: asyncio.subprocess.Process | None = None
    url: str = ""

    async def start(self) -> str:
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "multipair.cli",
                "--json",
                "console",
                "--port",
                "0",
                env=self.env,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        assert self.proc.stdout is not None
        async with asyncio.timeout(WAIT):
            line = await self.proc.stdout.readline()
        assert line, f"the console did not start: {self.logs()}"
        serving = orjson.loads(line)
        assert "serving" == serving["event"], serving
        self.url = str(serving["url"]).rstrip("/")
        return self.url

    async def stop(self) -> int | None:
        if self.proc is None or self.proc.returncode is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.terminate()
        try:
            return await asyncio.wait_for(self.proc.wait(), WAIT)
        except TimeoutError:
            self.proc.kill()
            return await self.proc.wait()


class Browser:
    """A headless Chromium page, driven from async tests (each call in a thread)."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    @classmethod
    def start(cls, binary: str, driver_path: str) -> Browser:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1440,900",
            "--force-device-scale-factor=1",
        ):
            options.add_argument(argument)
        return cls(webdriver.Chrome(options=options, service=Service(driver_path)))

    def quit(self) -> None:
        with contextlib.suppress(Exception):
            self.driver.quit()

    async def get(self, url: str) -> None:
        await asyncio.to_thread(self.driver.get, url)

    async def js(self, script: str, *args: Any) -> Any:
        return await asyncio.to_thread(self.driver.execute_script, script, *args)

    async def text(self, css: str) -> str | None:
        """The text of the first element matching ``css``; None when there is none."""
        found: str | None = await self.js(
            "const n = document.querySelector(arguments[0]); return n ? n.textContent : null;", css
        )
        return found

    async def click(self, css: str) -> None:
        """A real click (Selenium's), once the element is there and enabled."""

        def click() -> None:
            from selenium.webdriver.common.by import By

            self.driver.find_element(By.CSS_SELECTOR, css).click()

        async def ready() -> bool:
            enabled: bool = await self.js(
                "const n = document.querySelector(arguments[0]);"
                "return Boolean(n) && !n.disabled && n.offsetParent !== null;",
                css,
            )
            return enabled

        await poll_until(ready, f"{css} clickable")
        await asyncio.to_thread(click)

    async def confirm(self) -> str:
        """OK the confirmation dialog that an action opened; the question it asked."""

        async def open_dialog() -> str | None:
            text: str | None = await self.js(
                "const d = document.getElementById('confirm');"
                "return d && d.open ? document.getElementById('confirm-text').textContent : null;"
            )
            return text

        question = await poll_until(open_dialog, "the confirmation dialog")
        await self.click("#confirm-ok")
        return question

    async def screenshot(self, path: Path, *, fit: bool = False) -> Path:
        """A PNG of the window; ``fit``: the window made as tall as the page first."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if fit:
            height = await self.js(
                "return Math.ceil(document.querySelector('main').getBoundingClientRect().bottom)"
                " + window.outerHeight - window.innerHeight"
            )
            size = await asyncio.to_thread(self.driver.get_window_size)
            await asyncio.to_thread(self.driver.set_window_size, size["width"], int(height) + 8)
        await asyncio.to_thread(self.driver.save_screenshot, str(path))
        return path
