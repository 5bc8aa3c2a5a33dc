"""tests/worker/test_lane_poison.py, all of it, on the Redis Cluster.

Raw entry reads (repeats kept) through the cluster client, poison entries,
contained bugs, and entries that kill the lane.
"""

from tests.worker.test_lane_poison import *  # noqa: F403
