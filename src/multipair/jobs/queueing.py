"""Putting jobs on the RQ queue and reading them back (``multipair settle --all --via-rq``).

RQ's client is synchronous (redis-py's blocking client): callers in an event
loop run these functions in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any, Final

import redis
from rq import Queue
from rq.job import Job, JobStatus

from multipair.config import Settings
from multipair.exceptions import ConfigurationError
from multipair.jobs.config import JobSettings
from multipair.redis_conn import connect_sync, is_sentinel_url

__all__ = ["JobState", "RQRedis", "enqueue_settle_fleet", "job_state", "rq_connection"]

RESULT_TTL: Final = int(_dt.timedelta(days=7).total_seconds())
"""How long RQ keeps a fleet settlement's result (the report itself lives much longer)."""


def rq_connection(settings: Settings, job_settings: JobSettings) -> redis.Redis:
    """A blocking client on RQ's Redis: ``MULTIPAIR_RQ_REDIS_URL``, else the lanes' Redis."""
    url = job_settings.rq_redis_url or settings.redis_url
    if url is None:
        raise ConfigurationError(
            "no Redis for RQ: set MULTIPAIR_RQ_REDIS_URL or MULTIPAIR_REDIS_URL (or --redis-url)"
        )
    return connect_sync(url)  # a single server, or the primary of a Sentinel URL


class RQRedis(redis.Redis):
    """The ``rq`` command's connection class for a Sentinel-watched Redis.

    ``rq worker`` and ``rq cron`` build their client with
    ``connection_class.from_url(RQ_REDIS_URL)``; redis-py's own ``from_url``
    knows no ``redis+sentinel://``. With ``RQ_CONNECTION_CLASS`` (or
    ``--connection-class``) set to ``multipair.jobs.queueing.RQRedis``, such a
    URL gives a client on the primary the Sentinels name, following it when
    they move it (:func:`multipair.redis_conn.connect_sync`); any other URL
    is read as before.
    """

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> redis.Redis:
        if is_sentinel_url(url):
            return connect_sync(url, **kwargs)
        client: redis.Redis = redis.Redis.from_url(url, **kwargs)
        return client


def enqueue_settle_fleet(connection: redis.Redis, job_settings: JobSettings, **kwargs: Any) -> str:
    """Enqueue :func:`multipair.jobs.settle_fleet` with ``kwargs``; the RQ job id."""
    from multipair.jobs import settle_fleet

    queue = Queue(job_settings.queue, connection=connection)
    job = queue.enqueue(
        settle_fleet,
        kwargs=kwargs,
        job_timeout=job_settings.job_timeout_s,
        result_ttl=RESULT_TTL,
        failure_ttl=RESULT_TTL,
        description=f"multipair settle_fleet {kwargs.get('business_day')}",
    )
    return job.id


@dataclass(frozen=True, slots=True)
class JobState:
    """Where a job stands: ``status`` (RQ's), its result once finished, its error once failed."""

    status: str
    result: Any = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.status == JobStatus.FINISHED

    @property
    def ended(self) -> bool:
        """Finished, failed, stopped or cancelled: it will not change any more by itself."""
        return self.status in (
            JobStatus.FINISHED,
            JobStatus.FAILED,
            JobStatus.STOPPED,
            JobStatus.CANCELED,
        )


def job_state(connection: redis.Redis, job_id: str) -> JobState:
    """The job's status, and its result or its error's last line when it has ended."""
    job = Job.fetch(job_id, connection=connection)
    status = job.get_status(refresh=True)
    if status == JobStatus.FINISHED:
        return JobState(status.value, result=job.return_value())
    if status == JobStatus.FAILED:
        latest = job.latest_result()
        text = (latest.exc_string if latest is not None else None) or "the job failed"
        lines = [line for line in text.strip().splitlines() if line.strip()]
        return JobState(status.value, error=lines[-1] if lines else text)
    return JobState(status.value)
