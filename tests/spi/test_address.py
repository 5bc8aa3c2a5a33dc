"""Connection address, device-address service and timings (§1, §6.1, §8.4, §13.2, §13.11)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from multipair.exceptions import ConfigurationError
from multipair.spi.address import (
    DEFAULT_TIMINGS,
    DEVICE_ADDRESS_API_KEY_HEADER,
    DEVICE_ADDRESS_TIMEOUT_S,
    SUBPROTOCOL,
    DeviceAddressResponseCode,
    DeviceAddressResult,
    Timings,
    device_address_url,
    interpret_device_address_response,
    is_valid_eftpos_address,
    is_valid_pos_id,
    websocket_url,
)
from tests.spi_shared import load_fixture, load_vector

VECTOR = "v29_connection_address.json"


def _cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = load_vector(VECTOR)["cases"]
    return cases


def _direct_calls() -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = load_vector(VECTOR)["direct_calls"]
    return calls


def _body(name: str) -> bytes:
    """A fixture body as the service sends it (re-serialised; the bytes do not matter)."""
    return orjson.dumps(load_fixture(f"device-address/{name}"))


# --- §13.2: the websocket URL, against the library -----------------------------------


def test_subprotocol_is_the_one_every_29_client_offers() -> None:
    assert load_vector(VECTOR)["subprotocol"] == SUBPROTOCOL


def test_every_direct_call_of_the_library_gives_the_same_url() -> None:
    for call in _direct_calls():
        address: str = call["address"]
        secure = address.startswith("wss://")
        actual = websocket_url(
            address, pos_id=call["pos_id"], tenant_code=call["tenant_code"], secure=secure
        )
        assert call["result"] == actual, call


def test_every_library_case_gives_the_url_the_library_holds() -> None:
    """``eftpos_address`` is what the library derived from the configured address.

    The URL uses the POS id in force when it was computed: POS1 in every
    case, including the one where SetPosId(POS2) ran afterwards (the
    library's stale URL; callers of this pure function recompute it).
    """
    for case in _cases():
        pos_id_in_url = case["websocket_url"].rpartition("?posId=")[2]
        actual = websocket_url(
            case["eftpos_address"],
            pos_id=pos_id_in_url,
            tenant_code=case["tenant_code"],
            secure=case["secure_websockets"],
        )
        assert case["websocket_url"] == actual, case["label"]
        if "websocket_url_opened" in case:
            assert case["websocket_url_opened"] == actual, case["label"]
            assert case["websocket_subprotocol"] == SUBPROTOCOL


def test_configured_address_gives_the_same_url_as_the_derived_one() -> None:
    """A bare configured address (no scheme) reaches the library's URL too.

    Invalid configured addresses are blanked first, as Start() does.
    """
    for case in _cases():
        configured: str = case["configured_address"]
        secure: bool = case["secure_websockets"]
        address = configured if is_valid_eftpos_address(configured, secure=secure) else ""
        expected_pos_id = case["websocket_url"].rpartition("?posId=")[2]
        actual = websocket_url(
            address, pos_id=expected_pos_id, tenant_code=case["tenant_code"], secure=secure
        )
        assert case["websocket_url"] == actual, case["label"]


def test_invalid_configured_address_is_blanked_and_degenerates_to_the_query() -> None:
    (case,) = [c for c in _cases() if c.get("pair_refused")]
    assert not is_valid_eftpos_address(case["configured_address"], secure=False)
    blanked = ""
    assert blanked == case["eftpos_address"]
    expected = "?posId=POS1"
    assert expected == websocket_url(blanked, pos_id="POS1", tenant_code="gko", secure=False)


def test_url_carries_the_pos_id_it_is_given_so_recomputing_fixes_the_stale_url() -> None:
    (case,) = [c for c in _cases() if "SetPosId" in c["label"]]
    first_frame = orjson.loads(case["first_frame"])
    assert case["pos_id"] == first_frame["message"]["pos_id"]
    expected = "ws://192.168.1.10:8080?posId=POS2"
    actual = websocket_url(
        case["eftpos_address"], pos_id=case["pos_id"], tenant_code="gko", secure=False
    )
    assert expected == actual


@pytest.mark.parametrize(
    ("address", "tenant", "secure", "expected"),
    [
        ("192.168.1.10", "gko", False, "ws://192.168.1.10:8080?posId=P1"),
        ("192.168.1.10:9000", "gko", False, "ws://192.168.1.10:8080?posId=P1"),
        ("192.168.1.10:9000", None, False, "ws://192.168.1.10:8080?posId=P1"),
        ("192.168.1.10:9000", "wbc", False, "ws://192.168.1.10:9000?posId=P1"),
        ("192.168.1.10:9000", "Wbc", False, "ws://192.168.1.10:9000?posId=P1"),
        ("ws://192.168.1.10:9000", "gko", False, "ws://192.168.1.10:8080?posId=P1"),
        ("WS://192.168.1.10", "gko", False, "ws://192.168.1.10:8080?posId=P1"),
        ("term.example.net", "gko", True, "wss://term.example.net:8443?posId=P1"),
        ("term.example.net", "", True, "wss://term.example.net:8443?posId=P1"),
        ("wss://term.example.net", "WBC", True, "wss://term.example.net?posId=P1"),
        ("term.example.net", "wbcx", True, "wss://term.example.net:8443?posId=P1"),
    ],
)
def test_port_follows_the_tenant_rule(
    address: str, tenant: str | None, secure: bool, expected: str
) -> None:
    assert expected == websocket_url(address, pos_id="P1", tenant_code=tenant, secure=secure)


@pytest.mark.parametrize(
    ("address", "tenant", "secure", "expected"),
    [
        ("ws://127.0.0.1:9001", "gko", False, "ws://127.0.0.1:9001?posId=LAB1"),
        ("ws://127.0.0.1:9001", None, False, "ws://127.0.0.1:9001?posId=LAB1"),
        ("ws://localhost:8765", "wbc", False, "ws://localhost:8765?posId=LAB1"),
        ("wss://sim.lab.local:9443", "gko", True, "wss://sim.lab.local:9443?posId=LAB1"),
        ("127.0.0.1:9001", "gko", False, "ws://127.0.0.1:9001?posId=LAB1"),
        ("ws://127.0.0.1", "gko", False, "ws://127.0.0.1?posId=LAB1"),
    ],
)
def test_explicit_address_is_used_as_given_whatever_the_tenant(
    address: str, tenant: str | None, secure: bool, expected: str
) -> None:
    actual = websocket_url(address, pos_id="LAB1", tenant_code=tenant, secure=secure, explicit=True)
    assert expected == actual


def test_pos_id_that_is_not_alphanumeric_cannot_change_the_url_shape() -> None:
    actual = websocket_url("10.0.0.1", pos_id="a&b#c d", tenant_code="gko", secure=False)
    expected = "ws://10.0.0.1:8080?posId=a%26b%23c%20d"
    assert expected == actual


@pytest.mark.parametrize(
    ("address", "secure"),
    [
        ("wss://10.0.0.1", False),  # scheme contradicts the secure setting
        ("ws://10.0.0.1", True),
        ("http://10.0.0.1", False),
        ("ws://10.0.0.1/path", False),
        ("ws://10.0.0.1:8080?posId=X", False),
        ("ws://user@10.0.0.1", False),
        ("ws://", False),
        ("10.0.0.1:", False),
        ("10.0.0.1:123456", False),
        ("[::1]:8080", False),
        (" 10.0.0.1", False),
    ],
)
def test_address_that_is_not_scheme_host_port_is_a_configuration_error(
    address: str, secure: bool
) -> None:
    with pytest.raises(ConfigurationError):
        websocket_url(address, pos_id="P1", tenant_code="gko", secure=secure)
    with pytest.raises(ConfigurationError):
        websocket_url(address, pos_id="P1", tenant_code="wbc", secure=secure, explicit=True)


# --- §1: validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pos_id", "expected"),
    [
        ("POS1", True),
        ("a", True),
        ("TESTVEND222", True),
        ("A" * 16, True),
        ("0123456789abcdef", True),
        ("", False),
        ("A" * 17, False),
        ("POS 1", False),
        ("POS-1", False),
        ("POS_1", False),
        ("POS1\n", False),
        ("POSé", False),
        ("POS\u0661", False),  # an Arabic-Indic digit is a digit, but not ASCII
    ],
)
def test_pos_id_is_one_to_sixteen_ascii_letters_or_digits(pos_id: str, expected: bool) -> None:
    assert expected == is_valid_pos_id(pos_id)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("192.168.1.10", True),
        ("192.168.1.10:9000", True),
        ("1.2.3.4:1", True),
        ("1.2.3.4:65535", True),
        ("999.999.999.999:99999", True),  # the JS rule counts digits, not values
        ("10.20.30", False),
        ("10.20.30.40.50", False),
        ("1234.1.1.1", False),
        ("1.2.3.4:", False),
        ("1.2.3.4:123456", False),
        ("ws://1.2.3.4", False),
        ("terminal.local", False),
        ("", False),
        ("1.2.3.4\n", False),
        ("\u0661.2.3.4", False),  # an Arabic-Indic digit
    ],
)
def test_plain_address_is_ipv4_with_optional_port(address: str, expected: bool) -> None:
    assert expected == is_valid_eftpos_address(address, secure=False)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("321-433-179.z1.sandbox.apdvcs.net", True),
        ("patest1.z1.nonprod.apdvcs.net", True),
        ("192.168.1.10", True),
        ("localhost", True),
        ("host.example:8443", False),  # secure mode takes no port
        ("wss://host.example", False),
        ("host_name.example", False),
        ("host example", False),
        ("", False),
        ("hôte.example", False),
        ("host.example\n", False),
    ],
)
def test_secure_address_is_letters_digits_dots_and_dashes(address: str, expected: bool) -> None:
    assert expected == is_valid_eftpos_address(address, secure=True)


# --- §6.1, §13.11: the device-address URL ----------------------------------------------


@pytest.mark.parametrize(
    ("test_mode", "secure", "environment", "expected"),
    [
        (False, False, None, "https://device-address-api.gko.mspenv.io/v1/321-417-722/ip"),
        (False, True, None, "https://device-address-api.gko.mspenv.io/v1/321-417-722/fqdn"),
        (True, False, None, "https://device-address-api-sb.gko.mspenv.io/v1/321-417-722/ip"),
        (True, True, None, "https://device-address-api-sb.gko.mspenv.io/v1/321-417-722/fqdn"),
        (False, False, "dev", "https://device-address-api-dev.gko.mspenv.io/v1/321-417-722/ip"),
        (True, True, "qa2", "https://device-address-api-qa2.gko.mspenv.io/v1/321-417-722/fqdn"),
        (True, False, "", "https://device-address-api-sb.gko.mspenv.io/v1/321-417-722/ip"),
    ],
)
def test_device_address_host_follows_mode_and_environment(
    test_mode: bool, secure: bool, environment: str | None, expected: str
) -> None:
    actual = device_address_url(
        "321-417-722",
        tenant_code="gko",
        test_mode=test_mode,
        secure=secure,
        environment_code=environment,
    )
    assert expected == actual


@pytest.mark.parametrize(
    ("base_url", "secure", "expected"),
    [
        ("http://127.0.0.1:8123", False, "http://127.0.0.1:8123/v1/321-417-722/ip"),
        ("http://127.0.0.1:8123/", True, "http://127.0.0.1:8123/v1/321-417-722/fqdn"),
        ("https://fake.lab/mock", False, "https://fake.lab/mock/v1/321-417-722/ip"),
    ],
)
def test_device_address_base_url_replaces_scheme_and_host_and_keeps_the_path(
    base_url: str, secure: bool, expected: str
) -> None:
    actual = device_address_url(
        "321-417-722",
        tenant_code="wbc",
        test_mode=True,
        secure=secure,
        environment_code="dev",
        base_url=base_url,
    )
    assert expected == actual


def test_device_address_serial_is_escaped_into_one_path_segment() -> None:
    actual = device_address_url("../x?y", tenant_code="gko", test_mode=False, secure=False)
    expected = "https://device-address-api.gko.mspenv.io/v1/..%2Fx%3Fy/ip"
    assert expected == actual


@pytest.mark.parametrize(
    "kwargs",
    [
        {"serial_number": ""},
        {"tenant_code": ""},
        {"tenant_code": "gko.evil.com/"},
        {"tenant_code": "-gko"},
        {"environment_code": "a/b"},
        {"base_url": "ftp://127.0.0.1"},
        {"base_url": "http://127.0.0.1?x=1"},
        {"base_url": "127.0.0.1:8123"},
    ],
)
def test_device_address_url_refuses_what_would_change_the_host(kwargs: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {
        "serial_number": "321-417-722",
        "tenant_code": "gko",
        "test_mode": False,
        "secure": False,
    } | kwargs
    with pytest.raises(ConfigurationError):
        device_address_url(**arguments)


def test_device_address_constants_are_the_services() -> None:
    expected = ("ASM-MSP-DEVICE-ADDRESS-API-KEY", 8.0)
    assert expected == (DEVICE_ADDRESS_API_KEY_HEADER, DEVICE_ADDRESS_TIMEOUT_S)


# --- §6.1, §13.11: interpreting the answer ----------------------------------------------


def test_ip_answer_is_a_new_address_and_the_error_field_is_ignored() -> None:
    actual = interpret_device_address_response(
        200, _body("ip_GET.json"), secure=False, current_address="ws://192.168.1.10"
    )
    expected = DeviceAddressResult(
        code=DeviceAddressResponseCode.SUCCESS,
        address="192.168.1.114",
        last_updated="2018-10-08T06:43:21Z",
        detail=actual.detail,
    )
    assert expected == actual


def test_fqdn_answer_is_a_new_address_and_the_error_field_is_ignored() -> None:
    actual = interpret_device_address_response(
        200, _body("fqdn_GET.json"), secure=True, current_address=None
    )
    expected = (
        DeviceAddressResponseCode.SUCCESS,
        "patest1.z1.nonprod.apdvcs.net",
        "2018-10-03T04:33:54Z",
    )
    assert expected == (actual.code, actual.address, actual.last_updated)


def test_fqdn_wins_over_ip_when_both_are_present() -> None:
    body = orjson.dumps({"ip": "10.0.0.9", "fqdn": "term.example.net"})
    actual = interpret_device_address_response(200, body, secure=True, current_address=None)
    expected = "term.example.net"
    assert expected == actual.address


@pytest.mark.parametrize(
    "current",
    [
        "192.168.1.114",
        "192.168.1.114:9000",
        "ws://192.168.1.114",
        "ws://192.168.1.114:8080?posId=POS1",
    ],
)
def test_same_ip_in_any_spelling_is_address_not_changed(current: str) -> None:
    """§11: compare hosts, not ``ws://x`` with ``x`` nor a field that does not exist."""
    actual = interpret_device_address_response(
        200, _body("ip_GET.json"), secure=False, current_address=current
    )
    expected = (
        DeviceAddressResponseCode.ADDRESS_NOT_CHANGED,
        "192.168.1.114",
        "2018-10-08T06:43:21Z",
    )
    assert expected == (actual.code, actual.address, actual.last_updated)


@pytest.mark.parametrize(
    "current",
    [
        "patest1.z1.nonprod.apdvcs.net",
        "PATEST1.Z1.NONPROD.APDVCS.NET",
        "wss://patest1.z1.nonprod.apdvcs.net:8443?posId=TESTVEND222",
        "wss://patest1.z1.nonprod.apdvcs.net.",
    ],
)
def test_same_host_name_in_any_spelling_is_address_not_changed(current: str) -> None:
    actual = interpret_device_address_response(
        200, _body("fqdn_GET.json"), secure=True, current_address=current
    )
    expected = DeviceAddressResponseCode.ADDRESS_NOT_CHANGED
    assert expected == actual.code


@pytest.mark.parametrize("current", ["192.168.1.11", "192.168.1.1", "192.168.1.1145", ""])
def test_a_different_or_no_current_host_is_success(current: str) -> None:
    actual = interpret_device_address_response(
        200, _body("ip_GET.json"), secure=False, current_address=current
    )
    expected = DeviceAddressResponseCode.SUCCESS
    assert expected == actual.code


def test_404_is_invalid_serial_number() -> None:
    actual = interpret_device_address_response(
        404, b'{"error":"device not found"}', secure=False, current_address="ws://10.0.0.1"
    )
    expected = (DeviceAddressResponseCode.INVALID_SERIAL_NUMBER, None)
    assert expected == (actual.code, actual.address)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (None, None),  # network error or timeout
        (None, b'{"ip": "10.0.0.1"}'),
        (500, b'{"ip": "10.0.0.1"}'),
        (401, b""),
        (204, None),
        (201, b'{"ip": "10.0.0.1"}'),
        (200, None),
        (200, b""),
        (200, b"not json"),
        (200, b"\xff\xfe"),
        (200, b"[]"),
        (200, b'"10.0.0.1"'),
        (200, b"{}"),
        (200, b'{"ip": ""}'),
        (200, b'{"ip": null, "fqdn": null}'),
        (200, b'{"ip": 10}'),
        (200, b'{"error": "device not found", "Serial": "321-417-722"}'),
        (200, b'{"ip": "10.0.0.1/evil"}'),  # would change the URL's shape
        (200, b'{"ip": "term.example.net"}'),  # plain mode takes IPv4 only
        (200, b'{"fqdn": "evil.example?x=1"}'),
    ],
)
def test_anything_else_is_a_device_service_error(status: int | None, body: bytes | None) -> None:
    actual = interpret_device_address_response(
        status, body, secure=False, current_address="ws://10.0.0.1"
    )
    expected = (DeviceAddressResponseCode.DEVICE_SERVICE_ERROR, None, None)
    assert expected == (actual.code, actual.address, actual.last_updated)


def test_last_updated_that_is_not_text_is_dropped() -> None:
    body = orjson.dumps({"ip": "10.0.0.2", "last_updated": 12})
    actual = interpret_device_address_response(200, body, secure=False, current_address=None)
    expected = (DeviceAddressResponseCode.SUCCESS, None)
    assert expected == (actual.code, actual.last_updated)


def test_response_codes_are_the_librarys_names() -> None:
    expected = [
        "SUCCESS",
        "INVALID_SERIAL_NUMBER",
        "ADDRESS_NOT_CHANGED",
        "SERIAL_NUMBER_NOT_CHANGED",
        "DEVICE_SERVICE_ERROR",
    ]
    assert expected == [str(code) for code in DeviceAddressResponseCode]


# --- §8.4, §13.7, §13.8: timings ------------------------------------------------------------


def test_default_timings_are_the_2_9_13_values() -> None:
    expected = Timings(
        ping_interval_s=18.0,
        pong_timeout_s=5.0,
        missed_pongs_before_disconnect=2,
        reconnect_pause_s=1.5,
        connect_timeout_s=4.0,
        pairing_retries=3,
        reconnects_before_address_lookup=3,
        get_transaction_interval_s=20.0,
        cancel_wait_disconnected_s=10.0,
        cancel_wait_connected_s=25.0,
        tx_monitor_interval_s=1.0,
        device_address_timeout_s=8.0,
    )
    assert expected == DEFAULT_TIMINGS


def test_timings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        DEFAULT_TIMINGS.ping_interval_s = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ping_interval_s": 0.0},
        {"pong_timeout_s": -1.0},
        {"reconnect_pause_s": float("nan")},
        {"connect_timeout_s": float("inf")},
        {"pairing_retries": -1},
        {"missed_pongs_before_disconnect": True},
    ],
)
def test_timings_refuse_values_that_would_spin_or_never_fire(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Timings(**kwargs)


def test_timings_allow_zero_counts_for_tests() -> None:
    expected = 0
    assert expected == Timings(pairing_retries=0).pairing_retries
