"""Backoff and crash-loop rules: pure functions, no processes, no clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multipair.supervisor.policy import (
    ExitHistory,
    RestartPolicy,
    after_running,
    lease_deadline,
    record_exit,
    restart_at,
    restart_delay,
    tick_period,
)

POLICY = RestartPolicy()
NO_JITTER = RestartPolicy(jitter=0.0)


def crashes(policy: RestartPolicy, times: list[float], uptime: float = 1.0) -> ExitHistory:
    history = ExitHistory()
    for at in times:
        history = record_exit(policy, history, at=at, uptime=uptime, exit_code=1)
    return history


def test_a_lane_that_never_exited_starts_at_once() -> None:
    assert (0.0, -math.inf) == (
        restart_delay(POLICY, ExitHistory(), 0.5),
        restart_at(POLICY, ExitHistory(), 0.5),
    )


def test_a_first_exit_restarts_at_once_then_backoff_doubles_from_half_a_second_to_thirty() -> None:
    # Exits spaced wider than the crash-loop window, each after a short run.
    delays = [
        restart_delay(NO_JITTER, crashes(NO_JITTER, [100.0 * i for i in range(n)]), 0.0)
        for n in range(1, 10)
    ]
    assert [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0] == delays


def test_jitter_shortens_a_delay_by_at_most_a_quarter() -> None:
    history = crashes(POLICY, [0.0, 100.0, 200.0, 300.0])  # fourth in a row: 2 s
    assert (2.0, 1.5, 1.75) == (
        restart_delay(POLICY, history, 0.0),
        restart_delay(POLICY, history, 1.0),
        restart_delay(POLICY, history, 0.5),
    )


def test_restart_at_counts_from_the_last_exit() -> None:
    history = crashes(NO_JITTER, [10.0, 110.0])  # second in a row: 0.5 s
    assert 110.5 == restart_at(NO_JITTER, history, 0.0)


def test_five_exits_within_a_minute_are_a_crash_loop_retried_every_minute() -> None:
    four = crashes(POLICY, [0.0, 1.0, 3.0, 7.0])
    five = record_exit(POLICY, four, at=15.0, uptime=0.2, exit_code=1)
    assert (False, True) == (four.crash_loop, five.crash_loop)
    assert 60.0 == restart_delay(POLICY, five, 0.7)  # slow retries carry no jitter
    assert 75.0 == restart_at(POLICY, five, 0.7)


def test_five_exits_spread_over_more_than_the_window_are_not_a_crash_loop() -> None:
    assert not crashes(POLICY, [0.0, 20.0, 40.0, 60.0, 80.0]).crash_loop


def test_crash_loop_stays_on_through_slow_retries_until_a_stable_run() -> None:
    looping = crashes(POLICY, [0.0, 1.0, 3.0, 7.0, 15.0])
    retried = record_exit(POLICY, looping, at=80.0, uptime=5.0, exit_code=1)
    assert (True, 6) == (retried.crash_loop, retried.streak)
    stable = record_exit(POLICY, retried, at=300.0, uptime=POLICY.stable_after_s, exit_code=1)
    assert (False, 1, 0.0) == (
        stable.crash_loop,
        stable.streak,
        restart_delay(NO_JITTER, stable, 0),
    )


def test_a_configuration_error_exit_is_a_crash_loop_at_once() -> None:
    history = record_exit(POLICY, ExitHistory(), at=0.0, uptime=0.1, exit_code=2)
    assert (True, 60.0) == (history.crash_loop, restart_delay(POLICY, history, 0.0))


def test_killed_by_a_signal_counts_like_any_exit() -> None:
    history = record_exit(POLICY, ExitHistory(), at=0.0, uptime=0.1, exit_code=None)
    assert (1, False) == (history.streak, history.crash_loop)


def test_a_run_that_lasts_forgives_earlier_exits() -> None:
    looping = crashes(POLICY, [0.0, 1.0, 3.0, 7.0, 15.0])
    assert looping is after_running(POLICY, looping, POLICY.stable_after_s - 1)
    assert ExitHistory() == after_running(POLICY, looping, POLICY.stable_after_s)


@pytest.mark.parametrize(
    "bad",
    [
        {"jitter": 1.0},
        {"jitter": -0.1},
        {"crash_loop_exits": 0},
        {"backoff_base_s": 0.0},
        {"backoff_base_s": 40.0},
        {"renew_every_s": 5.0},
    ],
)
def test_a_policy_that_cannot_work_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        RestartPolicy(**bad)  # type: ignore[arg-type]


def test_the_stop_bound_is_the_drain_bound_plus_a_margin() -> None:
    assert 35.0 == RestartPolicy(drain_timeout_s=30.0, stop_margin_s=5.0).stop_timeout_s


@given(
    uptimes=st.lists(st.floats(0, 120), min_size=1, max_size=40),
    gaps=st.lists(st.floats(0, 200), min_size=40, max_size=40),
    jitter=st.floats(0, 0.999),
)
def test_every_delay_is_between_zero_and_the_cap_or_the_slow_retry(
    uptimes: list[float], gaps: list[float], jitter: float
) -> None:
    history = ExitHistory()
    at = 0.0
    for uptime, gap in zip(uptimes, gaps, strict=False):
        at += gap
        history = record_exit(POLICY, history, at=at, uptime=uptime, exit_code=1)
        delay = restart_delay(POLICY, history, jitter)
        if history.crash_loop:
            assert POLICY.crash_loop_retry_s == delay
        elif history.streak == 1:
            assert 0.0 == delay
        else:
            assert 0 < delay <= POLICY.backoff_cap_s
        assert len(history.recent) <= POLICY.crash_loop_exits


def test_the_tick_stretches_with_the_fleet_from_half_a_second_to_two() -> None:
    assert [0.5, 0.5, 1.0, 2.0, 2.0] == [tick_period(0.5, n) for n in (0, 100, 500, 1_000, 5_000)]
    assert 3.0 == tick_period(3.0, 1_000)  # a longer configured tick is kept


def test_the_lease_deadline_is_the_margin_before_expiry_or_the_ride_out_while_redis_is_away() -> (
    None
):
    policy = RestartPolicy(lease_margin_s=1.5, redis_ride_out_s=60.0)
    assert 8.5 == lease_deadline(policy, 10.0, None)
    assert 65.0 == lease_deadline(policy, 10.0, 5.0)  # away since t=5: ridden out to t=65
    assert 98.5 == lease_deadline(policy, 100.0, 5.0)  # renewed later than that: the lease
