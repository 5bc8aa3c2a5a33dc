"""How a lane finds and reaches its terminal: device-address service, wss://."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from multipair.simulator import Simulator
from tests.poll import poll_until
from tests.simulator.helpers import KEYS, seed_paired_state
from tests.worker.helpers import WAIT, LaneRig, make_rig

SERIAL = "SIM-0001"


async def _auto_address_rig(
    redis: aioredis.Redis,
    redis_url: str,
    key_prefix: str,
    tmp_path: Path,
    sim: Simulator,
    *,
    api_key: str,
    **profile_fields: Any,
) -> LaneRig:
    """A paired lane that finds its terminal through ``sim``'s device-address service."""
    return await make_rig(
        redis,
        redis_url,
        key_prefix,
        tmp_path,
        address=None,
        secrets=KEYS,
        auto_address=True,
        tenant_code="wbc",  # §13.2: keeps the port the service reports
        env={
            "MULTIPAIR_DEVICE_API_KEY": api_key,
            "MULTIPAIR_DEVICE_ADDRESS_BASE_URL": sim.device_address_url,
        },
        **profile_fields,
    )


async def test_auto_address_resolves_the_terminal_through_the_device_address_service(
    redis: aioredis.Redis, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    seed_paired_state(tmp_path / "sim", SERIAL)
    async with Simulator(1, state_dir=tmp_path / "sim", device_api_key="dev-key") as sim:
        rig = await _auto_address_rig(
            redis, redis_url, key_prefix, tmp_path, sim, api_key="dev-key", test_mode=True
        )
        await rig.process.start()
        try:
            await rig.wait_state(status="paired_connected")
            done = await rig.answer(
                await rig.send({"type": "purchase", "pos_ref_id": "auto-1", "amount_cents": 100})
            )
            assert "success" == done["result"]
            assert '"device address lookup"' in rig.process.logs()
        finally:
            await rig.process.kill()


async def test_a_wrong_device_api_key_is_reported_and_the_lane_keeps_running(
    redis: aioredis.Redis, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    async with Simulator(1, device_api_key="dev-key") as sim:
        rig = await _auto_address_rig(
            redis, redis_url, key_prefix, tmp_path, sim, api_key="wrong-key"
        )
        await rig.process.start()
        try:
            await rig.wait_state(status="paired_connecting")

            async def address_error() -> dict[str, str] | None:
                state = await rig.state()
                if "device address" in state.get("last_error", ""):
                    return state
                await rig.events.poll(100)  # the pace: reads the events meanwhile
                return None

            state = await poll_until(
                address_error, "a device address error in last_error", WAIT, interval=0
            )
            assert "DEVICE_SERVICE_ERROR" in state["last_error"]
            assert rig.process.proc is not None
            assert rig.process.proc.returncode is None
        finally:
            await rig.process.kill()


async def test_secure_lane_connects_over_wss_and_verifies_the_certificate(
    redis: aioredis.Redis, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    seed_paired_state(tmp_path / "sim", SERIAL)
    async with Simulator(1, state_dir=tmp_path / "sim", tls=True) as sim:
        url = sim.terminals[0].ws_url
        assert url.startswith("wss://")
        assert sim.cert_path is not None
        rig = await make_rig(
            redis,
            redis_url,
            key_prefix,
            tmp_path,
            address=url,
            secrets=KEYS,
            secure=True,
            env={"MULTIPAIR_TLS_CA_FILE": str(sim.cert_path)},
        )
        await rig.process.start()
        try:
            await rig.wait_state(status="paired_connected")
            done = await rig.answer(
                await rig.send({"type": "purchase", "pos_ref_id": "tls-1", "amount_cents": 100})
            )
            assert "success" == done["result"]
        finally:
            await rig.process.kill()
