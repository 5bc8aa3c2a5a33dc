"""ProfileStore against a real Redis: CRUD, sealed secrets, deleting every key of a lane."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import socket
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from multipair.broker_schema import Keys, TransactionCompleted, TxResult, event_to_json
from multipair.exceptions import CommandError, ConfigurationError, RetryLater
from multipair.redis_conn import as_text
from multipair.spi.crypto import Secrets
from multipair.store import LaneProfile, MasterKey, ProfileStore, TxRecord, TxStore
from multipair.store.profiles import SEALED_FIELDS, ResealResult

LANE = "8a5e2dcc-bfa0-469f-95d7-eec778b08453"
OTHER = "0b9d5f7e-58d1-4c55-9a3b-0f0e4b7c2d11"
ENC = "ea3cdfba094af985142e57d5e91d8d23f8507d72dd0b4268a21445d94d651f51"
HMAC = "0f93186d9451f5ce3725fff62a7764f00f2bab34a3de84dedc94bd42dc241ba4"
SECRETS = Secrets(enc_key=ENC, hmac_key=HMAC)


def _profile(**changes: Any) -> LaneProfile:
    values: dict[str, Any] = {
        "instance_id": LANE,
        "pos_id": "TESTGKO101",
        "serial_number": "202-206-301",
        "device_address": "ws://127.0.0.1:8080",
        "tenant_code": "gko",
    }
    values.update(changes)
    return LaneProfile(**values)


@pytest.fixture
def master_key() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
def store(redis: aioredis.Redis, key_prefix: str, master_key: MasterKey) -> ProfileStore:
    return ProfileStore(redis, Keys(key_prefix), master_key)


async def _raw_profile(redis: aioredis.Redis, keys: Keys, lane: str) -> dict[bytes, bytes]:
    raw: dict[bytes, bytes] = await redis.hgetall(keys.profile(lane))  # type: ignore[assignment]
    return raw


# --- profiles ----------------------------------------------------------------------------------


async def test_created_profile_reads_back_equal(store: ProfileStore) -> None:
    profile = await store.create(_profile(test_mode=True, print_merchant_copy=True))
    assert profile == await store.get(LANE)


async def test_create_adds_the_lane_to_the_lanes_set_and_makes_its_command_group(
    store: ProfileStore, redis: aioredis.Redis, key_prefix: str
) -> None:
    await store.create(_profile())
    keys = Keys(key_prefix)
    groups = await redis.xinfo_groups(keys.commands(LANE))
    assert ({LANE.encode()}, ["lane"]) == (
        await redis.smembers(keys.lanes()),
        [g["name"].decode() for g in groups],
    )


async def test_create_generates_a_uuid_when_none_is_given(store: ProfileStore) -> None:
    first = await store.create(LaneProfile(pos_id="POS1", serial_number="1", auto_address=True))
    second = await store.create(LaneProfile(pos_id="POS2", serial_number="2", auto_address=True))
    assert first.instance_id != second.instance_id
    # Oldest first; two made within the same millisecond tie, then by id.
    expected = sorted([first, second], key=lambda p: (p.created_at, p.instance_id))
    assert [p.instance_id for p in expected] == [p.instance_id for p in await store.list()]


async def test_creating_a_taken_instance_id_is_refused(store: ProfileStore) -> None:
    await store.create(_profile())
    with pytest.raises(CommandError) as caught:
        await store.create(_profile(pos_id="OTHER"))
    assert ("lane_exists", "TESTGKO101") == (caught.value.reason, (await store.get(LANE)).pos_id)


async def test_unknown_lane_is_reported(store: ProfileStore) -> None:
    with pytest.raises(CommandError) as caught:
        await store.get(LANE)
    assert "unknown_lane" == caught.value.reason


async def test_non_uuid_lane_is_reported(store: ProfileStore) -> None:
    with pytest.raises(CommandError) as caught:
        await store.get("till-3")
    assert "invalid_instance_id" == caught.value.reason


async def test_profile_is_stored_as_readable_text(
    store: ProfileStore, redis: aioredis.Redis, key_prefix: str
) -> None:
    created = dt.datetime(2025, 1, 31, 9, 30, tzinfo=dt.UTC)
    await store.create(_profile(created_at=created, secure=True))
    assert {
        b"v": b"1",
        b"instance_id": LANE.encode(),
        b"pos_id": b"TESTGKO101",
        b"serial_number": b"202-206-301",
        b"device_address": b"ws://127.0.0.1:8080",
        b"auto_address": b"0",
        b"tenant_code": b"gko",
        b"test_mode": b"0",
        b"secure": b"1",
        b"print_merchant_copy": b"0",
        b"prompt_for_customer_copy": b"0",
        b"signature_flow_on_eftpos": b"0",
        b"enabled": b"1",
        b"created_at": b"2025-01-31T09:30:00.000Z",
    } == await _raw_profile(redis, Keys(key_prefix), LANE)


async def test_update_changes_fields_and_clears_none(store: ProfileStore) -> None:
    await store.create(_profile())
    updated = await store.update(LANE, enabled=False, auto_address=True, device_address=None)
    assert (updated, False, None) == (
        await store.get(LANE),
        updated.enabled,
        updated.device_address,
    )


async def test_update_keeps_fields_it_does_not_know(
    store: ProfileStore, redis: aioredis.Redis, key_prefix: str
) -> None:
    await store.create(_profile())
    await redis.hset(Keys(key_prefix).profile(LANE), "added_by_a_newer_version", "x")
    await store.update(LANE, pos_id="NEWPOS")
    raw = await _raw_profile(redis, Keys(key_prefix), LANE)
    assert (b"x", b"NEWPOS") == (raw[b"added_by_a_newer_version"], raw[b"pos_id"])


async def test_invalid_update_leaves_the_profile_unchanged(store: ProfileStore) -> None:
    before = await store.create(_profile())
    with pytest.raises(CommandError) as caught:
        await store.update(LANE, pos_id="TOO-LONG-AND-DASHED")
    assert ("invalid_value", before) == (caught.value.reason, await store.get(LANE))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [({"instance_id": OTHER}, "unknown_field"), ({"secrets": "x"}, "unknown_field")],
)
async def test_update_refuses_fields_that_cannot_change(
    store: ProfileStore, changes: dict[str, Any], reason: str
) -> None:
    await store.create(_profile())
    with pytest.raises(CommandError) as caught:
        await store.update(LANE, **changes)
    assert reason == caught.value.reason


async def test_update_of_an_unknown_lane_creates_nothing(
    store: ProfileStore, redis: aioredis.Redis
) -> None:
    with pytest.raises(CommandError) as caught:
        await store.update(LANE, enabled=False)
    assert ("unknown_lane", []) == (caught.value.reason, await redis.keys("*"))


async def test_list_skips_ids_without_a_profile(
    store: ProfileStore, redis: aioredis.Redis, key_prefix: str
) -> None:
    await store.create(_profile())
    await redis.sadd(Keys(key_prefix).lanes(), OTHER)
    assert ([LANE], sorted([LANE, OTHER])) == (
        [p.instance_id for p in await store.list()],
        await store.list_ids(),
    )


async def test_damaged_profile_is_a_configuration_error(
    store: ProfileStore, redis: aioredis.Redis, key_prefix: str
) -> None:
    await store.create(_profile())
    await redis.hset(Keys(key_prefix).profile(LANE), "enabled", "maybe")
    with pytest.raises(ConfigurationError):
        await store.get(LANE)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"pos_id": ""}, "invalid_value"),
        ({"pos_id": "ABCDEFGHIJKLMNOPQ"}, "invalid_value"),
        ({"pos_id": "POS-1"}, "invalid_value"),
        ({"pos_id": 17}, "wrong_type"),
        ({"serial_number": ""}, "invalid_value"),
        ({"device_address": "http://1.2.3.4"}, "invalid_value"),
        ({"device_address": "ws://1.2.3.4:70000"}, "invalid_value"),
        ({"device_address": "ws://host name"}, "invalid_value"),
        ({"device_address": None}, "invalid_value"),
        ({"tenant_code": "g k o"}, "invalid_value"),
        ({"enabled": 1}, "wrong_type"),
        ({"instance_id": "lane-1"}, "invalid_instance_id"),
        ({"created_at": dt.datetime(2025, 1, 1)}, "wrong_type"),
    ],
)
def test_invalid_profile_is_refused_naming_its_rule(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(CommandError) as caught:
        _profile(**changes)
    assert reason == caught.value.reason


@pytest.mark.parametrize(
    "address",
    ["ws://127.0.0.1:8080", "wss://321-433-179.z1.sandbox.apdvcs.net", "192.168.1.10", "h:9000"],
)
def test_address_forms_of_the_protocol_are_accepted(address: str) -> None:
    assert address == _profile(device_address=address).device_address


# --- sealed secrets ----------------------------------------------------------------------------


async def test_secrets_round_trip(store: ProfileStore) -> None:
    await store.create(_profile())
    await store.save_secrets(LANE, SECRETS)
    loaded = await store.load_secrets(LANE)
    assert loaded is not None
    assert (ENC, HMAC) == (loaded.enc_key, loaded.hmac_key)


async def test_secrets_are_encrypted_at_rest(
    store: ProfileStore, redis: aioredis.Redis, key_prefix: str
) -> None:
    await store.create(_profile())
    await store.save_secrets(LANE, SECRETS)
    await store.save_spi_token(LANE, "tok-SECRET-123")
    raw = await _raw_profile(redis, Keys(key_prefix), LANE)
    everything = b"".join([*raw.keys(), *raw.values()])
    leaks = [
        form
        for form in (ENC, ENC.upper(), HMAC, HMAC.upper(), ENC[:16], HMAC[-16:], "tok-SECRET")
        if form.encode() in everything
    ]
    assert ([], True) == (leaks, raw[b"secrets"].startswith(b"v1:"))


async def test_wrong_master_key_refuses_to_re_pair(
    store: ProfileStore, redis: aioredis.Redis, key_prefix: str
) -> None:
    await store.create(_profile())
    await store.save_secrets(LANE, SECRETS)
    wrong = ProfileStore(redis, Keys(key_prefix), MasterKey.generate())
    with pytest.raises(ConfigurationError) as caught:
        await wrong.load_secrets(LANE)
    assert LANE in str(caught.value)
    assert "refusing to re-pair" in str(caught.value)


async def test_stored_secrets_without_a_master_key_is_a_configuration_error(
    store: ProfileStore, redis: aioredis.Redis, key_prefix: str
) -> None:
    await store.create(_profile())
    await store.save_secrets(LANE, SECRETS)
    with pytest.raises(ConfigurationError):
        await ProfileStore(redis, Keys(key_prefix)).load_secrets(LANE)


async def test_sealed_secrets_moved_to_another_lane_do_not_open(
    store: ProfileStore, redis: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    await store.create(_profile())
    await store.create(_profile(instance_id=OTHER))
    await store.save_secrets(LANE, SECRETS)
    sealed = await redis.hget(keys.profile(LANE), "secrets")
    await redis.hset(keys.profile(OTHER), "secrets", sealed)
    with pytest.raises(ConfigurationError) as caught:
        await store.load_secrets(OTHER)
    assert OTHER in str(caught.value)


async def test_sealed_secrets_moved_to_another_field_do_not_open(
    store: ProfileStore, redis: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    await store.create(_profile())
    await store.save_secrets(LANE, SECRETS)
    sealed = await redis.hget(keys.profile(LANE), "secrets")
    await redis.hset(keys.profile(LANE), "spi_token", sealed)
    with pytest.raises(ConfigurationError):
        await store.load_spi_token(LANE)


async def test_unpaired_lane_has_no_secrets(store: ProfileStore) -> None:
    await store.create(_profile())
    await store.save_secrets(LANE, SECRETS)
    await store.save_secrets(LANE, None)
    assert None is await store.load_secrets(LANE)


async def test_secrets_of_an_unknown_lane_are_neither_saved_nor_created(
    store: ProfileStore, redis: aioredis.Redis
) -> None:
    with pytest.raises(CommandError) as caught:
        await store.save_secrets(LANE, SECRETS)
    assert ("unknown_lane", []) == (caught.value.reason, await redis.keys("*"))


async def test_spi_token_round_trips(store: ProfileStore) -> None:
    await store.create(_profile())
    await store.save_spi_token(LANE, "token-1")
    assert "token-1" == await store.load_spi_token(LANE)


async def test_profile_updates_keep_the_sealed_secrets(store: ProfileStore) -> None:
    await store.create(_profile())
    await store.save_secrets(LANE, SECRETS)
    await store.update(LANE, enabled=False)
    loaded = await store.load_secrets(LANE)
    assert loaded is not None
    assert loaded.same_as(SECRETS)


def test_store_repr_shows_no_key(master_key: MasterKey) -> None:
    shown = repr(ProfileStore(aioredis.Redis(), Keys(), master_key))
    assert (True, False) == (master_key.fingerprint() in shown, master_key.to_base64() in shown)


# --- re-sealing under a new master key ---------------------------------------------------------

PREVIOUS = Secrets(enc_key=HMAC, hmac_key=ENC)


async def _paired(store: ProfileStore, lane: str = LANE) -> None:
    """A lane with every sealed field set: keys, pre-roll keys and an SPI token."""
    await store.create(_profile(instance_id=lane))
    await store.save_secrets(lane, SECRETS, previous=PREVIOUS)
    await store.save_spi_token(lane, "tok-SECRET-123")


async def test_sealed_fields_name_every_field_the_store_seals(
    store: ProfileStore, redis: aioredis.Redis, key_prefix: str
) -> None:
    await _paired(store)
    raw = await _raw_profile(redis, Keys(key_prefix), LANE)
    sealed = {as_text(k) for k, v in raw.items() if v.startswith(b"v1:")}
    assert sealed == set(SEALED_FIELDS)


async def test_reseal_moves_every_sealed_field_to_the_new_key(
    store: ProfileStore, redis: aioredis.Redis, key_prefix: str, master_key: MasterKey
) -> None:
    await _paired(store)
    profile = await store.get(LANE)
    new_key = MasterKey.generate()
    result = await store.reseal(LANE, master_key, new_key)
    new = ProfileStore(redis, Keys(key_prefix), new_key)
    current, previous = await new.load_secrets_and_previous(LANE)
    assert (ResealResult(resealed=SEALED_FIELDS), profile) == (result, await new.get(LANE))
    assert (SECRETS, PREVIOUS, "tok-SECRET-123") == (
        current,
        previous,
        await new.load_spi_token(LANE),
    )
    with pytest.raises(ConfigurationError):
        await store.load_secrets(LANE)


async def test_reseal_again_finds_every_field_already_new_and_leaves_it_alone(
    store: ProfileStore, redis: aioredis.Redis, key_prefix: str, master_key: MasterKey
) -> None:
    await _paired(store)
    new_key = MasterKey.generate()
    await store.reseal(LANE, master_key, new_key)
    before = await _raw_profile(redis, Keys(key_prefix), LANE)
    again = await store.reseal(LANE, master_key, new_key)
    assert (ResealResult(already_new=SEALED_FIELDS), before) == (
        again,
        await _raw_profile(redis, Keys(key_prefix), LANE),
    )


async def test_reseal_completes_a_lane_left_half_new(
    store: ProfileStore, redis: aioredis.Redis, key_prefix: str, master_key: MasterKey
) -> None:
    """A lane whose token is new but whose keys are still old (e.g. re-sealed by hand)."""
    await _paired(store)
    new_key = MasterKey.generate()
    new = ProfileStore(redis, Keys(key_prefix), new_key)
    await new.save_spi_token(LANE, "tok-SECRET-123")
    result = await store.reseal(LANE, master_key, new_key)
    assert (ResealResult(resealed=("secrets",), already_new=("spi_token",)), SECRETS) == (
        result,
        await new.load_secrets(LANE),
    )


async def test_reseal_writes_nothing_of_a_lane_with_a_field_that_opens_under_neither_key(
    store: ProfileStore, redis: aioredis.Redis, key_prefix: str, master_key: MasterKey
) -> None:
    await _paired(store)
    await ProfileStore(redis, Keys(key_prefix), MasterKey.generate()).save_spi_token(LANE, "t")
    before = await _raw_profile(redis, Keys(key_prefix), LANE)
    new_key = MasterKey.generate()
    with pytest.raises(ConfigurationError) as caught:
        await store.reseal(LANE, master_key, new_key)
    message = str(caught.value)
    assert (True, True, True, True) == (
        LANE in message,
        "spi_token" in message,
        master_key.fingerprint() in message,
        new_key.fingerprint() in message,
    )
    assert before == await _raw_profile(redis, Keys(key_prefix), LANE)


async def test_reseal_refuses_a_lane_with_a_lease_and_a_dry_run_writes_nothing(
    store: ProfileStore, redis: aioredis.Redis, key_prefix: str, master_key: MasterKey
) -> None:
    keys = Keys(key_prefix)
    await _paired(store)
    await redis.set(keys.lease(LANE), "7:host-a", px=60_000)
    before = await _raw_profile(redis, keys, LANE)
    new_key = MasterKey.generate()
    with pytest.raises(CommandError) as caught:
        await store.reseal(LANE, master_key, new_key)
    dry = await store.reseal(LANE, master_key, new_key, dry_run=True)
    assert ("not_allowed", True) == (caught.value.reason, "host-a" in str(caught.value))
    assert (ResealResult(resealed=SEALED_FIELDS), before) == (
        dry,
        await _raw_profile(redis, keys, LANE),
    )


async def test_reseal_of_an_unpaired_unknown_or_same_key_lane(
    store: ProfileStore, redis: aioredis.Redis, master_key: MasterKey
) -> None:
    await store.create(_profile())
    new_key = MasterKey.generate()
    assert ResealResult() == await store.reseal(LANE, master_key, new_key)
    with pytest.raises(CommandError) as unknown:
        await store.reseal(OTHER, master_key, new_key)
    with pytest.raises(ConfigurationError, match="same key"):
        await store.reseal(LANE, master_key, MasterKey(base64.b64decode(master_key.to_base64())))
    assert ("unknown_lane", []) == (unknown.value.reason, await redis.keys(f"*{OTHER}*"))


# --- deleting a lane ---------------------------------------------------------------------------


async def test_delete_removes_every_key_of_the_lane_and_only_of_it(
    store: ProfileStore, redis: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    txs = TxStore(redis, keys)
    for lane in (LANE, OTHER):
        await store.create(_profile(instance_id=lane))
        await store.save_secrets(lane, SECRETS)
        await redis.xadd(keys.commands(lane), {"v": "1", "body": "{}"})
        await redis.xadd(keys.events(lane), {"v": "1", "body": "{}"})
        await redis.xadd(keys.dead_letter(lane), {"v": "1", "body": "{}"})
        await redis.hset(keys.state(lane), "status", "unpaired")
        await redis.set(keys.lease(lane), "host-1 7", ex=30)
        for ref in ("order-1", "order-2"):
            await txs.create_if_absent(
                lane, TxRecord(pos_ref_id=ref, command_id=ref, tx_type="purchase", amount_cents=1)
            )
        done = TransactionCompleted(instance_id=lane, at=dt.datetime.now(dt.UTC), result="success")
        await txs.complete(lane, "order-1", result=TxResult.SUCCESS, outcome=event_to_json(done))
        await txs.remember_command(lane, "c-1", b"{}")
    other_keys_before = sorted(await redis.keys(f"*{{{OTHER}}}*"))

    assert True is await store.delete(LANE)

    assert ([], sorted(await redis.keys(f"*{{{OTHER}}}*")), [OTHER.encode()]) == (
        await redis.keys(f"*{{{LANE}}}*"),
        other_keys_before,
        sorted(await redis.smembers(keys.lanes())),
    )
    assert sorted(
        [
            "profile",
            "commands",
            "events",
            "dead",
            "state",
            "lease",
            "tx:order-1",
            "tx:order-2",
            "txs_open",
            "txs",
            "cmds",
            "cmds_at",
        ]
    ) == sorted(as_text(k).split("}:", 1)[1] for k in other_keys_before)


async def test_deleting_a_lane_that_does_not_exist_says_so(store: ProfileStore) -> None:
    assert False is await store.delete(LANE)


# --- Redis unreachable -------------------------------------------------------------------------


async def test_unreachable_redis_is_retry_later(key_prefix: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = aioredis.Redis(port=port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    try:
        with pytest.raises(RetryLater):
            await ProfileStore(client, Keys(key_prefix)).get(LANE)
    finally:
        await client.aclose()


def test_profiles_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _profile().pos_id = "X"  # type: ignore[misc]
