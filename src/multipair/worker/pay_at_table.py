"""Pay at table in the lane (PROTOCOL.md §7.23): the terminal asks, the POS answers through Redis.

The session hands the lane each terminal request
(:class:`~multipair.spi.pos.PayAtTableRequest`); :class:`PayAtTable` turns it
into an event for the POS, keeps it *pending* in memory until the POS
answers or its deadline passes, and relays the answer to the terminal under
the request's id. The decisions are :mod:`multipair.worker.pat_replies`'
(pure); this is the shell. What it does, event by event:

- ``get_bill_details`` → ``bill_requested``; ``get_open_tables`` →
  ``open_tables_requested``; ``bill_payment`` → ``bill_payment_reported``.
  Each carries a lane-chosen ``request_id`` (opaque) and ``answer_by``: the
  arrival plus the profile's ``answer_timeout_ms`` (10 000 by default). The
  event is written in the round of the terminal's frame (the lane's module
  docstring), so a Redis outage is ridden out as for every other event.
- ``bill_payment``: the first report of a ``terminal_ref_id`` is stored in
  ``mp:lane:{ID}:pat:payments`` (``HSETNX``, field terminal_ref_id, value the
  ``bill_payment_reported`` event's JSON) in the same write as its event,
  indexed by its bill in ``pat:bills`` and by time in ``pat:payments_at``
  (:func:`~multipair.worker.pat_replies.bill_entry`); a repeat is published
  with ``duplicate: true`` and stores nothing. A payment without a
  ``terminal_ref_id`` is stored under ``~<request_id>`` and never counts as
  a repeat. Each such write also prunes (at most 256) payments stored more
  than ``MULTIPAIR_PAT_RETENTION_S`` ago (7 days by default): after that a
  repeat is no longer recognised, nor is the payment in its bill's history.
- ``bill_payment_flow_ended`` → ``bill_flow_ended`` (no answer awaited);
  once it is written the terminal gets ``bill_payment_flow_ended_ack``
  (while the link is ready, §13.14).
- The POS answers with ``bill_details`` (for a bill request or a payment)
  or ``open_tables`` naming the ``request_id``; the lane relays it at once
  (control commands) and answers the command ``command_accepted``. A
  ``bill_details`` with the bill gets its ``bill_payment_history`` from the
  stored payments of that ``bill_id`` (oldest first; read through
  ``pat:bills``, never the other bills'); its ``table_id``
  defaults to the request's, and with ``error`` its ``bill_id`` too. A bill
  whose total is 0 goes out as ``INVALID_TABLE_ID``, as the reference
  client does. A ``request_id`` that is not pending (never asked, already
  answered, expired, or of the other kind) is refused ``unknown_request``;
  with the link down, or dropped since the request came (the terminal stopped
  waiting, and its ids may come back on the next link, §2.5), the request is
  dropped and the command refused ``terminal_unavailable``.
- At ``answer_by`` without an answer, the terminal gets the protocol's "no"
  (``bill_details`` ``success: false``, ``INVALID_TABLE_ID``; an empty
  ``open_tables``) at once, whether Redis is there or not, and
  ``bill_request_expired`` is published (in deadline order, once Redis
  allows); its ``error_sent`` is ``""`` when nothing could be sent (the link
  was down or dropped since the request came).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as _dt
import itertools
import secrets
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from multipair import broker_schema as bs
from multipair.exceptions import CommandError
from multipair.logs import get_logger
from multipair.spi import messages as m
from multipair.spi import pos as spi
from multipair.store.profiles import DEFAULT_ANSWER_TIMEOUT_MS, PayAtTableConfig
from multipair.worker.pat_replies import (
    BILL_REQUESTS,
    TABLE_REQUESTS,
    Pending,
    bill_entry,
    bill_range,
    bill_reply,
    entry_field,
    expired_event,
    payment_event,
    payment_field,
    payment_history,
    prune_before_ms,
    refusal,
    request_event,
    tables_reply,
    take,
)
from multipair.worker.redis_wait import first

if TYPE_CHECKING:
    from multipair.worker.lane import Lane
    from multipair.worker.session_events import RoundWrites

__all__ = ["PayAtTable"]

log = get_logger("multipair.worker.lane")

STORED_MAX: Final = 1024
"""The most terminal_ref_ids a lane process keeps in memory as stored (Redis has them all)."""


class PayAtTable:
    """The lane's pending pay-at-table requests and their answers."""

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self.pending: dict[str, Pending] = {}
        self.config: PayAtTableConfig | None = None
        self._ids = itertools.count(1)
        # Unique across restarts of the lane: an answer meant for a request of an
        # earlier process can never reach one of this process.
        self._run = secrets.token_hex(4)
        self._stored: dict[str, float] = {}
        """terminal_ref_ids this process stored -> when (oldest first, at most STORED_MAX)."""
        self.retention_s = lane.deps.settings.pat_retention_s
        """How long a stored payment is kept (``MULTIPAIR_PAT_RETENTION_S``)."""
        self._wake = asyncio.Event()
        self.expired: collections.deque[bs.Event] = collections.deque()
        """``bill_request_expired`` events not yet published (:meth:`publish_loop`)."""
        self._expired_wake = asyncio.Event()

    # ------------------------------------------------------------------
    # The terminal asks (in the round of its frame, under the session lock)
    # ------------------------------------------------------------------

    async def on_request(self, asked: spi.PayAtTableRequest, writes: RoundWrites) -> None:
        """Publish ``asked`` in the round's write; keep it pending when the POS must answer."""
        lane = self.lane
        request_id = f"{self._run}-{next(self._ids)}"
        timeout_ms = self.config.answer_timeout_ms if self.config else DEFAULT_ANSWER_TIMEOUT_MS
        answer_by = _dt.datetime.fromtimestamp(lane.clock.time() + timeout_ms / 1000, _dt.UTC)
        at, iid = lane.now(), lane.instance_id
        if isinstance(asked.read.request, m.BillPaymentRequest):
            ref = asked.read.details.terminal_ref_id if asked.read.details else ""
            duplicate = bool(ref) and await self._seen(ref)
            event, pending = payment_event(
                iid, at, request_id, answer_by, asked, duplicate=duplicate
            )
            if not duplicate:
                field = payment_field(event)
                now = lane.clock.time()
                writes.batch.pat_payment(
                    self._keys(),
                    field,
                    bs.event_to_json(event),
                    bill_entry(event.bill_id, field),
                    int(now * 1000),
                    prune_before_ms(now, self.retention_s),
                )
                if ref:
                    self._remember(ref, now)
            log.info(
                "pay at table: payment reported",
                bill_id=event.bill_id,
                amount_cents=event.amount_cents,
                duplicate=duplicate,
                request_id=request_id,
            )
            lane.event_writes.add(writes.batch, event)
        else:
            published, maybe = request_event(iid, at, request_id, answer_by, asked)
            lane.event_writes.add(writes.batch, published)
            if maybe is None:  # a flow end: told, acknowledged once written
                bill_id = getattr(asked.read.request, "bill_id", "")
                writes.after.append(partial(self._ack, bill_id))
                log.info("pay at table: flow ended", bill_id=bill_id, request_id=request_id)
                return
            pending = maybe
        self.pending[request_id] = pending
        self._wake.set()
        log.info("pay at table: asked the POS", request=pending.request, request_id=request_id)

    def _keys(self) -> tuple[str, str, str]:
        """``pat:payments``, ``pat:payments_at``, ``pat:bills`` of the lane."""
        keys, iid = self.lane.keys, self.lane.instance_id
        return keys.pat_payments(iid), keys.pat_payment_times(iid), keys.pat_bills(iid)

    def _remember(self, ref: str, now: float) -> None:
        """Keep ``ref`` in memory as stored; only the newest :data:`STORED_MAX` are kept."""
        self._stored[ref] = now
        while len(self._stored) > STORED_MAX:
            del self._stored[next(iter(self._stored))]

    async def _seen(self, ref: str) -> bool:
        """Whether a payment with ``ref`` was reported before (and is still kept: the
        retention, ``MULTIPAIR_PAT_RETENTION_S``)."""
        at = self._stored.get(ref)
        if at is not None and at >= self.lane.clock.time() - self.retention_s:
            return True
        lane = self.lane
        key = lane.keys.pat_payments(lane.instance_id)
        return bool(await lane.until_redis(partial(lane.redis.hexists, key, ref)))

    def _ack(self, bill_id: str) -> None:
        """After ``bill_flow_ended`` is written: acknowledge the terminal (still in the round)."""
        self.lane.session.ack_bill_flow_ended(bill_id, self.lane.clock.time())

    # ------------------------------------------------------------------
    # The POS answers (control commands)
    # ------------------------------------------------------------------

    async def answer_bill(self, command: bs.BillDetails) -> None:
        """Relay ``bill_details`` to the terminal; ``CommandError`` when it cannot be."""
        pending = take(self.pending, command.request_id, BILL_REQUESTS, command.type)
        del self.pending[pending.request_id]  # taken before any wait: answered once
        history: tuple[m.PaymentHistoryEntry, ...] = ()
        if command.error is None and command.bill_id is not None:
            lane = self.lane
            stored = await lane.until_redis(partial(self._bill_payments, command.bill_id))
            history = payment_history(stored, command.bill_id)
        reply = bill_reply(command, pending, history)
        session = self.lane.session
        await self._send(
            pending, lambda now: session.reply_bill_details(pending.message_id, reply, now)
        )

    async def _bill_payments(self, bill_id: str) -> list[bytes | str]:
        """The stored payments of ``bill_id`` (JSON), found by its entries in ``pat:bills``."""
        payments, _, bills = self._keys()
        low, high = bill_range(bill_id)
        found = await self.lane.redis.zrangebylex(bills, low, high)
        entries = [e if isinstance(e, bytes) else e.encode() for e in found]
        if not entries:
            return []
        values: list[bytes | str | None] = await self.lane.redis.hmget(
            payments, [entry_field(e) for e in entries]
        )
        return [v for v in values if v is not None]  # pruned meanwhile: gone

    async def answer_tables(self, command: bs.OpenTables) -> None:
        """Relay ``open_tables`` to the terminal; ``CommandError`` when it cannot be."""
        pending = take(self.pending, command.request_id, TABLE_REQUESTS, command.type)
        del self.pending[pending.request_id]
        reply = tables_reply(command)
        session = self.lane.session
        await self._send(
            pending, lambda now: session.reply_open_tables(pending.message_id, reply, now)
        )

    async def _send(self, pending: Pending, reply: Callable[[float], bool]) -> None:
        if not await self.lane.step(reply):
            raise CommandError(
                bs.Reason.TERMINAL_UNAVAILABLE,
                f"the terminal's link dropped since its {pending.request} "
                f"{pending.request_id!r} (or is down): the request was dropped unanswered",
            )
        log.info("pay at table: answered", request=pending.request, request_id=pending.request_id)

    # ------------------------------------------------------------------
    # Deadlines (the lane clock's wall time, as answer_by says)
    # ------------------------------------------------------------------

    async def expiry_loop(self) -> None:
        """Tell the terminal "no" for every request still pending at its deadline, until stopped.

        The replies need no Redis, so none waits for it: each goes out at its
        deadline, and its ``bill_request_expired`` is queued for
        :meth:`publish_loop`, which publishes them in order when Redis allows.
        """
        lane = self.lane
        while not lane.stopped.is_set():
            self._wake.clear()
            if not self.pending:
                await first(self._wake.wait(), lane.stopped.wait())
                continue
            delay = min(p.deadline for p in self.pending.values()) - lane.clock.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await first(self._wake.wait(), lane.stopped.wait())
                continue
            now = lane.clock.time()
            for pending in [p for p in self.pending.values() if p.deadline <= now]:
                if self.pending.pop(pending.request_id, None) is not None:
                    await self._expire(pending)

    async def publish_loop(self) -> None:
        """Publish the queued ``bill_request_expired`` events, oldest first, until stopped."""
        lane = self.lane
        while not lane.stopped.is_set():
            self._expired_wake.clear()
            if not self.expired:
                await first(self._expired_wake.wait(), lane.stopped.wait())
                continue
            await lane.publish_event(self.expired[0])  # waits out Redis
            self.expired.popleft()

    async def _expire(self, pending: Pending) -> None:
        session = self.lane.session
        reply, error = refusal(pending)
        send: Any = (
            session.reply_bill_details
            if isinstance(reply, m.BillDetailsReply)
            else session.reply_open_tables
        )
        sent = bool(await self.lane.step(lambda now: send(pending.message_id, reply, now)))
        log.warning(
            "pay at table: no answer in time",
            request=pending.request,
            request_id=pending.request_id,
            told_terminal=sent,
        )
        lane = self.lane
        self.expired.append(expired_event(lane.instance_id, lane.now(), pending, error, sent=sent))
        self._expired_wake.set()
