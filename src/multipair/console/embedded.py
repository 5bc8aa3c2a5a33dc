"""The console and the metrics of ``multipair up`` (issue 15): what ``up`` calls, in one place.

``up`` serves the console in its own process, beside the status table,
with ``MULTIPAIR_CONSOLE_TOKEN`` or a new token, and has its supervisor
serve ``/metrics``. A port already taken (another ``up``, another program)
is not an error here: a free one is used and said.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Final

from redis.exceptions import RedisError

from multipair.client import AsyncClient
from multipair.config import Settings
from multipair.console.app import Console, ConsoleConfig
from multipair.console.cli import console_token
from multipair.exceptions import MultipairError
from multipair.supervisor.hosts import read_hosts

__all__ = ["DEFAULT_UP_METRICS_PORT", "metrics_url", "port_or_any", "up_console"]

DEFAULT_UP_METRICS_PORT: Final = 9464
"""``up``'s supervisor serves ``/metrics`` here (deploy/prometheus.yml scrapes it)."""


def port_or_any(port: int, host: str = "127.0.0.1") -> int:
    """``port`` when it is free on ``host`` now, else 0 (the listener picks a free one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return 0
            raise
    return port


@contextlib.asynccontextmanager
async def up_console(
    settings: Settings, port: int | None, progress: Callable[[str], None]
) -> AsyncIterator[Console | None]:
    """The console on ``port`` (None: no console) while the block runs."""
    if port is None:
        yield None
        return
    token, _ = console_token()
    async with await AsyncClient.connect(settings) as client:
        console = Console(client, ConsoleConfig(token=token, port=port))
        await console.start(any_port_if_taken=True)
        if console.port != port:
            progress(f"port {port} was taken: the console listens on {console.port}")
        try:
            yield console
        finally:
            await console.close()


async def metrics_url(client: AsyncClient, host_id: str, *, wait_s: float = 5.0) -> str | None:
    """Where the supervisor ``host_id`` serves ``/metrics``, from its heartbeat in ``mp:hosts``."""
    deadline = time.monotonic() + wait_s
    while True:
        with contextlib.suppress(RedisError, MultipairError):
            for entry in await read_hosts(client.redis, client.keys):
                if entry.host_id == host_id and entry.metrics_port:
                    return f"http://127.0.0.1:{entry.metrics_port}/metrics"
        if time.monotonic() >= deadline:
            return None
        # The heartbeat is written every 2 s: nothing to block on.
        await asyncio.sleep(0.2)
