"""The simulator tests' terminal: one, already paired with POS1 (test keys), on free ports.

A module whose tests want the timed behaviours short overrides ``timings``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from multipair.simulator import Simulator
from tests.simulator.helpers import Control, paired_simulator


@pytest.fixture
def timings() -> tuple[float, float] | None:
    """The terminal's (``slow_card_seconds``, ``processing_seconds``); None: its own."""
    return None


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def sim(tmp_path: Path, timings: tuple[float, float] | None) -> AsyncIterator[Simulator]:
    """One terminal already paired with POS1 (seeded state in tmp_path/state), free ports."""
    async with paired_simulator(tmp_path / "state", 1) as simulator:
        if timings is not None:
            settings = simulator.terminals[0].settings
            settings.slow_card_seconds, settings.processing_seconds = timings
        yield simulator


@pytest.fixture
def control(sim: Simulator, http: aiohttp.ClientSession) -> Control:
    """The simulator's control API."""
    return Control(http, sim.control_url)
