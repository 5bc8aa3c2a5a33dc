"""A lane counts its outcomes and refusals in its state hash, in the same write (issue 15).

The supervisor turns these totals into Prometheus series
(tests/supervisor/test_metrics.py); here one real lane process is checked
against broker_schema.counters: one more ``m:tx:<type>:<result>`` per
outcome, its time in one bucket and in the sum, one more ``m:rej:<reason>``
per refusal.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from multipair.broker_schema import counters
from multipair.redis_conn import text_map
from multipair.worker.translate import TX_TYPES
from tests.worker.helpers import LaneRig


def test_the_counted_outcome_types_are_the_lanes_transaction_types() -> None:
    assert sorted(TX_TYPES) == sorted(counters.OUTCOME_TYPES)


async def test_outcomes_and_refusals_are_counted_in_the_state_hash(
    lane: LaneRig, redis: aioredis.Redis
) -> None:
    for ref, cents in (("c-1", 1000), ("c-2", 1051), ("c-3", 1000)):
        await lane.answer(
            await lane.send({"type": "purchase", "pos_ref_id": ref, "amount_cents": cents})
        )
    refused = await lane.send({"type": "purchase", "pos_ref_id": "c-4", "amount_cents": -5})
    assert "invalid_value" == (await lane.answer(refused))["reason"]
    state = text_map(await redis.hgetall(lane.keys.state(lane.instance_id)))
    totals = {name: int(value) for name, value in state.items() if counters.parse_counter(name)}
    buckets = sum(v for k, v in totals.items() if k.startswith("m:txb:purchase:"))
    assert (2, 1, 3, 1) == (
        totals[counters.tx_count("purchase", "success")],
        totals[counters.tx_count("purchase", "failed")],
        buckets,
        totals[counters.rejection("invalid_value")],
    )
    assert 0 < totals["m:txus:purchase"] < 3 * 10_000_000, "three simulated sales, well under 10 s"
