"""``python -m multipair.supervisor`` / ``multipair supervise``: options and one-line errors."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import pytest

from multipair.supervisor.cli import add_supervise_parser, build_parser, run_supervise
from tests.supervisor.helpers import Fleet


async def supervise(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "multipair.supervisor",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


def test_the_subcommand_registers_its_options_and_handler() -> None:
    parser = argparse.ArgumentParser(prog="multipair")
    add_supervise_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["supervise", "--host-id", "store-7", "--capacity", "12"])
    assert ("supervise", "store-7", 12, run_supervise) == (
        args.command,
        args.host_id,
        args.capacity,
        args.handler,
    )


@pytest.mark.parametrize("capacity", ["-1", "many"])
def test_a_bad_capacity_is_a_usage_error(capacity: str) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--capacity", capacity])
    assert 2 == exited.value.code


async def test_without_a_master_key_it_says_so_in_one_line_and_exits_2(fleet: Fleet) -> None:
    env = fleet.env()
    del env["MULTIPAIR_MASTER_KEY"]
    code, err = await supervise(env, "--host-id", "h1")
    assert 2 == code
    assert [True] == ["no master key" in line for line in err.splitlines()]


async def test_an_unreachable_redis_is_one_line_and_exit_2(fleet: Fleet) -> None:
    code, err = await supervise(fleet.env(), "--redis-url", "redis://127.0.0.1:1/0")
    assert 2 == code
    assert 1 == len(err.splitlines())
    assert err.startswith("multipair supervise: Redis unreachable at redis://127.0.0.1:1/0")


async def test_a_bad_host_id_is_refused(fleet: Fleet) -> None:
    code, err = await supervise(fleet.env(), "--host-id", "no spaces")
    assert 2 == code
    assert "MULTIPAIR_HOST_ID" in err


async def test_a_master_key_file_others_may_read_is_refused_with_the_chmod_that_fixes_it(
    fleet: Fleet, tmp_path: Path
) -> None:
    key_file = tmp_path / "master.key"
    key_file.write_text(fleet.master.to_base64() + "\n")
    key_file.chmod(0o640)
    env = fleet.env()
    del env["MULTIPAIR_MASTER_KEY"]
    env["MULTIPAIR_MASTER_KEY_FILE"] = str(key_file)
    code, err = await supervise(env, "--host-id", "h1")
    assert 2 == code
    [line] = err.splitlines()
    assert line.startswith("multipair supervise: master key file"), line
    assert line.endswith(f"chmod 600 {key_file}"), line
