"""The asyncio client: lanes, commands, outcomes and events over the v1 Redis contract.

Rules this module keeps:

- It speaks only the public contract (docs/broker-schema.md): it ``XADD``s
  commands, reads events streams, and reads the keys a reader may rely on.
  Profiles are written through :class:`~multipair.store.profiles.ProfileStore`.
- A command is added only while the lane's profile exists: ``WATCH`` the
  profile, ``EXISTS`` it, then ``MULTI``/``XADD``/``EXEC`` (both keys share
  the lane's hash tag), so a command never lands in the stream of a lane
  that does not exist. No Lua: the POS backends' Redis role
  (``deploy/redis/users.acl``, ``multipair-pos``) may ``XADD`` commands and
  read, never run scripts or read a profile (it holds the sealed keys).
- Waiting for an answer starts from the events stream's last id read
  *before* the command is added, so no event of the command can be missed.
- A timeout never says "failed": :class:`OutcomeTimeout` means the outcome
  is unknown to the caller, who must look the transaction up before charging
  again (the lane keeps running it and publishes the outcome later).
"""

# ruff: noqa: ASYNC109 - a per-call ``timeout`` is this API's contract (issue 5): it bounds
# the wait for the lane's answer, and its end means "outcome unknown", not "failed".

from __future__ import annotations

import asyncio
import datetime as _dt
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing, suppress
from types import TracebackType
from typing import Any, Final, Self

import orjson
from redis.asyncio import Redis
from redis.exceptions import WatchError
from redis.typing import EncodableT, FieldT

from multipair import broker_schema as bs
from multipair.broker_schema.pat_commands import SetTableConfig
from multipair.client._commands import (
    CancelWatch,
    build,
    client_errors,
    expect,
    is_final,
    lane_id,
    new_command_id,
    new_pos_ref_id,
    not_found,
    parse_int,
    parse_time,
)
from multipair.client._events import EventCallback, EventReader
from multipair.client._pairing import ConfirmPolicy, follow_pairing, give_up_pairing
from multipair.client._preauth import PreauthCommands
from multipair.client.errors import ClientError, CommandRejected, LaneNotFound, OutcomeTimeout
from multipair.client.outcome import LaneInfo, Outcome
from multipair.client.pay_at_table import OnServed, PayAtTableHandler
from multipair.client.pay_at_table import serve as serve_pat
from multipair.config import Settings
from multipair.exceptions import ConfigurationError
from multipair.leases import parse_lease
from multipair.redis_conn import as_text, connect_blocking, redis_errors, text_map
from multipair.redis_conn import connect as connect_redis
from multipair.store.profiles import LaneProfile, ProfileStore
from multipair.store.secrets_box import MasterKey
from multipair.store.transactions import TxRecord, TxStore
from multipair.supervisor.control import default_requester

__all__ = ["AsyncClient", "EventCallback", "new_command_id", "new_pos_ref_id"]


CONTROL_ACTIONS: Final = frozenset({"restart", "stop", "start"})

_SOCKET_TIMEOUT_S: Final = 30.0
"""Longer than any read blocks (redis-py's default of 5 s would turn a quiet wait into an error)."""
_LANE_ALIVE_S: Final = 10.0
"""A lane whose heartbeat is older than this is taken as not running (it beats every 2 s)."""

_PAIR_EXPIRY_MARGIN_S: Final = 2.0
"""A pair's ``expires_at`` is this long after the client gives up: its pair_cancel comes first."""


def require_url(settings: Settings) -> str:
    """``settings.redis_url``; :class:`ConfigurationError` when it is not set."""
    if settings.redis_url is None:
        raise ConfigurationError(
            "no Redis URL: set MULTIPAIR_REDIS_URL (or --redis-url) to the lanes' Redis"
        )
    return settings.redis_url


class AsyncClient(PreauthCommands):
    """Drive multipair lanes from an asyncio POS backend.

    ``redis`` is any ``redis.asyncio.Redis`` or ``redis.asyncio.RedisCluster``
    (with or without ``decode_responses``; :func:`multipair.redis_conn.connect`
    makes the right one from a URL); ``prefix`` is the key prefix the lanes use.
    ``master_key`` is needed only to read or write pairing secrets, which
    this client never does; it is passed on to the profile store.
    Preauthorisation, account verify and Zip come from
    :class:`~multipair.client._preauth.PreauthCommands`.
    Redis being unreachable raises :class:`~multipair.exceptions.RetryLater`.
    """

    def __init__(
        self, redis: Redis, *, prefix: str = "mp", master_key: MasterKey | None = None
    ) -> None:
        self._redis = redis
        self._keys = bs.Keys(prefix)
        self._profiles = ProfileStore(redis, self._keys, master_key)
        self._txs = TxStore(redis, self._keys)
        self._events = EventReader(redis, self._keys)
        self._owns_redis = False

    @classmethod
    def from_settings(cls, settings: Settings) -> AsyncClient:
        """A client on its own Redis connection pool, made from ``settings.redis_url``.

        The URL may name a single server or any node of a Redis Cluster; which
        one it is is asked at once, blocking (in a coroutine, prefer
        :meth:`connect`).
        """
        url = require_url(settings)
        return cls._owning(connect_blocking(url, socket_timeout=_SOCKET_TIMEOUT_S), settings)

    @classmethod
    async def connect(cls, settings: Settings) -> AsyncClient:
        """:meth:`from_settings` without blocking the event loop."""
        url = require_url(settings)
        return cls._owning(await connect_redis(url, socket_timeout=_SOCKET_TIMEOUT_S), settings)

    @classmethod
    def _owning(cls, redis: Redis, settings: Settings) -> AsyncClient:
        """A client on ``redis`` that closes it in :meth:`aclose`."""
        client = cls(redis, prefix=settings.prefix, master_key=settings.master_key)
        client._owns_redis = True
        return client

    def __repr__(self) -> str:
        return f"AsyncClient(keys={self._keys!r})"

    @property
    def keys(self) -> bs.Keys:
        """The key names this client uses."""
        return self._keys

    @property
    def redis(self) -> Redis:
        """The Redis client underneath."""
        return self._redis

    async def aclose(self) -> None:
        """Close the Redis connection pool if this client made it (:meth:`from_settings`)."""
        if self._owns_redis:
            await self._redis.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------
    # Lanes
    # ------------------------------------------------------------------

    async def add_lane(
        self,
        *,
        pos_id: str,
        serial_number: str,
        device_address: str | None = None,
        auto_address: bool = False,
        tenant_code: str | None = None,
        test_mode: bool = False,
        secure: bool = False,
        instance_id: str | None = None,
    ) -> LaneProfile:
        """Create a lane (profile, ``mp:lanes`` entry, command group) and return its profile.

        ``ClientError('lane_exists')`` when ``instance_id`` is taken; a bad
        field raises ``ClientError('invalid_value' | 'wrong_type' | ...)``.
        """
        fields: dict[str, Any] = {}
        if instance_id is not None:
            fields["instance_id"] = instance_id
        with client_errors():
            profile = LaneProfile(
                pos_id=pos_id,
                serial_number=serial_number,
                device_address=device_address,
                auto_address=auto_address,
                tenant_code=tenant_code,
                test_mode=test_mode,
                secure=secure,
                **fields,
            )
            return await self._profiles.create(profile)

    async def list_lanes(self) -> list[LaneProfile]:
        """Every lane, oldest first."""
        return await self._profiles.list()

    async def get_lane(self, instance_id: str) -> LaneProfile:
        """The lane's profile; :class:`LaneNotFound` when there is none."""
        with client_errors():
            return await self._profiles.get(instance_id)

    async def lane_info(self, instance_id: str) -> LaneInfo:
        """The lane's profile, state, owner and newest transaction (one row of status)."""
        return await self._info(await self.get_lane(instance_id))

    async def lanes_info(self) -> list[LaneInfo]:
        """:meth:`lane_info` of every lane, oldest lane first."""
        profiles = await self.list_lanes()
        return list(await asyncio.gather(*(self._info(p) for p in profiles)))

    async def _info(self, profile: LaneProfile) -> LaneInfo:
        iid = profile.instance_id
        keys = self._keys
        with redis_errors():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(keys.state(iid))
                pipe.get(keys.lease(iid))
                pipe.zrevrange(keys.txs(iid), 0, 0)
                raw_state, raw_lease, newest = await pipe.execute()
        state = text_map(raw_state or {})
        lease = parse_lease(raw_lease)
        last_ref = as_text(newest[0]) if newest else None
        last_result: str | None = None
        if last_ref is not None:
            record = await self._txs.get(iid, last_ref)
            if record is not None:
                last_result = str(record.result) if record.result else str(record.state)
        return LaneInfo(
            profile=profile,
            status=state.get("status") or None,
            flow=state.get("flow") or None,
            host=state.get("host") or None,
            pid=parse_int(state.get("pid")),
            heartbeat_at=parse_time(state.get("heartbeat_at")),
            started_at=parse_time(state.get("started_at")),
            restarts=parse_int(state.get("restarts")) or 0,
            last_error=state.get("last_error") or None,
            crash_loop=state.get("crash_loop", "").lower() in ("1", "true"),
            lease_host=lease.host_id if lease is not None else None,
            last_pos_ref_id=last_ref,
            last_result=last_result,
            last_exit_cause=state.get("last_exit_cause") or None,
        )

    async def remove_lane(
        self, instance_id: str, *, unpair: bool = True, timeout: float = 10.0
    ) -> None:
        """Unpair (best effort), stop and delete a lane: its profile and every key it has.

        When ``unpair`` is set and the lane runs paired, ``unpair`` is sent and
        awaited for up to ``timeout`` seconds; a refusal or no answer does not
        stop the removal. The lane then leaves ``mp:lanes`` and is disabled;
        if a host holds its lease, that host is told to ``stop`` it and the
        lease's release is awaited (within the same ``timeout``), so that the
        stopping lane does not write keys again after they are deleted.
        """
        iid = lane_id(instance_id)
        info = await self.lane_info(iid)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if unpair and self._runs(info) and info.status not in (None, bs.Status.UNPAIRED):
            with suppress(ClientError):  # best effort: the lane is removed anyway
                await self.send_and_wait(
                    iid, bs.Unpair(command_id=new_command_id()), timeout=timeout
                )
        with redis_errors():
            await self._redis.srem(self._keys.lanes(), iid)
        owner = await self.lane_owner(iid)
        if owner is not None:
            with suppress(LaneNotFound):
                await self.set_enabled(iid, False)
            await self.send_control(owner, "stop", iid)
            await self._wait_lease_released(iid, deadline)
        await self._profiles.delete(iid)

    async def _wait_lease_released(self, iid: str, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        key = self._keys.lease(iid)
        while loop.time() < deadline:
            with redis_errors():
                if not await self._redis.exists(key):
                    return
            # Nothing to block on: the lease is a plain key with a TTL.
            await asyncio.sleep(min(0.1, max(0.0, deadline - loop.time())))

    def _runs(self, info: LaneInfo) -> bool:
        if info.lease_host is not None:
            return True
        if info.heartbeat_at is None:
            return False
        age = _dt.datetime.now(_dt.UTC) - info.heartbeat_at
        return age.total_seconds() < _LANE_ALIVE_S

    async def set_enabled(self, instance_id: str, enabled: bool) -> None:
        """Set the profile's ``enabled`` flag (``lane stop`` / ``lane start`` remember it)."""
        if type(enabled) is not bool:
            raise ClientError(bs.Reason.WRONG_TYPE, "enabled must be true or false")
        with client_errors():
            await self._profiles.update(instance_id, enabled=enabled)

    # ------------------------------------------------------------------
    # Commands
    # ------------------------------------------------------------------

    async def send(self, instance_id: str, command: bs.Command) -> str:
        """Add a command to the lane's stream (``v`` 1 and its JSON body); return its id.

        :class:`LaneNotFound` when the lane has no profile (nothing is added).
        """
        iid = lane_id(instance_id)
        if not isinstance(command, bs.Command):
            raise ClientError(bs.Reason.WRONG_TYPE, "command must be a multipair command")
        with client_errors():
            fields = bs.encode_command(command)
        profile, stream = self._keys.profile(iid), self._keys.commands(iid)
        entry: dict[FieldT, EncodableT] = {"v": fields["v"], "body": fields["body"]}
        with redis_errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(profile)
                        # EXISTS by name: a cluster pipeline's exists() returns the
                        # pipeline, not the reply, while watching (as ProfileStore.delete).
                        if not await pipe.execute_command("EXISTS", profile):
                            raise not_found(iid)
                        pipe.multi()  # type: ignore[no-untyped-call]
                        pipe.xadd(stream, entry)
                        await pipe.execute()
                        return command.command_id
                    except WatchError:  # the profile changed meanwhile: look again
                        continue

    async def send_and_wait(
        self,
        instance_id: str,
        command: bs.Command,
        *,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> bs.Event:
        """Send ``command`` and return the event that answers it for good.

        Every other event carrying the command's id (``command_accepted`` of a
        transaction, ``transaction_update``, ``signature_required``,
        ``pairing`` progress, ``error`` ...) is passed to ``on_event`` as it
        arrives. The final answer is ``transaction_completed`` (or
        ``transaction_lookup`` for a repeated money command),
        ``transaction_lookup``, ``settlement``, ``terminal_status``,
        ``terminal_configuration``, ``printing``, the last ``pairing`` event,
        or ``command_accepted`` for commands that have no other answer.

        Raises :class:`CommandRejected` when the lane refuses the command and
        :class:`OutcomeTimeout` when no final answer came within ``timeout``
        seconds (the outcome is then unknown, not failed).
        """
        iid = lane_id(instance_id)
        deadline = asyncio.get_running_loop().time() + timeout
        since = await self._events.last_id(iid)
        command_id = await self.send(iid, command)
        async with aclosing(self._events.follow(iid, since, deadline)) as events:
            async for _, event in events:
                if event.command_id != command_id:
                    continue
                if is_final(command, event):
                    if isinstance(event, bs.CommandRejected):
                        raise CommandRejected(event)
                    return event
                if on_event is not None:
                    on_event(event)
        raise OutcomeTimeout(
            "timeout",
            f"no answer to {command.type} {command_id} within {timeout:g}s; "
            "its outcome is unknown: look it up before trying again",
        )

    async def _money(
        self,
        instance_id: str,
        cls: type[bs.Command],
        *,
        pos_ref_id: str | None,
        timeout: float,
        on_event: EventCallback | None,
        **fields: Any,
    ) -> Outcome:
        """Send the money command ``cls(**fields)`` and await its outcome (every money method)."""
        ref = pos_ref_id if pos_ref_id is not None else new_pos_ref_id()
        command = build(cls, pos_ref_id=ref, **fields)
        event = await self.send_and_wait(instance_id, command, timeout=timeout, on_event=on_event)
        if not isinstance(event, bs.TransactionCompleted | bs.TransactionLookup):
            raise ClientError(
                "unexpected_event", f"a {command.type} was answered by {event.type!r}"
            )
        return Outcome.from_event(event, command_id=command.command_id, pos_ref_id=ref)

    async def purchase(
        self,
        instance_id: str,
        amount_cents: int,
        *,
        pos_ref_id: str | None = None,
        tip_cents: int = 0,
        cashout_cents: int = 0,
        surcharge_cents: int = 0,
        prompt_for_cashout: bool = False,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """A card purchase of ``amount_cents`` (integer cents); waits for its outcome.

        ``pos_ref_id`` defaults to a fresh ``mp-...`` reference. A declined
        purchase is an :class:`Outcome` with ``result == 'failed'``, not an
        exception.
        """
        return await self._money(
            instance_id,
            bs.Purchase,
            pos_ref_id=pos_ref_id,
            timeout=timeout,
            on_event=on_event,
            amount_cents=amount_cents,
            tip_cents=tip_cents,
            cashout_cents=cashout_cents,
            surcharge_cents=surcharge_cents,
            prompt_for_cashout=prompt_for_cashout,
        )

    async def refund(
        self,
        instance_id: str,
        amount_cents: int,
        *,
        pos_ref_id: str | None = None,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """A refund of ``amount_cents`` to a card; waits for its outcome."""
        return await self._money(
            instance_id,
            bs.Refund,
            pos_ref_id=pos_ref_id,
            timeout=timeout,
            on_event=on_event,
            amount_cents=amount_cents,
        )

    async def cashout(
        self,
        instance_id: str,
        amount_cents: int,
        *,
        pos_ref_id: str | None = None,
        surcharge_cents: int = 0,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """Cash out only (no purchase) of ``amount_cents``; waits for its outcome."""
        return await self._money(
            instance_id,
            bs.Cashout,
            pos_ref_id=pos_ref_id,
            timeout=timeout,
            on_event=on_event,
            amount_cents=amount_cents,
            surcharge_cents=surcharge_cents,
        )

    async def moto_purchase(
        self,
        instance_id: str,
        amount_cents: int,
        *,
        pos_ref_id: str | None = None,
        surcharge_cents: int = 0,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """A mail or telephone order purchase; waits for its outcome."""
        return await self._money(
            instance_id,
            bs.MotoPurchase,
            pos_ref_id=pos_ref_id,
            timeout=timeout,
            on_event=on_event,
            amount_cents=amount_cents,
            surcharge_cents=surcharge_cents,
        )

    async def cancel(
        self, instance_id: str, *, pos_ref_id: str | None = None, timeout: float = 30.0
    ) -> bs.CommandAccepted:
        """Ask the terminal to cancel the running transaction (only ``pos_ref_id``'s if given).

        Returns the ``command_accepted`` event: the cancel was passed on. The
        transaction's own outcome (usually ``failed``) still comes to whoever
        waits for it; the terminal may refuse a cancel past the point of no
        return.
        """
        command = build(bs.Cancel, pos_ref_id=pos_ref_id)
        event = await self.send_and_wait(instance_id, command, timeout=timeout)
        return expect(event, bs.CommandAccepted)

    async def get_transaction(
        self, instance_id: str, pos_ref_id: str, *, timeout: float = 60.0
    ) -> bs.TransactionLookup:
        """Ask the terminal about one transaction (``found`` false when it does not know it)."""
        command = build(bs.GetTransaction, pos_ref_id=pos_ref_id)
        event = await self.send_and_wait(instance_id, command, timeout=timeout)
        return expect(event, bs.TransactionLookup)

    async def settle(
        self, instance_id: str, *, timeout: float = 120.0, on_event: EventCallback | None = None
    ) -> bs.Settlement:
        """Close the day with the acquirer; returns the ``settlement`` event."""
        command = build(bs.Settle)
        event = await self.send_and_wait(instance_id, command, timeout=timeout, on_event=on_event)
        return expect(event, bs.Settlement)

    async def settlement_enquiry(
        self, instance_id: str, *, timeout: float = 120.0, on_event: EventCallback | None = None
    ) -> bs.Settlement:
        """Settlement totals without closing the day (``enquiry`` is true)."""
        command = build(bs.SettlementEnquiry)
        event = await self.send_and_wait(instance_id, command, timeout=timeout, on_event=on_event)
        return expect(event, bs.Settlement)

    async def transaction_record(self, instance_id: str, pos_ref_id: str) -> TxRecord | None:
        """The lane's own record of one transaction (no terminal asked), or ``None``.

        What the lane wrote before it sent the request and when it learned
        the outcome (``record.outcome``: the ``transaction_completed`` body).
        """
        iid = lane_id(instance_id)
        with client_errors():
            return await self._txs.get(iid, pos_ref_id)

    async def transaction_records(
        self, instance_id: str, *, since: _dt.datetime | None = None, limit: int = 100
    ) -> list[TxRecord]:
        """The lane's newest transaction records (at most ``limit``), oldest first;
        ``since``: only those created at or after it."""
        iid = lane_id(instance_id)
        low = "-inf" if since is None else str(int(since.timestamp() * 1000))
        with redis_errors():
            refs: Any = await self._redis.zrange(
                self._keys.txs(iid), "+inf", low, desc=True, byscore=True, offset=0, num=limit
            )
        records = await asyncio.gather(*(self._txs.get(iid, as_text(r)) for r in refs))
        return [r for r in reversed(records) if r is not None]

    async def terminal_status(
        self, instance_id: str, *, timeout: float = 30.0
    ) -> bs.TerminalStatusReport:
        """The terminal's status and battery."""
        command = build(bs.TerminalStatus)
        event = await self.send_and_wait(instance_id, command, timeout=timeout)
        return expect(event, bs.TerminalStatusReport)

    async def pair(
        self,
        instance_id: str,
        *,
        confirm: ConfirmPolicy = False,
        timeout: float = 180.0,
        on_event: EventCallback | None = None,
    ) -> bs.Pairing:
        """Pair the lane with its terminal; returns the final ``pairing`` event (paired).

        When a ``pairing`` event shows the confirmation code and the lane
        waits for the POS: ``confirm=True`` sends ``pair_confirm`` with that
        code at once; a callable gets the code and decides (it may be async):
        true confirms, false sends ``pair_cancel``; ``False`` sends nothing
        and waits for the operator (``on_event`` shows the code). Every event
        of the pairing but the last goes to ``on_event``.

        A pairing given up is cancelled, never left running in the lane:
        when ``timeout`` passes, or the call is cancelled, ``pair_cancel``
        for this pairing is sent before the call ends (best effort, within
        a second); and the ``pair`` carries ``expires_at`` (``timeout`` and
        2 s from now), at which the lane cancels the pairing itself should
        the ``pair_cancel`` not reach it.

        Raises ``ClientError('pairing_failed')`` when pairing fails or is
        cancelled, :class:`CommandRejected` when the lane refuses ``pair``
        (already paired, ``busy``: another pairing runs) or the
        ``pair_confirm``, :class:`OutcomeTimeout` (its ``detail`` says
        whether ``pair_cancel`` was sent).
        """
        iid = lane_id(instance_id)
        deadline = asyncio.get_running_loop().time() + timeout
        expires_at = _dt.datetime.now(_dt.UTC) + _dt.timedelta(
            seconds=timeout + _PAIR_EXPIRY_MARGIN_S
        )
        command = build(bs.Pair, expires_at=expires_at)
        cancelled = CancelWatch()
        since = await self._events.last_id(iid)
        try:
            await self.send(iid, command)
            cancelled.check()
            paired = await follow_pairing(
                self._events, self.send, iid, command, since, deadline, confirm, on_event, cancelled
            )
        except asyncio.CancelledError:
            await give_up_pairing(self.send, iid, command)
            raise
        if paired is not None:
            return paired
        what = await give_up_pairing(self.send, iid, command)
        raise OutcomeTimeout(
            "timeout", f"pairing of lane {iid} did not finish within {timeout:g}s; {what}"
        )

    # ------------------------------------------------------------------
    # Pay at table (client/pay_at_table.py)
    # ------------------------------------------------------------------

    async def set_table_config(
        self,
        instance_id: str,
        *,
        enabled: bool | None = None,
        operator_id_enabled: bool | None = None,
        split_by_amount_enabled: bool | None = None,
        equal_split_enabled: bool | None = None,
        tipping_enabled: bool | None = None,
        summary_report_enabled: bool | None = None,
        table_retrieval_enabled: bool | None = None,
        pay_button_label: str | None = None,
        operator_id_label: str | None = None,
        table_id_label: str | None = None,
        operator_ids: Sequence[str] | None = None,
        answer_timeout_ms: int | None = None,
        timeout: float = 30.0,
    ) -> bs.CommandAccepted:
        """Change the lane's pay-at-table set-up (``set_table_config``); None = unchanged.

        The lane keeps it in its profile and tells the terminal at once when
        connected. Returns the ``command_accepted`` event, published once the
        profile holds the change. ``operator_ids`` empty lets any operator in.
        """
        options = {
            "enabled": enabled,
            "operator_id_enabled": operator_id_enabled,
            "split_by_amount_enabled": split_by_amount_enabled,
            "equal_split_enabled": equal_split_enabled,
            "tipping_enabled": tipping_enabled,
            "summary_report_enabled": summary_report_enabled,
            "table_retrieval_enabled": table_retrieval_enabled,
            "pay_button_label": pay_button_label,
            "operator_id_label": operator_id_label,
            "table_id_label": table_id_label,
            "operator_ids": None if operator_ids is None else tuple(operator_ids),
            "answer_timeout_ms": answer_timeout_ms,
        }
        command = build(SetTableConfig, **options)
        event = await self.send_and_wait(instance_id, command, timeout=timeout)
        return expect(event, bs.CommandAccepted)

    async def serve_pay_at_table(
        self,
        instance_id: str,
        handler: PayAtTableHandler,
        *,
        since: str = "$",
        replay_duplicates: bool = False,
        on_served: OnServed | None = None,
    ) -> None:
        """Answer the lane's pay-at-table requests with ``handler``; runs until cancelled.

        ``handler.get_bill``, ``get_open_tables`` and the optional
        ``on_payment`` and ``on_flow_ended`` (:class:`PayAtTableHandler`) are
        called for each request the lane publishes after the call starts
        (after the entry id ``since``, if given), one at a time, and their
        result is sent back as ``bill_details`` / ``open_tables``. A handler
        that raises is logged and the protocol's error is answered; serving
        goes on. A payment the lane marks ``duplicate`` goes to ``get_bill``
        (``replay_duplicates=True``: to ``on_payment`` as well), unless this
        server's ``on_payment`` booked nothing for it (raised, or a
        ``BillError``): then to ``on_payment`` again. ``on_served``
        is told of every request handled. A Redis outage is waited out
        (reading resumes after the last event handled); :class:`LaneNotFound`
        for an unknown lane.
        """
        await serve_pat(
            self,
            self._events,
            instance_id,
            handler,
            since=since,
            replay_duplicates=replay_duplicates,
            on_served=on_served,
        )

    # ------------------------------------------------------------------
    # Events
    # ------------------------------------------------------------------

    async def last_event_id(self, instance_id: str) -> str:
        """The newest entry id of the lane's events stream (``0-0`` when empty): a ``since``
        for :meth:`events` and :meth:`serve_pay_at_table` that misses nothing from now on."""
        return await self._events.last_id(lane_id(instance_id))

    async def events(
        self, instance_id: str, *, since: str = "$", follow: bool = True, count: int | None = None
    ) -> AsyncGenerator[tuple[str, bs.Event], None]:
        """The lane's events as ``(entry id, event)``, oldest first.

        ``since`` is an entry id to start after: ``"$"`` (default) for events
        newer than now, ``"0"`` for the start of the stream. With
        ``follow=False`` it stops at the end of the stream; ``count`` stops
        after that many events. Events of types this version does not know
        are skipped. :class:`LaneNotFound` for an unknown lane. ``aclose()``
        it (or leave the ``async for``) to stop following.
        """
        iid = lane_id(instance_id)
        with redis_errors():
            if not await self._redis.exists(self._keys.profile(iid)):
                raise not_found(iid)
        if count is not None and count <= 0:
            return
        cursor = await self._events.last_id(iid) if since == "$" else since
        seen = 0
        stream = (
            self._events.follow(iid, cursor, None) if follow else self._events.drain(iid, cursor)
        )
        async with aclosing(stream):
            async for entry_id, event in stream:
                yield entry_id, event
                seen += 1
                if count is not None and seen >= count:
                    return

    # ------------------------------------------------------------------
    # Hosts and ops
    # ------------------------------------------------------------------

    async def send_control(
        self, host_id: str, action: str, instance_id: str, *, requested_by: str | None = None
    ) -> None:
        """Tell one supervisor to ``restart``, ``stop`` or ``start`` a lane (its control stream).

        ``requested_by`` (default ``user@host`` of this process) goes in the
        message; the supervisor logs it. Writing control streams is an ops
        privilege: the ``multipair-ops`` Redis role has it, ``multipair-pos``
        does not.
        """
        if action not in CONTROL_ACTIONS:
            raise ClientError(
                bs.Reason.INVALID_VALUE,
                f"action must be one of {', '.join(sorted(CONTROL_ACTIONS))}, got {action!r}",
            )
        iid = lane_id(instance_id)
        try:
            key = self._keys.host_control(host_id)
        except ConfigurationError as exc:
            raise ClientError(bs.Reason.INVALID_VALUE, str(exc)) from None
        requester = default_requester() if requested_by is None else requested_by
        body = orjson.dumps({"action": action, "instance_id": iid, "requested_by": requester})
        with redis_errors():
            await self._redis.xadd(key, {"v": str(bs.SCHEMA_VERSION), "body": body})

    async def lane_owner(self, instance_id: str) -> str | None:
        """The host that holds the lane's lease, or None when no host runs it."""
        iid = lane_id(instance_id)
        with redis_errors():
            lease = parse_lease(await self._redis.get(self._keys.lease(iid)))
        return lease.host_id if lease is not None else None

    async def hosts(self) -> list[dict[str, Any]]:
        """The supervisors' heartbeats from ``mp:hosts``: ``{"host_id": ..., **info}``, by host."""
        with redis_errors():
            raw = await self._redis.hgetall(self._keys.hosts())
        out: list[dict[str, Any]] = []
        for host, value in sorted(text_map(raw).items()):
            try:
                info = orjson.loads(value)
            except orjson.JSONDecodeError:
                info = None
            entry: dict[str, Any] = {"host_id": host}
            entry.update(info if isinstance(info, dict) else {"raw": value})
            out.append(entry)
        return out
