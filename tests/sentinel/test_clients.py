"""Every kind of client reaches the primary through the Sentinels: the connection helpers,
the client library, the CLI and RQ (a real deployment on loopback, passwords on both levels)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Queue
from rq.job import Job

from multipair.client import AsyncClient, Client
from multipair.config import Settings
from multipair.jobs.config import JobSettings
from multipair.jobs.queueing import RQRedis, rq_connection
from multipair.redis_conn import (
    connect,
    connect_blocking,
    connect_sync,
    is_cluster,
    parse_sentinel_url,
    sentinel_url,
)
from tests.cli.helpers import Cli, clean_env, run, script
from tests.sentinel.conftest import DATA_PASSWORD, SENTINEL_PASSWORD
from tests.sentinel_servers import SentinelDeployment


def _env_form(deployment: SentinelDeployment) -> dict[str, str]:
    return {
        "MULTIPAIR_REDIS_SENTINELS": ",".join(f"{h}:{p}" for h, p in deployment.sentinel_addresses),
        "MULTIPAIR_REDIS_MASTER_NAME": deployment.master_name,
        "MULTIPAIR_REDIS_PASSWORD": DATA_PASSWORD,
        "MULTIPAIR_REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
    }


async def test_the_url_form_reaches_the_primary_and_is_no_cluster(
    sentinels: SentinelDeployment,
) -> None:
    client = await connect(sentinels.url, max_connections=4)
    try:
        assert not is_cluster(client)
        key = f"k-{uuid.uuid4().hex}"
        await client.set(key, "v")
        primary = redis.Redis.from_url(sentinels.primary().url)
        try:
            assert b"v" == primary.get(key)  # written on the primary itself
            assert "master" == primary.info("replication")["role"]
        finally:
            primary.close()
    finally:
        await client.aclose()


async def test_the_env_var_form_reaches_the_same_primary(sentinels: SentinelDeployment) -> None:
    settings = Settings.from_env(_env_form(sentinels))
    assert settings.redis_url is not None
    client = await connect(settings.redis_url)
    blocking = connect_blocking(settings.redis_url)
    sync = connect_sync(settings.redis_url)
    try:
        key = f"k-{uuid.uuid4().hex}"
        await client.set(key, "1")
        assert b"1" == await blocking.get(key)
        assert b"1" == sync.get(key)
    finally:
        await client.aclose()
        await blocking.aclose()
        sync.close()


async def test_a_wrong_sentinel_password_fails_at_connect_without_showing_it(
    sentinels: SentinelDeployment,
) -> None:
    parsed = parse_sentinel_url(sentinels.url)
    url = sentinel_url(
        parsed.sentinels,
        parsed.master_name,
        password=DATA_PASSWORD,
        sentinel_password="wrong-sentinel-pw",
    )
    with pytest.raises(RedisConnectionError) as caught:
        await connect(url)
    assert "No master found for 'mymaster'" in str(caught.value)
    assert "wrong-sentinel-pw" not in str(caught.value)


async def test_a_wrong_data_password_is_an_authentication_error(
    sentinels: SentinelDeployment,
) -> None:
    parsed = parse_sentinel_url(sentinels.url)
    url = sentinel_url(
        parsed.sentinels,
        parsed.master_name,
        password="wrong-data-pw",
        sentinel_password=SENTINEL_PASSWORD,
    )
    client = await connect(url)
    try:
        with pytest.raises(AuthenticationError):
            await client.ping()
    finally:
        await client.aclose()


async def test_the_client_library_works_through_sentinels(sentinels: SentinelDeployment) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    settings = Settings.from_env(_env_form(sentinels), prefix=prefix)
    client = await AsyncClient.connect(settings)
    try:
        added = await client.add_lane(
            pos_id="POS1", serial_number="123-456-789", device_address="ws://127.0.0.1:1"
        )
        assert [added.instance_id] == [p.instance_id for p in await client.list_lanes()]
    finally:
        await client.aclose()

    def blocking() -> list[str]:
        with Client(sentinels.url, prefix=prefix) as sync_client:
            return [p.instance_id for p in sync_client.list_lanes()]

    assert [added.instance_id] == await asyncio.to_thread(blocking)


async def test_the_cli_works_through_sentinels_in_both_forms(
    sentinels: SentinelDeployment,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    by_url = await Cli(sentinels.url, prefix).run("status")
    assert 0 == by_url.code, by_url
    assert [] == by_url.json()["lanes"]
    by_env = await run(
        [*script(), "--prefix", prefix, "--json", "status"],
        env=clean_env(**_env_form(sentinels)),
    )
    assert 0 == by_env.code, by_env
    assert [] == by_env.json()["lanes"]


async def test_rq_queues_behind_sentinels_and_its_worker_runs_the_job(
    sentinels: SentinelDeployment, tmp_path: Path
) -> None:
    queue_name = f"q{uuid.uuid4().hex[:8]}"
    connection = rq_connection(
        Settings.from_env(_env_form(sentinels)), JobSettings.from_env({"MULTIPAIR_RQ_QUEUE": "x"})
    )
    try:
        job = Queue(queue_name, connection=connection).enqueue("os.getcwd")
        rq = Path(sys.executable).parent / "rq"
        # Without --with-scheduler: after the other tests of this file, a burst worker with
        # the scheduler sometimes never exits, with a plain redis:// URL just the same.
        worker = await asyncio.to_thread(
            subprocess.run,
            [str(rq), "worker", "--burst", queue_name],
            env={
                **clean_env(),
                "RQ_REDIS_URL": sentinels.url,
                "RQ_CONNECTION_CLASS": "multipair.jobs.queueing.RQRedis",
            },
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert 0 == worker.returncode, worker.stderr[-2000:]
        done = Job.fetch(job.id, connection=connection)
        assert ("finished", os.getcwd()) == (done.get_status(), done.return_value())
    finally:
        connection.close()
    other = RQRedis.from_url(sentinels.primary().url)  # any other URL reads as before
    try:
        assert other.ping()
    finally:
        other.close()
