"""A supervisor's Prometheus metrics (issue 15): the pure parts, then a real host scraped.

The scrape test runs a real supervisor with ``MULTIPAIR_METRICS_PORT=0`` over
the test Redis and the simulator, reads the port it chose from ``mp:hosts``,
and checks ``/metrics`` against the lanes actually running: three lanes
connected, then two after a stop; one more transaction per purchase; a
``kill -9`` counted as a crash; a refused command counted by its reason.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Iterable

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from multipair.broker_schema import counters
from multipair.supervisor.cli import metrics_config
from multipair.supervisor.control import ControlAction
from multipair.supervisor.metrics import (
    CounterDeltas,
    HostMetrics,
    LaneStatus,
    MetricsConfig,
    RestartReason,
    lane_status,
)
from tests.poll import poll_until
from tests.supervisor.helpers import Fleet, SupervisorProcess, kill9

HOST = "metrics-host"
APPROVE = 1000
DECLINE = 1051

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of a scrape by (name, labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(scrape: Samples, name: str, **labels: str) -> float:
    """One sample; 0 when the series does not exist (yet)."""
    return scrape.get((name, frozenset(labels.items())), 0.0)


# ---------------------------------------------------------------------- pure parts


def test_deltas_count_only_what_grew_while_this_host_held_the_lane() -> None:
    deltas = CounterDeltas()
    deltas.baseline("a", {"m:tx:purchase:success": 7})
    assert {} == deltas.update("a", {"m:tx:purchase:success": 7})
    assert {"m:tx:purchase:success": 2, "m:rej:busy": 1} == deltas.update(
        "a", {"m:tx:purchase:success": 9, "m:rej:busy": 1}
    )
    assert {} == deltas.update("b", {"m:tx:purchase:success": 40}), "never seen: a baseline"
    assert {"m:tx:purchase:success": 1} == deltas.update("a", {"m:tx:purchase:success": 1}), (
        "a total that went down was reset: it counts from zero"
    )
    deltas.keep_only({"b"})
    assert (False, True) == (deltas.known("a"), deltas.known("b"))


def test_a_lane_status_is_crash_loop_first_then_stopped_when_no_process_runs() -> None:
    assert [
        LaneStatus.CRASH_LOOP,
        LaneStatus.STOPPED,
        LaneStatus.PAIRED_CONNECTED,
        LaneStatus.STARTING,
        LaneStatus.STARTING,
    ] == [
        lane_status("paired_connected", alive=True, crash_loop=True),
        lane_status("paired_connected", alive=False, crash_loop=False),
        lane_status("paired_connected", alive=True, crash_loop=False),
        lane_status(None, alive=True, crash_loop=False),
        lane_status("bogus", alive=True, crash_loop=False),
    ]


def _state(*fields: tuple[str, int]) -> dict[str, str]:
    return {name: str(amount) for name, amount in fields}


def test_host_metrics_expose_the_lanes_totals_as_counters_and_a_histogram() -> None:
    metrics = HostMetrics("h1")
    (bucket, _), (total, micros) = counters.tx_duration("purchase", 0.02)
    metrics.baseline("lane-1", _state((counters.tx_count("purchase", "success"), 5)))
    metrics.lane_totals(
        {
            "lane-1": _state(
                (counters.tx_count("purchase", "success"), 6),
                (bucket, 1),
                (total, micros),
                (counters.rejection("not_json"), 2),
                ("frames_rejected", 3),
                ("status", 0),
            )
        }
    )
    metrics.lanes_seen(
        {"lane-1": LaneStatus.PAIRED_CONNECTED, "lane-2": LaneStatus.STOPPED},
        {"lane-1": 1000, "lane-2": 24},
    )
    metrics.restarted(RestartReason.OPS)
    scrape = samples(metrics.exposition().decode())
    host = {"host": "h1"}
    assert 1.0 == value(
        scrape, "multipair_transactions_total", type="purchase", result="success", **host
    )
    assert 1.0 == value(scrape, "multipair_transaction_seconds_count", type="purchase", **host)
    assert 1.0 == value(
        scrape, "multipair_transaction_seconds_bucket", type="purchase", le="0.025", **host
    )
    assert 0.0 == value(
        scrape, "multipair_transaction_seconds_bucket", type="purchase", le="0.01", **host
    )
    assert 0.02 == pytest.approx(
        value(scrape, "multipair_transaction_seconds_sum", type="purchase", **host)
    )
    assert 2.0 == value(scrape, "multipair_command_rejections_total", reason="not_json", **host)
    assert 3.0 == value(scrape, "multipair_link_rejected_frames_total", **host)
    assert (1.0, 1.0, 0.0) == tuple(
        value(scrape, "multipair_lanes", status=s, **host)
        for s in ("paired_connected", "stopped", "crash_loop")
    )
    assert 1024.0 == value(scrape, "multipair_lane_memory_bytes", **host)
    assert (1.0, 0.0) == (
        value(scrape, "multipair_lane_restarts_total", reason="ops", **host),
        value(scrape, "multipair_lane_restarts_total", reason="crash", **host),
    )
    assert 1.0 == value(scrape, "multipair_host_up", **host)
    assert not any("instance_id" in dict(labels) for _, labels in scrape), "bounded by default"


def test_per_lane_series_name_each_lane_and_leave_with_it() -> None:
    metrics = HostMetrics("h1", per_lane=True)
    metrics.baseline("lane-1", {})
    metrics.lane_totals({"lane-1": _state((counters.tx_count("refund", "failed"), 1))})
    metrics.lanes_seen({"lane-1": LaneStatus.UNPAIRED}, {"lane-1": 10})
    scrape = samples(metrics.exposition().decode())
    lane = {"host": "h1", "instance_id": "lane-1"}
    assert (1.0, 10.0, 1.0) == (
        value(scrape, "multipair_lane_status", status="unpaired", **lane),
        value(scrape, "multipair_lane_resident_bytes", **lane),
        value(scrape, "multipair_lane_transactions_total", type="refund", result="failed", **lane),
    )
    metrics.lanes_seen({}, {})
    assert not any(
        ("instance_id", "lane-1") in labels for _, labels in samples(metrics.exposition().decode())
    )


def test_metrics_settings_come_from_the_options_else_the_environment() -> None:
    def args(**given: object) -> argparse.Namespace:
        return argparse.Namespace(
            **{"metrics_port": None, "metrics_bind": None, "metrics_per_lane": None, **given}
        )

    assert metrics_config(args(), {}) is None
    assert MetricsConfig(port=9464) == metrics_config(args(), {"MULTIPAIR_METRICS_PORT": "9464"})
    assert MetricsConfig(port=0, bind="0.0.0.0", per_lane=True) == metrics_config(  # noqa: S104
        args(metrics_port=0, metrics_bind="0.0.0.0"),  # noqa: S104
        {"MULTIPAIR_METRICS_PORT": "9464", "MULTIPAIR_METRICS_PER_LANE": "1"},
    )


# ---------------------------------------------------------------------- a real host


async def _scrape(url: str) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert 200 == response.status
        assert response.headers["Content-Type"].startswith("text/plain")
        return samples(await response.text())


async def _until(url: str, what: str, check: Iterable[tuple[str, dict[str, str], float]]) -> None:
    wanted = list(check)
    last: list[float] = []

    async def seen() -> bool:
        nonlocal last
        scrape = await _scrape(url)
        last = [value(scrape, name, **labels) for name, labels, _ in wanted]
        return last == [expected for _, _, expected in wanted]

    try:
        await poll_until(seen, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last values {last}") from None


async def test_metrics_follow_the_lanes_that_actually_run(fleet: Fleet) -> None:
    lanes = [await fleet.add_lane(i) for i in range(3)]
    supervisor = SupervisorProcess(
        fleet.env(MULTIPAIR_METRICS_PORT="0"), HOST, fleet.tmp_path / "supervisor.log"
    )
    fleet.supervisors.append(supervisor)
    await supervisor.start()
    pids = [await lane.running() for lane in lanes]
    entry = await poll_until(lambda: fleet.host_entry(HOST), "the host's heartbeat")
    port = entry["metrics_port"]
    assert isinstance(port, int), entry
    assert port > 0, entry
    url = f"http://127.0.0.1:{port}/metrics"
    host = {"host": HOST}

    def lanes_by(status: str, count: float) -> tuple[str, dict[str, str], float]:
        return ("multipair_lanes", {"status": status, **host}, count)

    await _until(url, "3 lanes connected", [lanes_by("paired_connected", 3)])
    scrape = await _scrape(url)
    assert 1.0 == value(scrape, "multipair_host_up", **host)
    assert value(scrape, "multipair_lane_memory_bytes", **host) > 3 * 1024 * 1024
    assert value(scrape, "multipair_lease_renewal_seconds_count", **host) >= 0

    # One purchase: one more transaction, one more outcome time; a decline counted apart.
    await lanes[0].purchase("m-1", APPROVE)
    await lanes[1].purchase("m-2", DECLINE)
    await _until(
        url,
        "one success and one failure",
        [
            ("multipair_transactions_total", {"type": "purchase", "result": "success", **host}, 1),
            ("multipair_transactions_total", {"type": "purchase", "result": "failed", **host}, 1),
            ("multipair_transaction_seconds_count", {"type": "purchase", **host}, 2),
        ],
    )
    await lanes[0].purchase("m-3", APPROVE)
    await _until(
        url,
        "one more purchase",
        [("multipair_transactions_total", {"type": "purchase", "result": "success", **host}, 2)],
    )

    # A refused command, counted by its reason.
    refused = await lanes[2].send({"type": "purchase", "pos_ref_id": "m-4", "amount_cents": "1"})
    assert "wrong_type" == (await lanes[2].answer(refused))["reason"]
    await _until(
        url,
        "one rejection",
        [("multipair_command_rejections_total", {"reason": "wrong_type", **host}, 1)],
    )

    # kill -9: a crash, and the lane is back.
    mark = await lanes[2].mark()
    kill9(pids[2])
    await lanes[2].running(after=mark, previous=pids[2])
    await _until(
        url,
        "a crash counted, the lane back",
        [
            ("multipair_lane_restarts_total", {"reason": "crash", **host}, 1),
            lanes_by("paired_connected", 3),
        ],
    )

    # A stop: two lanes left, the stopped one no longer this host's.
    await fleet.control(ControlAction.STOP, lanes[1])
    await _until(
        url, "2 lanes after a stop", [lanes_by("paired_connected", 2), lanes_by("stopped", 0)]
    )
    # The counts of the lane that left stay (counters never go down).
    scrape = await _scrape(url)
    assert 1.0 == value(
        scrape, "multipair_transactions_total", type="purchase", result="failed", **host
    )


async def test_a_metrics_port_that_is_taken_stops_the_supervisor_at_start(fleet: Fleet) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        supervisor = SupervisorProcess(
            fleet.env(MULTIPAIR_METRICS_PORT=str(port)), HOST, fleet.tmp_path / "taken.log"
        )
        fleet.supervisors.append(supervisor)
        await supervisor.start()
        assert 2 == await supervisor.wait_exit()
    assert f"cannot serve metrics on 127.0.0.1:{port}" in supervisor.logs()
    assert await fleet.host_entry(HOST) is None, "it never ran"
