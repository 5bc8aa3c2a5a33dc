"""Thirty simulated terminals, paired with POS1 (test keys), and a fleet of supervisors on them.

Lanes and supervisors are added by each test; supervisors are killed at the
end (:mod:`tests.supervisor_rig`).
"""

from __future__ import annotations

import pytest

from tests import supervisor_rig

TERMINALS = 30

sim = supervisor_rig.sim
fleet = supervisor_rig.fleet


@pytest.fixture
def terminals() -> int:
    """How many terminals the simulator runs."""
    return TERMINALS
