"""Run real supervisors (``python -m multipair.supervisor``) over real Redis and the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis

from multipair import broker_schema as bs
from multipair.leases import Lease, parse_lease
from multipair.redis_conn import text_map
from multipair.simulator import Simulator
from multipair.spi.crypto import Secrets
from multipair.store.profiles import LaneProfile, ProfileStore
from multipair.store.secrets_box import MasterKey
from multipair.supervisor.control import ControlAction, ControlMessage, owning_host, send_control
from tests.poll import poll_until
from tests.simulator.helpers import KEYS
from tests.worker.helpers import WAIT, Body, EventReader, LoggedProcess, lane_env, send_command

T = TypeVar("T")

FINAL_EVENTS = frozenset(
    {"transaction_completed", "transaction_lookup", "command_rejected", "settlement"}
)


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        # Gone before the open, or reaped between the open and the read (ESRCH).
        return True


async def gone(*pids: int) -> None:
    """Wait until none of ``pids`` runs any more."""

    async def check() -> bool:
        return all(process_gone(pid) for pid in pids)

    await poll_until(check, f"processes {pids} gone")


@dataclass
class Lane:
    """One lane's profile and streams, seen from outside like a POS backend sees them."""

    redis: aioredis.Redis
    keys: bs.Keys
    instance_id: str
    serial: str
    events: EventReader

    async def send(self, body: Body) -> str:
        return await send_command(self.redis, self.keys.commands(self.instance_id), body)

    async def answer(self, command_id: str, timeout: float = WAIT) -> Body:
        return await self.events.wait_for(
            lambda b: b.get("command_id") == command_id and b["type"] in FINAL_EVENTS, timeout
        )

    async def purchase(self, ref: str, cents: int, timeout: float = WAIT) -> Body:
        return await self.answer(
            await self.send({"type": "purchase", "pos_ref_id": ref, "amount_cents": cents}), timeout
        )

    async def state(self) -> dict[str, str]:
        return text_map(await self.redis.hgetall(self.keys.state(self.instance_id)))

    async def wait_state(self, timeout: float = WAIT, **expected: str) -> dict[str, str]:
        last: dict[str, str] = {}

        async def check() -> dict[str, str] | None:
            nonlocal last
            last = await self.state()
            return last if all(last.get(k) == v for k, v in expected.items()) else None

        try:
            return await poll_until(check, f"lane {self.serial} state {expected}", timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last state: {last}") from None

    async def lease(self) -> Lease | None:
        return parse_lease(await self.redis.get(self.keys.lease(self.instance_id)))

    async def next_event(
        self, type_: str, *, after: int = 0, timeout: float = WAIT, **where: Any
    ) -> Body:
        """The first event of ``type_`` (past position ``after``) whose fields match ``where``."""
        return await self.events.wait_for(
            lambda b: b["type"] == type_ and all(b.get(k) == v for k, v in where.items()),
            timeout,
            after=after,
        )

    async def mark(self) -> int:
        """A position past every event published so far (see ``EventReader.mark``)."""
        while await self.events.poll(0):
            pass
        return self.events.mark()

    async def running(
        self, *, after: int = 0, previous: int | None = None, timeout: float = WAIT
    ) -> int:
        """Wait for a ``lane_started`` past ``after`` (not of pid ``previous``), then for the
        lane to be connected under that pid; the pid."""
        started = await self.events.wait_for(
            lambda b: b["type"] == "lane_started" and b["pid"] != previous, timeout, after=after
        )
        pid = int(started["pid"])
        await self.wait_state(timeout, status="paired_connected", pid=str(pid))
        return pid


@dataclass
class SupervisorProcess(LoggedProcess):
    """``python -m multipair.supervisor`` as ops run it, logging to a file."""

    env: dict[str, str]
    host_id: str
    log_path: Path
    capacity: int = 10
    proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "multipair.supervisor",
                "--host-id",
                self.host_id,
                "--capacity",
                str(self.capacity),
                env=self.env,
                stdout=log,
                stderr=log,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait_exit(self, timeout: float = WAIT) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    def log_events(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.logs().splitlines():
            with contextlib.suppress(ValueError):
                lines.append(orjson.loads(line))
        return [line for line in lines if isinstance(line, dict)]


@dataclass
class Fleet:
    """Terminals in the simulator, their lanes in Redis (one prefix), supervisors to run them."""

    redis: aioredis.Redis
    redis_url: str
    prefix: str
    tmp_path: Path
    sim: Simulator
    master: MasterKey = field(default_factory=MasterKey.generate)
    lanes: list[Lane] = field(default_factory=list)
    supervisors: list[SupervisorProcess] = field(default_factory=list)

    @property
    def keys(self) -> bs.Keys:
        return bs.Keys(self.prefix)

    @property
    def profiles(self) -> ProfileStore:
        return ProfileStore(self.redis, self.keys, self.master)

    def env(self, **extra: str) -> dict[str, str]:
        env = lane_env(self.redis_url, self.prefix, self.master)
        env.pop("MULTIPAIR_HOST_ID", None)
        env.update(extra)
        return env

    async def add_lane(
        self, index: int, *, secrets: Secrets | None = KEYS, sealed_with: MasterKey | None = None
    ) -> Lane:
        """A lane for terminal ``index`` (paired with KEYS, like the seeded terminal)."""
        terminal = self.sim.terminals[index]
        profile = await self.profiles.create(
            LaneProfile(
                pos_id="POS1", serial_number=terminal.serial, device_address=terminal.ws_url
            )
        )
        if secrets is not None:
            store = (
                self.profiles
                if sealed_with is None
                else ProfileStore(self.redis, self.keys, sealed_with)
            )
            await store.save_secrets(profile.instance_id, secrets)
        lane = Lane(
            self.redis,
            self.keys,
            profile.instance_id,
            terminal.serial,
            EventReader(self.redis, self.keys.events(profile.instance_id)),
        )
        self.lanes.append(lane)
        return lane

    def supervisor(self, host_id: str = "host-a", *, capacity: int = 10) -> SupervisorProcess:
        sup = SupervisorProcess(
            self.env(),
            host_id,
            self.tmp_path / f"supervisor-{host_id}-{len(self.supervisors)}.log",
            capacity=capacity,
        )
        self.supervisors.append(sup)
        return sup

    async def host_entry(self, host_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hget(self.keys.hosts(), host_id)
        if raw is None:
            return None
        entry: dict[str, Any] = orjson.loads(raw)
        return entry

    async def control(self, action: ControlAction, lane: Lane, host_id: str | None = None) -> str:
        """Send an ops message the way the CLI does: to the host named by the lane's lease."""
        host = host_id or await owning_host(self.redis, self.keys, lane.instance_id)
        assert host is not None, "the lane has no owner to send to"
        return await send_control(
            self.redis,
            self.keys,
            host,
            ControlMessage(action=action, instance_id=lane.instance_id, request_id="test"),
        )

    async def close(self) -> None:
        for sup in self.supervisors:
            await sup.kill()


def lane_pids_of(template_pid: int) -> set[int]:
    """The children of a template process (its lanes), from /proc."""
    children: set[int] = set()
    with contextlib.suppress(FileNotFoundError):
        for task in os.listdir(f"/proc/{template_pid}/task"):
            path = f"/proc/{template_pid}/task/{task}/children"
            with contextlib.suppress(FileNotFoundError), open(path, encoding="ascii") as f:
                children |= {int(p) for p in f.read().split()}
    return children


def kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
