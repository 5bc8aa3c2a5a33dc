"""A lane in crash loop is shown as such, with its last exit, never as "running".

A real supervisor runs a lane whose secrets were sealed under another master
key than the deployment's (a lane restored from an old backup, say): the lane
exits 2 (configuration) on its first start, so the supervisor puts it in crash
loop at once and keeps its lease while it waits to retry. Why it exits, in the
lane's own words, is in its state hash: `lane show` and `status` show it.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import redis.asyncio as aioredis

from multipair import broker_schema as bs
from multipair.redis_conn import text_map
from multipair.store.meta import record_master_key
from multipair.store.profiles import LaneProfile, ProfileStore
from multipair.store.secrets_box import MasterKey
from tests.cli.helpers import Cli
from tests.poll import poll_until
from tests.simulator.helpers import KEYS
from tests.supervisor.helpers import SupervisorProcess
from tests.worker.helpers import lane_env


async def test_a_crash_looping_lane_is_shown_as_crash_loop_with_its_last_exit(
    cli: Cli, redis: aioredis.Redis, redis_url: str, tmp_path: Path
) -> None:
    keys = bs.Keys(cli.prefix)
    profile = await ProfileStore(redis, keys).create(
        LaneProfile(
            instance_id=str(uuid.uuid4()),
            pos_id="POS1",
            serial_number="SIM-0001",
            device_address="ws://127.0.0.1:1",
        )
    )
    iid = profile.instance_id
    stale = MasterKey.generate()
    await ProfileStore(redis, keys, stale).save_secrets(iid, KEYS)
    host_key = MasterKey.generate()
    # The deployment's key is the host's (mp:meta): only this one lane is sealed otherwise.
    await record_master_key(redis, keys, host_key)
    supervisor = SupervisorProcess(
        lane_env(redis_url, cli.prefix, host_key), "host-a", tmp_path / "sup.log"
    )
    await supervisor.start()
    try:

        async def crash_looping() -> dict[str, str] | None:
            state = text_map(await redis.hgetall(keys.state(iid)))
            return state if state.get("crash_loop") == "1" and state.get("last_exit") else None

        state = await poll_until(crash_looping, "the lane in crash loop")
        assert "exit code 2" == state["last_exit"]
        show, show_human, status, status_human = await asyncio.gather(
            cli.run("lane", "show", iid),
            cli.run("lane", "show", iid, json=False),
            cli.run("status"),
            cli.run("status", json=False),
        )

        assert (0, 0, 0, 0) == (show.code, show_human.code, status.code, status_human.code)
        doc = show.json()
        assert (False, True, "exit code 2", "host-a") == (
            doc["running"],
            doc["crash_loop"],
            doc["last_exit"],
            doc["owner"],  # the supervisor keeps the lease while it waits to retry
        )
        (row,) = status.json()["lanes"]
        assert (False, True, "exit code 2") == (row["running"], row["crash_loop"], row["last_exit"])

        lines = dict(
            (key.strip(), value.strip())
            for key, _, value in (line.partition("  ") for line in show_human.out.splitlines())
        )
        assert lines["running"].startswith("no  (CRASH LOOP"), show_human.out
        assert lines["status"].startswith("crash_loop (exit code 2)"), show_human.out
        cause = (
            f"cannot start: master key {host_key.fingerprint()} does not open the stored "
            f"secrets of lane {iid}"
        )
        assert lines["last exit"].startswith(f"exit code 2 — {cause}"), show_human.out
        assert lines["last error"].startswith(cause), show_human.out
        assert doc["last_exit_cause"].startswith(cause), doc
        assert row["last_exit_cause"].startswith(cause), row
        table_row = status_human.out.splitlines()[1]
        assert "crash_loop (exit code 2)" in table_row, status_human.out
        assert f"crash_loop (exit code 2): {cause}" in status_human.out, status_human.out
        assert stale.fingerprint() not in show.out + status.out  # only the host key's is named

        # A command for it is refused before anything is sent (not queued for a minute).
        purchase = await cli.run("tx", "purchase", iid, "--amount", "1", "--timeout", "5")
        assert 2 == purchase.code, purchase  # nothing was sent
        assert purchase.error_lines()[-1].startswith(
            f"multipair: error: lane crash-looping: {iid} keeps exiting"
        ), purchase
    finally:
        await supervisor.kill()
