"""deploy/redis.conf: a real redis-server starts with it, and multipair works under its ACL roles.

The server runs the shipped file with only its port, data folder, log file
and ``aclfile`` (deploy/redis/users.acl rendered with test passwords by the
shipped script) overridden on the command line (tests/deploy/redis_acl.py).
``multipair lane add`` runs as the ops role and a real ``multipair
supervise`` runs a lane as the service role; Redis' ``ACL LOG`` must then
hold no denied command or key. tests/deploy/test_acl_roles.py checks what
each role may not do.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from multipair import broker_schema as bs
from multipair.store.secrets_box import MasterKey
from tests.deploy.redis_acl import CONF, AclRedis, acl_redis
from tests.poll import poll_until_sync

BIN = Path(sys.executable).parent


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AclRedis]:
    """A redis-server on deploy/redis.conf and the rendered users.acl."""
    with acl_redis(tmp_path / "redis") as running:
        yield running


def test_it_loads_its_users_from_the_acl_file_and_has_no_inline_user() -> None:
    text = CONF.read_text(encoding="utf-8")
    assert ["/etc/redis/users.acl"] == re.findall(r"^aclfile (\S+)$", text, re.M)
    assert [] == re.findall(r"^user ", text, re.M), "users live in the ACL file only"


def test_the_default_user_is_off(server: AclRedis) -> None:
    anonymous = redis.Redis(port=server.port)
    try:
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
    finally:
        anonymous.close()


def test_it_is_durable_and_never_evicts(server: AclRedis) -> None:
    client = server.admin(decode_responses=True)
    try:
        config: dict[str, Any] = {
            name: client.config_get(name)[name]
            for name in (
                "appendonly",
                "appendfsync",
                "aof-use-rdb-preamble",
                "no-appendfsync-on-rewrite",
                "maxmemory-policy",
                "maxmemory",
                "protected-mode",
                "save",
            )
        }
    finally:
        client.close()
    assert {
        "appendonly": "yes",
        "appendfsync": "everysec",
        "aof-use-rdb-preamble": "yes",
        "no-appendfsync-on-rewrite": "no",
        "maxmemory-policy": "noeviction",
        "protected-mode": "yes",
    } == {k: v for k, v in config.items() if k not in ("maxmemory", "save")}
    assert int(config["maxmemory"]) > 0, "a limit, so Redis refuses writes before the OOM killer"
    assert config["save"], "RDB snapshots on, for backups"


def test_multipair_runs_as_the_ops_and_service_roles_without_a_denial(
    server: AclRedis, tmp_path: Path
) -> None:
    admin = server.admin()
    try:
        server.reset_denials()
        key_file = tmp_path / "master.key"
        key_file.write_text(MasterKey.generate().to_base64() + "\n", encoding="ascii")
        key_file.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIPAIR_")}
        env.update(MULTIPAIR_LOG_FORMAT="json")
        added = subprocess.run(
            [
                *(str(BIN / "multipair"), "--json", "lane", "add", "--pos-id", "ACL1"),
                *("--serial", "ACL-0001", "--address", "ws://127.0.0.1:9"),
            ],
            env={**env, "MULTIPAIR_REDIS_URL": server.url("ops")},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert 0 == added.returncode, added.stderr
        instance_id = orjson.loads(added.stdout)["instance_id"]
        keys = bs.Keys()

        with (tmp_path / "supervise.log").open("wb") as stderr:
            supervise = subprocess.Popen(
                [
                    *(str(BIN / "multipair"), "supervise", "--host-id", "acl-host"),
                    *("--master-key-file", str(key_file)),
                ],
                env={**env, "MULTIPAIR_REDIS_URL": server.url("service")},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            poll_until_sync(lambda: admin.hget(keys.hosts(), "acl-host"), "the host heartbeat", 30)
            poll_until_sync(
                lambda: admin.hget(keys.state(instance_id), "heartbeat_at"),
                "the lane's own heartbeat",
                30,
            )
            supervise.send_signal(signal.SIGTERM)
            assert 0 == supervise.wait(timeout=60)
        finally:
            if supervise.poll() is None:
                supervise.kill()
                supervise.wait()
        log = (tmp_path / "supervise.log").read_text(encoding="utf-8")
        assert None is admin.get(keys.lease(instance_id)), log
        assert [] == server.denials()
    finally:
        admin.close()
