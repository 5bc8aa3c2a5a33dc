"""The end-of-day schedule as RQ cron jobs (``deploy/rq/cron.py`` registers them).

One cron job per configured tenant, at that tenant's local time
(``MULTIPAIR_SETTLE_TENANTS``), and one at ``MULTIPAIR_SETTLE_AT`` for every
other lane, so each lane is settled by exactly one of them
(:class:`~multipair.jobs.config.JobSettings`). Times are local to the ``rq
cron`` process (its ``TZ``): RQ matches cron fields against local time. The
job itself takes the business day from the local date when it starts, so a
time before midnight settles that day.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from multipair.jobs.config import JobSettings, parse_clock

__all__ = ["CronEntry", "cron_entries"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CronEntry:
    """One ``rq.cron.register`` call: name, cron expression, ``settle_fleet`` keyword args."""

    name: str
    cron: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def _cron(at: str) -> str:
    hour, minute = parse_clock(at)
    return f"{minute} {hour} * * *"


def cron_entries(settings: JobSettings) -> list[CronEntry]:
    """The cron jobs that settle every lane once a day under ``settings``."""
    concurrency = settings.settle_concurrency
    entries = [
        CronEntry(
            name=f"multipair-settle-tenant-{tenant}",
            cron=_cron(at),
            kwargs={"lanes": {"tenant": tenant}, "concurrency": concurrency},
        )
        for tenant, at in settings.settle_tenants
    ]
    others: dict[str, Any] = {"concurrency": concurrency}
    if settings.settle_tenants:
        others["lanes"] = {"exclude_tenants": [t for t, _ in settings.settle_tenants]}
    entries.append(
        CronEntry(name="multipair-settle", cron=_cron(settings.settle_at), kwargs=others)
    )
    return entries
