"""Transaction records and remembered command replies (DESIGN.md "Guarantees").

A record ``mp:lane:{ID}:tx:{POS_REF_ID}`` is written *before* the request
goes to the terminal and holds the final outcome, so a lane that restarts
recovers instead of re-sending, and a repeated ``pos_ref_id`` never starts a
second transaction. Its states form a table (``_ALLOWED``)::

    requested ──> sent ──> awaiting_signature ──┐
        │          │  ^──────────┘  ^            │
        │          └──> awaiting_auth_code ──────┤
        └───────────────────────────────────────> completed   (final)

Any state but ``completed`` may go to ``completed``; ``sent`` and the two
``awaiting_*`` states may go to each other (the terminal asks, the POS
answers, the terminal goes on). Staying in the same state is allowed (a
redelivered step). Anything else raises :class:`LocalProtocolError`.

Rules this module keeps:

- Every change is one Lua script on the lane's keys (one hash-tag slot), so
  it is atomic against other lane processes: two callers creating the same
  ``pos_ref_id`` get one record, and the first outcome to complete a record
  is the one kept.
- In-flight index: the set ``mp:lane:{ID}:txs_open`` holds the ``pos_ref_id``
  of every record not completed; it is updated in the same script as the
  record, so :meth:`TxStore.in_flight` needs no scan.
- Retention: a completed record expires ``retention`` after completion
  (default 30 days); in-flight records never expire. Every record is also
  listed in the sorted set ``mp:lane:{ID}:txs`` (by creation time) so that
  deleting a lane finds them all; its entries are pruned after twice the
  retention.
- Command replies: ``remember_command`` keeps the JSON reply to a
  ``command_id`` for ``command_ttl`` (default 7 days) in the hash
  ``mp:lane:{ID}:cmds``, aged by the sorted set ``mp:lane:{ID}:cmds_at``;
  older ones are pruned on each write and never recalled.
- ``complete`` can append the outcome event to the lane's events stream in
  the same script, so an outcome is recorded and published together, once.
- ``begin`` starts a new transaction in one script: the ``command_id`` claim,
  the record and the event that accepts the command (one round trip, written
  before anything goes to the terminal). Given a write ticket
  (:mod:`multipair.store.once`), it is applied once however often it is
  sent: a retry after a lost reply gets the first reply back and publishes
  no second ``command_accepted``. ``claim_command`` is its claim step
  alone, for every other command: first use of a ``command_id`` wins, and a
  later one learns the prior claim, atomically.
- ``move_op`` and ``complete_op`` are the same changes as ``update_state``
  and ``complete``, as ops of the lane's one write script
  (``multipair.worker.writes``), so a lane applies a state move or an
  outcome together with its other writes of the moment (events, state hash,
  the command's ``XACK``) in one atomic, fenced step.
- With a fencing token every script first checks the lane's lease still
  carries it (``multipair.leases``).

The Lua of these scripts lives in :mod:`multipair.store.tx_lua`.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from redis.asyncio import Redis

from multipair.broker_schema import (
    COMMAND_TYPES,
    Event,
    Keys,
    Reason,
    TxResult,
    event_from_json,
    format_time,
    is_valid_pos_ref_id,
    parse_time,
)
from multipair.broker_schema.keys import validate_instance_id
from multipair.exceptions import CommandError, InternalError, LocalProtocolError
from multipair.leases import FencedScript
from multipair.redis_conn import as_text, redis_errors
from multipair.spi.states import TX_MOVES, TxPhase
from multipair.store import tx_lua
from multipair.store.once import WriteTicket, once
from multipair.store.tx_lua import TX_LUA

__all__ = [
    "DEFAULT_COMMAND_TTL",
    "DEFAULT_TX_RETENTION",
    "TX_LUA",
    "Begun",
    "TxOp",
    "TxRecord",
    "TxState",
    "TxStore",
]

DEFAULT_TX_RETENTION: Final = _dt.timedelta(days=30)
"""How long a completed transaction record is kept."""

DEFAULT_COMMAND_TTL: Final = _dt.timedelta(days=7)
"""How long the reply to a ``command_id`` is remembered."""


# A record's state is the session's transaction phase: one enum and one
# table, in multipair.spi.states, persisted as their values.
TxState = TxPhase
_ALLOWED: Final = TX_MOVES


def _utc_ms(moment: _dt.datetime) -> _dt.datetime:
    if moment.tzinfo is None:
        raise InternalError("transaction record times must be aware")
    utc = moment.astimezone(_dt.UTC)
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000)


def _now() -> _dt.datetime:
    return _utc_ms(_dt.datetime.now(_dt.UTC))


def _ms(moment: _dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True, kw_only=True)
class TxRecord:
    """One transaction as the lane recorded it (times in UTC, to the millisecond)."""

    pos_ref_id: str
    command_id: str
    tx_type: str
    """The command type that started it (``purchase``, ``refund``, ...)."""
    amount_cents: int = 0
    tip_cents: int = 0
    cashout_cents: int = 0
    surcharge_cents: int = 0
    state: TxState = TxState.REQUESTED
    result: TxResult | None = None
    """Set when, and only when, ``state`` is ``completed``."""
    outcome: bytes | None = None
    """The JSON body of the ``transaction_completed`` event published for it."""
    request_message_id: str | None = None
    """The SPI message id of the request, once sent (for matching and recovery)."""
    created_at: _dt.datetime = field(default_factory=_now)
    updated_at: _dt.datetime | None = None
    """Defaults to ``created_at``."""

    def __post_init__(self) -> None:
        if not is_valid_pos_ref_id(self.pos_ref_id):
            raise CommandError(Reason.INVALID_VALUE, f"bad pos_ref_id {self.pos_ref_id!r}")
        if not isinstance(self.command_id, str) or not self.command_id:
            raise CommandError(Reason.INVALID_VALUE, "command_id must be a non-empty string")
        if self.tx_type not in COMMAND_TYPES:
            raise CommandError(Reason.INVALID_VALUE, f"unknown tx_type {self.tx_type!r}")
        for name in ("amount_cents", "tip_cents", "cashout_cents", "surcharge_cents"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise CommandError(Reason.INVALID_VALUE, f"{name} must be cents >= 0")
        object.__setattr__(self, "state", TxState(self.state))
        if self.result is not None:
            object.__setattr__(self, "result", TxResult(self.result))
        if (self.state is TxState.COMPLETED) != (self.result is not None):
            raise CommandError(
                Reason.INVALID_VALUE, "a record has a result exactly when it is completed"
            )
        object.__setattr__(self, "created_at", _utc_ms(self.created_at))
        updated = self.created_at if self.updated_at is None else _utc_ms(self.updated_at)
        object.__setattr__(self, "updated_at", updated)

    @property
    def completed(self) -> bool:
        """True once the outcome is recorded."""
        return self.state is TxState.COMPLETED

    def outcome_event(self) -> Event | None:
        """The recorded outcome as an event, to answer a repeated command from the record."""
        return None if self.outcome is None else event_from_json(self.outcome)


def _to_args(record: TxRecord) -> list[str | bytes]:
    values: dict[str, str | bytes] = {
        "pos_ref_id": record.pos_ref_id,
        "command_id": record.command_id,
        "tx_type": record.tx_type,
        "amount_cents": str(record.amount_cents),
        "tip_cents": str(record.tip_cents),
        "cashout_cents": str(record.cashout_cents),
        "surcharge_cents": str(record.surcharge_cents),
        "state": record.state.value,
        "created_at": format_time(record.created_at),
        "updated_at": format_time(record.updated_at or record.created_at),
    }
    if record.result is not None:
        values["result"] = record.result.value
    if record.outcome is not None:
        values["outcome"] = record.outcome
    if record.request_message_id is not None:
        values["request_message_id"] = record.request_message_id
    return [item for pair in values.items() for item in pair]


def _from_flat(reply: Sequence[Any]) -> TxRecord:
    """A record from a flat ``HGETALL`` array (Lua) or a mapping (redis-py)."""
    raw: dict[str, Any] = {}
    if isinstance(reply, Mapping):
        raw = {as_text(k): v for k, v in reply.items()}
    else:
        raw = {as_text(reply[i]): reply[i + 1] for i in range(0, len(reply), 2)}
    try:
        outcome = raw.get("outcome")
        return TxRecord(
            pos_ref_id=as_text(raw["pos_ref_id"]),
            command_id=as_text(raw["command_id"]),
            tx_type=as_text(raw["tx_type"]),
            amount_cents=int(as_text(raw["amount_cents"])),
            tip_cents=int(as_text(raw["tip_cents"])),
            cashout_cents=int(as_text(raw["cashout_cents"])),
            surcharge_cents=int(as_text(raw["surcharge_cents"])),
            state=TxState(as_text(raw["state"])),
            result=TxResult(as_text(raw["result"])) if "result" in raw else None,
            outcome=None
            if outcome is None
            else (outcome if isinstance(outcome, bytes) else as_text(outcome).encode()),
            request_message_id=as_text(raw["request_message_id"])
            if "request_message_id" in raw
            else None,
            created_at=parse_time(as_text(raw["created_at"]), "created_at"),
            updated_at=parse_time(as_text(raw["updated_at"]), "updated_at"),
        )
    except (KeyError, ValueError, CommandError) as exc:
        raise InternalError(f"a stored transaction record is malformed: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class TxOp:
    """One record change for the lane's write script (``multipair.worker.writes``).

    ``name`` is ``TXMOVE`` or ``TXDONE`` (the Lua functions of :data:`TX_LUA`),
    ``keys`` the lane keys it names, ``args`` its arguments; ``what`` says what
    it does, for the error raised when it is refused.
    """

    name: str
    keys: tuple[str, ...]
    args: tuple[str | bytes, ...]
    what: str


@dataclass(frozen=True, slots=True)
class Begun:
    """What :meth:`TxStore.begin` found and did."""

    prior_claim: bytes | None
    """The command_id already had a live claim (this one): nothing was written."""
    record: TxRecord | None
    """The record as stored (``None`` only with ``prior_claim``)."""
    created: bool
    """This call created the record and published the event."""


class TxStore:
    """Transaction records and command replies of every lane, in one Redis."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        retention: _dt.timedelta | None = DEFAULT_TX_RETENTION,
        command_ttl: _dt.timedelta = DEFAULT_COMMAND_TTL,
        fencing_token: int | None = None,
    ) -> None:
        if retention is not None and retention.total_seconds() < 1:
            raise InternalError("retention must be at least one second, or None")
        if command_ttl.total_seconds() < 1:
            raise InternalError("command_ttl must be at least one second")
        self._redis = redis
        self._keys = keys
        self._retention = retention
        self._command_ttl = command_ttl
        # With a fencing token every write first checks the lane's lease still
        # carries it (multipair.leases): a stale lane process cannot write.
        self._fencing_token = fencing_token
        self._create = FencedScript(redis, tx_lua.CREATE_IF_ABSENT, keys, fencing_token)
        self._update = FencedScript(redis, tx_lua.UPDATE_STATE, keys, fencing_token)
        self._complete = FencedScript(redis, tx_lua.COMPLETE, keys, fencing_token)
        self._remember = FencedScript(redis, tx_lua.REMEMBER, keys, fencing_token)
        self._begin = FencedScript(redis, tx_lua.BEGIN, keys, fencing_token)
        self._begin_once = FencedScript(redis, once(tx_lua.BEGIN), keys, fencing_token)
        self._claim = FencedScript(redis, tx_lua.CLAIM, keys, fencing_token)

    def __repr__(self) -> str:
        return f"TxStore(keys={self._keys!r}, retention={self._retention!r})"

    async def create_if_absent(self, instance_id: str, record: TxRecord) -> tuple[TxRecord, bool]:
        """Store ``record`` unless its ``pos_ref_id`` already has one, atomically.

        Returns the record as stored and whether this call created it. A
        ``False`` means: do not send anything, answer from the returned record.
        """
        iid = validate_instance_id(instance_id)
        keys = self._keys
        created_ms, keep_index_ms = self._index_times(record)
        args: list[str | bytes] = [
            record.pos_ref_id,
            created_ms,
            keep_index_ms,
            "0" if record.completed else "1",
            *_to_args(record),
        ]
        with redis_errors():
            created, flat = await self._create(
                keys=[keys.tx(iid, record.pos_ref_id), keys.txs_open(iid), keys.txs(iid)],
                args=args,
            )
        return _from_flat(flat), bool(created)

    def _index_times(self, record: TxRecord) -> tuple[str, str]:
        """The record's score in ``txs`` and the score below which ``txs`` is pruned."""
        created_ms = _ms(record.created_at)
        keep_index_ms = (
            0
            if self._retention is None
            else created_ms - 2 * int(self._retention.total_seconds() * 1000)
        )
        return str(created_ms), str(keep_index_ms)

    def _check_publish(self, iid: str, publish_to: str, maxlen: int | None) -> None:
        """Refuse an event stream outside the lane, or a ``maxlen`` below 1.

        The stream must share the lane's hash tag: one slot, one atomic script.
        """
        if not publish_to.startswith(self._keys.lane_base(iid)):
            raise InternalError(f"{publish_to!r} is not a key of lane {iid}")
        if maxlen is not None and maxlen < 1:
            raise InternalError("maxlen must be at least 1")

    def _claim_times(self, now: _dt.datetime | None) -> tuple[int, int]:
        """Now, and the time before which a remembered reply is forgotten (ms)."""
        now_ms = _ms(_now() if now is None else _utc_ms(now))
        return now_ms, now_ms - int(self._command_ttl.total_seconds() * 1000)

    async def begin(
        self,
        instance_id: str,
        record: TxRecord,
        *,
        claim: bytes,
        publish_to: str,
        publish_fields: Mapping[str, bytes],
        maxlen: int | None = None,
        now: _dt.datetime | None = None,
        ticket: WriteTicket | None = None,
    ) -> Begun:
        """Start a new transaction in one atomic step: claim, record, accept.

        With ``ticket`` (the lane's write id for this step, the same on every
        try) the step is applied once: called again after a lost reply, it
        returns what the first call did and writes nothing more.

        - When ``record.command_id`` holds a live claim (a repeat, or this
          entry redelivered), nothing is written: the prior claim is returned
          for the caller to judge, as :meth:`recall_command` would.
        - Otherwise the claim is remembered (:meth:`remember_command`), then
          the record is created unless its ``pos_ref_id`` has one
          (:meth:`create_if_absent`): an existing record is returned with
          ``created=False`` and nothing more is written.
        - A created record is in flight (``txs_open``), indexed in ``txs``,
          and the event (``publish_fields``, normally ``command_accepted``) is
          appended to ``publish_to``, a stream of the same lane (no event
          when ``publish_fields`` is empty: the caller publishes it later).
        """
        iid = validate_instance_id(instance_id)
        if record.completed:
            raise InternalError("begin creates records in flight only")
        self._check_publish(iid, publish_to, maxlen)
        now_ms, cutoff = self._claim_times(now)
        created_ms, keep_index_ms = self._index_times(record)
        event_args = [item for pair in publish_fields.items() for item in pair]
        keys = self._keys
        script_keys: list[Any] = [
            keys.command_replies(iid),
            keys.command_times(iid),
            keys.tx(iid, record.pos_ref_id),
            keys.txs_open(iid),
            keys.txs(iid),
            publish_to,
        ]
        script_args: list[Any] = [
            record.command_id,
            claim,
            str(now_ms),
            str(cutoff),
            record.pos_ref_id,
            created_ms,
            keep_index_ms,
            "" if maxlen is None else str(maxlen),
            str(len(event_args)),
            *event_args,
            *_to_args(record),
        ]
        with redis_errors():
            if ticket is None:
                reply = await self._begin(keys=script_keys, args=script_args)
            else:
                script = self._begin_once

                async def run(run_keys: list[Any], run_args: list[Any]) -> Any:
                    return await script(keys=run_keys, args=run_args)

                reply = await ticket.call(run, script_keys, script_args)
        code = int(reply[0])
        if code == 0:
            prior = reply[1]
            return Begun(
                prior_claim=prior if isinstance(prior, bytes) else as_text(prior).encode(),
                record=None,
                created=False,
            )
        if code == 1:
            return Begun(prior_claim=None, record=_from_flat(reply[1]), created=False)
        return Begun(prior_claim=None, record=record, created=True)

    def move_op(
        self,
        instance_id: str,
        pos_ref_id: str,
        state: TxState,
        *,
        request_message_id: str | None = None,
        now: _dt.datetime | None = None,
    ) -> TxOp:
        """:meth:`update_state` as an op of a lane write batch (refused the same way)."""
        iid = validate_instance_id(instance_id)
        state = TxState(state)
        if state is TxState.COMPLETED:
            raise LocalProtocolError("complete a transaction record with TxStore.complete")
        allowed_from = [s.value for s, targets in _ALLOWED.items() if state in targets]
        moment = _now() if now is None else _utc_ms(now)
        return TxOp(
            name="TXMOVE",
            keys=(self._keys.tx(iid, pos_ref_id),),
            args=(state.value, format_time(moment), request_message_id or "", *allowed_from),
            what=f"move transaction {pos_ref_id!r} of lane {iid} to {state.value}",
        )

    def complete_op(
        self,
        instance_id: str,
        pos_ref_id: str,
        *,
        result: TxResult,
        outcome: bytes,
        publish_to: str,
        publish_fields: Mapping[str, bytes],
        maxlen: int | None = None,
        now: _dt.datetime | None = None,
    ) -> TxOp:
        """:meth:`complete` with its event, as an op of a lane write batch.

        The op records the outcome and appends the event only when the record
        was not completed yet (the first outcome stands, published once); its
        result is 2 when it did, 1 when the record was already completed.
        """
        iid = validate_instance_id(instance_id)
        result = TxResult(result)
        self._check_publish(iid, publish_to, maxlen)
        moment = _now() if now is None else _utc_ms(now)
        ttl = 0 if self._retention is None else int(self._retention.total_seconds())
        return TxOp(
            name="TXDONE",
            keys=(self._keys.tx(iid, pos_ref_id), self._keys.txs_open(iid), publish_to),
            args=(
                result.value,
                outcome,
                format_time(moment),
                pos_ref_id,
                str(ttl),
                "" if maxlen is None else str(maxlen),
                *(item for pair in publish_fields.items() for item in pair),
            ),
            what=f"complete transaction {pos_ref_id!r} of lane {iid}",
        )

    async def get(self, instance_id: str, pos_ref_id: str) -> TxRecord | None:
        """The record of ``pos_ref_id``, or ``None``."""
        iid = validate_instance_id(instance_id)
        with redis_errors():
            raw = await self._redis.hgetall(self._keys.tx(iid, pos_ref_id))
        return _from_flat(raw) if raw else None  # type: ignore[arg-type]

    async def update_state(
        self,
        instance_id: str,
        pos_ref_id: str,
        state: TxState,
        *,
        request_message_id: str | None = None,
        now: _dt.datetime | None = None,
    ) -> TxRecord:
        """Move a record to ``state`` (not ``completed``: use :meth:`complete`).

        Raises :class:`LocalProtocolError` for a move the table forbids
        (including any move out of ``completed``) or a record that does not
        exist.
        """
        iid = validate_instance_id(instance_id)
        state = TxState(state)
        if state is TxState.COMPLETED:
            raise LocalProtocolError("complete a transaction record with TxStore.complete")
        allowed_from = [s.value for s, targets in _ALLOWED.items() if state in targets]
        moment = _now() if now is None else _utc_ms(now)
        with redis_errors():
            code, payload = await self._update(
                keys=[self._keys.tx(iid, pos_ref_id)],
                args=[state.value, format_time(moment), request_message_id or "", *allowed_from],
            )
        if code == 0:
            raise LocalProtocolError(f"lane {iid} has no transaction record {pos_ref_id!r}")
        if code == 1:
            raise LocalProtocolError(
                f"transaction {pos_ref_id!r} cannot go from {as_text(payload)} to {state.value}"
            )
        return _from_flat(payload)

    async def complete(
        self,
        instance_id: str,
        pos_ref_id: str,
        *,
        result: TxResult,
        outcome: bytes,
        now: _dt.datetime | None = None,
        publish_to: str | None = None,
        publish_fields: Mapping[str, bytes] | None = None,
        maxlen: int | None = None,
    ) -> tuple[TxRecord, bool]:
        """Record the outcome, once. Returns the record and whether this call completed it.

        When the record was already completed it is returned unchanged with
        ``False``: the first outcome stands and no second event is due.

        With ``publish_to`` (a stream of the same lane, normally its events
        stream) and ``publish_fields`` (from ``encode_event``), the event is
        appended in the same atomic step, trimmed with ``MAXLEN ~ maxlen``:
        an outcome is never recorded without being published, nor published
        twice.
        """
        iid = validate_instance_id(instance_id)
        result = TxResult(result)
        moment = _now() if now is None else _utc_ms(now)
        ttl = 0 if self._retention is None else int(self._retention.total_seconds())
        keys = [self._keys.tx(iid, pos_ref_id), self._keys.txs_open(iid)]
        args: list[str | bytes] = [result.value, outcome, format_time(moment), pos_ref_id, str(ttl)]
        if (publish_to is None) != (publish_fields is None):
            raise InternalError("publish_to and publish_fields go together")
        if publish_to is not None and publish_fields is not None:
            self._check_publish(iid, publish_to, maxlen)
            keys.append(publish_to)
            args.append("" if maxlen is None else str(maxlen))
            args.extend(item for pair in publish_fields.items() for item in pair)
        with redis_errors():
            code, payload = await self._complete(keys=keys, args=args)
        if code == 0:
            raise LocalProtocolError(f"lane {iid} has no transaction record {pos_ref_id!r}")
        return _from_flat(payload), code == 2

    async def in_flight(self, instance_id: str) -> list[TxRecord]:
        """Records not completed (from ``txs_open``), oldest first."""
        iid = validate_instance_id(instance_id)
        with redis_errors():
            refs = sorted(as_text(r) for r in await self._redis.smembers(self._keys.txs_open(iid)))
            if not refs:
                return []
            async with self._redis.pipeline(transaction=False) as pipe:
                for ref in refs:
                    pipe.hgetall(self._keys.tx(iid, ref))
                replies = await pipe.execute()
        records = [_from_flat(raw) for raw in replies if raw]
        return sorted(
            (r for r in records if not r.completed), key=lambda r: (r.created_at, r.pos_ref_id)
        )

    async def remember_command(
        self,
        instance_id: str,
        command_id: str,
        reply: bytes | str,
        *,
        now: _dt.datetime | None = None,
    ) -> None:
        """Keep the JSON reply to ``command_id`` for ``command_ttl`` (a later call replaces it)."""
        iid = validate_instance_id(instance_id)
        now_ms, cutoff = self._claim_times(now)
        with redis_errors():
            await self._remember(
                keys=[self._keys.command_replies(iid), self._keys.command_times(iid)],
                args=[command_id, reply, str(now_ms), str(cutoff)],
            )

    async def claim_command(
        self,
        instance_id: str,
        command_id: str,
        claim: bytes | str,
        *,
        now: _dt.datetime | None = None,
    ) -> bytes | None:
        """Claim ``command_id`` for ``claim`` unless it holds a live claim, in one atomic step.

        Returns the live prior claim (and writes nothing) for the caller to
        judge, as :meth:`recall_command` would; ``None`` once this call
        remembered ``claim`` for ``command_ttl`` (:meth:`remember_command`).
        The claim step of :meth:`begin`, for commands without a record.
        """
        iid = validate_instance_id(instance_id)
        now_ms, cutoff = self._claim_times(now)
        with redis_errors():
            prior = await self._claim(
                keys=[self._keys.command_replies(iid), self._keys.command_times(iid)],
                args=[command_id, claim, str(now_ms), str(cutoff)],
            )
        if prior is None:
            return None
        return prior if isinstance(prior, bytes) else as_text(prior).encode()

    async def recall_command(
        self, instance_id: str, command_id: str, *, now: _dt.datetime | None = None
    ) -> bytes | None:
        """The reply remembered for ``command_id`` within ``command_ttl``, or ``None``."""
        iid = validate_instance_id(instance_id)
        _, cutoff = self._claim_times(now)
        with redis_errors():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hget(self._keys.command_replies(iid), command_id)
                pipe.zscore(self._keys.command_times(iid), command_id)
                reply, score = await pipe.execute()
        if reply is None or score is None or score < cutoff:
            return None
        return reply if isinstance(reply, bytes) else as_text(reply).encode()
