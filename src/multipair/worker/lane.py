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
through :meth:`Lane._until_redis`: an error that says Redis cannot serve
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
  poison rule) and runs them (:meth:`Lane._reclaim`).

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
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as _dt
import hashlib
import os
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, TypeVar

import orjson
import structlog
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import RedisError, ResponseError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from multipair import __version__, failpoints
from multipair import broker_schema as bs
from multipair.broker_schema import counters
from multipair.config import Settings
from multipair.exceptions import (
    CommandError,
    ConfigurationError,
    InternalError,
    LocalProtocolError,
    MultipairError,
    RetryLater,
)
from multipair.leases import LeaseLapsed, LeaseLost
from multipair.logs import get_logger
from multipair.redis_conn import RAW_REPLY, allow_raw_replies
from multipair.spi import messages as m
from multipair.spi import pos as spi
from multipair.spi.address import DEFAULT_TIMINGS, SUBPROTOCOL, DeviceAddressResponseCode
from multipair.store.profiles import LaneProfile, ProfileStore
from multipair.store.transactions import TxRecord, TxState, TxStore
from multipair.worker.link import AddressBook, client_ssl_context, resolve_device_address
from multipair.worker.retry import (
    ReconnectPolicy,
    RedisBackoff,
    is_redis_away,
    is_retryable,
    reconnect_delays,
    redis_delays,
)
from multipair.worker.tamper import RejectionMonitor
from multipair.worker.writes import LaneWriter, TxResultCode, WriteBatch

__all__ = [
    "PAIRING_TIMEOUT_S",
    "READ_BLOCK_MARGIN_MS",
    "READ_BLOCK_MS",
    "Lane",
    "LaneDeps",
    "pair_busy",
    "pairing_limit",
    "read_block_ms",
]


class _Stopping(Exception):
    """The lane stops while a task waits (for the terminal, or for Redis): leave it pending."""


_STOP: Final = object()  # queue sentinel: the runner returns


async def _first(*aws: Any) -> None:
    """Wait until the first of ``aws`` finishes; cancel and await the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


log = get_logger(__name__)

HEARTBEAT_PERIOD_S: Final = 2.0
TERMINAL_ANSWER_TIMEOUT_S: Final = 15.0
PAIRING_TIMEOUT_S: Final = 180.0
"""The longest a pairing may run; a ``pair`` with an earlier ``expires_at`` ends then."""
READ_BLOCK_MS: Final = 10_000
"""How long one read of new commands blocks; a drain or stop cuts it short."""
READ_BLOCK_MARGIN_MS: Final = 2_000
"""A blocking read ends this long before the client's socket timeout would fire."""
READ_COUNT: Final = 64
CLOSE_TIMEOUT_S: Final = 2.0
DEAD_LETTER_MAXLEN: Final = 10_000
POISON_DELIVERIES: Final = 3
MAX_ENTRY_BYTES: Final = bs.MAX_BODY_BYTES + 1024
"""An entry's names and values together; anything larger is refused unread."""
DEAD_LETTER_KEEP_BYTES: Final = 4096
"""How much of a refused entry's fields its dead letter keeps."""
TRIM_EVERY_ENTRIES: Final = 256
"""The commands stream is trimmed after this many entries were taken (and every re-claim)."""
"""An entry delivered this many times without an answer is dead-lettered, not run again."""
UNSENT_WAIT_S: Final = 30.0
"""How long a new transaction waits for the terminal link before it is refused."""
RECLAIM_EVERY_S: Final = 30.0
"""How often the lane looks for its own pending entries that no read of it returned."""
RECLAIM_IDLE_MS: Final = 60_000
"""A pending entry idle this long and not in hand is taken back and run (:meth:`Lane._reclaim`)."""
LAPSED_WAIT_S: Final = 10.0
"""After Redis comes back, how long a write refused for a lapsed lease waits for its owner."""

_SLOW_CALL_S: Final = 2.0
"""A Redis call of the lane that took longer than this met a silent Redis (see ``_note_slow``)."""
_AWAY_QUIET_S: Final = 5.0
"""Redis away again this soon after it came back: a stale pooled connection, not logged."""

_T = TypeVar("_T")

# Command type -> how the session learns of a transaction of that type.
_TX_TYPES: Final[dict[str, m.TxType]] = {
    "purchase": m.TxType.PURCHASE,
    "refund": m.TxType.REFUND,
    "cashout": m.TxType.CASHOUT,
    "moto_purchase": m.TxType.MOTO,
    "settle": m.TxType.SETTLE,
    "settlement_enquiry": m.TxType.SETTLEMENT_ENQUIRY,
    "reversal": m.TxType.REVERSAL,
}


@dataclass(slots=True, kw_only=True)
class LaneDeps:
    """What a lane needs from the outside world (built by ``python -m multipair.worker``)."""

    redis: Redis
    keys: bs.Keys
    profiles: ProfileStore
    txs: TxStore
    settings: Settings
    clock: Callable[[], float] = time.time
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    fencing_token: int | None = None
    """The owner's lease token; every write that matters is fenced by it."""
    drain_timeout_s: float = 30.0
    """On SIGTERM, how long a running transaction may take to finish."""
    redis_backoff: RedisBackoff = field(default_factory=RedisBackoff)
    """Pauses between tries while Redis is away."""
    reclaim_every_s: float = RECLAIM_EVERY_S
    reclaim_idle_ms: int = RECLAIM_IDLE_MS


_Pairs = list[tuple[Any, Any]]
"""A stream entry's fields as sent: (name, value) pairs, in order, repeats kept."""


@dataclass(slots=True)
class _Entry:
    """A command stream entry in flight through the lane."""

    entry_id: str
    command: bs.Command
    acked: bool = False
    """Acknowledged already (with the outcome, in the same write)."""
    fields: Any = None
    """The entry's field pairs as read (for its dead letter, should handling it fail)."""
    read_at: float = field(default_factory=time.monotonic)
    """When this process read it (``m:txb:*``: command read to outcome written)."""


@dataclass(slots=True)
class _Writes:
    """What one round of session events writes, and what it wakes once that is written.

    The round's writes go to Redis as one fenced script before any of the
    round's frames go to the terminal; only then are the waiters woken
    (``after``), so nobody acts on an outcome or an answer before it is
    stored. A handler that must write elsewhere first (secrets, in the
    profile) commits what is pending before it, keeping the order.
    """

    batch: WriteBatch = field(default_factory=WriteBatch)
    after: list[Callable[[], None]] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)
    """The results of the last commit, by op index (read by ``after`` callbacks)."""


class Lane:
    """Serve one instance id until cancelled. See the module docstring for its rules."""

    def __init__(self, instance_id: str, deps: LaneDeps) -> None:
        self.instance_id = bs.validate_instance_id(instance_id)
        self.deps = deps
        self.keys = deps.keys
        self.redis = deps.redis
        self._consumer = f"{deps.settings.host_id}:{os.getpid()}"
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._want_link = asyncio.Event()
        self._tx_queue: asyncio.Queue[object] = asyncio.Queue()
        self._ws: ClientConnection | None = None
        self._close_requested = False
        self._sent_in_flush = False
        self._session: spi.PosSession | None = None
        self._profile: LaneProfile | None = None
        self._address: AddressBook | None = None
        # Futures the runner or a control command waits on.
        self._tx_done: asyncio.Future[spi.TransactionCompleted] | None = None
        self._tx_entry: _Entry | None = None
        self._record: TxRecord | None = None  # the running transaction's record
        self._pairing_done: asyncio.Future[spi.PairingFinished] | None = None
        self._pair_entry: _Entry | None = None  # the pair queued or running: one at a time
        self._answers: dict[str, asyncio.Future[Any]] = {}
        self._writer = LaneWriter(self.redis, self.keys, self.instance_id, deps.fencing_token)
        self._draining = asyncio.Event()
        # Set once the lane is to stop; every loop watches it, so a clean stop
        # never depends on cancellation reaching the right await.
        self._stopped = asyncio.Event()
        self._flushed = asyncio.Event()  # set after every flush (readiness may have changed)
        self._idle = asyncio.Event()  # set while the runner has no command in hand
        self._idle.set()
        self._rejections = RejectionMonitor()  # frames the terminal link dropped
        # Stream entries dispatched and not acknowledged yet (queued, running, being
        # answered): never taken twice (_dispatch), never re-claimed (_reclaim).
        self._in_hand: set[str] = set()
        self._taken = 0  # entries taken, to trim the commands stream every so many
        self._away_since: float | None = None  # Redis unreachable since (monotonic)
        self._back_at: float | None = None  # when Redis last came back (monotonic)
        self._away_logged = False

    # ------------------------------------------------------------------
    # Entry point
    # ------------------------------------------------------------------

    async def run(self) -> None:
        """Load the profile and keys, recover, then serve until cancelled."""
        structlog.contextvars.bind_contextvars(instance_id=self.instance_id)
        deps = self.deps
        try:
            profile, secrets, previous = await self._until_redis(self._load, until=self._draining)
        except _Stopping:
            log.info("lane stopped before it started: Redis was away")
            return
        self._profile = profile
        self._address = AddressBook(profile)
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
        try:
            await self._until_redis(self._ensure_group, until=self._draining)
        except _Stopping:
            log.info("lane stopped before it started: Redis was away")
            return
        if deps.fencing_token is None:  # supervised lanes: the supervisor reports starts
            await self._publish(
                bs.LaneStarted, host=deps.settings.host_id, pid=os.getpid(), restarts=0
            )
        start = WriteBatch().hset(
            self.keys.state(self.instance_id),
            {
                "pid": str(os.getpid()),
                "host": deps.settings.host_id,
                "started_at": _iso_now(),
                "last_error": "",
                "draining": "0",
            },
        )
        self._add_status(start)
        try:
            await self._apply(start, until=self._draining)
        except _Stopping:
            log.info("lane stopped before it started: Redis was away")
            return
        log.info("lane started", paired=secrets is not None, pos_id=profile.pos_id)
        reason = "stopped"
        try:
            async with asyncio.TaskGroup() as tasks:
                # A loop that meets the stop inside a Redis wait (_Stopping) just ends.
                tasks.create_task(_quiet(self._link_loop()), name="link")
                tasks.create_task(_quiet(self._timer_loop()), name="timer")
                tasks.create_task(_quiet(self._heartbeat_loop()), name="heartbeat")
                tasks.create_task(_quiet(self._runner_loop()), name="runner")
                tasks.create_task(_quiet(self._consume_loop()), name="consumer")
                tasks.create_task(self._drain_watch(), name="drain")
            reason = "drained"
        except* LeaseLost as lost:
            # Another process owns the lane now: write nothing more, stop.
            log.error("lease lost: stopping at once", detail=str(lost.exceptions[0]))
            raise
        if deps.fencing_token is None:  # supervised lanes: the supervisor reports stops
            with contextlib.suppress(Exception):
                await self._publish(
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
        self._stopped.set()

    async def _drain_watch(self) -> None:
        await self._draining.wait()
        log.info("draining", timeout_s=self.deps.drain_timeout_s)
        await self._write_state(draining="1")  # for people and the supervisor: no new command
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.deps.drain_timeout_s):
                await _first(self._idle.wait(), self._stopped.wait())
        if not self._idle.is_set():
            log.warning("stopping with a transaction in flight; it will be recovered")
        # Close the terminal link ourselves rather than rely on cancellation
        # reaching a websocket read: the link loop sees the close, does its
        # bookkeeping and, draining, does not reconnect.
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await ws.close()
        self._stopped.set()
        # Wake every loop so it sees the stop.
        self._wake.set()
        self._want_link.set()
        self._tx_queue.put_nowait(_STOP)

    @property
    def session(self) -> spi.PosSession:
        assert self._session is not None, "Lane.run() sets the session up"
        return self._session

    # ------------------------------------------------------------------
    # Redis away: wait, try again (module docstring, "Redis away")
    # ------------------------------------------------------------------

    async def _until_redis(
        self, call: Callable[[], Awaitable[_T]], *, until: asyncio.Event | None = None
    ) -> _T:
        """``call()``, tried again until Redis answers it; :class:`_Stopping` once the lane stops.

        Only "Redis is away" is waited out (:meth:`_must_wait`); every other
        error, a lost lease first of all, propagates at once. ``call`` must be
        safe to repeat: a read, an idempotent write, or a write with a write
        id (:meth:`_apply`, :meth:`TxStore.begin` with a ticket). ``until``
        (default: the stop) ends the wait.
        """
        stop = self._stopped if until is None else until
        delays: Iterator[float] | None = None
        while True:
            started = time.monotonic()
            try:
                result = await call()
            except Exception as exc:
                self._note_slow(started)
                if not self._must_wait(exc):
                    raise
            else:
                self._answered()
                return result
            if stop.is_set():
                raise _Stopping
            if delays is None:
                delays = redis_delays(self.deps.redis_backoff)
            await _first(asyncio.sleep(next(delays)), stop.wait())
            if stop.is_set():
                raise _Stopping

    def _must_wait(self, exc: BaseException) -> bool:
        """Whether ``exc`` means "wait and try again": Redis away, or our lease just lapsed.

        A lease refused as lapsed (:class:`LeaseLapsed`: no lease at all) is
        waited on only within :data:`LAPSED_WAIT_S` of Redis coming back: it
        expired during the outage and our supervisor is taking it back. Any
        other time it means the supervisor stopped renewing (frozen, gone):
        the lane stops, as for any lost lease.
        """
        if isinstance(exc, LeaseLapsed):
            self._answered()  # a refusal is an answer: Redis is here
            back = self._back_at
            return back is not None and time.monotonic() - back < LAPSED_WAIT_S
        if is_redis_away(exc):
            if self._away_since is None:
                now = time.monotonic()
                self._away_since = now
                # Each pooled connection that died with the server fails once
                # more after Redis is back: not a new outage worth a warning.
                back = self._back_at
                self._away_logged = back is None or now - back > _AWAY_QUIET_S
                if self._away_logged:
                    log.warning(
                        "Redis away: keeping the terminal, taking no commands, retrying",
                        error=_last_line(exc),
                    )
            return True
        return False

    def _note_slow(self, started: float) -> None:
        """A call that hung this long met Redis silent (a cut link): it was away, now back.

        Then, as after an error, a lease found lapsed is waited on: our
        supervisor could not renew it either, and takes it back now.
        """
        now = time.monotonic()
        if now - started > _SLOW_CALL_S:
            self._back_at = now

    def _answered(self) -> None:
        """Redis answered a call: if it was away, it is back."""
        since = self._away_since
        if since is not None:
            self._away_since = None
            self._back_at = time.monotonic()
            if self._away_logged:
                log.warning("Redis back", away_s=round(self._back_at - since, 3))

    async def _apply(self, batch: WriteBatch, *, until: asyncio.Event | None = None) -> list[Any]:
        """Apply ``batch`` once, waiting out Redis (same batch, same write id, on every try)."""
        results = await self._until_redis(partial(self._writer.apply, batch), until=until)
        self._in_hand.difference_update(batch.acked)
        return results

    # ------------------------------------------------------------------
    # The session step: call, then handle events, then send frames
    # ------------------------------------------------------------------

    async def _step(self, action: Callable[[float], object]) -> object:
        """Run one session call under the lock and flush what it produced."""
        async with self._lock:
            try:
                return action(self.deps.clock())
            finally:
                await self._flush()

    async def _flush(self) -> None:
        session = self.session
        while True:
            events = session.events_received()
            writes = _Writes()
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
                session.data_to_send()
                if isinstance(exc, LocalProtocolError):
                    raise InternalError(f"the lane's own write was refused: {exc}") from exc
                raise
            frames = session.data_to_send()
            ws = self._ws
            for frame in frames:
                if ws is None:
                    break
                try:
                    await ws.send(frame)
                except ConnectionClosed:
                    break
            if self._sent_in_flush and frames:
                self._sent_in_flush = False
                failpoints.hit("lane.after_send")
            if not events and not frames:
                break
        if self._close_requested and self._ws is not None:
            self._close_requested = False
            await self._ws.close()
        self._wake.set()
        self._flushed.set()
        if session.wants_connection:
            self._want_link.set()

    # ------------------------------------------------------------------
    # Terminal link
    # ------------------------------------------------------------------

    async def _link_loop(self) -> None:
        assert self._address is not None
        assert self._profile is not None
        delays = reconnect_delays(self.deps.reconnect)
        failures = 0
        ssl_ctx = (
            client_ssl_context(self.deps.settings.tls_ca_file) if self._profile.secure else None
        )
        while not self._draining.is_set():
            if not self.session.wants_connection:
                self._want_link.clear()
                await self._want_link.wait()
                continue
            if self._profile.auto_address and (
                self._address.url() is None
                or (failures and failures % (self.deps.reconnect.attempts_before_lookup + 1) == 0)
            ):
                await self._resolve_address()
            url = self._address.url()
            if url is None:
                await self._write_state(last_error="no terminal address known")
                await asyncio.sleep(next(delays))
                failures += 1
                continue
            try:
                ws = await connect(
                    url,
                    subprotocols=[Subprotocol(SUBPROTOCOL)],
                    open_timeout=DEFAULT_TIMINGS.connect_timeout_s,  # §1 watchdog
                    ping_interval=None,  # SPI pings itself (§5.4)
                    close_timeout=1.0,
                    max_size=1 << 20,
                    ssl=ssl_ctx,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                retryable = is_retryable(exc)
                log.warning(
                    "terminal connect failed",
                    error=type(exc).__name__,
                    detail=str(exc)[:200],
                    attempt=failures,
                    retryable=retryable,
                )
                await self._write_state(last_error=f"connect: {type(exc).__name__}: {exc}"[:300])
                await asyncio.sleep(next(delays) * (1 if retryable else 10))
                continue
            failures = 0
            await self._serve_connection(ws)
            if not self._draining.is_set():
                await _first(asyncio.sleep(next(delays)), self._draining.wait())

    async def _serve_connection(self, ws: ClientConnection) -> None:
        self._ws = ws
        log.info("terminal connected", subprotocol=ws.subprotocol)
        try:
            await self._step(self.session.connection_made)
            async for frame in ws:
                await self._receive(frame)
        except ConnectionClosed:
            pass
        finally:
            # Bounded: this also runs while the lane is being cancelled, and a
            # shutdown must never wait on a peer or a lock for ever.
            self._ws = None
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await ws.close()
            except Exception as exc:
                log.info("terminal close did not complete", error=type(exc).__name__)
            try:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    async with asyncio.timeout(CLOSE_TIMEOUT_S):
                        await self._step(self.session.connection_lost)
                else:
                    # Its writes wait out a Redis outage (the link is opened
                    # again only after they landed); a stop ends the wait.
                    await self._step(self.session.connection_lost)
            except TimeoutError:
                log.warning("connection_lost bookkeeping timed out")
            except _Stopping:
                log.info("connection_lost bookkeeping not written: stopping while Redis is away")
            log.info("terminal disconnected")

    async def _receive(self, frame: str | bytes) -> None:
        session = self.session
        await self._step(lambda now: session.receive_text(frame, now))

    async def _resolve_address(self) -> None:
        assert self._address is not None
        assert self._profile is not None
        result = await resolve_device_address(
            self._profile, self.deps.settings, current=self._address.url()
        )
        log.info("device address lookup", code=str(result.code), detail=result.detail)
        # Only SUCCESS replaces the address; anything refused keeps the old one.
        if not self._address.apply(result) and (
            result.code is not DeviceAddressResponseCode.ADDRESS_NOT_CHANGED
        ):
            await self._write_state(last_error=f"device address: {result.code}: {result.detail}")

    async def _timer_loop(self) -> None:
        while not self._stopped.is_set():
            deadline = self.session.next_deadline()
            self._wake.clear()
            if deadline is None:
                await self._wake.wait()
                continue
            delay = deadline - self.deps.clock()
            if delay > 0:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                # cancellation that lands as the wake event is set (gh-86296),
                # and this loop would then outlive its task group.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                continue
            await self._step(self.session.handle_timer)

    async def _heartbeat_loop(self) -> None:
        while not self._stopped.is_set():
            # One round trip: checks the profile, then (fenced) writes heartbeat_at.
            # While Redis is away there is none: the supervisor knows it could not
            # have seen one, and does not count the gap against the lane.
            started = time.monotonic()
            try:
                present = await self._writer.heartbeat(_iso_now())
            except Exception as exc:
                self._note_slow(started)
                if not self._must_wait(exc):
                    raise
                present = True
            else:
                self._answered()
            if not present:
                # The lane was removed: nothing to serve, and nothing to write.
                log.warning("profile removed: stopping")
                self.stop_now()
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEARTBEAT_PERIOD_S):
                    await self._stopped.wait()

    # ------------------------------------------------------------------
    # Session events -> Redis
    # ------------------------------------------------------------------

    async def _commit(self, writes: _Writes) -> None:
        """Apply the pending writes in one step, then run what waited for them."""
        batch, after = writes.batch, writes.after
        writes.batch, writes.after = WriteBatch(), []
        # Retried until it lands (holding the session lock: no frame of this
        # round, nor of any later one, leaves before it); a stop ends it.
        writes.results = await self._apply(batch)
        for wake in after:
            wake()

    def _add_event(self, batch: WriteBatch, cls: type[bs.Event], **fields: Any) -> None:
        self._add(batch, self._event(cls, **fields))

    def _add(self, batch: WriteBatch, event: bs.Event) -> None:
        batch.xadd(
            self.keys.events(self.instance_id),
            bs.encode_event(event),
            maxlen=self.deps.settings.events_maxlen,
        )

    async def _on_session_event(self, event: spi.PosSessionEvent, writes: _Writes) -> None:
        iid = self.instance_id
        deps = self.deps
        batch = writes.batch
        match event:
            case spi.StatusChanged():
                self._add_status(batch)
            case spi.PairingProgress():
                self._add_event(
                    batch,
                    bs.Pairing,
                    command_id=self._command_id(),
                    state=(
                        bs.PairingState.AWAITING_CONFIRMATION
                        if event.confirmation_code
                        else bs.PairingState.STARTED
                    ).value,
                    confirmation_code=event.confirmation_code,
                    awaiting_pos=event.awaiting_pos_confirmation,
                    awaiting_terminal=event.awaiting_terminal_confirmation,
                    detail=event.message,
                )
            case spi.PairingFinished():
                self._add_event(
                    batch,
                    bs.Pairing,
                    command_id=self._command_id(),
                    state=_pairing_end(event).value,
                    detail=event.message,
                )
                done = self._pairing_done
                if done is not None:
                    writes.after.append(lambda: _settle(done, event))
            case spi.SecretsChanged():
                await self._commit(writes)  # keep the order of writes
                await self._until_redis(
                    partial(deps.profiles.save_secrets, iid, event.secrets, previous=event.previous)
                )
                log.info(
                    "secrets persisted",
                    reason=event.reason,
                    fingerprint=event.secrets.fingerprint() if event.secrets else None,
                )
                if event.reason == "rolled":
                    failpoints.hit("lane.after_roll_persisted")
                    self.session.secrets_persisted()
            case spi.TransactionRequestSent():
                # Written before the frame leaves (_flush commits, then sends).
                failpoints.hit("lane.before_send")
                self._sent_in_flush = True
                if await self._has_record(event.pos_ref_id, event.tx_type):
                    batch.tx(
                        deps.txs.move_op(
                            iid, event.pos_ref_id, TxState.SENT, request_message_id=event.message_id
                        )
                    )
                    self._note_state(event.pos_ref_id, TxState.SENT)
            case spi.TransactionUpdate():
                self._add_event(
                    batch,
                    bs.TransactionUpdate,
                    command_id=self._command_id(),
                    pos_ref_id=event.pos_ref_id,
                    display_text=event.display_message_text,
                    display_code=None
                    if event.display_message_code is None
                    else str(event.display_message_code),
                )
            case spi.SignatureRequired():
                if await self._has_record(event.pos_ref_id):
                    batch.tx(deps.txs.move_op(iid, event.pos_ref_id, TxState.AWAITING_SIGNATURE))
                    self._note_state(event.pos_ref_id, TxState.AWAITING_SIGNATURE)
                self._add_event(
                    batch,
                    bs.SignatureRequired,
                    command_id=self._command_id(),
                    pos_ref_id=event.pos_ref_id,
                    merchant_receipt=event.merchant_receipt,
                )
                # Dies once the state and the event are stored, as it always did.
                writes.after.append(lambda: failpoints.hit("lane.awaiting_signature"))
            case spi.AuthCodeRequired():
                if await self._has_record(event.pos_ref_id):
                    batch.tx(deps.txs.move_op(iid, event.pos_ref_id, TxState.AWAITING_AUTH_CODE))
                    self._note_state(event.pos_ref_id, TxState.AWAITING_AUTH_CODE)
                self._add_event(
                    batch,
                    bs.AuthCodeRequired,
                    command_id=self._command_id(),
                    pos_ref_id=event.pos_ref_id,
                    phone_number=event.auth_centre_phone_number,
                    merchant_id=event.merchant_id,
                )
            case spi.CancelFailed():
                self._add_event(
                    batch,
                    bs.TransactionUpdate,
                    command_id=self._command_id(),
                    pos_ref_id=event.pos_ref_id,
                    display_text=f"cancel refused: {event.error_reason}",
                )
            case spi.TransactionCompleted():
                await self._record_outcome(event, writes)
            case spi.TransactionLookupResult():
                key = f"gt:{event.pos_ref_id}"
                writes.after.append(lambda: self._resolve(key, event))
            case spi.LastTransactionResult():
                writes.after.append(lambda: self._resolve("glt", event))
            case spi.TerminalAnswer():
                self._on_terminal_answer(event, writes)
            case spi.PosSpiTokenReceived():
                await self._commit(writes)  # keep the order of writes
                await self._until_redis(partial(deps.profiles.save_spi_token, iid, event.token))
            case spi.TerminalErrorReceived():
                self._add_event(
                    batch,
                    bs.Error,
                    command_id=self._command_id(),
                    reason=event.error_reason or "terminal_error",
                    detail=event.error_detail or "",
                    source="terminal",
                )
            case spi.FrameRejected():
                self._on_frame_rejected(event, batch)
            case spi.IgnoredMessage():
                log.info("terminal message ignored", terminal_event=event.event, why=event.reason)
            case spi.CloseConnection():
                log.info("closing terminal connection", why=event.reason)
                self._close_requested = True

    def _on_frame_rejected(self, event: spi.FrameRejected, batch: WriteBatch) -> None:
        """Count it; log once per kind a minute; one ``link_tampering`` error per burst."""
        kind = str(event.reason)
        verdict = self._rejections.note(kind, time.monotonic())
        if verdict.log:
            log.warning(
                "terminal frame rejected",
                reason=kind,
                detail=event.detail,
                suppressed_since_last=verdict.suppressed,
            )
        state = self.keys.state(self.instance_id)
        batch.hincrby(state, "frames_rejected")
        batch.hincrby(state, f"frames_rejected:{kind}")
        if verdict.alarm is not None:
            counts = ", ".join(f"{n} {k}" for k, n in sorted(verdict.alarm.items()))
            log.error("terminal link tampering suspected", counts=verdict.alarm)
            self._add_event(
                batch,
                bs.Error,
                command_id=self._command_id(),
                reason="link_tampering",
                detail=(
                    f"{sum(verdict.alarm.values())} terminal frames rejected within "
                    f"{self._rejections.window_s:g} s ({counts}); they were dropped, "
                    "nothing acted on them"
                ),
                source="terminal",
            )

    def _on_terminal_answer(self, event: spi.TerminalAnswer, writes: _Writes) -> None:
        answer = event.answer
        match answer:
            case m.TerminalStatus():
                writes.after.append(lambda: self._resolve("status", answer))
            case m.TerminalConfiguration():
                writes.after.append(lambda: self._resolve("configuration", answer))
            case m.PrintResponse():
                writes.after.append(lambda: self._resolve("print", answer))
            case m.BatteryLevelChanged():
                if answer.battery_level is not None:
                    self._add_event(writes.batch, bs.Battery, battery_level=answer.battery_level)
            case m.SetPosInfoResponse():
                log.info("terminal took POS info", success=answer.success)

    def _resolve(self, key: str, value: object) -> None:
        future = self._answers.pop(key, None)
        if future is not None:
            _settle(future, value)

    async def _has_record(self, pos_ref_id: str, tx_type: m.TxType | None = None) -> bool:
        return await self._record_of(pos_ref_id, tx_type) is not None

    async def _record_of(self, pos_ref_id: str, tx_type: m.TxType | None = None) -> TxRecord | None:
        """The record of the running transaction: kept in memory, read only when not known.

        While this process holds the lane's lease it is the records' only
        writer, so the record it created or loaded is the record; only the
        fields that never change after creation (ids, type, amounts) and
        whether it exists are used from it.
        """
        # Settlement has no pos_ref_id (§7.14) and never a record.
        if not pos_ref_id:
            return None
        record = self._record
        if record is None or record.pos_ref_id != pos_ref_id:
            record = await self._until_redis(
                partial(self.deps.txs.get, self.instance_id, pos_ref_id)
            )
            if record is not None:
                self._record = record
        if record is not None and tx_type is not None and _TX_TYPES.get(record.tx_type) != tx_type:
            # Another transaction on the same pos_ref_id: a reversal names the
            # purchase it reverses (§7.15) and keeps no record of its own. It
            # must never move or complete the purchase's record.
            return None
        return record

    def _note_state(
        self, pos_ref_id: str, state: TxState, result: bs.TxResult | None = None
    ) -> None:
        record = self._record
        if record is not None and record.pos_ref_id == pos_ref_id and not record.completed:
            self._record = dataclasses.replace(record, state=state, result=result)

    def _command_id(self) -> str | None:
        entry = self._tx_entry
        return entry.command.command_id if entry is not None else None

    async def _record_outcome(self, done: spi.TransactionCompleted, writes: _Writes) -> None:
        """Store the outcome, publish it and acknowledge its command in one step; then wake.

        The acknowledgement joins the outcome's write when the running
        command is the one that completed, so the runner does not send it
        again; otherwise (a recovered orphan) there is nothing to acknowledge.
        """
        failpoints.hit("lane.before_outcome_published")
        iid = self.instance_id
        batch = writes.batch
        entry = self._tx_entry
        command_id = entry.command.command_id if entry is not None else None
        record = await self._record_of(done.pos_ref_id, done.tx_type)
        if record is not None and command_id is None:
            command_id = record.command_id
        if done.tx_type in (m.TxType.SETTLE, m.TxType.SETTLEMENT_ENQUIRY):
            outcome_event: bs.Event = _settlement_event(iid, command_id, done)
        else:
            outcome_event = _completed_event(iid, command_id, done, record)
        slot: int | None = None
        if record is not None:
            slot = batch.tx(
                self.deps.txs.complete_op(
                    iid,
                    done.pos_ref_id,
                    result=bs.TxResult(str(done.outcome)),
                    outcome=bs.event_to_json(outcome_event),
                    publish_to=self.keys.events(iid),
                    publish_fields=bs.encode_event(outcome_event),
                    maxlen=self.deps.settings.events_maxlen,
                )
            )
            self._note_state(done.pos_ref_id, TxState.COMPLETED, bs.TxResult(str(done.outcome)))
        else:
            self._add(batch, outcome_event)
        tx_done = self._tx_done
        acked = (
            entry
            if entry is not None
            and tx_done is not None
            and (getattr(entry.command, "pos_ref_id", None) or "") == done.pos_ref_id
            else None
        )
        if acked is not None:
            batch.xack(self.keys.commands(iid), acked.entry_id)
        # Counted in the outcome's own write (issue 15; broker_schema.counters).
        kind = next((k for k, v in _TX_TYPES.items() if v == done.tx_type), str(done.tx_type))
        state = self.keys.state(iid)
        batch.hincrby(state, counters.tx_count(kind, str(done.outcome)))
        if acked is not None and not done.recovered:
            for name, amount in counters.tx_duration(kind, time.monotonic() - acked.read_at):
                batch.hincrby(state, name, amount)

        def wake() -> None:
            if slot is not None and writes.results[slot] == TxResultCode.ALREADY_COMPLETED:
                log.warning("outcome already recorded; not published again")
            log.info(
                "transaction completed",
                pos_ref_id=done.pos_ref_id,
                result=str(done.outcome),
                recovered=done.recovered,
            )
            if acked is not None:
                acked.acked = True
            if tx_done is not None:
                _settle(tx_done, done)

        writes.after.append(wake)

    # ------------------------------------------------------------------
    # Commands in
    # ------------------------------------------------------------------

    async def _ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(
                self.keys.commands(self.instance_id), bs.CONSUMER_GROUP, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _consume_loop(self) -> None:
        """Pending entries of earlier processes first, in order; then new ones, forever.

        While Redis is away the read fails and is tried again after a pause
        (no command is taken meanwhile); every ``reclaim_every_s`` the lane
        also takes back its own entries that a lost read reply left pending
        (:meth:`_reclaim`).
        """
        stream = self.keys.commands(self.instance_id)
        backlog_commands = await self._claim_backlog(stream)
        await self._queue_orphans(backlog_commands)
        block = read_block_ms(self.redis)
        reclaim_at = time.monotonic() + self.deps.reclaim_every_s
        delays: Iterator[float] | None = None
        while not self._draining.is_set():
            if time.monotonic() >= reclaim_at:
                await self._reclaim(stream)
                reclaim_at = time.monotonic() + self.deps.reclaim_every_s
            until_reclaim = max(1, int((reclaim_at - time.monotonic()) * 1000))
            try:
                entries = await self._read_unless_draining(stream, min(block, until_reclaim))
            except Exception as exc:
                if isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP"):
                    # Redis came back without the group (restarted without its data).
                    log.warning("the command group is gone: created again")
                    await self._until_redis(self._ensure_group)
                    continue
                if not self._must_wait(exc):
                    raise
                if delays is None:
                    delays = redis_delays(self.deps.redis_backoff)
                await _first(asyncio.sleep(next(delays)), self._draining.wait())
                continue
            delays = None
            self._answered()
            for entry_id, fields in entries:
                await self._dispatch(entry_id, fields)

    async def _read_unless_draining(self, stream: str, block: int) -> list[tuple[str, _Pairs]]:
        """A long blocking read of new entries that a drain (or stop) cuts short at once.

        A read cancelled by the drain may have had entries delivered to it:
        they stay pending in the group under this consumer, and the next
        process of the lane claims them (:meth:`_claim_backlog`), so nothing
        is lost. redis-py closes a connection whose command is cancelled, so
        no later command reads the cancelled command's reply.
        """
        read = asyncio.ensure_future(self._read(stream, ">", block=block))
        drain = asyncio.ensure_future(self._draining.wait())
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

    async def _claim_backlog(self, stream: str) -> set[str]:
        """Take over every entry left pending by an earlier process of this lane.

        Only one process serves a lane at a time, so whatever is pending in the
        group is ours: claim it (XAUTOCLAIM), then replay it in stream order,
        each entry with the number of times it was delivered before (XPENDING):
        an entry the lane never answered in :data:`POISON_DELIVERIES` tries is
        not run again (:meth:`_dispatch`). The claim is ``JUSTID``, which leaves
        the delivery count alone, so each start of the lane counts one delivery
        (the replaying read), not two. Returns the command ids seen.
        """
        cursor = "0-0"
        while True:
            reply = await self._until_redis(partial(self._autoclaim, stream, 0, cursor))
            cursor = _text(reply[0])  # [next cursor, claimed ids, deleted ids]
            if cursor == "0-0":
                break
        seen: set[str] = set()
        last = "0"
        while True:
            # Each read of this history counts one delivery more; one whose reply
            # was lost and that is sent again counts one more (rare: an outage
            # at that moment).
            delivered = await self._until_redis(partial(self._deliveries, stream, last))
            entries = await self._until_redis(partial(self._read, stream, last, block=None))
            if not entries:
                return seen
            for entry_id, fields in entries:
                last = entry_id
                hint = bs.peek_command(fields)
                if hint.command_id:
                    seen.add(hint.command_id)
                before = delivered.get(entry_id, 0)
                log.info("replaying pending command", entry_id=entry_id, delivered=before)
                await self._dispatch(entry_id, fields, delivered=before)

    async def _autoclaim(self, stream: str, min_idle_ms: int, cursor: str) -> Any:
        """One ``XAUTOCLAIM ... JUSTID`` page for this consumer (it adds no delivery)."""
        return await self._raw(
            "XAUTOCLAIM",
            stream,
            bs.CONSUMER_GROUP,
            self._consumer,
            min_idle_ms,
            cursor,
            "COUNT",
            READ_COUNT,
            "JUSTID",
        )

    async def _reclaim(self, stream: str) -> None:
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
        real tries.
        """
        found: list[str] = []
        cursor = "0-0"
        while True:
            reply = await self._until_redis(
                partial(self._autoclaim, stream, self.deps.reclaim_idle_ms, cursor)
            )
            cursor = _text(reply[0])
            found += [i for i in map(_text, reply[1] or ()) if i not in self._in_hand]
            if cursor == "0-0":
                break
        await self._trim_commands()
        for entry_id in sorted(found, key=_id_order):
            if entry_id in self._in_hand:
                continue  # dispatched meanwhile (an earlier one of this list took long)
            entries = await self._until_redis(partial(self._entry, stream, entry_id))
            if not entries:
                continue  # trimmed from the stream since
            count = await self._until_redis(partial(self._delivered, stream, entry_id))
            delivered = max(count - 1, 0)
            log.warning(
                "taking back a pending command no read returned",
                entry_id=entry_id,
                delivered=delivered,
            )
            for _, fields in entries:
                await self._dispatch(entry_id, fields, delivered=delivered)

    async def _trim_commands(self) -> None:
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
        stream = self.keys.commands(self.instance_id)
        try:
            groups: Any = await self.redis.xinfo_groups(stream)
            group = next((g for g in groups if _text(g["name"]) == bs.CONSUMER_GROUP), None)
            if group is None:
                return
            summary: Any = await self.redis.xpending(stream, bs.CONSUMER_GROUP)
            if summary["pending"]:
                bound = _text(summary["min"])
            else:
                bound = _next_id(_text(group["last-delivered-id"]))
            if bound == "0-1":
                return  # nothing delivered yet
            await self.redis.xtrim(stream, minid=bound, approximate=False)
        except Exception as exc:
            if _lane_must_end(exc) and not self._must_wait(exc):
                raise
            log.info("commands stream not trimmed this time", error=type(exc).__name__)

    async def _entry(self, stream: str, entry_id: str) -> list[tuple[str, _Pairs]]:
        """One entry's field pairs as sent (``XRANGE``; the group's counts are left alone)."""
        reply = await self._raw("XRANGE", stream, entry_id, entry_id)
        return [(_text(eid), _pairs(flat)) for eid, flat in reply or ()]

    async def _deliveries(self, stream: str, after: str) -> dict[str, int]:
        """How often each of this consumer's next pending entries after ``after`` was delivered."""
        pending: Any = await self.redis.xpending_range(
            stream,
            bs.CONSUMER_GROUP,
            min="-" if after == "0" else f"({after}",
            max="+",
            count=READ_COUNT,
            consumername=self._consumer,
        )
        return {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}

    async def _delivered(self, stream: str, entry_id: str) -> int:
        """How often one pending entry was delivered (0 when it is no longer pending)."""
        pending: Any = await self.redis.xpending_range(
            stream, bs.CONSUMER_GROUP, min=entry_id, max=entry_id, count=1
        )
        return int(pending[0]["times_delivered"]) if pending else 0

    async def _raw(self, *args: Any) -> Any:
        """A stream command whose reply comes as the server sent it (``allow_raw_replies``)."""
        redis = self.redis  # looked up each time: tests swap it
        allow_raw_replies(redis, "XREADGROUP", "XAUTOCLAIM", "XRANGE")
        execute: Any = redis.execute_command  # untyped in redis-py
        return await execute(*args, **{RAW_REPLY: True})

    async def _read(
        self, stream: str, cursor: str, *, block: int | None
    ) -> list[tuple[str, _Pairs]]:
        """XREADGROUP on this lane's command stream: each entry's field pairs, as sent.

        Not redis-py's ``xreadgroup``: it folds an entry's fields into a dict,
        so ``v 1 body A body B`` would read as one ``body`` (the last) and the
        codec could not refuse it (docs/broker-schema.md, "Stream entries").
        """
        args: list[Any] = [bs.CONSUMER_GROUP, self._consumer, "COUNT", READ_COUNT]
        if block is not None:
            args += ["BLOCK", block]
        reply = await self._raw("XREADGROUP", "GROUP", *args, "STREAMS", stream, cursor)
        return _stream_entries(reply)

    async def _queue_orphans(self, backlog_commands: set[str]) -> None:
        """In-flight records with no pending command (trimmed stream): recover them too."""
        in_flight = await self._until_redis(partial(self.deps.txs.in_flight, self.instance_id))
        for record in in_flight:
            if record.command_id not in backlog_commands:
                log.warning(
                    "recovering a transaction whose command entry is gone",
                    pos_ref_id=record.pos_ref_id,
                )
                await self._tx_queue.put(record)

    async def _dispatch(self, entry_id: str, fields: Any, *, delivered: int = 0) -> None:
        """Validate one entry, then run it (control) or queue it (transaction).

        ``delivered``: how often the entry was delivered before (a replay).
        No entry can stop the lane: an unexpected error while handling one is
        contained (:meth:`_contain`), unless it says the lane itself cannot go
        on (:func:`_lane_must_end`), and then the entry is left pending for
        the lane's successor, which gives up on it after
        :data:`POISON_DELIVERIES` tries. An entry already in hand (queued,
        running, being answered) is not taken a second time.
        """
        if entry_id in self._in_hand:
            log.info("command entry already in hand: not taken twice", entry_id=entry_id)
            return
        self._in_hand.add(entry_id)  # until its acknowledgement lands (_apply)
        try:
            await self._take(entry_id, fields, delivered)
        except Exception as exc:
            if _lane_must_end(exc):
                raise
            await self._contain(entry_id, fields, exc)

    async def _take(self, entry_id: str, fields: Any, delivered: int) -> None:
        self._taken += 1
        if self._taken % TRIM_EVERY_ENTRIES == 0:
            await self._trim_commands()
        size = _entry_size(fields)
        if size > MAX_ENTRY_BYTES:
            # Refused unread: not decoded, not peeked at (docs/security.md).
            await self._reject(
                entry_id,
                None,
                CommandError(
                    bs.Reason.OVERSIZE, f"entry is {size} bytes; the limit is {MAX_ENTRY_BYTES}"
                ),
                fields=fields,
            )
            await self._trim_commands()  # it is acknowledged: free its memory in Redis now
            return
        try:
            command = bs.decode_command(fields)
        except CommandError as exc:
            hint = bs.peek_command(fields)
            await self._reject(entry_id, hint.command_id, exc, hint.command_type, fields=fields)
            return
        if delivered >= POISON_DELIVERIES and not await self._has_own_record(command):
            # Every earlier try ended the lane before an answer: running it again
            # would end this one too. An entry whose transaction record exists
            # is never given up on: it is recovered from the terminal, not re-run
            # (DESIGN.md "No double charge", "No lost outcome").
            log.error("giving up on a command entry", entry_id=entry_id, delivered=delivered)
            await self._reject(
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
        entry = _Entry(entry_id, command, fields=fields)
        structlog.contextvars.bind_contextvars(command_id=command.command_id)
        if command.kind is bs.CommandKind.CONTROL:
            await self._run_control(entry)
            return
        pending = self._pair_entry.command if self._pair_entry is not None else None
        busy = pair_busy(command, pending)
        if busy is not None:
            await self._reject(entry_id, command.command_id, busy, command.type)
            return
        if isinstance(command, bs.Pair):
            self._pair_entry = entry  # until the runner is done with it (_run_item)
        await self._tx_queue.put(entry)

    async def _has_own_record(self, command: bs.Command) -> bool:
        """Whether the transaction record of ``command``'s ``pos_ref_id`` exists (read afresh)."""
        pos_ref_id = getattr(command, "pos_ref_id", None)
        if not (command.records_tx and pos_ref_id):
            return False
        record = await self._until_redis(partial(self.deps.txs.get, self.instance_id, pos_ref_id))
        return record is not None

    async def _contain(self, entry_id: str, fields: Any, exc: Exception) -> None:
        """Our bug met one entry: dead-letter it (``internal_error``), answer, ack; go on.

        The last line of defence (DESIGN.md "Availability"): the entry is
        refused with the error's last traceback line, so its sender and ops
        see it; the commands behind it run.
        """
        line = _last_line(exc)
        log.error(
            "handling a command entry failed: refused, dead-lettered, the lane goes on",
            entry_id=entry_id,
            error=line,
            exc_info=exc,
        )
        hint = bs.peek_command(fields)
        await self._reject(
            entry_id,
            hint.command_id,
            CommandError(
                bs.Reason.INTERNAL_ERROR, f"handling this entry failed on our side: {line}"
            ),
            hint.command_type,
            fields=fields,
            pos_ref_id=hint.pos_ref_id,
        )

    async def _reject(
        self,
        entry_id: str,
        command_id: str | None,
        exc: CommandError,
        command_type: str | None = None,
        *,
        fields: Any = None,
        pos_ref_id: str | None = None,
    ) -> None:
        log.warning("command rejected", reason=exc.reason, detail=exc.detail, entry_id=entry_id)
        event = self._event(
            bs.CommandRejected,
            command_id=command_id,
            reason=str(exc.reason),
            detail=exc.detail,
            command_type=command_type,
            pos_ref_id=pos_ref_id,
            entry_id=entry_id,
        )
        batch = self._event_batch(event)
        if fields is not None:
            batch.xadd(
                self.keys.dead_letter(self.instance_id),
                _dead_letter(fields, entry_id, exc),
                maxlen=DEAD_LETTER_MAXLEN,
            )
        batch.xack(self.keys.commands(self.instance_id), entry_id)
        batch.hincrby(self.keys.state(self.instance_id), counters.rejection(str(exc.reason)))
        await self._apply(batch)

    async def _ack(self, entry: _Entry) -> None:
        await self._apply(WriteBatch().xack(self.keys.commands(self.instance_id), entry.entry_id))

    async def _answer(self, entry: _Entry, event: bs.Event) -> None:
        """Publish the answer to a command and acknowledge it, in one atomic step."""
        batch = self._event_batch(event)
        batch.xack(self.keys.commands(self.instance_id), entry.entry_id)
        await self._apply(batch)

    def _expired(self, command: bs.Command) -> bool:
        return command.expires_at is not None and command.expires_at <= _dt.datetime.now(_dt.UTC)

    # ------------------------------------------------------------------
    # Control commands: at once
    # ------------------------------------------------------------------

    async def _run_control(self, entry: _Entry) -> None:
        failpoints.hit("lane.control_command")
        failpoints.fault("lane.control_command_fails")
        command = entry.command
        if self._expired(command):
            await self._reject(
                entry.entry_id,
                command.command_id,
                CommandError(bs.Reason.EXPIRED, "the command expired before it could run"),
                command.type,
            )
            return
        try:
            # Control commands claim their command_id too (one atomic step): one
            # that reuses another command's id must not act and answer under it.
            await self._claim_command_id(entry)
        except CommandError as exc:
            await self._reject(entry.entry_id, command.command_id, exc, command.type)
            return
        session = self.session
        try:
            match command:
                case bs.Cancel():
                    self._check_target(command.pos_ref_id)
                    await self._step(session.cancel_transaction)
                case bs.SignatureAccept() | bs.SignatureDecline():
                    self._check_target(command.pos_ref_id)
                    accepted = isinstance(command, bs.SignatureAccept)
                    await self._step(lambda now: session.accept_signature(accepted, now))
                case bs.AuthCode():
                    self._check_target(command.pos_ref_id)
                    code = command.auth_code
                    await self._step(lambda now: session.submit_auth_code(code, now))
                case bs.PairConfirm():
                    expected = session.pairing_code
                    if (
                        command.confirmation_code
                        and expected
                        and (command.confirmation_code.upper() != expected.upper())
                    ):
                        raise LocalProtocolError(
                            "the confirmation code does not match the one the terminal shows"
                        )
                    await self._step(session.pair_confirm)
                case bs.PairCancel():
                    self._check_pairing(command.pair_command_id)
                    await self._step(session.pair_cancel)
                case bs.TerminalStatus():
                    answer = await self._ask("status", session.get_terminal_status)
                    await self._answer(entry, _status_event(self._event_base(command), answer))
                    return
                case bs.TerminalConfiguration():
                    answer = await self._ask("configuration", session.get_terminal_configuration)
                    await self._answer(entry, _config_event(self._event_base(command), answer))
                    return
                case _:
                    raise LocalProtocolError(f"{command.type} is not a control command")
        except LocalProtocolError as exc:
            await self._reject(
                entry.entry_id,
                command.command_id,
                CommandError(bs.Reason.NOT_ALLOWED, str(exc)),
                command.type,
            )
            return
        except TimeoutError:
            await self._reject(
                entry.entry_id,
                command.command_id,
                CommandError(bs.Reason.TERMINAL_TIMEOUT, "the terminal did not answer in time"),
                command.type,
            )
            return
        await self._answer(
            entry,
            self._event(
                bs.CommandAccepted, command_id=command.command_id, command_type=command.type
            ),
        )

    def _check_pairing(self, pair_command_id: str | None) -> None:
        """A ``pair_cancel`` naming a pairing acts only on that one, never on a later one."""
        if pair_command_id is None:
            return
        entry = self._tx_entry if self._pairing_done is not None else None
        running = entry.command.command_id if entry is not None else None
        if running != pair_command_id:
            now = f"pairing {running!r} is running" if running else "no pairing is running"
            raise LocalProtocolError(
                f"pair {pair_command_id!r} is not the running pairing ({now}); nothing cancelled"
            )

    def _check_target(self, pos_ref_id: str | None) -> None:
        current = self.session.current_pos_ref_id
        if pos_ref_id is not None and current is not None and pos_ref_id != current:
            raise LocalProtocolError(
                f"pos_ref_id {pos_ref_id!r} is not the running transaction ({current!r})"
            )

    async def _ask(self, key: str, request: Callable[[float], object]) -> Any:
        """Send a request whose answer arrives later as a session event; wait for it."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._answers[key] = future
        try:
            await self._step(request)
            async with asyncio.timeout(TERMINAL_ANSWER_TIMEOUT_S):
                return await future
        finally:
            self._answers.pop(key, None)

    # ------------------------------------------------------------------
    # Transaction commands: one at a time, in order
    # ------------------------------------------------------------------

    async def _runner_loop(self) -> None:
        while not self._stopped.is_set():
            item = await self._tx_queue.get()
            if item is _STOP:
                return
            if self._draining.is_set():
                continue  # left pending: the next owner of the lane replays it
            self._idle.clear()
            try:
                await self._run_item(item)
            finally:
                self._idle.set()

    async def _run_item(self, item: object) -> None:
        if isinstance(item, TxRecord):
            await self._recover_orphan(item)
            return
        assert isinstance(item, _Entry)
        entry = item
        command = entry.command
        structlog.contextvars.bind_contextvars(command_id=command.command_id)
        pos_ref_id = getattr(command, "pos_ref_id", None)
        try:
            await self._run_transaction_command(entry)
        except _Stopping:
            log.info("stopping with the command unfinished; it stays pending")
        except TimeoutError:
            await self._reject(
                entry.entry_id,
                command.command_id,
                CommandError(bs.Reason.TERMINAL_TIMEOUT, "the terminal did not answer in time"),
                command.type,
                pos_ref_id=pos_ref_id,
            )
        except CommandError as exc:
            await self._reject(
                entry.entry_id, command.command_id, exc, command.type, pos_ref_id=pos_ref_id
            )
        except LocalProtocolError as exc:  # includes InvalidRequest
            await self._reject(
                entry.entry_id,
                command.command_id,
                CommandError(bs.Reason.NOT_ALLOWED, str(exc)),
                command.type,
                pos_ref_id=pos_ref_id,
            )
        except Exception as exc:
            # Our bug, met by this command (see _dispatch): contained when that
            # is safe, else the lane ends and its successor takes over.
            if _lane_must_end(exc):
                raise
            if entry.acked:  # answered already: nothing to refuse
                log.error("a command failed after it was answered", exc_info=exc)
            elif await self._may_refuse(entry):
                await self._contain(entry.entry_id, entry.fields, exc)
            else:
                raise
        finally:
            self._tx_entry = None
            self._record = None
            if self._pair_entry is entry:
                self._pair_entry = None  # answered: the next pair may come
            structlog.contextvars.unbind_contextvars("command_id", "pos_ref_id")

    async def _may_refuse(self, entry: _Entry) -> bool:
        """Whether a transaction command that failed unexpectedly may still be refused.

        Only while nothing of it is under way: the session idle and no record
        of it. Its record means it may have reached the terminal: the lane
        ends instead, and its successor recovers the outcome from the
        terminal (DESIGN.md "No lost outcome"); a refusal would be a lie.
        """
        if self.session.flow is not spi.SpiFlow.IDLE:
            return False
        command = entry.command
        pos_ref_id = getattr(command, "pos_ref_id", None)
        if command.records_tx and pos_ref_id:
            record = await self.deps.txs.get(self.instance_id, pos_ref_id)
            if record is not None and record.command_id == command.command_id:
                return False
        return True

    async def _run_transaction_command(self, entry: _Entry) -> None:
        command = entry.command
        if self._expired(command):
            raise CommandError(bs.Reason.EXPIRED, "the command expired before it could run")
        has_record = command.records_tx and getattr(command, "pos_ref_id", None)
        if command.type in _TX_TYPES and has_record:
            await self._run_money(entry, claimed=False)  # claims in its first write
            return
        redelivered = await self._claim_command_id(entry)
        session = self.session
        match command:
            case bs.Settle() if redelivered:
                # A settle has no record to tell whether it reached the terminal
                # before the lane that took it died; sending it again could settle
                # twice. Like a settlement cut by a drop (§7.14) its outcome is
                # unknown, and a settlement_enquiry tells.
                log.warning("settle delivered again after a restart: not sent again")
                unknown = self._event(
                    bs.Settlement,
                    command_id=command.command_id,
                    result="unknown",
                    error_reason="LANE_RESTARTED",
                    error_detail=(
                        "the lane restarted after taking this settle, which may have "
                        "reached the terminal; it was not sent again: run a "
                        "settlement_enquiry"
                    ),
                )
                await self._answer(entry, unknown)
            case bs.Pair():
                await self._run_pairing(entry)
            case bs.Unpair():
                await self._step(session.unpair)
                await self._answer(entry, self._accepted(command))
            case bs.SetConfig():
                changes = {
                    k: v
                    for k in (
                        "print_merchant_copy",
                        "prompt_for_customer_copy",
                        "signature_flow_on_eftpos",
                    )
                    if (v := getattr(command, k)) is not None
                }
                self._profile = await self._until_redis(
                    partial(self.deps.profiles.update, self.instance_id, **changes)
                )
                await self._answer(entry, self._accepted(command))
            case bs.GetTransaction():
                ref = command.pos_ref_id
                result = await self._ask(
                    f"gt:{ref}", lambda now: session.lookup_transaction(ref, now)
                )
                await self._answer(
                    entry, _lookup_event(self._event_base(command), ref, result.response)
                )
            case bs.GetLastTransaction():
                result = await self._ask("glt", session.lookup_last_transaction)
                await self._answer(
                    entry, _last_tx_event(self._event_base(command), result.response)
                )
            case bs.Print():
                key, payload = command.key, command.payload
                answer = await self._ask(
                    "print", lambda now: session.print_receipt(key, payload, now)
                )
                await self._answer(entry, _print_event(self._event_base(command), key, answer))
            case _ if command.type in _TX_TYPES:
                await self._run_money(entry, claimed=True)
            case _:
                raise LocalProtocolError(f"{command.type} is not supported by this lane yet")

    def _accepted(self, command: bs.Command) -> bs.Event:
        return self._event(
            bs.CommandAccepted,
            command_id=command.command_id,
            command_type=command.type,
            pos_ref_id=getattr(command, "pos_ref_id", None),
        )

    async def _run_pairing(self, entry: _Entry) -> None:
        """Pair, and wait for the end; at the pair's deadline the lane cancels it itself.

        Whoever sent the ``pair`` may have given up by then (a CLI that timed
        out, a POS that went away): the pairing must not hold the lane, and
        the terminal's screen, for longer than they asked.
        """
        loop = asyncio.get_running_loop()
        command = entry.command
        self._pairing_done = loop.create_future()
        self._tx_entry = entry
        try:
            await self._step(self.session.pair)
            await self._publish_event(self._accepted(command))
            limit, why = pairing_limit(command.expires_at, _now())
            try:
                async with asyncio.timeout(limit):
                    finished = await self._pairing_done
            except TimeoutError:
                message = f"Pairing cancelled: {why}."
                log.warning("pairing cancelled by the lane", why=why)
                with contextlib.suppress(LocalProtocolError):  # it ended meanwhile
                    await self._step(lambda now: self.session.pair_cancel(now, message=message))
                finished = spi.PairingFinished(success=False, message=message, cancelled=True)
        finally:
            self._pairing_done = None
        log.info("pairing finished", success=finished.success)
        await self._ack(entry)

    async def _run_money(self, entry: _Entry, *, claimed: bool) -> None:
        """A transaction with a record: idempotent by command_id and pos_ref_id.

        Everything that could refuse the command is checked before the record
        is written, so a refused command never leaves a record that would block
        its pos_ref_id.

        The common case, a new transaction on a ready, idle lane, takes one
        write before the request goes out (:meth:`TxStore.begin`: the
        command_id claim, the record and ``command_accepted``). Anything else
        (a repeated command_id or pos_ref_id, a redelivery, a terminal not
        ready) takes the step-by-step path, which reads the record first.
        """
        command = entry.command
        iid = self.instance_id
        tx_type = _TX_TYPES[command.type]
        pos_ref_id: str | None = getattr(command, "pos_ref_id", None)
        if pos_ref_id:
            structlog.contextvars.bind_contextvars(pos_ref_id=pos_ref_id)
        try:
            request = _spi_request(command, self._profile)  # InvalidRequest: refused here
        except LocalProtocolError:
            if not claimed:  # the claim comes first: a reused command_id is refused as such
                await self._claim_command_id(entry)
            raise
        record: TxRecord | None = None
        created = False
        if not claimed and self._can_start_now():
            assert pos_ref_id is not None
            # One write id for every try: a retry after a lost reply gets the
            # first reply, never a second command_accepted.
            begun = await self._until_redis(
                partial(
                    self.deps.txs.begin,
                    iid,
                    _new_record(command, pos_ref_id),
                    claim=self._claim(entry),
                    publish_to=self.keys.events(iid),
                    publish_fields=bs.encode_event(self._accepted(command)),
                    maxlen=self.deps.settings.events_maxlen,
                    ticket=self._writer.ticket(),
                )
            )
            if begun.prior_claim is not None:
                self._judge_prior_claim(entry, begun.prior_claim)  # refuses a reuse
            else:
                record, created = begun.record, begun.created
            claimed = True
        if not claimed:
            await self._claim_command_id(entry)
        resume = False
        if created:
            pass  # recorded and accepted in one write
        elif command.records_tx and pos_ref_id:
            if record is None:
                if self.session.status is not spi.SpiStatus.UNPAIRED:
                    record_now = await self._until_redis(
                        partial(self.deps.txs.get, iid, pos_ref_id)
                    )
                    if record_now is None or record_now.state is TxState.REQUESTED:
                        await self._wait_for_terminal(command)
                record = await self._until_redis(partial(self.deps.txs.get, iid, pos_ref_id))
                if record is None:
                    self._require_idle()
                    # Safe to repeat: a second try finds the record (created=False)
                    # and command_accepted is published below either way, once.
                    fresh = _new_record(command, pos_ref_id)
                    stored, created = await self._until_redis(
                        lambda: self.deps.txs.create_if_absent(iid, fresh)
                    )
                    record = stored
            if not created:
                if record.command_id != command.command_id:
                    raise CommandError(
                        bs.Reason.DUPLICATE_POS_REF_ID,
                        f"pos_ref_id {pos_ref_id!r} belongs to command {record.command_id!r} "
                        f"({record.state}); a new transaction needs a new pos_ref_id",
                    )
                if record.completed:
                    # A repeat (or a redelivery after a crash) of a finished
                    # command: answer from the record, never a second
                    # transaction_completed.
                    await self._answer(entry, self._answer_from_record(command, record))
                    return
                resume = record.state is not TxState.REQUESTED
                if not resume:
                    self._require_idle()
            created = False  # accepted below, as before
        else:
            if self.session.status is not spi.SpiStatus.UNPAIRED:
                await self._wait_for_terminal(command)
            self._require_idle()
        self._record = record
        self._tx_done = asyncio.get_running_loop().create_future()
        self._tx_entry = entry
        if resume:
            assert pos_ref_id is not None
            log.info("resuming an in-flight transaction from the terminal")
            await self._step(lambda now: self.session.recover(pos_ref_id, tx_type, now))
        else:
            if not created:
                await self._publish_event(self._accepted(command))
            await self._step(lambda now: self.session.start_transaction(request, now))
        try:
            await self._until_stopped(self._tx_done)
        finally:
            self._tx_done = None
        if not entry.acked:  # normally acknowledged with the outcome, in one write
            await self._ack(entry)

    def _can_start_now(self) -> bool:
        """A new transaction would go out at once: linked, ready, paired, idle."""
        session = self.session
        return (
            session.ready
            and session.status is not spi.SpiStatus.UNPAIRED
            and session.flow is spi.SpiFlow.IDLE
        )

    def _answer_from_record(self, command: bs.Command, record: TxRecord) -> bs.Event:
        published = record.outcome_event()
        fields: dict[str, Any] = {}
        if isinstance(published, bs.TransactionCompleted):
            fields = {
                f.name: getattr(published, f.name)
                for f in dataclasses.fields(bs.TransactionLookup)
                if f.name not in ("instance_id", "at", "command_id", "found")
                and hasattr(published, f.name)
            }
        fields.setdefault("result", str(record.result))
        fields["pos_ref_id"] = record.pos_ref_id
        return self._event(
            bs.TransactionLookup, command_id=command.command_id, found=True, **fields
        )

    async def _until_stopped(self, future: asyncio.Future[Any]) -> Any:
        """Wait for ``future``; if the lane stops first, leave (the entry stays pending)."""
        await _first(asyncio.shield(future), self._stopped.wait())
        if not future.done():
            raise _Stopping
        return future.result()

    async def _claim_command_id(self, entry: _Entry) -> bool:
        """First use of a command_id wins; a different command reusing it is refused.

        The claim remembers the stream entry, so the same entry replayed after a
        crash runs again, while a second entry with the same command_id does not
        (a money command repeated with the same pos_ref_id is answered from its
        record instead, in :meth:`_run_money`). True when this very entry had
        claimed it before: a redelivery (or a retry whose first reply was lost).
        """
        command = entry.command
        # One atomic step: claimed, or the live prior claim. Safe to repeat: a
        # retry after a lost reply finds this entry's own claim and goes on.
        prior_raw = await self._until_redis(
            partial(
                self.deps.txs.claim_command,
                self.instance_id,
                command.command_id,
                self._claim(entry),
            )
        )
        if prior_raw is None:
            return False
        return self._judge_prior_claim(entry, prior_raw)

    @staticmethod
    def _claim(entry: _Entry) -> bytes:
        command = entry.command
        return orjson.dumps(
            {
                "type": command.type,
                "pos_ref_id": getattr(command, "pos_ref_id", None),
                "entry_id": entry.entry_id,
            }
        )

    @staticmethod
    def _judge_prior_claim(entry: _Entry, prior_raw: bytes) -> bool:
        """A command_id claimed before: go on (same entry, or same money command) or refuse.

        True when the prior claim is this entry's own (redelivered after a crash).
        """
        command = entry.command
        prior = orjson.loads(prior_raw)
        if prior.get("entry_id") == entry.entry_id:
            return True  # redelivered after a crash: run it again
        same_money = (
            command.records_tx
            and prior.get("type") == command.type
            and prior.get("pos_ref_id") == getattr(command, "pos_ref_id", None)
        )
        if not same_money:
            raise CommandError(
                bs.Reason.DUPLICATE_COMMAND_ID,
                f"command_id {command.command_id!r} was already used by "
                f"{prior.get('type')} {prior.get('pos_ref_id') or ''}".rstrip(),
            )
        return False

    async def _wait_for_terminal(self, command: bs.Command) -> None:
        """A new transaction goes out only over a live link: wait a bounded time for one.

        Never leave a purchase unsent for an unbounded time: after
        ``UNSENT_WAIT_S`` (or at ``expires_at`` if sooner) it is refused with
        ``terminal_unavailable``: nothing was sent, so the POS may retry.
        """
        limit = UNSENT_WAIT_S
        if command.expires_at is not None:
            limit = min(limit, (command.expires_at - _now()).total_seconds())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while not self.session.ready:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise CommandError(
                    bs.Reason.TERMINAL_UNAVAILABLE,
                    "the terminal is not connected; nothing was sent",
                )
            self._flushed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._flushed.wait()

    def _require_idle(self) -> None:
        session = self.session
        if session.status is spi.SpiStatus.UNPAIRED:
            raise LocalProtocolError("Not Paired: pair the lane first")
        if session.flow is not spi.SpiFlow.IDLE:
            raise LocalProtocolError(f"Not Idle: the lane is in flow {session.flow}")

    async def _recover_orphan(self, record: TxRecord) -> None:
        structlog.contextvars.bind_contextvars(pos_ref_id=record.pos_ref_id)
        tx_type = _TX_TYPES.get(record.tx_type)
        if tx_type is None or self.session.status is spi.SpiStatus.UNPAIRED:
            log.error("cannot recover transaction", tx_type=record.tx_type)
            return
        self._record = record
        self._tx_done = asyncio.get_running_loop().create_future()
        try:
            await self._step(lambda now: self.session.recover(record.pos_ref_id, tx_type, now))
            await self._until_stopped(self._tx_done)
        finally:
            self._tx_done = None
            self._record = None  # as after any transaction: never cached past its end
            structlog.contextvars.unbind_contextvars("pos_ref_id")

    # ------------------------------------------------------------------
    # Publishing
    # ------------------------------------------------------------------

    def _event_base(self, command: bs.Command) -> dict[str, Any]:
        return {"instance_id": self.instance_id, "at": _now(), "command_id": command.command_id}

    def _event(self, cls: type[bs.Event], **fields: Any) -> bs.Event:
        return cls(instance_id=self.instance_id, at=_now(), **fields)

    async def _publish(self, cls: type[bs.Event], **fields: Any) -> None:
        await self._publish_event(self._event(cls, **fields))

    def _event_batch(self, event: bs.Event) -> WriteBatch:
        return WriteBatch().xadd(
            self.keys.events(self.instance_id),
            bs.encode_event(event),
            maxlen=self.deps.settings.events_maxlen,
        )

    async def _publish_event(self, event: bs.Event) -> None:
        await self._apply(self._event_batch(event))

    def _add_status(self, batch: WriteBatch) -> None:
        """The state hash's status and flow, and the ``status_changed`` event."""
        session = self.session
        status, flow = str(session.status), str(session.flow)
        batch.hset(self.keys.state(self.instance_id), {"status": status, "flow": flow})
        self._add_event(batch, bs.StatusChanged, status=status, flow=flow)

    async def _write_state(self, **fields: str) -> None:
        """Fields of the state hash for people (``last_error``): skipped while Redis is away.

        Nothing waits on them, so the terminal link is not held up by them.
        """
        started = time.monotonic()
        try:
            await self._writer.apply(WriteBatch().hset(self.keys.state(self.instance_id), fields))
        except Exception as exc:
            self._note_slow(started)
            if not self._must_wait(exc):
                raise
            log.info("state not written: Redis is away", fields=sorted(fields))
        else:
            self._answered()


# --------------------------------------------------------------------------
# Pure helpers: commands -> SPI requests, session outcomes -> events
# --------------------------------------------------------------------------


async def _quiet(loop: Awaitable[None]) -> None:
    """Run one of the lane's loops; one that meets the stop in a Redis wait just ends."""
    with contextlib.suppress(_Stopping):
        await loop


def _id_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``ms-seq``) as a sort key: stream order."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _settle(future: asyncio.Future[Any], value: object) -> None:
    if not future.done():
        future.set_result(value)


def read_block_ms(redis: Redis) -> int:
    """:data:`READ_BLOCK_MS`, shortened to end before ``redis``'s socket timeout.

    redis-py reads a blocking command's reply under the client's
    ``socket_timeout`` (5 s by default in redis-py 8): a longer block would
    raise ``TimeoutError`` and drop the connection. The lane worker builds its
    client with a timeout that fits the full block; any other client still
    works, with shorter blocks.
    """
    kwargs: Any = getattr(redis, "connection_kwargs", None)  # RedisCluster
    if kwargs is None:
        kwargs = redis.connection_pool.connection_kwargs
    # Not given: the connection's own default applies (an unconnected one reads it).
    timeout = (
        kwargs["socket_timeout"] if "socket_timeout" in kwargs else Connection().socket_timeout
    )
    if timeout is None:
        return READ_BLOCK_MS
    timeout_ms = int(float(timeout) * 1000)
    fits = (
        timeout_ms - READ_BLOCK_MARGIN_MS
        if timeout_ms > 2 * READ_BLOCK_MARGIN_MS
        else timeout_ms // 2
    )
    return max(1, min(READ_BLOCK_MS, fits))  # BLOCK 0 would mean "for ever"


def _stream_entries(reply: Any) -> list[tuple[str, _Pairs]]:
    """The entries of a raw XREADGROUP reply on one stream: RESP2 (a list) or RESP3 (a map).

    A pending entry deleted from the stream since (trimmed) comes with no
    fields, and is refused as a bad entry like any other empty one.
    """
    if not reply:
        return []  # nothing new before the block ended
    streams = list(reply.values()) if isinstance(reply, dict) else [item[1] for item in reply]
    return [
        (_text(entry_id), _pairs(flat)) for entries in streams for entry_id, flat in entries or ()
    ]


def _pairs(flat: Any) -> _Pairs:
    if not flat:
        return []
    if isinstance(flat, dict):
        return list(flat.items())
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat) - 1, 2)]


def _dead_letter(fields: Any, entry_id: str, exc: CommandError) -> _Pairs:
    """The dead-letter copy of an entry: its fields as received, then why it was refused.

    Names and values stay bytes (Redis takes any bytes; nothing is decoded,
    so a name that is not UTF-8 cannot fail here), repeats and order are
    kept; ``entry_id``, ``reason`` and ``detail`` come last, so a reader
    that folds fields into a map sees ours. Never raises: a copy that failed
    would leave the entry pending, and every start of the lane would meet it
    again.
    """
    try:
        items = fields.items() if isinstance(fields, Mapping) else fields
        whole = [(_binary(name), _binary(value)) for name, value in items]
    except Exception:  # not pairs at all: keep what it was, for people
        whole = [(b"fields", repr(fields)[:4096].encode("utf-8", "backslashreplace"))]
    copy, extra = _kept(whole)
    return [
        *copy,
        *extra,
        (b"entry_id", entry_id.encode()),
        (b"reason", str(exc.reason).encode()),
        (b"detail", exc.detail.encode("utf-8", "backslashreplace")),
    ]


def _kept(whole: _Pairs) -> tuple[_Pairs, _Pairs]:
    """At most :data:`DEAD_LETTER_KEEP_BYTES` of an entry's fields, and how to know the rest.

    A small entry is kept whole. A larger one keeps its fields in order until
    the budget is spent (the last one cut short), and gains ``size`` (all its
    names and values, in bytes) and ``sha256`` (of the entry as sent: each
    name and value as its length in 8 bytes big-endian, then its bytes).
    """
    size = sum(len(name) + len(value) for name, value in whole)
    if size <= DEAD_LETTER_KEEP_BYTES:
        return whole, []
    digest = hashlib.sha256()
    for name, value in whole:
        for part in (name, value):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    budget = DEAD_LETTER_KEEP_BYTES
    copy: _Pairs = []
    for name, value in whole:
        if budget <= 0:
            break
        name_part = name[:budget]
        budget -= len(name_part)
        value_part = value[: max(budget, 0)]
        budget -= len(value_part)
        copy.append((name_part, value_part))
    extra: _Pairs = [
        (b"truncated", b"1"),
        (b"size", str(size).encode()),
        (b"sha256", digest.hexdigest().encode()),
    ]
    return copy, extra


def _entry_size(fields: Any) -> int:
    """Bytes of an entry's names and values; 0 for what is not pairs (decoding refuses it)."""
    try:
        items = fields.items() if isinstance(fields, Mapping) else fields
        return sum(_len(name) + _len(value) for name, value in items)
    except Exception:
        return 0


def _len(value: object) -> int:
    if isinstance(value, bytes | bytearray | memoryview | str):
        return len(value)
    return 0


def _next_id(entry_id: str) -> str:
    """The smallest stream id above ``entry_id``."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def _binary(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    text = value if isinstance(value, str) else repr(value)
    return text.encode("utf-8", "backslashreplace")  # lone surrogates too


def _last_line(exc: BaseException) -> str:
    """The last line of ``exc``'s traceback (``KeyError: 'x'``), cut to a readable length."""
    line = traceback.format_exception_only(exc)[-1].strip()
    return line if len(line) <= 300 else line[:297] + "..."


def _lane_must_end(exc: BaseException) -> bool:
    """Whether an error met while handling one entry must end the lane, not the entry.

    Not the entry's fault, so never a reason to refuse it: Redis trouble
    (unreachable, failing over, refusing writes) and a lost lease end the
    lane as they always did, and its successor takes the entry again; a
    configuration fault is fatal. Nor may the lane go on after an error that
    escaped a session flush (:meth:`Lane._flush`): that round's writes did
    not land, so the session is out of step with Redis and the terminal, and
    only a fresh start, recovering from the records, is safe. Redis being
    away never gets here (every call waits it out, :meth:`Lane._until_redis`);
    the lane stopping during such a wait (``_Stopping``) leaves the entry
    pending as well.
    """
    if isinstance(exc, RedisError | RetryLater | LeaseLost | ConfigurationError | _Stopping):
        return True
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is _FLUSH_CODE:
            return True
        tb = tb.tb_next
    return False


def pair_busy(command: bs.Command, pending: bs.Command | None) -> CommandError | None:
    """Why ``command`` may not be queued: a ``pair`` while the ``pair`` ``pending`` is not done.

    One pairing at a time. Queued, a second ``pair`` would wait out the
    first (up to :data:`PAIRING_TIMEOUT_S`) and start long after its sender
    gave up, so it is refused at once: nothing was done, send it again once
    the first has ended.
    """
    if not isinstance(command, bs.Pair) or pending is None:
        return None
    return CommandError(
        bs.Reason.BUSY,
        f"pairing {pending.command_id!r} is in progress on this lane; send pair again once it "
        "has ended (pair_cancel ends it)",
    )


def pairing_limit(expires_at: _dt.datetime | None, now: _dt.datetime) -> tuple[float, str]:
    """How long a pairing started at ``now`` may run, in seconds, and why it would end then.

    Until the ``pair`` command's ``expires_at`` (docs/broker-schema.md,
    ``pair``), and never longer than :data:`PAIRING_TIMEOUT_S`.
    """
    if expires_at is not None:
        left = (expires_at - now).total_seconds()
        if left < PAIRING_TIMEOUT_S:
            return max(0.0, left), (
                f"the pair command's expires_at ({bs.format_time(expires_at)}) passed "
                "before it finished"
            )
    return PAIRING_TIMEOUT_S, f"it did not finish within {PAIRING_TIMEOUT_S:g} s"


def _pairing_end(event: spi.PairingFinished) -> bs.PairingState:
    if event.success:
        return bs.PairingState.SUCCEEDED
    return bs.PairingState.CANCELLED if event.cancelled else bs.PairingState.FAILED


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _iso_now() -> str:
    return bs.format_time(_now())


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _new_record(command: bs.Command, pos_ref_id: str) -> TxRecord:
    return TxRecord(
        pos_ref_id=pos_ref_id,
        command_id=command.command_id,
        tx_type=command.type,
        amount_cents=getattr(command, "amount_cents", 0) or 0,
        tip_cents=getattr(command, "tip_cents", 0) or 0,
        cashout_cents=getattr(command, "cashout_cents", 0) or 0,
        surcharge_cents=getattr(command, "surcharge_cents", 0) or 0,
    )


def _options(profile: LaneProfile | None) -> dict[str, Any]:
    if profile is None:
        return {}
    return {
        "config": m.PrintingConfig(
            print_merchant_copy=profile.print_merchant_copy,
            prompt_for_customer_copy=profile.prompt_for_customer_copy,
            print_for_signature_required_transactions=profile.signature_flow_on_eftpos,
        )
    }


def _spi_request(command: bs.Command, profile: LaneProfile | None) -> m.TransactionRequest:
    """Map a broker command to the SPI request the session sends (§7.2–§7.15)."""
    opts = _options(profile)
    match command:
        case bs.Purchase():
            return m.PurchaseRequest(
                pos_ref_id=command.pos_ref_id,
                purchase_amount=command.amount_cents,
                tip_amount=command.tip_cents,
                cash_amount=command.cashout_cents,
                prompt_for_cashout=command.prompt_for_cashout,
                surcharge_amount=command.surcharge_cents,
                **opts,
            )
        case bs.Refund():
            return m.RefundRequest(
                pos_ref_id=command.pos_ref_id,
                refund_amount=command.amount_cents,
                suppress_merchant_password=command.suppress_merchant_password,
                **opts,
            )
        case bs.Cashout():
            return m.CashoutRequest(
                pos_ref_id=command.pos_ref_id,
                cash_amount=command.amount_cents,
                surcharge_amount=command.surcharge_cents,
                **opts,
            )
        case bs.MotoPurchase():
            return m.MotoPurchaseRequest(
                pos_ref_id=command.pos_ref_id,
                purchase_amount=command.amount_cents,
                surcharge_amount=command.surcharge_cents,
                suppress_merchant_password=command.suppress_merchant_password,
                **opts,
            )
        case bs.Settle():
            return m.SettleRequest(pos_ref_id=command.pos_ref_id or "", **_settle_opts(profile))
        case bs.SettlementEnquiry():
            return m.SettlementEnquiryRequest(
                pos_ref_id=command.pos_ref_id or "", **_settle_opts(profile)
            )
        case bs.Reversal():
            return m.ReversalRequest(pos_ref_id=command.pos_ref_id)
    raise LocalProtocolError(f"{command.type} has no SPI transaction request")


def _settle_opts(profile: LaneProfile | None) -> dict[str, Any]:
    if profile is None or not profile.print_merchant_copy:
        return {}
    return {"config": m.PrintingConfig(print_merchant_copy=True)}


def _tx_fields(response: m.TransactionResponse | None) -> dict[str, Any]:
    if response is None:
        return {}
    return {
        "host_response_code": response.host_response_code,
        "host_response_text": response.host_response_text,
        "rrn": response.rrn,
        "stan": response.stan,
        "auth_code": response.auth_code,
        "account_type": response.account_type,
        "card_entry": response.card_entry,
        "masked_pan": response.masked_pan,
        "scheme_name": response.scheme_name,
        "terminal_id": response.terminal_id,
        "terminal_ref_id": response.terminal_ref_id,
        "merchant_id": response.merchant_id,
        "bank_date": response.bank_date,
        "bank_time": response.bank_time,
        "customer_receipt": response.customer_receipt,
        "merchant_receipt": response.merchant_receipt,
        "customer_receipt_printed": response.customer_receipt_printed,
        "merchant_receipt_printed": response.merchant_receipt_printed,
        "error_reason": response.error_reason,
        "error_detail": response.error_detail,
    }


def _amounts(response: m.TransactionResponse | None, record: TxRecord | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if record is not None:
        fields = {
            "amount_cents": record.amount_cents,
            "tip_cents": record.tip_cents,
            "cashout_cents": record.cashout_cents,
            "surcharge_cents": record.surcharge_cents,
        }
    if response is not None:
        for name, value in (
            ("amount_cents", response.purchase_amount or response.refund_amount),
            ("tip_cents", response.tip_amount),
            ("cashout_cents", response.cash_amount),
            ("surcharge_cents", response.surcharge_amount),
        ):
            if value is not None:
                fields[name] = value
    return fields


def _completed_event(
    iid: str, command_id: str | None, done: spi.TransactionCompleted, record: TxRecord | None
) -> bs.Event:
    response = done.response if isinstance(done.response, m.TransactionResponse) else None
    fields = {**_amounts(response, record), **_tx_fields(response)}
    if response is None:
        fields["error_detail"] = done.message
    return bs.TransactionCompleted(
        instance_id=iid,
        at=_now(),
        command_id=command_id,
        result=str(done.outcome),
        pos_ref_id=done.pos_ref_id,
        tx_type=record.tx_type if record is not None else str(done.tx_type),
        recovered=done.recovered,
        **fields,
    )


def _settlement_event(iid: str, command_id: str | None, done: spi.TransactionCompleted) -> bs.Event:
    response = done.response if isinstance(done.response, m.SettlementResponse) else None
    fields: dict[str, Any] = {}
    if response is not None:
        fields = {
            "host_response_code": response.host_response_code,
            "host_response_text": response.host_response_text,
            "accumulated_total_count": response.accumulated_total_count,
            "accumulated_total_value_cents": response.accumulated_total_value,
            "merchant_receipt": response.merchant_receipt,
            "schemes": tuple(
                {
                    "scheme_name": s.scheme_name,
                    "settle_by_acquirer": s.settle_by_acquirer,
                    "total_count": s.total_count,
                    "total_value_cents": s.total_value,
                }
                for s in response.schemes
            ),
        }
    else:
        fields["error_detail"] = done.message
    return bs.Settlement(
        instance_id=iid,
        at=_now(),
        command_id=command_id,
        result=str(done.outcome),
        enquiry=done.tx_type is m.TxType.SETTLEMENT_ENQUIRY,
        **fields,
    )


def _lookup_event(
    base: dict[str, Any], pos_ref_id: str, response: m.GetTransactionResponse
) -> bs.Event:
    tx = response.tx
    found = response.success is True and tx is not None
    result = "unknown"
    if tx is not None and tx.success is not None:
        result = "success" if tx.success else "failed"
    fields = {**_amounts(tx, None), **_tx_fields(tx)}
    if not found:
        fields["error_reason"] = response.error_reason
        fields["error_detail"] = response.error_detail
    return bs.TransactionLookup(**base, result=result, pos_ref_id=pos_ref_id, found=found, **fields)


def _last_tx_event(base: dict[str, Any], response: m.TransactionResponse) -> bs.Event:
    found = response.retrieved
    result = "unknown"
    if found and response.success is not None:
        result = "success" if response.success else "failed"
    return bs.TransactionLookup(
        **base,
        result=result,
        pos_ref_id=response.pos_ref_id,
        found=found,
        **_amounts(response, None),
        **_tx_fields(response),
    )


def _status_event(base: dict[str, Any], answer: m.TerminalStatus) -> bs.Event:
    return bs.TerminalStatusReport(
        **base,
        success=answer.success,
        status=answer.status,
        battery_level=answer.battery_level,
        charging=answer.charging,
    )


def _config_event(base: dict[str, Any], answer: m.TerminalConfiguration) -> bs.Event:
    return bs.TerminalConfigurationReport(
        **base,
        success=answer.success,
        comms_selected=answer.comms_selected,
        merchant_id=answer.merchant_id,
        pa_version=answer.pa_version,
        payment_interface_version=answer.payment_interface_version,
        plugin_version=answer.plugin_version,
        serial_number=answer.serial_number,
        terminal_id=answer.terminal_id,
        terminal_model=answer.terminal_model,
    )


def _print_event(base: dict[str, Any], key: str, answer: m.PrintResponse) -> bs.Event:
    return bs.Printing(
        **base,
        success=bool(answer.success),
        key=key,
        error_reason=answer.error_reason,
        error_detail=answer.error_detail,
    )


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
"""How :func:`_lane_must_end` recognises an error that escaped a session flush."""
