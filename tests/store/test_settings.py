"""multipair.config.Settings: one place, documented defaults, errors that name the variable.

(Lives here until tests/test_config.py exists; Settings carries the store's master key.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from multipair import __version__
from multipair.config import Settings
from multipair.exceptions import ConfigurationError
from multipair.store import MasterKey


def test_defaults_from_an_empty_environment() -> None:
    settings = Settings.from_env({}, host_id="host-1")
    assert (
        None,
        "mp",
        None,
        "multipair",
        __version__,
        None,
        None,
        None,
        None,
        10_000,
        "host-1",
        "auto",
    ) == (
        settings.redis_url,
        settings.prefix,
        settings.master_key,
        settings.pos_vendor_id,
        settings.pos_version,
        settings.device_api_key,
        settings.device_address_env,
        settings.device_address_base_url,
        settings.tls_ca_file,
        settings.events_maxlen,
        settings.host_id,
        settings.log_format,
    )


def test_pay_at_table_retention_is_7_days_unless_set() -> None:
    assert (7 * 86_400, 3600) == (
        Settings.from_env({}, host_id="h").pat_retention_s,
        Settings.from_env({"MULTIPAIR_PAT_RETENTION_S": "3600"}, host_id="h").pat_retention_s,
    )


def test_host_id_defaults_to_a_valid_host_name() -> None:
    assert Settings.from_env({}).host_id


def test_every_variable_is_read(tmp_path: Path) -> None:
    key = MasterKey.generate()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = Settings.from_env(
        {
            "MULTIPAIR_REDIS_URL": "rediss://pos:pw@redis.example:6380/2",
            "MULTIPAIR_PREFIX": "shop1",
            "MULTIPAIR_MASTER_KEY": key.to_base64(),
            "MULTIPAIR_POS_VENDOR_ID": "BurgerPOS",
            "MULTIPAIR_POS_VERSION": "4.2.0",
            "MULTIPAIR_DEVICE_API_KEY": "BurgerPosDeviceAPIKey",
            "MULTIPAIR_DEVICE_ADDRESS_ENV": "sb",
            "MULTIPAIR_DEVICE_ADDRESS_BASE_URL": "http://127.0.0.1:9000",
            "MULTIPAIR_DEVICE_ADDRESS_ALLOW": "10.0.0.0/8, .shop.example.com",
            "MULTIPAIR_TLS_CA_FILE": str(ca_file),
            "MULTIPAIR_EVENTS_MAXLEN": "500",
            "MULTIPAIR_LANE_MEMORY_MAX": "512M",
            "MULTIPAIR_HOST_ID": "store-7",
            "MULTIPAIR_LOG_FORMAT": "json",
        }
    )
    assert (
        Settings(
            redis_url="rediss://pos:pw@redis.example:6380/2",
            prefix="shop1",
            master_key=key,
            pos_vendor_id="BurgerPOS",
            pos_version="4.2.0",
            device_api_key="BurgerPosDeviceAPIKey",
            device_address_env="sb",
            device_address_base_url="http://127.0.0.1:9000",
            device_address_allow=("10.0.0.0/8", ".shop.example.com"),
            tls_ca_file=str(ca_file),
            events_maxlen=500,
            lane_memory_max=512 * 1024 * 1024,
            host_id="store-7",
            log_format="json",
        )
        == settings
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MULTIPAIR_REDIS_URL", "http://localhost:6379"),
        ("MULTIPAIR_PREFIX", "a{b}"),
        ("MULTIPAIR_MASTER_KEY", "not base64!"),
        ("MULTIPAIR_MASTER_KEY", "c2hvcnQ="),
        ("MULTIPAIR_POS_VENDOR_ID", " leading space"),
        ("MULTIPAIR_DEVICE_ADDRESS_ENV", "s b"),
        ("MULTIPAIR_DEVICE_ADDRESS_BASE_URL", "ftp://x"),
        ("MULTIPAIR_DEVICE_ADDRESS_BASE_URL", "http://device-address.example.com"),
        ("MULTIPAIR_DEVICE_ADDRESS_BASE_URL", "http://10.0.0.1:9000"),
        ("MULTIPAIR_DEVICE_ADDRESS_BASE_URL", "http://localhost.evil.example"),
        ("MULTIPAIR_DEVICE_ADDRESS_BASE_URL", "http://127.0.0.1@evil.example"),
        ("MULTIPAIR_DEVICE_ADDRESS_BASE_URL", "https://127.0.0.1:99999"),
        ("MULTIPAIR_DEVICE_ADDRESS_ALLOW", "10.0.0.0/33"),
        ("MULTIPAIR_DEVICE_ADDRESS_ALLOW", "10.0.0.1/8"),  # host bits set: a typo
        ("MULTIPAIR_DEVICE_ADDRESS_ALLOW", "10.0.0.0/8,300.1.0.0/16"),
        ("MULTIPAIR_DEVICE_ADDRESS_ALLOW", "fd00::/8"),  # terminals are IPv4 (§1)
        ("MULTIPAIR_DEVICE_ADDRESS_ALLOW", "bad host.example"),
        ("MULTIPAIR_DEVICE_ADDRESS_ALLOW", ".shop.ex\u0430mple.com"),
        ("MULTIPAIR_DEVICE_ADDRESS_ALLOW", " , "),
        ("MULTIPAIR_TLS_CA_FILE", "/nonexistent/ca.pem"),
        ("MULTIPAIR_EVENTS_MAXLEN", "ten"),
        ("MULTIPAIR_EVENTS_MAXLEN", "0"),
        ("MULTIPAIR_HOST_ID", "host with spaces"),
        ("MULTIPAIR_LOG_FORMAT", "xml"),
        ("MULTIPAIR_PAT_RETENTION_S", "a week"),
        ("MULTIPAIR_PAT_RETENTION_S", "59"),
    ],
)
def test_bad_value_names_its_variable(variable: str, value: str) -> None:
    env = {"MULTIPAIR_HOST_ID": "h"}
    env[variable] = value
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(env)
    assert variable in str(caught.value)


@pytest.mark.parametrize(
    "base_url",
    [
        "http://127.0.0.1:9000",
        "http://127.8.9.10:9000/prefix",
        "http://localhost:8123",
        "http://[::1]:8123",
        "https://device-address.example.com",
        "https://10.0.0.1:9443/mock",
    ],
)
def test_device_address_base_url_is_https_or_loopback_http(base_url: str) -> None:
    settings = Settings.from_env({"MULTIPAIR_DEVICE_ADDRESS_BASE_URL": base_url})
    assert base_url == settings.device_address_base_url


def test_plain_http_to_another_host_is_refused_with_a_reason() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({"MULTIPAIR_DEVICE_ADDRESS_BASE_URL": "http://10.0.0.1:9000"})
    message = str(caught.value)
    assert (True, True) == ("MULTIPAIR_DEVICE_ADDRESS_BASE_URL" in message, "https://" in message)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.0/8", ("10.0.0.0/8",)),
        (
            "10.0.0.0/8, 192.168.1.0/24 ,.shop.example.com,term1.example.com,",
            ("10.0.0.0/8", "192.168.1.0/24", ".shop.example.com", "term1.example.com"),
        ),
        ("10.20.30.40", ("10.20.30.40",)),
        ("", ()),
    ],
)
def test_device_address_allowlist_is_comma_separated(text: str, expected: tuple[str, ...]) -> None:
    settings = Settings.from_env({"MULTIPAIR_DEVICE_ADDRESS_ALLOW": text})
    assert expected == settings.device_address_allow


def test_device_address_allowlist_defaults_to_none_and_survives_a_json_list() -> None:
    """The lane template gets settings as JSON, where the tuple became a list."""
    listed = Settings(device_address_allow=["10.0.0.0/8"], host_id="h")  # type: ignore[arg-type]
    assert ((), ("10.0.0.0/8",)) == (
        Settings.from_env({}).device_address_allow,
        listed.device_address_allow,
    )


def test_master_key_file_is_read(tmp_path: Path) -> None:
    key = MasterKey.generate()
    path = tmp_path / "master.key"
    path.write_text(key.to_base64())
    path.chmod(0o600)
    settings = Settings.from_env({"MULTIPAIR_MASTER_KEY_FILE": str(path)})
    assert (key, path) == (settings.master_key, settings.master_key_file)


def test_a_group_readable_master_key_file_is_refused_naming_the_chmod(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_text(MasterKey.generate().to_base64())
    path.chmod(0o640)
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({"MULTIPAIR_MASTER_KEY_FILE": str(path)})
    assert f"chmod 600 {path}" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("268435456", 268_435_456),
        ("256M", 256 * 1024**2),
        ("512k", 512 * 1024),
        (" 1G ", 1024**3),
        ("0", 0),
    ],
)
def test_lane_memory_max_takes_bytes_or_a_k_m_g_suffix(text: str, expected: int) -> None:
    env = {"MULTIPAIR_LANE_MEMORY_MAX": text}
    assert expected == Settings.from_env(env).lane_memory_max


def test_lane_memory_max_defaults_to_256_mib() -> None:
    assert 256 * 1024 * 1024 == Settings.from_env({}).lane_memory_max


@pytest.mark.parametrize("text", ["lots", "-1", "1.5G", "256MB", "1T"])
def test_a_bad_lane_memory_max_names_the_variable(text: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({"MULTIPAIR_LANE_MEMORY_MAX": text})
    assert "MULTIPAIR_LANE_MEMORY_MAX" in str(caught.value)


def test_both_master_key_variables_at_once_is_an_error(tmp_path: Path) -> None:
    key = MasterKey.generate()
    path = tmp_path / "master.key"
    path.write_text(key.to_base64())
    path.chmod(0o600)
    with pytest.raises(ConfigurationError):
        Settings.from_env(
            {"MULTIPAIR_MASTER_KEY_FILE": str(path), "MULTIPAIR_MASTER_KEY": key.to_base64()}
        )


def test_master_key_file_option_wins_over_the_environment(tmp_path: Path) -> None:
    from_file = MasterKey.generate()
    path = tmp_path / "master.key"
    path.write_text(from_file.to_base64())
    path.chmod(0o600)
    env = {"MULTIPAIR_MASTER_KEY": MasterKey.generate().to_base64()}
    assert from_file == Settings.from_env(env, master_key_file=path).master_key


def test_overrides_win_and_none_means_not_given() -> None:
    env = {"MULTIPAIR_PREFIX": "env", "MULTIPAIR_REDIS_URL": "redis://env:6379/0"}
    settings = Settings.from_env(env, prefix="cli", redis_url=None, events_maxlen=7)
    assert ("cli", "redis://env:6379/0", 7) == (
        settings.prefix,
        settings.redis_url,
        settings.events_maxlen,
    )


def test_unknown_override_is_an_error() -> None:
    with pytest.raises(ConfigurationError):
        Settings.from_env({}, colour="blue")


def test_missing_master_key_says_how_to_make_one() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({}).require_master_key()
    assert "multipair keygen" in str(caught.value)


def test_repr_shows_no_secret() -> None:
    key = MasterKey.generate()
    settings = Settings.from_env(
        {
            "MULTIPAIR_REDIS_URL": "redis://pos:hunter2@redis:6379/0",
            "MULTIPAIR_MASTER_KEY": key.to_base64(),
            "MULTIPAIR_DEVICE_API_KEY": "BurgerPosDeviceAPIKey",
        }
    )
    shown = repr(settings)
    leaks: list[Any] = [s for s in ("hunter2", key.to_base64(), "BurgerPos") if s in shown]
    assert ([], True) == (leaks, "redis://pos:***@redis:6379/0" in shown)
