"""``multipair lane pair``: the code is shown at once, and the exit code is the outcome."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.cli.conftest import SERIAL, SharedLane, running_lane
from tests.simulator.helpers import Control

CODE_LINE = re.compile(r"Confirmation code: ([0-9A-F]{6}) — check it matches the terminal")


async def test_lane_pair_confirm_pairs_an_unpaired_lane(redis_url: str, tmp_path: Path) -> None:
    async with running_lane(redis_url, tmp_path, paired=False) as lane:
        before = await lane.cli.run("tx", "purchase", lane.iid, "--amount", "1")
        assert 2 == before.code, before
        assert [
            f"multipair: error: lane not paired: pair {lane.iid} first with "
            f"`multipair lane pair {lane.iid}`"
        ] == before.error_lines()

        result = await lane.cli.run("lane", "pair", lane.iid, "--confirm")
        assert 0 == result.code, result
        doc = result.json()
        shown = [m[1] for m in map(CODE_LINE.search, result.error_lines()) if m]
        assert 1 == len(shown), result.err  # shown as soon as known, on stderr under --json
        assert {
            "instance_id": lane.iid,
            "paired": True,
            "state": doc["state"],
            "confirmation_code": shown[0],
            "detail": None,
        } == doc
        await lane.rig.wait_state(status="paired_connected")


async def _pairing_ended(lane: SharedLane, since: int) -> dict[str, Any]:
    """The first final ``pairing`` event after position ``since`` of the lane's events."""
    return await lane.rig.events.wait_for(
        lambda b: b["type"] == "pairing" and b["state"] in ("succeeded", "failed", "cancelled"),
        timeout=5.0,
        after=since,
    )


async def test_lane_pair_gives_up_with_exit_3_and_the_lane_cancels_the_pairing(
    redis_url: str, tmp_path: Path
) -> None:
    async with (
        running_lane(redis_url, tmp_path, paired=False, pairing="manual") as lane,
        aiohttp.ClientSession() as http,
    ):
        control = Control(http, lane.sim.control_url)
        since = lane.rig.events.mark()
        late = await lane.cli.run("lane", "pair", lane.iid, "--confirm", "--timeout", "1")
        gave_up = time.monotonic()
        assert 3 == late.code, late
        await lane.rig.wait_state(timeout=2.0, flow="idle", status="unpaired")
        assert (
            f"multipair: error: pairing of lane {lane.iid} did not finish within 1s; "
            "sent pair_cancel: the lane cancels the pairing"
        ) == late.error_lines()[-1]
        ended = await _pairing_ended(lane, since)
        assert ("cancelled", "Pairing cancelled.") == (ended["state"], ended["detail"])
        assert time.monotonic() - gave_up < 2.0  # by the CLI's pair_cancel, not a lane timeout

        # Nothing of the first run is left behind: the next pair runs at once.
        pairing = await lane.cli.start("lane", "pair", lane.iid, "--confirm", json=False)
        try:
            line = await pairing.until(lambda text: CODE_LINE.search(text) is not None)
            assert CODE_LINE.fullmatch(line), line
            await lane.rig.events.wait_for(
                lambda b: b["type"] == "pairing" and b.get("awaiting_terminal") is True
            )
            await control.post(SERIAL, "pairing/confirm")
            done = await pairing.finish()
        finally:
            await pairing.kill()
        assert 0 == done.code, done
        assert f"Paired: lane {lane.iid} is paired with its terminal." in done.out
        await lane.rig.wait_state(status="paired_connected")


async def test_lane_pair_interrupted_exits_3_and_the_lane_cancels_the_pairing(
    redis_url: str, tmp_path: Path
) -> None:
    async with running_lane(redis_url, tmp_path, paired=False, pairing="manual") as lane:
        since = lane.rig.events.mark()
        pairing = await lane.cli.start("lane", "pair", lane.iid, "--confirm", json=False)
        try:
            await pairing.until(lambda text: CODE_LINE.search(text) is not None)
            await pairing.interrupt()  # Ctrl-C
            done = await pairing.finish()
        finally:
            await pairing.kill()
        assert 3 == done.code, done
        assert [
            f"multipair: error: interrupted; asked lane {lane.iid} to cancel the pairing "
            f"(pair_cancel): check `multipair lane show {lane.iid}`"
        ] == done.error_lines()
        await lane.rig.wait_state(timeout=2.0, flow="idle", status="unpaired")
        assert "cancelled" == (await _pairing_ended(lane, since))["state"]


async def test_lane_pair_while_another_pairing_runs_is_refused_busy_at_once(
    redis_url: str, tmp_path: Path
) -> None:
    async with running_lane(redis_url, tmp_path, paired=False, pairing="manual") as lane:
        first = await lane.rig.send({"type": "pair"})
        await lane.rig.events.wait_for(
            lambda b: b["type"] == "pairing" and b.get("confirmation_code") is not None
        )
        second = await lane.cli.run("lane", "pair", lane.iid, "--confirm", "--timeout", "10")
        assert 2 == second.code, second
        [line] = second.error_lines()
        assert (
            f"multipair: error: lane {lane.iid} is busy: pairing {first!r} is in progress on "
            "this lane; send pair again once it has ended (pair_cancel ends it)"
        ) == line
        assert "pairing" == (await lane.rig.state())["flow"]  # the first goes on


async def test_lane_pair_exits_1_when_the_terminal_rejects(redis_url: str, tmp_path: Path) -> None:
    async with (
        running_lane(redis_url, tmp_path, paired=False, pairing="manual") as lane,
        aiohttp.ClientSession() as http,
    ):
        control = Control(http, lane.sim.control_url)
        pairing = await lane.cli.start("lane", "pair", lane.iid, "--confirm", json=False)
        try:
            line = await pairing.until(lambda text: CODE_LINE.search(text) is not None)
            assert CODE_LINE.fullmatch(line), line
            await control.post(SERIAL, "pairing/reject")
            done = await pairing.finish()
        finally:
            await pairing.kill()
        assert 1 == done.code, done
        assert done.error_lines()[-1].startswith("multipair: error: pairing failed")
