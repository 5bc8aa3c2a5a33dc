"""jobs.purchase and jobs.refund under a real ``rq worker``: outcomes, never a blind re-send."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis

from multipair import jobs
from multipair.jobs.money import money_command_id
from tests.jobs.helpers import running_fleet


async def test_approved_declined_and_refund_jobs_return_the_outcome(
    redis: aioredis.Redis, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    async with running_fleet(redis, redis_url, key_prefix, tmp_path, 1) as rig:
        iid = rig.lanes[0].instance_id
        ok = rig.jobs.enqueue(jobs.purchase, iid, 1000, "order-1", tip_cents=100)
        declined = rig.jobs.enqueue(jobs.purchase, iid, 1051, "order-2")
        refund = rig.jobs.enqueue(jobs.refund, iid, 400, "refund-1")
        again = rig.jobs.enqueue(jobs.purchase, iid, 1000, "order-1", tip_cents=100)
        assert ["finished"] * 4 == await rig.worker().run(rig.jobs, ok, declined, refund, again)

        approved = rig.jobs.result(ok)
        assert ("transaction_completed", "success", "order-1") == (
            approved["type"],
            approved["result"],
            approved["pos_ref_id"],
        )
        assert (money_command_id("purchase", "order-1"), 1000, 100) == (
            approved["command_id"],
            approved["amount_cents"],
            approved["tip_cents"],
        )
        assert ("failed", "51") == (
            rig.jobs.result(declined)["result"],
            rig.jobs.result(declined)["host_response_code"][:2],
        )
        assert ("success", "refund") == (
            rig.jobs.result(refund)["result"],
            rig.jobs.result(refund)["tx_type"],
        )
        # The same job again (same pos_ref_id): answered from the lane's record, not charged.
        repeated = rig.jobs.result(again)
        assert ("success", approved["rrn"]) == (repeated["result"], repeated["rrn"])
        snapshot = await rig.control.get(rig.lanes[0].serial)
        assert 1 == snapshot["purchase_requests"]["order-1"]


async def test_an_unknown_outcome_raises_after_a_lookup_and_a_retry_never_sends_it_again(
    redis: aioredis.Redis, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    async with running_fleet(redis, redis_url, key_prefix, tmp_path, 1) as rig:
        lane = rig.lanes[0]
        # .59: the connection drops right after the request (approved on the terminal), and
        # the terminal cannot answer lookups: the lane publishes `unknown`.
        await rig.control.post(lane.serial, "options", {"get_transaction_error": "INTERNAL_ERROR"})
        job = rig.jobs.enqueue(jobs.purchase, lane.instance_id, 1059, "order-3", rq_retries=1)
        assert ["failed"] == await rig.worker().run(rig.jobs, job)

        failure = rig.jobs.error(job)
        assert "OutcomeUnknown" in failure
        assert "INTERNAL_ERROR" in failure
        command_id = money_command_id("purchase", "order-3")
        await lane.mark()
        completed = lane.events.of_type("transaction_completed", command_id=command_id)
        repeats = lane.events.of_type("transaction_lookup", command_id=command_id)
        lookups = lane.events.of_type("transaction_lookup", pos_ref_id="order-3")
        assert ["unknown"] == [e["result"] for e in completed]
        # RQ's retry ran the job a second time: the same command, answered from the record.
        assert [("unknown", True)] == [(e["result"], e["found"]) for e in repeats]
        assert 3 == len(lookups)  # one repeat answer and one get_transaction per run
        snapshot = await rig.control.get(lane.serial)
        assert 1 == snapshot["purchase_requests"]["order-3"]

        # Once the terminal can answer, the same job learns the true outcome.
        await rig.control.post(lane.serial, "options", {"get_transaction_error": None})
        again = rig.jobs.enqueue(jobs.purchase, lane.instance_id, 1059, "order-3")
        assert ["finished"] == await rig.worker().run(rig.jobs, again), rig.jobs.error(again)
        learned = rig.jobs.result(again)
        assert ("success", True, command_id) == (
            learned["result"],
            learned["recovered"],
            learned["command_id"],
        )
        snapshot = await rig.control.get(lane.serial)
        assert 1 == snapshot["purchase_requests"]["order-3"]
