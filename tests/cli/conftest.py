"""Fixtures of the CLI tests: the script pointed at this test's Redis, and lanes to drive.

Starting a lane process costs about a second, so the modules that only run
transactions share one paired lane for the whole module (:func:`running_lane`
with a module-scoped event loop); each of their tests leaves the lane idle,
enabled and paired, and uses its own ``pos_ref_id`` values. Tests that change
a lane for good (pairing, stopping the process) get their own.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from multipair.simulator import Simulator
from tests.cli.helpers import Cli
from tests.simulator.helpers import KEYS
from tests.worker.helpers import SERIAL as SERIAL  # re-exported: the terminal the CLI tests drive
from tests.worker.helpers import LaneRig, make_rig, one_terminal


@pytest.fixture
def cli(redis: aioredis.Redis, redis_url: str, key_prefix: str) -> Cli:
    """The ``multipair`` script pointed at this test's Redis database and key prefix."""
    return Cli(redis_url, key_prefix)


@dataclass
class SharedLane:
    """A running lane, its terminal and the script pointed at its prefix."""

    rig: LaneRig
    sim: Simulator
    cli: Cli

    @property
    def iid(self) -> str:
        return self.rig.instance_id


@contextlib.asynccontextmanager
async def running_lane(
    redis_url: str, tmp_path: Path, *, paired: bool = True, pairing: str = "auto"
) -> AsyncIterator[SharedLane]:
    """A simulator and a lane process on a fresh key prefix; paired unless told otherwise."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    redis = aioredis.Redis.from_url(redis_url)
    try:
        async with one_terminal(tmp_path / "sim", paired=paired, pairing=pairing) as sim:
            rig = await make_rig(
                redis,
                redis_url,
                prefix,
                tmp_path,
                address=sim.terminals[0].ws_url,
                secrets=KEYS if paired else None,
            )
            await rig.process.start()
            try:
                await rig.wait_state(status="paired_connected" if paired else "unpaired")
                yield SharedLane(rig, sim, Cli(redis_url, prefix))
            finally:
                await rig.process.kill()
    finally:
        await redis.aclose()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SharedLane]:
    """The paired lane a module shares (its tests run in the module's event loop)."""
    async with running_lane(redis_url, Path(tmp_path_factory.mktemp("lane"))) as shared:
        yield shared
