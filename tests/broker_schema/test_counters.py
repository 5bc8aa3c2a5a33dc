"""The lane's counters in its state hash: names declared once, parsed back (issue 15)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from multipair import broker_schema as bs
from multipair.broker_schema import counters


def test_counter_fields_parse_back_to_what_they_count() -> None:
    assert counters.Counted(
        kind=counters.CounterKind.TRANSACTIONS, tx_type="purchase", result="success"
    ) == counters.parse_counter(counters.tx_count("purchase", "success"))
    (bucket, one), (total, micros) = counters.tx_duration("refund", 0.02)
    assert (1, 20_000) == (one, micros)
    assert counters.Counted(
        kind=counters.CounterKind.TX_BUCKET, tx_type="refund", bucket=2
    ) == counters.parse_counter(bucket)
    assert counters.Counted(
        kind=counters.CounterKind.TX_MICROS, tx_type="refund"
    ) == counters.parse_counter(total)
    assert counters.Counted(
        kind=counters.CounterKind.REJECTIONS, reason="not_json"
    ) == counters.parse_counter(counters.rejection("not_json"))
    assert counters.Counted(kind=counters.CounterKind.FRAMES_REJECTED) == counters.parse_counter(
        "frames_rejected"
    )
    for other in ("status", "frames_rejected:not_json", "m:tx:purchase", "m:txb:x:99", "m:"):
        assert counters.parse_counter(other) is None, other


def test_an_outcome_time_lands_in_the_first_bucket_whose_bound_is_not_below_it() -> None:
    def bucket(seconds: float) -> int | None:
        parsed = counters.parse_counter(counters.tx_duration("purchase", seconds)[0][0])
        assert parsed is not None
        return parsed.bucket

    assert [0, 0, 1, len(counters.TX_BUCKETS_S)] == [
        bucket(0.0),
        bucket(0.005),
        bucket(0.0051),
        bucket(3600.0),
    ]


@given(
    tx_type=st.sampled_from(counters.OUTCOME_TYPES),
    result=st.sampled_from([str(r) for r in bs.TxResult]),
    seconds=st.floats(min_value=0, max_value=1e6, allow_nan=False),
)
def test_every_field_a_lane_writes_parses_to_its_labels(
    tx_type: str, result: str, seconds: float
) -> None:
    counted = counters.parse_counter(counters.tx_count(tx_type, result))
    assert counted is not None
    assert (tx_type, result) == (counted.tx_type, counted.result)
    (bucket, one), (total, micros) = counters.tx_duration(tx_type, seconds)
    parsed = counters.parse_counter(bucket)
    assert parsed is not None
    assert parsed.bucket is not None
    index = parsed.bucket
    assert seconds <= (*counters.TX_BUCKETS_S, float("inf"))[index]
    assert index == 0 or seconds > counters.TX_BUCKETS_S[index - 1]
    assert (1, round(seconds * 1_000_000)) == (one, micros)
    assert counters.CounterKind.TX_MICROS == getattr(counters.parse_counter(total), "kind", None)


@given(st.text(max_size=80))
def test_any_other_field_name_is_not_a_counter_or_parses_without_error(name: str) -> None:
    counted = counters.parse_counter(name)
    assert counted is None or name.startswith("m:") or name == counters.FRAMES_REJECTED
