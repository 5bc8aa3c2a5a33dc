"""Conformance of multipair.spi.crypto with the reference client's own vectors (§3)."""

from __future__ import annotations

import pytest

from multipair.exceptions import CryptoError
from multipair.spi import crypto
from tests.spi_shared import load_vector


def test_aes_encrypt_matches_every_vector() -> None:
    cases = load_vector("aes.json")["encrypt_cases"]
    assert cases
    for case in cases:
        got = crypto.aes_encrypt(case["key_hex"], case["plaintext"].encode("utf-8")).hex()
        assert case["ciphertext_hex"].lower() == got, case["label"]


def test_aes_decrypt_accepts_terminal_upper_case_hex() -> None:
    for case in load_vector("aes.json")["decrypt_cases"]:
        plain = crypto.aes_decrypt(case["key_hex"], bytes.fromhex(case["ciphertext_hex"]))
        assert case["plaintext"] == plain.decode("utf-8")


def test_aes_decrypt_round_trips_every_encrypt_vector() -> None:
    for case in load_vector("aes.json")["encrypt_cases"]:
        plain = crypto.aes_decrypt(case["key_hex"].lower(), bytes.fromhex(case["ciphertext_hex"]))
        assert case["plaintext"] == plain.decode("utf-8")


def test_hmac_is_upper_case_over_the_enc_text() -> None:
    cases = load_vector("hmac.json")["cases"]
    for case in cases:
        got = crypto.hmac_sha256_hex(case["key_hex"], case["message_text"])
        assert case["hmac_as_put_on_the_wire"] == got, case["label"]
        assert case["hmac_as_returned_by_library"].upper() == got


def test_hmac_verify_strict_case_rejects_lower_case_like_the_js_client() -> None:
    case = load_vector("hmac.json")["cases"][0]
    wire = case["hmac_as_put_on_the_wire"]
    assert crypto.hmac_verify(case["key_hex"], case["message_text"], wire, strict_case=True)
    assert not crypto.hmac_verify(
        case["key_hex"], case["message_text"], wire.lower(), strict_case=True
    )
    assert crypto.hmac_verify(case["key_hex"], case["message_text"], wire.lower())


def test_dh_public_keys_match() -> None:
    vec = load_vector("dh.json")
    assert int(vec["p_hex"], 16) == crypto.DH_P
    assert vec["g"] == crypto.DH_G
    for case in vec["public_key_cases"]:
        public = crypto.dh_public_key(int(case["private_key_hex"], 16))
        assert int(case["public_key_hex_as_returned"], 16) == public, case["label"]


def test_dh_shared_secrets_match() -> None:
    for case in load_vector("dh.json")["shared_secret_cases"]:
        secret = crypto.dh_shared_secret(
            int(case["their_public_key_hex"], 16), int(case["my_private_key_hex"], 16)
        )
        assert int(case["shared_secret_hex_as_returned"], 16) == secret, case["label"]


def test_dh_small_group_sanity_cases() -> None:
    first, second = load_vector("dh.json")["small_group_cases"]
    p = int(first["p_hex"], 16)
    assert int(first["public_key_hex_as_returned"], 16) == crypto.dh_public_key(
        int(first["private_key_hex"], 16), p=p, g=int(first["g_hex"], 16)
    )
    assert int(second["shared_secret_hex_as_returned"], 16) == crypto.dh_shared_secret(
        int(second["their_public_key_hex"], 16), int(second["private_key_hex"], 16), p=p
    )


def test_secret_derivation_pads_to_256_bytes_then_hashes() -> None:
    for case in load_vector("secrets.json")["cases"]:
        key = crypto.dh_secret_to_key(int(case["dh_secret_hex"], 16))
        assert case["spi_secret_as_returned"].lower() == key, case["label"]


def test_key_rolling_matches_library_values() -> None:
    for case in load_vector("key_rollover.json")["cases"]:
        old = crypto.Secrets(enc_key=case["old_EncKey"], hmac_key=case["old_HmacKey"])
        new = old.rolled()
        assert case["new_EncKey"] == new.enc_key, case["label"]
        assert case["new_HmacKey"] == new.hmac_key, case["label"]


def test_pairing_keys_from_the_vector_private_keys() -> None:
    vec = load_vector("pairing.json")
    for kind, key_name in (("enc", "EncKey"), ("hmac", "HmacKey")):
        private = int(vec[f"private_key_{kind}_hex"], 16)
        their = crypto.parse_public_key(vec[f"A_{kind}_hex"])
        assert int(vec[f"B_{kind}_hex"], 16) == crypto.dh_public_key(private)
        secret = crypto.dh_shared_secret(their, private)
        assert int(vec[f"dh_shared_secret_{kind}_hex"], 16) == secret
        assert vec[key_name].lower() == crypto.dh_secret_to_key(secret)


def test_v29_pairing_keys_from_the_csprng_style_private_keys() -> None:
    vec = load_vector("v29_pairing.json")
    for kind, key_name in (("enc", "EncKey"), ("hmac", "HmacKey")):
        private = int(vec[f"private_key_{kind}_hex"], 16)
        assert int(vec[f"B_{kind}_hex"], 16) == crypto.dh_public_key(private)
        secret = crypto.dh_shared_secret(crypto.parse_public_key(vec[f"A_{kind}_hex"]), private)
        assert vec[key_name].lower() == crypto.dh_secret_to_key(secret)


def test_confirmation_code_is_first_six_of_the_key_check_hmac() -> None:
    import json

    for case in load_vector("confirmation_code.json")["cases"]:
        envelope = json.loads(case["envelope_json"])
        assert case["confirmation_code"] == crypto.confirmation_code(envelope["hmac"])


@pytest.mark.parametrize("value", ["0", "1", "", "zz", crypto.int_to_hex(crypto.DH_P - 1)])
def test_public_values_outside_the_group_are_refused(value: str) -> None:
    with pytest.raises(CryptoError):
        crypto.parse_public_key(value)


def test_private_keys_are_fresh_and_in_range() -> None:
    keys = {crypto.generate_private_key() for _ in range(32)}
    assert len(keys) == 32
    assert all(2 <= k <= crypto.DH_P - 2 for k in keys)
    # 256+ bits of entropy: no key is one of the reference client's P >> k values.
    weak = {crypto.DH_P >> k for k in range(1, 1001)}
    assert not keys & weak


def test_secrets_repr_never_shows_a_key() -> None:
    s = crypto.Secrets(enc_key="11" * 32, hmac_key="22" * 32)
    assert "11" * 8 not in repr(s)
    assert "22" * 8 not in str(s)
    assert s.fingerprint() in repr(s)


@pytest.mark.parametrize("bad", ["", "xyz", "11" * 31, "11" * 33])
def test_secrets_refuse_malformed_keys(bad: str) -> None:
    with pytest.raises(CryptoError):
        crypto.Secrets(enc_key=bad, hmac_key="22" * 32)
