"""reconcile(desired, running, leases, now) -> actions: every rule, without a process."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Set

from hypothesis import given
from hypothesis import strategies as st

from multipair.leases import Lease
from multipair.supervisor.decide import (
    Action,
    Balance,
    HostView,
    Kill,
    LaneRun,
    Release,
    Restart,
    Shed,
    Signalled,
    Start,
    Stop,
    StopReason,
    balance,
    fair_shares,
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
    room_elsewhere: int = 0,
    idle: Set[str] = frozenset(),
    draining_since: float | None = None,
    warm: Set[str] = frozenset(),
    policy: RestartPolicy = POLICY,
    rss: Mapping[str, int] | None = None,
    memory_max: int = 0,
    redis_away_since: float | None = None,
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
        policy=policy,
        fair_share=fair_share,
        accepting=accepting,
        room_elsewhere=room_elsewhere,
        idle=idle,
        draining_since=draining_since,
        warm=warm,
        rss=rss,
        memory_max=memory_max,
        redis_away_since=redis_away_since,
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
    running = {A: live(A), B: exited(B, [NOW - 100, NOW - 0.1])}  # B waits 0.5 s
    assert [Start(C)] == decide({A, B, C, D}, running, capacity=3)


def test_a_fair_share_from_the_balancer_limits_starts_below_capacity() -> None:
    assert [Start(A), Start(B)] == decide({A, B, C, D}, capacity=10, fair_share=2)


def test_a_free_lane_whose_old_process_may_still_run_is_started_only_once_it_is_quiet() -> None:
    assert [Start(B)] == decide({A, B}, warm={A})
    assert [Start(A)] == decide({A}, leases={A: ours(3)}, warm={A})  # our own leftover lease


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


def test_while_redis_is_away_an_unrenewed_lease_is_ridden_out_up_to_the_bound() -> None:
    """Issue 13: nobody can take the lane while Redis is away; the host takes it back."""
    run = live(A, lease_expires_at=NOW - 10)  # lapsed ten seconds ago: Redis has been away
    away = NOW - 12
    assert [] == decide({A}, {A: run}, redis_away_since=away)
    ride_out_end = away + POLICY.redis_ride_out_s
    run = dataclasses.replace(run, heartbeat_at=ride_out_end - 1)  # excused by the host
    assert [] == decide({A}, {A: run}, now=ride_out_end - 0.1, redis_away_since=away)
    assert [Kill(A, StopReason.LEASE_LOST)] == decide(
        {A}, {A: run}, now=ride_out_end, redis_away_since=away
    )
    # A lease another host holds is lost all the same.
    assert [Kill(A, StopReason.LEASE_LOST)] == decide(
        {A}, {A: run}, {A: theirs()}, redis_away_since=away
    )


def test_lease_loss_outranks_a_drain_in_progress() -> None:
    draining = live(A, signalled=Signalled.TERM, stop_deadline=NOW + 30)
    assert [Kill(A, StopReason.LEASE_LOST)] == decide(set(), {A: draining}, {A: theirs()})


def test_an_exited_lane_whose_lease_went_elsewhere_is_forgotten() -> None:
    assert [Release(A)] == decide({A}, {A: exited(A, [NOW - 100])}, {A: theirs()})


def test_an_exited_lane_whose_lease_expired_meanwhile_is_restarted_under_a_new_one() -> None:
    assert [Restart(A)] == decide({A}, {A: exited(A, [NOW - 100])}, {A: None})


# ---------------------------------------------------------------------------
# Exits, backoff, crash loop


def test_a_lane_that_crashed_once_is_restarted_at_once() -> None:
    assert [Restart(A)] == decide({A}, {A: exited(A, [NOW])})


def test_an_exited_lane_is_restarted_only_once_its_backoff_has_passed() -> None:
    third = exited(A, [NOW - 300, NOW - 200, NOW - 0.5])  # third exit in a row: 1 s
    assert [] == decide({A}, {A: third})
    assert [Restart(A)] == decide({A}, {A: third}, now=NOW + 0.5)


def test_jitter_drawn_by_the_host_moves_the_restart_earlier() -> None:
    third = exited(A, [NOW - 300, NOW - 200, NOW - 0.8], jitter=0.9)
    jittery = RestartPolicy(jitter=0.25)  # 1 s x (1 - 0.25 x 0.9) = 0.775 s
    assert [Restart(A)] == reconcile(
        {A}, {A: third}, {A: ours()}, NOW, host_id=HOST, capacity=10, policy=jittery
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
# Memory bound (MULTIPAIR_LANE_MEMORY_MAX)

MIB = 1024 * 1024


def test_a_lane_over_its_memory_bound_drains_and_counts_as_a_crash() -> None:
    assert [Stop(A, StopReason.MEMORY)] == decide(
        {A, B}, {A: live(A), B: live(B)}, rss={A: 257 * MIB, B: 100 * MIB}, memory_max=256 * MIB
    )
    assert (True, "memory") == (StopReason.MEMORY.is_failure, str(StopReason.MEMORY))


def test_a_lane_at_its_memory_bound_or_unmeasured_is_left_alone() -> None:
    assert [] == decide({A, B}, {A: live(A), B: live(B)}, rss={A: 256 * MIB}, memory_max=256 * MIB)


def test_no_memory_bound_means_no_memory_rule() -> None:
    assert [] == decide({A}, {A: live(A)}, rss={A: 10_000 * MIB}, memory_max=0)


def test_a_runaway_lane_is_killed_at_once_even_while_it_drains() -> None:
    runaway = {A: 513 * MIB}
    assert [Kill(A, StopReason.MEMORY)] == decide(
        {A}, {A: live(A)}, rss=runaway, memory_max=256 * MIB
    )
    draining = live(A, signalled=Signalled.TERM, stop_reason=StopReason.SHUTDOWN)
    assert [Kill(A, StopReason.MEMORY)] == decide(
        {A}, {A: draining}, rss=runaway, memory_max=256 * MIB, accepting=False
    )


def test_a_lane_stopped_for_memory_stays_a_memory_failure_at_the_drain_bound() -> None:
    draining = live(
        A, signalled=Signalled.TERM, stop_reason=StopReason.MEMORY, stop_deadline=NOW - 1
    )
    assert [Kill(A, StopReason.MEMORY)] == decide(
        {A}, {A: draining}, rss={A: 300 * MIB}, memory_max=256 * MIB
    )
    assert [Kill(A, StopReason.DRAIN_TIMEOUT)] == decide(
        {A}, {A: dataclasses.replace(draining, stop_reason=StopReason.SHUTDOWN)}
    )


def test_shutdown_and_ops_stops_outrank_the_memory_rule() -> None:
    rss, bound = {A: 300 * MIB}, 256 * MIB
    shutdown = decide({A}, {A: live(A)}, accepting=False, rss=rss, memory_max=bound)
    disabled = decide(set(), {A: live(A)}, rss=rss, memory_max=bound)
    assert ([Stop(A, StopReason.SHUTDOWN)], [Stop(A, StopReason.DISABLED)]) == (shutdown, disabled)


# ---------------------------------------------------------------------------
# Shutdown


def test_shutdown_stops_every_lane_releases_exited_ones_and_starts_nothing() -> None:
    running = {A: live(A), B: exited(B, [NOW - 100]), C: live(C, signalled=Signalled.TERM)}
    assert [Stop(A, StopReason.SHUTDOWN), Release(B)] == decide(
        {A, B, C, D}, running, accepting=False
    )


# ---------------------------------------------------------------------------
# Several hosts: fair shares (issue 7)


def view(
    host: str, *, capacity: int = 100, lanes: int = 0, accepting: bool = True, age_s: float = 1.0
) -> HostView:
    return HostView(host_id=host, capacity=capacity, lanes=lanes, accepting=accepting, age_s=age_s)


def test_fair_shares_split_evenly_rounding_up() -> None:
    assert {"a": 10, "b": 10, "c": 10} == fair_shares(30, {"a": 100, "b": 100, "c": 100})
    assert {"a": 11, "b": 11, "c": 11} == fair_shares(31, {"a": 100, "b": 100, "c": 100})
    assert {"a": 0, "b": 0} == fair_shares(0, {"a": 5, "b": 5})
    assert {} == fair_shares(7, {})


def test_a_small_host_is_filled_and_the_rest_is_split_over_the_others() -> None:
    assert {"small": 2, "b": 14, "c": 14} == fair_shares(30, {"small": 2, "b": 100, "c": 100})


def test_when_lanes_exceed_every_capacity_each_host_gets_its_capacity() -> None:
    assert {"a": 4, "b": 6} == fair_shares(50, {"a": 4, "b": 6})


def test_balance_counts_only_live_accepting_hosts_and_their_room() -> None:
    hosts = [
        view("host-b", lanes=4),
        view("host-c", lanes=12),
        view("dead", age_s=9.0),
        view("draining", accepting=False),
        view(HOST, lanes=99, accepting=False),  # our own entry is not what counts
    ]
    share = balance(30, host_id=HOST, capacity=100, accepting=True, hosts=hosts, live_within_s=5.0)
    assert Balance(fair_share=10, room_elsewhere=6) == share  # b can take 6 more, c none
    draining = balance(
        30, host_id=HOST, capacity=100, accepting=False, hosts=hosts, live_within_s=5.0
    )
    assert Balance(fair_share=0, room_elsewhere=11 + 3) == draining  # shares of 15 each


def test_a_host_alone_may_take_every_lane_up_to_its_capacity() -> None:
    share = balance(30, host_id=HOST, capacity=20, accepting=True, hosts=[], live_within_s=5.0)
    assert Balance(fair_share=20, room_elsewhere=0) == share


# ---------------------------------------------------------------------------
# Shedding: balancing and drain


def test_above_its_share_a_host_sheds_an_idle_lane_while_others_have_room() -> None:
    running = {iid: live(iid) for iid in (A, B, C)}
    assert [Shed(B, StopReason.REBALANCE)] == decide(
        {A, B, C, D}, running, {D: theirs()}, fair_share=2, room_elsewhere=1, idle={B, C}
    )


def test_a_lane_in_a_transaction_is_never_shed_for_balance() -> None:
    running = {iid: live(iid) for iid in (A, B, C)}
    assert [] == decide({A, B, C}, running, fair_share=1, room_elsewhere=5, idle=set())


def test_no_shedding_without_room_elsewhere_or_at_the_fair_share() -> None:
    running = {iid: live(iid) for iid in (A, B, C)}
    everyone_idle = {A, B, C}
    assert [] == decide({A, B, C}, running, fair_share=1, room_elsewhere=0, idle=everyone_idle)
    assert [] == decide({A, B, C}, running, fair_share=3, room_elsewhere=9, idle=everyone_idle)


def test_one_hand_off_at_a_time_and_its_room_is_counted_as_taken() -> None:
    leaving = live(A, signalled=Signalled.TERM, stop_deadline=NOW + 30, hand_off=True)
    running = {A: leaving, B: live(B), C: live(C)}
    assert [] == decide({A, B, C}, running, fair_share=1, room_elsewhere=5, idle={B, C})
    wider = RestartPolicy(jitter=0.0, max_handoffs=3)
    assert [Shed(B, StopReason.REBALANCE)] == decide(
        {A, B, C}, running, fair_share=1, room_elsewhere=2, idle={B, C}, policy=wider
    )


def test_far_above_its_share_a_host_sheds_a_tenth_of_the_excess_at_a_time() -> None:
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(100, 130)]
    running = {iid: live(iid) for iid in ids}  # 30 lanes, a fair share of 10: 20 too many
    shed = decide(set(ids), running, fair_share=10, room_elsewhere=20, idle=set(ids))
    assert [Shed(iid, StopReason.REBALANCE) for iid in ids[:2]] == shed
    # Two on their way out already: no more until they are gone.
    leaving = {
        iid: dataclasses.replace(run, hand_off=True) if iid in ids[:2] else run
        for iid, run in running.items()
    }
    assert [] == decide(set(ids), leaving, fair_share=10, room_elsewhere=20, idle=set(ids))
    # A drain still goes one by one.
    assert [Shed(ids[0], StopReason.HOST_DRAIN)] == decide(
        set(ids), running, fair_share=0, idle=set(ids), draining_since=NOW - 1
    )


def test_a_lane_not_up_yet_is_not_shed() -> None:
    starting = live(A, started_at=NOW - 1, heartbeat_at=None)
    assert [] == decide({A, B}, {A: starting, B: live(B)}, fair_share=1, room_elsewhere=1, idle={A})


def test_a_shed_lane_that_exited_is_released_not_restarted() -> None:
    handed = exited(A, [], hand_off=True)
    assert [Release(A)] == decide({A}, {A: handed}, fair_share=5)


def test_a_draining_host_sheds_idle_lanes_one_by_one_and_starts_nothing() -> None:
    running = {A: live(A), B: live(B)}
    assert [Shed(B, StopReason.HOST_DRAIN)] == decide(
        {A, B, C}, running, idle={B}, fair_share=0, draining_since=NOW - 1
    )
    leaving = {A: live(A), B: live(B, signalled=Signalled.TERM, hand_off=True)}
    assert [] == decide({A, B, C}, leaving, idle={A}, fair_share=0, draining_since=NOW - 1)


def test_a_draining_host_releases_a_crashed_lane_instead_of_restarting_it() -> None:
    assert [Release(A)] == decide({A}, {A: exited(A, [NOW - 100])}, draining_since=NOW - 1)


def test_a_draining_host_whose_lanes_are_never_idle_sheds_a_busy_one_after_a_while() -> None:
    running = {A: live(A), B: live(B)}
    soon = NOW - POLICY.drain_busy_after_s + 1
    assert [] == decide({A, B}, running, fair_share=0, draining_since=soon)
    long_ago = NOW - POLICY.drain_busy_after_s
    assert [Shed(A, StopReason.HOST_DRAIN)] == decide(
        {A, B}, running, fair_share=0, draining_since=long_ago
    )


def test_shutdown_outranks_a_drain() -> None:
    assert [Stop(A, StopReason.SHUTDOWN)] == decide(
        {A}, {A: live(A)}, idle={A}, accepting=False, draining_since=NOW - 1
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
                hand_off=draw(st.booleans()),
            )
            running[iid] = run if alive else dataclasses.replace(run, pid=None, signalled=None)
    return desired, running, leases


@given(
    situations(),
    st.integers(0, 12),
    st.booleans(),
    st.none() | st.integers(0, 12),
    st.integers(0, 12),
    st.sets(st.sampled_from(IDS)),
    st.none() | st.sampled_from([NOW - 1, NOW - 100]),
    st.sets(st.sampled_from(IDS)),
)
def test_reconcile_never_overcommits_steals_or_doubles_an_action(
    situation: tuple[set[str], dict[str, LaneRun], dict[str, Lease | None]],
    capacity: int,
    accepting: bool,
    fair_share: int | None,
    room_elsewhere: int,
    idle: set[str],
    draining_since: float | None,
    warm: set[str],
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
        fair_share=fair_share,
        room_elsewhere=room_elsewhere,
        idle=idle,
        draining_since=draining_since,
        warm=warm,
    )
    targets = [a.instance_id for a in actions]
    assert len(set(targets)) == len(targets)  # one action per lane per tick
    starts = [a for a in actions if isinstance(a, Start)]
    for start in starts:
        lease = leases[start.instance_id]
        assert lease is None or lease.host_id == HOST  # never a lane another host holds
        assert lease is not None or start.instance_id not in warm
        assert start.instance_id in desired
        assert start.instance_id not in running
    if starts:
        assert len(running) + len(starts) <= capacity
        if fair_share is not None:
            assert len(running) + len(starts) <= fair_share
    if not accepting or draining_since is not None:
        assert not starts
        assert not [a for a in actions if isinstance(a, Restart)]
    sheds = [a for a in actions if isinstance(a, Shed)]
    assert len(sheds) <= POLICY.max_handoffs
    for shed in sheds:
        run = running[shed.instance_id]
        assert (True, None, False) == (run.alive, run.signalled, run.hand_off)
        if draining_since is None or draining_since > NOW - POLICY.drain_busy_after_s:
            assert shed.instance_id in idle  # only between transactions
        if draining_since is None:
            assert fair_share is not None
            assert len(running) > fair_share
    for action in actions:
        if isinstance(action, Stop | Kill | Shed):
            assert running[action.instance_id].alive
        if isinstance(action, Restart | Release):
            assert not running[action.instance_id].alive
