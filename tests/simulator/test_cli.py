"""``multipair simulate`` as a user runs it: a real subprocess, stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from multipair.cli import build_parser, main
from multipair.simulator.rules import OUTCOME_RULES
from tests.simulator.helpers import RawPos

STARTUP_TIMEOUT = 60.0


async def test_simulate_writes_a_manifest_serves_and_exits_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    manifest_path = tmp_path / "sim" / "manifest.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "multipair.cli",
        "simulate",
        "--terminals",
        "2",
        "--manifest",
        str(manifest_path),
        "--state-dir",
        str(tmp_path / "state"),
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        # The JSON line is printed after the manifest is written: wait on it, not on a clock.
        line = await asyncio.wait_for(proc.stdout.readline(), STARTUP_TIMEOUT)
        printed = json.loads(line)
        manifest = json.loads(manifest_path.read_text())
        assert printed == manifest
        assert ["SIM-0001", "SIM-0002"] == [t["serial"] for t in manifest["terminals"]]
        assert manifest["device_address_url"].startswith("http://127.0.0.1:")
        first = manifest["terminals"][0]
        assert f"{manifest['control_url']}/terminals/SIM-0001" == first["control_url"]
        async with await RawPos.connect(first["ws_url"]) as pos:
            await pos.pair()
            assert {"success": True} == (await pos.expect("pair_response")).data
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), STARTUP_TIMEOUT)
    assert 0 == proc.returncode, stderr.decode()
    log_events = [json.loads(line)["event"] for line in stderr.decode().splitlines() if line]
    assert "simulator.started" in log_events
    assert "simulator.stopped" in log_events
    assert (tmp_path / "state" / "SIM-0001.json").exists()


def test_simulate_help_documents_the_outcome_rules(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["simulate", "--help"])
    assert 0 == exited.value.code
    text = capsys.readouterr().out
    for cents, behaviour in OUTCOME_RULES.items():
        assert f".{cents:02d}  {behaviour.value}" in text


def test_main_without_a_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert 2 == main([])
    assert "simulate" in capsys.readouterr().out


def test_bad_pairing_mode_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert 2 == main(["simulate", "--pairing", "sometimes"])
    assert "pairing mode" in capsys.readouterr().err
