"""The secrets box: AES-GCM under the master key, bound to lane and field."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from multipair.exceptions import ConfigurationError, CryptoError
from multipair.store import MasterKey, keygen_main, lane_aad

LANE_A = "8a5e2dcc-bfa0-469f-95d7-eec778b08453"
LANE_B = "0b9d5f7e-58d1-4c55-9a3b-0f0e4b7c2d11"
AAD = lane_aad(LANE_A, "secrets")


def test_sealed_value_opens_with_the_same_key_and_aad() -> None:
    key = MasterKey.generate()
    sealed = key.seal(b"enc and hmac keys", aad=AAD)
    assert (True, b"enc and hmac keys") == (sealed.startswith("v1:"), key.open(sealed, aad=AAD))


def test_each_seal_uses_a_fresh_nonce() -> None:
    key = MasterKey.generate()
    assert key.seal(b"same", aad=AAD) != key.seal(b"same", aad=AAD)


def test_sealed_value_does_not_contain_the_plaintext() -> None:
    key = MasterKey.generate()
    sealed = key.seal(b"A" * 64, aad=AAD)
    assert b"A" * 16 not in base64.b64decode(sealed[3:])


@pytest.mark.parametrize(
    "other_aad",
    [lane_aad(LANE_B, "secrets"), lane_aad(LANE_A, "spi_token"), b""],
    ids=["other lane", "other field", "no aad"],
)
def test_sealed_value_moved_elsewhere_does_not_open(other_aad: bytes) -> None:
    key = MasterKey.generate()
    sealed = key.seal(b"secret", aad=AAD)
    with pytest.raises(CryptoError):
        key.open(sealed, aad=other_aad)


def test_sealed_value_does_not_open_with_another_key() -> None:
    sealed = MasterKey.generate().seal(b"secret", aad=AAD)
    with pytest.raises(CryptoError):
        MasterKey.generate().open(sealed, aad=AAD)


def test_tampered_sealed_value_does_not_open() -> None:
    key = MasterKey.generate()
    blob = bytearray(base64.b64decode(key.seal(b"secret", aad=AAD)[3:]))
    blob[-1] ^= 1
    with pytest.raises(CryptoError):
        key.open("v1:" + base64.b64encode(bytes(blob)).decode(), aad=AAD)


@pytest.mark.parametrize("sealed", ["", "v2:AAAA", "v1:not base64!", "v1:" + "A" * 20, "secret"])
def test_malformed_sealed_value_is_a_crypto_error(sealed: str) -> None:
    with pytest.raises(CryptoError):
        MasterKey.generate().open(sealed, aad=AAD)


def test_master_key_never_shows_itself() -> None:
    raw = os.urandom(32)
    key = MasterKey(raw)
    shown = repr(key) + str(key) + f"{key}"
    assert [] == [
        form for form in (raw.hex(), base64.b64encode(raw).decode(), repr(raw)) if form in shown
    ]
    assert f"MasterKey(fingerprint='{key.fingerprint()}')" == repr(key)


def test_master_key_from_base64_accepts_padding_whitespace_and_urlsafe() -> None:
    raw = bytes(range(250, 256)) + os.urandom(26)
    key = MasterKey(raw)
    assert key == MasterKey.from_base64(base64.b64encode(raw).decode() + "\n")
    assert key == MasterKey.from_base64(base64.urlsafe_b64encode(raw))


@pytest.mark.parametrize(
    "text",
    ["", "not base64!", base64.b64encode(b"x" * 16).decode(), base64.b64encode(b"x" * 33).decode()],
)
def test_master_key_of_the_wrong_form_is_a_configuration_error(text: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        MasterKey.from_base64(text, source="MULTIPAIR_MASTER_KEY")
    assert "MULTIPAIR_MASTER_KEY" in str(caught.value)


def test_master_key_of_wrong_length_bytes_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        MasterKey(b"short")


def test_master_key_file_is_read(tmp_path: Path) -> None:
    key = MasterKey.generate()
    path = tmp_path / "master.key"
    path.write_text(key.to_base64() + "\n")
    path.chmod(0o600)
    assert key == MasterKey.from_file(path)


def test_missing_master_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        MasterKey.from_file(tmp_path / "absent.key")
    assert "absent.key" in str(caught.value)


def test_keygen_prints_a_new_base64_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert 0 == keygen_main([])
    first = capsys.readouterr().out
    assert 0 == keygen_main([])
    second = capsys.readouterr().out
    assert (32, True, True) == (
        len(base64.b64decode(first, validate=False)),
        first.endswith("\n"),
        first != second,
    )
    MasterKey.from_base64(first)


def test_keygen_writes_a_private_file_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    assert 0 == keygen_main(["--output", str(path)])
    key = MasterKey.from_file(path)
    assert 0o600 == stat.S_IMODE(path.stat().st_mode)
    assert 2 == keygen_main(["--output", str(path)])
    assert key == MasterKey.from_file(path)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_key_file_others_may_read_is_refused_with_the_chmod_that_fixes_it(
    tmp_path: Path, mode: int
) -> None:
    path = tmp_path / "master.key"
    path.write_text(MasterKey.generate().to_base64() + "\n")
    path.chmod(mode)
    with pytest.raises(ConfigurationError) as caught:
        MasterKey.from_file(path)
    message = str(caught.value)
    assert (True, True) == (f"chmod 600 {path}" in message, f"mode 0{mode:o}" in message)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_key_file_only_its_owner_may_read_is_read(tmp_path: Path, mode: int) -> None:
    key = MasterKey.generate()
    path = tmp_path / "master.key"
    path.write_text(key.to_base64() + "\n")
    path.chmod(mode)
    assert key == MasterKey.from_file(path)
