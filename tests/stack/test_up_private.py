"""``multipair up`` keeps its Redis and its data folder to the user who runs it (issue 12, item 3):
the embedded Redis wants a password and listens on loopback only, the folder holds 0700
folders and 0600 files, and another shell reaches it through ``<data>/env`` (issue 14: kept
while the folder exists, with the same port and password on the next start)."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, ResponseError

READY_TIMEOUT_S = 60.0


def read_env_file(path: Path) -> dict[str, str]:
    entries = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            entries[name] = shlex.split(value)[0]
    return entries


def modes(folder: Path) -> dict[str, int]:
    """Every folder and file under ``folder`` (itself included) with its permission bits."""
    found = {".": stat.S_IMODE(folder.stat().st_mode)}
    for path in folder.rglob("*"):
        found[str(path.relative_to(folder))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def cmdline_of(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def present(path: Path) -> bool:
    return path.exists()


def wrong_modes(folder: Path) -> dict[str, str]:
    return {
        name: f"{mode:04o}"
        for name, mode in modes(folder).items()
        if mode != (0o700 if (folder / name).is_dir() else 0o600)
    }


async def test_up_locks_its_redis_and_keeps_its_folder_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIPAIR_")}
    with (tmp_path / "stderr.log").open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "multipair.cli", "--json", "up", "--simulate", "1"),
            *("--data-dir", str(data), "--interval", "0.3"),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    assert proc.stdout is not None
    docs: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, f"stdout closed early: {docs}; {(tmp_path / 'stderr.log').read_text()}"
                docs.append(json.loads(line))
                lanes = docs[-1].get("lanes") or []
                if [lane["status"] for lane in lanes] == ["paired_connected"]:
                    break
        running = next(d for d in docs if d["event"] == "running")
        env_file = Path(running["env_file"])
        settings = read_env_file(env_file)
        url = settings["MULTIPAIR_REDIS_URL"]
        password = url.split("@", 1)[0].rsplit(":", 1)[1]
        assert len(password) >= 32
        # Screens and JSON show the URL without its password.
        assert password not in json.dumps(docs)
        assert running["redis_url"].startswith("redis://default:***@127.0.0.1:"), running

        locked = aioredis.Redis.from_url(url.replace(f"default:{password}@", ""))
        with pytest.raises((AuthenticationError, ResponseError)) as refused:
            await locked.ping()
        await locked.aclose()
        assert "auth" in str(refused.value).lower(), refused.value
        client = aioredis.Redis.from_url(url, decode_responses=True)
        try:
            assert True is await client.ping()
            assert {"bind": "127.0.0.1"} == await client.config_get("bind")
            server_pid = (await client.info("server"))["process_id"]
        finally:
            await client.aclose()
        assert password.encode() not in cmdline_of(
            server_pid
        )  # `ps` shows every user the command line

        # The CLI pointed at the data folder (its env file) reaches the same lanes.
        cli_env = {**env, **settings}
        cli = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "multipair.cli", "--json", "status"),
            env=cli_env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(cli.communicate(), 60)
        assert 0 == cli.returncode, err.decode()
        assert ["SIM-0001"] == [lane["serial_number"] for lane in json.loads(out)["lanes"]]

        assert {} == wrong_modes(data)
        for part in (
            "master.key",
            "env",
            ".gitignore",
            "redis/auth.conf",
            "redis/embedded.json",
            "logs/supervisor.log",
        ):
            assert (data / part).is_file(), part
        assert any((data / "redis").rglob("*.aof")) or (data / "redis" / "appendonly.aof").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.communicate(), 60)
    assert 0 == await proc.wait()
    assert present(env_file)  # kept: the next start reuses its port and password
    assert {} == wrong_modes(data)


async def test_a_folder_left_open_by_an_older_version_is_tightened(tmp_path: Path) -> None:
    from multipair.stack import Stack

    data = tmp_path / "data"
    (data / "logs").mkdir(parents=True)
    (data / "logs" / "supervisor.log").write_text("old\n")
    (data / "sim").mkdir()
    (data / "sim" / "pairings.json").write_text("{}")
    for path in (data, data / "logs", data / "sim"):
        path.chmod(0o755)
    for path in (data / "logs" / "supervisor.log", data / "sim" / "pairings.json"):
        path.chmod(0o644)
    Stack(data)._private_data_dir()
    assert {} == wrong_modes(data)
