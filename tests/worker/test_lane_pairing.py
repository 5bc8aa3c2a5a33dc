"""Pairing is one at a time and never outlives the one who asked for it.

A real lane process against the simulator in manual pairing mode (the
terminal confirms only when the test says so), so a pairing stays open for
as long as a test needs it.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest

from multipair import broker_schema as bs
from multipair.worker.lane import PAIRING_TIMEOUT_S, pair_busy, pairing_limit
from tests.simulator.helpers import Control
from tests.worker.helpers import SERIAL, Body, LaneRig

NOW = dt.datetime(2025, 1, 31, 9, 30, tzinfo=dt.UTC)


@pytest.fixture
def paired_at_start() -> bool:
    """One unpaired terminal that confirms a pairing only through the control API; the
    ``lane`` fixture is then an unpaired lane, running."""
    return False


async def _code_shown(lane: LaneRig, pair_id: str) -> Body:
    return await lane.events.wait_for(
        lambda b: (
            b["type"] == "pairing"
            and b["command_id"] == pair_id
            and b.get("confirmation_code") is not None
        )
    )


async def _pairing_end(lane: LaneRig, pair_id: str, timeout: float = 10.0) -> Body:
    return await lane.events.wait_for(
        lambda b: (
            b["type"] == "pairing"
            and b["command_id"] == pair_id
            and b["state"] in ("succeeded", "failed", "cancelled")
        ),
        timeout,
    )


async def _pair_to_the_end(lane: LaneRig, control: Control) -> Body:
    """Pair with both sides confirming; the final ``pairing`` event."""
    pair_id = await lane.send({"type": "pair"})
    shown = await _code_shown(lane, pair_id)
    await lane.send(
        {
            "type": "pair_confirm",
            "confirmation_code": shown["confirmation_code"],
        }
    )
    await lane.events.wait_for(
        lambda b: b["type"] == "pairing" and b["command_id"] == pair_id and b["awaiting_terminal"]
    )
    await control.post(SERIAL, "pairing/confirm")
    return await _pairing_end(lane, pair_id)


async def test_a_second_pair_while_one_runs_is_refused_busy_at_once(
    lane: LaneRig, control: Control
) -> None:
    first = await lane.send({"type": "pair"})
    await _code_shown(lane, first)

    sent = time.monotonic()
    second = await lane.send({"type": "pair"})
    refused = await lane.answer(second, timeout=5.0)
    waited = time.monotonic() - sent
    assert ("command_rejected", "busy", "pair") == (
        refused["type"],
        refused["reason"],
        refused["command_type"],
    )
    assert first in refused["detail"]
    assert waited < 2.0  # refused at once, not queued behind the first pairing

    # The first pairing goes on untouched, and the refused pair left nothing pending.
    assert "pairing" == (await lane.state())["flow"]
    assert [] == lane.events.of_type("pairing", command_id=second)
    await lane.send({"type": "pair_cancel", "pair_command_id": first})
    cancelled = await _pairing_end(lane, first)
    assert "cancelled" == cancelled["state"]
    await lane.wait_state(flow="idle")
    await lane.wait_acknowledged()

    paired = await _pair_to_the_end(lane, control)
    assert "succeeded" == paired["state"]
    await lane.wait_state(status="paired_connected")


async def test_a_pair_past_its_expires_at_is_cancelled_by_the_lane(
    lane: LaneRig, control: Control
) -> None:
    expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    first = await lane.send({"type": "pair", "expires_at": bs.format_time(expires_at)})
    await _code_shown(lane, first)

    ended = await _pairing_end(lane, first, timeout=6.0)
    late = (dt.datetime.now(dt.UTC) - expires_at).total_seconds()
    assert "cancelled" == ended["state"]
    assert (
        f"Pairing cancelled: the pair command's expires_at ({bs.format_time(expires_at)}) "
        "passed before it finished." == ended["detail"]
    )
    assert late < 2.0  # at its deadline, not at the lane's 180 s
    await lane.wait_state(flow="idle", status="unpaired")
    await lane.wait_acknowledged()  # the pair is answered for good

    paired = await _pair_to_the_end(lane, control)  # the lane and the terminal pair afresh
    assert "succeeded" == paired["state"]


async def test_pair_cancel_naming_another_pairing_leaves_the_running_one_alone(
    lane: LaneRig,
) -> None:
    first = await lane.send({"type": "pair"})
    await _code_shown(lane, first)

    stray = await lane.send({"type": "pair_cancel", "pair_command_id": "someone-else"})
    refused = await lane.answer(stray, timeout=5.0)
    assert ("command_rejected", "not_allowed") == (refused["type"], refused["reason"])
    assert "someone-else" in refused["detail"]
    assert "pairing" == (await lane.state())["flow"]

    await lane.send({"type": "pair_cancel", "pair_command_id": first})
    assert "cancelled" == (await _pairing_end(lane, first))["state"]
    await lane.wait_state(flow="idle")


# --- the lane's decisions, without a lane -------------------------------------------------------


def test_pair_busy_refuses_a_pair_only_while_another_pair_is_pending() -> None:
    first, second = bs.Pair(command_id="p-1"), bs.Pair(command_id="p-2")
    refusal = pair_busy(second, first)
    assert refusal is not None
    assert (
        "busy",
        "pairing 'p-1' is in progress on this lane; send pair again once it has ended "
        "(pair_cancel ends it)",
    ) == (refusal.reason, refusal.detail)
    assert pair_busy(second, None) is None
    assert pair_busy(bs.Unpair(command_id="u-1"), first) is None  # not ours to refuse


def test_pairing_limit_without_expires_at_is_the_lanes_own() -> None:
    assert (PAIRING_TIMEOUT_S, f"it did not finish within {PAIRING_TIMEOUT_S:g} s") == (
        pairing_limit(None, NOW)
    )


def test_pairing_limit_is_the_time_left_to_expires_at() -> None:
    expires_at = NOW + dt.timedelta(seconds=12.5)
    assert (
        12.5,
        "the pair command's expires_at (2025-01-31T09:30:12.500Z) passed before it finished",
    ) == pairing_limit(expires_at, NOW)


def test_pairing_limit_never_exceeds_the_lanes_own_or_goes_below_zero() -> None:
    assert PAIRING_TIMEOUT_S == pairing_limit(NOW + dt.timedelta(hours=1), NOW)[0]
    assert 0.0 == pairing_limit(NOW - dt.timedelta(seconds=3), NOW)[0]
