"""Helpers for driving sans-I/O sessions in tests: a fixed clock, terminal frames, test keys."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from multipair.spi.crypto import (
    Secrets,
    dh_public_key,
    dh_secret_to_key,
    dh_shared_secret,
    generate_private_key,
    int_to_hex,
    parse_public_key,
)
from multipair.spi.envelope import Message, encode_frame, terminal_inner_json
from multipair.spi.pos import PosInfo

VECTOR_EPOCH = dt.datetime(2021, 6, 8, 5, 3, 32, 123000, tzinfo=dt.UTC).timestamp()

TEST_POS_INFO = PosInfo(
    pos_vendor_id="multipair-tests", pos_version="1.0.0", library_version="0.1.0"
)


KEYS = Secrets(
    enc_key="11A1162B984FEF626ECC27C659A8B0EEAD5248CA867A6A87BEA72F8A8706109D",
    hmac_key="40510175845988F13F6162ED8526F0B09F73384467FA855E1E79B44A56562A58",
)


def answer_key_request(key_request: dict[str, Any]) -> tuple[dict[str, Any], Secrets]:
    """The POS side of §4.2: the ``key_response`` data for a ``key_request``'s data, and the
    keys both sides hold once the terminal has it (fresh private values each call)."""
    a_enc = parse_public_key(key_request["enc"]["A"])
    a_hmac = parse_public_key(key_request["hmac"]["A"])
    b_enc, b_hmac = generate_private_key(), generate_private_key()
    response = {
        "enc": {"B": int_to_hex(dh_public_key(b_enc))},
        "hmac": {"B": int_to_hex(dh_public_key(b_hmac))},
    }
    secrets = Secrets(
        enc_key=dh_secret_to_key(dh_shared_secret(a_enc, b_enc)),
        hmac_key=dh_secret_to_key(dh_shared_secret(a_hmac, b_hmac)),
    )
    return response, secrets


class FixedCounter(random.Random):
    """A Random whose randint always returns one value (the vectors pin pos_counter)."""

    def __init__(self, value: int) -> None:
        super().__init__(0)
        self.value = value

    def randint(self, a: int, b: int) -> int:
        return self.value


def epoch(iso: str) -> float:
    """Seconds since the epoch for an ISO-8601 UTC time (``Z`` allowed)."""
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def terminal_frame(
    event: str,
    msg_id: str,
    data: dict[str, Any] | None = None,
    *,
    secrets: Secrets | None,
    conn_id: str | None = None,
    datetime: str | None = "2021-06-08T15:03:33.000",
) -> str:
    """A frame as a terminal writes it: upper-case hex, no pos_id (§2.2)."""
    inner = terminal_inner_json(
        Message(id=msg_id, event=event, data=data, datetime=datetime, conn_id=conn_id)
    )
    return encode_frame(inner, secrets=secrets, upper_enc=True)
