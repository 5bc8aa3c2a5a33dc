"""Several supervisors on one Redis: who holds what, hosts' heartbeats, a Redis link to cut."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any

from structlog.testing import capture_logs

from multipair.leases import Lease
from tests.poll import poll_until
from tests.supervisor.helpers import Fleet, Lane, SupervisorProcess

SLOW_CARD = 1054  # the simulator reads the card for about 3 s
SIGNATURE = 1052  # the terminal waits for the POS to accept a signature
APPROVE = 1000


async def leases_of(lanes: Iterable[Lane]) -> dict[str, Lease | None]:
    """instance id -> its lease now."""
    return {lane.instance_id: await lane.lease() for lane in lanes}


async def holders(lanes: Iterable[Lane]) -> Counter[str]:
    """How many of ``lanes`` each host holds a lease for (``None`` counts the free ones)."""
    leases = await leases_of(lanes)
    return Counter("" if lease is None else lease.host_id for lease in leases.values())


async def wait_hosts_live(fleet: Fleet, *sups: SupervisorProcess) -> None:
    """Until every supervisor's heartbeat is in ``mp:hosts`` with its own pid."""

    async def check() -> bool:
        for sup in sups:
            entry = await fleet.host_entry(sup.host_id)
            if entry is None or entry.get("pid") != sup.pid:
                return False
        return True

    await poll_until(check, f"heartbeats of {[s.host_id for s in sups]}", 60)


async def wait_spread(
    lanes: list[Lane], expected: dict[str, int], timeout: float = 60
) -> dict[str, Lease | None]:
    """Until the lanes' leases are spread over hosts exactly as ``expected`` and every lane
    runs connected under its holder; the leases."""
    last: Counter[str] = Counter()

    async def check() -> dict[str, Lease | None] | None:
        nonlocal last
        leases = await leases_of(lanes)
        last = Counter("" if x is None else x.host_id for x in leases.values())
        if dict(last) != expected:
            return None
        for lane in lanes:
            lease, state = leases[lane.instance_id], await lane.state()
            if lease is None or state.get("host") != lease.host_id:
                return None
            if state.get("status") != "paired_connected" or not state.get("pid"):
                return None
        return leases

    try:
        return await poll_until(check, f"lanes spread as {expected}", timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last spread: {dict(last)}") from None


@contextlib.contextmanager
def terminal_connections() -> Iterator[list[MutableMapping[str, Any]]]:
    """Capture the simulator's connection log (it runs in the test process) meanwhile.

    A terminal takes one POS connection at a time: a second one makes it
    close the first (``connection.replace``), so ``max_concurrent_connections``
    stays 1 whatever happens. ``replaced(...)`` of what this captured names
    the terminals where a second POS connected while the first was still open.
    """
    with capture_logs() as logs:
        yield logs


def opened(logs: list[MutableMapping[str, Any]]) -> list[str]:
    """Serials of the terminals a POS connected to, once per connection."""
    return [str(e.get("serial")) for e in logs if e.get("event") == "connection.open"]


def replaced(logs: list[MutableMapping[str, Any]]) -> list[str]:
    """Serials of the terminals where a POS connected while another was still connected."""
    return [str(e.get("serial")) for e in logs if e.get("event") == "connection.replace"]


async def running_anew(lane: Lane, *, after: int, previous: int, timeout: float = 30) -> int:
    """Wait until a new process (not ``previous``) runs the lane and is connected to its
    terminal: its ``lane_started``, and a ``status_changed`` to ``paired_connected``, both
    past position ``after``; its pid. (The state hash alone can show the new pid beside the
    old process's ``paired_connected`` for a moment.)"""
    started = await lane.events.wait_for(
        lambda b: b["type"] == "lane_started" and b["pid"] != previous, timeout, after=after
    )
    await lane.events.wait_for(
        lambda b: b["type"] == "status_changed" and b["status"] == "paired_connected",
        timeout,
        after=after,
    )
    return int(started["pid"])


def process_state(pid: int) -> str:
    """The state letter of a process in ``/proc`` (``T``: stopped, ``Z``: zombie...)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def log_events(sup: SupervisorProcess, event: str | None = None) -> list[dict[str, Any]]:
    """The JSON log lines of a supervisor (its lanes log into the same file)."""
    lines = sup.log_events()
    return lines if event is None else [line for line in lines if line.get("event") == event]


class RedisLink:
    """A TCP relay to Redis that can be cut silently, like a network that drops packets.

    While cut, connections stay open but nothing is relayed either way (bytes
    wait in the socket buffers) and new connections are accepted and left
    hanging: a client sees no error, only silence, as across a partition.
    """

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        """Listen on a free loopback port; the ``redis://`` URL to give the clients."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    def cut(self) -> None:
        self._open.clear()

    def restore(self) -> None:
        self._open.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        await self._open.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self._writers.append(up_writer)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await src.read(65536):
                await self._open.wait()  # held while the link is cut
                dst.write(data)
                await dst.drain()
        dst.close()
