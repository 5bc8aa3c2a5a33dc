"""The lane's heartbeat: ``heartbeat_at`` in its state hash, every 2 s (docs/broker-schema.md).

One fenced round trip that also checks the lane's profile still exists: a
removed lane stops, writing nothing more. While Redis is away there is no
heartbeat; the supervisor knows it could not have seen one.
"""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial
from typing import TYPE_CHECKING, Final

from multipair.logs import get_logger
from multipair.worker.clock import iso_now

if TYPE_CHECKING:
    from multipair.worker.lane import Lane

__all__ = ["HEARTBEAT_PERIOD_S", "heartbeat_loop"]

log = get_logger("multipair.worker.lane")  # the lane's log lines, as they always were

HEARTBEAT_PERIOD_S: Final = 2.0


async def heartbeat_loop(lane: Lane) -> None:
    """Write ``heartbeat_at`` every :data:`HEARTBEAT_PERIOD_S` until the lane stops."""
    while not lane.stopped.is_set():
        # One round trip: checks the profile, then (fenced) writes heartbeat_at.
        # While Redis is away there is none: the supervisor knows it could not
        # have seen one, and does not count the gap against the lane.
        answered, present = await lane.redis_wait.best_effort(
            partial(lane.writer.heartbeat, iso_now(lane.clock))
        )
        if answered and not present:
            # The lane was removed: nothing to serve, and nothing to write.
            log.warning("profile removed: stopping")
            lane.stop_now()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HEARTBEAT_PERIOD_S):
                await lane.stopped.wait()
