"""A primary and one replica (``--replicaof``) on free loopback ports, for durable-write tests."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis as redis_sync

from tests.poll import poll_until_sync
from tests.redis_server import RedisServer

__all__ = ["ReplicatedPair", "replicated_pair"]

_LINK_UP_S = 15.0


@dataclass
class ReplicatedPair:
    """A running primary and its replica; :meth:`paused` freezes the replica (SIGSTOP)."""

    primary: RedisServer
    replica: RedisServer

    @property
    def url(self) -> str:
        return self.primary.url

    @property
    def replica_url(self) -> str:
        return self.replica.url

    def wait_linked(self) -> None:
        """Return once the replica is in sync with the primary (``master_link_status:up``)."""
        client = redis_sync.Redis.from_url(self.replica_url)
        seen: dict[str, Any] = {}

        def linked() -> bool:
            seen.clear()
            seen.update(client.info("replication"))
            return seen.get("master_link_status") == "up"

        try:
            poll_until_sync(linked, lambda: f"replica never linked: {seen}", _LINK_UP_S)
        finally:
            client.close()

    def pause_replica(self) -> None:
        pid = self.replica.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)

    def resume_replica(self) -> None:
        pid = self.replica.pid
        assert pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The replica frozen for the block (it takes nothing and acknowledges nothing)."""
        self.pause_replica()
        try:
            yield
        finally:
            self.resume_replica()


@contextlib.contextmanager
def replicated_pair() -> Iterator[ReplicatedPair]:
    """Start a primary and a replica of it; stop both on exit."""
    primary = RedisServer()
    primary.start()
    try:
        assert primary.port is not None
        replica = RedisServer(extra_args=("--replicaof", "127.0.0.1", str(primary.port)))
        replica.start()
        try:
            pair = ReplicatedPair(primary, replica)
            pair.wait_linked()
            yield pair
        finally:
            pair_pid = replica.pid
            if pair_pid is not None:  # never leave it frozen: stop() would wait forever
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pair_pid, signal.SIGCONT)
            replica.stop()
    finally:
        primary.stop()
