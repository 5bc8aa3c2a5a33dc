"""Fixtures of the interop tests: the installed JS client, an HTTP session, a paired terminal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from multipair.simulator import Simulator
from tests.interop.js_harness import install_client
from tests.simulator.helpers import paired_simulator


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with js/node_modules installed (npm ci once per session if needed)."""
    return install_client()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def paired_sim(tmp_path: Path) -> AsyncIterator[Simulator]:
    """One terminal that already paired with POS1 (the test keys), as after a restart."""
    async with paired_simulator(tmp_path / "state", 1) as simulator:
        yield simulator
