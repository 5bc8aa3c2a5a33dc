"""Pairing through commands, bad input, and secrets that never leak."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from multipair.simulator import Simulator
from tests.simulator.helpers import KEYS
from tests.worker.helpers import LaneRig, make_rig

SERIAL = "SIM-0001"


async def test_pairing_works_entirely_through_commands_and_events(
    redis: aioredis.Redis, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    async with Simulator(1, state_dir=tmp_path / "sim", pairing="manual") as sim:  # unpaired
        rig = await make_rig(
            redis, redis_url, key_prefix, tmp_path, address=sim.terminals[0].ws_url
        )
        await rig.process.start()
        try:
            await rig.wait_state(status="unpaired")
            pair_id = await rig.send({"type": "pair"})
            shown = await rig.events.wait_for(
                lambda b: b["type"] == "pairing" and b.get("confirmation_code")
            )
            terminal = sim.terminals[0].session
            assert terminal.confirmation_code == shown["confirmation_code"]
            await rig.send(
                {"type": "pair_confirm", "confirmation_code": shown["confirmation_code"]}
            )
            await rig.events.wait_for(
                lambda b: (
                    b["type"] == "pairing"
                    and b.get("awaiting_terminal")
                    and not b.get("awaiting_pos")
                )
            )
            async with (  # the merchant presses OK on the terminal
                aiohttp.ClientSession() as http,
                http.post(f"{sim.control_url}/terminals/{SERIAL}/pairing/confirm") as r,
            ):
                assert 200 == r.status
            paired = await rig.events.wait_for(
                lambda b: b["type"] == "pairing" and b["state"] == "succeeded"
            )
            assert pair_id == paired["command_id"]
            await rig.wait_state(status="paired_connected")
            stored = await rig.profiles.load_secrets(rig.instance_id)
            assert stored is not None
            assert terminal.state.secrets is not None
            assert stored.same_as(terminal.state.secrets)
            profile: Any = await redis.hgetall(rig.keys.profile(rig.instance_id))
            raw = b"".join(v for v in profile.values())
            for key in (stored.enc_key, stored.hmac_key):
                assert key.lower().encode() not in raw.lower()  # sealed at rest
            done = await rig.answer(
                await rig.send({"type": "purchase", "pos_ref_id": "first", "amount_cents": 500})
            )
            assert "success" == done["result"]
        finally:
            await rig.process.kill()


def _malformed(rng: random.Random, i: int) -> tuple[dict[FieldT, EncodableT], str]:
    """One bad stream entry and the reason the lane must give for it."""
    good = {
        "type": "purchase",
        "command_id": f"bad-{i}",
        "pos_ref_id": f"bad-{i}",
        "amount_cents": 100,
    }
    kind = rng.randrange(12)
    if kind == 0:
        return {"v": "1", "body": b"{not json"}, "not_json"
    if kind == 1:
        return {"v": "2", "body": orjson.dumps(good)}, "unsupported_version"
    if kind == 2:
        return {"body": orjson.dumps(good)}, "bad_entry"
    if kind == 3:
        return {"v": "1", "body": orjson.dumps([1, 2])}, "not_an_object"
    if kind == 4:
        return {"v": "1", "body": orjson.dumps({**good, "type": "teleport"})}, "unknown_type"
    if kind == 5:
        body = dict(good)
        del body["amount_cents"]
        return {"v": "1", "body": orjson.dumps(body)}, "missing_field"
    if kind == 6:
        return {"v": "1", "body": orjson.dumps({**good, "amount_cents": 12.5})}, "wrong_type"
    if kind == 7:
        return {"v": "1", "body": orjson.dumps({**good, "amount_cents": -5})}, "invalid_value"
    if kind == 8:
        return {"v": "1", "body": orjson.dumps({**good, "amount_cents": "100"})}, "wrong_type"
    if kind == 9:
        return {"v": "1", "body": orjson.dumps({**good, "surprise": 1})}, "unknown_field"
    if kind == 10:
        return {"v": "1", "body": b"{" + b'"a":' * 1 + b'"' + b"x" * 70_000 + b'"}'}, "oversize"
    return {"v": "1", "body": orjson.dumps({**good, "amount_cents": True})}, "wrong_type"


async def test_a_thousand_malformed_commands_never_stop_the_valid_ones(lane: LaneRig) -> None:
    await check_malformed_commands(lane, 1000)


async def check_malformed_commands(rig: LaneRig, count: int) -> None:
    """``count`` bad entries, a good purchase every 50: all rejected, all purchases done."""
    rng = random.Random(7)
    expected_reasons: dict[str, str] = {}
    valid: list[str] = []
    for i in range(count):
        fields, reason = _malformed(rng, i)
        await rig.send_raw(fields)
        expected_reasons[str(i)] = reason
        if i % 50 == 0:
            valid.append(
                await rig.send(
                    {"type": "purchase", "pos_ref_id": f"ok-{i}", "amount_cents": 1000 + i // 50}
                )
            )
    for command_id in valid:
        await rig.answer(command_id, 60)
    await rig.wait_acknowledged(60)
    rejected = rig.events.of_type("command_rejected")
    assert count == len(rejected)
    got = sorted(r["reason"] for r in rejected)
    assert sorted(expected_reasons.values()) == got
    completed = [b["pos_ref_id"] for b in rig.events.of_type("transaction_completed")]
    assert [f"ok-{i}" for i in range(0, count, 50)] == completed  # all, in stream order
    assert all(b["result"] == "success" for b in rig.events.of_type("transaction_completed"))
    assert 1 == len(rig.events.of_type("lane_started"))  # the lane never restarted
    assert rig.process.proc is not None
    assert rig.process.proc.returncode is None
    dead = await rig.redis.xlen(rig.keys.dead_letter(rig.instance_id))
    assert count == dead


async def test_garbage_from_the_terminal_is_counted_and_the_lane_goes_on(
    lane: LaneRig, sim: Simulator
) -> None:
    async with aiohttp.ClientSession() as http:
        for kind in ("garbage", "bad_signature"):
            async with http.post(
                f"{sim.control_url}/terminals/{SERIAL}/inject", json={"kind": kind}
            ) as response:
                assert 200 == response.status
    await lane.wait_state(frames_rejected="2")
    done = await lane.answer(
        await lane.send({"type": "purchase", "pos_ref_id": "after-garbage", "amount_cents": 100})
    )
    assert "success" == done["result"]
    assert 1 == len(lane.events.of_type("lane_started"))


async def test_no_key_material_in_logs_or_events(lane: LaneRig, sim: Simulator) -> None:
    await lane.answer(
        await lane.send({"type": "purchase", "pos_ref_id": "sc-1", "amount_cents": 100})
    )
    async with (  # roll the keys: new key material appears
        aiohttp.ClientSession() as http,
        http.post(f"{sim.control_url}/terminals/{SERIAL}/key-rollover", json={}) as r,
    ):
        assert 200 == r.status
    rolled = KEYS.rolled()
    await lane.answer(
        await lane.send({"type": "purchase", "pos_ref_id": "sc-2", "amount_cents": 100})
    )
    stored = await lane.profiles.load_secrets(lane.instance_id)
    assert stored is not None
    assert stored.same_as(rolled)  # persisted after the roll
    await lane.events.poll(0)
    haystack = (lane.process.logs() + orjson.dumps(lane.events.seen).decode()).lower()
    assert haystack
    for secrets in (KEYS, rolled):
        for key in (secrets.enc_key, secrets.hmac_key):
            assert key.lower() not in haystack
            assert key.lower()[:16] not in haystack
            assert key.lower()[-8:] not in haystack
