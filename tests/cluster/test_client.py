"""tests/client, all of it, on the Redis Cluster: the client library from one node's URL."""

from tests.client.conftest import *  # noqa: F403
from tests.client.test_commands import *  # noqa: F403
from tests.client.test_lanes import *  # noqa: F403
