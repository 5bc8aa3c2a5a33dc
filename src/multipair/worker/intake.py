"""The lane's intake: its command stream, consumer group, claims, dead letters and answers.

Commands come from the lane's stream through the consumer group (docs/
broker-schema.md, "Commands"). The intake reads them as sent, replays what
an earlier process of the lane left pending (with its delivery count: the
poison rule), takes back entries a lost read reply left pending, refuses
bad and oversize entries into the dead-letter stream, contains our own bug
met by one entry, keeps the stream trimmed, and hands each valid command to
the lane: control commands at once (:class:`~multipair.worker.control.Control`),
transaction commands into the runner's FIFO. It also writes the answers
that acknowledge an entry (:meth:`Intake.answer`, :meth:`Intake.reject`).
The lane's module docstring states the rules ("Bad input", "Redis away",
"Bounded input").
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import structlog
from redis.exceptions import ResponseError

from multipair import broker_schema as bs
from multipair.broker_schema import counters
from multipair.exceptions import CommandError
from multipair.logs import get_logger
from multipair.redis_conn import RAW_REPLY, allow_raw_replies
from multipair.worker.admission import POISON_DELIVERIES, pair_busy
from multipair.worker.entries import (
    MAX_ENTRY_BYTES,
    Entry,
    Pairs,
    dead_letter,
    entry_size,
    id_order,
    next_id,
    pairs,
    read_block_ms,
    stream_entries,
    text,
)
from multipair.worker.redis_wait import first, last_line
from multipair.worker.retry import redis_delays
from multipair.worker.writes import WriteBatch

if TYPE_CHECKING:
    from multipair.worker.lane import Lane

__all__ = [
    "DEAD_LETTER_MAXLEN",
    "READ_COUNT",
    "RECLAIM_EVERY_S",
    "RECLAIM_IDLE_MS",
    "TRIM_EVERY_ENTRIES",
    "Intake",
]

log = get_logger("multipair.worker.lane")  # the lane's log lines, as they always were

READ_COUNT: Final = 64
DEAD_LETTER_MAXLEN: Final = 10_000
TRIM_EVERY_ENTRIES: Final = 256
"""The commands stream is trimmed after this many entries were taken (and every re-claim)."""
RECLAIM_EVERY_S: Final = 30.0
"""How often the lane looks for its own pending entries that no read of it returned."""
RECLAIM_IDLE_MS: Final = 60_000
"""A pending entry idle this long and not in hand is taken back and run (:meth:`Intake.reclaim`)."""


class Intake:
    """The lane's command stream: read, replay, re-claim, refuse, dispatch, answer."""

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self._taken = 0  # entries taken, to trim the commands stream every so many
        self._after_failover = False  # take back every pending entry, recover orphans
        self._running: str | None = None  # the pos_ref_id running when the primary changed

    async def ensure_group(self) -> None:
        """Create the lane's consumer group (and stream) unless it exists."""
        try:
            await self.lane.redis.xgroup_create(
                self.lane.keys.commands(self.lane.instance_id),
                bs.CONSUMER_GROUP,
                id="0",
                mkstream=True,
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def consume_loop(self) -> None:
        """Pending entries of earlier processes first, in order; then new ones, forever.

        While Redis is away the read fails and is tried again after a pause
        (no command is taken meanwhile); every ``reclaim_every_s`` the lane
        also takes back its own entries that a lost read reply left pending
        (:meth:`reclaim`).
        """
        stream = self.lane.keys.commands(self.lane.instance_id)
        backlog_commands = await self.claim_backlog(stream)
        await self.queue_orphans(backlog_commands)
        block = read_block_ms(self.lane.redis)
        reclaim_at = self.lane.clock.monotonic() + self.lane.deps.reclaim_every_s
        delays: Iterator[float] | None = None
        while not self.lane.draining.is_set():
            if self._after_failover:
                self._after_failover = False
                taken = await self.reclaim(stream, idle_ms=0)
                running = self.lane.record  # the transaction in hand now, not recovered
                await self.queue_orphans(
                    taken, running=running.pos_ref_id if running is not None else self._running
                )
            if self.lane.clock.monotonic() >= reclaim_at:
                await self.reclaim(stream)
                reclaim_at = self.lane.clock.monotonic() + self.lane.deps.reclaim_every_s
            until_reclaim = max(1, int((reclaim_at - self.lane.clock.monotonic()) * 1000))
            try:
                entries = await self.read_unless_draining(stream, min(block, until_reclaim))
            except Exception as exc:
                if isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP"):
                    # Redis came back without the group (restarted without its data).
                    log.warning("the command group is gone: created again")
                    await self.lane.until_redis(self.ensure_group)
                    continue
                if not self.lane.redis_wait.must_wait(exc):
                    raise
                if delays is None:
                    delays = redis_delays(self.lane.deps.redis_backoff)
                await first(asyncio.sleep(next(delays)), self.lane.draining.wait())
                continue
            delays = None
            self.lane.redis_wait.answered()
            for entry_id, fields in entries:
                await self.dispatch(entry_id, fields)

    async def read_unless_draining(self, stream: str, block: int) -> list[tuple[str, Pairs]]:
        """A long blocking read of new entries that a drain (or stop) cuts short at once.

        A read cancelled by the drain may have had entries delivered to it:
        they stay pending in the group under this consumer, and the next
        process of the lane claims them (:meth:`claim_backlog`), so nothing
        is lost. redis-py closes a connection whose command is cancelled, so
        no later command reads the cancelled command's reply.
        """
        read = asyncio.ensure_future(self.read(stream, ">", block=block))
        drain = asyncio.ensure_future(self.lane.draining.wait())
        try:
            await asyncio.wait((read, drain), return_when=asyncio.FIRST_COMPLETED)
        finally:
            drain.cancel()
            if not read.done():
                read.cancel()
            await asyncio.gather(drain, return_exceptions=True)
            # Wait for the read to end; its error, if any, is raised below.
            await asyncio.wait((read,))
        if read.cancelled():
            return []
        return read.result()

    async def claim_backlog(self, stream: str) -> set[str]:
        """Take over every entry left pending by an earlier process of this lane.

        Only one process serves a lane at a time, so whatever is pending in the
        group is ours: claim it (XAUTOCLAIM), then replay it in stream order,
        each entry with the number of times it was delivered before (XPENDING):
        an entry the lane never answered in :data:`POISON_DELIVERIES` tries is
        not run again (:meth:`dispatch`). The claim is ``JUSTID``, which leaves
        the delivery count alone, so each start of the lane counts one delivery
        (the replaying read), not two. Returns the command ids seen.
        """
        cursor = "0-0"
        while True:
            reply = await self.lane.until_redis(partial(self._autoclaim, stream, 0, cursor))
            cursor = text(reply[0])  # [next cursor, claimed ids, deleted ids]
            if cursor == "0-0":
                break
        seen: set[str] = set()
        last = "0"
        while True:
            # Each read of this history counts one delivery more; one whose reply
            # was lost and that is sent again counts one more (rare: an outage
            # at that moment).
            delivered = await self.lane.until_redis(partial(self._deliveries, stream, last))
            entries = await self.lane.until_redis(partial(self.read, stream, last, block=None))
            if not entries:
                return seen
            for entry_id, fields in entries:
                last = entry_id
                hint = bs.peek_command(fields)
                if hint.command_id:
                    seen.add(hint.command_id)
                before = delivered.get(entry_id, 0)
                log.info("replaying pending command", entry_id=entry_id, delivered=before)
                await self.dispatch(entry_id, fields, delivered=before)

    async def _autoclaim(self, stream: str, min_idle_ms: int, cursor: str) -> Any:
        """One ``XAUTOCLAIM ... JUSTID`` page for this consumer (it adds no delivery)."""
        return await self._raw(
            "XAUTOCLAIM",
            stream,
            bs.CONSUMER_GROUP,
            self.lane.consumer,
            min_idle_ms,
            cursor,
            "COUNT",
            READ_COUNT,
            "JUSTID",
        )

    def after_failover(self, running: str | None) -> None:
        """A new primary: take back every pending entry and recover its unfinished records.

        Done by the consume loop, next round (it alone dispatches entries);
        ``running``: the pos_ref_id of the transaction the lane is running
        (not recovered: the session has it in hand).
        """
        self._after_failover = True
        self._running = running
        self.lane.wake.set()

    async def reclaim(self, stream: str, *, idle_ms: int | None = None) -> set[str]:
        """Run this lane's pending entries that no read of it ever returned.

        A read of new entries whose reply was lost (Redis went away during
        it) leaves its entries pending, delivered to this consumer and never
        seen. Claim every pending entry idle for ``reclaim_idle_ms``
        (``XAUTOCLAIM ... JUSTID``: no delivery added), skip those in hand
        (queued, running, or being answered: a long transaction's entry is
        idle too), read the rest with ``XRANGE`` (no delivery added either)
        and dispatch them in stream order. An entry of a lost read was
        delivered once without being tried: it is dispatched with one
        delivery less than the group counts, so the poison rule counts only
        real tries. ``idle_ms`` (after a failover: 0) replaces
        ``reclaim_idle_ms``. Returns the command ids dispatched.
        """
        seen: set[str] = set()
        min_idle = self.lane.deps.reclaim_idle_ms if idle_ms is None else idle_ms
        found: list[str] = []
        cursor = "0-0"
        while True:
            reply = await self.lane.until_redis(partial(self._autoclaim, stream, min_idle, cursor))
            cursor = text(reply[0])
            found += [i for i in map(text, reply[1] or ()) if i not in self.lane.in_hand]
            if cursor == "0-0":
                break
        await self.trim_commands()
        for entry_id in sorted(found, key=id_order):
            if entry_id in self.lane.in_hand:
                continue  # dispatched meanwhile (an earlier one of this list took long)
            entries = await self.lane.until_redis(partial(self._entry, stream, entry_id))
            if not entries:
                continue  # trimmed from the stream since
            count = await self.lane.until_redis(partial(self._delivered, stream, entry_id))
            delivered = max(count - 1, 0)
            log.warning(
                "taking back a pending command no read returned",
                entry_id=entry_id,
                delivered=delivered,
            )
            for _, fields in entries:
                hint = bs.peek_command(fields)
                if hint.command_id:
                    seen.add(hint.command_id)
                await self.dispatch(entry_id, fields, delivered=delivered)
        return seen

    async def trim_commands(self) -> None:
        """Drop the commands the group is done with, so the stream stays bounded.

        Everything below the group's oldest pending entry (or, with none
        pending, up to its last delivered entry) was acknowledged: its answer
        is published and its record kept, the entry is not needed again.
        Safe without a script: the group only moves forward, so an entry
        delivered or added after the look is above the bound. Exact, not
        ``~``: an approximate trim frees only whole nodes, and a huge entry
        sharing a node with newer ones would stay. Best effort: a failure is
        logged and the next round tries again.
        """
        stream = self.lane.keys.commands(self.lane.instance_id)
        try:
            groups: Any = await self.lane.redis.xinfo_groups(stream)
            group = next((g for g in groups if text(g["name"]) == bs.CONSUMER_GROUP), None)
            if group is None:
                return
            summary: Any = await self.lane.redis.xpending(stream, bs.CONSUMER_GROUP)
            if summary["pending"]:
                bound = text(summary["min"])
            else:
                bound = next_id(text(group["last-delivered-id"]))
            if bound == "0-1":
                return  # nothing delivered yet
            await self.lane.redis.xtrim(stream, minid=bound, approximate=False)
        except Exception as exc:
            if self.lane.must_end(exc) and not self.lane.redis_wait.must_wait(exc):
                raise
            log.info("commands stream not trimmed this time", error=type(exc).__name__)

    async def _entry(self, stream: str, entry_id: str) -> list[tuple[str, Pairs]]:
        """One entry's field pairs as sent (``XRANGE``; the group's counts are left alone)."""
        reply = await self._raw("XRANGE", stream, entry_id, entry_id)
        return [(text(eid), pairs(flat)) for eid, flat in reply or ()]

    async def _deliveries(self, stream: str, after: str) -> dict[str, int]:
        """How often each of this consumer's next pending entries after ``after`` was delivered."""
        pending: Any = await self.lane.redis.xpending_range(
            stream,
            bs.CONSUMER_GROUP,
            min="-" if after == "0" else f"({after}",
            max="+",
            count=READ_COUNT,
            consumername=self.lane.consumer,
        )
        return {text(p["message_id"]): int(p["times_delivered"]) for p in pending}

    async def _delivered(self, stream: str, entry_id: str) -> int:
        """How often one pending entry was delivered (0 when it is no longer pending)."""
        pending: Any = await self.lane.redis.xpending_range(
            stream, bs.CONSUMER_GROUP, min=entry_id, max=entry_id, count=1
        )
        return int(pending[0]["times_delivered"]) if pending else 0

    async def _raw(self, *args: Any) -> Any:
        """A stream command whose reply comes as the server sent it (``allow_raw_replies``)."""
        redis = self.lane.redis  # looked up each time: tests swap it
        allow_raw_replies(redis, "XREADGROUP", "XAUTOCLAIM", "XRANGE")
        execute: Any = redis.execute_command  # untyped in redis-py
        return await execute(*args, **{RAW_REPLY: True})

    async def read(self, stream: str, cursor: str, *, block: int | None) -> list[tuple[str, Pairs]]:
        """XREADGROUP on this lane's command stream: each entry's field pairs, as sent.

        Not redis-py's ``xreadgroup``: it folds an entry's fields into a dict,
        so ``v 1 body A body B`` would read as one ``body`` (the last) and the
        codec could not refuse it (docs/broker-schema.md, "Stream entries").
        """
        args: list[Any] = [bs.CONSUMER_GROUP, self.lane.consumer, "COUNT", READ_COUNT]
        if block is not None:
            args += ["BLOCK", block]
        reply = await self._raw("XREADGROUP", "GROUP", *args, "STREAMS", stream, cursor)
        return stream_entries(reply)

    async def queue_orphans(
        self, backlog_commands: set[str], *, running: str | None = None
    ) -> None:
        """In-flight records with no pending command (trimmed stream): recover them too.

        ``running``: the pos_ref_id of a transaction the lane has in hand (not recovered).
        """
        in_flight = await self.lane.until_redis(
            partial(self.lane.deps.txs.in_flight, self.lane.instance_id)
        )
        for record in in_flight:
            if record.pos_ref_id == running:
                continue
            if record.command_id not in backlog_commands:
                log.warning(
                    "recovering a transaction whose command entry is gone",
                    pos_ref_id=record.pos_ref_id,
                )
                await self.lane.tx_queue.put(record)

    async def dispatch(self, entry_id: str, fields: Any, *, delivered: int = 0) -> None:
        """Validate one entry, then run it (control) or queue it (transaction).

        ``delivered``: how often the entry was delivered before (a replay).
        No entry can stop the lane: an unexpected error while handling one is
        contained (:meth:`contain`), unless it says the lane itself cannot go
        on (:func:`_lane_must_end`), and then the entry is left pending for
        the lane's successor, which gives up on it after
        :data:`POISON_DELIVERIES` tries. An entry already in hand (queued,
        running, being answered) is not taken a second time.
        """
        if entry_id in self.lane.in_hand:
            log.info("command entry already in hand: not taken twice", entry_id=entry_id)
            return
        self.lane.in_hand.add(entry_id)  # until its acknowledgement lands (_apply)
        self.lane.primary.took(entry_id)
        try:
            await self._take(entry_id, fields, delivered)
        except Exception as exc:
            if self.lane.must_end(exc):
                raise
            await self.contain(entry_id, fields, exc)

    async def _take(self, entry_id: str, fields: Any, delivered: int) -> None:
        self._taken += 1
        if self._taken % TRIM_EVERY_ENTRIES == 0:
            await self.trim_commands()
        size = entry_size(fields)
        if size > MAX_ENTRY_BYTES:
            # Refused unread: not decoded, not peeked at (docs/security.md).
            await self.reject(
                entry_id,
                None,
                CommandError(
                    bs.Reason.OVERSIZE, f"entry is {size} bytes; the limit is {MAX_ENTRY_BYTES}"
                ),
                fields=fields,
            )
            await self.trim_commands()  # it is acknowledged: free its memory in Redis now
            return
        try:
            command = bs.decode_command(fields)
        except CommandError as exc:
            hint = bs.peek_command(fields)
            await self.reject(entry_id, hint.command_id, exc, hint.command_type, fields=fields)
            return
        if delivered >= POISON_DELIVERIES and not await self._has_own_record(command):
            # Every earlier try ended the lane before an answer: running it again
            # would end this one too. An entry whose transaction record exists
            # is never given up on: it is recovered from the terminal, not re-run
            # (DESIGN.md "No double charge", "No lost outcome").
            log.error("giving up on a command entry", entry_id=entry_id, delivered=delivered)
            await self.reject(
                entry_id,
                command.command_id,
                CommandError(
                    bs.Reason.POISON_ENTRY,
                    f"the lane took this entry {delivered} times and never answered it; "
                    "it is not run again",
                ),
                command.type,
                fields=fields,
                pos_ref_id=getattr(command, "pos_ref_id", None),
            )
            return
        entry = Entry(
            entry_id=entry_id,
            command=command,
            fields=fields,
            read_at=self.lane.clock.monotonic(),
        )
        structlog.contextvars.bind_contextvars(command_id=command.command_id)
        if command.kind is bs.CommandKind.CONTROL:
            await self.lane.control.run(entry)
            return
        pending = self.lane.pair_entry.command if self.lane.pair_entry is not None else None
        busy = pair_busy(command, pending)
        if busy is not None:
            await self.reject(entry_id, command.command_id, busy, command.type)
            return
        if isinstance(command, bs.Pair):
            self.lane.pair_entry = entry  # until the runner is done with it (_run_item)
        await self.lane.tx_queue.put(entry)

    async def _has_own_record(self, command: bs.Command) -> bool:
        """Whether the transaction record of ``command``'s ``pos_ref_id`` exists (read afresh)."""
        pos_ref_id = getattr(command, "pos_ref_id", None)
        if not (command.records_tx and pos_ref_id):
            return False
        record = await self.lane.until_redis(
            partial(self.lane.deps.txs.get, self.lane.instance_id, pos_ref_id)
        )
        return record is not None

    async def contain(self, entry_id: str, fields: Any, exc: Exception) -> None:
        """Our bug met one entry: dead-letter it (``internal_error``), answer, ack; go on.

        The last line of defence (DESIGN.md "Availability"): the entry is
        refused with the error's last traceback line, so its sender and ops
        see it; the commands behind it run.
        """
        line = last_line(exc)
        log.error(
            "handling a command entry failed: refused, dead-lettered, the lane goes on",
            entry_id=entry_id,
            error=line,
            exc_info=exc,
        )
        hint = bs.peek_command(fields)
        await self.reject(
            entry_id,
            hint.command_id,
            CommandError(
                bs.Reason.INTERNAL_ERROR, f"handling this entry failed on our side: {line}"
            ),
            hint.command_type,
            fields=fields,
            pos_ref_id=hint.pos_ref_id,
        )

    async def refuse(
        self, entry: Entry, exc: CommandError, *, pos_ref_id: str | None = None
    ) -> None:
        """:meth:`reject` a command read whole (no dead letter: its fields were fine)."""
        command = entry.command
        await self.reject(
            entry.entry_id, command.command_id, exc, command.type, pos_ref_id=pos_ref_id
        )

    async def reject(
        self,
        entry_id: str,
        command_id: str | None,
        exc: CommandError,
        command_type: str | None = None,
        *,
        fields: Any = None,
        pos_ref_id: str | None = None,
    ) -> None:
        """Refuse an entry: ``command_rejected``, its dead letter (with ``fields``), ack, count."""
        log.warning("command rejected", reason=exc.reason, detail=exc.detail, entry_id=entry_id)
        event = self.lane.event(
            bs.CommandRejected,
            command_id=command_id,
            reason=str(exc.reason),
            detail=exc.detail,
            command_type=command_type,
            pos_ref_id=pos_ref_id,
            entry_id=entry_id,
        )
        batch = self.lane.event_batch(event)
        if fields is not None:
            batch.xadd(
                self.lane.keys.dead_letter(self.lane.instance_id),
                dead_letter(fields, entry_id, exc),
                maxlen=DEAD_LETTER_MAXLEN,
            )
        batch.xack(self.lane.keys.commands(self.lane.instance_id), entry_id)
        batch.hincrby(
            self.lane.keys.state(self.lane.instance_id), counters.rejection(str(exc.reason))
        )
        await self.lane.apply(batch)

    async def ack(self, entry: Entry) -> None:
        """Acknowledge ``entry`` alone (its answer was published before)."""
        await self.lane.apply(
            WriteBatch().xack(self.lane.keys.commands(self.lane.instance_id), entry.entry_id)
        )

    async def answer(self, entry: Entry, event: bs.Event) -> None:
        """Publish the answer to a command and acknowledge it, in one atomic step."""
        batch = self.lane.event_batch(event)
        batch.xack(self.lane.keys.commands(self.lane.instance_id), entry.entry_id)
        await self.lane.apply(batch)
