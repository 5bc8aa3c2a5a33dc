"""The jobs' settings and deploy/rq/cron.py under RQ's own cron scheduler (no waiting)."""

from __future__ import annotations

import datetime as _dt
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis

from multipair.exceptions import ConfigurationError
from multipair.jobs import settle_fleet
from multipair.jobs.config import JobSettings
from multipair.jobs.schedule import cron_entries
from tests.poll import poll_until_sync

pytest.importorskip("rq", reason="the 'rq' extra is not installed")

from rq.cron import CronScheduler

REPO = Path(__file__).resolve().parents[2]
CRON_FILE = REPO / "deploy" / "rq" / "cron.py"


def next_local(hour: int, minute: int, after: _dt.datetime) -> _dt.datetime:
    """The next local ``hour:minute`` after ``after`` (aware), in UTC."""
    local = after.astimezone()
    candidate = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate <= local:
        candidate = (candidate + _dt.timedelta(days=1)).replace(hour=hour, minute=minute)
    return candidate.astimezone(_dt.UTC)


def test_defaults_settle_every_lane_at_23_30() -> None:
    settings = JobSettings.from_env({})
    [entry] = cron_entries(settings)
    assert ("multipair-settle", "30 23 * * *") == (entry.name, entry.cron)
    assert {"concurrency": 20} == entry.kwargs
    assert ("multipair", 3600) == (settings.queue, settings.job_timeout_s)


def test_each_tenant_gets_its_time_and_the_rest_the_default() -> None:
    settings = JobSettings.from_env(
        {
            "MULTIPAIR_SETTLE_AT": "22:15",
            "MULTIPAIR_SETTLE_TENANTS": "wbc=21:00, gko=23:45",
            "MULTIPAIR_SETTLE_CONCURRENCY": "50",
        }
    )
    entries = [(e.name, e.cron, e.kwargs) for e in cron_entries(settings)]
    assert [
        (
            "multipair-settle-tenant-wbc",
            "0 21 * * *",
            {"lanes": {"tenant": "wbc"}, "concurrency": 50},
        ),
        (
            "multipair-settle-tenant-gko",
            "45 23 * * *",
            {"lanes": {"tenant": "gko"}, "concurrency": 50},
        ),
        (
            "multipair-settle",
            "15 22 * * *",
            {"lanes": {"exclude_tenants": ["wbc", "gko"]}, "concurrency": 50},
        ),
    ] == entries


@pytest.mark.parametrize(
    "env",
    [
        {"MULTIPAIR_SETTLE_AT": "24:00"},
        {"MULTIPAIR_SETTLE_AT": "11pm"},
        {"MULTIPAIR_SETTLE_TENANTS": "wbc"},
        {"MULTIPAIR_SETTLE_TENANTS": "wbc=22:00,wbc=23:00"},
        {"MULTIPAIR_SETTLE_TENANTS": "w b=22:00"},
        {"MULTIPAIR_SETTLE_CONCURRENCY": "0"},
        {"MULTIPAIR_SETTLE_CONCURRENCY": "many"},
        {"MULTIPAIR_RQ_QUEUE": "no spaces"},
        {"MULTIPAIR_RQ_REDIS_URL": "http://x"},
    ],
)
def test_bad_settings_name_their_variable(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(env))):
        JobSettings.from_env(env)


def test_the_cron_file_loads_in_rqs_scheduler_and_runs_at_the_configured_times(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MULTIPAIR_SETTLE_AT", "23:30")
    monkeypatch.setenv("MULTIPAIR_SETTLE_TENANTS", "wbc=21:05")
    monkeypatch.setenv("MULTIPAIR_RQ_QUEUE", "settle-q")
    connection = redis.Redis.from_url(redis_url)
    try:
        before = _dt.datetime.now(_dt.UTC)
        scheduler = CronScheduler(connection=connection)
        scheduler.load_config_from_file(str(CRON_FILE))
        jobs = {job.name: job for job in scheduler.get_jobs()}
    finally:
        connection.close()
    assert {"multipair-settle", "multipair-settle-tenant-wbc"} == set(jobs)
    default, wbc = jobs["multipair-settle"], jobs["multipair-settle-tenant-wbc"]
    assert settle_fleet is default.func
    assert "multipair.jobs.settle_fleet" == default.func_name
    assert ("settle-q", "30 23 * * *", 3600) == (
        default.queue_name,
        default.cron,
        default.job_options["job_timeout"],
    )
    assert {"lanes": {"exclude_tenants": ["wbc"]}, "concurrency": 20} == default.kwargs
    assert {"lanes": {"tenant": "wbc"}, "concurrency": 20} == wbc.kwargs
    # The computed next runs: the next local 23:30 and 21:05 (RQ matches cron to local time).
    assert next_local(23, 30, before) == default.next_enqueue_time
    assert next_local(21, 5, before) == wbc.next_enqueue_time
    assert not default.should_run()


def test_rq_cron_runs_the_file_by_its_relative_path(redis_url: str, tmp_path: Path) -> None:
    """``rq cron deploy/rq/cron.py`` from the repository, as the runbook shows it."""
    rq = Path(sys.executable).parent / "rq"
    if not rq.exists():
        pytest.skip("no rq script next to this interpreter")
    connection = redis.Redis.from_url(redis_url)
    log = tmp_path / "rq-cron.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(rq), "cron", "deploy/rq/cron.py", "--url", redis_url],
            cwd=REPO,
            stdout=out,
            stderr=out,
            env={"PATH": "/usr/bin:/bin", "MULTIPAIR_SETTLE_AT": "06:45"},
        )
    try:

        def saved_jobs() -> list[dict[str, object]] | None:
            assert proc.poll() is None, log.read_text()
            for key in connection.keys("rq:cron_scheduler:*"):
                raw = connection.hget(key, "cron_jobs")
                if raw:
                    return list(orjson.loads(raw)) or None
            return None

        # Polling Redis for what the scheduler saved.
        saved = poll_until_sync(saved_jobs, "rq cron registering its jobs", 30, interval=0.1)
        assert [("multipair-settle", "45 6 * * *", "multipair")] == [
            (job["name"], job["cron"], job["queue_name"]) for job in saved
        ]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        connection.close()
