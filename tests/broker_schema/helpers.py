"""Shared builders for broker-schema tests: entries as redis-py returns them."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

LANE = "8a5e2dcc-bfa0-469f-95d7-eec778b08453"
NOW = dt.datetime(2025, 1, 31, 9, 30, tzinfo=dt.UTC)
"""The fixed clock of these tests (before every expiry used in examples)."""


def entry(body: Any, *, v: bytes = b"1") -> dict[bytes, bytes]:
    """A stream entry as ``XREADGROUP`` gives it: bytes field names and values."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return {b"v": v, b"body": data}


def purchase(**fields: Any) -> dict[str, Any]:
    """A valid purchase body, with ``fields`` changed (a value of ``...`` removes a field)."""
    body: dict[str, Any] = {
        "type": "purchase",
        "command_id": "c1",
        "pos_ref_id": "order-17",
        "amount_cents": 1250,
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not ...}
