"""The lane's running totals in its state hash, declared once (issue 15, docs/broker-schema.md).

A lane counts what it did with ``HINCRBY`` on ``mp:lane:{ID}:state``, in
the same fenced write as the thing counted (the outcome, the refusal, the
dropped frame), so a count can never disagree with the streams. Its
supervisor reads the hash on each tick and turns the totals into
Prometheus series (:mod:`multipair.supervisor.metrics`); lanes run no
server of their own.

Fields (values are whole numbers, growing for the life of the lane's keys):

- ``m:tx:<type>:<result>``: transactions whose outcome the lane recorded,
  by command type (``purchase``, ``refund``, ``cashout``, ``moto_purchase``,
  ``reversal``, ``settle``, ``settlement_enquiry``, ``account_verify``, the
  ``preauth_*`` commands, ``zip_purchase``, ``zip_refund``) and result (``success``,
  ``failed``, ``unknown``).
- ``m:txb:<type>:<i>``: of those, the ones whose command was read by the
  same lane process, by time from the command's read to its outcome's
  write: bucket ``i`` is at most :data:`TX_BUCKETS_S` ``[i]`` seconds (and
  more than the bucket before); ``i`` = ``len(TX_BUCKETS_S)`` is longer
  than the last bound. Not cumulative: each outcome adds to one bucket.
- ``m:txus:<type>``: the sum of those times, in microseconds.
- ``m:rej:<reason>``: commands refused (``command_rejected``), by reason
  (:class:`~multipair.broker_schema.reasons.Reason`).
- ``frames_rejected``: terminal frames dropped (older than this module;
  also by kind in ``frames_rejected:<reason>``).

Every name part is a closed vocabulary (a command type, a result, a
reason), so the number of fields, and of series made from them, is bounded.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = [
    "FRAMES_REJECTED",
    "OUTCOME_TYPES",
    "TX_BUCKETS_S",
    "Counted",
    "CounterKind",
    "parse_counter",
    "rejection",
    "tx_count",
    "tx_duration",
]

TX_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds (seconds) of the outcome-time buckets: a simulator answers in milliseconds,
a card at a real terminal in 5-60 s."""

OUTCOME_TYPES: Final = (
    "purchase",
    "refund",
    "cashout",
    "moto_purchase",
    "reversal",
    "settle",
    "settlement_enquiry",
    # preauthorisation and zip
    "account_verify",
    "preauth_open",
    "preauth_topup",
    "preauth_partial_cancel",
    "preauth_extend",
    "preauth_cancel",
    "preauth_complete",
    "zip_purchase",
    "zip_refund",
)
"""The command types whose outcome a lane records and counts (``m:tx:<type>:...``)."""

FRAMES_REJECTED: Final = "frames_rejected"
"""Terminal frames the lane dropped (every kind)."""

_TX: Final = "m:tx:"
_BUCKET: Final = "m:txb:"
_SUM: Final = "m:txus:"
_REJECTED: Final = "m:rej:"


class CounterKind(StrEnum):
    """What a counter field counts."""

    TRANSACTIONS = "transactions"
    TX_BUCKET = "tx_bucket"
    TX_MICROS = "tx_micros"
    REJECTIONS = "rejections"
    FRAMES_REJECTED = "frames_rejected"


@dataclass(frozen=True, slots=True, kw_only=True)
class Counted:
    """A counter field, parsed: its kind and the label values its name carries."""

    kind: CounterKind
    tx_type: str | None = None
    result: str | None = None
    bucket: int | None = None
    """Index into :data:`TX_BUCKETS_S` (``len`` of it: past the last bound)."""
    reason: str | None = None


def tx_count(tx_type: str, result: str) -> str:
    """The field counting outcomes of ``tx_type`` with ``result``."""
    return f"{_TX}{tx_type}:{result}"


def tx_duration(tx_type: str, seconds: float) -> tuple[tuple[str, int], tuple[str, int]]:
    """The (field, increment) pairs recording one outcome time: its bucket, and the sum."""
    seconds = max(seconds, 0.0)
    bucket = bisect.bisect_left(TX_BUCKETS_S, seconds)
    return (f"{_BUCKET}{tx_type}:{bucket}", 1), (f"{_SUM}{tx_type}", round(seconds * 1_000_000))


def rejection(reason: str) -> str:
    """The field counting commands refused for ``reason``."""
    return f"{_REJECTED}{reason}"


def parse_counter(name: str) -> Counted | None:
    """What the state hash field ``name`` counts; None for any other field."""
    if name == FRAMES_REJECTED:
        return Counted(kind=CounterKind.FRAMES_REJECTED)
    if not name.startswith("m:"):
        return None
    if name.startswith(_TX):
        tx_type, sep, result = name[len(_TX) :].partition(":")
        if sep and tx_type and result:
            return Counted(kind=CounterKind.TRANSACTIONS, tx_type=tx_type, result=result)
    elif name.startswith(_BUCKET):
        tx_type, sep, index = name[len(_BUCKET) :].partition(":")
        if sep and tx_type and index.isdigit() and int(index) <= len(TX_BUCKETS_S):
            return Counted(kind=CounterKind.TX_BUCKET, tx_type=tx_type, bucket=int(index))
    elif name.startswith(_SUM):
        tx_type = name[len(_SUM) :]
        if tx_type and ":" not in tx_type:
            return Counted(kind=CounterKind.TX_MICROS, tx_type=tx_type)
    elif name.startswith(_REJECTED):
        reason = name[len(_REJECTED) :]
        if reason and ":" not in reason:
            return Counted(kind=CounterKind.REJECTIONS, reason=reason)
    return None
