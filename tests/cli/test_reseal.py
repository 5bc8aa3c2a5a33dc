"""``multipair reseal``: every lane's sealed fields move to the new master key, safely.

The real script runs against the session's Redis; lanes are made with the
store and checked with the store under the new key, as a restarted lane
would open them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from multipair import broker_schema as bs
from multipair.exceptions import ConfigurationError
from multipair.leases import LeaseManager
from multipair.spi.crypto import Secrets
from multipair.store.profiles import SEALED_FIELDS, LaneProfile, ProfileStore
from multipair.store.secrets_box import MasterKey
from tests.cli.helpers import Cli, Result


@dataclass(frozen=True)
class Paired:
    """What a lane holds sealed, to compare after the re-seal (and to look for in output)."""

    instance_id: str
    current: Secrets
    previous: Secrets
    token: str


@dataclass(frozen=True)
class Keyring:
    old: MasterKey
    new: MasterKey
    old_file: Path
    new_file: Path

    def args(self, *extra: str) -> tuple[str, ...]:
        return (
            "reseal",
            "--old-key-file",
            str(self.old_file),
            "--new-key-file",
            str(self.new_file),
            *extra,
        )


def _key_file(path: Path, key: MasterKey) -> Path:
    path.write_text(key.to_base64() + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def keyring(tmp_path: Path) -> Keyring:
    old, new = MasterKey.generate(), MasterKey.generate()
    return Keyring(
        old, new, _key_file(tmp_path / "old.key", old), _key_file(tmp_path / "new.key", new)
    )


def _store(redis: aioredis.Redis, cli: Cli, key: MasterKey | None = None) -> ProfileStore:
    return ProfileStore(redis, bs.Keys(cli.prefix), key)


def _secrets() -> Secrets:
    return Secrets(enc_key=secrets.token_hex(32).upper(), hmac_key=secrets.token_hex(32).upper())


async def _lane(redis: aioredis.Redis, cli: Cli, key: MasterKey) -> Paired:
    """A paired lane sealed under ``key``: keys, pre-roll keys and an SPI token."""
    store = _store(redis, cli, key)
    profile = await store.create(
        LaneProfile(pos_id="POS1", serial_number="SIM-0001", device_address="ws://127.0.0.1:1")
    )
    lane = Paired(profile.instance_id, _secrets(), _secrets(), f"tok-{secrets.token_hex(16)}")
    await store.save_secrets(lane.instance_id, lane.current, previous=lane.previous)
    await store.save_spi_token(lane.instance_id, lane.token)
    return lane


async def _unpaired(redis: aioredis.Redis, cli: Cli) -> str:
    profile = await _store(redis, cli).create(
        LaneProfile(pos_id="POS2", serial_number="SIM-0002", device_address="ws://127.0.0.1:1")
    )
    return profile.instance_id


async def _opens_under(redis: aioredis.Redis, cli: Cli, key: MasterKey, lane: Paired) -> bool:
    """The lane's sealed fields open under ``key`` and equal what was stored."""
    store = _store(redis, cli, key)
    try:
        current, previous = await store.load_secrets_and_previous(lane.instance_id)
        token = await store.load_spi_token(lane.instance_id)
    except ConfigurationError:
        return False
    assert (lane.current, lane.previous, lane.token) == (current, previous, token)
    return True


async def _raw(redis: aioredis.Redis, cli: Cli) -> dict[bytes, dict[bytes, bytes]]:
    """Every profile hash of the prefix, as stored."""
    keys = bs.Keys(cli.prefix)
    ids = sorted(m.decode() for m in await redis.smembers(keys.lanes()))  # type: ignore[union-attr]
    return {iid.encode(): await redis.hgetall(keys.profile(iid)) for iid in ids}  # type: ignore[misc]


def _forms(
    lanes: list[Paired], keyring: Keyring, raw: dict[bytes, dict[bytes, bytes]]
) -> list[str]:
    """Every form of a secret that must never be printed: keys, tokens, sealed values."""
    forms = [keyring.old.to_base64(), keyring.new.to_base64()]
    for lane in lanes:
        for pair in (lane.current, lane.previous):
            forms += [pair.enc_key, pair.enc_key.lower(), pair.hmac_key, pair.hmac_key.lower()]
        forms.append(lane.token)
    for fields in raw.values():
        forms += [v.decode()[3:40] for k, v in fields.items() if v.startswith(b"v1:")]
    return forms


def _leaks(result: Result, forms: list[str]) -> list[str]:
    shown = result.out + result.err
    return [form for form in forms if form in shown]


# ---------------------------------------------------------------------- re-seal


async def test_reseal_moves_every_lane_so_a_lane_with_the_new_key_opens_its_secrets(
    cli: Cli, redis: aioredis.Redis, keyring: Keyring
) -> None:
    lanes = [await _lane(redis, cli, keyring.old) for _ in range(3)]
    unpaired = await _unpaired(redis, cli)
    profiles = {lane.instance_id: await _store(redis, cli).get(lane.instance_id) for lane in lanes}

    result = await cli.run(*keyring.args())

    assert 0 == result.code, result
    document = result.json()
    assert {"resealed": 3, "already_new": 0, "unsealed": 1, "missing": 0, "failed": 0} == (
        document["statuses"]
    )
    assert {"resealed": 6, "already_new": 0} == document["fields"]
    assert [True, True, True] == [await _opens_under(redis, cli, keyring.new, x) for x in lanes]
    assert [False, False, False] == [await _opens_under(redis, cli, keyring.old, x) for x in lanes]
    assert profiles == {iid: await _store(redis, cli).get(iid) for iid in profiles}
    statuses = {r["instance_id"]: r["status"] for r in document["results"]}
    assert "unsealed" == statuses[unpaired]


async def test_a_second_run_finds_every_field_already_new_and_changes_nothing(
    cli: Cli, redis: aioredis.Redis, keyring: Keyring
) -> None:
    lanes = [await _lane(redis, cli, keyring.old) for _ in range(2)]
    first = await cli.run(*keyring.args())
    after_first = await _raw(redis, cli)

    second = await cli.run(*keyring.args())

    assert (0, 0) == (first.code, second.code), (first, second)
    assert {"resealed": 0, "already_new": 2, "unsealed": 0, "missing": 0, "failed": 0} == (
        second.json()["statuses"]
    )
    assert {"resealed": 0, "already_new": 4} == second.json()["fields"]
    assert after_first == await _raw(redis, cli)
    assert [True, True] == [await _opens_under(redis, cli, keyring.new, x) for x in lanes]


async def test_refused_with_exit_2_while_a_lane_has_a_lease_and_nothing_changes(
    cli: Cli, redis: aioredis.Redis, keyring: Keyring
) -> None:
    lanes = [await _lane(redis, cli, keyring.old) for _ in range(2)]
    leases = LeaseManager(redis, bs.Keys(cli.prefix), "host-a")
    assert await leases.acquire(lanes[1].instance_id) is not None
    before = await _raw(redis, cli)

    result = await cli.run(*keyring.args())

    assert (2, "") == (result.code, result.out), result
    [line] = result.error_lines()
    assert line.startswith("multipair: error: 1 lane(s) are running"), line
    for expected in (lanes[1].instance_id, "host-a", "drain", "6 s"):
        assert expected in line, line
    assert lanes[0].instance_id not in line
    assert before == await _raw(redis, cli)


async def test_a_lane_sealed_under_a_third_key_fails_alone_with_exit_1(
    cli: Cli, redis: aioredis.Redis, keyring: Keyring
) -> None:
    good = [await _lane(redis, cli, keyring.old) for _ in range(2)]
    stray = await _lane(redis, cli, MasterKey.generate())
    stray_before = (await _raw(redis, cli))[stray.instance_id.encode()]

    result = await cli.run(*keyring.args())

    assert 1 == result.code, result
    document = result.json()
    assert {"resealed": 2, "already_new": 0, "unsealed": 0, "missing": 0, "failed": 1} == (
        document["statuses"]
    )
    [error] = document["errors"]
    assert stray.instance_id == error["instance_id"]
    assert "opens under neither" in error["error"]
    assert stray.instance_id in result.err
    assert [True, True] == [await _opens_under(redis, cli, keyring.new, x) for x in good]
    assert stray_before == (await _raw(redis, cli))[stray.instance_id.encode()]


async def test_dry_run_reports_what_it_would_do_and_changes_nothing(
    cli: Cli, redis: aioredis.Redis, keyring: Keyring
) -> None:
    lanes = [await _lane(redis, cli, keyring.old) for _ in range(2)]
    # A dry run may check before the hosts are drained: a lease is only reported.
    assert await LeaseManager(redis, bs.Keys(cli.prefix), "host-a").acquire(lanes[0].instance_id)
    before = await _raw(redis, cli)

    result = await cli.run(*keyring.args("--dry-run"))

    assert 0 == result.code, result
    document = result.json()
    assert (True, 1, 2, 4) == (
        document["dry_run"],
        document["leased"],
        document["statuses"]["resealed"],
        document["fields"]["resealed"],
    )
    assert "a real run would refuse" in result.err
    assert before == await _raw(redis, cli)
    assert [True, True] == [await _opens_under(redis, cli, keyring.old, x) for x in lanes]


async def test_dry_run_with_a_lane_that_opens_under_neither_key_exits_1(
    cli: Cli, redis: aioredis.Redis, keyring: Keyring
) -> None:
    await _lane(redis, cli, keyring.old)
    await _lane(redis, cli, MasterKey.generate())
    before = await _raw(redis, cli)

    result = await cli.run(*keyring.args("--dry-run"), json=False)

    assert 1 == result.code, result
    assert "FAILED" in result.out
    assert "would be re-sealed" in result.out
    assert before == await _raw(redis, cli)


async def test_json_summary_shape(cli: Cli, redis: aioredis.Redis, keyring: Keyring) -> None:
    lane = await _lane(redis, cli, keyring.old)

    document: dict[str, Any] = (await cli.run(*keyring.args())).json()

    assert {
        "dry_run": False,
        "old_fingerprint": keyring.old.fingerprint(),
        "new_fingerprint": keyring.new.fingerprint(),
        "lanes": 1,
        "statuses": {"resealed": 1, "already_new": 0, "unsealed": 0, "missing": 0, "failed": 0},
        "fields": {"resealed": 2, "already_new": 0},
        "leased": 0,
        "errors": [],
        "results": [
            {
                "instance_id": lane.instance_id,
                "status": "resealed",
                "resealed": list(SEALED_FIELDS),
                "already_new": [],
                "error": None,
            }
        ],
    } == document


async def test_human_output_shows_fingerprints_and_per_lane_counts(
    cli: Cli, redis: aioredis.Redis, keyring: Keyring
) -> None:
    lane = await _lane(redis, cli, keyring.old)

    result = await cli.run(*keyring.args(), json=False)

    assert (0, "") == (result.code, result.err), result
    first, per_lane, summary = result.out.splitlines()
    assert keyring.old.fingerprint() in first
    assert keyring.new.fingerprint() in first
    assert per_lane.startswith(f"{lane.instance_id}  re-sealed 2 (secrets, spi_token)")
    assert summary.startswith("1 lane(s): 1 re-sealed (2 field(s))")


@pytest.mark.parametrize("json", [True, False])
async def test_no_key_or_secret_appears_in_the_output(
    cli: Cli, redis: aioredis.Redis, keyring: Keyring, json: bool
) -> None:
    lanes = [await _lane(redis, cli, keyring.old) for _ in range(2)]
    lanes.append(await _lane(redis, cli, MasterKey.generate()))  # its error is printed too
    before = await _raw(redis, cli)
    dry = await cli.run(*keyring.args("--dry-run"), json=json)
    result = await cli.run(*keyring.args(), json=json)
    again = await cli.run(*keyring.args(), json=json)
    forms = _forms(lanes, keyring, before) + _forms([], keyring, await _raw(redis, cli))
    assert (1, 1, 1) == (dry.code, result.code, again.code)
    assert ([], [], []) == (_leaks(dry, forms), _leaks(result, forms), _leaks(again, forms))


# ---------------------------------------------------------------------- refused


async def test_the_same_key_twice_is_refused(cli: Cli, tmp_path: Path, keyring: Keyring) -> None:
    copy = _key_file(tmp_path / "copy.key", keyring.old)
    result = await cli.run(
        "reseal", "--old-key-file", str(keyring.old_file), "--new-key-file", str(copy)
    )
    assert (2, "") == (result.code, result.out), result
    [line] = result.error_lines()
    assert "same key" in line
    assert keyring.old.fingerprint() in line


async def test_a_missing_or_bad_key_file_is_refused(
    cli: Cli, tmp_path: Path, keyring: Keyring
) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not base64!\n")
    bad.chmod(0o600)
    missing, malformed = (
        await cli.run(
            "reseal",
            "--old-key-file",
            str(tmp_path / "nope"),
            "--new-key-file",
            str(keyring.new_file),
        ),
        await cli.run(
            "reseal", "--old-key-file", str(keyring.old_file), "--new-key-file", str(bad)
        ),
    )
    assert (2, 2) == (missing.code, malformed.code), (missing, malformed)
    assert "old key: cannot read master key file" in missing.err
    assert "new key: master key file" in malformed.err
    assert "not base64" in malformed.err


async def test_no_lanes_is_fine(cli: Cli, keyring: Keyring) -> None:
    result = await cli.run(*keyring.args())
    assert (0, 0) == (result.code, result.json()["lanes"]), result
