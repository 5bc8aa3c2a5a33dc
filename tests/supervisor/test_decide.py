"""reconcile(desired, running, leases, now) -> actions: every rule, without a process."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Set

from hypothesis import given
from hypothesis import strategies as st

from multipair.leases import Lease
from multipair.supervisor.decide import (
    Action,
    Kill,
    LaneRun,
    Release,
    Restart,
    Signalled,
    Start,
    Stop,
    StopReason,
    reconcile,
)
from multipair.supervisor.policy import ExitHistory, RestartPolicy, record_exit

HOST = "host-a"
POLICY = RestartPolicy(jitter=0.0)
A, B, C, D = (f"00000000-0000-4000-8000-00000000000{i}" for i in range(1, 5))
NOW = 1000.0


def ours(token: int = 1) -> Lease:
    return Lease(token, HOST)


def theirs(token: int = 9) -> Lease:
    return Lease(token, "host-b")


def live(iid: str, **changes: object) -> LaneRun:
    """A healthy lane of ours: started 30 s ago, heartbeat 1 s ago, lease fresh."""
    base = LaneRun(
        instance_id=iid,
        pid=4000 + int(iid[-1]),
        started_at=NOW - 30,
        heartbeat_at=NOW - 1,
        lease=ours(),
        lease_expires_at=NOW + 5,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def exited(iid: str, exits: list[float], **changes: object) -> LaneRun:
    """A lane of ours whose process exited (after short runs) at the times given."""
    history = ExitHistory()
    for at in exits:
        history = record_exit(POLICY, history, at=at, uptime=1.0, exit_code=1)
    run = dataclasses.replace(live(iid), pid=None, history=history)
    return dataclasses.replace(run, **changes)  # type: ignore[arg-type]


def decide(
    desired: Set[str],
    running: Mapping[str, LaneRun] | None = None,
    leases: Mapping[str, Lease | None] | None = None,
    *,
    now: float = NOW,
    capacity: int = 10,
    fair_share: int | None = None,
    accepting: bool = True,
) -> list[Action]:
    running = running or {}
    known = {iid: run.lease for iid, run in running.items()}
    return reconcile(
        desired,
        running,
        {**known, **(leases or {})},
        now,
        host_id=HOST,
        capacity=capacity,
        policy=POLICY,
        fair_share=fair_share,
        accepting=accepting,
    )


# ---------------------------------------------------------------------------
# Starting


def test_desired_lanes_nobody_holds_are_started_in_id_order() -> None:
    assert [Start(A), Start(B), Start(C)] == decide({C, A, B})


def test_a_healthy_running_lane_needs_nothing() -> None:
    assert [] == decide({A}, {A: live(A)})


def test_lanes_held_by_another_host_are_left_alone() -> None:
    assert [Start(B)] == decide({A, B}, leases={A: theirs()})


def test_a_lease_left_by_an_earlier_run_of_this_host_is_taken_over() -> None:
    assert [Start(A)] == decide({A}, leases={A: ours(3)})


def test_no_more_lanes_than_capacity_counting_lanes_waiting_to_restart() -> None:
    running = {A: live(A), B: exited(B, [NOW - 0.1])}
    assert [Start(C)] == decide({A, B, C, D}, running, capacity=3)


def test_a_fair_share_from_the_balancer_limits_starts_below_capacity() -> None:
    assert [Start(A), Start(B)] == decide({A, B, C, D}, capacity=10, fair_share=2)


def test_capacity_zero_starts_nothing() -> None:
    assert [] == decide({A}, capacity=0)


# ---------------------------------------------------------------------------
# Stopping


def test_a_lane_no_longer_desired_is_stopped_gracefully() -> None:
    assert [Stop(A, StopReason.DISABLED)] == decide(set(), {A: live(A)})


def test_a_stopping_lane_is_left_to_drain_until_its_deadline_then_killed() -> None:
    draining = live(A, signalled=Signalled.TERM, stop_deadline=NOW + 1)
    assert [] == decide(set(), {A: draining})
    assert [Kill(A, StopReason.DRAIN_TIMEOUT)] == decide(set(), {A: draining}, now=NOW + 1)


def test_a_killed_lane_is_awaited_not_killed_again() -> None:
    assert [] == decide({A}, {A: live(A, signalled=Signalled.KILL, heartbeat_at=0.0)})


def test_an_exited_lane_that_is_no_longer_desired_is_released() -> None:
    assert [Release(A)] == decide(set(), {A: exited(A, [])})


def test_ops_restart_stops_the_lane_then_starts_it_at_once_whatever_the_backoff() -> None:
    assert [Stop(A, StopReason.RESTART)] == decide({A}, {A: live(A, restart_requested=True)})
    looping = exited(A, [NOW - 5, NOW - 4, NOW - 3, NOW - 2, NOW - 1], restart_requested=True)
    assert looping.history.crash_loop
    assert [Restart(A)] == decide({A}, {A: looping})


# ---------------------------------------------------------------------------
# Leases


def test_a_lane_whose_lease_another_host_took_is_killed_at_once() -> None:
    assert [Kill(A, StopReason.LEASE_LOST)] == decide({A}, {A: live(A)}, {A: theirs()})


def test_a_lane_whose_lease_expired_is_killed_at_once() -> None:
    assert [Kill(A, StopReason.LEASE_LOST)] == decide({A}, {A: live(A)}, {A: None})


def test_a_lane_whose_lease_was_retaken_with_a_newer_token_is_killed() -> None:
    assert [Kill(A, StopReason.LEASE_LOST)] == decide({A}, {A: live(A)}, {A: ours(2)})


def test_a_lane_is_killed_before_an_unrenewed_lease_can_expire() -> None:
    run = live(A, lease_expires_at=NOW + POLICY.lease_margin_s + 0.1)
    assert [] == decide({A}, {A: run})
    assert [Kill(A, StopReason.LEASE_LOST)] == decide({A}, {A: run}, now=NOW + 0.1)


def test_lease_loss_outranks_a_drain_in_progress() -> None:
    draining = live(A, signalled=Signalled.TERM, stop_deadline=NOW + 30)
    assert [Kill(A, StopReason.LEASE_LOST)] == decide(set(), {A: draining}, {A: theirs()})


def test_an_exited_lane_whose_lease_went_elsewhere_is_forgotten() -> None:
    assert [Release(A)] == decide({A}, {A: exited(A, [NOW - 100])}, {A: theirs()})


def test_an_exited_lane_whose_lease_expired_meanwhile_is_restarted_under_a_new_one() -> None:
    assert [Restart(A)] == decide({A}, {A: exited(A, [NOW - 100])}, {A: None})


# ---------------------------------------------------------------------------
# Exits, backoff, crash loop


def test_an_exited_lane_is_restarted_only_once_its_backoff_has_passed() -> None:
    second = exited(A, [NOW - 200, NOW - 0.5])  # second exit in a row: 1 s
    assert [] == decide({A}, {A: second})
    assert [Restart(A)] == decide({A}, {A: second}, now=NOW + 0.5)


def test_jitter_drawn_by_the_host_moves_the_restart_earlier() -> None:
    second = exited(A, [NOW - 200, NOW - 0.8], jitter=0.9)
    jittery = RestartPolicy(jitter=0.25)  # 1 s x (1 - 0.25 x 0.9) = 0.775 s
    assert [Restart(A)] == reconcile(
        {A}, {A: second}, {A: ours()}, NOW, host_id=HOST, capacity=10, policy=jittery
    )


def test_a_lane_in_crash_loop_is_retried_once_a_minute() -> None:
    looping = exited(A, [NOW - 14, NOW - 13, NOW - 11, NOW - 7, NOW - 1])
    assert looping.history.crash_loop
    assert [] == decide({A}, {A: looping}, now=NOW + 58)
    assert [Restart(A)] == decide({A}, {A: looping}, now=NOW + 59)


def test_a_lane_whose_heartbeat_is_stale_is_killed_as_hung() -> None:
    stale = live(A, heartbeat_at=NOW - POLICY.heartbeat_timeout_s - 0.1)
    assert [Kill(A, StopReason.HEARTBEAT)] == decide({A}, {A: stale})
    assert StopReason.HEARTBEAT.is_failure


def test_a_new_lane_has_the_start_timeout_to_write_its_first_heartbeat() -> None:
    # A heartbeat from before this process started does not count.
    young = live(A, started_at=NOW - POLICY.start_timeout_s + 1, heartbeat_at=NOW - 100)
    assert [] == decide({A}, {A: young})
    old = live(A, started_at=NOW - POLICY.start_timeout_s - 1, heartbeat_at=None)
    assert [Kill(A, StopReason.HEARTBEAT)] == decide({A}, {A: old})


# ---------------------------------------------------------------------------
# Shutdown


def test_shutdown_stops_every_lane_releases_exited_ones_and_starts_nothing() -> None:
    running = {A: live(A), B: exited(B, [NOW - 100]), C: live(C, signalled=Signalled.TERM)}
    assert [Stop(A, StopReason.SHUTDOWN), Release(B)] == decide(
        {A, B, C, D}, running, accepting=False
    )


# ---------------------------------------------------------------------------
# Properties over arbitrary situations

IDS = [f"00000000-0000-4000-8000-0000000000{i:02d}" for i in range(12)]


@st.composite
def situations(draw: st.DrawFn) -> tuple[set[str], dict[str, LaneRun], dict[str, Lease | None]]:
    desired = set(draw(st.lists(st.sampled_from(IDS), unique=True)))
    running: dict[str, LaneRun] = {}
    leases: dict[str, Lease | None] = {}
    for iid in IDS:
        leases[iid] = draw(st.sampled_from([None, ours(1), ours(2), theirs()]))
        if draw(st.booleans()):
            alive = draw(st.booleans())
            run = live(
                iid,
                lease=draw(st.sampled_from([None, ours(1)])),
                heartbeat_at=draw(st.sampled_from([None, NOW - 1, NOW - 50])),
                signalled=draw(st.sampled_from([None, Signalled.TERM, Signalled.KILL])),
                restart_requested=draw(st.booleans()),
            )
            running[iid] = run if alive else dataclasses.replace(run, pid=None, signalled=None)
    return desired, running, leases


@given(situations(), st.integers(0, 12), st.booleans())
def test_reconcile_never_overcommits_steals_or_doubles_an_action(
    situation: tuple[set[str], dict[str, LaneRun], dict[str, Lease | None]],
    capacity: int,
    accepting: bool,
) -> None:
    desired, running, leases = situation
    actions = reconcile(
        desired,
        running,
        leases,
        NOW,
        host_id=HOST,
        capacity=capacity,
        policy=POLICY,
        accepting=accepting,
    )
    targets = [a.instance_id for a in actions]
    assert len(set(targets)) == len(targets)  # one action per lane per tick
    starts = [a for a in actions if isinstance(a, Start)]
    for start in starts:
        lease = leases[start.instance_id]
        assert lease is None or lease.host_id == HOST  # never a lane another host holds
        assert start.instance_id in desired
        assert start.instance_id not in running
    if starts:
        assert len(running) + len(starts) <= capacity
    if not accepting:
        assert not starts
        assert not [a for a in actions if isinstance(a, Restart)]
    for action in actions:
        if isinstance(action, Stop | Kill):
            assert running[action.instance_id].alive
        if isinstance(action, Restart | Release):
            assert not running[action.instance_id].alive
