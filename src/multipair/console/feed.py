"""The console's live picture of every lane and host, fed from Redis and fanned out to pages.

One task reads every lane's events stream (``XREAD BLOCK`` over all of
them at once on a single Redis; on a Redis Cluster, where one read may not
name several lanes' keys, each stream without blocking, twice a second),
passes each event on, and reads again the row of each lane that had one.
Another reads every lane's row and the hosts every ``refresh_s`` (new and
removed lanes, heartbeats, crash loops). Pages subscribe (server-sent
events, :mod:`multipair.console.app`) and get a snapshot first, then:

- ``lane``: one lane's row changed (``status --json``'s fields and ``shown``);
- ``removed``: a lane is gone;
- ``event``: a lane published an event (its line and body);
- ``hosts``: every supervisor, its heartbeat and its lanes;
- ``snapshot``: everything again (after the page fell behind).

A page that falls :data:`QUEUE_MAX` messages behind gets a new snapshot
instead of the backlog. Redis trouble is logged and tried again; the feed
never ends on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from redis.exceptions import RedisError

from multipair import broker_schema as bs
from multipair.cli._status import status_snapshot
from multipair.cli._views import last_exits
from multipair.client import AsyncClient, LaneNotFound
from multipair.console.views import event_json, host_json, lane_row
from multipair.exceptions import CommandError, MultipairError
from multipair.logs import get_logger
from multipair.redis_conn import as_text, is_cluster, redis_errors
from multipair.supervisor.hosts import read_hosts

__all__ = ["QUEUE_MAX", "Feed", "Message", "Subscriber"]

log = get_logger("multipair.console")

QUEUE_MAX: Final = 1000
"""Messages a page may fall behind before it is sent a snapshot instead."""
_READ_COUNT: Final = 200
_CLUSTER_POLL_S: Final = 0.5
_RETRY_S: Final = 1.0
_VOLATILE: Final = frozenset({"uptime_s", "heartbeat_at"})
"""Row fields that change on every read: the page ticks them itself; not a change."""

Message = tuple[str, Any]


@dataclass(eq=False, slots=True)
class Subscriber:
    """One page's queue of messages."""

    queue: asyncio.Queue[Message] = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))


def _same(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    if a is None:
        return False
    return {k: v for k, v in a.items() if k not in _VOLATILE} == {
        k: v for k, v in b.items() if k not in _VOLATILE
    }


class Feed:
    """Every lane's row and every host, kept current; :meth:`subscribe` for the changes."""

    def __init__(
        self, client: AsyncClient, *, refresh_s: float = 3.0, block_ms: int = 2000
    ) -> None:
        self.client = client
        self.refresh_s = refresh_s
        self.block_ms = block_ms
        self.rows: dict[str, dict[str, Any]] = {}
        self.hosts: list[dict[str, Any]] = []
        self._cursors: dict[str, str] = {}
        """Each lane's last events entry seen."""
        self._subscribers: set[Subscriber] = set()
        self._ready = asyncio.Event()
        self._closed = False
        self._reading = asyncio.Lock()
        """One read of rows at a time: an older full read never overwrites a newer row."""

    # ------------------------------------------------------------------ pages

    def subscribe(self) -> Subscriber:
        """A queue of what changes from now on; its first message is a ``snapshot``."""
        subscriber = Subscriber()
        subscriber.queue.put_nowait(("snapshot", self.snapshot()))
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def snapshot(self) -> dict[str, Any]:
        return {"lanes": list(self.rows.values()), "hosts": self.hosts}

    def close(self) -> None:
        """Tell every page the feed ends (the server is stopping)."""
        self._closed = True
        for subscriber in list(self._subscribers):
            self._put(subscriber, ("close", None))
        self._subscribers.clear()

    def _publish(self, kind: str, data: Any) -> None:
        for subscriber in list(self._subscribers):
            self._put(subscriber, (kind, data))

    def _put(self, subscriber: Subscriber, message: Message) -> None:
        try:
            subscriber.queue.put_nowait(message)
        except asyncio.QueueFull:  # fell behind: start it again from a snapshot
            while not subscriber.queue.empty():
                subscriber.queue.get_nowait()
            subscriber.queue.put_nowait(
                message if message[0] == "close" else ("snapshot", self.snapshot())
            )

    # ------------------------------------------------------------------ Redis

    async def run(self) -> None:
        """Keep the picture current until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._refresh_loop(), name="console-refresh")
            tasks.create_task(self._events_loop(), name="console-events")

    async def wait_ready(self) -> None:
        """Until the first full read is done."""
        await self._ready.wait()

    async def _refresh_loop(self) -> None:
        while not self._closed:
            try:
                await self.refresh()
            except (RedisError, MultipairError, OSError) as exc:
                log.warning("console: cannot read the lanes", error=str(exc))
            await asyncio.sleep(self.refresh_s)

    async def refresh(self) -> None:
        """Read every lane's row and the hosts again; publish what changed."""
        async with self._reading:
            await self._refresh()

    async def _refresh(self) -> None:
        infos, exits = await status_snapshot(self.client)
        now = _dt.datetime.now(_dt.UTC)
        rows = {i.instance_id: lane_row(i, now, exits.get(i.instance_id)) for i in infos}
        for iid, row in rows.items():
            if not _same(self.rows.get(iid), row):
                self._publish("lane", row)
        for iid in self.rows.keys() - rows.keys():
            self._publish("removed", {"instance_id": iid})
            self._cursors.pop(iid, None)
        self.rows = rows
        await self._follow_new(rows)
        owners: dict[str, list[str]] = defaultdict(list)
        for row in rows.values():
            if row["owner"]:
                owners[row["owner"]].append(row["instance_id"])
        with redis_errors():
            entries = await read_hosts(self.client.redis, self.client.keys)
        self.hosts = [host_json(entry, owners) for entry in entries]
        self._publish("hosts", self.hosts)
        self._ready.set()

    async def _follow_new(self, rows: Iterable[str]) -> None:
        """Lanes seen for the first time: follow their events from the newest one on."""
        new = [iid for iid in rows if iid not in self._cursors]
        if not new:
            return
        redis, keys = self.client.redis, self.client.keys
        with redis_errors():
            newest = await asyncio.gather(*(redis.xrevrange(keys.events(i), count=1) for i in new))
        for iid, found in zip(new, newest, strict=True):
            self._cursors[iid] = as_text(found[0][0]) if found else "0-0"

    async def refresh_lane(self, instance_id: str) -> None:
        """Read one lane's row again; publish it if it changed."""
        async with self._reading:
            await self._refresh_lane(instance_id)

    async def _refresh_lane(self, instance_id: str) -> None:
        try:
            info = await self.client.lane_info(instance_id)
        except LaneNotFound:
            if self.rows.pop(instance_id, None) is not None:
                self._publish("removed", {"instance_id": instance_id})
            self._cursors.pop(instance_id, None)
            return
        exit_ = (await last_exits(self.client, [instance_id]))[instance_id]
        row = lane_row(info, _dt.datetime.now(_dt.UTC), exit_)
        if not _same(self.rows.get(instance_id), row):
            self.rows[instance_id] = row
            self._publish("lane", row)

    async def _events_loop(self) -> None:
        await self._ready.wait()
        while not self._closed:
            if not self._cursors:
                await asyncio.sleep(self.refresh_s)
                continue
            try:
                entries = await self._read(dict(self._cursors))
                touched: dict[str, None] = {}
                for iid, entry_id, event in entries:
                    if iid not in self._cursors:
                        continue  # removed meanwhile
                    self._cursors[iid] = entry_id
                    if event is not None:
                        self._publish("event", event_json(iid, entry_id, event))
                        touched[iid] = None
                for iid in touched:
                    await self.refresh_lane(iid)
            except (RedisError, MultipairError, OSError) as exc:
                log.warning("console: cannot read the lanes' events", error=str(exc))
                await asyncio.sleep(_RETRY_S)

    async def _read(self, cursors: dict[str, str]) -> list[tuple[str, str, bs.Event | None]]:
        """New entries of the lanes' events streams, oldest first per lane."""
        redis: Any = self.client.redis  # xread's stubs want bytes-typed dicts
        keys = self.client.keys
        by_stream = {keys.events(iid): iid for iid in cursors}
        streams = {keys.events(iid): cursor for iid, cursor in cursors.items()}
        reply: list[Any]
        with redis_errors():
            if is_cluster(redis):
                # One read may name one lane's keys only (docs/broker-schema.md, "Redis Cluster").
                replies = await asyncio.gather(
                    *(redis.xread({s: c}, count=_READ_COUNT) for s, c in streams.items())
                )
                reply = [r for found in replies for r in (found or [])]
                if not reply:
                    await asyncio.sleep(_CLUSTER_POLL_S)
            else:
                reply = await redis.xread(streams, count=_READ_COUNT, block=self.block_ms) or []
        out: list[tuple[str, str, bs.Event | None]] = []
        for stream, entries in reply:
            iid = by_stream.get(as_text(stream))
            if iid is None:
                continue
            for raw_id, fields in entries:
                event: bs.Event | None = None
                with contextlib.suppress(CommandError):  # a newer event type: skipped
                    event = bs.decode_event(fields)
                out.append((iid, as_text(raw_id), event))
        return out
