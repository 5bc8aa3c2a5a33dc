"""Jobs an RQ worker runs: payments, and the end-of-day settlement of the fleet.

Plain functions, importable by path, for ``rq worker multipair`` (the queue
is ``MULTIPAIR_RQ_QUEUE``)::

    from redis import Redis
    from rq import Queue, Retry
    from multipair import jobs

    queue = Queue("multipair", connection=Redis.from_url(RQ_URL))
    queue.enqueue(jobs.purchase, LANE, 1250, "order-17", retry=Retry(max=3, interval=30))
    queue.enqueue(jobs.settle_fleet, job_timeout=3600)

Each job connects to the lanes with :class:`multipair.config.Settings` from
the environment (``MULTIPAIR_REDIS_URL``, ``MULTIPAIR_PREFIX``, ...), returns
a JSON-serialisable result, and is safe to run again (RQ's ``Retry``, or a
worker killed mid-job):

- :func:`purchase` / :func:`refund` send the same ``command_id`` for the
  same ``pos_ref_id`` every time (:mod:`multipair.jobs.money`): a retry is
  answered from the lane's record, never charged twice. An ``unknown``
  outcome is looked up on the terminal and raises
  :class:`~multipair.jobs.errors.OutcomeUnknown` if it stays unknown.
- :func:`settle_lane` / :func:`settle_fleet` record each lane's attempt
  before sending it, under a command id derived from (lane, day, attempt),
  so a re-run settles only the lanes not yet settled for that day and never
  one twice (:mod:`multipair.jobs.settlement`). The report is the hash
  ``mp:settlement:{DAY}`` (:mod:`multipair.jobs.report`).
- :func:`reconcile` compares the day's settlements with the lanes' own
  transaction records again and lists the differences.

Exceptions: :mod:`multipair.jobs.errors`.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from multipair.client import AsyncClient
from multipair.config import Settings
from multipair.jobs.errors import JobError, OutcomeUnknown, SettlementNotDone
from multipair.jobs.fleet import FleetOptions, FleetSettlement, LaneSelection
from multipair.jobs.money import run_money
from multipair.jobs.reconcile import reconcile_day
from multipair.jobs.settlement import LaneState, business_day
from multipair.logs import configure_logging

__all__ = [
    "JobError",
    "OutcomeUnknown",
    "SettlementNotDone",
    "purchase",
    "reconcile",
    "refund",
    "settle_fleet",
    "settle_lane",
]

T = TypeVar("T")


def _run(work: Callable[[AsyncClient], Awaitable[T]]) -> T:
    """Run ``work`` with a client on the lanes' Redis (settings from the environment)."""
    settings = Settings.from_env()
    configure_logging(settings.log_format, level=logging.INFO)

    async def main() -> T:
        client = await AsyncClient.connect(settings)
        async with client:
            return await work(client)

    return asyncio.run(main())


def purchase(
    instance_id: str, amount_cents: int, pos_ref_id: str, **options: Any
) -> dict[str, Any]:
    """A card purchase on one lane; the ``transaction_completed`` body.

    ``options``: ``tip_cents``, ``cashout_cents``, ``surcharge_cents``,
    ``prompt_for_cashout``, ``timeout_s`` (the wait, default 120),
    ``command_id`` (default ``job:purchase:<pos_ref_id>``). A declined
    purchase is a result (``result: failed``), not an error.
    """
    return _run(
        lambda client: run_money(
            client, "purchase", instance_id, amount_cents, pos_ref_id, dict(options)
        )
    )


def refund(instance_id: str, amount_cents: int, pos_ref_id: str, **options: Any) -> dict[str, Any]:
    """A refund to a card on one lane; the ``transaction_completed`` body.

    ``options``: ``suppress_merchant_password``, ``timeout_s``, ``command_id``.
    """
    return _run(
        lambda client: run_money(
            client, "refund", instance_id, amount_cents, pos_ref_id, dict(options)
        )
    )


def _options(concurrency: int, extra: dict[str, Any]) -> FleetOptions:
    return FleetOptions(concurrency=concurrency, **extra)


def settle_lane(
    instance_id: str, business_day: str | None = None, **options: Any
) -> dict[str, Any]:
    """Settle one lane for ``business_day`` (default: today, local time); its report entry.

    Raises :class:`SettlementNotDone` (the entry attached) when the lane is
    not settled at the end: offline, refused, failed, or unknown (then it is
    not settled again by a retry: check the terminal). ``options`` are
    :class:`~multipair.jobs.fleet.FleetOptions` fields.
    """
    return _run(lambda client: _settle_lane(client, instance_id, business_day, options))


async def _settle_lane(
    client: AsyncClient, instance_id: str, day: str | None, options: dict[str, Any]
) -> dict[str, Any]:
    profile = await client.get_lane(instance_id)
    run = FleetSettlement(
        client, business_day(day, _dt.datetime.now(_dt.UTC)), options=_options(1, options)
    )
    record = await run.settle(profile)
    result = record.to_json()
    if record.state is not LaneState.SETTLED:
        reason = record.reason.value if record.reason is not None else record.state.value
        raise SettlementNotDone(reason, record.detail or "", record=result)
    return result


def settle_fleet(
    business_day: str | None = None,
    lanes: LaneSelection = None,
    concurrency: int = 20,
    **options: Any,
) -> dict[str, Any]:
    """Settle every enabled, paired lane (or those ``lanes`` selects) for ``business_day``.

    ``lanes``: a list of instance ids, or a filter ``{"tenant": T,
    "exclude_tenants": [...], "host": H, "tag": X}``. At most
    ``concurrency`` lanes at once. ``options`` are the other
    :class:`~multipair.jobs.fleet.FleetOptions` fields (``busy_wait_s``,
    ``retries``, ``retry_delay_s``, ``settle_timeout_s``, ``lock_ttl_s``,
    ``retry_unknown``).

    Returns the run's result: each lane's entry (the terminal's totals by
    scheme, our own totals, ``mismatch``, or why it failed), the lanes left
    out and why, this run's totals and the whole day's (``fleet``). A lane
    that is not settled does not fail the job; run it again to settle the
    rest.
    """
    return _run(lambda client: _settle_fleet(client, business_day, lanes, concurrency, options))


async def _settle_fleet(
    client: AsyncClient,
    day: str | None,
    lanes: LaneSelection,
    concurrency: int,
    options: dict[str, Any],
) -> dict[str, Any]:
    run = FleetSettlement(
        client,
        business_day(day, _dt.datetime.now(_dt.UTC)),
        options=_options(concurrency, options),
    )
    return await run.run(lanes)


def reconcile(business_day: str) -> dict[str, Any]:
    """Our transaction records against the terminals' settlements of ``business_day``.

    Every settled lane's totals are counted again from its records of the
    settlement period (late outcomes included); the entry's ``ours`` and
    ``mismatch`` are brought up to date. Lanes with records in the day but
    no settlement are listed as ``unsettled``. The result is also kept in
    the report (field ``reconcile``).
    """
    return _run(lambda client: reconcile_day(client, business_day))
