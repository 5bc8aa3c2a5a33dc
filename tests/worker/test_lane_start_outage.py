"""A lane started while Redis is away waits for it instead of exiting (a crash)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import redis.asyncio as aioredis

from multipair.embedded import RedisServer
from tests.simulator.helpers import KEYS, paired_simulator
from tests.worker.helpers import make_rig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_lane_started_during_a_redis_outage_waits_and_then_serves(
    tmp_path: Path, key_prefix: str
) -> None:
    port = _free_port()
    server = RedisServer(port=port, data_dir=tmp_path / "redis", appendonly=True)
    server.start()
    url = server.url
    client = aioredis.Redis.from_url(url)
    async with paired_simulator(tmp_path / "sim", 1) as sim:
        rig = await make_rig(
            client, url, key_prefix, tmp_path, address=sim.terminals[0].ws_url, secrets=KEYS
        )
        await client.aclose()
        server.kill()  # Redis away before the lane starts
        await rig.process.start()
        try:
            await asyncio.sleep(2.0)  # the outage lasts 2 s; the lane must outlive it
            assert rig.process.proc is not None
            assert rig.process.proc.returncode is None, rig.process.logs()
            assert "redis unreachable at start" in rig.process.logs()
            server.start()  # back, from its AOF, on the same port
            rig.redis = aioredis.Redis.from_url(url)
            rig.events.redis = rig.redis
            await rig.wait_state(status="paired_connected")
            done = await rig.answer(
                await rig.send({"type": "purchase", "pos_ref_id": "late-1", "amount_cents": 500})
            )
            assert "success" == done["result"]
        finally:
            await rig.process.kill()
            await rig.redis.aclose()
            server.stop()
