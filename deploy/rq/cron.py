"""RQ's cron scheduler config: the end-of-day fleet settlement, per tenant.

Run one scheduler for the whole fleet (it only enqueues; `rq worker` hosts run
the jobs)::

    RQ_REDIS_URL=redis://... rq cron /etc/multipair/rq/cron.py

Everything comes from the environment (multipair.jobs.config): the lanes'
`MULTIPAIR_REDIS_URL` and `MULTIPAIR_PREFIX` for the jobs themselves, and

- `MULTIPAIR_SETTLE_AT` (default `23:30`): local time of the settlement;
- `MULTIPAIR_SETTLE_TENANTS` (e.g. `wbc=22:00,gko=23:45`): tenants that
  settle at a time of their own; every other lane settles at
  `MULTIPAIR_SETTLE_AT`;
- `MULTIPAIR_RQ_QUEUE` (default `multipair`), `MULTIPAIR_SETTLE_CONCURRENCY`
  (default 20), `MULTIPAIR_SETTLE_JOB_TIMEOUT` (default 3600 s).

Cron times are the local time of this process: set `TZ` (e.g.
`TZ=Australia/Sydney`) where the scheduler runs. A job killed or failed part
way is safe to run again (`multipair settle --all` settles only the lanes not
yet settled for the day). docs/runbook.md, "End-of-day settlement".
"""

from __future__ import annotations

from rq import cron

from multipair.jobs import settle_fleet
from multipair.jobs.config import JobSettings
from multipair.jobs.queueing import RESULT_TTL
from multipair.jobs.schedule import cron_entries

settings = JobSettings.from_env()

for entry in cron_entries(settings):
    cron.register(
        settle_fleet,
        settings.queue,
        kwargs=entry.kwargs,
        cron=entry.cron,
        job_timeout=settings.job_timeout_s,
        result_ttl=RESULT_TTL,
        failure_ttl=RESULT_TTL,
        name=entry.name,
    )
