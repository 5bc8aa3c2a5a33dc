"""A host with another master key than its lanes' refuses to start (issue 14).

Before, it joined as a second host, took its share of the healthy lanes and
crash-looped them (their secrets do not open under its key). Now every
supervisor checks its key against ``mp:meta`` (the key's fingerprint), or,
before any fingerprint is kept, against the lanes' sealed keys, and refuses
in one line; ``multipair reseal`` records the new key.
"""

from __future__ import annotations

from pathlib import Path

from multipair.store.meta import FINGERPRINT_FIELD, check_master_key, record_master_key
from multipair.store.secrets_box import MasterKey
from tests.cli.helpers import Cli, clean_env, run, script
from tests.poll import poll_until
from tests.supervisor.helpers import Fleet, SupervisorProcess

WAIT = 30.0


async def _refused(fleet: Fleet, key: MasterKey, name: str) -> str:
    env = fleet.env(MULTIPAIR_MASTER_KEY=key.to_base64())
    other = SupervisorProcess(env, name, fleet.tmp_path / f"{name}.log")
    await other.start()
    code = await other.wait_exit(WAIT)
    assert 2 == code, other.logs()
    return other.logs()


async def test_a_host_whose_key_opens_no_lane_refuses_to_start_and_takes_no_lane(
    fleet: Fleet,
) -> None:
    lane = await fleet.add_lane(0)  # sealed under the fleet's key; no fingerprint kept yet
    stranger = MasterKey.generate()

    log = await _refused(fleet, stranger, "host-b")

    (line,) = log.splitlines()  # one line, no traceback
    assert line.startswith(
        f"multipair supervise: master key {stranger.fingerprint()} opens the sealed pairing "
        "keys of none of the 1 lane(s) tried"
    ), line
    assert "multipair reseal" in line
    assert None is await lane.lease()
    await lane.events.poll(0)
    assert [] == lane.events.seen  # never started, so never crashed
    assert None is await fleet.redis.hget(fleet.keys.meta(), FINGERPRINT_FIELD)


async def test_the_first_host_records_its_key_and_a_host_with_another_is_refused(
    fleet: Fleet,
) -> None:
    lane = await fleet.add_lane(0)
    supervisor = fleet.supervisor("host-a")
    await supervisor.start()
    await lane.running()
    assert fleet.master.fingerprint().encode() == await fleet.redis.hget(
        fleet.keys.meta(), FINGERPRINT_FIELD
    )

    stranger = MasterKey.generate()
    log = await _refused(fleet, stranger, "host-b")

    assert (
        f"multipair supervise: master key {stranger.fingerprint()} is not the key the lanes in "
        f"this Redis are sealed under ({fleet.master.fingerprint()}, {fleet.keys.meta()} "
        f"{FINGERPRINT_FIELD})"
    ) in log, log
    # The healthy lane never moved and never crashed.
    assert "host-a" == (await lane.lease()).host_id  # type: ignore[union-attr]
    await lane.events.poll(0)
    assert [] == lane.events.of_type("lane_crashed")


async def test_with_no_paired_lane_the_first_key_is_recorded(fleet: Fleet) -> None:
    await fleet.add_lane(0, secrets=None)
    first, second = MasterKey.generate(), MasterKey.generate()
    await check_master_key(fleet.redis, fleet.keys, first)
    await check_master_key(fleet.redis, fleet.keys, first)  # the same key: fine, again
    stored = await fleet.redis.hget(fleet.keys.meta(), FINGERPRINT_FIELD)
    assert first.fingerprint().encode() == stored
    await record_master_key(fleet.redis, fleet.keys, second)  # what reseal does
    await check_master_key(fleet.redis, fleet.keys, second)


async def test_reseal_moves_the_recorded_key_so_the_new_key_runs_and_the_old_is_refused(
    fleet: Fleet, tmp_path: Path
) -> None:
    lane = await fleet.add_lane(0)
    await check_master_key(fleet.redis, fleet.keys, fleet.master)  # recorded: the old key
    old_file, new_file = tmp_path / "old.key", tmp_path / "new.key"
    new = MasterKey.generate()
    for path, key in ((old_file, fleet.master), (new_file, new)):
        path.write_text(key.to_base64() + "\n")
        path.chmod(0o600)
    cli = Cli(fleet.redis_url, fleet.prefix)
    done = await cli.run("reseal", "--old-key-file", str(old_file), "--new-key-file", str(new_file))
    assert 0 == done.code, done
    assert new.fingerprint().encode() == await fleet.redis.hget(
        fleet.keys.meta(), FINGERPRINT_FIELD
    )

    log = await _refused(fleet, fleet.master, "host-old")
    assert f"({new.fingerprint()}, " in log, log

    env = fleet.env(MULTIPAIR_MASTER_KEY=new.to_base64())
    supervisor = SupervisorProcess(env, "host-new", tmp_path / "new.log")
    fleet.supervisors.append(supervisor)
    await supervisor.start()
    await lane.running()

    async def connected() -> bool:
        return (await lane.state()).get("status") == "paired_connected"

    await poll_until(connected, "the lane paired_connected under the new key")


async def test_multipair_up_refuses_another_folders_key_in_one_line(
    fleet: Fleet, tmp_path: Path
) -> None:
    await fleet.add_lane(0)
    await check_master_key(fleet.redis, fleet.keys, fleet.master)
    other = tmp_path / "other.key"
    other.write_text(MasterKey.generate().to_base64() + "\n")
    other.chmod(0o600)
    env = clean_env(
        MULTIPAIR_REDIS_URL=fleet.redis_url,
        MULTIPAIR_PREFIX=fleet.prefix,
        MULTIPAIR_MASTER_KEY_FILE=str(other),
    )
    result = await run([*script(), "up", "--data-dir", str(tmp_path / "data")], env=env, timeout=60)
    assert 2 == result.code, result
    (error,) = [line for line in result.err.splitlines() if line.startswith("multipair")]
    assert error.startswith("multipair: error: master key "), result
    assert "Traceback" not in result.err + result.out
