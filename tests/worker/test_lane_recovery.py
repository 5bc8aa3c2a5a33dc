"""No double charge, no lost outcome: lanes killed at each step, terminals dropping."""

from __future__ import annotations

import signal

import pytest

from tests.simulator.helpers import KEYS, Control
from tests.worker.helpers import SERIAL, LaneRig

KILL_POINTS = [
    # (failpoint, cents, recovered): where the lane dies, and whether the
    # outcome is then learned from the terminal (True) or the request is sent
    # for the first time after the restart (False: it never left the process).
    ("lane.before_send", 1000, False),
    ("lane.after_send", 1000, True),
    ("lane.awaiting_signature", 1052, True),
    ("lane.before_outcome_published", 1000, True),
]


@pytest.mark.parametrize(("failpoint", "amount", "recovered"), KILL_POINTS)
async def test_kill_9_at_each_step_of_a_purchase_gives_one_true_outcome(
    rig: LaneRig, control: Control, failpoint: str, amount: int, recovered: bool
) -> None:
    await rig.process.start(failpoints=failpoint)
    await rig.wait_state(status="paired_connected")
    command_id = await rig.send({"type": "purchase", "pos_ref_id": "k-1", "amount_cents": amount})
    assert -signal.SIGKILL == await rig.process.wait_exit()  # died exactly there
    await rig.events.poll(0)
    restart = rig.events.mark()

    await rig.process.start()  # the supervisor's restart, without the failpoint
    if amount == 1052:
        # Recovery finds the terminal waiting for the signature: answer it.
        await rig.events.wait_for(
            lambda b: b["type"] == "signature_required" and b.get("pos_ref_id") == "k-1",
            30,
            after=restart,
        )
        await rig.send({"type": "signature_accept", "pos_ref_id": "k-1"})
    done = await rig.answer(command_id, 30)
    assert ("transaction_completed", "success", recovered) == (
        done["type"],
        done["result"],
        done["recovered"],
    )
    await rig.wait_acknowledged()
    assert 1 == len(rig.events.of_type("transaction_completed", pos_ref_id="k-1"))
    assert 1 == (await control.get(SERIAL))["purchase_requests"]["k-1"]


@pytest.mark.parametrize(
    "step", ["after_request_received", "after_result_before_send", "while_awaiting_signature"]
)
async def test_terminal_drop_at_each_step_recovers_the_true_outcome(
    rig: LaneRig, control: Control, step: str
) -> None:
    await rig.process.start()
    await rig.wait_state(status="paired_connected")
    await control.post(SERIAL, "drop", {"at": step})
    amount = 1052 if step == "while_awaiting_signature" else 1000
    command_id = await rig.send({"type": "purchase", "pos_ref_id": "dr-1", "amount_cents": amount})
    if step == "while_awaiting_signature":
        await rig.events.wait_for(
            lambda b: b["type"] == "signature_required" and b.get("pos_ref_id") == "dr-1"
        )
        dropped = rig.events.mark()
        await rig.events.wait_for(  # the lane saw the drop ...
            lambda b: b["type"] == "status_changed" and b["status"] == "paired_connecting",
            after=dropped,
        )
        back = rig.events.mark()
        await rig.events.wait_for(  # ... and is back
            lambda b: b["type"] == "status_changed" and b["status"] == "paired_connected",
            after=back,
        )
        await rig.send({"type": "signature_accept", "pos_ref_id": "dr-1"})
    done = await rig.answer(command_id, 30)
    assert ("success", True) == (done["result"], done["recovered"])
    assert 1 == len(rig.events.of_type("transaction_completed", pos_ref_id="dr-1"))
    assert 1 == (await control.get(SERIAL))["purchase_requests"]["dr-1"]
    assert 2 <= (await control.get(SERIAL))["counters"]["connections_total"]


async def test_lane_killed_between_persisting_rolled_keys_and_replying_still_talks(
    rig: LaneRig, control: Control
) -> None:
    await rig.process.start(failpoints="lane.after_roll_persisted")
    await rig.wait_state(status="paired_connected")
    await control.post(SERIAL, "key-rollover", {})
    assert -signal.SIGKILL == await rig.process.wait_exit()
    current, previous = await rig.profiles.load_secrets_and_previous(rig.instance_id)
    assert current is not None
    assert previous is not None
    assert current.same_as(KEYS.rolled())  # persisted before the reply ...
    assert previous.same_as(KEYS)  # ... with the keys the terminal still uses

    await rig.process.start()
    done = await rig.answer(
        await rig.send({"type": "purchase", "pos_ref_id": "kr-1", "amount_cents": 1000}), 30
    )
    assert "success" == done["result"]
    settled, left = await rig.profiles.load_secrets_and_previous(rig.instance_id)
    assert settled is not None
    assert settled.same_as(KEYS)  # back on the keys the terminal holds
    assert left is None


async def test_a_settle_delivered_again_after_a_crash_is_never_sent_twice(
    rig: LaneRig, control: Control
) -> None:
    """A settle has no record: after a kill past its send, the lane reports it unknown."""
    await rig.process.start(failpoints="lane.after_send")
    await rig.wait_state(status="paired_connected")
    command_id = await rig.send({"type": "settle"})
    assert -signal.SIGKILL == await rig.process.wait_exit()  # the settle went out, then died
    await rig.process.start()
    done = await rig.answer(command_id, 30)
    assert ("settlement", "unknown", "LANE_RESTARTED") == (
        done["type"],
        done["result"],
        done["error_reason"],
    )
    await rig.wait_acknowledged()
    assert 1 == (await control.get(SERIAL))["transaction_requests"][""]
