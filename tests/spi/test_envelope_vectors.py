"""Conformance of the envelope with the reference client's bytes (§2, §13.3)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from multipair.spi.crypto import Secrets
from multipair.spi.envelope import (
    Generation,
    MessageStamp,
    Received,
    RejectedFrame,
    RejectReason,
    decode_frame,
    format_utc_datetime,
)
from tests.spi_shared import load_vector


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _outgoing(vector: str) -> list[dict[str, Any]]:
    return [c for c in load_vector(vector)["cases"] if c["direction"] == "POS->terminal"]


def _encode_case(case: dict[str, object], generation: Generation) -> str:
    inner = json.loads(str(case.get("inner_json") or case["envelope_json"]))["message"]
    secrets = (
        Secrets(enc_key=str(case["EncKey"]), hmac_key=str(case["HmacKey"]))
        if "EncKey" in case
        else None
    )
    conn_id = case["conn_id"]
    stamp = MessageStamp(
        pos_id=str(case["pos_id"]),
        generation=generation,
        secrets=secrets,
        conn_id=conn_id if isinstance(conn_id, str) else None,
        pos_counter=int(str(case["pos_counter"])),
    )
    return stamp.encode(
        inner["id"], inner["event"], inner["data"], now=_epoch(str(case["datetime"]))
    )


def test_utc_datetime_is_written_like_the_js_client() -> None:
    assert format_utc_datetime(_epoch("2021-06-08T05:03:32.123Z")) == "2021-06-08T05:03:32.123Z"


@pytest.mark.parametrize(
    ("vector", "generation"),
    [("envelope.json", Generation.V28), ("v29_envelope.json", Generation.V29)],
)
def test_outgoing_envelopes_are_byte_exact(vector: str, generation: Generation) -> None:
    cases = _outgoing(vector)
    assert cases
    for case in cases:
        assert case["envelope_json"] == _encode_case(case, generation), case["label"]


@pytest.mark.parametrize("vector", ["envelope.json", "v29_envelope.json"])
def test_outgoing_envelopes_decode_back_to_their_inner_json(vector: str) -> None:
    for case in _outgoing(vector):
        secrets = (
            Secrets(enc_key=case["EncKey"], hmac_key=case["HmacKey"]) if "EncKey" in case else None
        )
        got = decode_frame(case["envelope_json"], secrets, strict_hmac_case=True)
        assert isinstance(got, Received), case["label"]
        if "inner_json" in case:
            assert case["inner_json"] == got.inner_text
        assert secrets is not None or not got.encrypted


def test_incoming_terminal_frames_and_rejections() -> None:
    expected_reject = {
        "_INVALID_SIGNATURE_": RejectReason.INVALID_SIGNATURE,
        "NOSECRETS": RejectReason.NO_SECRETS,
    }
    for vector in ("envelope.json", "v29_envelope.json"):
        for case in load_vector(vector)["cases"]:
            if case["direction"] != "terminal->POS":
                continue
            secrets = (
                Secrets(enc_key=case["EncKey"], hmac_key=case["HmacKey"])
                if "EncKey" in case
                else None
            )
            got = decode_frame(case["envelope_json"], secrets, strict_hmac_case=True)
            if case["event"] in expected_reject:
                assert isinstance(got, RejectedFrame), case["label"]
                assert expected_reject[case["event"]] == got.reason, case["label"]
            else:
                assert isinstance(got, Received), case["label"]
                assert case["event"] == got.message.event
                if "decrypted_json" in case:
                    assert case["decrypted_json"] == got.inner_text


def test_key_rollover_reply_is_byte_exact_under_the_new_keys() -> None:
    for case in load_vector("key_rollover.json")["cases"]:
        old = Secrets(enc_key=case["old_EncKey"], hmac_key=case["old_HmacKey"])
        new = old.rolled()
        inner = json.loads(case["response_inner_json"])["message"]
        stamp = MessageStamp(
            pos_id="POS1",
            generation=Generation.V28,
            secrets=new,
            conn_id=inner["conn_id"],
            pos_counter=inner["pos_counter"],
        )
        frame = stamp.encode(
            inner["id"], inner["event"], inner["data"], now=_epoch(inner["datetime"])
        )
        expected = case["response_envelope_json_encrypted_with_NEW_keys"]
        # The vector's outer object may or may not carry pos_id; compare enc and hmac exactly.
        assert json.loads(expected)["enc"] == json.loads(frame)["enc"], case["label"]
        assert json.loads(expected)["hmac"] == json.loads(frame)["hmac"], case["label"]
        assert isinstance(decode_frame(expected, new), Received)
        assert isinstance(decode_frame(expected, old), RejectedFrame)


def test_confirmation_code_envelopes_decrypt_to_key_check() -> None:
    for case in load_vector("confirmation_code.json")["cases"]:
        secrets = Secrets(enc_key=case["EncKey"], hmac_key=case["HmacKey"])
        got = decode_frame(case["envelope_json"], secrets, strict_hmac_case=True)
        assert isinstance(got, Received)
        assert case["decrypted_json"] == got.inner_text
        assert got.message.event == "key_check"


def test_v29_pairing_frames_are_byte_exact() -> None:
    vec = load_vector("v29_pairing.json")
    secrets = Secrets(enc_key=vec["EncKey"], hmac_key=vec["HmacKey"])
    for name in ("key_check", "pair_response"):
        got = decode_frame(vec[name]["envelope_json"], secrets, strict_hmac_case=True)
        assert isinstance(got, Received)
        assert vec[name]["inner_json"] == got.inner_text
    ping = json.loads(vec["first_ping"]["inner_json"])["message"]
    stamp = MessageStamp(
        pos_id="POS1", secrets=secrets, conn_id=ping["conn_id"], pos_counter=ping["pos_counter"]
    )
    frame = stamp.encode(ping["id"], ping["event"], ping["data"], now=_epoch(ping["datetime"]))
    assert vec["first_ping"]["envelope_json"] == frame
    plain = json.loads(vec["pair_request_json"])["message"]
    stamp = MessageStamp(pos_id="POS1", conn_id="", pos_counter=plain["pos_counter"])
    assert vec["pair_request_json"] == stamp.encode(
        plain["id"], plain["event"], plain["data"], now=_epoch(plain["datetime"])
    )
