"""``multipair up``: the embedded default starts, pairs, shows status, stops, and is reused."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

READY_TIMEOUT_S = 60.0


async def _run_until_ready(data_dir: Path, *, lanes: int) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIPAIR_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "multipair.cli",
        "up",
        "--simulate",
        str(lanes),
        "--data-dir",
        str(data_dir),
        "--interval",
        "0.3",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    output: list[str] = []
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                line = (await proc.stdout.readline()).decode()
            if not line:
                break
            output.append(line)
            if "".join(output[-(lanes + 3) :]).count("paired_connected") >= lanes:
                break
        else:
            raise AssertionError("multipair up never showed every lane paired_connected")
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(proc.communicate(), 60)
        output.append(rest.decode())
    return await proc.wait(), "".join(output)


async def test_up_pairs_simulated_lanes_and_reuses_them_on_the_next_run(tmp_path: Path) -> None:
    first_code, first = await _run_until_ready(tmp_path / "data", lanes=2)
    assert 0 == first_code, first
    assert "pairing 2 lanes" in first
    assert "stopped" in first
    second_code, second = await _run_until_ready(tmp_path / "data", lanes=2)
    assert 0 == second_code, second
    assert "2 lanes already paired" in second  # the data folder kept the pairings
    assert (tmp_path / "data" / "redis" / "appendonlydir").exists() or any(
        p.name.startswith("appendonly") for p in (tmp_path / "data" / "redis").iterdir()
    )
