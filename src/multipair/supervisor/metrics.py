"""A supervisor's Prometheus metrics (issue 15): ``--metrics-port``, ``GET /metrics``.

What the host knows itself (lanes by status, restarts and why, its own
Redis errors, lease renewal times, the lanes' resident memory) it sets on
``prometheus_client`` metrics as it happens. What the lanes did (outcomes,
refusals, dropped frames, outcome times) they count in their state hashes,
in the same fenced writes as the outcomes (:mod:`multipair.broker_schema.counters`);
the host reads those totals on each tick and adds what grew since its last
look (:class:`CounterDeltas`, pure). No lane runs a server.

Rules this module keeps:

- Every series carries ``host``; none carries a lane's instance id unless
  ``per_lane`` is asked for (``--metrics-per-lane``), so a host's series
  are bounded by the vocabularies (statuses, reasons, command types,
  results), not by its lanes.
- A lane's totals live with the lane, which moves between hosts: a host
  counts only what grew while it held the lane. It notes the totals before
  it first starts a lane (:meth:`HostMetrics.baseline`) and forgets them
  when the lane leaves it; a total that went down (the lane's keys were
  deleted and made again) counts from zero, as Prometheus does a reset.
- The exposition format is ``prometheus_client``'s (``generate_latest``);
  nothing here writes it by hand.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from multipair import broker_schema as bs
from multipair.broker_schema.counters import (
    OUTCOME_TYPES,
    TX_BUCKETS_S,
    Counted,
    CounterKind,
    parse_counter,
)
from multipair.logs import get_logger

__all__ = [
    "DEFAULT_METRICS_BIND",
    "LANE_STATUSES",
    "CounterDeltas",
    "HostMetrics",
    "LaneStatus",
    "MetricsConfig",
    "MetricsServer",
    "RestartReason",
    "counter_totals",
    "lane_status",
]

log = get_logger("multipair.supervisor")

DEFAULT_METRICS_BIND: Final = "127.0.0.1"
"""Where ``/metrics`` listens unless told (``--metrics-bind``): loopback, like every default."""

_LEASE_RENEWAL_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
"""A renewal is one pipelined round trip; past ``renew_every_s`` (1.5 s) it counts as failed."""


class LaneStatus(StrEnum):
    """The ``status`` label of ``multipair_lanes``: a lane this host holds is in one of these."""

    UNPAIRED = "unpaired"
    PAIRED_CONNECTING = "paired_connecting"
    PAIRED_CONNECTED = "paired_connected"
    CRASH_LOOP = "crash_loop"
    """Exited too often: retried slowly (the supervisor's ``crash_loop``), running or not."""
    STOPPED = "stopped"
    """Held by this host with no process now: between an exit and its restart or release."""
    STARTING = "starting"
    """A process runs but the state hash names no status yet."""


LANE_STATUSES: Final = tuple(LaneStatus)
_STATUS_VALUES: Final = frozenset(str(s) for s in bs.Status)
"""What a lane writes in its state hash's ``status``."""


class RestartReason(StrEnum):
    """The ``reason`` label of ``multipair_lane_restarts_total``: why a lane process ended."""

    CRASH = "crash"
    """Exited unasked, or hung (heartbeat timeout)."""
    MEMORY = "memory"
    """Over ``MULTIPAIR_LANE_MEMORY_MAX``."""
    LEASE_LOST = "lease_lost"
    """Its lease moved on, or could not be renewed in time."""
    REDIS_OUTAGE = "redis_outage"
    """Redis was away past the ride-out bound: stopped so another host may take it."""
    OPS = "ops"
    """An operator asked (``lane restart``, the console)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsConfig:
    """``--metrics-port`` (0: any free port), ``--metrics-bind``, ``--metrics-per-lane``."""

    port: int
    bind: str = DEFAULT_METRICS_BIND
    per_lane: bool = False


def counter_totals(state: Mapping[str, str]) -> dict[str, int]:
    """The counter fields of a lane's state hash (text map), as numbers; others left out."""
    totals: dict[str, int] = {}
    for name, value in state.items():
        if parse_counter(name) is None:
            continue
        try:
            totals[name] = int(value)
        except ValueError:
            continue
    return totals


@dataclass(slots=True)
class CounterDeltas:
    """Running totals in, increments out: what grew since the last look at each lane (pure)."""

    _last: dict[str, dict[str, int]] = field(default_factory=dict)

    def known(self, instance_id: str) -> bool:
        return instance_id in self._last

    def baseline(self, instance_id: str, totals: Mapping[str, int]) -> None:
        """The lane's totals before this host runs it: none of that is counted here."""
        self._last[instance_id] = dict(totals)

    def update(self, instance_id: str, totals: Mapping[str, int]) -> dict[str, int]:
        """What grew since the last look; a lane never seen before gives nothing (a baseline)."""
        last = self._last.get(instance_id)
        self._last[instance_id] = dict(totals)
        if last is None:
            return {}
        grown: dict[str, int] = {}
        for name, value in totals.items():
            before = last.get(name, 0)
            if value > before:
                grown[name] = value - before
            elif value < before:  # reset: the lane's keys were made again
                grown[name] = value
        return grown

    def keep_only(self, instance_ids: Collection[str]) -> None:
        """Forget lanes that left this host."""
        for iid in [i for i in self._last if i not in instance_ids]:
            del self._last[iid]


@dataclass(slots=True)
class _TxTimes:
    """Outcome times of one command type: per-bucket counts (not cumulative) and their sum."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(TX_BUCKETS_S) + 1))
    micros: int = 0

    def family_buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*TX_BUCKETS_S, float("inf")), self.buckets, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), float(running)))
        return out


@dataclass(slots=True)
class _Lane:
    """One lane's figures for the per-lane series (``--metrics-per-lane``)."""

    status: LaneStatus = LaneStatus.STARTING
    resident_bytes: int | None = None
    transactions: dict[tuple[str, str], int] = field(default_factory=dict)


class _LaneCollector(Collector):
    """The series built from the lanes' own totals, at scrape time."""

    def __init__(self, metrics: HostMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        m = self._metrics
        times = HistogramMetricFamily(
            "multipair_transaction_seconds",
            "Time from a lane reading a money or settlement command to writing its outcome.",
            labels=["host", "type"],
        )
        for tx_type, figures in sorted(m.tx_times.items()):
            times.add_metric(
                [m.host_id, tx_type], figures.family_buckets(), figures.micros / 1_000_000
            )
        yield times
        if not m.per_lane:
            return
        status = GaugeMetricFamily(
            "multipair_lane_status",
            "1 for each lane this host holds, labelled with its status (--metrics-per-lane).",
            labels=["host", "instance_id", "status"],
        )
        memory = GaugeMetricFamily(
            "multipair_lane_resident_bytes",
            "Resident set size of each lane process (--metrics-per-lane).",
            labels=["host", "instance_id"],
        )
        txs = CounterMetricFamily(
            "multipair_lane_transactions",
            "Outcomes each lane recorded while this host held it (--metrics-per-lane).",
            labels=["host", "instance_id", "type", "result"],
        )
        for iid, lane in sorted(m.lanes.items()):
            status.add_metric([m.host_id, iid, str(lane.status)], 1)
            if lane.resident_bytes is not None:
                memory.add_metric([m.host_id, iid], lane.resident_bytes)
            for (tx_type, result), count in sorted(lane.transactions.items()):
                txs.add_metric([m.host_id, iid, tx_type, result], count)
        yield status
        yield memory
        yield txs


class HostMetrics:
    """Every series one supervisor exposes, in a registry of its own."""

    def __init__(self, host_id: str, *, per_lane: bool = False) -> None:
        self.host_id = host_id
        self.per_lane = per_lane
        self.registry = CollectorRegistry()
        self.deltas = CounterDeltas()
        self.tx_times: dict[str, _TxTimes] = defaultdict(_TxTimes)
        self.lanes: dict[str, _Lane] = {}
        registry = self.registry
        self._lanes = Gauge(
            "multipair_lanes",
            "Lanes this host holds, by status.",
            ["host", "status"],
            registry=registry,
        )
        self._restarts = Counter(
            "multipair_lane_restarts",
            "Lane processes that ended and are started again (here or on another host), by why.",
            ["host", "reason"],
            registry=registry,
        )
        self._transactions = Counter(
            "multipair_transactions",
            "Outcomes the lanes of this host recorded, by command type and result.",
            ["host", "type", "result"],
            registry=registry,
        )
        self._rejections = Counter(
            "multipair_command_rejections",
            "Commands the lanes of this host refused (command_rejected), by reason.",
            ["host", "reason"],
            registry=registry,
        )
        self._frames = Counter(
            "multipair_link_rejected_frames",
            "Terminal frames the lanes of this host dropped (forged, garbage, plaintext).",
            ["host"],
            registry=registry,
        )
        self._redis_errors = Counter(
            "multipair_redis_errors",
            "Redis calls of this supervisor that failed (refused, reset, timed out, errors).",
            ["host"],
            registry=registry,
        )
        self._renewals = Histogram(
            "multipair_lease_renewal_seconds",
            "One renewal of every lease this host holds (one pipelined round trip).",
            ["host"],
            buckets=_LEASE_RENEWAL_BUCKETS,
            registry=registry,
        )
        self._memory = Gauge(
            "multipair_lane_memory_bytes",
            "Resident memory of this host's lane processes, summed (shared pages counted in each).",
            ["host"],
            registry=registry,
        )
        up = Gauge(
            "multipair_host_up", "1 while this supervisor runs.", ["host"], registry=registry
        )
        up.labels(host_id).set(1)
        self.registry.register(_LaneCollector(self))
        # Every series of the closed vocabularies exists from the start (at 0),
        # so a rate over them is defined before the first event.
        for status in LaneStatus:
            self._lanes.labels(host_id, str(status)).set(0)
        for reason in RestartReason:
            self._restarts.labels(host_id, str(reason))
        for tx_type in OUTCOME_TYPES:
            self.tx_times[tx_type] = _TxTimes()
            for result in bs.TxResult:
                self._transactions.labels(host_id, tx_type, str(result))
        for refusal in bs.Reason:
            self._rejections.labels(host_id, str(refusal))
        self._frames.labels(host_id)
        self._redis_errors.labels(host_id)
        self._renewals.labels(host_id)
        self._memory.labels(host_id).set(0)

    # -- what the host sees itself

    def restarted(self, reason: RestartReason) -> None:
        self._restarts.labels(self.host_id, str(reason)).inc()

    def redis_error(self) -> None:
        self._redis_errors.labels(self.host_id).inc()

    def lease_renewal(self, seconds: float) -> None:
        self._renewals.labels(self.host_id).observe(seconds)

    def lanes_seen(
        self, statuses: Mapping[str, LaneStatus], resident: Mapping[str, int] | None = None
    ) -> None:
        """This host's lanes now: their statuses, and the resident bytes of the live ones."""
        counts = dict.fromkeys(LaneStatus, 0)
        for status in statuses.values():
            counts[status] += 1
        for status, count in counts.items():
            self._lanes.labels(self.host_id, str(status)).set(count)
        resident = resident or {}
        self._memory.labels(self.host_id).set(sum(resident.values()))
        if self.per_lane:
            self.lanes = {
                iid: dataclasses.replace(
                    self.lanes.get(iid) or _Lane(), status=status, resident_bytes=resident.get(iid)
                )
                for iid, status in statuses.items()
            }

    # -- what the lanes counted

    def baseline(self, instance_id: str, state: Mapping[str, str]) -> None:
        """The lane's totals (its state hash) just before this host first starts it."""
        self.deltas.baseline(instance_id, counter_totals(state))

    def lane_totals(self, states: Mapping[str, Mapping[str, str]]) -> None:
        """The state hashes of every lane this host holds: count what grew; forget the rest."""
        self.deltas.keep_only(states.keys())
        for iid, state in states.items():
            for name, grown in self.deltas.update(iid, counter_totals(state)).items():
                counted = parse_counter(name)
                if counted is not None:
                    self._count(iid, counted, grown)

    def _count(self, iid: str, counted: Counted, grown: int) -> None:
        host = self.host_id
        match counted.kind:
            case CounterKind.TRANSACTIONS:
                tx_type, result = counted.tx_type or "?", counted.result or "?"
                self._transactions.labels(host, tx_type, result).inc(grown)
                if self.per_lane:
                    lane = self.lanes.setdefault(iid, _Lane())
                    key = (tx_type, result)
                    lane.transactions[key] = lane.transactions.get(key, 0) + grown
            case CounterKind.TX_BUCKET:
                if counted.bucket is not None:
                    self.tx_times[counted.tx_type or "?"].buckets[counted.bucket] += grown
            case CounterKind.TX_MICROS:
                self.tx_times[counted.tx_type or "?"].micros += grown
            case CounterKind.REJECTIONS:
                self._rejections.labels(host, counted.reason or "?").inc(grown)
            case CounterKind.FRAMES_REJECTED:
                self._frames.labels(host).inc(grown)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


def lane_status(raw: str | None, *, alive: bool, crash_loop: bool) -> LaneStatus:
    """The ``multipair_lanes`` status of one lane this host holds."""
    if crash_loop:
        return LaneStatus.CRASH_LOOP
    if not alive:
        return LaneStatus.STOPPED
    if raw in _STATUS_VALUES:
        return LaneStatus(raw)
    return LaneStatus.STARTING


class MetricsServer:
    """``GET /metrics`` on ``bind:port`` in the supervisor's own event loop (aiohttp)."""

    def __init__(self, metrics: HostMetrics, config: MetricsConfig) -> None:
        self.metrics = metrics
        self.config = config
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Listen; the port (the one chosen when ``port`` is 0). ``OSError`` when it is taken."""
        app = web.Application()
        app.router.add_get("/metrics", self._serve)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.config.bind, self.config.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1]) if runner.addresses else self.config.port
        log.info("metrics served", bind=self.config.bind, port=self.port, path="/metrics")
        return self.port

    async def _serve(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
