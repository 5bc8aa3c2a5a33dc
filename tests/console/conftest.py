"""A fleet of real lanes under a real supervisor, the console over it, and a browser.

Three terminals in the simulator, already paired with their lanes; the
supervisor runs them; ``multipair console`` runs as its own process with a
known token. The browser tests skip, saying why, where no headless
Chromium (Debian's ``chromium`` and ``chromium-driver``) or no ``selenium``
is installed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests import supervisor_rig
from tests.console.helpers import CHROMIUM_HELP, TOKEN, Browser, ConsoleProcess, find_chromium
from tests.supervisor.helpers import Fleet, Lane

TERMINALS = 3
HOST = "console-host"


sim = supervisor_rig.sim
fleet = supervisor_rig.fleet


@pytest.fixture
def terminals() -> int:
    """How many terminals the simulator runs."""
    return TERMINALS


@pytest.fixture
async def lanes(fleet: Fleet) -> list[Lane]:
    """Every terminal's lane, running and connected under one supervisor."""
    added = [await fleet.add_lane(i) for i in range(TERMINALS)]
    await fleet.supervisor(HOST).start()
    for lane in added:
        await lane.running()
    return added


@pytest.fixture
async def console(fleet: Fleet, tmp_path: Path) -> AsyncIterator[ConsoleProcess]:
    """``multipair console`` on a free port, with the test token."""
    process = ConsoleProcess(fleet.env(MULTIPAIR_CONSOLE_TOKEN=TOKEN), tmp_path / "console.log")
    await process.start()
    try:
        yield process
    finally:
        await process.stop()


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    if importlib.util.find_spec("selenium") is None:
        pytest.skip(CHROMIUM_HELP)
    found = find_chromium()
    if found is None:
        pytest.skip(CHROMIUM_HELP)
    return found


@pytest.fixture
def browser(chromium: tuple[str, str]) -> Iterator[Browser]:
    started = Browser.start(*chromium)
    try:
        yield started
    finally:
        started.quit()
