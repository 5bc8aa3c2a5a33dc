"""After a failover: the lane re-reads what it needs from a new primary (docs/deploy-ha.md).

Redis replicates asynchronously, so a replica promoted by the Sentinels (or
a server restarted without its data) may lack the lane's latest writes: the
record of the transaction in flight, its outcome, the ``command_id`` claims,
the acknowledgements, the consumer group itself. The lane notices "a new
primary" cheaply: it remembers the primary's identity
(:func:`~multipair.store.durable.primary_identity`: ``run_id`` and
replication id) and asks again once after every Redis outage it rode out
(:class:`~multipair.worker.redis_wait.RedisWait` runs
:meth:`PrimaryWatch.after_outage` before the first call that follows an
outage). Same identity: nothing more. A different one: before any other
call of the lane goes on, :meth:`PrimaryWatch.reconcile`

1. reads the lease: held under another token, the lane stops
   (:class:`~multipair.leases.LeaseLost`); absent, the fenced writes below
   wait for the supervisor to take it back, as after any outage;
2. makes sure the consumer group exists, not behind the last entry the lane
   took (created again ``MKSTREAM`` at that id, or moved up to it), so no
   entry the lane took is delivered again;
3. acknowledges again the entries it answered lately (an ``XACK`` lost with
   the old primary would leave them pending, and replayed);
4. writes again the transactions it finished lately that the new primary
   lacks or holds unfinished: the record, its ``command_id`` claim and its
   outcome with its ``transaction_completed`` event, published once on the
   primary that stands;
5. writes back the record of the transaction in flight when it is missing or
   in an earlier state than the lane knows (before its outcome is written:
   the outcome's write needs the record);
6. has the intake take back its pending entries (any idle time) and queue for
   recovery from the terminal every record the new primary holds unfinished
   that the lane is not running: the recovery path a restarted lane uses
   (``get_transaction`` with the terminal), whose outcome is published once.

Every step is safe to repeat (a claim kept, a record created only if absent,
an outcome written only if the record is not completed), so an outage during
the reconciliation just runs it again. With ``MULTIPAIR_REDIS_MIN_REPLICAS``
above 0 the check does not wait for the replicas (a new primary may have
none yet, and the check holds the lane's heartbeat): the lane's next
confirmed write (the in-flight outcome, kept and written until confirmed,
or the next record before its request is sent) covers what it wrote back.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import orjson
from redis.exceptions import ResponseError

from multipair import broker_schema as bs
from multipair.exceptions import LocalProtocolError
from multipair.leases import LeaseLapsed, LeaseLost, parse_lease
from multipair.logs import get_logger
from multipair.spi import pos as spi
from multipair.store.durable import NotConfirmed, primary_identity
from multipair.store.transactions import TxRecord, TxState
from multipair.worker.entries import id_order, text
from multipair.worker.translate import completed_event
from multipair.worker.writes import WriteBatch

if TYPE_CHECKING:
    from multipair.worker.lane import Lane

__all__ = ["RECENT_ACKS", "RECENT_FINISHED", "Finished", "PrimaryWatch"]

log = get_logger("multipair.worker.lane")

RECENT_FINISHED: Final = 32
"""How many finished transactions the lane keeps to write again on a new primary."""
RECENT_ACKS: Final = 512
"""How many acknowledged entry ids the lane keeps to acknowledge again on a new primary."""

_ORDER: Final = {
    TxState.REQUESTED: 0,
    TxState.SENT: 1,
    TxState.AWAITING_SIGNATURE: 2,
    TxState.AWAITING_AUTH_CODE: 2,
    TxState.COMPLETED: 3,
}


@dataclass(frozen=True, slots=True)
class Finished:
    """A transaction this lane finished: enough to write its record and outcome again."""

    record: TxRecord
    """The record as it was in flight (never completed)."""
    done: spi.TransactionCompleted
    entry_id: str | None
    """The command entry it answered (None: a recovered orphan)."""
    claim: bytes | None
    """The ``command_id`` claim (None: a recovered orphan)."""


class PrimaryWatch:
    """Which primary the lane writes to, and what it does when that changes (module doc)."""

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self.known: str | None = None
        """The identity of the primary the lane last wrote to."""
        self.finished: deque[Finished] = deque(maxlen=RECENT_FINISHED)
        self.acked: deque[str] = deque(maxlen=RECENT_ACKS)
        self.last_taken: str | None = None
        """The highest command entry id the lane took (the group must not be behind it)."""
        self.failovers = 0

    def took(self, entry_id: str) -> None:
        """The intake took ``entry_id``."""
        last = self.last_taken
        if last is None or id_order(entry_id) > id_order(last):
            self.last_taken = entry_id

    def finish(
        self, record: TxRecord | None, done: spi.TransactionCompleted, entry_id: str | None
    ) -> None:
        """Remember a finished transaction (its record, as in flight, and its outcome)."""
        if record is None or record.pos_ref_id != done.pos_ref_id:
            return
        claim = None
        if entry_id is not None:
            claim = bs_claim(record, entry_id)
        base = dataclasses.replace(record, state=TxState.SENT, result=None, outcome=None)
        self.finished.append(Finished(base, done, entry_id, claim))

    async def learn(self) -> None:
        """Remember the primary the lane starts on."""
        self.known = await self.lane.until_redis(self._identity)

    async def _identity(self) -> str:
        return await primary_identity(self.lane.redis, self.lane.writer.sync_key)

    async def after_outage(self) -> None:
        """Once after an outage: the same primary, or reconcile with the new one.

        Called by the lane's Redis wait before the first call after an
        outage (nested calls go through the wait as usual); raises what a
        call raised (Redis away again: called again later).
        """
        now = await self.lane.until_redis(self._identity)
        if self.known is None or now == self.known:
            self.known = now
            return
        self.failovers += 1
        log.warning(
            "a new Redis primary: re-reading the lane's lease, records and commands",
            before=self.known,
            now=now,
        )
        await self.reconcile()
        self.known = now
        log.warning("reconciled with the new Redis primary")

    async def reconcile(self) -> None:
        """The steps of the module docstring, each safe to repeat."""
        lane = self.lane
        await self._check_lease()
        await lane.until_redis(self._group)
        if self.acked:
            batch = WriteBatch()
            stream = lane.keys.commands(lane.instance_id)
            for entry_id in self.acked:
                batch.xack(stream, entry_id)
            await self._apply(batch)
        for finished in list(self.finished):
            await self._write_finished(finished)
        running = await self._write_running()
        lane.intake.after_failover(running)

    async def _apply(self, batch: WriteBatch) -> None:
        """Apply ``batch`` once; not waiting for the replicas (see :meth:`_landed`)."""
        await self.lane.until_redis(partial(self._landed, batch))
        self.lane.in_hand.difference_update(batch.acked)

    async def _landed(self, batch: WriteBatch) -> None:
        """``batch`` applied; a confirmation that does not come in time is not waited for.

        The check holds every other call of the lane (the heartbeat too), so it
        must not wait on replicas that may be gone with the old primary. What
        it wrote is on the primary now; the lane's next confirmed write (the
        in-flight outcome, or the next record before its request is sent)
        confirms everything written before it on the lane's slot.
        """
        try:
            await self.lane.writer.apply(batch)
        except NotConfirmed:
            log.warning("written back on the new primary; not yet confirmed on its replicas")

    async def _check_lease(self) -> None:
        lane = self.lane
        token = lane.deps.fencing_token
        if token is None:
            return
        raw = await lane.until_redis(partial(lane.redis.get, lane.keys.lease(lane.instance_id)))
        lease = parse_lease(raw)
        if lease is None:
            # Lapsed on the new primary: the fenced writes below wait for our
            # supervisor to take it back (or stop the lane when it does not).
            raise LeaseLapsed("the new primary holds no lease for the lane")
        if lease.token != token:
            raise LeaseLost(
                f"the new primary names lease token {lease.token}, this lane holds {token}"
            )

    async def _group(self) -> None:
        """The consumer group exists and is not behind the last entry the lane took."""
        lane = self.lane
        stream = lane.keys.commands(lane.instance_id)
        at = self.last_taken or "0"
        try:
            await lane.redis.xgroup_create(stream, bs.CONSUMER_GROUP, id=at, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        else:
            log.warning("the command group was missing on the new primary: created", at=at)
            return
        if self.last_taken is None:
            return
        groups: Any = await lane.redis.xinfo_groups(stream)
        group = next((g for g in groups if text(g["name"]) == bs.CONSUMER_GROUP), None)
        if group is None:
            return
        delivered = text(group["last-delivered-id"])
        if id_order(delivered) < id_order(self.last_taken):
            await lane.redis.xgroup_setid(stream, bs.CONSUMER_GROUP, id=self.last_taken)
            log.warning(
                "the command group was behind on the new primary: moved up",
                was=delivered,
                to=self.last_taken,
            )

    async def _write_finished(self, finished: Finished) -> None:
        """Write a finished transaction again where the new primary lacks its outcome."""
        lane = self.lane
        iid = lane.instance_id
        txs = lane.deps.txs
        base = finished.record
        stored = await lane.until_redis(partial(txs.get, iid, base.pos_ref_id))
        if stored is not None and stored.completed:
            return
        log.warning(
            "a finished transaction is missing on the new primary: written again",
            pos_ref_id=base.pos_ref_id,
            had=None if stored is None else str(stored.state),
        )
        if stored is None:
            await lane.until_redis(partial(txs.create_if_absent, iid, base))
        if finished.claim is not None:
            await lane.until_redis(partial(txs.claim_command, iid, base.command_id, finished.claim))
        event = completed_event(iid, base.command_id, finished.done, base, lane.now())
        batch = WriteBatch()
        batch.tx(
            txs.complete_op(
                iid,
                base.pos_ref_id,
                result=bs.TxResult(str(finished.done.outcome)),
                outcome=bs.event_to_json(event),
                publish_to=lane.keys.events(iid),
                publish_fields=bs.encode_event(event),
                maxlen=lane.deps.settings.events_maxlen,
            )
        )
        if finished.entry_id is not None:
            batch.xack(lane.keys.commands(iid), finished.entry_id)
        await self._apply(batch)

    async def _write_running(self) -> str | None:
        """Write back the running transaction's record; its pos_ref_id (None: none running)."""
        lane = self.lane
        iid = lane.instance_id
        txs = lane.deps.txs
        record = lane.record
        if record is None:
            return None
        tx_done = lane.tx_done
        if record.completed and tx_done is not None and tx_done.done() and not tx_done.cancelled():
            # Its outcome landed before the failover: written again like a finished one.
            entry = lane.tx_entry
            self.finish(record, tx_done.result(), entry.entry_id if entry else None)
            await self._write_finished(self.finished[-1])
            return None
        stored = await lane.until_redis(partial(txs.get, iid, record.pos_ref_id))
        # What the lane knows: its state in flight (a completed one whose outcome
        # is still being written is `sent` until that write lands).
        state = TxState.SENT if record.completed else record.state
        if stored is None:
            log.warning(
                "the running transaction's record is missing on the new primary: written back",
                pos_ref_id=record.pos_ref_id,
                state=str(state),
            )
            back = dataclasses.replace(record, state=state, result=None, outcome=None)
            await lane.until_redis(partial(txs.create_if_absent, iid, back))
            entry = lane.tx_entry
            if (
                entry is not None
                and getattr(entry.command, "pos_ref_id", None) == record.pos_ref_id
            ):
                await lane.until_redis(
                    partial(
                        txs.claim_command,
                        iid,
                        entry.command.command_id,
                        bs_claim(record, entry.entry_id),
                    )
                )
        elif not stored.completed and _ORDER[stored.state] < _ORDER[state]:
            log.warning(
                "the running transaction's record is behind on the new primary: moved on",
                pos_ref_id=record.pos_ref_id,
                had=str(stored.state),
                state=str(state),
            )
            try:
                await lane.until_redis(
                    partial(
                        txs.update_state,
                        iid,
                        record.pos_ref_id,
                        state,
                        request_message_id=record.request_message_id,
                    )
                )
            except LocalProtocolError as exc:
                log.warning("the record could not be moved on", error=str(exc))
        return record.pos_ref_id


def bs_claim(record: TxRecord, entry_id: str) -> bytes:
    """The ``command_id`` claim of a money command (as :func:`translate.claim_of` makes it)."""
    return orjson.dumps(
        {"type": record.tx_type, "pos_ref_id": record.pos_ref_id, "entry_id": entry_id}
    )
