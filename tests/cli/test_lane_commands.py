"""``multipair lane ...``: exit codes, ``--json`` shapes, and what each action changes in Redis."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import redis.asyncio as aioredis

from multipair import broker_schema as bs
from multipair.leases import LeaseManager
from multipair.store.profiles import LaneProfile, ProfileStore
from multipair.supervisor.control import default_requester
from tests.cli.helpers import Cli
from tests.simulator.helpers import KEYS

PROFILE_FIELDS = {
    "instance_id",
    "pos_id",
    "serial_number",
    "device_address",
    "auto_address",
    "tenant_code",
    "test_mode",
    "secure",
    "print_merchant_copy",
    "prompt_for_customer_copy",
    "signature_flow_on_eftpos",
    "enabled",
    "created_at",
    "pat",
}

INFO_FIELDS = {
    "instance_id",
    "pos_id",
    "serial_number",
    "enabled",
    "running",
    "status",
    "flow",
    "host",
    "pid",
    "owner",
    "heartbeat_at",
    "started_at",
    "uptime_s",
    "restarts",
    "crash_loop",
    "last_exit",
    "last_exit_cause",
    "last_error",
    "last_pos_ref_id",
    "last_result",
}


async def _add(
    redis: aioredis.Redis, cli: Cli, *, serial: str = "SIM-0001", instance_id: str | None = None
) -> str:
    """A lane made straight in Redis (``lane add`` itself is tested on its own)."""
    profile = LaneProfile(
        instance_id=instance_id or str(uuid.uuid4()),
        pos_id="POS1",
        serial_number=serial,
        device_address="ws://127.0.0.1:1",
    )
    return (await _profiles(redis, cli).create(profile)).instance_id


def _profiles(redis: aioredis.Redis, cli: Cli) -> ProfileStore:
    return ProfileStore(redis, bs.Keys(cli.prefix))


async def _control_messages(redis: aioredis.Redis, cli: Cli, host: str) -> list[dict[str, Any]]:
    entries: Any = await redis.xrange(bs.Keys(cli.prefix).host_control(host))
    return [orjson.loads(fields[b"body"]) for _, fields in entries]


# ---------------------------------------------------------------------- add


async def test_lane_add_prints_the_profile_as_json(cli: Cli, redis: aioredis.Redis) -> None:
    result = await cli.run(
        "lane",
        "add",
        "--pos-id",
        "POS7",
        "--serial",
        "202-206-301",
        "--auto-address",
        "--tenant",
        "wbc",
        "--test-mode",
        "--secure",
    )
    assert 0 == result.code, result
    doc = result.json()
    assert PROFILE_FIELDS == set(doc)
    assert ("POS7", "202-206-301", None, True, "wbc", True, True, True) == (
        doc["pos_id"],
        doc["serial_number"],
        doc["device_address"],
        doc["auto_address"],
        doc["tenant_code"],
        doc["test_mode"],
        doc["secure"],
        doc["enabled"],
    )
    stored = await _profiles(redis, cli).get(doc["instance_id"])
    assert "202-206-301" == stored.serial_number


async def test_lane_add_prints_only_the_instance_id_for_people(
    cli: Cli, redis: aioredis.Redis
) -> None:
    wanted = str(uuid.uuid4())
    result = await cli.run(
        "lane",
        "add",
        "--pos-id",
        "POS1",
        "--serial",
        "S1",
        "--address",
        "ws://10.0.0.5:8080",
        "--id",
        wanted,
        json=False,
    )
    assert 0 == result.code, result
    assert f"{wanted}\n" == result.out
    assert "ws://10.0.0.5:8080" == (await _profiles(redis, cli).get(wanted)).device_address


async def test_lane_add_refuses_bad_values_and_a_taken_id(cli: Cli, redis: aioredis.Redis) -> None:
    iid = await _add(redis, cli)
    bad_pos, taken = await asyncio.gather(
        cli.run("lane", "add", "--pos-id", "POS_1!", "--serial", "S", "--auto-address"),
        cli.run("lane", "add", "--pos-id", "P", "--serial", "S", "--auto-address", "--id", iid),
    )
    assert (2, 2) == (bad_pos.code, taken.code)
    assert "" == bad_pos.out == taken.out
    assert "pos_id must be 1-16 letters or digits" in bad_pos.err
    assert f"lane {iid} already exists" in taken.err


# ---------------------------------------------------------------------- list, show


async def test_lane_list_shows_every_lane_oldest_first(cli: Cli, redis: aioredis.Redis) -> None:
    first = await _add(redis, cli, serial="S-1")
    await asyncio.sleep(0.005)  # creation times are in ms: two made in one ms tie (then by id)
    second = await _add(redis, cli, serial="S-2")
    machine, human = await asyncio.gather(
        cli.run("lane", "list"), cli.run("lane", "list", json=False)
    )
    assert (0, 0) == (machine.code, human.code)
    lanes = machine.json()["lanes"]
    assert [first, second] == [lane["instance_id"] for lane in lanes]
    assert all(PROFILE_FIELDS == set(lane) for lane in lanes)
    assert first in human.out
    assert second in human.out
    assert "S-2" in human.out


async def test_lane_show_gives_profile_state_and_owner_but_never_secrets(
    cli: Cli, redis: aioredis.Redis
) -> None:
    iid = await _add(redis, cli)
    from multipair.store.secrets_box import MasterKey

    await ProfileStore(redis, bs.Keys(cli.prefix), MasterKey.generate()).save_secrets(iid, KEYS)
    await LeaseManager(redis, bs.Keys(cli.prefix), "host-a").acquire(iid)
    machine, human = await asyncio.gather(
        cli.run("lane", "show", iid), cli.run("lane", "show", iid[:8], json=False)
    )
    assert (0, 0) == (machine.code, human.code)
    doc = machine.json()
    assert INFO_FIELDS | {"profile"} == set(doc)
    assert PROFILE_FIELDS == set(doc["profile"])
    assert (iid, "host-a", True) == (doc["instance_id"], doc["owner"], doc["running"])
    for secret in (KEYS.enc_key, KEYS.hmac_key, "v1:"):
        assert secret not in machine.out
        assert secret not in human.out
    assert iid in human.out
    assert "owner host        host-a" in human.out


async def test_a_short_id_must_name_exactly_one_lane(cli: Cli, redis: aioredis.Redis) -> None:
    a1 = await _add(redis, cli, instance_id="aaaaaaaa-0000-4000-8000-000000000001")
    a2 = await _add(redis, cli, instance_id="aaaaaaaa-0000-4000-8000-000000000002")
    b1 = await _add(redis, cli, instance_id="bbbbbbbb-0000-4000-8000-000000000001")
    ambiguous, unique, short = await asyncio.gather(
        cli.run("lane", "show", "aaaaaaaa"),
        cli.run("lane", "show", "bbbb"),
        cli.run("lane", "show", "bbb"),
    )
    assert (2, 0, 2) == (ambiguous.code, unique.code, short.code)
    assert f"multipair: error: lane id 'aaaaaaaa' matches 2 lanes: {a1}, {a2}\n" == ambiguous.err
    assert b1 == unique.json()["instance_id"]
    assert "too short" in short.err


async def test_a_damaged_profile_is_one_line_not_a_traceback(
    cli: Cli, redis: aioredis.Redis
) -> None:
    iid = await _add(redis, cli)
    await redis.hset(bs.Keys(cli.prefix).profile(iid), "enabled", "maybe")
    result = await cli.run("lane", "show", iid)
    assert 2 == result.code, result
    assert [
        f"multipair: error: the stored profile of lane {iid} is damaged: "
        "invalid_value: enabled must be 0 or 1"
    ] == result.error_lines()


# ---------------------------------------------------------------------- stop, start, restart


async def test_lane_stop_and_start_set_enabled_even_with_no_host(
    cli: Cli, redis: aioredis.Redis
) -> None:
    iid = await _add(redis, cli)
    profiles = _profiles(redis, cli)
    stopped = await cli.run("lane", "stop", iid)
    assert 0 == stopped.code, stopped
    assert {
        "instance_id": iid,
        "action": "stop",
        "enabled": False,
        "owner": None,
        "control_sent": False,
    } == stopped.json()
    assert False is (await profiles.get(iid)).enabled
    started = await cli.run("lane", "start", iid, json=False)
    assert 0 == started.code, started
    assert "no host owns it yet" in started.out
    assert True is (await profiles.get(iid)).enabled


async def test_stop_restart_and_start_go_to_the_host_that_holds_the_lease(
    cli: Cli, redis: aioredis.Redis
) -> None:
    iid = await _add(redis, cli)
    await LeaseManager(redis, bs.Keys(cli.prefix), "host-a").acquire(iid)
    for action in ("restart", "stop", "start"):
        result = await cli.run("lane", action, iid)
        assert 0 == result.code, result
        assert (action, "host-a", True) == (
            result.json()["action"],
            result.json()["owner"],
            result.json()["control_sent"],
        )
    # Each says who asked: user@host of the CLI (the supervisor logs it).
    asked = default_requester()
    assert [
        {"action": "restart", "instance_id": iid, "requested_by": asked},
        {"action": "stop", "instance_id": iid, "requested_by": asked},
        {"action": "start", "instance_id": iid, "requested_by": asked},
    ] == await _control_messages(redis, cli, "host-a")
    assert True is (await _profiles(redis, cli).get(iid)).enabled


async def test_restart_needs_a_host_and_a_started_lane(cli: Cli, redis: aioredis.Redis) -> None:
    iid = await _add(redis, cli)
    nobody = await cli.run("lane", "restart", iid)
    assert 2 == nobody.code
    assert f"multipair: error: no host runs lane {iid}, so there is nothing to restart\n" == (
        nobody.err
    )
    assert 0 == (await cli.run("lane", "stop", iid)).code
    stopped = await cli.run("lane", "restart", iid)
    assert 2 == stopped.code
    assert stopped.err.startswith("multipair: error: lane stopped:")


# ---------------------------------------------------------------------- remove


async def test_lane_remove_asks_for_yes_then_deletes_everything(
    cli: Cli, redis: aioredis.Redis
) -> None:
    iid = await _add(redis, cli)
    keys = bs.Keys(cli.prefix)
    refused = await cli.run("lane", "remove", iid, json=False)
    assert 2 == refused.code
    assert "without --yes" in refused.err
    assert await _profiles(redis, cli).exists(iid)
    removed = await cli.run("lane", "remove", iid)  # --json needs no --yes: scripts decide
    assert 0 == removed.code, removed
    assert {"instance_id": iid, "removed": True, "unpair_requested": True} == removed.json()
    assert [] == [k for k in keys.lane_fixed_keys(iid) if await redis.exists(k)]
    assert not await redis.sismember(keys.lanes(), iid)
    again = await cli.run("lane", "remove", iid, "--yes", json=False)
    assert 2 == again.code
    assert f"multipair: error: lane {iid} not found\n" == again.err


async def test_lane_remove_with_yes_for_people(cli: Cli, redis: aioredis.Redis) -> None:
    iid = await _add(redis, cli)
    result = await cli.run("lane", "remove", iid, "--yes", json=False)
    assert 0 == result.code, result
    assert f"Removed lane {iid}.\n" == result.out
    assert not await _profiles(redis, cli).exists(iid)
