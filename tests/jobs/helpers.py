"""Real RQ workers (``rq worker --burst``) and real lanes on the simulator for the jobs' tests.

:func:`running_fleet` starts a simulator with N terminals already paired, a
lane profile for each and one real ``multipair supervise`` running them all
(tests/supervisor/helpers.py); :class:`RqWorker` runs the ``rq`` script of
this virtualenv against the test's Redis with the fleet's environment, as
``rq worker multipair`` runs in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
import redis.asyncio as aioredis

from multipair.jobs.report import ReportStore
from multipair.jobs.settlement import LaneRecord, business_day
from tests.poll import poll_until
from tests.simulator.helpers import Control, paired_simulator
from tests.supervisor.helpers import Fleet, Lane
from tests.worker.helpers import LoggedProcess

pytest.importorskip("rq", reason="the 'rq' extra is not installed")

from rq import Queue, Retry
from rq.job import Job, JobStatus

RQ = Path(sys.executable).parent / "rq"
WORKER_WAIT = 120.0


def today() -> str:
    """The business day the jobs take by default: today, local time."""
    return business_day(None, _dt.datetime.now(_dt.UTC))


@dataclass
class RqWorker(LoggedProcess):
    """``rq worker --burst QUEUE`` (one process; each job in a forked work-horse)."""

    env: dict[str, str]
    redis_url: str
    queue: str
    log_path: Path
    proc: asyncio.subprocess.Process | None = None

    async def start(self, **extra_env: str) -> None:
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                str(RQ),
                "worker",
                "--burst",
                "--url",
                self.redis_url,
                self.queue,
                env={**self.env, **extra_env},
                stdout=log,
                stderr=log,
            )

    async def wait(self, timeout: float = WORKER_WAIT) -> int:
        assert self.proc is not None
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"rq worker still running; log:\n{self.logs()[-4000:]}") from None

    async def run(
        self, jobs: Jobs, *job_ids: str, timeout: float = WORKER_WAIT, **extra_env: str
    ) -> list[JobStatus]:
        """Start it and wait until each of ``job_ids`` has ended; their statuses.

        A burst worker then exits by itself, but its exit can hang for up to a
        minute (redis-py's pub/sub thread of RQ's worker blocks 60 s in a read
        while the connection is closed): once the jobs are done and it has not
        exited within a few seconds, it is killed; it has nothing left to do.
        """
        await self.start(**extra_env)
        ended = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}

        async def done() -> list[JobStatus] | None:
            statuses = [jobs.status(job_id) for job_id in job_ids]
            return statuses if all(status in ended for status in statuses) else None

        try:
            statuses: list[JobStatus] = await poll_until(done, f"jobs {job_ids} ended", timeout)
        except AssertionError:
            raise AssertionError(f"jobs not done; worker log:\n{self.logs()[-4000:]}") from None
        assert self.proc is not None
        try:
            await asyncio.wait_for(self.proc.wait(), 3.0)
        except TimeoutError:
            await self.kill()
        return statuses

    def horse_pids(self) -> set[int]:
        """The work-horse(s) forked for the running job: the worker's children."""
        assert self.proc is not None
        children: set[int] = set()
        with contextlib.suppress(FileNotFoundError):
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                with contextlib.suppress(FileNotFoundError):
                    children |= {int(p) for p in (task / "children").read_text().split()}
        return children


@dataclass
class Jobs:
    """The RQ queue of one test (its own name), through RQ's own (blocking) client."""

    redis_url: str
    name: str
    connection: redis.Redis = field(init=False)

    def __post_init__(self) -> None:
        self.connection = redis.Redis.from_url(self.redis_url)

    def enqueue(self, func: Any, *args: Any, rq_retries: int = 0, **kwargs: Any) -> str:
        """Enqueue ``func(*args, **kwargs)``; ``rq_retries``: RQ's own ``Retry(max=...)``."""
        queue = Queue(self.name, connection=self.connection)
        job = queue.enqueue(
            func,
            args=args,
            kwargs=kwargs,
            job_timeout=600,
            retry=Retry(max=rq_retries) if rq_retries else None,
        )
        return job.id

    def job(self, job_id: str) -> Job:
        return Job.fetch(job_id, connection=self.connection)

    def status(self, job_id: str) -> JobStatus:
        return self.job(job_id).get_status(refresh=True)

    def error(self, job_id: str) -> str:
        """The traceback text of the job's last run, when it failed."""
        latest = self.job(job_id).latest_result()
        return (latest.exc_string or "") if latest is not None else ""

    def result(self, job_id: str) -> Any:
        job = self.job(job_id)
        assert JobStatus.FINISHED == job.get_status(refresh=True), self.error(job_id)
        return job.return_value()

    def close(self) -> None:
        self.connection.close()


@dataclass
class JobsRig:
    """A running fleet, its simulator's control API, an RQ queue and workers for it."""

    fleet: Fleet
    control: Control
    jobs: Jobs
    tmp_path: Path
    workers: list[RqWorker] = field(default_factory=list)

    @property
    def lanes(self) -> list[Lane]:
        return self.fleet.lanes

    @property
    def store(self) -> ReportStore:
        return ReportStore(self.fleet.redis, self.fleet.prefix)

    def worker(self) -> RqWorker:
        env = self.fleet.env(MULTIPAIR_LOG_FORMAT="json", MULTIPAIR_HOST_ID="rq-test")
        env.pop("MULTIPAIR_MASTER_KEY")  # the jobs never open pairing keys
        worker = RqWorker(
            env,
            self.fleet.redis_url,
            self.jobs.name,
            self.tmp_path / f"rq-worker-{len(self.workers)}.log",
        )
        self.workers.append(worker)
        return worker

    async def settles_seen(self, lane: Lane) -> int:
        """How many settlement requests the lane's terminal received (no pos_ref_id: ``""``)."""
        snapshot = await self.control.get(lane.serial)
        return int(snapshot["transaction_requests"].get("", 0))

    async def report(self, day: str) -> dict[str, LaneRecord]:
        return await self.store.lanes(day)

    async def offline(self, lane: Lane) -> None:
        """The terminal refuses connections from now on, and its connection is dropped."""
        await self.control.post(lane.serial, "refuse", {"seconds": 600})
        await self.control.post(lane.serial, "drop", {"at": "now"})
        await lane.wait_state(status="paired_connecting")


@contextlib.asynccontextmanager
async def running_fleet(
    redis_client: aioredis.Redis, redis_url: str, prefix: str, tmp_path: Path, lanes: int
) -> AsyncIterator[JobsRig]:
    """``lanes`` paired, connected lanes under one real supervisor, and an RQ queue."""
    async with paired_simulator(tmp_path / "sim", lanes) as sim:
        fleet = Fleet(redis_client, redis_url, prefix, tmp_path, sim)
        jobs = Jobs(redis_url, f"q-{prefix}")
        rig: JobsRig | None = None
        try:
            for index in range(lanes):
                await fleet.add_lane(index)
            await fleet.supervisor(capacity=lanes).start()
            for lane in fleet.lanes:
                await lane.wait_state(timeout=60, status="paired_connected")
            async with aiohttp.ClientSession() as http:
                rig = JobsRig(fleet, Control(http, sim.control_url), jobs, tmp_path)
                yield rig
        finally:
            if rig is not None:
                for worker in rig.workers:
                    await worker.kill()
            await fleet.close()
            jobs.close()
