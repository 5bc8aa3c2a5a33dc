"""Run real lane processes against the real Redis of the test session and the simulator.

The fixtures at the end (``sim``, ``control``, ``rig``, ``lane``) are the one
home of the one-lane-one-terminal set-up; tests/worker/conftest.py and
tests/client/conftest.py register them. A module whose terminal and lane
start unpaired overrides ``paired_at_start``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from multipair import broker_schema as bs
from multipair.simulator import Simulator
from multipair.spi.crypto import Secrets
from multipair.store.profiles import LaneProfile, ProfileStore
from multipair.store.secrets_box import MasterKey
from multipair.store.transactions import TxStore
from tests.poll import poll_until
from tests.simulator.helpers import KEYS, Control, seed_paired_state

WAIT = 20.0

SERIAL = "SIM-0001"  # the serial of the fixtures' terminal, and make_rig's default

Body = dict[str, Any]


class LoggedProcess:
    """What every child process a test runs can do: end it at once, read its log file.

    A subclass (a dataclass) has the ``log_path`` and the ``proc`` it started.
    """

    log_path: Path
    proc: asyncio.subprocess.Process | None

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def send_command(redis: aioredis.Redis, stream: str, body: Body) -> str:
    """XADD a command exactly as a POS backend would (v + JSON body); its ``command_id``.

    A body without one is given a fresh ``command_id`` (in place).
    """
    body.setdefault("command_id", f"c-{uuid.uuid4().hex[:12]}")
    await redis.xadd(stream, {"v": "1", "body": orjson.dumps(body)})
    return str(body["command_id"])


@dataclass
class LaneProcess(LoggedProcess):
    """``python -m multipair.worker`` for one lane, as the supervisor will run it."""

    instance_id: str
    env: dict[str, str]
    log_path: Path
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0

    async def start(self, *, failpoints: str = "", fencing_token: int | None = None) -> None:
        env = dict(self.env)
        if failpoints:
            env["MULTIPAIR_FAILPOINTS"] = failpoints
        log = self.log_path.open("ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "multipair.worker",
                "--instance-id",
                self.instance_id,
                *([] if fencing_token is None else ["--fencing-token", str(fencing_token)]),
                env=env,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        self.starts += 1

    async def wait_exit(self, timeout: float = WAIT) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.terminate()
        return await asyncio.wait_for(self.proc.wait(), WAIT)


@dataclass
class EventReader:
    """Follows a lane's event stream from the start; keeps everything it read."""

    redis: aioredis.Redis
    key: str
    last: str = "0"
    seen: list[Body] = field(default_factory=list)

    async def poll(self, block_ms: int = 200) -> list[Body]:
        # BLOCK 0 means "forever" to Redis: 0 here means "do not block".
        reply: Any = await self.redis.xread(
            {self.key: self.last}, count=500, block=block_ms or None
        )
        fresh: list[Body] = []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                self.last = entry_id.decode()
                body = orjson.loads(fields[b"body"])
                self.seen.append(body)
                fresh.append(body)
        return fresh

    def mark(self) -> int:
        """A position in what was seen; pass it as ``after`` to ignore older events."""
        return len(self.seen)

    async def wait_for(
        self, predicate: Callable[[Body], object], timeout: float = WAIT, *, after: int = 0
    ) -> Body:
        """The first event (already seen, past ``after``, or new) matching ``predicate``."""
        for body in self.seen[after:]:
            if predicate(body):
                return body

        async def new_match() -> Body | None:
            for body in await self.poll():  # blocks for the next events: the poll's pace
                if predicate(body):
                    return body
            return None

        try:
            return await poll_until(new_match, "a matching event", timeout, interval=0)
        except AssertionError as exc:
            saw = ", ".join(f"{b['type']}:{b.get('command_id')}" for b in self.seen[-30:])
            raise AssertionError(f"{exc}; saw: {saw}") from None

    def of_type(self, type_: str, **where: Any) -> list[Body]:
        return [
            b
            for b in self.seen
            if b["type"] == type_ and all(b.get(k) == v for k, v in where.items())
        ]


@dataclass
class LaneRig:
    """One lane: its profile in Redis, its process, its streams."""

    redis: aioredis.Redis
    keys: bs.Keys
    profiles: ProfileStore
    txs: TxStore
    instance_id: str
    process: LaneProcess
    events: EventReader

    async def send(self, body: Body) -> str:
        """XADD a command exactly as a POS backend would (v + JSON body)."""
        return await send_command(self.redis, self.keys.commands(self.instance_id), body)

    async def send_raw(self, fields: dict[FieldT, EncodableT]) -> None:
        await self.redis.xadd(self.keys.commands(self.instance_id), fields)

    async def answer(self, command_id: str, timeout: float = WAIT) -> Body:
        """The event that settles a command: completed, lookup, rejected, … (not progress)."""
        final = {
            "transaction_completed",
            "transaction_lookup",
            "command_rejected",
            "settlement",
            "terminal_status",
            "terminal_configuration",
            "printing",
        }
        return await self.events.wait_for(
            lambda b: b.get("command_id") == command_id and b["type"] in final, timeout
        )

    async def state(self) -> dict[str, str]:
        raw: Any = await self.redis.hgetall(self.keys.state(self.instance_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def wait_state(self, timeout: float = WAIT, **expected: str) -> dict[str, str]:
        last: dict[str, str] = {}

        async def check() -> dict[str, str] | None:
            nonlocal last
            last = await self.state()
            if all(last.get(k) == v for k, v in expected.items()):
                return last
            await self.events.poll(100)  # the pace: reads the events meanwhile, wakes on one
            return None

        try:
            return await poll_until(check, f"lane state {expected}", timeout, interval=0)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last state: {last}") from None

    async def pending(self) -> int:
        info: Any = await self.redis.xpending(self.keys.commands(self.instance_id), "lane")
        return int(info["pending"])

    async def consumed_all(self) -> bool:
        """The lane has read every entry of its command stream (pending or not)."""
        stream = self.keys.commands(self.instance_id)
        info: Any = await self.redis.xinfo_stream(stream)
        groups: Any = await self.redis.xinfo_groups(stream)
        last = info["last-generated-id"]
        return bool(groups) and groups[0]["last-delivered-id"] == last

    async def wait_acknowledged(self, timeout: float = WAIT) -> None:
        """Every command entry in the stream has been read and XACKed."""

        async def acknowledged() -> bool:
            # In this order: once every entry was delivered, pending can only shrink,
            # so "all delivered, then none pending" means all acknowledged. (The other
            # order races: none pending, then the lane reads the rest, then all delivered.)
            if await self.consumed_all() and not await self.pending():
                return True
            await self.events.poll(50)  # the pace: reads the events meanwhile
            return False

        try:
            await poll_until(acknowledged, "every command entry acknowledged", timeout, interval=0)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {await self.pending()} still pending") from None
        while await self.events.poll(0):  # read what the last acknowledgements published
            pass


def lane_env(redis_url: str, prefix: str, master_key: MasterKey) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIPAIR_")}
    env.update(
        MULTIPAIR_REDIS_URL=redis_url,
        MULTIPAIR_PREFIX=prefix,
        MULTIPAIR_MASTER_KEY=master_key.to_base64(),
        MULTIPAIR_LOG_FORMAT="json",
        MULTIPAIR_HOST_ID="test-host",
    )
    return env


async def all_keys(redis: aioredis.Redis | aioredis.RedisCluster, pattern: str) -> list[bytes]:
    """``KEYS pattern`` over the whole database: on a Redis Cluster, over every master."""
    if isinstance(redis, aioredis.RedisCluster):
        found: Any = await redis.keys(pattern, target_nodes=aioredis.RedisCluster.PRIMARIES)
        return list(found)
    found = await redis.keys(pattern)
    return list(found)


def lane_id_away_from(
    redis: aioredis.Redis | aioredis.RedisCluster, redis_url: str, keys: bs.Keys
) -> str:
    """A new lane id; on a Redis Cluster, one whose slot the node of ``redis_url`` does not own.

    The lane process is then given a URL naming a node that must redirect it
    (``MOVED``) for every key of its lane: "any node" is exercised, not assumed.
    """
    if not isinstance(redis, aioredis.RedisCluster):
        return str(uuid.uuid4())
    port = urlsplit(redis_url).port
    while True:
        iid = str(uuid.uuid4())
        node = redis.get_node_from_key(keys.profile(iid))
        assert node is not None, "every slot has a master"
        if node.port != port:
            return iid


async def make_rig(
    redis: aioredis.Redis,
    redis_url: str,
    prefix: str,
    tmp_path: Path,
    *,
    address: str | None,
    serial: str = SERIAL,
    secrets: Secrets | None = None,
    env: dict[str, str] | None = None,
    **profile_fields: Any,
) -> LaneRig:
    keys = bs.Keys(prefix)
    master = MasterKey.generate()
    profiles = ProfileStore(redis, keys, master)
    if "instance_id" not in profile_fields:
        profile_fields["instance_id"] = lane_id_away_from(redis, redis_url, keys)
    profile = await profiles.create(
        LaneProfile(pos_id="POS1", serial_number=serial, device_address=address, **profile_fields)
    )
    if secrets is not None:
        await profiles.save_secrets(profile.instance_id, secrets)
    iid = profile.instance_id
    process = LaneProcess(
        iid, {**lane_env(redis_url, prefix, master), **(env or {})}, tmp_path / f"lane-{iid}.log"
    )
    return LaneRig(
        redis=redis,
        keys=keys,
        profiles=profiles,
        txs=TxStore(redis, keys),
        instance_id=iid,
        process=process,
        events=EventReader(redis, keys.events(iid)),
    )


def one_terminal(state_dir: Path, *, paired: bool, pairing: str = "auto") -> Simulator:
    """A simulator of one terminal (:data:`SERIAL`), its state in ``state_dir``.

    ``paired``: it already knows POS1 with the test keys (:data:`KEYS`).
    """
    if paired:
        seed_paired_state(state_dir, SERIAL)
    return Simulator(1, state_dir=state_dir, pairing=pairing)


# ---------------------------------------------------------------------------
# Fixtures: one terminal (SIM-0001) and one lane process for it


@pytest.fixture
def paired_at_start() -> bool:
    """Whether the terminal and the lane start paired (POS1, :data:`KEYS`).

    A module overrides it with ``False`` for an unpaired terminal that
    confirms a pairing only through the control API, and an unpaired lane.
    """
    return True


@pytest.fixture
async def sim(tmp_path: Path, paired_at_start: bool) -> AsyncIterator[Simulator]:
    """One simulated terminal: already knows POS1 with the test keys, or (unpaired) manual."""
    pairing = "auto" if paired_at_start else "manual"
    async with one_terminal(tmp_path / "sim", paired=paired_at_start, pairing=pairing) as simulator:
        yield simulator


@pytest.fixture
async def control(sim: Simulator) -> AsyncIterator[Control]:
    """The simulator's control API."""
    async with aiohttp.ClientSession() as http:
        yield Control(http, sim.control_url)


@pytest.fixture
async def rig(
    redis: aioredis.Redis,
    redis_url: str,
    key_prefix: str,
    tmp_path: Path,
    sim: Simulator,
    paired_at_start: bool,
) -> AsyncIterator[LaneRig]:
    """The lane of ``sim``'s terminal, not started (tests start it as they need); killed after."""
    lane = await make_rig(
        redis,
        redis_url,
        key_prefix,
        tmp_path,
        address=sim.terminals[0].ws_url,
        secrets=KEYS if paired_at_start else None,
    )
    yield lane
    await lane.process.kill()


@pytest.fixture
async def lane(rig: LaneRig, paired_at_start: bool) -> LaneRig:
    """The lane, started and connected to its terminal (``paired_connected`` or ``unpaired``)."""
    await rig.process.start()
    await rig.wait_state(status="paired_connected" if paired_at_start else "unpaired")
    return rig
