"""``multipair supervise`` as ops run it: real supervisor, template and lane processes,
real Redis, the simulator as five terminals (issue 5, "Tests that must exist")."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable

from multipair.store.secrets_box import MasterKey
from multipair.supervisor.control import ControlAction, owning_host
from tests.poll import poll_until
from tests.supervisor.helpers import Fleet, Lane, SupervisorProcess, gone, kill9, lane_pids_of

HOST = "host-a"
SLOW_CARD = 1054  # the simulator reads the card for about 3 s (simulator/rules.py)
SIGNATURE = 1052  # the terminal waits for the POS to accept a signature
APPROVE = 1000


async def _lane_0_running(fleet: Fleet) -> tuple[Lane, SupervisorProcess, int]:
    """Lane 0 run by a supervisor started on HOST: the lane, the supervisor, the lane's pid."""
    lane = await fleet.add_lane(0)
    supervisor = fleet.supervisor(HOST)
    await supervisor.start()
    return lane, supervisor, await lane.running()


async def test_kill_9_of_one_lane_leaves_four_untouched_and_recovers_its_purchase(
    fleet: Fleet,
) -> None:
    lanes = [await fleet.add_lane(i) for i in range(5)]
    supervisor = fleet.supervisor(HOST)
    await supervisor.start()
    pids = [await lane.running() for lane in lanes]
    victim, others = lanes[0], lanes[1:]

    # The victim's purchase waits for a signature: in flight when it is killed.
    held = await victim.send({"type": "purchase", "pos_ref_id": "v-1", "amount_cents": SIGNATURE})
    await victim.next_event("signature_required", pos_ref_id="v-1")

    async def shop(lane: Lane) -> list[str]:
        amounts = [SLOW_CARD, APPROVE, SLOW_CARD, APPROVE]
        done = [await lane.purchase(f"{lane.serial}-{k}", c, 30) for k, c in enumerate(amounts)]
        return [str(d["result"]) for d in done]

    shopping = [asyncio.create_task(shop(lane)) for lane in others]
    for lane in others:
        await lane.wait_state(flow="transaction")  # all four mid-purchase
    restart = await victim.mark()
    kill9(pids[0])

    assert [["success"] * 4] * 4 == await asyncio.gather(*shopping)
    for lane in others:
        await lane.events.poll(0)
        troubles = [e for e in lane.events.seen if e["type"] in ("command_rejected", "error")]
        assert ([], "0") == (troubles, (await lane.state())["restarts"])
        assert [] == lane.events.of_type("lane_crashed")

    crashed = await victim.next_event("lane_crashed", after=restart)
    assert (pids[0], None, signal.SIGKILL, 0, False) == (
        crashed["pid"],
        crashed["exit_code"],
        crashed["signal"],
        crashed["restarts"],
        crashed["crash_loop"],
    )
    await victim.next_event("lane_started", after=restart, restarts=1)
    new_pid = await victim.running(after=restart, previous=pids[0])
    assert new_pid not in pids
    # Recovery asks the terminal, which is still waiting for the signature.
    await victim.next_event("signature_required", after=restart, pos_ref_id="v-1")
    await victim.send({"type": "signature_accept", "pos_ref_id": "v-1"})
    done = await victim.answer(held, 30)
    assert ("transaction_completed", "success", True) == (
        done["type"],
        done["result"],
        done["recovered"],
    )
    assert 1 == len(victim.events.of_type("transaction_completed", pos_ref_id="v-1"))
    terminals = fleet.sim.terminals
    assert 1 == terminals[0].stats.purchase_requests["v-1"]  # never sent twice
    assert [1] * 5 == [t.stats.max_concurrent_connections for t in terminals]


async def test_a_lane_that_crashes_on_every_start_reaches_crash_loop_and_others_run_on(
    fleet: Fleet,
) -> None:
    good = await fleet.add_lane(0)
    # Its secrets were sealed under another master key: the lane exits 2 (configuration).
    misconfigured = await fleet.add_lane(1, sealed_with=MasterKey.generate())
    # Its command stream is a string: the lane fails with a Redis error (exit 1) on each start.
    broken = await fleet.add_lane(2)
    commands = fleet.keys.commands(broken.instance_id)
    await fleet.redis.delete(commands)
    await fleet.redis.set(commands, "not a stream")

    supervisor = fleet.supervisor(HOST)
    await supervisor.start()
    await good.running()

    first = await misconfigured.next_event("lane_crashed")
    assert (2, None, True) == (first["exit_code"], first["signal"], first["crash_loop"])
    await misconfigured.wait_state(crash_loop="1")

    async def five_crashes() -> list[dict[str, object]]:
        await broken.events.poll(100)
        crashes = broken.events.of_type("lane_crashed")
        return crashes if len(crashes) >= 5 else None  # type: ignore[return-value]

    crashes = (await poll_until(five_crashes, "five crashes", 40))[:5]
    assert [(1, False)] * 4 + [(1, True)] == [(c["exit_code"], c["crash_loop"]) for c in crashes]
    assert [0, 1, 2, 3, 4] == [c["restarts"] for c in crashes]
    await broken.wait_state(crash_loop="1")

    done = await good.purchase("g-1", APPROVE)
    assert "success" == done["result"]
    state = await good.state()
    assert ("0", "0", "paired_connected") == (
        state["restarts"],
        state["crash_loop"],
        state["status"],
    )
    assert [] == good.events.of_type("lane_crashed")


async def test_lane_stop_is_remembered_across_a_supervisor_restart(fleet: Fleet) -> None:
    stopped, kept = [await fleet.add_lane(i) for i in range(2)]
    first = fleet.supervisor(HOST)
    await first.start()
    old_pid = await stopped.running()
    await kept.running()

    mark = await stopped.mark()
    await fleet.control(ControlAction.STOP, stopped)
    event = await stopped.next_event("lane_stopped", after=mark, reason="disabled")
    assert old_pid == event["pid"]
    assert not (await fleet.profiles.get(stopped.instance_id)).enabled

    async def released() -> bool:
        return await stopped.lease() is None

    await poll_until(released, "the stopped lane's lease released")
    first.signal(signal.SIGTERM)
    assert 0 == await first.wait_exit(40)

    stopped_mark, kept_mark = await stopped.mark(), await kept.mark()
    second = fleet.supervisor(HOST)
    await second.start()
    await kept.running(after=kept_mark)
    started = await kept.next_event("lane_started", after=kept_mark)

    async def heartbeat_after_start() -> dict[str, object] | None:
        entry = await fleet.host_entry(HOST)
        if entry is None or entry["pid"] != second.pid:
            return None
        return entry if str(entry["heartbeat_at"]) > started["at"] else None

    entry = await poll_until(heartbeat_after_start, "a host heartbeat after the start")
    assert 1 == entry["lanes"]  # the stopped lane was not taken
    await stopped.events.poll(0)
    assert [] == [e for e in stopped.events.seen[stopped_mark:] if e["type"] == "lane_started"]
    assert await stopped.lease() is None

    # `lane start` brings it back, through the control stream of the host.
    await fleet.control(ControlAction.START, stopped, host_id=HOST)
    await stopped.running(after=stopped_mark)
    assert (await fleet.profiles.get(stopped.instance_id)).enabled


async def test_lane_restart_through_the_control_stream_starts_a_new_process(
    fleet: Fleet,
) -> None:
    lane, _, pid = await _lane_0_running(fleet)
    assert HOST == await owning_host(fleet.redis, fleet.keys, lane.instance_id)

    mark = await lane.mark()
    await fleet.control(ControlAction.RESTART, lane)  # to the host named by the lease
    stopped = await lane.next_event("lane_stopped", after=mark, reason="restart")
    started = await lane.next_event("lane_started", after=mark, restarts=1)
    new_pid = await lane.running(after=mark, previous=pid)
    assert (pid, new_pid) == (stopped["pid"], started["pid"])
    assert new_pid != pid
    await gone(pid)
    assert "success" == (await lane.purchase("r-1", APPROVE))["result"]
    assert [] == lane.events.of_type("lane_crashed")  # a restart is not a crash


async def test_sigterm_during_a_purchase_lets_it_finish_then_exits_zero(fleet: Fleet) -> None:
    busy, idle = [await fleet.add_lane(i) for i in range(2)]
    supervisor = fleet.supervisor(HOST)
    await supervisor.start()
    pids = [await busy.running(), await idle.running()]

    command = await busy.send({"type": "purchase", "pos_ref_id": "s-1", "amount_cents": SLOW_CARD})
    await busy.next_event("transaction_update", pos_ref_id="s-1")  # the card is being read
    supervisor.signal(signal.SIGTERM)
    done = await busy.answer(command, 30)
    assert ("success", False) == (done["result"], done["recovered"])
    assert 0 == await supervisor.wait_exit(40)

    assert (None, None) == (await busy.lease(), await idle.lease())  # released at once
    assert await fleet.host_entry(HOST) is None
    for lane in (busy, idle):
        await lane.next_event("lane_stopped", reason="shutdown")
    await gone(*pids)


async def test_lanes_die_with_the_supervisor_when_it_is_killed(fleet: Fleet) -> None:
    lanes = [await fleet.add_lane(i) for i in range(3)]
    supervisor = fleet.supervisor(HOST)
    await supervisor.start()
    pids = {await lane.running() for lane in lanes}

    async def template() -> int | None:
        entry = await fleet.host_entry(HOST)
        return None if entry is None else entry.get("template_pid")

    template_pid = await poll_until(template, "the template's pid in mp:hosts")
    assert pids == lane_pids_of(template_pid)  # each lane its own process, under the template

    await supervisor.kill()  # SIGKILL: no chance to clean up
    await gone(template_pid, *pids)

    async def disconnected() -> bool:
        return all(t.stats.active_connections == 0 for t in fleet.sim.terminals[:3])

    await poll_until(disconnected, "no orphan holds a terminal connection")


async def test_a_lane_whose_lease_another_host_took_is_killed_at_once(fleet: Fleet) -> None:
    lane, _, pid = await _lane_0_running(fleet)
    mark = await lane.mark()

    lease_key = fleet.keys.lease(lane.instance_id)
    await fleet.redis.set(lease_key, "999:host-b", px=60_000)  # host-b owns the lane now
    await gone(pid)

    await fleet.redis.delete(lease_key)  # host-b went away: host-a takes the lane again
    new_pid = await lane.running(after=mark, previous=pid)
    lease = await lane.lease()
    assert lease is not None
    assert (HOST, True) == (lease.host_id, new_pid != pid)
    # While host-b owned the lane, nothing of host-a's landed in its stream, not even
    # the "lease lost" report (issue 7: a stale owner's writes are refused).
    started = lane.events.of_type("lane_started")[-1]
    late = lane.events.seen[mark : lane.events.seen.index(started)]
    assert [] == [e for e in late if e.get("pid") == pid]


async def test_a_hung_lane_is_killed_and_restarted(fleet: Fleet) -> None:
    lane, _, pid = await _lane_0_running(fleet)
    mark = await lane.mark()

    os.kill(pid, signal.SIGSTOP)  # alive, holding its connection, doing nothing
    crashed = await lane.next_event("lane_crashed", after=mark, timeout=30)
    assert (pid, signal.SIGKILL) == (crashed["pid"], crashed["signal"])
    new_pid = await lane.running(after=mark, previous=pid)
    assert new_pid != pid
    assert "success" == (await lane.purchase("h-1", APPROVE))["result"]


async def test_a_second_sigterm_kills_the_lanes_releases_the_leases_and_exits_zero(
    fleet: Fleet,
) -> None:
    lane, supervisor, pid = await _lane_0_running(fleet)
    never = {"type": "purchase", "pos_ref_id": "n-1", "amount_cents": 1055}  # no answer, ever
    await lane.send(never)
    await lane.wait_state(flow="transaction")

    supervisor.signal(signal.SIGTERM)  # the lane drains: it would wait for its purchase
    await poll_until(_draining(fleet), "the supervisor draining")
    supervisor.signal(signal.SIGTERM)
    assert 0 == await supervisor.wait_exit()
    await gone(pid)
    assert await lane.lease() is None
    stopped = await lane.next_event("lane_stopped", pid=pid, reason="shutdown")
    assert HOST == stopped["host"]


def _draining(fleet: Fleet) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        entry = await fleet.host_entry(HOST)
        return entry is not None and entry["accepting"] is False

    return check


async def test_a_second_supervisor_with_the_same_host_id_refuses_to_run(fleet: Fleet) -> None:
    lane, first, pid = await _lane_0_running(fleet)
    mark = await lane.mark()

    second = fleet.supervisor(HOST)
    await second.start()

    assert 2 == await second.wait_exit()
    assert f"another supervisor runs as host '{HOST}'" in second.logs()
    assert f"pid {first.pid} on" in second.logs()  # says which one holds it
    # The first runs on undisturbed: same lane process, its host entry kept.
    await asyncio.sleep(2.5)  # more than a renewal period and a host heartbeat
    await lane.events.poll(0)
    assert (pid, [], first.pid) == (
        await lane.running(),
        [e for e in lane.events.seen[mark:] if e["type"] in ("lane_started", "lane_stopped")],
        (await fleet.host_entry(HOST) or {}).get("pid"),
    )

    # A clean stop gives the host id back at once.
    first.signal(signal.SIGTERM)
    assert 0 == await first.wait_exit(40)
    assert 0 == await fleet.redis.exists(fleet.keys.host_claim(HOST))


async def test_a_supervisor_whose_host_id_was_claimed_by_another_kills_its_lanes_and_stops(
    fleet: Fleet,
) -> None:
    _, supervisor, pid = await _lane_0_running(fleet)

    # As if this process had been frozen past the claim's TTL and another
    # supervisor had started with the same id meanwhile.
    await fleet.redis.set(fleet.keys.host_claim(HOST), "other pid 1 on elsewhere", px=60_000)

    assert 2 == await supervisor.wait_exit()  # a configuration error, for ops to see
    await gone(pid)
    assert any(
        e.get("event") == "host id claimed by another supervisor: lanes killed, stopping"
        for e in supervisor.log_events()
    )
    assert "another supervisor took host id 'host-a'" in supervisor.logs()
    assert b"other pid 1 on elsewhere" == await fleet.redis.get(fleet.keys.host_claim(HOST))


async def test_a_claim_that_lapsed_unclaimed_is_taken_again_and_the_lanes_run_on(
    fleet: Fleet,
) -> None:
    """As after a Redis outage longer than the claim's TTL: nobody else runs as this host."""
    lane, supervisor, pid = await _lane_0_running(fleet)
    claim = fleet.keys.host_claim(HOST)
    held = await fleet.redis.get(claim)
    await fleet.redis.delete(claim)

    async def taken_again() -> bool:
        return held == await fleet.redis.get(claim)

    await poll_until(taken_again, "the claim taken again by the same supervisor")
    assert (pid, None) == (await lane.running(), supervisor.proc and supervisor.proc.returncode)

    def said_so() -> bool:
        # Logged just after the claim is written back: it may land a moment later
        # (a fresh-clone CI run read the log in between).
        return any(
            e.get("event") == "host claim had lapsed; taken again" for e in supervisor.log_events()
        )

    await poll_until(said_so, "the supervisor logging that it took its lapsed claim again")
