"""A Sentinel deployment (a primary, a replica, three Sentinels), passwords on both levels.

``sentinels`` is shared by the tests that do not move the primary; a test
that kills it starts its own (``SentinelDeployment`` in tests/sentinel_servers.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sentinel_servers import (
    DATA_PASSWORD,
    SENTINEL_PASSWORD,
    SentinelDeployment,
    start_deployment,
)

__all__ = ["DATA_PASSWORD", "SENTINEL_PASSWORD", "sentinels", "start_deployment"]


@pytest.fixture(scope="session")
def sentinels() -> Iterator[SentinelDeployment]:
    deployment = start_deployment()
    yield deployment
    deployment.stop()
