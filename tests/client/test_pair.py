"""``pair`` never leaves a pairing behind it: given up, it sends ``pair_cancel`` for it.

No lane process runs here: what matters is what the client puts on the
lane's command stream (the lane's side is in tests/worker/test_lane_pairing.py
and tests/cli/test_lane_pair.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from multipair import broker_schema as bs
from multipair.client import AsyncClient, Client, OutcomeTimeout
from tests.poll import poll_until_sync
from tests.worker.helpers import LaneRig, make_rig


async def _commands(redis_client: aioredis.Redis, rig: LaneRig) -> list[dict[str, Any]]:
    entries: Any = await redis_client.xrange(rig.keys.commands(rig.instance_id))
    return [orjson.loads(fields[b"body"]) for _, fields in entries]


async def test_pair_that_times_out_sends_pair_cancel_for_its_pairing(
    client: AsyncClient, redis: aioredis.Redis, rig: LaneRig
) -> None:
    before = dt.datetime.now(dt.UTC)
    with pytest.raises(OutcomeTimeout) as caught:
        await client.pair(rig.instance_id, confirm=True, timeout=0.5)
    assert (
        f"pairing of lane {rig.instance_id} did not finish within 0.5s; "
        "sent pair_cancel: the lane cancels the pairing"
    ) == caught.value.detail

    pair, cancel = await _commands(redis, rig)
    assert ("pair", "pair_cancel") == (pair["type"], cancel["type"])
    assert pair["command_id"] == cancel["pair_command_id"]
    # The lane's own deadline, should the pair_cancel not reach it: just after ours.
    expires_at = bs.parse_time(pair["expires_at"], "expires_at")
    assert 2.0 <= (expires_at - before).total_seconds() < 3.5


async def test_pair_cancelled_while_it_waits_sends_pair_cancel_first(
    client: AsyncClient, redis: aioredis.Redis, rig: LaneRig
) -> None:
    waiting = asyncio.create_task(client.pair(rig.instance_id, timeout=60))
    stream = rig.keys.commands(rig.instance_id)
    assert await redis.xread({stream: "0"}, count=1, block=10_000)  # the pair is sent
    waiting.cancel()  # as Ctrl-C does to `multipair lane pair`
    with pytest.raises(asyncio.CancelledError):
        await waiting

    pair, cancel = await _commands(redis, rig)
    assert ("pair_cancel", pair["command_id"]) == (cancel["type"], cancel["pair_command_id"])


async def _lane_without_process(redis_url: str, prefix: str, tmp_path: Path) -> LaneRig:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return await make_rig(client, redis_url, prefix, tmp_path, address="ws://127.0.0.1:9")
    finally:
        await client.aclose()


def test_blocking_pair_interrupted_sends_pair_cancel_first(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    rig = asyncio.run(_lane_without_process(redis_url, key_prefix, tmp_path))
    stream = rig.keys.commands(rig.instance_id)
    plain = redis.Redis.from_url(redis_url)
    main = threading.main_thread().ident
    assert main is not None

    def ctrl_c_once_the_pair_is_sent() -> None:
        try:
            poll_until_sync(lambda: plain.xlen(stream) or None, "the pair sent", 10, interval=0.01)
        finally:
            signal.pthread_kill(main, signal.SIGINT)

    operator = threading.Thread(target=ctrl_c_once_the_pair_is_sent)
    try:
        with Client(redis_url, prefix=key_prefix) as client:
            operator.start()
            with pytest.raises(KeyboardInterrupt):
                client.pair(rig.instance_id, timeout=60)
        entries: Any = plain.xrange(stream)
        bodies = [orjson.loads(fields[b"body"]) for _, fields in entries]
    finally:
        operator.join()
        plain.close()
    pair, cancel = bodies
    assert ("pair_cancel", pair["command_id"]) == (cancel["type"], cancel["pair_command_id"])
