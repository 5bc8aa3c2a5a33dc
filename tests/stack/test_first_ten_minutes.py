"""The README's first steps, as a new user runs them (issue 14).

``multipair up --simulate 2`` with the default data folder, from a fresh
working folder (it crashed before: Redis changed into its relative ``--dir``
before opening its relative log file); then, in the same folder with no
``MULTIPAIR_*`` variable set, ``multipair status`` and ``multipair tx
purchase`` find its Redis through ``.multipair/env``. The Redis URL is in
the live table's header, and the next start keeps the same port and
password, so an exported URL stays right.
"""

from __future__ import annotations

import asyncio
import json
import signal
import stat
import sys
from pathlib import Path

from tests.cli.helpers import clean_env, script, start
from tests.stack.test_up_private import read_env_file

READY_TIMEOUT_S = 60.0


async def _cli(cwd: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *script(),
        *args,
        cwd=cwd,
        env=clean_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _up(cwd: Path, lanes: int) -> tuple[asyncio.subprocess.Process, list[str]]:
    """``multipair up --simulate N`` in ``cwd``, read until every lane is paired_connected."""
    proc = await start(
        *("up", "--simulate", str(lanes), "--interval", "0.3"),
        cwd=cwd,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, "".join(lines)
                lines.append(line)
                if "".join(lines[-(lanes + 2) :]).count("paired_connected") >= lanes:
                    return proc, lines
    except BaseException:
        proc.kill()
        await proc.wait()
        raise


async def _stop(proc: asyncio.subprocess.Process) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert 0 == proc.returncode, out.decode()
    return out.decode()


async def test_up_with_the_default_folder_then_status_and_a_purchase_in_the_same_folder(
    tmp_path: Path,
) -> None:
    proc, lines = await _up(tmp_path, 2)
    try:
        shown = "".join(lines)
        assert "Traceback" not in shown
        header = next(line for line in lines if "multipair up  Redis redis://" in line)
        assert "redis://default:***@127.0.0.1:" in header, header
        assert "other terminals here: just run `multipair status`" in header, header

        data = tmp_path / ".multipair"
        env_file = data / "env"
        assert 0o600 == stat.S_IMODE(env_file.stat().st_mode)
        assert "*" in (data / ".gitignore").read_text().split()

        code, out, err = await _cli(tmp_path, "--json", "status")
        assert 0 == code, err
        assert err.startswith("multipair: using .multipair/env (the Redis of `multipair up`")
        assert 1 == len(err.splitlines()), err  # said once
        doc = json.loads(out)
        assert ["SIM-0001", "SIM-0002"] == sorted(lane["serial_number"] for lane in doc["lanes"])
        assert {"paired_connected": 2} == doc["summary"]["by_status"]
        iid = doc["lanes"][0]["instance_id"]

        code, out, err = await _cli(tmp_path, "tx", "purchase", iid[:8], "--amount", "12.50")
        assert 0 == code, (out, err)
        assert any(line.startswith("APPROVED  purchase $12.50") for line in out.splitlines()), out
        url = read_env_file(env_file)["MULTIPAIR_REDIS_URL"]
    finally:
        await _stop(proc)

    assert env_file.exists()  # kept while the folder exists
    code, _, err = await _cli(tmp_path, "status")
    assert 2 == code
    assert "is `multipair up` running in this folder?" in err, err

    # The next start: same port, same password, so an exported URL stays right.
    proc, lines = await _up(tmp_path, 2)
    try:
        assert url == read_env_file(env_file)["MULTIPAIR_REDIS_URL"]
        assert "2 lanes already paired" in "".join(lines)
    finally:
        await _stop(proc)


async def test_a_folder_elsewhere_names_its_env_file_in_the_header(tmp_path: Path) -> None:
    data = tmp_path / "elsewhere"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "multipair.cli", "up", "--data-dir", "elsewhere", "--interval", "0.3"),
        cwd=tmp_path,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line
                if "multipair up  Redis" in line:
                    break
        assert f"set -a; . {data / 'env'}; set +a" in line, line
    finally:
        await _stop(proc)
