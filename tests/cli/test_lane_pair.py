"""``multipair lane pair``: the code is shown at once, and the exit code is the outcome."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp

from tests.cli.conftest import SERIAL, running_lane
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


async def test_lane_pair_exits_3_on_timeout_and_1_when_the_terminal_rejects(
    redis_url: str, tmp_path: Path
) -> None:
    async with (
        running_lane(redis_url, tmp_path, paired=False, pairing="manual") as lane,
        aiohttp.ClientSession() as http,
    ):
        control = Control(http, lane.sim.control_url)
        late = await lane.cli.run("lane", "pair", lane.iid, "--confirm", "--timeout", "1")
        assert 3 == late.code, late
        assert "did not finish within 1s" in late.error_lines()[-1]
        await control.post(SERIAL, "pairing/reject")  # end the pairing the first run left
        await lane.rig.wait_state(flow="idle")

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
