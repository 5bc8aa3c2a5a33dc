"""A POS backend over raw Redis that rides out a failover, and the checks of issue 19.

:class:`Pos` drives purchases on every lane at once, one customer at a time
per lane, through plain ``XADD`` / ``XREAD`` (no client library): each
purchase has its own ``command_id`` and ``pos_ref_id``. Like a real backend
it retries a Redis call that fails (the primary is gone), sends the same
command again (same ``command_id``) when it is refused as retryable or left
unanswered too long (an ``XADD`` the old primary took and never replicated
is lost with it), and keys outcomes by ``command_id``.

:func:`verdict` then checks what issue 19 asks, against the final event
streams (read from the primary that stands) and the terminal's own truth
(the simulator's request counts and its ``transaction_finished`` log lines):

- every purchase has exactly one ``transaction_completed`` on the final
  stream (``lost`` / ``completed_twice``);
- every outcome seen live is the same one (``live_duplicates`` counts an
  outcome published again on a new primary after the old one lost it; they
  are allowed when identical, ``live_conflicts`` when not: never);
- the terminal saw each ``pos_ref_id`` at most once (``double_sent``);
- the outcome is the terminal's (``mismatched``).

Used by tests/ha and bench/chaos_ha.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from multipair import broker_schema as bs
from multipair.exceptions import RetryLater
from multipair.simulator import Simulator
from tests.poll import poll_until

__all__ = [
    "UNCLOSED_TO_A_DEAD_PRIMARY",
    "Pos",
    "Purchase",
    "Verdict",
    "final_events",
    "terminal_truth",
    "verdict",
]

Body = dict[str, Any]

UNCLOSED_TO_A_DEAD_PRIMARY = [
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in.*AbstractConnection.__del__"
        ":pytest.PytestUnraisableExceptionWarning"
    ),
    pytest.mark.filterwarnings("ignore:unclosed Connection:ResourceWarning"),
    pytest.mark.filterwarnings("ignore:unclosed <StreamWriter:ResourceWarning"),
]
"""redis-py drops a pooled connection to a primary that was killed without closing it; its
``__del__`` (or its stream writer's) then warns (``ResourceWarning: unclosed ...``) whenever
the collector runs. Only those warnings are let through, in the tests that kill primaries
on purpose."""

RESEND_REASONS = frozenset({"redis_unavailable", "terminal_unavailable"})
"""Refusals after which the same command may be sent again (nothing happened)."""
RESEND_AFTER_S = 15.0
"""No final answer this long after a send: send the same command again."""
CALL_TIMEOUT_S = 5.0
"""One Redis call of the driver at most; then it is tried again."""

RUNNING: list[Pos] = []
"""Drivers started by the current test: tests/ha/conftest.py stops any a failing test left."""
FINAL = frozenset({"transaction_completed", "command_rejected"})


@dataclass
class Purchase:
    """One purchase as the POS knows it."""

    lane: int
    command_id: str
    pos_ref_id: str
    cents: int
    sent_at: float
    sends: int = 0
    answered_at: float | None = None
    completed: list[Body] = field(default_factory=list)
    """Every ``transaction_completed`` read live for it (a failover may publish it again)."""
    rejections: list[str] = field(default_factory=list)


class Pos:
    """Purchases on ``instance_ids`` (one at a time per lane) until :meth:`stop`."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: bs.Keys,
        instance_ids: list[str],
        *,
        amount: Callable[[int, int], int],
        tag: str = "ha",
        pace_s: float = 0.05,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.instance_ids = instance_ids
        self.amount = amount
        """(lane, n) -> cents of the lane's n-th purchase."""
        self.tag = tag
        self.pace_s = pace_s
        self.purchases: dict[str, Purchase] = {}
        self.by_lane: list[list[Purchase]] = [[] for _ in instance_ids]
        self.sent = asyncio.Event()
        """Set after every ``XADD`` of a purchase (cleared by whoever waits on it)."""
        self.redis_errors = 0
        self.resends: Counter[str] = Counter()
        self._answered: dict[str, asyncio.Event] = {}
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        """Set by :meth:`stop`: every loop ends at its next turn, even one whose
        cancellation an ``asyncio.timeout`` expiring at the same moment swallowed."""

    # -- running ---------------------------------------------------------------------

    def start(self) -> None:
        RUNNING.append(self)
        for lane, iid in enumerate(self.instance_ids):
            self._tasks.append(asyncio.create_task(self._read(lane, iid)))
            self._tasks.append(asyncio.create_task(self._shop(lane, iid)))

    async def stop(self, drain_s: float = 60.0) -> None:
        """No new purchase; wait (bounded) for every answer; stop the readers."""
        self._stopping.set()

        def all_answered() -> bool:
            return all(p.answered_at is not None for p in self.purchases.values())

        with contextlib.suppress(AssertionError):  # reported as lost by the verdict
            await poll_until(all_answered, "every purchase answered", drain_s)
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A Redis call retried until it succeeds (the primary may be failing over)."""
        while not self._closed:
            try:
                # A call stuck on a connection to a dead node is tried again
                # (on loopback a kill is usually refused at once, not always).
                async with asyncio.timeout(CALL_TIMEOUT_S):
                    return await fn(*args, **kwargs)
            except (RedisError, OSError, RetryLater, TimeoutError):
                self.redis_errors += 1
                await asyncio.sleep(0.1)
        raise asyncio.CancelledError

    async def _xadd(self, lane: int, iid: str, purchase: Purchase) -> None:
        body = {
            "type": "purchase",
            "command_id": purchase.command_id,
            "pos_ref_id": purchase.pos_ref_id,
            "amount_cents": purchase.cents,
        }
        entry = {"v": "1", "body": orjson.dumps(body)}
        await self._call(self.redis.xadd, self.keys.commands(iid), entry)
        purchase.sends += 1
        self.sent.set()

    async def _shop(self, lane: int, iid: str) -> None:
        n = 0
        while not self._stopping.is_set() and not self._closed:
            n += 1
            ref = f"{self.tag}-{lane}-{n}"
            purchase = Purchase(lane, f"c-{ref}", ref, self.amount(lane, n), time.monotonic())
            self.purchases[purchase.command_id] = purchase
            self.by_lane[lane].append(purchase)
            answered = self._answered[purchase.command_id] = asyncio.Event()
            while not answered.is_set() and not self._closed:
                await self._xadd(lane, iid, purchase)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RESEND_AFTER_S):
                        await answered.wait()
                if not answered.is_set():
                    self.resends["unanswered"] += 1
                elif not purchase.completed and purchase.rejections[-1] in RESEND_REASONS:
                    self.resends[purchase.rejections[-1]] += 1
                    purchase.answered_at = None
                    answered.clear()
                    await asyncio.sleep(0.2)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.pace_s):
                    await self._stopping.wait()

    async def _read(self, lane: int, iid: str) -> None:
        stream = self.keys.events(iid)
        last = "0"
        while not self._closed:
            try:
                async with asyncio.timeout(CALL_TIMEOUT_S):
                    reply: Any = await self.redis.xread({stream: last}, count=200, block=500)
            except (RedisError, OSError, RetryLater, TimeoutError):
                self.redis_errors += 1
                await asyncio.sleep(0.1)
                continue
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    self._on_event(orjson.loads(fields[b"body"]))

    def _on_event(self, body: Body) -> None:
        purchase = self.purchases.get(str(body.get("command_id")))
        if purchase is None or body.get("type") not in FINAL:
            return
        if body["type"] == "transaction_completed":
            purchase.completed.append(body)
        else:
            purchase.rejections.append(str(body.get("reason")))
        if purchase.answered_at is None:
            purchase.answered_at = time.monotonic()
            self._answered[purchase.command_id].set()

    # -- figures ---------------------------------------------------------------------

    def answered_again(self, lane: int, since: float) -> float | None:
        """Seconds from ``since`` until the lane completed a purchase first sent after it."""
        for purchase in self.by_lane[lane]:
            if purchase.sent_at >= since and purchase.completed and purchase.answered_at:
                return purchase.answered_at - since
        return None

    async def wait_answered_again(self, since: float, timeout: float) -> list[float]:
        """Until every lane completed a purchase sent after ``since``; the times (see above)."""
        times: list[float | None] = []

        def all_answered() -> list[float] | None:
            times[:] = [self.answered_again(lane, since) for lane in range(len(self.by_lane))]
            if all(t is not None for t in times):
                return [round(t, 3) for t in times if t is not None]
            return None

        return await poll_until(
            all_answered,
            lambda: (
                "every lane answering after the promotion; not answering: "
                f"{[i for i, t in enumerate(times) if t is None]}"
            ),
            timeout,
        )


async def final_events(
    redis: aioredis.Redis, keys: bs.Keys, instance_ids: Iterable[str]
) -> list[Body]:
    """Every event of the lanes as the primary that stands has them (retried while away)."""
    ids = list(instance_ids)
    unreadable: list[str] = []

    async def read_all() -> list[Body] | None:
        bodies: list[Body] = []
        for iid in ids:
            try:
                raw: Any = await redis.xrange(keys.events(iid))
            except (RedisError, OSError, RetryLater) as exc:
                unreadable[:] = [f"events of {iid} unreadable: {exc!r}"]
                return None
            bodies.extend(orjson.loads(fields[b"body"]) for _, fields in raw)
        return bodies

    return await poll_until(
        read_all, lambda: "; ".join(unreadable) or "the events", 60, interval=0.2
    )


def terminal_truth(logs: Iterable[MutableMapping[str, Any]]) -> dict[str, bool]:
    """pos_ref_id -> approved, from the simulator's captured ``transaction_finished`` lines."""
    truth: dict[str, bool] = {}
    for entry in logs:
        if entry.get("event") == "transaction_finished":
            record = entry.get("record")
            ref = entry.get("pos_ref_id") or getattr(record, "pos_ref_id", None)
            success = entry.get("success", getattr(record, "success", None))
            if ref:
                truth[str(ref)] = bool(success)
    return truth


@dataclass
class Verdict:
    """What the checks found; :attr:`held` when no money promise broke."""

    purchases: int
    results: dict[str, int]
    lost: list[str]
    completed_twice: list[str]
    live_duplicates: int
    live_conflicts: list[str]
    double_sent: dict[str, int]
    mismatched: list[str]
    rejections: dict[str, int]
    resends: dict[str, int]

    @property
    def held(self) -> bool:
        return not (
            self.lost
            or self.completed_twice
            or self.live_conflicts
            or self.double_sent
            or self.mismatched
        )

    def assert_money_held(self, *, at_least: int) -> None:
        """The money checks every failover test makes: nothing lost, completed twice,
        answered differently live, sent twice or unlike the terminal's outcome; and
        enough purchases ran for that to mean something."""
        assert ([], [], [], {}, []) == (
            self.lost,
            self.completed_twice,
            self.live_conflicts,
            self.double_sent,
            self.mismatched,
        )
        assert self.purchases >= at_least

    def as_json(self) -> dict[str, Any]:
        return {
            "purchases": self.purchases,
            "results": self.results,
            "lost": self.lost,
            "completed_twice": self.completed_twice,
            "live_duplicates_identical": self.live_duplicates,
            "live_conflicts": self.live_conflicts,
            "double_sent": self.double_sent,
            "mismatched": self.mismatched,
            "rejections_then_resent": self.rejections,
            "resends": self.resends,
            "held": self.held,
        }


def _outcome(body: Body) -> tuple[Any, ...]:
    return tuple(body.get(k) for k in ("command_id", "pos_ref_id", "result", "amount_cents"))


def verdict(pos: Pos, events: list[Body], sim: Simulator, truth: dict[str, bool]) -> Verdict:
    """The checks of the module docstring over ``pos``'s purchases."""
    completed: dict[str, list[Body]] = {}
    for body in events:
        if body.get("type") == "transaction_completed":
            completed.setdefault(str(body.get("command_id")), []).append(body)
    requests: Counter[str] = Counter()
    for terminal in sim.terminals:
        requests.update(terminal.stats.purchase_requests)
    purchases = list(pos.purchases.values())
    lost, twice, conflicts, mismatched = [], [], [], []
    live_duplicates = 0
    results: Counter[str] = Counter()
    for p in purchases:
        final = completed.get(p.command_id, [])
        if len(final) == 0:
            lost.append(p.pos_ref_id)
            continue
        if len(final) > 1:
            twice.append(p.pos_ref_id)
        if len({_outcome(b) for b in [*final, *p.completed]}) > 1:
            conflicts.append(p.pos_ref_id)
        live_duplicates += max(0, len(p.completed) - 1)
        result = str(final[0].get("result"))
        results[result] += 1
        if result != "unknown" and (result == "success") != truth.get(p.pos_ref_id, False):
            mismatched.append(p.pos_ref_id)
    return Verdict(
        purchases=len(purchases),
        results=dict(results),
        lost=lost,
        completed_twice=twice,
        live_duplicates=live_duplicates,
        live_conflicts=conflicts,
        double_sent={ref: n for ref, n in requests.items() if n > 1},
        mismatched=mismatched,
        rejections=dict(Counter(r for p in purchases for r in p.rejections)),
        resends=dict(pos.resends),
    )
