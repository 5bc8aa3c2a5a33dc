"""The control API endpoints and the cents-based outcome rules, over real websockets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from multipair.simulator import Behaviour, Simulator, behaviour_for_amount
from multipair.spi.crypto import Secrets
from multipair.spi.envelope import Message
from tests.simulator.helpers import KEYS, Control, RawPos

SERIAL = "SIM-0001"


@pytest.fixture
def timings() -> tuple[float, float]:
    """Keep the timed behaviours short; their length is not what these tests check."""
    return 0.2, 0.3


@pytest.fixture
async def pos(sim: Simulator) -> AsyncIterator[RawPos]:
    async with await RawPos.connect(sim.terminals[0].ws_url, secrets=KEYS) as client:
        assert "pong" == (await client.ping()).event
        yield client


async def recover(sim: Simulator, ref: str) -> Message:
    """Reconnect and ask get_transaction, as a recovering POS does (§7.12)."""
    async with await RawPos.connect(sim.terminals[0].ws_url, secrets=KEYS) as again:
        await again.ping()
        return await again.request(
            "get_transaction", {"pos_ref_id": ref}, "get_transaction_response"
        )


# ---------------------------------------------------------------- outcome rules


def test_the_rules_table_maps_cents_to_behaviours() -> None:
    expected = {
        1000: Behaviour.APPROVE,
        1049: Behaviour.APPROVE,
        1051: Behaviour.DECLINE,
        1052: Behaviour.SIGNATURE,
        1053: Behaviour.AUTH_CODE,
        1054: Behaviour.SLOW_CARD,
        1055: Behaviour.NO_ANSWER,
        1056: Behaviour.PARTIAL,
        1057: Behaviour.PAST_NO_RETURN,
        1058: Behaviour.DROP_BEFORE_SEND,
        1059: Behaviour.DROP_AFTER_REQUEST,
        1099: Behaviour.APPROVE,
    }
    assert expected == {amount: behaviour_for_amount(amount) for amount in expected}


async def test_cents_51_declines(pos: RawPos) -> None:
    response = await pos.purchase("d1", 1051)
    assert (False, "51", "DECLINED") == (
        response.get("success"),
        response.get("host_response_code"),
        response.get("host_response_text"),
    )


async def test_cents_52_asks_for_a_signature(pos: RawPos) -> None:
    await pos.send("purchase", {"pos_ref_id": "s1", "purchase_amount": 1052})
    required = await pos.expect("signature_required")
    assert "s1" == required.get("pos_ref_id")
    await pos.send("signature_decline", {"pos_ref_id": "s1"})
    response = await pos.expect("purchase_response")
    assert (False, "512") == (response.get("success"), response.get("host_response_code"))


async def test_cents_53_asks_for_a_phone_auth_code(pos: RawPos) -> None:
    await pos.send("purchase", {"pos_ref_id": "a1", "purchase_amount": 1053})
    required = await pos.expect("authorisation_code_required")
    assert "a1" == required.get("pos_ref_id")
    await pos.send("authorisation_code_advice", {"pos_ref_id": "a1", "auth_code": "123456"})
    response = await pos.expect("purchase_response")
    assert (True, "123456") == (response.get("success"), response.get("auth_code"))


async def test_cents_54_sends_progress_then_approves(pos: RawPos) -> None:
    await pos.send("purchase", {"pos_ref_id": "slow", "purchase_amount": 1054})
    update = await pos.expect("txn_update_message")
    assert "PRESENT CARD" == update.get("display_message_text")
    assert True is (await pos.expect("purchase_response")).get("success")


async def test_cents_55_never_answers_until_cancelled(pos: RawPos) -> None:
    await pos.send("purchase", {"pos_ref_id": "n1", "purchase_amount": 1055})
    status = await pos.request("get_transaction", {"pos_ref_id": "n1"}, "get_transaction_response")
    assert "TRANSACTION_IN_PROGRESS" == status.get("error_reason")
    assert True is (await pos.request("cancel_transaction", None, "cancel_response")).get("success")
    assert "511" == (await pos.expect("purchase_response")).get("host_response_code")


async def test_cents_56_partially_approves_half(pos: RawPos) -> None:
    response = await pos.purchase("p1", 1056)
    assert (True, "002", 528) == (
        response.get("success"),
        response.get("host_response_code"),
        response.get("purchase_amount"),
    )


async def test_cents_57_cancel_is_past_the_point_of_no_return(pos: RawPos) -> None:
    await pos.send("purchase", {"pos_ref_id": "x1", "purchase_amount": 1057})
    await pos.expect("txn_update_message")  # the card went to the bank
    cancel = await pos.request("cancel_transaction", None, "cancel_response")
    assert (False, "TXN_PAST_POINT_OF_NO_RETURN") == (
        cancel.get("success"),
        cancel.get("error_reason"),
    )
    assert True is (await pos.expect("purchase_response")).get("success")


async def test_cents_58_drops_before_sending_and_get_transaction_recovers(
    sim: Simulator, pos: RawPos
) -> None:
    await pos.send("purchase", {"pos_ref_id": "r58", "purchase_amount": 1058})
    assert 1001 == await pos.closed_code()
    found = await recover(sim, "r58")
    assert (True, True, 1058) == (
        found.get("success"),
        found.get("tx")["success"],
        found.get("tx")["purchase_amount"],
    )


async def test_cents_59_drops_after_the_request_and_approves_internally(
    sim: Simulator, pos: RawPos
) -> None:
    await pos.send("purchase", {"pos_ref_id": "r59", "purchase_amount": 1059})
    assert 1001 == await pos.closed_code()
    found = await recover(sim, "r59")
    assert (True, "r59") == (found.get("success"), found.get("tx")["pos_ref_id"])
    assert False is sim.terminals[0].session.state.last_tx.sent  # type: ignore[union-attr]


# ---------------------------------------------------------------- control API


async def test_listing_and_reading_terminals(control: Control, sim: Simulator) -> None:
    async with control.http.get(f"{sim.control_url}/terminals") as response:
        listing = await response.json()
    assert [SERIAL] == [t["serial"] for t in listing["terminals"]]
    state = await control.get(SERIAL)
    assert (True, "POS1", sim.terminals[0].ws_url) == (
        state["paired"],
        state["pos_id"],
        state["ws_url"],
    )
    assert KEYS.enc_key not in json.dumps(state)
    async with control.http.get(f"{sim.control_url}/terminals/NOPE") as response:
        assert 404 == response.status


async def test_set_next_outcome_once_and_sticky(control: Control, pos: RawPos) -> None:
    await control.post(SERIAL, "outcome", {"outcome": "decline"})
    assert False is (await pos.purchase("o1", 1000)).get("success")
    assert True is (await pos.purchase("o2", 1000)).get("success")
    await control.post(SERIAL, "outcome", {"outcome": "partial", "sticky": True})
    assert "002" == (await pos.purchase("o3", 1000)).get("host_response_code")
    assert "002" == (await pos.purchase("o4", 1000)).get("host_response_code")
    await control.post(SERIAL, "outcome", {"outcome": None, "sticky": True})
    assert "000" == (await pos.purchase("o5", 1000)).get("host_response_code")
    await control.post(SERIAL, "outcome", {"outcome": "nonsense"}, status=400)


async def test_card_delay_makes_a_purchase_cancellable(control: Control, pos: RawPos) -> None:
    await control.post(SERIAL, "card-delay", {"seconds": 30})
    await pos.send("purchase", {"pos_ref_id": "c1", "purchase_amount": 1000})
    assert "PRESENT CARD" == (await pos.expect("txn_update_message")).get("display_message_text")
    assert True is (await pos.request("cancel_transaction", None, "cancel_response")).get("success")
    assert "511" == (await pos.expect("purchase_response")).get("host_response_code")


async def test_drop_now_closes_the_connection(control: Control, pos: RawPos) -> None:
    result = await control.post(SERIAL, "drop", {"at": "now"})
    assert (True, False) == (result["dropped"], result["connected"])
    assert 1001 == await pos.closed_code()


async def test_drop_after_request_received_still_completes_internally(
    sim: Simulator, control: Control, pos: RawPos
) -> None:
    await control.post(SERIAL, "drop", {"at": "after_request_received"})
    await pos.send("purchase", {"pos_ref_id": "d1", "purchase_amount": 1000})
    await pos.closed_code()
    assert True is (await recover(sim, "d1")).get("success")


async def test_drop_after_result_before_send_is_recovered(
    sim: Simulator, control: Control, pos: RawPos
) -> None:
    await control.post(SERIAL, "drop", {"at": "after_result_before_send"})
    await pos.send("purchase", {"pos_ref_id": "d2", "purchase_amount": 1000})
    await pos.closed_code()
    found = await recover(sim, "d2")
    assert (True, True) == (found.get("success"), found.get("tx")["success"])


async def test_drop_while_awaiting_signature_then_accept_on_the_new_connection(
    sim: Simulator, control: Control, pos: RawPos
) -> None:
    await control.post(SERIAL, "drop", {"at": "while_awaiting_signature"})
    await pos.send("purchase", {"pos_ref_id": "d3", "purchase_amount": 1000})
    await pos.expect("signature_required")
    await pos.closed_code()
    async with await RawPos.connect(sim.terminals[0].ws_url, secrets=KEYS) as again:
        status = await again.request(
            "get_transaction", {"pos_ref_id": "d3"}, "get_transaction_response"
        )
        assert "TRANSACTION_IN_PROGRESS_AWAITING_SIGNATURE" == status.get("error_reason")
        await again.send("signature_accept", {"pos_ref_id": "d3"})
        response = await again.expect("purchase_response")
        assert (True, "d3") == (response.get("success"), response.get("pos_ref_id"))
    await control.post(SERIAL, "drop", {"at": "sometime"}, status=400)


async def test_key_rollover_switch_moves_both_sides_to_the_next_keys(
    sim: Simulator, control: Control, pos: RawPos
) -> None:
    await control.post(SERIAL, "key-rollover", {"switch": True})
    request = await pos.expect("request_use_next_keys")
    assert pos.secrets is not None
    pos.stamp.secrets = pos.secrets.rolled()
    await pos.send("response_use_next_keys", {"status": "confirmed"}, msg_id=request.id)
    assert "pong" == (await pos.ping()).event
    state = sim.terminals[0].session.state
    assert state.secrets is not None
    assert state.secrets.same_as(KEYS.rolled())


async def test_key_rollover_stay_keeps_the_old_keys(
    sim: Simulator, control: Control, pos: RawPos
) -> None:
    await control.post(SERIAL, "key-rollover", {"switch": False})
    request = await pos.expect("request_use_next_keys")
    pos.stamp.secrets = KEYS.rolled()
    await pos.send("response_use_next_keys", {"status": "confirmed"}, msg_id=request.id)
    pos.stamp.secrets = KEYS  # a 2.9.2 POS swaps back after the dropped frame
    assert "pong" == (await pos.ping()).event
    assert 1 == (await control.get(SERIAL))["counters"]["frames_rejected"]
    secrets = sim.terminals[0].session.state.secrets
    assert isinstance(secrets, Secrets)
    assert secrets.same_as(KEYS)


async def test_battery_advice(control: Control, pos: RawPos) -> None:
    await control.post(SERIAL, "battery", {"level": 15})
    assert 15 == (await pos.expect("battery_level_changed")).get("battery_level")
    await control.post(SERIAL, "battery", {"level": 101}, status=400)


async def test_inject_garbage_and_a_badly_signed_frame(control: Control, pos: RawPos) -> None:
    await control.post(SERIAL, "inject", {"kind": "garbage", "text": "not json {"})
    assert "not json {" == await pos.recv_raw()
    await control.post(SERIAL, "inject", {"kind": "bad_signature"})
    assert "invalid_signature" == pos.reject_reason(await pos.recv_raw())
    await control.post(SERIAL, "inject", {"kind": "other"}, status=400)


async def test_unpair_sends_drop_keys_and_forgets(control: Control, pos: RawPos) -> None:
    state = await control.post(SERIAL, "unpair")
    assert (False, None) == (state["paired"], state["pos_id"])
    assert "drop_keys" == (await pos.expect("drop_keys")).event
    await control.post(SERIAL, "unpair", status=409)


async def test_spi_token_is_sent(control: Control, pos: RawPos) -> None:
    await control.post(SERIAL, "spi-token", {"token": "tok-9876"})
    message = await pos.expect("provision_pos_spi_token")
    assert "tok-9876" == message.get("pos_spi_auth_token")


async def test_options_change_terminal_behaviour(control: Control, pos: RawPos) -> None:
    state = await control.post(
        SERIAL, "options", {"terminal_model": "E355", "get_transaction_error": "INTERNAL_ERROR"}
    )
    assert "E355" == state["settings"]["terminal_model"]
    config = await pos.request("get_terminal_configuration", {}, "terminal_configuration")
    assert ("E355", SERIAL) == (config.get("terminal_model"), config.get("serial_number"))
    status = await pos.request("get_transaction", {"pos_ref_id": "x"}, "get_transaction_response")
    assert "INTERNAL_ERROR" == status.get("error_reason")
    await control.post(SERIAL, "options", {"no_such_option": 1}, status=400)


async def test_terminal_pings_when_asked_and_closes_on_silence(
    control: Control, pos: RawPos
) -> None:
    await control.post(SERIAL, "options", {"ping_interval": 0.1, "pong_timeout": 0.1})
    ping = await pos.expect("ping")
    assert ping.id.startswith("C1.")
    assert 1001 == await pos.closed_code()  # never answered: two misses close it


async def test_pong_delay_and_silence(control: Control, pos: RawPos) -> None:
    await control.post(SERIAL, "options", {"pong_delay": 0.2})
    assert "pong" == (await pos.ping()).event
    await control.post(SERIAL, "options", {"answer_pings": False, "pong_delay": 0})
    await pos.send("ping", None, msg_id="unanswered")
    assert (
        "terminal_status" == (await pos.request("get_terminal_status", {}, "terminal_status")).event
    )


async def test_device_address_override_and_faults(
    control: Control, http: aiohttp.ClientSession, sim: Simulator
) -> None:
    result = await control.post(SERIAL, "device-address", {"ip": "10.0.0.9:8080"})
    assert "10.0.0.9:8080" == result["ip"]
    url = f"{sim.device_address_url}/v1/{SERIAL}/ip"
    headers = {"ASM-MSP-DEVICE-ADDRESS-API-KEY": "k"}
    async with http.get(url, headers=headers) as response:
        assert "10.0.0.9:8080" == (await response.json())["ip"]
    await control.post(SERIAL, "device-address", {"fault": "error"})
    async with http.get(url, headers=headers) as response:
        assert 500 == response.status
    await control.post(SERIAL, "device-address", {"fault": "not_found"})
    async with http.get(url, headers=headers) as response:
        assert 404 == response.status


# ---------------------------------------------------------------- device address


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[Simulator]:
    async with Simulator(2, device_api_key="secret-key") as simulator:
        yield simulator


async def get_json(
    http: aiohttp.ClientSession, url: str, key: str | None
) -> tuple[int, dict[str, Any]]:
    headers = {} if key is None else {"ASM-MSP-DEVICE-ADDRESS-API-KEY": key}
    async with http.get(url, headers=headers) as response:
        return response.status, await response.json()


async def test_device_address_answers_ip_and_fqdn_for_its_terminals(
    keyed: Simulator, http: aiohttp.ClientSession
) -> None:
    terminal = keyed.terminals[1]
    base = f"{keyed.device_address_url}/v1/{terminal.serial}"
    status, body = await get_json(http, f"{base}/ip", "secret-key")
    assert (200, f"127.0.0.1:{terminal.port}", terminal.serial) == (
        status,
        body["ip"],
        body["Serial"],
    )
    assert {"ip", "last_updated", "Serial", "request_id"} == set(body)
    status, body = await get_json(http, f"{base}/fqdn", "secret-key")
    assert (200, f"localhost:{terminal.port}") == (status, body["fqdn"])


async def test_device_address_errors(keyed: Simulator, http: aiohttp.ClientSession) -> None:
    base = keyed.device_address_url
    expected = {
        "unknown serial": 404,
        "bad kind": 400,
        "no key": 401,
        "wrong key": 403,
    }
    actual = {
        "unknown serial": (await get_json(http, f"{base}/v1/321-417-722/ip", "secret-key"))[0],
        "bad kind": (await get_json(http, f"{base}/v1/SIM-0001/mac", "secret-key"))[0],
        "no key": (await get_json(http, f"{base}/v1/SIM-0001/ip", None))[0],
        "wrong key": (await get_json(http, f"{base}/v1/SIM-0001/ip", "nope"))[0],
    }
    assert expected == actual


async def test_tenants_list(keyed: Simulator, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{keyed.device_address_url}/tenants") as response:
        body = await response.json()
    assert "gko" in [t["code"] for t in body["data"]]
