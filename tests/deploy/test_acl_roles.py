"""deploy/redis/users.acl: each multipair role can do its job on a real Redis, and no more.

A redis-server runs deploy/redis.conf with the ACL file rendered by the
shipped script (tests/deploy/redis_acl.py), and every process uses its
role's URL:

- ``multipair-pos``: raw ``XADD`` of a command and ``XREAD`` of events; the
  client library's send, wait, purchase and event paths against a lane
  process run as ``multipair-service``; and ``NOPERM`` for writing events,
  profiles, control streams, ``mp:hosts`` or transaction records, reading
  profiles (the sealed secrets), Lua, ``INFO`` beyond its cluster section.
- ``multipair-ops``: the CLI's ``lane add / stop / start / restart /
  remove``, ``status``, ``hosts`` and ``host drain / accept`` against a
  supervisor run as ``multipair-service``; ``NOPERM`` for events and
  transaction records.
- ``multipair-service``: a lane and a supervisor run a purchase.
- The supervisor refuses malformed control messages with a log line,
  acknowledges them, and carries on.

Every role's ordinary work leaves Redis' ``ACL LOG`` empty: a denial there
means the ACL file and the code disagree.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError
from redis.typing import EncodableT, FieldT

from multipair import broker_schema as bs
from multipair.client import AsyncClient, LaneNotFound
from multipair.redis_conn import connect
from multipair.simulator import Simulator
from multipair.supervisor.control import CONTROL_GROUP, MAX_BODY_BYTES
from tests.cli.helpers import Cli
from tests.deploy.redis_acl import (
    PASSWORDS,
    TEMPLATE,
    USERS,
    AclRedis,
    acl_load,
    acl_redis,
    password_files,
    render,
)
from tests.poll import poll_until
from tests.simulator.helpers import KEYS, paired_simulator
from tests.supervisor.helpers import Fleet
from tests.worker.helpers import LaneRig, make_rig

PREFIX = "mp"
"""The prefix the ACL file is written for (the tests' usual per-test prefixes are not)."""
HOST = "acl-host"
APPROVE = 1000
"""An amount the simulator approves (simulator/rules.py)."""

keys = bs.Keys(PREFIX)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AclRedis]:
    with acl_redis(tmp_path / "redis") as running:
        yield running


@pytest.fixture
async def admin(server: AclRedis) -> AsyncIterator[aioredis.Redis]:
    """``redis-admin``: sets up what a test needs and reads what happened."""
    client = aioredis.Redis.from_url(server.url("admin"))
    yield client
    await client.aclose()


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Simulator]:
    async with paired_simulator(tmp_path / "sim", 2) as simulator:
        yield simulator


@pytest.fixture
async def rig(
    server: AclRedis, admin: aioredis.Redis, tmp_path: Path, sim: Simulator
) -> AsyncIterator[LaneRig]:
    """The first terminal's lane, set up by the admin and run as ``multipair-service``
    when a test starts it; killed after the test."""
    rig = await make_rig(
        admin,
        server.url("service"),
        PREFIX,
        tmp_path,
        address=sim.terminals[0].ws_url,
        serial=sim.terminals[0].serial,
        secrets=KEYS,
    )
    yield rig
    await rig.process.kill()


@pytest.fixture
async def fleet(
    admin: aioredis.Redis, server: AclRedis, tmp_path: Path, sim: Simulator
) -> AsyncIterator[Fleet]:
    """Lanes set up by the admin; supervisors run as ``multipair-service``."""
    fleet = Fleet(admin, server.url("service"), PREFIX, tmp_path, sim)
    try:
        yield fleet
    finally:
        await fleet.close()


async def as_role(server: AclRedis, role: str) -> aioredis.Redis:
    """A client of the role, made the way multipair makes every client (``INFO cluster`` probe)."""
    return await connect(server.url(role))


async def refused(call: Callable[[], Awaitable[Any]]) -> str:
    """The ``NOPERM`` message of a call that must be refused."""
    with pytest.raises(NoPermissionError) as denied:
        await call()
    return str(denied.value)


async def service_connections(admin: aioredis.Redis) -> set[str]:
    """Ids of the connections authenticated as ``multipair-service`` now."""
    clients: Any = await admin.client_list()
    return {c["id"] for c in clients if c.get("user") == USERS["service"]}


def ops_cli(server: AclRedis) -> Cli:
    return Cli(server.url("ops"), PREFIX)


# ---------------------------------------------------------------------- the file itself


def test_the_template_holds_no_password_and_every_role() -> None:
    text = TEMPLATE.read_text(encoding="utf-8")
    for password in PASSWORDS.values():
        assert password not in text
    for user in (*USERS.values(), "default"):
        assert f"\nuser {user} " in text
    assert "\nuser default off " in text


def test_the_rendered_file_names_hashes_only_and_rewrites_the_prefix(tmp_path: Path) -> None:
    files = password_files(tmp_path / "passwords")
    old = tmp_path / "passwords" / "old-pos.password"
    old.write_text("o" * 40 + "\n", encoding="ascii")
    out = tmp_path / "users.acl"
    done = render(out, {**files, "pos": [files["pos"], old]}, "--prefix", "shop-7")
    assert 0 == done.returncode, done.stderr
    text = out.read_text(encoding="utf-8")
    assert 0o640 == out.stat().st_mode & 0o777
    lines = text.splitlines()
    assert all(line.startswith("user ") for line in lines), "one user per line, no comments"
    assert 5 == len(lines)
    for password in PASSWORDS.values():
        assert password not in text
    words = text.split()
    assert ([], False) == ([w for w in words if w.startswith(">")], "nopass" in words)
    pos = next(line for line in lines if line.startswith("user multipair-pos "))
    expected = {"#" + hashlib.sha256(p.encode()).hexdigest() for p in (PASSWORDS["pos"], "o" * 40)}
    assert expected == {w for w in pos.split() if w.startswith("#")}
    assert "~mp:" not in text
    assert "%W~shop-7:lane:{*}:commands" in pos


@pytest.mark.parametrize(
    ("password", "why"),
    [("short", "at least 32"), ("has a space in it and is long enough", "printable ASCII")],
)
def test_the_script_refuses_weak_or_odd_passwords(tmp_path: Path, password: str, why: str) -> None:
    files = password_files(tmp_path / "passwords")
    files["ops"].write_text(password + "\n", encoding="ascii")
    out = tmp_path / "users.acl"
    done = render(out, files)
    assert (2, False) == (done.returncode, out.exists())
    assert why in done.stderr


def test_the_script_refuses_to_leave_a_role_without_a_password(tmp_path: Path) -> None:
    files = password_files(tmp_path / "passwords")
    del files["service"]
    done = render(tmp_path / "users.acl", files)
    assert 2 == done.returncode
    assert "render_users_acl: error:" in done.stderr
    assert "--service-password-file" in done.stderr


# ---------------------------------------------------------------------- multipair-pos


async def test_pos_adds_commands_and_reads_events_state_and_records_and_nothing_else(
    server: AclRedis, admin: aioredis.Redis
) -> None:
    iid = "8a5e2dcc-bfa0-469f-95d7-eec778b08453"
    await admin.hset(keys.profile(iid), mapping={"pos_id": "P1", "secrets": "sealed"})
    await admin.xadd(keys.events(iid), {"v": "1", "body": '{"type":"battery"}'})
    await admin.hset(keys.state(iid), mapping={"status": "paired_connected"})
    await admin.hset(keys.tx(iid, "order-1"), mapping={"state": "completed"})
    server.reset_denials()
    pos = await as_role(server, "pos")
    try:
        body = orjson.dumps({"type": "terminal_status", "command_id": "c-1"})
        assert await pos.xadd(keys.commands(iid), {"v": "1", "body": body})
        read: Any = await pos.xread({keys.events(iid): "0"}, count=10)
        assert [b'{"type":"battery"}'] == [f[b"body"] for _, f in read[0][1]]
        newest: Any = await pos.xrevrange(keys.events(iid), count=1)
        assert 1 == len(newest)
        assert b"paired_connected" == await pos.hget(keys.state(iid), "status")
        assert {b"state": b"completed"} == await pos.hgetall(keys.tx(iid, "order-1"))
        assert [] == server.denials("pos")

        event: dict[FieldT, EncodableT] = {
            "v": "1",
            "body": '{"type":"transaction_completed","result":"success"}',
        }
        control: dict[FieldT, EncodableT] = {"v": "1", "body": '{"action":"drain"}'}
        for denied in (
            lambda: pos.xadd(keys.events(iid), event),
            lambda: pos.hset(keys.profile(iid), "device_address", "ws://evil:8080"),
            lambda: pos.hget(keys.profile(iid), "secrets"),
            lambda: pos.hgetall(keys.profile(iid)),
            lambda: pos.xadd(keys.host_control(HOST), control),
            lambda: pos.hset(keys.hosts(), HOST, "{}"),
            lambda: pos.hset(keys.tx(iid, "order-1"), "state", "requested"),
            lambda: pos.set(keys.lease(iid), "1:evil"),
            lambda: pos.xread({keys.commands(iid): "0"}),
            lambda: pos.delete(keys.commands(iid)),
            lambda: pos.eval(
                "return redis.call('XADD', KEYS[1], '*', 'v', '1')", 1, keys.events(iid)
            ),
            lambda: pos.info("server"),
            lambda: pos.keys("*"),
        ):
            assert "no permissions" in await refused(denied)
        assert 1 == await admin.xlen(keys.events(iid)), "nothing was forged"
    finally:
        await pos.aclose()


async def test_pos_reads_the_pay_at_table_payments_and_their_indexes_and_writes_none(
    server: AclRedis, admin: aioredis.Redis
) -> None:
    iid = "8a5e2dcc-bfa0-469f-95d7-eec778b08453"
    entry = b"6:bill-1ref-1"
    await admin.hset(keys.pat_payments(iid), "ref-1", '{"bill_id":"bill-1"}')
    await admin.zadd(keys.pat_payment_times(iid), {entry: 1000})
    await admin.zadd(keys.pat_bills(iid), {entry: 0})
    server.reset_denials()
    pos = await as_role(server, "pos")
    try:
        assert (b'{"bill_id":"bill-1"}', [entry], [entry], 1000.0) == (
            await pos.hget(keys.pat_payments(iid), "ref-1"),
            await pos.zrangebylex(keys.pat_bills(iid), b"[6:bill-1", b"(6:bill-2"),
            await pos.zrange(keys.pat_payment_times(iid), 0, -1),
            await pos.zscore(keys.pat_payment_times(iid), entry),
        )
        assert [] == server.denials("pos")
        for denied in (
            lambda: pos.zadd(keys.pat_bills(iid), {b"x": 0}),
            lambda: pos.zrem(keys.pat_payment_times(iid), entry),
            lambda: pos.hset(keys.pat_payments(iid), "ref-2", "{}"),
            lambda: pos.zrange(keys.txs(iid), 0, -1),
        ):
            assert "no permissions" in await refused(denied)
    finally:
        await pos.aclose()


async def test_the_client_library_as_pos_runs_a_purchase_on_a_lane_run_as_service(
    server: AclRedis, admin: aioredis.Redis, rig: LaneRig
) -> None:
    server.reset_denials()
    pos = await as_role(server, "pos")
    try:
        await rig.process.start()
        await rig.wait_state(status="paired_connected")
        client = AsyncClient(pos, prefix=PREFIX)
        outcome = await client.purchase(rig.instance_id, APPROVE, pos_ref_id="acl-1", timeout=30)
        assert ("success", "acl-1") == (outcome.result, outcome.pos_ref_id)
        lookup = await client.get_transaction(rig.instance_id, "acl-1", timeout=30)
        assert lookup.found
        seen = [e.type async for _, e in client.events(rig.instance_id, since="0", follow=False)]
        assert "transaction_completed" in seen
        with pytest.raises(LaneNotFound):
            await client.send(
                "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d", bs.TerminalStatus(command_id="c-x")
            )
        record = await pos.hgetall(keys.tx(rig.instance_id, "acl-1"))
        assert b"completed" == record[b"state"]
        # Neither the POS library nor the lane and its writes met a denial.
        assert [] == server.denials()
        # Ops paths of the library are not the POS role's.
        assert "no permissions" in await refused(
            lambda: client.send_control(HOST, "restart", rig.instance_id)
        )
        assert "no permissions" in await refused(lambda: client.get_lane(rig.instance_id))
    finally:
        await pos.aclose()


# ---------------------------------------------------------------------- ops and service


async def test_ops_cli_administers_lanes_that_a_supervisor_runs_as_service(
    server: AclRedis, fleet: Fleet
) -> None:
    paired = await fleet.add_lane(0)
    cli = ops_cli(server)
    server.reset_denials()
    supervisor = fleet.supervisor(HOST)
    await supervisor.start()
    pid = await paired.running()

    added = await cli.run(
        *("lane", "add", "--pos-id", "OPS1", "--serial", "OPS-0001"),
        *("--address", "ws://127.0.0.1:9"),
    )
    assert 0 == added.code, added
    new_id = added.json()["instance_id"]
    await poll_until(
        lambda: fleet.redis.hget(keys.state(new_id), "heartbeat_at"), "the added lane running"
    )
    status = await cli.run("status")
    assert 0 == status.code, status
    rows = {row["instance_id"]: row for row in status.json()["lanes"]}
    assert (HOST, HOST) == (rows[paired.instance_id]["owner"], rows[new_id]["owner"])
    hosts = await cli.run("hosts")
    assert [HOST] == [h["host_id"] for h in hosts.json()["hosts"]], hosts

    mark = await paired.mark()
    restarted = await cli.run("lane", "restart", paired.instance_id)
    assert (0, HOST) == (restarted.code, restarted.json()["owner"]), restarted
    await paired.next_event("lane_stopped", after=mark, reason="restart")
    await paired.running(after=mark, previous=pid)

    mark = await paired.mark()
    assert 0 == (await cli.run("lane", "stop", paired.instance_id)).code
    await paired.next_event("lane_stopped", after=mark, reason="disabled")
    assert 0 == (await cli.run("lane", "start", paired.instance_id)).code
    await paired.running(after=mark)

    # A POS purchase through the lane the supervisor runs; then `ACL LOAD` (a
    # password rotation) drops every connection, and the supervisor, the lane
    # and the POS client reconnect with their URLs and carry on.
    pos = await as_role(server, "pos")
    try:
        client = AsyncClient(pos, prefix=PREFIX)
        outcome = await client.purchase(paired.instance_id, APPROVE, pos_ref_id="ops-1", timeout=30)
        assert "success" == outcome.result
        served = await service_connections(fleet.redis)
        assert served, "the supervisor and its lane are connected as multipair-service"
        await acl_load(fleet.redis)
        beat = await fleet.redis.hget(keys.state(paired.instance_id), "heartbeat_at")

        async def beats_again() -> bool:
            now = await fleet.redis.hget(keys.state(paired.instance_id), "heartbeat_at")
            return now != beat

        await poll_until(beats_again, "a lane heartbeat after ACL LOAD")
        assert set() == served & await service_connections(fleet.redis), "all reconnected"
        # The POS client's pooled connections were dropped too: a call on one
        # fails once (RetryLater), the next connects afresh.
        await pos.connection_pool.disconnect()
        outcome = await client.purchase(paired.instance_id, APPROVE, pos_ref_id="ops-2", timeout=30)
        assert "success" == outcome.result
    finally:
        await pos.aclose()

    removed = await cli.run("lane", "remove", new_id, "--yes", "--keep-pairing")
    assert 0 == removed.code, removed
    assert (0, False) == (
        await fleet.redis.exists(keys.profile(new_id)),
        await fleet.redis.sismember(keys.lanes(), new_id),
    )
    for action in ("drain", "accept"):
        # The only host: a drain would take its lanes down, so it needs --force.
        force = ("--force",) if action == "drain" else ()
        done = await cli.run("host", action, HOST, *force)
        assert 0 == done.code, done

    assert [] == server.denials(), "ops, service and pos did their work without a denial"
    asked = [e for e in supervisor.log_events() if e.get("event") == "control message"]
    # (`lane start` of a lane no host holds only sets the profile: no message.)
    assert {"restart", "stop", "drain", "accept"} <= {e["action"] for e in asked}
    assert all("@" in (e.get("requested_by") or "") for e in asked), asked

    ops = await as_role(server, "ops")
    try:
        event: dict[FieldT, EncodableT] = {
            "v": "1",
            "body": '{"type":"transaction_completed","result":"success"}',
        }
        iid = paired.instance_id
        for denied in (
            lambda: ops.xadd(keys.events(iid), event),
            lambda: ops.hset(keys.tx(iid, "ops-1"), "result", "failed"),
            lambda: ops.hset(keys.state(iid), "status", "unpaired"),
            lambda: ops.set(keys.lease(iid), "99:evil"),
            lambda: ops.hget(keys.command_replies(iid), "c-1"),
            lambda: ops.config_get("*"),
            lambda: ops.flushall(),
        ):
            assert "no permissions" in await refused(denied)
        assert b"success" == await fleet.redis.hget(keys.tx(iid, "ops-1"), "result")
    finally:
        await ops.aclose()


async def test_a_malformed_control_message_is_refused_logged_acked_and_the_supervisor_goes_on(
    server: AclRedis, fleet: Fleet
) -> None:
    lane = await fleet.add_lane(0)
    supervisor = fleet.supervisor(HOST)
    await supervisor.start()
    pid = await lane.running()
    stream = keys.host_control(HOST)
    bad: list[dict[FieldT, EncodableT]] = [
        {"v": "1", "body": "{"},
        {
            "v": "1",
            "body": orjson.dumps(
                {"action": "restart", "instance_id": lane.instance_id, "requested_by": "mallory@x"}
                | {"force": True}
            ),
        },
        {"v": "1", "body": orjson.dumps({"action": "drain", "request_id": "r" * MAX_BODY_BYTES})},
        {"v": "1", "body": orjson.dumps({"action": 7})},
        {"v": "1", "body": orjson.dumps({"action": "reboot"})},
        {"v": "1", "body": '{"action":"drain"}', "extra": "x"},
        {"v": "1", "body": orjson.dumps({"action": "stop", "instance_id": "nope"})},
    ]
    ops = await as_role(server, "ops")
    try:
        for fields in bad:
            await ops.xadd(stream, fields)
        mark = await lane.mark()
        good = {"action": "restart", "instance_id": lane.instance_id, "requested_by": "ana@ops-1"}
        await ops.xadd(stream, {"v": "1", "body": orjson.dumps(good)})
    finally:
        await ops.aclose()
    await lane.next_event("lane_stopped", after=mark, reason="restart")
    await lane.running(after=mark, previous=pid)

    log = supervisor.log_events()
    refusals = [e for e in log if e.get("event") == "bad control message: refused"]
    assert [
        "not_json",
        "unknown_field",
        "oversize",
        "wrong_type",
        "unknown_type",
        "bad_entry",
        "invalid_instance_id",
    ] == [e["reason"] for e in refusals]
    assert "mallory@x" == refusals[1]["requested_by"]
    [taken] = [e for e in log if e.get("event") == "control message"]
    assert ("restart", "ana@ops-1") == (taken["action"], taken["requested_by"])
    pending: Any = await fleet.redis.xpending(stream, CONTROL_GROUP)
    assert 0 == pending["pending"], "every message, malformed or not, is acknowledged"
    assert supervisor.proc is not None
    assert None is supervisor.proc.returncode, "the supervisor carried on"
    assert [] == server.denials()


async def test_a_role_rendered_with_two_passwords_takes_both_until_the_old_one_is_dropped(
    server: AclRedis, admin: aioredis.Redis, tmp_path: Path
) -> None:
    files = password_files(tmp_path / "rotate")
    new = tmp_path / "rotate" / "redis-pos-new.password"
    new.write_text("n" * 64 + "\n", encoding="ascii")
    both = render(server.acl_file, {**files, "pos": [new, files["pos"]]})
    assert 0 == both.returncode, both.stderr
    await acl_load(admin)
    url_new = server.url("pos").replace(PASSWORDS["pos"], "n" * 64)
    for url in (server.url("pos"), url_new):
        client = aioredis.Redis.from_url(url)
        assert await client.ping()
        await client.aclose()

    only_new = render(server.acl_file, {**files, "pos": new})
    assert 0 == only_new.returncode, only_new.stderr
    await acl_load(admin)
    old = aioredis.Redis.from_url(server.url("pos"))
    try:
        with pytest.raises(redis.AuthenticationError):
            await old.ping()
    finally:
        await old.aclose()
    fresh = aioredis.Redis.from_url(url_new)
    assert await fresh.ping()
    await fresh.aclose()


async def test_a_lane_rides_out_acl_load_which_drops_every_connection(
    admin: aioredis.Redis, rig: LaneRig
) -> None:
    await rig.process.start()
    state = await rig.wait_state(status="paired_connected")
    await acl_load(admin)

    async def beats_again() -> bool:
        assert rig.process.proc is not None
        exited = rig.process.proc.returncode
        assert None is exited, f"the lane exited {exited}: {rig.process.logs()[-1500:]}"
        now: Any = await admin.hget(keys.state(rig.instance_id), "heartbeat_at")
        return now is not None and now.decode() != state["heartbeat_at"]

    await poll_until(beats_again, "a lane heartbeat after ACL LOAD")
