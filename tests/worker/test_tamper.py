"""Rejected frames: one log line per kind a minute, one alarm per burst (sans I/O)."""

from __future__ import annotations

from multipair.worker.tamper import RejectionMonitor


def test_first_of_a_kind_is_logged_then_quiet_for_a_minute_with_the_count() -> None:
    monitor = RejectionMonitor()
    assert (True, 0) == _log(monitor, "invalid_signature", 0.0)
    assert (True, 0) == _log(monitor, "not_json", 0.5)  # another kind has its own line
    for second in range(1, 30):
        assert (False, 0) == _log(monitor, "invalid_signature", float(second))
    assert (True, 29) == _log(monitor, "invalid_signature", 60.0)
    assert (False, 0) == _log(monitor, "invalid_signature", 61.0)
    assert 33 == monitor.total


def test_ten_within_a_minute_raise_one_alarm_not_one_per_frame() -> None:
    monitor = RejectionMonitor()
    alarms = [
        monitor.note("invalid_signature" if n % 3 else "not_json", n * 0.1).alarm
        for n in range(100)
    ]
    raised = [a for a in alarms if a is not None]
    assert [{"invalid_signature": 6, "not_json": 4}] == raised
    assert alarms[9] is not None  # on the 10th
    # A minute after the first alarm, a burst still going raises the next one.
    assert monitor.note("invalid_signature", 60.8).alarm is None  # 59.9 s after it
    assert monitor.note("invalid_signature", 61.0).alarm is not None


def test_a_slow_trickle_never_raises_the_alarm() -> None:
    monitor = RejectionMonitor()
    assert all(monitor.note("bad_hex", n * 7.0).alarm is None for n in range(100))


def _log(monitor: RejectionMonitor, kind: str, now: float) -> tuple[bool, int]:
    verdict = monitor.note(kind, now)
    return verdict.log, verdict.suppressed
