"""tests/worker/test_lane_link.py, all of it, on the Redis Cluster: auto address, wss://."""

from tests.worker.test_lane_link import *  # noqa: F403
