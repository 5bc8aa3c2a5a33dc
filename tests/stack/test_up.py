"""``multipair up``: the embedded default starts, pairs, shows status, stops, and is reused."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from tests.cli.helpers import MODULE, start

READY_TIMEOUT_S = 60.0


async def _run_until_ready(data_dir: Path, *, lanes: int) -> tuple[int, str]:
    proc = await start(
        *("up", "--simulate", str(lanes), "--data-dir", str(data_dir), "--interval", "0.3"),
        stderr=asyncio.subprocess.STDOUT,
        command=MODULE,
    )
    assert proc.stdout is not None
    output: list[str] = []
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            while line := (await proc.stdout.readline()).decode():  # to the end of stdout
                output.append(line)
                if "".join(output[-(lanes + 3) :]).count("paired_connected") >= lanes:
                    break
    except TimeoutError:
        raise AssertionError("multipair up never showed every lane paired_connected") from None
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(proc.communicate(), 60)
        output.append(rest.decode())
    return await proc.wait(), "".join(output)


async def test_up_pairs_simulated_lanes_and_reuses_them_on_the_next_run(tmp_path: Path) -> None:
    first_code, first = await _run_until_ready(tmp_path / "data", lanes=2)
    assert 0 == first_code, first
    assert "pairing 2 lanes" in first
    codes = [line for line in first.splitlines() if "confirmation code" in line]
    assert 2 == len(codes), codes  # one line per lane, not one per pairing event
    assert "stopped" in first
    second_code, second = await _run_until_ready(tmp_path / "data", lanes=2)
    assert 0 == second_code, second
    assert "2 lanes already paired" in second  # the data folder kept the pairings
    assert (tmp_path / "data" / "redis" / "appendonlydir").exists() or any(
        p.name.startswith("appendonly") for p in (tmp_path / "data" / "redis").iterdir()
    )


async def test_up_json_prints_json_lines_and_no_tables(tmp_path: Path) -> None:
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("wb") as stderr:
        proc = await start(
            *("--json", "up", "--simulate", "1", "--data-dir", str(tmp_path / "data")),
            *("--interval", "0.3"),
            stderr=stderr,
            command=MODULE,
        )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, f"stdout closed early: {lines}; stderr: {stderr_path.read_text()}"
                lines.append(line)
                doc = json.loads(line)  # every line is one JSON object
                if doc["event"] == "status" and [lane["status"] for lane in doc["lanes"]] == [
                    "paired_connected"
                ]:
                    break
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(proc.communicate(), 60)
    lines += rest.decode().splitlines(keepends=True)
    assert 0 == await proc.wait(), stderr_path.read_text()
    docs = [json.loads(line) for line in lines if line.strip()]
    events = [d["event"] for d in docs]
    assert {"progress", "running", "status"} <= set(events), events
    assert ["stopping", "stopped"] == events[-2:], events
    assert all(d["at"].endswith("Z") for d in docs)
    running = next(d for d in docs if d["event"] == "running")
    assert running["redis_url"].startswith("redis://"), running
    status = next(d for d in docs if d["event"] == "status")
    (lane,) = status["lanes"]
    assert ("SIM-0001", True) == (lane["serial_number"], lane["enabled"])
    assert not any(line.startswith(("ID ", "multipair up:")) for line in lines)
