"""tests/worker/test_lane.py, all of it, on the Redis Cluster.

Purchase, refund, cashout, MOTO, decline, cancel, signature, phone auth,
settlement, lookups, duplicate commands and the state hash: the tests and
their fixtures are imported, so pytest runs them here with this folder's
``redis_url`` and ``redis`` (a cluster node, a cluster client).
"""

from tests.worker.test_lane import *  # noqa: F403
