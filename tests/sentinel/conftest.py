"""A Sentinel deployment (a primary, a replica, three Sentinels), passwords on both levels.

``sentinels`` is shared by the tests that do not move the primary; a test
that kills it starts its own (``SentinelDeployment`` in tests/sentinel_servers.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_server import RedisServerError, find_redis_server
from tests.sentinel_servers import SentinelDeployment

DATA_PASSWORD = "data-pw-1"
SENTINEL_PASSWORD = "sentinel-pw-1"


def start_deployment(**options: object) -> SentinelDeployment:
    """A running deployment with both passwords (skips without a redis-server)."""
    if find_redis_server() is None:
        pytest.skip("no redis-server: cannot start Sentinels")
    deployment = SentinelDeployment(
        password=DATA_PASSWORD,
        sentinel_password=SENTINEL_PASSWORD,
        **options,  # type: ignore[arg-type]
    )
    try:
        deployment.start()
    except RedisServerError as exc:
        pytest.fail(f"could not start a Sentinel deployment: {exc}")
    return deployment


@pytest.fixture(scope="session")
def sentinels() -> Iterator[SentinelDeployment]:
    deployment = start_deployment()
    yield deployment
    deployment.stop()
