"""Four simulated terminals paired with POS1, for the failover tests of issue 19."""

from __future__ import annotations

import pytest

from tests import supervisor_rig

sim = supervisor_rig.sim


@pytest.fixture
def terminals() -> int:
    """How many terminals (and lanes) the tests run."""
    return 4
