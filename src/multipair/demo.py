"""``make demo``: eight terminals, eight lanes, one crash, every outcome checked.

What it shows, in under a minute on a laptop, with nothing installed but
Python: a private Redis, the supervisor, and a simulator with eight
terminals are started (:mod:`multipair.stack`); the eight lanes are paired
through commands; then a purchase runs on every lane at once, with the
terminals' progress printed as it happens. Lane 3's amount ends in .51, so
its card is declined. Lane 5's ends in .54, a slow card: while the
terminal is still reading it, the demo ``kill -9``s that lane's process, the
supervisor restarts it, and the lane recovers the purchase's true outcome
from the terminal instead of charging twice. The others carry on untouched.

Exit status 0 only if every outcome was the scripted one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from multipair import broker_schema as bs
from multipair.client import AsyncClient, Outcome
from multipair.stack import Stack, StackLane

__all__ = ["main", "run_demo"]

TERMINALS: Final = 8
DECLINED_LANE: Final = 3  # amount ends in .51: the simulator declines it
KILLED_LANE: Final = 5  # amount ends in .54: slow card, killed mid-purchase


@dataclass(slots=True)
class _Result:
    lane: StackLane
    amount_cents: int
    expected: str
    expect_recovered: bool
    outcome: Outcome | None = None
    error: str | None = None
    restarts: int = 0


def _say(text: str) -> None:
    print(f"  {text}", flush=True)


def _amount(index: int) -> int:
    if index == DECLINED_LANE:
        return 1251
    if index == KILLED_LANE:
        return 2054
    return 1000 + index * 100


async def _wait_connected(client: AsyncClient, lanes: Sequence[StackLane], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    wanted = {lane.instance_id for lane in lanes}
    while True:
        infos = await client.lanes_info()
        ready = {i.profile.instance_id for i in infos if i.status == "paired_connected"}
        if wanted <= ready:
            return
        if time.monotonic() > deadline:
            missing = sorted(wanted - ready)
            raise TimeoutError(f"lanes not connected in time: {missing}")
        await asyncio.sleep(0.2)


async def _purchase(
    client: AsyncClient, index: int, result: _Result, killed: asyncio.Event
) -> None:
    lane = result.lane

    def progress(event: bs.Event) -> None:
        text = getattr(event, "display_text", None)
        if text:
            _say(f"lane {index} ({lane.serial}): terminal shows {text!r}")
            if index == KILLED_LANE and not killed.is_set():
                killed.set()

    try:
        result.outcome = await client.purchase(
            lane.instance_id, result.amount_cents, timeout=45.0, on_event=progress
        )
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"


async def _kill_mid_purchase(
    client: AsyncClient, lane: StackLane, card_shown: asyncio.Event
) -> None:
    await card_shown.wait()
    info = await client.lane_info(lane.instance_id)
    if info.pid is None:
        _say(f"lane {KILLED_LANE}: no pid to kill?")
        return
    _say(f"lane {KILLED_LANE}: kill -9 {info.pid} while the customer is still at the terminal")
    os.kill(info.pid, signal.SIGKILL)


async def run_demo(data_dir: Path) -> int:
    """Run the scripted demo in ``data_dir``; 0 when every outcome was as scripted."""
    started = time.monotonic()
    print(f"multipair demo: {TERMINALS} simulated terminals, one lane each (data in {data_dir})")
    async with Stack(data_dir, simulate=TERMINALS, progress=_say) as stack:
        client = stack.client
        assert client is not None
        lanes = stack.lanes
        await _wait_connected(client, lanes, 30.0)
        print(f"\nall {len(lanes)} lanes paired and connected; purchases on every lane at once:")
        results = [
            _Result(
                lane=lane,
                amount_cents=_amount(i),
                expected="failed" if i == DECLINED_LANE else "success",
                expect_recovered=i == KILLED_LANE,
            )
            for i, lane in enumerate(lanes, start=1)
        ]
        for i, r in enumerate(results, start=1):
            _say(f"lane {i} ({r.lane.serial}): purchase of ${r.amount_cents / 100:.2f}")
        card_shown = asyncio.Event()
        await asyncio.gather(
            _kill_mid_purchase(client, lanes[KILLED_LANE - 1], card_shown),
            *(
                _purchase(client, i, r, card_shown if i == KILLED_LANE else asyncio.Event())
                for i, r in enumerate(results, start=1)
            ),
        )
        for r in results:
            info = await client.lane_info(r.lane.instance_id)
            r.restarts = info.restarts
        ok = _summary(results)
    print(f"\nfinished in {time.monotonic() - started:.1f} s")
    _where_next(data_dir)
    return 0 if ok else 1


def _summary(results: list[_Result]) -> bool:
    print("\nsummary")
    header = f"  {'lane':<6}{'serial':<10}{'amount':>9}  {'transactions':>12}{'approved':>9}"
    header += f"{'declined':>9}{'recovered':>10}{'restarts':>9}  as scripted"
    print(header)
    all_ok = True
    for i, r in enumerate(results, start=1):
        o = r.outcome
        approved = int(o is not None and o.result == "success")
        declined = int(o is not None and o.result == "failed")
        recovered = int(o is not None and o.recovered)
        ok = (
            o is not None
            and o.result == r.expected
            and o.recovered == r.expect_recovered
            and (r.restarts >= 1) == r.expect_recovered
        )
        all_ok = all_ok and ok
        verdict = "yes" if ok else f"NO ({r.error or (o.result if o else 'no outcome')})"
        print(
            f"  {i:<6}{r.lane.serial:<10}{r.amount_cents / 100:>9.2f}  {1:>12}{approved:>9}"
            f"{declined:>9}{recovered:>10}{r.restarts:>9}  {verdict}"
        )
    print(
        "\n" + ("every outcome was as scripted" if all_ok else "SOME OUTCOMES WERE NOT AS SCRIPTED")
    )
    return all_ok


def _where_next(data_dir: Path) -> None:
    print(
        "\nwhere to look next:\n"
        f"  logs of every process:   {data_dir}/logs/ (JSON lines)\n"
        "  put multipair on PATH:   source .venv/bin/activate   (or run .venv/bin/multipair)\n"
        "  run it yourself:         multipair up --simulate 8\n"
        "                           then, in a second terminal in the same folder:\n"
        "                           multipair status; multipair tx purchase ID --amount 1\n"
        "  the Redis contract:      docs/broker-schema.md\n"
        "  the protocol core:       src/multipair/spi/ and ../shared/spi/PROTOCOL.md"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m multipair.demo", description=__doc__)
    parser.add_argument("--data-dir", type=Path, help="default: a new temporary folder")
    args = parser.parse_args(argv)
    data_dir: Path = args.data_dir or Path(tempfile.mkdtemp(prefix="multipair-demo-"))
    try:
        return asyncio.run(run_demo(data_dir))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
