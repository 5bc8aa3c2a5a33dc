"""``multipair settle``: the fleet settled now (here or through RQ), its report, reconciliation."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import redis.asyncio as aioredis

from tests.cli.helpers import Cli, clean_env
from tests.jobs.helpers import running_fleet, today


async def test_settle_all_settles_every_lane_once_with_a_line_each_and_a_table(
    redis: aioredis.Redis, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    async with running_fleet(redis, redis_url, key_prefix, tmp_path, 3) as rig:
        for n, lane in enumerate(rig.lanes):
            await lane.purchase(f"s{n}", 1000 * (n + 1))
        cli = Cli(redis_url, key_prefix)
        done = await cli.run("settle", "--all", "--concurrency", "2", json=False)
        assert 0 == done.code, done
        lines = done.out.splitlines()
        assert lines[0].startswith("settling every enabled, paired lane for ")
        for n, lane in enumerate(rig.lanes):
            # One progress line per lane (indented), before the table.
            [line] = [x for x in lines if x.startswith(f"  {lane.instance_id[:8]} ")]
            assert f"settled: 1 tx ${10 * (n + 1)}.00, matches our records" in line, done.out
        header = next(x for x in lines if x.startswith("LANE"))
        assert ["LANE", "SERIAL", "TENANT", "STATE", "TX", "VALUE", "OURS", "CHECK", "REASON"] == (
            header.split()
        )
        assert "3 of 3 lanes settled, 0 failed" in done.out
        assert "terminals: 3 tx $60.00; our records: 3 tx $60.00" in done.out
        for lane in rig.lanes:
            assert 1 == await rig.settles_seen(lane)

        again = await cli.run("settle", "--all")
        assert 0 == again.code, again
        result = again.json()
        assert (3, 3) == (result["totals"]["lanes"], result["totals"]["settled"])
        for lane in rig.lanes:
            assert 1 == await rig.settles_seen(lane)

        day = today()
        report = await cli.run("settle", "report", day, "--csv", json=False)
        assert 0 == report.code, report
        rows = list(csv.DictReader(io.StringIO(report.out)))
        assert {lane.instance_id for lane in rig.lanes} == {r["instance_id"] for r in rows}
        assert {("settled", "1", "0")} == {
            (r["state"], r["terminal_count"], r["mismatch"]) for r in rows
        }
        assert sorted(["1000", "2000", "3000"]) == sorted(r["terminal_value_cents"] for r in rows)
        assert all(re.fullmatch(r"Visa=1/\d+", r["schemes"]) for r in rows)

        as_json = (await cli.run("settle", "report", day)).json()
        assert (3, 6000, None) == (
            as_json["totals"]["settled"],
            as_json["totals"]["terminal"]["value_cents"],
            as_json["reconcile"],
        )
        reconciled = await cli.run("settle", "reconcile", day)
        assert 0 == reconciled.code, reconciled
        assert (True, 3) == (reconciled.json()["ok"], reconciled.json()["settled_lanes"])


async def test_settle_all_by_tenant_and_an_offline_lane_exits_1(
    redis: aioredis.Redis, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    async with running_fleet(redis, redis_url, key_prefix, tmp_path, 3) as rig:
        first, second, third = rig.lanes
        for lane in (first, second):
            await rig.fleet.profiles.update(lane.instance_id, tenant_code="wbc")
        await rig.offline(second)
        cli = Cli(redis_url, key_prefix)
        done = await cli.run(
            "settle", "--all", "--tenant", "wbc", "--retries", "1", "--retry-delay", "0.2"
        )
        assert 1 == done.code, done
        result = done.json()
        states = {lane["instance_id"]: (lane["state"], lane["reason"]) for lane in result["lanes"]}
        assert {
            first.instance_id: ("settled", None),
            second.instance_id: ("failed", "offline"),
        } == states
        assert "offline" in done.err  # progress lines go to stderr under --json
        assert (1, 0, 0) == tuple([await rig.settles_seen(x) for x in (first, second, third)])


async def test_settle_all_via_rq_enqueues_the_job_and_follows_it(
    redis: aioredis.Redis, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    async with running_fleet(redis, redis_url, key_prefix, tmp_path, 2) as rig:
        for n, lane in enumerate(rig.lanes):
            await lane.purchase(f"r{n}", 1500)
        cli = Cli(redis_url, key_prefix, env=clean_env(MULTIPAIR_RQ_QUEUE=rig.jobs.name))
        running = await cli.start("settle", "--all", "--via-rq", json=False)
        try:
            line = await running.until(lambda text: "enqueued RQ job" in text)
            job_id = line.split("enqueued RQ job ", 1)[1].split()[0]
            assert ["finished"] == await rig.worker().run(rig.jobs, job_id)
            done = await running.finish()
        finally:
            await running.kill()
        assert 0 == done.code, done
        for lane in rig.lanes:
            assert any(lane.instance_id[:8] in x and "settled" in x for x in done.out.splitlines())
            assert 1 == await rig.settles_seen(lane)
        assert "2 of 2 lanes settled" in done.out


async def test_settle_needs_all_or_an_action(cli: Cli) -> None:
    done = await cli.run("settle", json=False)
    assert 2 == done.code
    assert "settle --all" in done.err
    bad_day = await cli.run("settle", "report", "31/01/2025")
    assert 2 == bad_day.code
    missing = await cli.run("settle", "report", "2025-01-31")
    assert (2, "multipair: error: no settlement report for 2025-01-31") == (
        missing.code,
        missing.err.split(" (key", 1)[0],
    )
