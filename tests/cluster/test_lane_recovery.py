"""tests/worker/test_lane_recovery.py, all of it, on the Redis Cluster.

``kill -9`` at every step of a purchase, terminal drops at every step, and a
lane killed between persisting rolled keys and replying.
"""

from tests.worker.test_lane_recovery import *  # noqa: F403
