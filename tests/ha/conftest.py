"""Four simulated terminals paired with POS1, for the failover tests of issue 19."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests import supervisor_rig
from tests.ha import pos

sim = supervisor_rig.sim


@pytest.fixture
def terminals() -> int:
    """How many terminals (and lanes) the tests run."""
    return 4


@pytest.fixture(autouse=True)
async def _stop_pos_drivers() -> AsyncIterator[None]:
    """A test that fails before it stops its POS driver leaves the driver's tasks to the
    event loop's close; stop them here, without waiting for answers."""
    yield
    while pos.RUNNING:
        await pos.RUNNING.pop().stop(drain_s=0)
