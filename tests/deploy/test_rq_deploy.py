"""The RQ worker and cron scheduler as deployed: supervisord programs, systemd units, env file.

- ``deploy/supervisord.conf``'s two RQ programs load with supervisor's own
  parser and run the ``rq`` of the virtualenv on the queue the jobs use;
- ``deploy/systemd/multipair-rq-{worker,cron}.service`` pass ``systemd-analyze
  verify`` and stop the way a running job needs;
- ``deploy/systemd/multipair-jobs.env.example`` is settings the jobs accept,
  with no master key;
- the worker's command line, run for real against the test Redis (the ``rq``
  of this virtualenv), takes a job from the queue.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis

from multipair.config import Settings
from multipair.jobs.config import JobSettings
from multipair.jobs.schedule import cron_entries
from tests.deploy.helpers import needs_systemd_analyze, systemd_verify
from tests.poll import poll_until_sync

pytest.importorskip("supervisor", reason="the 'supervisor' package (supervisord) is not installed")
pytest.importorskip("rq", reason="the 'rq' extra is not installed")

from rq import Queue
from rq.job import JobStatus

from tests.deploy.supervisord_conf import DEPLOY, shipped_program

UNITS = DEPLOY / "systemd"
ENV_EXAMPLE = UNITS / "multipair-jobs.env.example"
BIN = Path(sys.executable).parent


def env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def test_the_worker_program_runs_rq_worker_on_the_jobs_queue(tmp_path: Path) -> None:
    config, _ = shipped_program("multipair-rq-worker", tmp_path)
    argv = config.command.split()
    assert Path(argv[0]).is_absolute()
    assert ["rq", "worker", "--with-scheduler", JobSettings().queue] == [
        Path(argv[0]).name,
        *argv[1:],
    ]
    env = config.environment
    assert env["RQ_REDIS_URL"].startswith("redis://")
    assert env["MULTIPAIR_REDIS_URL"].startswith("redis://multipair-service:")
    assert not {"MULTIPAIR_MASTER_KEY", "MULTIPAIR_MASTER_KEY_FILE"} & set(env)
    assert config.autostart
    # SIGTERM is RQ's warm shutdown: the running job may finish first.
    assert config.stopwaitsecs >= 60


def test_the_cron_program_is_off_unless_chosen_and_loads_the_cron_file(tmp_path: Path) -> None:
    config, _ = shipped_program("multipair-rq-cron", tmp_path)
    argv = config.command.split()
    assert ("rq", "cron") == (Path(argv[0]).name, argv[1])
    assert argv[2] == "/opt/multipair/deploy/rq/cron.py"
    assert (DEPLOY / "rq" / "cron.py").is_file()
    assert not config.autostart  # one host only: opt in
    env = config.environment
    assert "TZ" in env
    entries = cron_entries(JobSettings.from_env(env))
    assert ["30 23 * * *"] == [e.cron for e in entries]


def test_the_env_example_is_settings_the_jobs_accept_without_a_master_key() -> None:
    values = env_file(ENV_EXAMPLE)
    settings = Settings.from_env(values)
    jobs = JobSettings.from_env(values)
    assert settings.master_key is None
    assert values["RQ_REDIS_URL"] == values["MULTIPAIR_RQ_REDIS_URL"] == jobs.rq_redis_url
    assert settings.redis_url is not None
    assert settings.redis_url.startswith("redis://multipair-service:")


@pytest.mark.parametrize("unit", ["multipair-rq-worker.service", "multipair-rq-cron.service"])
def test_the_units_read_the_jobs_env_file_and_are_hardened(unit: str) -> None:
    text = (UNITS / unit).read_text(encoding="utf-8")
    lines = {line.partition("=")[0]: line.partition("=")[2] for line in text.splitlines()}
    assert "/etc/multipair/jobs.env" == lines["EnvironmentFile"]
    assert ("multipair", "multipair") == (lines["User"], lines["Group"])
    assert lines["ExecStart"].startswith("/opt/multipair/venv/bin/rq ")
    for setting in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "LimitCORE"):
        assert setting in lines, setting
    if unit == "multipair-rq-worker.service":
        assert ("mixed", "SIGTERM") == (lines["KillMode"], lines["KillSignal"])
        assert lines["ExecStart"].endswith(f" {JobSettings().queue}")
    else:
        assert lines["ExecStart"].endswith(" /opt/multipair/deploy/rq/cron.py")


@needs_systemd_analyze
@pytest.mark.parametrize("unit", ["multipair-rq-worker.service", "multipair-rq-cron.service"])
def test_systemd_analyze_verify_finds_nothing_to_say(unit: str, tmp_path: Path) -> None:
    code, about, stderr = systemd_verify(
        UNITS / unit, tmp_path, "/opt/multipair/venv/bin/rq", str(BIN / "rq")
    )
    assert (0, []) == (code, about), stderr


def test_the_worker_command_line_takes_a_job_from_the_queue(redis_url: str, tmp_path: Path) -> None:
    """The shipped command, against the test Redis, with RQ_REDIS_URL as the env file sets it."""
    config, _ = shipped_program("multipair-rq-worker", tmp_path)
    argv = config.command.split()
    argv[0] = str(BIN / "rq")
    connection = redis.Redis.from_url(redis_url)
    try:
        queue = Queue(JobSettings().queue, connection=connection)
        job = queue.enqueue("multipair.jobs.settlement.settle_command_id", "2025-01-31", "x", 1)
        log = tmp_path / "worker.log"
        with log.open("wb") as out:
            worker = subprocess.Popen(
                argv,
                env={"PATH": "/usr/bin:/bin", "RQ_REDIS_URL": redis_url},
                stdout=out,
                stderr=out,
            )

        def finished() -> bool:  # RQ's job status, in Redis
            if job.get_status(refresh=True) == JobStatus.FINISHED:
                return True
            assert worker.poll() is None, f"the worker exited {worker.returncode}"
            return False

        try:
            poll_until_sync(finished, "the job FINISHED", 60)
        except AssertionError as failed:
            raise AssertionError(f"{failed}; worker log:\n{log.read_text()}") from None
        finally:
            worker.kill()  # a long-running worker, as shipped: it would wait for more jobs
            worker.wait()
        assert "settle:2025-01-31:x:1" == job.return_value()
    finally:
        connection.close()
