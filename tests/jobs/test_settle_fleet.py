"""settle_fleet run by a real ``rq worker --burst`` over real lanes on the simulator.

The terminal's own counter (control API ``transaction_requests``, key ``""``:
a settlement carries no ``pos_ref_id``) is the judge of "settled once".
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from multipair import jobs
from multipair.jobs.settlement import LaneState, Why
from tests.jobs.helpers import JobsRig, running_fleet, today
from tests.poll import poll_until
from tests.supervisor.helpers import Lane

FAST: dict[str, Any] = {
    "retries": 2,
    "retry_delay_s": 0.2,
    "busy_wait_s": 30.0,
    "settle_timeout_s": 30.0,
}


async def buy(lane: Lane, ref: str, cents: int) -> dict[str, object]:
    answer = await lane.purchase(ref, cents)
    assert "transaction_completed" == answer["type"], answer
    return answer


async def test_settle_fleet_settles_each_lane_once_with_the_terminals_totals(
    redis: aioredis.Redis, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """10 lanes: 8 plain, one offline, one busy with a slow purchase when the job starts."""
    async with running_fleet(redis, redis_url, key_prefix, tmp_path, 10) as rig:
        day = today()
        approved: dict[str, int] = {}
        for n, lane in enumerate(rig.lanes):
            cents = [1000 + 100 * n, 250]
            for k, amount in enumerate(cents):
                await buy(lane, f"p{n}-{k}", amount)
            await buy(lane, f"d{n}", 1051)  # declined: never in any total
            approved[lane.instance_id] = sum(cents)
        offline, busy = rig.lanes[8], rig.lanes[9]
        await rig.offline(offline)
        # .54: the slow card (~3 s of progress, then approved), running when the job starts.
        slow = await busy.send({"type": "purchase", "pos_ref_id": "slow", "amount_cents": 2054})
        await busy.wait_state(flow="transaction")
        approved[busy.instance_id] += 2054

        job = rig.jobs.enqueue(jobs.settle_fleet, business_day=day, concurrency=4, **FAST)
        await rig.worker().run(rig.jobs, job)
        result = rig.jobs.result(job)

        slow_done = await busy.answer(slow)
        assert "success" == slow_done["result"]
        report = await rig.report(day)
        for lane in rig.lanes:
            expected = 0 if lane is offline else 1
            assert expected == await rig.settles_seen(lane), lane.serial
        settled = [lane for lane in rig.lanes if lane is not offline]
        for lane in settled:
            entry = report[lane.instance_id]
            assert (LaneState.SETTLED, 1, False) == (entry.state, entry.attempt, entry.mismatch)
            assert entry.terminal is not None
            assert entry.ours is not None
            want = approved[lane.instance_id]
            count = 3 if lane is busy else 2
            assert (count, want) == (entry.terminal.count, entry.terminal.value_cents)
            assert (count, want) == (entry.ours.count, entry.ours.value_cents)
            [visa] = [s for s in entry.terminal.schemes if s.count]
            assert ("Visa", count, want) == (visa.scheme, visa.count, visa.value_cents)
        # The busy lane was settled after its slow purchase ended, not refused or skipped.
        settlement = await busy.next_event("settlement")
        assert settlement["at"] > slow_done["at"]

        failed = report[offline.instance_id]
        assert (LaneState.FAILED, Why.OFFLINE, 0) == (failed.state, failed.reason, failed.attempt)
        assert "not connected" in (failed.detail or "")

        totals = result["totals"]
        expected_value = sum(approved[lane.instance_id] for lane in settled)
        assert (10, 9, 1, 0) == (
            totals["lanes"],
            totals["settled"],
            totals["failed"],
            totals["mismatched"],
        )
        assert (19, expected_value) == (
            totals["terminal"]["count"],
            totals["terminal"]["value_cents"],
        )
        assert totals["terminal"]["count"] == totals["ours"]["count"]
        assert totals["terminal"]["value_cents"] == totals["ours"]["value_cents"]
        assert {"Visa": {"count": 19, "value_cents": expected_value}} == {
            k: v for k, v in totals["terminal"]["schemes"].items() if v["count"]
        }
        kept = await rig.store.summary(day)
        assert kept is not None
        assert 9 == kept["settled"]

        # Run again: the settled lanes are not settled twice; the offline one is tried again.
        job = rig.jobs.enqueue(jobs.settle_fleet, business_day=day, **FAST | {"retries": 0})
        await rig.worker().run(rig.jobs, job)
        again = rig.jobs.result(job)
        assert (9, 1) == (again["totals"]["settled"], again["totals"]["failed"])
        for lane in rig.lanes:
            assert (0 if lane is offline else 1) == await rig.settles_seen(lane)


async def test_a_mismatch_between_terminal_and_our_records_is_flagged(
    redis: aioredis.Redis, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    async with running_fleet(redis, redis_url, key_prefix, tmp_path, 2) as rig:
        day = today()
        plain, partial = rig.lanes
        await buy(plain, "a", 1200)
        # .56: the terminal approves half; our record has the amount asked for.
        answer = await buy(partial, "b", 3056)
        assert "success" == answer["result"]
        job = rig.jobs.enqueue(jobs.settle_fleet, business_day=day, **FAST)
        await rig.worker().run(rig.jobs, job)
        result = rig.jobs.result(job)
        by_lane = {lane["instance_id"]: lane for lane in result["lanes"]}
        assert False is by_lane[plain.instance_id]["mismatch"]
        flagged = by_lane[partial.instance_id]
        assert True is flagged["mismatch"]
        assert (1, 1528) == (flagged["terminal"]["count"], flagged["terminal"]["value_cents"])
        assert (1, 3056) == (flagged["ours"]["count"], flagged["ours"]["value_cents"])
        assert [partial.instance_id] == result["totals"]["mismatched_lanes"]

        job = rig.jobs.enqueue(jobs.reconcile, day)
        await rig.worker().run(rig.jobs, job)
        reconciled = rig.jobs.result(job)
        assert [partial.instance_id] == [m["instance_id"] for m in reconciled["mismatches"]]
        assert {"count": 0, "value_cents": -1528} == reconciled["mismatches"][0]["difference"]
        assert (False, 2, []) == (
            reconciled["ok"],
            reconciled["settled_lanes"],
            reconciled["unsettled"],
        )


@pytest.mark.parametrize("failpoint", ["jobs.settle_before_send", "jobs.settle_after_send"])
async def test_a_job_killed_around_sending_is_finished_by_the_next_without_settling_twice(
    redis: aioredis.Redis, redis_url: str, key_prefix: str, tmp_path: Path, failpoint: str
) -> None:
    """The work-horse dies (SIGKILL, failpoint) with a lane's attempt recorded as ``sending``:
    before its ``settle`` was added to the lane's stream, or after, before its answer."""
    async with running_fleet(redis, redis_url, key_prefix, tmp_path, 10) as rig:
        day = today()
        for n, lane in enumerate(rig.lanes):
            await buy(lane, f"k{n}", 500 + n)
        options = FAST | {"lock_ttl_s": 1.0}
        first = rig.jobs.enqueue(jobs.settle_fleet, business_day=day, concurrency=3, **options)
        statuses = await rig.worker().run(rig.jobs, first, MULTIPAIR_FAILPOINTS=failpoint)
        assert ["failed"] == statuses
        before = await rig.report(day)
        assert any(e.state is LaneState.SENDING for e in before.values()), before
        assert len(before) < 10 or any(e.state is not LaneState.SETTLED for e in before.values())

        second = rig.jobs.enqueue(jobs.settle_fleet, business_day=day, concurrency=3, **options)
        await rig.worker().run(rig.jobs, second)
        result = rig.jobs.result(second)
        assert (10, 10) == (result["totals"]["lanes"], result["totals"]["settled"])
        report = await rig.report(day)
        for n, lane in enumerate(rig.lanes):
            assert 1 == await rig.settles_seen(lane), lane.serial
            entry = report[lane.instance_id]
            assert LaneState.SETTLED == entry.state
            # Attempt 2 only where attempt 1 was recorded but never reached the lane: the
            # resend of attempt 1 was refused as expired (nothing ran), then 2 settled.
            assert entry.attempt in (1, 2)
            assert entry.terminal is not None
            assert (1, 500 + n) == (entry.terminal.count, entry.terminal.value_cents)


async def test_a_work_horse_killed_from_outside_mid_run_settles_no_lane_twice(
    redis: aioredis.Redis, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """``kill -9`` of the work-horse while it waits for a busy lane, then the job again."""
    async with running_fleet(redis, redis_url, key_prefix, tmp_path, 10) as rig:
        day = today()
        for n, lane in enumerate(rig.lanes):
            await buy(lane, f"x{n}", 700 + n)
        stuck = rig.lanes[0]
        # .55: the terminal never answers until the POS cancels: the lane stays busy.
        await stuck.send({"type": "purchase", "pos_ref_id": "stuck", "amount_cents": 955})
        await stuck.wait_state(flow="transaction")
        options = FAST | {"lock_ttl_s": 1.0, "busy_wait_s": 120.0}
        first = rig.jobs.enqueue(jobs.settle_fleet, business_day=day, concurrency=2, **options)
        worker = rig.worker()
        await worker.start()

        async def most_settled() -> bool:
            report = await rig.report(day)
            return sum(e.state is LaneState.SETTLED for e in report.values()) >= 9

        await poll_until(most_settled, "9 lanes settled while one is busy", 60)

        async def horses() -> set[int] | None:
            return worker.horse_pids() or None

        for pid in await poll_until(horses, "the work-horse", 60):
            os.kill(pid, signal.SIGKILL)
        await poll_until(lambda: _ended(rig, first), "the killed job marked failed", 30)
        await worker.kill()

        await stuck.send({"type": "cancel", "pos_ref_id": "stuck"})
        await stuck.wait_state(flow="idle")
        second = rig.jobs.enqueue(jobs.settle_fleet, business_day=day, concurrency=2, **options)
        await rig.worker().run(rig.jobs, second)
        result = rig.jobs.result(second)
        assert (10, 10) == (result["totals"]["lanes"], result["totals"]["settled"])
        for lane in rig.lanes:
            assert 1 == await rig.settles_seen(lane), lane.serial


async def _ended(rig: JobsRig, job_id: str) -> bool:
    return "failed" == rig.jobs.status(job_id)


async def test_settle_lane_settles_one_lane_once_and_fails_the_job_for_an_offline_one(
    redis: aioredis.Redis, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    async with running_fleet(redis, redis_url, key_prefix, tmp_path, 2) as rig:
        day = today()
        good, offline = rig.lanes
        await buy(good, "one", 4200)
        await rig.offline(offline)
        first = rig.jobs.enqueue(jobs.settle_lane, good.instance_id, day)
        again = rig.jobs.enqueue(jobs.settle_lane, good.instance_id, day)
        fails = rig.jobs.enqueue(jobs.settle_lane, offline.instance_id, day, **FAST)
        assert ["finished", "finished", "failed"] == await rig.worker().run(
            rig.jobs, first, again, fails
        )
        entry = rig.jobs.result(first)
        assert ("settled", 1, 4200, False) == (
            entry["state"],
            entry["attempt"],
            entry["terminal"]["value_cents"],
            entry["mismatch"],
        )
        assert entry == rig.jobs.result(again)
        assert 1 == await rig.settles_seen(good)
        assert "SettlementNotDone: offline" in rig.jobs.error(fails)
        assert 0 == await rig.settles_seen(offline)


async def test_a_settlement_of_unknown_outcome_is_never_sent_again_unless_asked(
    redis: aioredis.Redis, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """The connection drops once the terminal has the ``settle``: the lane says ``unknown``."""
    async with running_fleet(redis, redis_url, key_prefix, tmp_path, 1) as rig:
        day = today()
        [lane] = rig.lanes
        await buy(lane, "u1", 900)
        await rig.control.post(lane.serial, "drop", {"at": "after_request_received"})
        first = rig.jobs.enqueue(jobs.settle_fleet, business_day=day, **FAST)
        again = rig.jobs.enqueue(jobs.settle_fleet, business_day=day, **FAST)
        await rig.worker().run(rig.jobs, first, again)
        for job in (first, again):
            [entry] = rig.jobs.result(job)["lanes"]
            assert ("unknown", "settlement_unknown", 1) == (
                entry["state"],
                entry["reason"],
                entry["attempt"],
            )
        assert 1 == await rig.settles_seen(lane)

        await lane.wait_state(status="paired_connected")
        forced = rig.jobs.enqueue(jobs.settle_fleet, business_day=day, retry_unknown=True, **FAST)
        await rig.worker().run(rig.jobs, forced)
        [entry] = rig.jobs.result(forced)["lanes"]
        assert ("settled", 2) == (entry["state"], entry["attempt"])
        assert 2 == await rig.settles_seen(lane)
        # The first settlement had closed the day: the second finds nothing, and our
        # record of the purchase is flagged against it.
        assert (0, 1, True) == (
            entry["terminal"]["count"],
            entry["ours"]["count"],
            entry["mismatch"],
        )
