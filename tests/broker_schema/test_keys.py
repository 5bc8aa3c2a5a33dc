"""Key names: the {ID} hash tag on every lane key, one spelling per lane."""

from __future__ import annotations

import uuid

import pytest

from multipair.broker_schema import CONSUMER_GROUP, SCHEMA_VERSION, Keys, validate_instance_id
from multipair.exceptions import CommandError, ConfigurationError
from tests.broker_schema.helpers import LANE

LANE_KEY_METHODS = [
    "profile",
    "commands",
    "events",
    "state",
    "txs_open",
    "txs",
    "command_replies",
    "command_times",
    "lease",
    "fence",
    "dead_letter",
    "writes",
    "logs",
    "pat_payments",
    "pat_payment_times",
    "pat_bills",
]


def _hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes (the first non-empty {...})."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1 : end] if start != -1 and end > start + 1 else key


def test_design_examples_are_the_key_names() -> None:
    keys = Keys()
    assert [
        "mp:lanes",
        f"mp:lane:{{{LANE}}}:profile",
        f"mp:lane:{{{LANE}}}:commands",
        f"mp:lane:{{{LANE}}}:events",
        f"mp:lane:{{{LANE}}}:state",
        f"mp:lane:{{{LANE}}}:tx:order-17",
        f"mp:lane:{{{LANE}}}:lease",
        f"mp:lane:{{{LANE}}}:dead",
        "mp:hosts",
        "mp:host:{pos-host-1}:control",
        "mp:host:{pos-host-1}:claim",
    ] == [
        keys.lanes(),
        keys.profile(LANE),
        keys.commands(LANE),
        keys.events(LANE),
        keys.state(LANE),
        keys.tx(LANE, "order-17"),
        keys.lease(LANE),
        keys.dead_letter(LANE),
        keys.hosts(),
        keys.host_control("pos-host-1"),
        keys.host_claim("pos-host-1"),
    ]


@pytest.mark.parametrize("method", LANE_KEY_METHODS)
def test_every_lane_key_hashes_on_the_instance_id(method: str) -> None:
    key = getattr(Keys("shop1"), method)(LANE)
    assert (LANE, True) == (_hash_tag(key), key.startswith("shop1:lane:"))


def test_transaction_key_hashes_on_the_instance_id_whatever_the_pos_ref_id() -> None:
    assert LANE == _hash_tag(Keys().tx(LANE, "a:b.c-d_e"))


def test_fixed_keys_of_a_lane_are_all_its_named_keys() -> None:
    keys = Keys()
    assert sorted(getattr(keys, m)(LANE) for m in LANE_KEY_METHODS) == sorted(
        keys.lane_fixed_keys(LANE)
    )


def test_instance_id_is_written_in_lower_case() -> None:
    assert Keys().commands(LANE) == Keys().commands(LANE.upper())


def test_uuid_objects_are_accepted() -> None:
    assert LANE == validate_instance_id(uuid.UUID(LANE))


@pytest.mark.parametrize(
    "bad",
    [
        "lane-1",
        "",
        LANE.replace("-", ""),
        "{" + LANE + "}",
        "urn:uuid:" + LANE,
        LANE + "\n",
        LANE[:-1] + "g",
        "8a5e2dcc-bfa0-469f-95d7-eec778b08453}:x:{",
        None,
        17,
    ],
)
def test_non_uuid_lane_id_is_refused(bad: object) -> None:
    with pytest.raises(CommandError) as caught:
        Keys().commands(bad)  # type: ignore[arg-type]
    assert "invalid_instance_id" == caught.value.reason


@pytest.mark.parametrize("prefix", ["", "a{b}", "mp:", "-mp", "m p", "x" * 65])
def test_bad_prefix_is_a_configuration_error(prefix: str) -> None:
    with pytest.raises(ConfigurationError):
        Keys(prefix)


@pytest.mark.parametrize("host", ["", "a{b}", "a b", "h:1"])
def test_bad_host_id_is_a_configuration_error(host: str) -> None:
    with pytest.raises(ConfigurationError):
        Keys().host_control(host)


def test_contract_constants() -> None:
    assert ("lane", 1) == (CONSUMER_GROUP, SCHEMA_VERSION)
