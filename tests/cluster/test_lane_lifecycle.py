"""tests/worker/test_lane_lifecycle.py, all of it, on the Redis Cluster: fencing and draining."""

from tests.worker.test_lane_lifecycle import *  # noqa: F403
