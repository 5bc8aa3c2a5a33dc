"""The template process and its lanes: real forks, real exits, real memory figures."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from multipair.config import Settings
from multipair.leases import LeaseManager
from multipair.supervisor.procs import (
    LaneExit,
    LaneProcesses,
    private_kib,
    pss_kib,
    settings_from_wire,
    settings_to_wire,
)
from tests.poll import poll_until
from tests.supervisor.helpers import Fleet, Lane, gone, process_gone

WAIT = 20.0
UNKNOWN_LANE = "00000000-0000-4000-8000-000000000000"


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def name_of(pid: int) -> str:
    with open(f"/proc/{pid}/comm", encoding="ascii") as comm:
        return comm.read().strip()


@pytest.fixture
def settings(fleet: Fleet) -> Settings:
    return Settings.from_env(fleet.env(MULTIPAIR_HOST_ID="test-host"))


@pytest.fixture
async def procs(settings: Settings) -> AsyncIterator[LaneProcesses]:
    async with LaneProcesses(settings) as processes:
        yield processes


async def leased(fleet: Fleet, lane: Lane) -> int:
    """Take the lane's lease as host ``test-host`` would; its token."""
    lease = await LeaseManager(fleet.redis, fleet.keys, "test-host", ttl_ms=120_000).acquire(
        lane.instance_id
    )
    assert lease is not None
    return lease.token


async def next_exit(procs: LaneProcesses) -> LaneExit:
    return await asyncio.wait_for(procs.exits.get(), WAIT)


def test_settings_travel_to_the_template_intact(settings: Settings) -> None:
    wire = settings_to_wire(settings)
    json.dumps(wire)  # plain JSON
    back = settings_from_wire(wire)
    assert settings.master_key is not None
    assert back.master_key is not None
    assert (repr(settings), settings.master_key.fingerprint()) == (
        repr(back),
        back.master_key.fingerprint(),
    )


async def test_each_lane_is_its_own_process_forked_from_the_template(
    fleet: Fleet, procs: LaneProcesses
) -> None:
    lanes = [await fleet.add_lane(i) for i in range(2)]
    pids = [await procs.spawn(lane.instance_id, await leased(fleet, lane)) for lane in lanes]
    for lane, pid in zip(lanes, pids, strict=True):
        await lane.wait_state(status="paired_connected", pid=str(pid))
    template = procs.template_pid
    assert template is not None
    assert 2 == len(set(pids) - {template})
    assert [template, template] == [parent_of(pid) for pid in pids]
    assert (["mp-lane", "mp-lane"], "mp-template") == (
        [name_of(pid) for pid in pids],
        name_of(template),
    )


async def test_exits_are_reported_with_their_code_or_signal(
    fleet: Fleet, procs: LaneProcesses
) -> None:
    # No such lane: the worker's configuration/usage exit code.
    pid = await procs.spawn(UNKNOWN_LANE, 1)
    # It says why, in its own words (the supervisor writes it into the state hash).
    cause = f"cannot start: unknown_lane: no lane has instance id {UNKNOWN_LANE}"
    assert LaneExit(UNKNOWN_LANE, pid, 2, None, cause) == await next_exit(procs)

    lanes = [await fleet.add_lane(i) for i in range(2)]
    killed, drained = [await procs.spawn(x.instance_id, await leased(fleet, x)) for x in lanes]
    await lanes[0].wait_state(status="paired_connected", pid=str(killed))
    await lanes[1].wait_state(status="paired_connected", pid=str(drained))
    procs.signal(killed, signal.SIGKILL)
    assert LaneExit(lanes[0].instance_id, killed, None, 9) == await next_exit(procs)
    procs.signal(drained, signal.SIGTERM)  # idle: drains at once, exits 0
    assert LaneExit(lanes[1].instance_id, drained, 0, None) == await next_exit(procs)
    assert {} == procs.live_pids


async def test_lanes_die_with_the_template_and_a_new_template_takes_over(
    fleet: Fleet, procs: LaneProcesses
) -> None:
    lane = await fleet.add_lane(0)
    pid = await procs.spawn(lane.instance_id, await leased(fleet, lane))
    await lane.wait_state(status="paired_connected", pid=str(pid))
    old_template = procs.template_pid
    assert old_template is not None

    os.kill(old_template, signal.SIGKILL)
    # The template's death killed the lane (PR_SET_PDEATHSIG): reported as SIGKILL.
    assert LaneExit(lane.instance_id, pid, None, 9) == await next_exit(procs)
    await gone(pid)

    again = await procs.spawn(lane.instance_id, await leased_again(fleet, lane))
    assert procs.template_pid not in (None, old_template)
    await lane.wait_state(status="paired_connected", pid=str(again))


async def leased_again(fleet: Fleet, lane: Lane) -> int:
    await fleet.redis.delete(fleet.keys.lease(lane.instance_id))
    return await leased(fleet, lane)


async def test_closing_kills_every_lane_and_the_template(fleet: Fleet, settings: Settings) -> None:
    lanes = [await fleet.add_lane(i) for i in range(2)]
    async with LaneProcesses(settings) as procs:
        pids = [await procs.spawn(x.instance_id, await leased(fleet, x)) for x in lanes]
        for lane, pid in zip(lanes, pids, strict=True):
            await lane.wait_state(status="paired_connected", pid=str(pid))
        template = procs.template_pid
    assert template is not None
    assert [True, True, True] == [process_gone(p) for p in [*pids, template]]


async def test_an_idle_lane_costs_a_fraction_of_a_fresh_interpreter(
    fleet: Fleet, procs: LaneProcesses, tmp_path: Path
) -> None:
    """Report the proportional set size (PSS) of forked lanes, the template and a fresh lane."""
    lanes = [await fleet.add_lane(i) for i in range(5)]
    forked = lanes[:4]
    pids = [await procs.spawn(x.instance_id, await leased(fleet, x)) for x in forked]
    for lane, pid in zip(forked, pids, strict=True):
        await lane.wait_state(status="paired_connected", pid=str(pid))

    # The same lane code started the old way: a fresh interpreter importing everything.
    fresh_lane = lanes[4]
    token = await leased(fleet, fresh_lane)
    with (tmp_path / "fresh.log").open("wb") as log:
        fresh = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "multipair.worker",
            "--instance-id",
            fresh_lane.instance_id,
            "--fencing-token",
            str(token),
            env=fleet.env(MULTIPAIR_HOST_ID="test-host"),
            stdout=log,
            stderr=log,
        )
    try:
        await fresh_lane.wait_state(status="paired_connected", pid=str(fresh.pid))
        for lane in lanes:  # idle: another heartbeat since it connected
            await another_heartbeat(lane)
        template = procs.template_pid
        assert template is not None
        forked_pss = [pss_kib(pid) for pid in pids]
        forked_private = [private_kib(pid) for pid in pids]
        template_pss = pss_kib(template)
        fresh_pss = pss_kib(fresh.pid)
        fresh_private = private_kib(fresh.pid)
    finally:
        fresh.terminate()
        await fresh.wait()
    figures = {
        "forked_lane_pss_kib": forked_pss,
        "forked_lane_private_kib": forked_private,
        "template_pss_kib": template_pss,
        "fresh_interpreter_lane_pss_kib": fresh_pss,
        "fresh_interpreter_lane_private_kib": fresh_private,
    }
    print("\nMEMORY", json.dumps(figures))
    # Each lane costs less than a fresh interpreter, and so do all of them with their template.
    assert max(forked_pss) < fresh_pss
    assert max(forked_private) < fresh_private / 2
    assert sum(forked_pss) + template_pss < len(forked) * fresh_pss


async def another_heartbeat(lane: Lane) -> None:
    first = (await lane.state())["heartbeat_at"]

    async def changed() -> bool:
        return (await lane.state()).get("heartbeat_at") != first

    await poll_until(changed, f"another heartbeat of {lane.serial}")
