"""The moments of the load at which tests/ha kills a primary, and a supervised fleet for them.

``arm(step)`` returns at the moment of ``step``:

- ``records``: right after the POS ``XADD``\\s a purchase (the lane is claiming
  it and writing its record, and waiting for the replica to confirm it);
- ``at_terminal``: every terminal holds a request (a card delay keeps the
  answer back), so every lane has a request out;
- ``outcomes``: right as a terminal finished a transaction (its result is on
  the way to the lane, which writes the outcome and waits for the replica).

``release(step)`` undoes what ``arm`` set on the terminals.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any, Final

from multipair.simulator import Simulator
from tests.ha.pos import Pos
from tests.poll import poll_until
from tests.supervisor.helpers import Fleet, Lane, SupervisorProcess

__all__ = ["STEPS", "Round", "amount_mix", "arm", "release", "start_supervised"]

STEPS: Final = ("records", "at_terminal", "outcomes")
APPROVE, DECLINE, SLOW_CARD = 1000, 1051, 1054
HOLD_S: Final = 2.0
"""How long a terminal keeps the answer back for ``at_terminal``."""


def amount_mix(seed: int) -> Any:
    """(lane, n) -> cents: mostly approvals, some declines and slow cards, seeded per lane."""

    def amount(lane: int, n: int) -> int:
        roll = random.Random(f"{seed}-{lane}-{n}").random()
        return DECLINE if roll < 0.15 else SLOW_CARD if roll < 0.22 else APPROVE

    return amount


async def arm(step: str, pos: Pos, sim: Simulator, timeout: float = 30.0) -> None:
    if step == "records":
        pos.sent.clear()
        await asyncio.wait_for(pos.sent.wait(), timeout)
    elif step == "at_terminal":
        for terminal in sim.terminals:
            terminal.settings.card_delay = HOLD_S
        await poll_until(
            lambda: all(t.session.current_tx is not None for t in sim.terminals),
            "every terminal holding a request",
            timeout,
            interval=0.01,
        )
    elif step == "outcomes":
        before = [t.session.state.last_tx for t in sim.terminals]
        await poll_until(
            lambda: [t.session.state.last_tx for t in sim.terminals] != before,
            "a transaction finished",
            timeout,
            interval=0.001,
        )
    else:
        raise ValueError(step)


def release(step: str, sim: Simulator) -> None:
    if step == "at_terminal":
        for terminal in sim.terminals:
            terminal.settings.card_delay = 0.0


@dataclass
class Round:
    """One kill: when, how long until the promotion, how long until every lane answered."""

    step: str
    kill_to_promotion_s: float
    promotion_to_answered_s: list[float] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "kill_to_promotion_s": round(self.kill_to_promotion_s, 3),
            "promotion_to_answered_s": self.promotion_to_answered_s,
            "promotion_to_all_answered_s": max(self.promotion_to_answered_s, default=None),
        }


async def start_supervised(
    fleet: Fleet, lanes: int, *, host_id: str = "host-a", **env: str
) -> tuple[SupervisorProcess, list[Lane]]:
    """A supervisor (``env`` added to the fleet's) running ``lanes`` lanes, all connected."""
    sup = SupervisorProcess(
        fleet.env(**env), host_id, fleet.tmp_path / f"supervisor-{host_id}.log", capacity=10
    )
    fleet.supervisors.append(sup)
    await sup.start()
    added = [await fleet.add_lane(i) for i in range(lanes)]
    for lane in added:
        await lane.running(timeout=90)
    return sup, added
