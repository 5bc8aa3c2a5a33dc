"""The lane profile's pay-at-table config: JSON in the ``pat`` field, None = never set up."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import redis.asyncio as aioredis

from multipair.broker_schema import Keys
from multipair.broker_schema.pat_commands import SetTableConfig
from multipair.exceptions import CommandError, ConfigurationError
from multipair.store import LaneProfile, ProfileStore
from multipair.store.profiles import PayAtTableConfig

LANE = "8a5e2dcc-bfa0-469f-95d7-eec778b08453"


def _profile(**changes: Any) -> LaneProfile:
    return LaneProfile(
        instance_id=LANE,
        pos_id="TESTGKO101",
        serial_number="202-206-301",
        device_address="ws://127.0.0.1:8080",
        **changes,
    )


@pytest.fixture
def store(redis: aioredis.Redis, key_prefix: str) -> ProfileStore:
    return ProfileStore(redis, Keys(key_prefix))


async def test_a_new_profile_has_no_pay_at_table_and_no_pat_field(
    store: ProfileStore, redis: aioredis.Redis, key_prefix: str
) -> None:
    await store.create(_profile())
    assert (None, False) == (
        (await store.get(LANE)).pat,
        bool(await redis.hexists(Keys(key_prefix).profile(LANE), "pat")),
    )


async def test_config_round_trips_as_json_and_none_removes_it(
    store: ProfileStore, redis: aioredis.Redis, key_prefix: str
) -> None:
    await store.create(_profile())
    config = PayAtTableConfig(enabled=True, operator_ids=("7", "12"), answer_timeout_ms=5000)
    await store.update(LANE, pat=config)
    stored = await redis.hget(Keys(key_prefix).profile(LANE), "pat")
    assert config == (await store.get(LANE)).pat
    assert stored is not None
    assert b'"operator_ids":["7","12"]' in stored
    await store.update(LANE, pat=None)
    assert None is (await store.get(LANE)).pat


async def test_stored_config_ignores_keys_it_does_not_know(
    store: ProfileStore, redis: aioredis.Redis, key_prefix: str
) -> None:
    await store.create(_profile())
    await redis.hset(Keys(key_prefix).profile(LANE), "pat", '{"enabled":true,"later":1}')
    assert PayAtTableConfig(enabled=True) == (await store.get(LANE)).pat


@pytest.mark.parametrize("text", ["not json", "[]", '{"answer_timeout_ms": 5}'])
async def test_damaged_config_is_a_configuration_error(
    store: ProfileStore, redis: aioredis.Redis, key_prefix: str, text: str
) -> None:
    await store.create(_profile())
    await redis.hset(Keys(key_prefix).profile(LANE), "pat", text)
    with pytest.raises(ConfigurationError):
        await store.get(LANE)


def test_a_command_changes_only_the_options_it_sets() -> None:
    before = PayAtTableConfig(enabled=True, tipping_enabled=True, pay_button_label="Pay")
    after = before.updated(
        SetTableConfig(command_id="c1", tipping_enabled=False, operator_ids=("7",))
    )
    assert dataclasses.replace(before, tipping_enabled=False, operator_ids=("7",)) == after


@pytest.mark.parametrize(
    "changes",
    [{"answer_timeout_ms": 999}, {"operator_ids": ("",)}, {"enabled": 1}, {"table_id_label": 5}],
)
def test_invalid_config_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(CommandError):
        PayAtTableConfig(**changes)
