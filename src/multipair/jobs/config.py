"""Settings of the RQ jobs, the ``rq worker`` / ``rq cron`` processes and ``settle --via-rq``.

The connection to the lanes (``MULTIPAIR_REDIS_URL``, ``MULTIPAIR_PREFIX``,
...) is :class:`multipair.config.Settings`, as for every other process; these
are the few settings only the jobs have, read from the environment the same
way (``MULTIPAIR_<NAME>``, a bad value raises ``ConfigurationError`` naming the
variable):

- ``MULTIPAIR_RQ_QUEUE``: the RQ queue the jobs go to (``rq worker
  QUEUE``). Default ``multipair``.
- ``MULTIPAIR_RQ_REDIS_URL``: the Redis RQ keeps its queues in. Default: the
  lanes' ``MULTIPAIR_REDIS_URL``. RQ needs a single Redis server: with the
  lanes on a Redis Cluster, give RQ a server of its own here (the ``rq``
  command reads ``RQ_REDIS_URL``; set both to the same URL). A Sentinel URL
  (``redis+sentinel://``, :mod:`multipair.redis_conn`) works for both; the
  ``rq`` command then needs ``RQ_CONNECTION_CLASS=multipair.jobs.queueing.RQRedis``.
- ``MULTIPAIR_SETTLE_AT``: the local time (``HH:MM``, 24 h, the time zone of
  the ``rq cron`` process: ``TZ``) at which the end-of-day settlement runs.
  Default ``23:30``.
- ``MULTIPAIR_SETTLE_TENANTS``: tenants (the profiles' ``tenant_code``) that
  settle at another time, ``wbc=22:00,gko=23:45``. Each gets its own cron
  job; the lanes of every other tenant (and those without one) settle at
  ``MULTIPAIR_SETTLE_AT``. Default: none.
- ``MULTIPAIR_SETTLE_CONCURRENCY``: lanes settled at once. Default ``20``.
- ``MULTIPAIR_SETTLE_JOB_TIMEOUT``: seconds RQ lets one fleet settlement job
  run before it kills it (a killed run is safe to run again). Default ``3600``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from multipair.exceptions import ConfigurationError
from multipair.redis_conn import SENTINEL_SCHEMES, is_sentinel_url, parse_sentinel_url

__all__ = ["JobSettings", "parse_clock"]

_QUEUE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_CLOCK: Final = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")
_TENANT: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
_REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://", *SENTINEL_SCHEMES)


def parse_clock(text: str) -> tuple[int, int]:
    """``"23:30"`` -> ``(23, 30)``; ``ConfigurationError`` for anything but ``H:MM``/``HH:MM``."""
    match = _CLOCK.fullmatch(text.strip())
    if match is None:
        raise ConfigurationError(f"a time of day is HH:MM (24 h), e.g. 23:30; got {text!r}")
    return int(match[1]), int(match[2])


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSettings:
    """The jobs' own settings; build with :meth:`from_env`. See the module docstring."""

    queue: str = "multipair"
    rq_redis_url: str | None = None
    """``None``: the lanes' Redis (``MULTIPAIR_REDIS_URL``)."""
    settle_at: str = "23:30"
    settle_tenants: tuple[tuple[str, str], ...] = ()
    """``(tenant_code, "HH:MM")`` pairs, in the order given."""
    settle_concurrency: int = 20
    job_timeout_s: int = 3600

    def __post_init__(self) -> None:
        if not _QUEUE.fullmatch(self.queue):
            raise ConfigurationError(
                f"MULTIPAIR_RQ_QUEUE must be 1-64 letters, digits or '_.:-', got {self.queue!r}"
            )
        if self.rq_redis_url is not None and not self.rq_redis_url.startswith(_REDIS_SCHEMES):
            raise ConfigurationError(
                "MULTIPAIR_RQ_REDIS_URL must start with redis://, rediss://, unix:// "
                "or redis+sentinel://"
            )
        if self.rq_redis_url is not None and is_sentinel_url(self.rq_redis_url):
            try:
                parse_sentinel_url(self.rq_redis_url)
            except ConfigurationError as exc:
                raise ConfigurationError(f"MULTIPAIR_RQ_REDIS_URL: {exc}") from None
        _named("MULTIPAIR_SETTLE_AT", self.settle_at)
        seen: set[str] = set()
        for tenant, at in self.settle_tenants:
            if not _TENANT.fullmatch(tenant):
                raise ConfigurationError(
                    f"MULTIPAIR_SETTLE_TENANTS: {tenant!r} is not a tenant code "
                    "(letters, digits, '_' or '-', max 32)"
                )
            if tenant in seen:
                raise ConfigurationError(f"MULTIPAIR_SETTLE_TENANTS names {tenant!r} twice")
            seen.add(tenant)
            _named("MULTIPAIR_SETTLE_TENANTS", at)
        if type(self.settle_concurrency) is not int or not 1 <= self.settle_concurrency <= 1000:
            raise ConfigurationError(
                "MULTIPAIR_SETTLE_CONCURRENCY must be a whole number from 1 to 1000, "
                f"got {self.settle_concurrency!r}"
            )
        if type(self.job_timeout_s) is not int or not 60 <= self.job_timeout_s <= 86_400:
            raise ConfigurationError(
                "MULTIPAIR_SETTLE_JOB_TIMEOUT must be 60 to 86400 seconds, "
                f"got {self.job_timeout_s!r}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> JobSettings:
        """Read the ``MULTIPAIR_RQ_*`` and ``MULTIPAIR_SETTLE_*`` variables (unset: defaults)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if queue := env.get("MULTIPAIR_RQ_QUEUE"):
            values["queue"] = queue.strip()
        if url := env.get("MULTIPAIR_RQ_REDIS_URL"):
            values["rq_redis_url"] = url.strip()
        if at := env.get("MULTIPAIR_SETTLE_AT"):
            values["settle_at"] = at.strip()
        if tenants := env.get("MULTIPAIR_SETTLE_TENANTS"):
            values["settle_tenants"] = _tenant_times(tenants)
        for variable, name in (
            ("MULTIPAIR_SETTLE_CONCURRENCY", "settle_concurrency"),
            ("MULTIPAIR_SETTLE_JOB_TIMEOUT", "job_timeout_s"),
        ):
            if text := env.get(variable):
                try:
                    values[name] = int(text.strip(), 10)
                except ValueError:
                    raise ConfigurationError(
                        f"{variable} must be a whole number, got {text!r}"
                    ) from None
        return cls(**values)  # type: ignore[arg-type]


def _named(variable: str, text: str) -> None:
    try:
        parse_clock(text)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{variable}: {exc}") from None


def _tenant_times(text: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for item in text.split(","):
        if not item.strip():
            continue
        tenant, sep, at = item.partition("=")
        if not sep:
            raise ConfigurationError(
                f"MULTIPAIR_SETTLE_TENANTS entries are TENANT=HH:MM, got {item.strip()!r}"
            )
        pairs.append((tenant.strip(), at.strip()))
    return tuple(pairs)
