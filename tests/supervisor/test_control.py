"""Ops control messages: what goes on a host's control stream, and what is refused."""

from __future__ import annotations

import orjson
import pytest

from multipair.exceptions import CommandError
from multipair.supervisor.control import (
    ControlAction,
    ControlMessage,
    decode_control,
    default_requester,
    encode_control,
    peek_requested_by,
)

LANE = "8a5e2dcc-bfa0-469f-95d7-eec778b08453"


@pytest.mark.parametrize("action", list(ControlAction))
def test_every_action_round_trips(action: ControlAction) -> None:
    lane = None if action.for_host else LANE
    message = ControlMessage(action=action, instance_id=lane, request_id="r-1")
    assert message == decode_control(encode_control(message))


def test_host_actions_name_no_lane_and_lane_actions_need_one() -> None:
    assert {ControlAction.DRAIN, ControlAction.ACCEPT, ControlAction.UNDRAIN} == {
        a for a in ControlAction if a.for_host
    }
    drain = {"v": b"1", "body": orjson.dumps({"action": "drain", "request_id": "r-2"})}
    assert ControlMessage(action=ControlAction.DRAIN, request_id="r-2") == decode_control(drain)
    assert {"v": b"1", "body": {"action": "accept"}} == {
        "v": encode_control(ControlMessage(action=ControlAction.ACCEPT))["v"],
        "body": orjson.loads(encode_control(ControlMessage(action=ControlAction.ACCEPT))["body"]),
    }


def test_the_entry_is_v_and_a_json_body_anyone_can_write_with_redis_cli() -> None:
    fields = encode_control(ControlMessage(action=ControlAction.RESTART, instance_id=LANE))
    assert {"v": b"1", "body": {"action": "restart", "instance_id": LANE}} == {
        "v": fields["v"],
        "body": orjson.loads(fields["body"]),
    }
    # As redis-py returns it: bytes keys, upper-case id normalised.
    raw = {b"v": b"1", b"body": orjson.dumps({"action": "stop", "instance_id": LANE.upper()})}
    assert ControlMessage(action=ControlAction.STOP, instance_id=LANE) == decode_control(raw)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"v": "2", "body": "{}"}, "unsupported_version"),
        ({"v": "1", "body": "{"}, "not_json"),
        ({"v": "1", "body": "[]"}, "not_an_object"),
        (
            {"v": "1", "body": orjson.dumps({"action": "reboot", "instance_id": LANE})},
            "unknown_type",
        ),
        (
            {"v": "1", "body": orjson.dumps({"action": "stop", "instance_id": "x"})},
            "invalid_instance_id",
        ),
        ({"v": "1", "body": orjson.dumps({"action": "restart"})}, "invalid_instance_id"),
        (
            {"v": "1", "body": orjson.dumps({"action": "drain", "instance_id": LANE})},
            "unknown_field",
        ),
        (
            {
                "v": "1",
                "body": orjson.dumps({"action": "stop", "instance_id": LANE, "request_id": 5}),
            },
            "wrong_type",
        ),
    ],
)
def test_bad_messages_are_refused_with_a_reason(fields: dict[str, object], reason: str) -> None:
    with pytest.raises(CommandError) as refused:
        decode_control(fields)
    assert reason == refused.value.reason


def test_requested_by_round_trips_and_the_default_is_user_at_host() -> None:
    message = ControlMessage(
        action=ControlAction.STOP, instance_id=LANE, request_id="r-3", requested_by="ana@ops-1"
    )
    assert message == decode_control(encode_control(message))
    user, at, host = default_requester().partition("@")
    assert ("@", True, True) == (at, bool(user), bool(host))


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"v": "1"}, "bad_entry"),
        ({"v": "1", "body": "{}", "extra": "x"}, "bad_entry"),
        ({b"v": b"1", b"body": b"{}", b"\xff": b"x"}, "bad_entry"),
        ("not a map", "bad_entry"),
        ({"v": "1", "body": 5}, "not_json"),
        (
            {"v": "1", "body": orjson.dumps({"action": "drain", "request_id": "r" * 2000})},
            "oversize",
        ),
        ({"v": "1", "body": orjson.dumps({"request_id": "r"})}, "missing_field"),
        ({"v": "1", "body": orjson.dumps({"action": ["drain"]})}, "wrong_type"),
        ({"v": "1", "body": orjson.dumps({"action": "drain", "force": True})}, "unknown_field"),
        ({"v": "1", "body": orjson.dumps({"action": "drain", "requested_by": 7})}, "wrong_type"),
        (
            {"v": "1", "body": orjson.dumps({"action": "drain", "requested_by": ""})},
            "invalid_value",
        ),
        (
            {"v": "1", "body": orjson.dumps({"action": "drain", "requested_by": "a\nb"})},
            "invalid_value",
        ),
        (
            {"v": "1", "body": orjson.dumps({"action": "drain", "request_id": "x" * 129})},
            "invalid_value",
        ),
    ],
)
def test_malformed_entries_are_refused_before_anything_is_acted_on(
    fields: object, reason: str
) -> None:
    with pytest.raises(CommandError) as refused:
        decode_control(fields)
    assert reason == refused.value.reason


def test_the_requester_of_a_refused_entry_is_read_best_effort_for_the_log() -> None:
    body = orjson.dumps({"action": "reboot", "requested_by": "eve@pos-7\x1b[2J"})
    assert "eve@pos-7?[2J" == peek_requested_by({b"v": b"1", b"body": body})
    assert None is peek_requested_by({"v": "1", "body": "{"})
    assert None is peek_requested_by("not a map")
    assert None is peek_requested_by({"v": "1", "body": orjson.dumps({"requested_by": 5})})
