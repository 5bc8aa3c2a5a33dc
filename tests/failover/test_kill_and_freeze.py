"""Hosts that die or freeze (issue 7, "Tests that must exist"): real supervisors, real Redis,
the simulator's thirty terminals."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter

from tests.failover.helpers import (
    APPROVE,
    SLOW_CARD,
    RedisLink,
    leases_of,
    log_events,
    opened,
    process_state,
    replaced,
    running_anew,
    terminal_connections,
    wait_hosts_live,
    wait_spread,
)
from tests.poll import poll_until
from tests.supervisor.helpers import Fleet, Lane, SupervisorProcess, gone
from tests.worker.helpers import Body


async def _completions(lanes: list[Lane]) -> Counter[str]:
    """pos_ref_id -> how many ``transaction_completed`` events the lanes published for it."""
    counts: Counter[str] = Counter()
    for lane in lanes:
        while await lane.events.poll(0):
            pass
        counts.update(str(e["pos_ref_id"]) for e in lane.events.of_type("transaction_completed"))
    return counts


async def test_three_hosts_share_30_lanes_and_a_kill_9_moves_one_third_with_nothing_lost(
    fleet: Fleet,
) -> None:
    sups = [fleet.supervisor(f"host-{x}", capacity=20) for x in "abc"]
    for sup in sups:
        await sup.start()
    await wait_hosts_live(fleet, *sups)
    lanes = [await fleet.add_lane(i) for i in range(30)]
    leases = await wait_spread(lanes, {"host-a": 10, "host-b": 10, "host-c": 10}, timeout=90)

    victim, survivors = sups[0], sups[1:]
    doomed = [lane for lane in lanes if leases[lane.instance_id].host_id == victim.host_id]  # type: ignore[union-attr]
    doomed_pids = [int((await lane.state())["pid"]) for lane in doomed]
    terminal_of = {t.serial: t for t in fleet.sim.terminals}

    async def shop(lane: Lane) -> list[Body]:
        slow = await lane.purchase(f"{lane.serial}-1", SLOW_CARD, 60)
        quick = await lane.purchase(f"{lane.serial}-2", APPROVE, 60)
        return [slow, quick]

    shopping = [asyncio.create_task(shop(lane)) for lane in lanes]
    for lane in doomed:
        await lane.wait_state(flow="transaction")  # its card is being read
    with terminal_connections() as connections:
        await victim.kill()  # kill -9: its template and lanes die with it (PDEATHSIG)
        await gone(*doomed_pids)

        async def terminals_free() -> bool:
            return all(terminal_of[lane.serial].stats.active_connections == 0 for lane in doomed)

        await poll_until(terminals_free, "the dead host's terminals disconnected", 10)
        # ... while the leases still name the dead host: no other host can have connected.
        assert {victim.host_id} == {
            lease.host_id for lease in (await leases_of(doomed)).values() if lease is not None
        }
        results = await asyncio.gather(*shopping)
    # Each of the dead host's terminals got exactly one new POS connection, and never while
    # another was open.
    assert ([], sorted(lane.serial for lane in doomed)) == (
        replaced(connections),
        sorted(opened(connections)),
    )
    moved = {lane.instance_id for lane in doomed}
    for lane, (slow, quick) in zip(lanes, results, strict=True):
        recovered = lane.instance_id in moved  # the new owner asked the terminal
        assert ("success", recovered, "success", False) == (
            slow["result"],
            slow["recovered"],
            quick["result"],
            quick["recovered"],
        ), lane.serial
    refs = [f"{lane.serial}-{k}" for lane in lanes for k in (1, 2)]
    assert dict.fromkeys(refs, 1) == dict(await _completions(lanes))
    sent = {ref: terminal_of[ref.rsplit("-", 1)[0]].stats.purchase_requests[ref] for ref in refs}
    assert dict.fromkeys(refs, 1) == sent  # no purchase ever sent twice
    assert [1] * 30 == [terminal_of[lane.serial].stats.max_concurrent_connections for lane in lanes]

    # The survivors split the 30 lanes evenly; survivors' own lanes never restarted.
    await wait_spread(lanes, {"host-b": 15, "host-c": 15})
    for lane in lanes:
        if lane.instance_id not in moved:
            assert ([], "0") == (
                lane.events.of_type("lane_crashed"),
                (await lane.state())["restarts"],
            )
    assert all(sup.proc is not None and sup.proc.returncode is None for sup in survivors)


async def test_a_frozen_supervisor_loses_its_lanes_and_none_of_its_late_writes_land(
    fleet: Fleet,
) -> None:
    a, b = fleet.supervisor("host-a", capacity=10), fleet.supervisor("host-b", capacity=10)
    await a.start()
    await b.start()
    await wait_hosts_live(fleet, a, b)
    lanes = [await fleet.add_lane(i) for i in range(4)]
    leases = await wait_spread(lanes, {"host-a": 2, "host-b": 2})
    frozen = [lane for lane in lanes if leases[lane.instance_id].host_id == "host-a"]  # type: ignore[union-attr]
    old = {lane.instance_id: int((await lane.state())["pid"]) for lane in frozen}
    tokens = {lane.instance_id: leases[lane.instance_id].token for lane in frozen}  # type: ignore[union-attr]
    marks = {lane.instance_id: await lane.mark() for lane in frozen}

    with terminal_connections() as connections:
        a.signal(signal.SIGSTOP)  # the supervisor stops; its template and lanes run on
        try:
            for lane in frozen:
                await running_anew(
                    lane, after=marks[lane.instance_id], previous=old[lane.instance_id]
                )
                lease = await lane.lease()
                assert lease is not None
                assert ("host-b", True) == (lease.host_id, lease.token > tokens[lane.instance_id])
            # Its lanes, still running, had their next write refused (fenced): they stopped
            # on their own while their supervisor was frozen.
            await gone(*old.values())
            assert "T" == process_state(a.pid)  # still frozen
            states = {lane.instance_id: await lane.state() for lane in frozen}
        finally:
            a.signal(signal.SIGCONT)
    # The new owner connected to each terminal only after the frozen host's lane had let
    # go of it: never two POS connections at once.
    assert ([], sorted(lane.serial for lane in frozen)) == (
        replaced(connections),
        sorted(set(opened(connections))),
    )

    # Resumed, host-a learns its lanes ended because their leases moved (exit code 4).
    async def noticed() -> bool:
        exits = {
            line.get("pid"): line.get("how")
            for line in log_events(a)
            if line.get("event") in ("lane exited", "lane crashed")
        }
        return all(exits.get(pid) == "exit code 4" for pid in old.values())

    await poll_until(noticed, "host-a noticed its lanes' leases were lost")
    refused = {line.get("instance_id") for line in log_events(a, "lease lost: stopping at once")}
    assert set(old) <= refused
    for lane in frozen:
        state = states[lane.instance_id]
        assert ("host-b", "paired_connected") == (state["host"], state["status"])
        assert int(state["pid"]) != old[lane.instance_id]
    # Nothing the frozen host or its lanes tried to write after the takeover landed: no
    # event about the old processes, and the state never went back to them.
    for lane in frozen:
        assert "success" == (await lane.purchase(f"{lane.serial}-f", APPROVE, 30))["result"]
        late = [
            e for e in lane.events.seen[marks[lane.instance_id] :] if e.get("pid") in old.values()
        ]
        assert [] == late
        assert int((await lane.state())["pid"]) not in old.values()
        assert 1 == fleet.sim.terminals[lanes.index(lane)].stats.max_concurrent_connections


async def test_a_host_cut_off_from_redis_rides_it_out_and_takes_its_leases_back(
    fleet: Fleet,
) -> None:
    """Issue 13: a silent cut longer than the lease TTL costs no lane and no terminal link.

    Nobody else could take the lanes meanwhile (one host), so when the link
    returns the host takes the same leases back (same tokens) and the same
    lane processes go on. (Past ``RestartPolicy.redis_ride_out_s`` the
    watchdog would stop them, as before: tests/supervisor/test_decide.py.)
    """
    host, port = fleet.redis_url.removeprefix("redis://").split("/")[0].split(":")
    link = RedisLink(host, int(port))
    url = await link.start()
    sup = SupervisorProcess(
        fleet.env(MULTIPAIR_REDIS_URL=url), "host-a", fleet.tmp_path / "supervisor-cut.log"
    )
    fleet.supervisors.append(sup)
    try:
        lanes = [await fleet.add_lane(i) for i in range(2)]
        await sup.start()
        await wait_spread(lanes, {"host-a": 2})
        pids = [int((await lane.state())["pid"]) for lane in lanes]
        tokens = await leases_of(lanes)
        terminals = fleet.sim.terminals[:2]

        link.cut()  # silence, no error: every Redis call of the host and its lanes hangs

        async def lapsed() -> bool:  # the leases expired in Redis: nobody renewed them
            return all(lease is None for lease in (await leases_of(lanes)).values())

        await poll_until(lapsed, "the leases lapsed", 15)
        await asyncio.sleep(2)
        assert [1, 1] == [t.stats.active_connections for t in terminals]  # links kept
        assert all(process_state(pid) in "SR" for pid in pids)

        link.restore()

        async def taken_back() -> bool:
            return await leases_of(lanes) == tokens

        await poll_until(taken_back, "the same leases taken back", 15)
        assert "success" == (await lanes[0].purchase("cut-1", APPROVE, 30))["result"]
        assert pids == [int((await lane.state())["pid"]) for lane in lanes]
        assert [1, 1] == [t.stats.connections_total for t in terminals]  # never reconnected
        assert [] == [
            line
            for line in log_events(sup)
            if line.get("event") in ("lane killed", "lane exited", "lane crashed")
        ]
    finally:
        await sup.kill()
        await link.close()
