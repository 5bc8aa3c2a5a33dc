"""Settle a fleet of lanes for one business day: the I/O around :mod:`multipair.jobs.settlement`.

:class:`FleetSettlement` picks the lanes (every enabled, paired lane, or a
filter), settles at most ``concurrency`` at once, and writes each lane's entry
to the day's report (:mod:`multipair.jobs.report`) before and after it sends.
What to do next is always :func:`~multipair.jobs.settlement.plan` of the
stored entry, so a run killed anywhere is finished by the next one without
settling a lane twice (the module docstring of ``settlement`` says how).

Per lane, with the lane's lock held (one run per lane at a time):

1. An entry ``sending`` (a run died after recording its attempt): read the
   attempt's answer from the lane's events; if there is none, send the same
   command id again (with the same ``expires_at``) and wait for the first
   answer to that command id, which is the one that counts.
2. Otherwise wait until the lane can take it: running, terminal connected,
   idle. A lane busy with a transaction is waited for (``busy_wait_s``,
   woken by its events); an offline lane is tried again ``retries`` times,
   ``retry_delay_s`` apart, then reported. Then record ``sending``, send
   ``settle`` (its ``expires_at`` bounds a wait in the lane's queue), and
   record the answer: the terminal's totals, and our own records of the
   period beside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog

from multipair import broker_schema as bs
from multipair import failpoints
from multipair.client import AsyncClient, LaneNotFound
from multipair.exceptions import CommandError
from multipair.jobs.report import ReportStore
from multipair.jobs.settlement import (
    RETRYABLE,
    Attempt,
    Done,
    LaneRecord,
    LaneState,
    OurTotals,
    Readiness,
    Resolve,
    Why,
    mismatch,
    move,
    our_totals,
    plan,
    readiness,
    settle_command_id,
    summarize,
    verdict,
)
from multipair.redis_conn import as_text, redis_errors, text_map
from multipair.store.profiles import LaneProfile
from multipair.store.transactions import TxRecord, TxStore

__all__ = [
    "FILTER_KEYS",
    "FleetOptions",
    "FleetSettlement",
    "LaneSelection",
    "Progress",
    "our_records",
]

log = structlog.get_logger("multipair.jobs")

LaneSelection = Sequence[str] | Mapping[str, Any] | None
"""Which lanes: None (every enabled, paired lane), instance ids, or a filter mapping."""

FILTER_KEYS: Final = frozenset({"ids", "tenant", "exclude_tenants", "host", "tag"})
"""Keys of a filter: ``ids`` (list), ``tenant`` (one or a list), ``exclude_tenants`` (list),
``host`` (the host running the lane), ``tag`` (in the profile's ``tags`` field, comma-separated)."""

Progress = Callable[[LaneProfile, LaneRecord | None, str], None]
"""Told of each lane's steps: the lane, its entry as it stands (None: none yet today), and a
few words (``settled``, ``offline``, ``busy: waiting ...``)."""

_FINAL: Final = ("settlement", "command_rejected")
_READ_COUNT: Final = 256
_WAKE_S: Final = 1.0
"""Longest single block on a busy lane's events: its state is read again at least this often."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetOptions:
    """How one run behaves; the defaults suit real terminals (a settlement takes seconds)."""

    concurrency: int = 20
    busy_wait_s: float = 180.0
    """How long a lane busy with a transaction is waited for; also the ``settle``'s expiry."""
    retries: int = 3
    """Tries after the first for an offline (or still busy) lane."""
    retry_delay_s: float = 5.0
    settle_timeout_s: float = 180.0
    """How long the answer to ``settle`` is waited for once sent."""
    lock_ttl_s: float = 10.0
    """The per-lane lock's lifetime; renewed every third of it while held."""
    retry_unknown: bool = False
    """Settle again a lane whose settlement ended ``unknown`` (check the terminal first)."""

    def __post_init__(self) -> None:
        if type(self.concurrency) is not int or not 1 <= self.concurrency <= 1000:
            raise CommandError(bs.Reason.INVALID_VALUE, "concurrency must be 1 to 1000")
        if type(self.retries) is not int or not 0 <= self.retries <= 100:
            raise CommandError(bs.Reason.INVALID_VALUE, "retries must be 0 to 100")
        for name in ("busy_wait_s", "retry_delay_s", "settle_timeout_s", "lock_ttl_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise CommandError(bs.Reason.INVALID_VALUE, f"{name} must be seconds >= 0")
        if self.lock_ttl_s < 0.5:
            raise CommandError(bs.Reason.INVALID_VALUE, "lock_ttl_s must be 0.5 s or more")


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


async def our_records(
    txs: TxStore,
    redis: Any,
    keys: bs.Keys,
    instance_id: str,
    start: _dt.datetime,
    end: _dt.datetime,
) -> list[TxRecord]:
    """The lane's transaction records created in (``start``, ``end``] (``mp:lane:{ID}:txs``)."""
    low, high = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    with redis_errors():
        refs: Any = await redis.zrangebyscore(keys.txs(instance_id), f"({low}", high)
    found = await asyncio.gather(*(txs.get(instance_id, as_text(ref)) for ref in refs))
    return [record for record in found if record is not None]


class FleetSettlement:
    """One run of the end-of-day settlement for ``day``, through ``client``."""

    def __init__(
        self,
        client: AsyncClient,
        day: str,
        *,
        options: FleetOptions | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.client = client
        self.day = day
        self.options = options or FleetOptions()
        self.keys = client.keys
        self.redis = client.redis
        self.store = ReportStore(self.redis, self.keys.prefix)
        self.txs = TxStore(self.redis, self.keys)
        self.token = uuid.uuid4().hex
        self._progress = progress
        self._held: set[str] = set()

    # ------------------------------------------------------------------ the run

    async def run(self, lanes: LaneSelection = None) -> dict[str, Any]:
        """Settle the selected lanes; the run's result (JSON-ready), also kept as the summary."""
        started = _now()
        clock = time.perf_counter()
        chosen, skipped = await self.select(lanes)
        log.info("fleet settlement started", day=self.day, lanes=len(chosen), run=self.token)
        results: list[tuple[LaneRecord, float]] = []
        gate = asyncio.Semaphore(self.options.concurrency)

        async def one(profile: LaneProfile) -> None:
            async with gate:
                began = time.perf_counter()
                record = await self.settle(profile)
                results.append((record, time.perf_counter() - began))

        async with asyncio.TaskGroup() as group:
            renewer = group.create_task(self._renew_locks())
            try:
                async with asyncio.TaskGroup() as lanes_group:
                    for profile in chosen:
                        lanes_group.create_task(one(profile))
            finally:
                renewer.cancel()
        order = {p.instance_id: n for n, p in enumerate(chosen)}
        results.sort(key=lambda item: order[item[0].instance_id])
        records = [record for record, _ in results]
        fleet = summarize((await self.store.lanes(self.day)).values())
        await self.store.put_summary(self.day, {**fleet, "updated_at": bs.format_time(_now())})
        finished = _now()
        log.info("fleet settlement finished", day=self.day, **_counts(records))
        return {
            "business_day": self.day,
            "report_key": self.store.key(self.day),
            "run": self.token,
            "started_at": bs.format_time(started),
            "finished_at": bs.format_time(finished),
            "wall_s": round(time.perf_counter() - clock, 3),
            "lanes": [{**r.to_json(), "elapsed_s": round(s, 3)} for r, s in results],
            "skipped": skipped,
            "totals": summarize(records),
            "fleet": fleet,
        }

    async def select(self, lanes: LaneSelection) -> tuple[list[LaneProfile], list[dict[str, str]]]:
        """The lanes to settle, oldest first, and those left out with the reason."""
        wanted = _parse_selection(lanes)
        profiles = await self.client.list_lanes()
        skipped: list[dict[str, str]] = []
        ids = wanted.get("ids")
        if ids is not None:
            known = {p.instance_id for p in profiles}
            skipped += [
                {"instance_id": iid, "reason": "unknown_lane"} for iid in ids if iid not in known
            ]
            profiles = [p for p in profiles if p.instance_id in ids]
        tenants = wanted.get("tenant")
        excluded = wanted.get("exclude_tenants") or ()
        candidates = []
        for profile in profiles:
            if tenants is not None and profile.tenant_code not in tenants:
                continue
            if profile.tenant_code is not None and profile.tenant_code in excluded:
                continue
            if not profile.enabled and ids is None:
                skipped.append({"instance_id": profile.instance_id, "reason": "disabled"})
                continue
            candidates.append(profile)
        states = await self._states([p.instance_id for p in candidates])
        host, tag = wanted.get("host"), wanted.get("tag")
        tags = await self._tags([p.instance_id for p in candidates]) if tag else {}
        chosen = []
        for profile in candidates:
            state = states[profile.instance_id]
            if host is not None and host not in (state.get("host"), state.get("lease_host")):
                continue
            if tag is not None and tag not in tags.get(profile.instance_id, ()):
                continue
            if state.get("status") == bs.Status.UNPAIRED:
                skipped.append({"instance_id": profile.instance_id, "reason": "not_paired"})
                continue
            chosen.append(profile)
        return chosen, skipped

    async def _states(self, ids: list[str]) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        with redis_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                for iid in ids:
                    pipe.hgetall(self.keys.state(iid))
                    pipe.get(self.keys.lease(iid))
                replies = await pipe.execute()
        for n, iid in enumerate(ids):
            state = text_map(replies[2 * n] or {})
            lease = replies[2 * n + 1]
            if lease is not None:
                # "<token>:<host_id>" (multipair.leases): the host that runs the lane.
                state["lease_host"] = as_text(lease).partition(":")[2]
            out[iid] = state
        return out

    async def _tags(self, ids: list[str]) -> dict[str, frozenset[str]]:
        with redis_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                for iid in ids:
                    pipe.hget(self.keys.profile(iid), "tags")
                replies = await pipe.execute()
        return {
            iid: frozenset(t.strip() for t in as_text(raw).split(",") if t.strip())
            for iid, raw in zip(ids, replies, strict=True)
            if raw is not None
        }

    # ------------------------------------------------------------------ one lane

    async def settle(self, profile: LaneProfile) -> LaneRecord:
        """Settle one lane for the day (or learn it was), under its lock; its entry."""
        iid = profile.instance_id
        with structlog.contextvars.bound_contextvars(instance_id=iid, business_day=self.day):
            if not await self._lock(iid):
                current = await self.store.get(self.day, iid)
                busy = LaneRecord(
                    instance_id=iid,
                    state=current.state if current is not None else LaneState.FAILED,
                    updated_at=bs.format_time(_now()),
                    attempt=current.attempt if current is not None else 0,
                    reason=Why.IN_PROGRESS,
                    detail="another run is settling this lane now (its lock is held)",
                    **_who(profile),
                )
                self._tell(profile, busy, Why.IN_PROGRESS.value)
                return busy
            try:
                return await self._settle_locked(profile)
            finally:
                self._held.discard(iid)
                with contextlib.suppress(Exception):  # it expires by itself anyway
                    await self.store.release(self.day, iid, self.token)

    async def _settle_locked(self, profile: LaneProfile) -> LaneRecord:
        iid = profile.instance_id
        record = await self.store.get(self.day, iid)
        failed_here = False  # the stored failure is this run's own (not an earlier run's)
        tries = 0
        while True:
            step = plan(record, retry_unknown=self.options.retry_unknown and not failed_here)
            if isinstance(step, Done):
                self._tell(profile, step.record, _final_note(step.record))
                return step.record
            if isinstance(step, Resolve):
                record = await self._resolve(profile, step.record)
                if record.state is LaneState.SENDING:
                    return record  # no answer yet: the next run reads it
                failed_here = False  # an earlier run's attempt: this run may try afresh
                continue
            assert isinstance(step, Attempt)
            if failed_here and record is not None:
                if record.reason not in RETRYABLE or tries >= self.options.retries:
                    self._tell(profile, record, _final_note(record))
                    return record
                tries += 1
                self._tell(
                    profile, record, f"{_final_note(record)}: retry {tries}/{self.options.retries}"
                )
                await asyncio.sleep(self.options.retry_delay_s)  # backoff, not a condition
            ready, detail = await self._wait_ready(profile, record)
            if ready is not Readiness.READY:
                why = {
                    Readiness.BUSY: Why.BUSY,
                    Readiness.NOT_PAIRED: Why.NOT_PAIRED,
                }.get(ready, Why.OFFLINE)
                if record is not None and record.state is LaneState.UNKNOWN:
                    # Asked to settle an unknown lane again, and it cannot take it now:
                    # nothing was sent, its entry stays what it was.
                    self._tell(profile, record, f"{why.value}: {detail}; still unknown")
                    return record
                record = await self._put(
                    record,
                    self._entry(
                        profile,
                        record,
                        state=LaneState.FAILED,
                        attempt=record.attempt if record is not None else 0,
                        reason=why,
                        detail=detail,
                    ),
                )
                failed_here = True
                continue
            record = await self._send(profile, record, step.number)
            if record.state is LaneState.SENDING:
                return record
            failed_here = True

    async def _wait_ready(
        self, profile: LaneProfile, record: LaneRecord | None
    ) -> tuple[Readiness, str]:
        """The lane's readiness; a busy lane is waited for, up to ``busy_wait_s``."""
        iid = profile.instance_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.busy_wait_s
        told = False
        while True:
            cursor = await self._last_event_id(iid)
            with redis_errors():
                state = text_map(await self.redis.hgetall(self.keys.state(iid)))
            ready, detail = readiness(state, _now())
            remaining = deadline - loop.time()
            if ready is not Readiness.BUSY or remaining <= 0:
                return ready, detail
            if not told:
                told = True
                self._tell(profile, record, "busy: waiting for the lane's transaction to end")
            # Woken by the lane's next event (its status_changed when the flow ends).
            with redis_errors():
                await self.redis.xread(
                    {self.keys.events(iid): cursor},
                    count=1,
                    block=max(1, int(min(_WAKE_S, remaining) * 1000)),
                )

    async def _send(
        self, profile: LaneProfile, record: LaneRecord | None, attempt: int
    ) -> LaneRecord:
        iid = profile.instance_id
        command_id = settle_command_id(self.day, iid, attempt)
        now = _now()
        expires_at = now + _dt.timedelta(seconds=max(self.options.busy_wait_s, 1.0))
        cursor = await self._last_event_id(iid)
        sending = self._entry(
            profile,
            record,
            state=LaneState.SENDING,
            attempt=attempt,
            command_id=command_id,
            cursor=cursor,
            sent_at=bs.format_time(now),
            expires_at=bs.format_time(expires_at),
        )
        # Recorded before it is sent: a run killed from here on resends this very attempt.
        record = await self._put(record, sending)
        self._tell(profile, record, f"sending attempt {attempt}")
        failpoints.hit("jobs.settle_before_send")
        try:
            await self.client.send(iid, bs.Settle(command_id=command_id, expires_at=expires_at))
        except LaneNotFound as exc:
            return await self._put(
                record,
                self._entry(
                    profile, record, state=LaneState.FAILED, reason=Why.REJECTED, detail=str(exc)
                ),
            )
        failpoints.hit("jobs.settle_after_send")
        answer = await self._first_answer(iid, command_id, cursor, self.options.settle_timeout_s)
        return await self._record_answer(profile, record, answer)

    async def _resolve(self, profile: LaneProfile, record: LaneRecord) -> LaneRecord:
        """Learn the answer to an attempt an earlier run recorded as ``sending``."""
        iid = profile.instance_id
        assert record.command_id is not None
        command_id = record.command_id
        expires_at = None if record.expires_at is None else bs.parse_time(record.expires_at)
        self._tell(profile, record, f"resolving attempt {record.attempt}")

        async def send_again() -> None:
            # The same command id and expiry: if the first reached the lane, this one is
            # refused after it (duplicate_command_id, or expired as it was); if not, this
            # one is the attempt. The first answer to the command id is the one that counts.
            await self.client.send(iid, bs.Settle(command_id=command_id, expires_at=expires_at))

        try:
            answer = await self._first_answer(
                iid,
                command_id,
                record.cursor or "0-0",
                self.options.settle_timeout_s,
                send_again=send_again,
            )
        except LaneNotFound as exc:
            return await self._put(
                record,
                self._entry(
                    profile, record, state=LaneState.FAILED, reason=Why.REJECTED, detail=str(exc)
                ),
            )
        return await self._record_answer(profile, record, answer)

    async def _first_answer(
        self,
        iid: str,
        command_id: str,
        cursor: str,
        wait_s: float,
        *,
        send_again: Callable[[], Awaitable[None]] | None = None,
    ) -> bs.Event | None:
        """The first ``settlement`` or ``command_rejected`` of ``command_id`` after ``cursor``.

        With ``send_again``: the stream is read to its end first, and only if
        the answer is not there is the command sent again before waiting.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        stream = self.keys.events(iid)
        waiting = send_again is None
        while True:
            block: int | None = None
            if waiting:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                block = max(1, int(min(2.0, remaining) * 1000))
            with redis_errors():
                reply: Any = await self.redis.xread(
                    {stream: cursor}, count=_READ_COUNT, block=block
                )
            entries = [entry for _, batch in reply or () for entry in batch]
            for entry_id, fields in entries:
                cursor = as_text(entry_id)
                try:
                    event = bs.decode_event(fields)
                except CommandError:
                    continue
                if event.command_id == command_id and event.type in _FINAL:
                    return event
            if not entries and not waiting:
                assert send_again is not None
                await send_again()
                waiting = True

    async def _record_answer(
        self, profile: LaneProfile, record: LaneRecord, answer: bs.Event | None
    ) -> LaneRecord:
        if answer is None:
            entry = self._entry(
                profile,
                record,
                state=LaneState.SENDING,
                reason=Why.NO_ANSWER,
                detail=(
                    f"no answer within {self.options.settle_timeout_s:g} s; the lane may still "
                    "run it: run the settlement again to read its answer"
                ),
            )
            record = await self._put(record, entry)
            self._tell(profile, record, "no answer yet")
            return record
        found = verdict(answer)
        terminal = found.terminal
        ours: OurTotals | None = None
        flagged: bool | None = None
        if found.state is LaneState.SETTLED and terminal is not None:
            end = answer.at
            start = await self.store.period_start(profile.instance_id, self.day)
            mine = await our_records(
                self.txs, self.redis, self.keys, profile.instance_id, start, end
            )
            ours = our_totals(mine, window_start=start, window_end=end)
            flagged = mismatch(terminal, ours)
        entry = self._entry(
            profile,
            record,
            state=found.state,
            reason=found.reason,
            detail=found.detail,
            terminal=terminal,
            ours=ours,
            mismatch=flagged,
        )
        record = await self._put(record, entry)
        if found.state is LaneState.SETTLED:
            await self.store.set_last(profile.instance_id, self.day, bs.format_time(answer.at))
            if flagged:
                log.warning(
                    "terminal totals differ from our records",
                    terminal_count=terminal.count if terminal else None,
                    terminal_value_cents=terminal.value_cents if terminal else None,
                    our_count=ours.count if ours else None,
                    our_value_cents=ours.value_cents if ours else None,
                )
        return record

    # ------------------------------------------------------------------ helpers

    def _entry(
        self,
        profile: LaneProfile,
        record: LaneRecord | None,
        *,
        state: LaneState,
        **changes: Any,
    ) -> LaneRecord:
        """A new entry: ``record``'s attempt fields kept unless changed, the rest fresh."""
        kept: dict[str, Any] = {}
        if record is not None:
            kept = {
                "attempt": record.attempt,
                "command_id": record.command_id,
                "cursor": record.cursor,
                "sent_at": record.sent_at,
                "expires_at": record.expires_at,
            }
        kept.update(changes)
        return LaneRecord(
            instance_id=profile.instance_id,
            state=state,
            updated_at=bs.format_time(_now()),
            **_who(profile),
            **kept,
        )

    async def _put(self, before: LaneRecord | None, after: LaneRecord) -> LaneRecord:
        record = move(before, after)
        await self.store.put(self.day, record)
        return record

    async def _last_event_id(self, iid: str) -> str:
        with redis_errors():
            newest: Any = await self.redis.xrevrange(self.keys.events(iid), count=1)
        return as_text(newest[0][0]) if newest else "0-0"

    async def _lock(self, iid: str) -> bool:
        """Take the lane's lock; a lock left by a dead run is waited out (it expires)."""
        ttl_ms = int(self.options.lock_ttl_s * 1000)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.lock_ttl_s * 1.5
        told = False
        while True:
            if await self.store.acquire(self.day, iid, self.token, ttl_ms):
                self._held.add(iid)
                return True
            if loop.time() >= deadline:
                return False
            if not told:
                told = True
                log.info("lane lock held by another run; waiting for it", lock_ttl_s=ttl_ms / 1000)
            await asyncio.sleep(0.2)  # a plain key with a TTL: nothing to block on

    async def _renew_locks(self) -> None:
        ttl_ms = int(self.options.lock_ttl_s * 1000)
        while True:
            await asyncio.sleep(self.options.lock_ttl_s / 3)
            held = list(self._held)
            if held:
                await self.store.renew(self.day, held, self.token, ttl_ms)

    def _tell(self, profile: LaneProfile, record: LaneRecord | None, note: str) -> None:
        log.info(
            "lane settlement",
            state=None if record is None else record.state.value,
            attempt=None if record is None else record.attempt,
            note=note,
        )
        if self._progress is not None:
            self._progress(profile, record, note)


def _final_note(record: LaneRecord) -> str:
    """``settled``, or why not (``offline``, ``settlement_unknown`` ...)."""
    if record.state is LaneState.SETTLED or record.reason is None:
        return record.state.value
    return record.reason.value


def _who(profile: LaneProfile) -> dict[str, Any]:
    return {
        "pos_id": profile.pos_id,
        "serial_number": profile.serial_number,
        "tenant_code": profile.tenant_code,
    }


def _counts(records: Sequence[LaneRecord]) -> dict[str, int]:
    out: dict[str, int] = {}
    for record in records:
        out[record.state.value] = out.get(record.state.value, 0) + 1
    return out


def _parse_selection(lanes: LaneSelection) -> dict[str, Any]:
    """A selection as a filter mapping, checked (CommandError names what is wrong)."""
    if lanes is None:
        return {}
    if isinstance(lanes, str):
        raise CommandError(
            bs.Reason.WRONG_TYPE, "lanes must be a list of instance ids or a filter, not a string"
        )
    if not isinstance(lanes, Mapping):
        lanes = {"ids": list(lanes)}
    unknown = sorted(set(lanes) - FILTER_KEYS)
    if unknown:
        raise CommandError(
            bs.Reason.UNKNOWN_FIELD,
            f"a lane filter has {', '.join(sorted(FILTER_KEYS))}; not {unknown[0]!r}",
        )
    out: dict[str, Any] = {}
    if lanes.get("ids") is not None:
        out["ids"] = [bs.validate_instance_id(i) for i in lanes["ids"]]
    for name in ("tenant", "exclude_tenants"):
        value = lanes.get(name)
        if value is None:
            continue
        values = [value] if isinstance(value, str) else list(value)
        if not all(isinstance(v, str) for v in values):
            raise CommandError(bs.Reason.WRONG_TYPE, f"{name} must be text or a list of text")
        out[name] = frozenset(values)
    for name in ("host", "tag"):
        value = lanes.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise CommandError(bs.Reason.WRONG_TYPE, f"{name} must be text")
        out[name] = value
    return out
