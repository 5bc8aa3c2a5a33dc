"""A simulator with five terminals already paired with POS1 (test keys), and a fleet on it.

Lanes are added by each test (``fleet.add_lane(i)``); supervisors are killed
at the end (:mod:`tests.supervisor_rig`).
"""

from __future__ import annotations

import pytest

from tests import supervisor_rig

TERMINALS = 5

sim = supervisor_rig.sim
fleet = supervisor_rig.fleet


@pytest.fixture
def terminals() -> int:
    """How many terminals the simulator runs."""
    return TERMINALS
