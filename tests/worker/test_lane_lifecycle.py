"""A lane's lifecycle under its owner: fenced writes, and draining on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import time

from multipair.worker.lane import HEARTBEAT_PERIOD_S, READ_BLOCK_MS
from tests.worker.helpers import LaneRig


async def test_a_lane_whose_lease_moved_on_cannot_write_and_stops(rig: LaneRig) -> None:
    lease = rig.keys.lease(rig.instance_id)
    await rig.redis.set(lease, "7:test-host", px=60_000)
    await rig.process.start(fencing_token=7)
    await rig.wait_state(status="paired_connected")
    done = await rig.answer(
        await rig.send({"type": "purchase", "pos_ref_id": "f-1", "amount_cents": 100})
    )
    assert "success" == done["result"]

    await rig.redis.set(lease, "8:other-host", px=60_000)  # a new owner took the lane
    await rig.events.poll(0)
    before = len(rig.events.seen)
    heartbeat = (await rig.state())["heartbeat_at"]
    assert 4 == await rig.process.wait_exit()  # refused at its next write (the heartbeat)
    await rig.send({"type": "purchase", "pos_ref_id": "f-2", "amount_cents": 100})
    await rig.events.poll(300)
    assert [] == [b for b in rig.events.seen[before:] if b.get("instance_id") == rig.instance_id]
    assert heartbeat == (await rig.state())["heartbeat_at"]  # nothing written after the move


async def test_sigterm_lets_the_running_purchase_finish_then_exits_zero(rig: LaneRig) -> None:
    await rig.process.start()
    await rig.wait_state(status="paired_connected")
    slow = await rig.send(
        {"type": "purchase", "pos_ref_id": "t-1", "amount_cents": 1054}
    )  # slow card
    await rig.events.wait_for(lambda b: b["type"] == "transaction_update")  # card being read
    assert rig.process.proc is not None
    rig.process.proc.send_signal(signal.SIGTERM)
    queued = await rig.send({"type": "purchase", "pos_ref_id": "t-2", "amount_cents": 100})
    done = await rig.answer(slow)
    assert ("success", False) == (done["result"], done["recovered"])
    assert 0 == await rig.process.wait_exit()
    stopped = await rig.events.wait_for(lambda b: b["type"] == "lane_stopped")
    assert "drained" == stopped["reason"]
    # The command behind it was not started; it waits for the lane's next run.
    assert [] == rig.events.of_type("command_accepted", command_id=queued)
    await rig.process.start()
    assert "success" == (await rig.answer(queued))["result"]


async def test_a_second_sigterm_stops_at_once(rig: LaneRig) -> None:
    """The second signal ends the drain: the lane does not wait for its running transaction.

    The drain may last an hour here, so a lane that exits at all was stopped by
    the second signal. That signal goes only once the lane says it is draining:
    two signals sent together may reach it as one.
    """
    rig.process.env["MULTIPAIR_DRAIN_TIMEOUT"] = "3600"
    await rig.process.start()
    await rig.wait_state(status="paired_connected")
    never = await rig.send(
        {"type": "purchase", "pos_ref_id": "t-3", "amount_cents": 1055}
    )  # no answer
    await rig.wait_state(flow="transaction")
    assert rig.process.proc is not None
    rig.process.proc.send_signal(signal.SIGTERM)
    await rig.wait_state(draining="1")
    rig.process.proc.send_signal(signal.SIGTERM)
    assert 0 == await rig.process.wait_exit()
    # Left for the lane's next run to recover: in flight, its command entry pending.
    record = await rig.txs.get(rig.instance_id, "t-3")
    assert record is not None
    assert (never, "sent", 1) == (record.command_id, str(record.state), await rig.pending())


async def test_sigterm_on_an_idle_lane_stops_it_at_once_and_loses_no_command(
    rig: LaneRig,
) -> None:
    await rig.process.start()
    await rig.wait_state(status="paired_connected")
    await asyncio.sleep(1.0)  # the lane now waits in its long blocking command read
    assert rig.process.proc is not None
    started = time.monotonic()
    rig.process.proc.send_signal(signal.SIGTERM)  # and no command comes to wake the read
    assert 0 == await rig.process.wait_exit()
    # Well inside one read's block (READ_BLOCK_MS): the drain cut the read short.
    assert time.monotonic() - started < READ_BLOCK_MS / 1000 / 2

    # A command racing the stop is not lost: read and left pending, or not read yet.
    await rig.process.start()
    await rig.wait_state(status="paired_connected")
    await asyncio.sleep(1.0)
    rig.process.proc.send_signal(signal.SIGTERM)
    racing = await rig.send({"type": "purchase", "pos_ref_id": "i-1", "amount_cents": 100})
    assert 0 == await rig.process.wait_exit()
    await rig.process.start()
    assert "success" == (await rig.answer(racing))["result"]
    await rig.wait_acknowledged()
    assert 1 == len(rig.events.of_type("transaction_completed", command_id=racing))


async def test_a_lane_whose_profile_is_removed_stops_at_its_next_heartbeat(rig: LaneRig) -> None:
    await rig.process.start()
    await rig.wait_state(status="paired_connected")
    await rig.redis.delete(rig.keys.profile(rig.instance_id))
    assert 0 == await rig.process.wait_exit(HEARTBEAT_PERIOD_S * 3)
    assert "profile removed: stopping" in rig.process.logs()
