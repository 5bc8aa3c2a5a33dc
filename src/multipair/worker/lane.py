"""One lane: one terminal's connection, served through Redis (DESIGN.md "Guarantees").

The lane is the I/O shell around a :class:`~multipair.spi.pos.PosSession`
(STYLE.md §5). It pumps websocket text into the session and the session's
frames out, arms one timer at the session's deadline, and owns its tasks in
one ``asyncio.TaskGroup``. Every call into the session happens under one lock
and is followed by :meth:`Lane._flush`, which handles the session's events
*before* sending its frames: each round of events becomes one fenced write
(:mod:`multipair.worker.writes`: state hash, events, record moves, outcome,
acknowledgement), applied before the round's frames go out, and only then
are the tasks waiting on those events woken. That order is what makes the
guarantees hold:

- **Before send.** A transaction's record is created (``requested``) before
  the session is asked to start it (for a new transaction on a ready lane,
  in one script with the ``command_id`` claim and ``command_accepted``:
  :meth:`TxStore.begin`), and moved to ``sent`` in the write of the round
  that holds ``TransactionRequestSent`` — before the frame is written. After
  a crash, ``requested`` means "never left this process": the request is
  sent for the first time; ``sent`` means "may have reached the terminal":
  the lane asks the terminal (``get_transaction``) and never sends it again.
- **Persist before use.** Rolled keys are written (encrypted) before the reply
  that uses them leaves (§5.7).
- **Recorded, published and acknowledged together.** The outcome is stored,
  its ``transaction_completed`` event appended and the command's stream
  entry ``XACK``ed in one atomic, fenced step. A crash before it leaves the
  entry pending and the record open: on restart the outcome is recovered
  from the terminal.
- **In memory, one writer.** While the lane holds its lease it is the only
  writer of its records, so the running transaction's record is kept in
  memory (created or loaded once) rather than read back at every step.
- **Order.** Transaction commands run one at a time in stream order (a FIFO
  fed by the consumer); control commands act at once.
- **Bad input.** A malformed command is answered with ``command_rejected``,
  copied to the lane's dead-letter stream and acknowledged; the commands
  behind it go on. Entries are read as sent (field pairs, repeats kept), so
  the codec can refuse an entry that names a field twice. Our own bug met
  by one entry is contained the same way (``internal_error``); an entry
  whose every try ended the lane is given up after
  :data:`POISON_DELIVERIES` deliveries (``poison_entry``), unless its
  transaction record exists: that one is recovered. Terminal garbage is
  logged, counted in the state hash, and dropped.
- **One pairing, bounded.** A ``pair`` while another is queued or running
  is refused at once (``busy``), never queued behind it; a pairing still
  running at its command's ``expires_at`` (at the latest after
  :data:`PAIRING_TIMEOUT_S`) is cancelled by the lane (:func:`pairing_limit`).

**Redis away** (issue 13; DESIGN.md "Availability"). A Redis outage is
ridden out, never turned into an exit. Every Redis call of the lane goes
through :meth:`RedisWait.until`: an error that says Redis cannot serve
now (:func:`~multipair.worker.retry.is_redis_away`: refused, reset, timed
out, loading its AOF, ``READONLY``, ``MASTERDOWN``, a cluster failing over)
is waited out with jittered backoff (0.05 s doubling to 1 s) and the call
tried again; a lost lease still stops the lane at once. Meanwhile:

- The terminal link stays up. Idle pings and pongs write nothing, so they
  go on; the lane takes no commands (it cannot read them) and its heartbeat
  pauses (the supervisor does not count that against it).
- A transaction already at the terminal completes there; its outcome is
  stored, published and acknowledged when Redis is back (its record already
  says ``sent``), once.
- Retries never apply a write twice: every write batch and every
  :meth:`TxStore.begin` carries a write id and is applied once
  (:mod:`multipair.store.once`), so a write whose reply was lost and that is
  sent again returns the first result (no second event, ``HINCRBY`` or
  ``command_accepted``).
- Frames gated by a write (a request whose record must say ``sent``, a
  reply that uses rolled keys) never leave before it lands: a round's
  commit retries, holding the session lock, until its write lands or the
  lane stops. The cost: while one round's write waits, the session takes
  no other step, so pings and pongs of a lane that was mid-transaction
  wait too (and the terminal may drop the link, which the lane opens again
  once Redis is back). An idle lane writes nothing and is not affected.
- The lease may lapse while Redis is away (its TTL is 6 s). Its owner takes
  the same lease back when Redis returns unless another host took the lane
  meanwhile (``LeaseManager.keep_many``). A write refused as "lapsed" within
  :data:`LAPSED_WAIT_S` of Redis coming back is waited on too; any other
  refusal stops the lane (fencing holds).
- A read of new commands whose reply was lost leaves entries pending,
  delivered to this lane and never seen. Every :data:`RECLAIM_EVERY_S` the
  lane takes back its own pending entries idle for :data:`RECLAIM_IDLE_MS`
  that it does not hold already (``XAUTOCLAIM ... JUSTID``, read with
  ``XRANGE``: neither adds a delivery, so no healthy entry drifts towards the
  poison rule) and runs them (:meth:`Intake.reclaim`).

Bounded input (docs/security.md "Bounded input"):

- An entry larger than :data:`MAX_ENTRY_BYTES` (the contract's 64 KiB body
  plus room for the names) is refused (``oversize``) before anything else is
  done with it: not decoded, not peeked at.
- A dead letter keeps at most :data:`DEAD_LETTER_KEEP_BYTES` of the entry's
  fields, then its full size and the SHA-256 of the whole entry, so three
  100 MB entries cost a few KiB of dead letters, not 300 MB.
- The commands stream is trimmed of what the group has acknowledged (below
  its oldest pending entry, or past its last delivered one):
  every :data:`TRIM_EVERY_ENTRIES` entries taken and at every re-claim
  round, so it stays bounded however long the lane lives.

**The rooms.** This module wires the lane; the work is done elsewhere:

- :mod:`~multipair.worker.admission`: what to do with a command (pure).
- :mod:`~multipair.worker.translate`: commands to SPI requests, outcomes to
  event fields (pure).
- :mod:`~multipair.worker.session_events`: what a round of session events
  writes (pure; the shell applies it in :meth:`Lane._flush`).
- :mod:`~multipair.worker.entries`: stream entries and dead letters (pure).
- :mod:`~multipair.worker.intake`: the consumer group, claims, re-claims,
  dead letters and poison entries.
- :mod:`~multipair.worker.runner` and :mod:`~multipair.worker.control`:
  transaction commands one at a time, control commands at once.
- :mod:`~multipair.worker.link_loop`: the terminal link, the session pump
  and its timer; :mod:`~multipair.worker.heartbeat`.
- :mod:`~multipair.worker.pay_at_table`: the terminal's pay-at-table
  requests, published, kept pending until the POS answers or they expire.
- :mod:`~multipair.worker.redis_wait`: riding out a Redis outage;
  :mod:`~multipair.worker.failover`: re-reading and writing back what a new
  primary lacks after a failover;
  :mod:`~multipair.worker.clock`: the one clock every part reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as _dt
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from websockets.asyncio.client import ClientConnection

from multipair import __version__, failpoints
from multipair import broker_schema as bs
from multipair.config import Settings
from multipair.exceptions import (
    ConfigurationError,
    InternalError,
    LocalProtocolError,
    MultipairError,
    RetryLater,
)
from multipair.leases import LeaseLost
from multipair.logs import get_logger
from multipair.spi import pos as spi
from multipair.store.durable import Durability, replica_wait
from multipair.store.profiles import LaneProfile, ProfileStore
from multipair.store.transactions import TxRecord, TxState, TxStore
from multipair.worker.admission import (
    PAIRING_TIMEOUT_S,
    POISON_DELIVERIES,
    pair_busy,
    pairing_limit,
)
from multipair.worker.clock import Clock, SystemClock, iso_now, utc_now
from multipair.worker.control import TERMINAL_ANSWER_TIMEOUT_S, Control
from multipair.worker.entries import (
    DEAD_LETTER_KEEP_BYTES,
    MAX_ENTRY_BYTES,
    READ_BLOCK_MARGIN_MS,
    READ_BLOCK_MS,
    Entry,
    read_block_ms,
)
from multipair.worker.failover import PrimaryWatch
from multipair.worker.heartbeat import HEARTBEAT_PERIOD_S, heartbeat_loop
from multipair.worker.intake import (
    DEAD_LETTER_MAXLEN,
    RECLAIM_EVERY_S,
    RECLAIM_IDLE_MS,
    TRIM_EVERY_ENTRIES,
    Intake,
)
from multipair.worker.link import AddressBook
from multipair.worker.link_loop import CLOSE_TIMEOUT_S, LinkLoop
from multipair.worker.pat_replies import table_request
from multipair.worker.pay_at_table import PayAtTable
from multipair.worker.pump import flush
from multipair.worker.redis_wait import LAPSED_WAIT_S, RedisWait, Stopping, first, quiet
from multipair.worker.retry import ReconnectPolicy, RedisBackoff
from multipair.worker.runner import STOP, UNSENT_WAIT_S, Runner
from multipair.worker.session_events import (
    AskPos,
    Awaited,
    CloseLink,
    EventWrites,
    NoteState,
    RoundWrites,
    Running,
    SaveSecrets,
    SaveToken,
    record_key,
)
from multipair.worker.tamper import RejectionMonitor
from multipair.worker.translate import TX_TYPES
from multipair.worker.writes import LaneWriter, WriteBatch

__all__ = [
    "CLOSE_TIMEOUT_S",
    "DEAD_LETTER_KEEP_BYTES",
    "DEAD_LETTER_MAXLEN",
    "HEARTBEAT_PERIOD_S",
    "LAPSED_WAIT_S",
    "MAX_ENTRY_BYTES",
    "PAIRING_TIMEOUT_S",
    "POISON_DELIVERIES",
    "READ_BLOCK_MARGIN_MS",
    "READ_BLOCK_MS",
    "RECLAIM_EVERY_S",
    "RECLAIM_IDLE_MS",
    "TERMINAL_ANSWER_TIMEOUT_S",
    "TRIM_EVERY_ENTRIES",
    "UNSENT_WAIT_S",
    "Lane",
    "LaneDeps",
    "lane_must_end",
    "pair_busy",
    "pairing_limit",
    "read_block_ms",
    "run_lane",
]

log = get_logger(__name__)


@dataclass(slots=True, kw_only=True)
class LaneDeps:
    """What a lane needs from the outside world (built by ``python -m multipair.worker``)."""

    redis: Redis
    keys: bs.Keys
    profiles: ProfileStore
    txs: TxStore
    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    """The one clock of the lane: the session's wall time, monotonic intervals."""
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    fencing_token: int | None = None
    """The owner's lease token; every write that matters is fenced by it."""
    drain_timeout_s: float = 30.0
    """On SIGTERM, how long a running transaction may take to finish."""
    redis_backoff: RedisBackoff = field(default_factory=RedisBackoff)
    """Pauses between tries while Redis is away."""
    reclaim_every_s: float = RECLAIM_EVERY_S
    reclaim_idle_ms: int = RECLAIM_IDLE_MS


class Lane:
    """Serve one instance id until cancelled. See the module docstring for its rules.

    It holds the lane's shared state (the session, the running command, the
    events every loop watches) and the one session step (:meth:`_step`,
    :meth:`_flush`); its parts (:class:`Intake`, :class:`Runner`,
    :class:`Control`, :class:`LinkLoop`) read and set that state through it.
    """

    def __init__(self, instance_id: str, deps: LaneDeps) -> None:
        self.instance_id = bs.validate_instance_id(instance_id)
        self.deps = deps
        self.keys = deps.keys
        self.redis = deps.redis
        self.clock = deps.clock
        self.consumer = f"{deps.settings.host_id}:{os.getpid()}"
        self._lock = asyncio.Lock()
        self.wake = asyncio.Event()
        self.want_link = asyncio.Event()
        self.tx_queue: asyncio.Queue[object] = asyncio.Queue()
        self.ws: ClientConnection | None = None
        self._close_requested = False
        self._sent_in_flush = False
        self._session: spi.PosSession | None = None
        self.profile: LaneProfile | None = None
        self.address: AddressBook | None = None
        # Futures the runner or a control command waits on.
        self.tx_done: asyncio.Future[spi.TransactionCompleted] | None = None
        self.tx_entry: Entry | None = None
        self.record: TxRecord | None = None  # the running transaction's record
        self.pairing_done: asyncio.Future[spi.PairingFinished] | None = None
        self.pair_entry: Entry | None = None  # the pair queued or running: one at a time
        self.answers: dict[str, Awaited] = {}  # requests waiting for an answer, by message id
        durability = Durability(
            min_replicas=deps.settings.redis_min_replicas, wait_ms=deps.settings.redis_wait_ms
        )
        self.writer = LaneWriter(
            self.redis,
            self.keys,
            self.instance_id,
            deps.fencing_token,
            replicas=replica_wait(self.redis, durability),
        )
        self._draining = asyncio.Event()
        # Set once the lane is to stop; every loop watches it, so a clean stop
        # never depends on cancellation reaching the right await.
        self.stopped = asyncio.Event()
        self.flushed = asyncio.Event()  # set after every flush (readiness may have changed)
        self.idle = asyncio.Event()  # set while the runner has no command in hand
        self.idle.set()
        # Stream entries dispatched and not acknowledged yet (queued, running, being
        # answered): never taken twice (Intake.dispatch), never re-claimed (Intake.reclaim).
        self.in_hand: set[str] = set()
        self.redis_wait = RedisWait(self.clock, deps.redis_backoff, self.stopped)
        self.until_redis = self.redis_wait.until
        self.primary = PrimaryWatch(self)  # after a failover: re-read, write back (issue 19)
        self.event_writes = EventWrites(
            self.instance_id,
            self.keys,
            deps.txs,
            deps.settings.events_maxlen,
            RejectionMonitor(),  # frames the terminal link dropped
        )
        self.intake = Intake(self)
        self.runner = Runner(self)
        self.control = Control(self)
        self.link = LinkLoop(self)
        self.pat = PayAtTable(self)

    @staticmethod
    def must_end(exc: BaseException) -> bool:
        """:func:`lane_must_end`, for the lane's parts."""
        return lane_must_end(exc)

    @property
    def draining(self) -> asyncio.Event:
        """Set once the lane is draining: it takes no new command."""
        return self._draining

    # ------------------------------------------------------------------
    # Entry point
    # ------------------------------------------------------------------

    async def run(self) -> None:
        """Load the profile and keys, recover, then serve until cancelled."""
        structlog.contextvars.bind_contextvars(instance_id=self.instance_id)
        deps = self.deps
        try:
            profile, secrets, previous = await self.until_redis(self._load, until=self._draining)
        except Stopping:
            log.info("lane stopped before it started: Redis was away")
            return
        self.profile = profile
        self.address = AddressBook(profile)
        self._session = spi.PosSession(
            pos_id=profile.pos_id,
            secrets=secrets,
            previous_secrets=previous,
            pos_info=spi.PosInfo(
                pos_vendor_id=deps.settings.pos_vendor_id,
                pos_version=deps.settings.pos_version,
                library_version=__version__,
                device_system=f"multipair/{__version__}",
            ),
        )
        self.pat.config = profile.pat
        self._session.set_table_config(table_request(profile.pat), self.clock.time())
        try:
            await self.until_redis(self.intake.ensure_group, until=self._draining)
            await self.primary.learn()
        except Stopping:
            log.info("lane stopped before it started: Redis was away")
            return
        self.redis_wait.on_back = self.primary.after_outage
        if deps.fencing_token is None:  # supervised lanes: the supervisor reports starts
            await self.publish(
                bs.LaneStarted, host=deps.settings.host_id, pid=os.getpid(), restarts=0
            )
        start = WriteBatch().hset(
            self.keys.state(self.instance_id),
            {
                "pid": str(os.getpid()),
                "host": deps.settings.host_id,
                "started_at": iso_now(self.clock),
                "last_error": "",
                "draining": "0",
            },
        )
        self.event_writes.add_status(start, self.session.status, self.session.flow, self.now())
        try:
            await self.apply(start, until=self._draining)
        except Stopping:
            log.info("lane stopped before it started: Redis was away")
            return
        log.info("lane started", paired=secrets is not None, pos_id=profile.pos_id)
        reason = "stopped"
        try:
            async with asyncio.TaskGroup() as tasks:
                # A loop that meets the stop inside a Redis wait (Stopping) just ends.
                tasks.create_task(quiet(self.link.link_loop()), name="link")
                tasks.create_task(quiet(self.link.timer_loop()), name="timer")
                tasks.create_task(quiet(heartbeat_loop(self)), name="heartbeat")
                tasks.create_task(quiet(self.runner.runner_loop()), name="runner")
                tasks.create_task(quiet(self.intake.consume_loop()), name="consumer")
                tasks.create_task(quiet(self.pat.expiry_loop()), name="pay_at_table")
                tasks.create_task(quiet(self.pat.publish_loop()), name="pay_at_table_events")
                tasks.create_task(self._drain_watch(), name="drain")
            reason = "drained"
        except* LeaseLost as lost:
            # Another process owns the lane now: write nothing more, stop.
            log.error("lease lost: stopping at once", detail=str(lost.exceptions[0]))
            raise
        if deps.fencing_token is None:  # supervised lanes: the supervisor reports stops
            with contextlib.suppress(Exception):
                await self.publish(
                    bs.LaneStopped, host=deps.settings.host_id, pid=os.getpid(), reason=reason
                )
        log.info("lane stopped", reason=reason)

    async def _load(self) -> tuple[LaneProfile, Any, Any]:
        profile = await self.deps.profiles.get(self.instance_id)
        secrets, previous = await self.deps.profiles.load_secrets_and_previous(self.instance_id)
        return profile, secrets, previous

    def drain(self) -> None:
        """Stop taking commands; let the running transaction finish, then stop (SIGTERM)."""
        self._draining.set()

    def stop_now(self) -> None:
        """Stop without waiting for the running transaction (it will be recovered)."""
        self._draining.set()
        self.stopped.set()

    async def _drain_watch(self) -> None:
        await self._draining.wait()
        log.info("draining", timeout_s=self.deps.drain_timeout_s)
        if not self.stopped.is_set():  # a stop (a removed lane, too) writes nothing more
            await self.write_state(draining="1")  # for people and the supervisor
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.deps.drain_timeout_s):
                await first(self.idle.wait(), self.stopped.wait())
        if not self.idle.is_set():
            log.warning("stopping with a transaction in flight; it will be recovered")
        # Close the terminal link ourselves rather than rely on cancellation
        # reaching a websocket read: the link loop sees the close, does its
        # bookkeeping and, draining, does not reconnect.
        ws = self.ws
        if ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await ws.close()
        self.stopped.set()
        # Wake every loop so it sees the stop.
        self.wake.set()
        self.want_link.set()
        self.tx_queue.put_nowait(STOP)

    @property
    def session(self) -> spi.PosSession:
        """The lane's SPI session (set up by :meth:`run`)."""
        assert self._session is not None, "Lane.run() sets the session up"
        return self._session

    def now(self) -> _dt.datetime:
        """The lane clock's wall time, as an aware UTC datetime."""
        return utc_now(self.clock)

    async def apply(self, batch: WriteBatch, *, until: asyncio.Event | None = None) -> list[Any]:
        """Apply ``batch`` once, waiting out Redis (same batch, same write id, on every try)."""
        if not batch:
            return []  # nothing to write: never waits (a round of pings and pongs)
        results = await self.until_redis(partial(self.writer.apply, batch), until=until)
        self.in_hand.difference_update(batch.acked)
        self.primary.acked.extend(batch.acked)
        return results

    # ------------------------------------------------------------------
    # The session step: call, then handle events, then send frames
    # ------------------------------------------------------------------

    async def step(self, action: Callable[[float], object]) -> object:
        """Run one session call under the lock and flush what it produced."""
        async with self._lock:
            try:
                return action(self.clock.time())
            finally:
                await self._flush()

    async def _flush(self) -> None:
        session = self.session
        await flush(session, self._round, lambda: self.ws, sent=self._after_send)
        if self._close_requested and self.ws is not None:
            self._close_requested = False
            await self.ws.close()
        self.wake.set()
        self.flushed.set()
        if session.wants_connection:
            self.want_link.set()

    async def _round(self, events: Sequence[spi.PosSessionEvent]) -> None:
        """One round of session events: plan and carry out their writes, before its frames."""
        writes = RoundWrites()
        for event in events:
            await self._on_session_event(event, writes)
        try:
            await self._commit(writes)  # stored before any frame of this round leaves
        except BaseException as exc:
            # The round's writes did not land, so its frames must never
            # leave (a request whose record is not `sent`, a reply to keys
            # not stored): drop them. The session believes they were sent,
            # so the lane cannot go on with it; a refused write is our bug,
            # raised as such so that no command handler takes it for a bad
            # command. The lane ends and its successor recovers from the
            # records.
            self.session.data_to_send()
            if isinstance(exc, LocalProtocolError):
                raise InternalError(f"the lane's own write was refused: {exc}") from exc
            raise

    def _after_send(self) -> None:
        if self._sent_in_flush:
            self._sent_in_flush = False
            failpoints.hit("lane.after_send")

    async def _commit(self, writes: RoundWrites) -> None:
        """Apply the pending writes in one step, then run what waited for them."""
        batch, after = writes.batch, writes.after
        writes.batch, writes.after = WriteBatch(), []
        # Retried until it lands (holding the session lock: no frame of this
        # round, nor of any later one, leaves before it); a stop ends it.
        writes.results = await self.apply(batch)
        for wake in after:
            wake()

    async def _on_session_event(self, event: spi.PosSessionEvent, writes: RoundWrites) -> None:
        """Read what ``event``'s plan needs, plan its writes, carry out its effects in order."""
        if isinstance(event, spi.TransactionRequestSent):
            # Written before the frame leaves (_flush commits, then sends).
            failpoints.hit("lane.before_send")
            self._sent_in_flush = True
        elif isinstance(event, spi.TransactionCompleted):
            failpoints.hit("lane.before_outcome_published")
        wanted = record_key(event)
        record = None if wanted is None else await self.record_of(*wanted)
        session = self.session
        running = Running(
            entry=self.tx_entry,
            tx_done=self.tx_done,
            pairing_done=self.pairing_done,
            answers=self.answers,
            status=session.status,
            flow=session.flow,
            at=self.now(),
            monotonic=self.clock.monotonic(),
        )
        for effect in self.event_writes.plan(event, running, record, writes):
            match effect:
                case NoteState():
                    self._note_state(effect.pos_ref_id, effect.state, effect.result)
                case SaveSecrets():
                    await self._commit(writes)  # keep the order of writes
                    await self._save_secrets(effect.event)
                case SaveToken():
                    await self._commit(writes)  # keep the order of writes
                    await self.until_redis(
                        partial(self.deps.profiles.save_spi_token, self.instance_id, effect.token)
                    )
                case CloseLink():
                    self._close_requested = True
                case AskPos():
                    await self.pat.on_request(effect.event, writes)

    async def _save_secrets(self, event: spi.SecretsChanged) -> None:
        await self.until_redis(
            partial(
                self.deps.profiles.save_secrets,
                self.instance_id,
                event.secrets,
                previous=event.previous,
            )
        )
        log.info(
            "secrets persisted",
            reason=event.reason,
            fingerprint=event.secrets.fingerprint() if event.secrets else None,
        )
        if event.reason == "rolled":
            failpoints.hit("lane.after_roll_persisted")
            self.session.secrets_persisted()

    async def record_of(self, pos_ref_id: str, tx_type: Any = None) -> TxRecord | None:
        """The record of the running transaction: kept in memory, read only when not known.

        While this process holds the lane's lease it is the records' only
        writer, so the record it created or loaded is the record; only the
        fields that never change after creation (ids, type, amounts) and
        whether it exists are used from it.
        """
        # Settlement has no pos_ref_id (§7.14) and never a record.
        if not pos_ref_id:
            return None
        record = self.record
        if record is None or record.pos_ref_id != pos_ref_id:
            record = await self.until_redis(
                partial(self.deps.txs.get, self.instance_id, pos_ref_id)
            )
            if record is not None:
                self.record = record
        if record is not None and tx_type is not None and TX_TYPES.get(record.tx_type) != tx_type:
            # Another transaction on the same pos_ref_id: a reversal names the
            # purchase it reverses (§7.15) and keeps no record of its own. It
            # must never move or complete the purchase's record.
            return None
        return record

    def _note_state(
        self, pos_ref_id: str, state: TxState, result: bs.TxResult | None = None
    ) -> None:
        record = self.record
        if record is not None and record.pos_ref_id == pos_ref_id and not record.completed:
            self.record = dataclasses.replace(record, state=state, result=result)

    # ------------------------------------------------------------------
    # Publishing
    # ------------------------------------------------------------------

    def event_base(self, command: bs.Command) -> dict[str, Any]:
        """The fields every answer to ``command`` starts with."""
        return {"instance_id": self.instance_id, "at": self.now(), "command_id": command.command_id}

    def event(self, cls: type[bs.Event], **fields: Any) -> bs.Event:
        """A new ``cls`` event of this lane, at the lane clock's now."""
        return cls(instance_id=self.instance_id, at=self.now(), **fields)

    async def publish(self, cls: type[bs.Event], **fields: Any) -> None:
        """Publish a new ``cls`` event (waiting out Redis)."""
        await self.publish_event(self.event(cls, **fields))

    def event_batch(self, event: bs.Event) -> WriteBatch:
        """A write batch that publishes ``event``."""
        batch = WriteBatch()
        self.event_writes.add(batch, event)
        return batch

    async def publish_event(self, event: bs.Event) -> None:
        """Publish ``event`` (waiting out Redis)."""
        await self.apply(self.event_batch(event))

    async def write_state(self, **fields: str) -> None:
        """Fields of the state hash for people (``last_error``): skipped while Redis is away.

        Nothing waits on them, so the terminal link is not held up by them.
        """
        batch = WriteBatch().hset(self.keys.state(self.instance_id), fields)
        written, _ = await self.redis_wait.best_effort(partial(self.writer.apply, batch))
        if not written:
            log.info("state not written: Redis is away", fields=sorted(fields))


def lane_must_end(exc: BaseException) -> bool:
    """Whether an error met while handling one entry must end the lane, not the entry.

    Not the entry's fault, so never a reason to refuse it: Redis trouble
    (unreachable, failing over, refusing writes) and a lost lease end the
    lane as they always did, and its successor takes the entry again; a
    configuration fault is fatal. Nor may the lane go on after an error that
    escaped a session flush (:meth:`Lane._flush`): that round's writes did
    not land, so the session is out of step with Redis and the terminal, and
    only a fresh start, recovering from the records, is safe. Redis being
    away never gets here (every call waits it out, :meth:`RedisWait.until`);
    the lane stopping during such a wait (``Stopping``) leaves the entry
    pending as well.
    """
    if isinstance(exc, RedisError | RetryLater | LeaseLost | ConfigurationError | Stopping):
        return True
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is _FLUSH_CODE:
            return True
        tb = tb.tb_next
    return False


async def run_lane(instance_id: str, deps: LaneDeps) -> None:
    """Run a lane until cancelled; configuration errors are raised, not retried."""
    lane = Lane(instance_id, deps)
    try:
        await lane.run()
    except* ConfigurationError:
        raise
    except* MultipairError as group:
        log.error("lane failed", errors=[str(e) for e in group.exceptions])
        raise


_FLUSH_CODE: Final = Lane._flush.__code__
"""How :func:`lane_must_end` recognises an error that escaped a session flush."""
