"""Tests start Redis with the same code ``multipair up`` uses (multipair.embedded)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, TypeVar

import pytest

from multipair.embedded import RedisServer, RedisServerError, find_redis_server

__all__ = ["RedisServer", "RedisServerError", "find_redis_server", "running_for_session"]


class _Startable(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


S = TypeVar("S", bound=_Startable)


def running_for_session(server: S, what: str) -> Iterator[S]:
    """The body of a session fixture: ``server`` started (the test fails, saying it could
    not start ``what``, if it cannot), yielded, stopped at the end."""
    try:
        server.start()
    except RedisServerError as exc:
        pytest.fail(f"could not start {what}: {exc}")
    yield server
    server.stop()
