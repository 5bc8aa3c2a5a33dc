"""deploy/systemd/multipair-supervise.service: stops as the drain needs; systemd accepts it."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from multipair.supervisor.policy import RestartPolicy

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "multipair-supervise.service"


def service() -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment, method-assign]  # keys are case-sensitive
    parser.read(UNIT, encoding="utf-8")
    return dict(parser["Service"])


def seconds(value: str) -> float:
    """A systemd time span as this unit writes it: ``45`` or ``45s``."""
    return float(value.removesuffix("s"))


def test_it_runs_multipair_supervise_as_its_own_user_with_the_env_file() -> None:
    unit = service()
    assert "simple" == unit["Type"]
    argv = unit["ExecStart"].split()
    assert ("multipair", "supervise") == (Path(argv[0]).name, argv[1])
    assert Path(argv[0]).is_absolute()
    assert "multipair" == unit["User"]
    assert "/etc/multipair/multipair.env" == unit["EnvironmentFile"]
    assert "always" == unit["Restart"]


def test_sigterm_reaches_only_the_supervisor_and_the_stop_waits_out_the_drain() -> None:
    unit = service()
    # mixed: SIGTERM to the supervisor alone (a lane that got SIGTERM from systemd
    # too would take the supervisor's own SIGTERM as "stop now"), SIGKILL to all.
    assert "mixed" == unit["KillMode"]
    assert "SIGTERM" == unit["KillSignal"]
    policy = RestartPolicy()
    assert seconds(unit["TimeoutStopSec"]) > policy.stop_timeout_s > policy.drain_timeout_s


def test_it_is_hardened() -> None:
    unit = service()
    assert ("true", "strict", "true") == (
        unit["NoNewPrivileges"],
        unit["ProtectSystem"],
        unit["PrivateTmp"],
    )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify_finds_nothing_to_say(tmp_path: Path) -> None:
    # verify insists the ExecStart binary exists: point it at this virtualenv's.
    text = UNIT.read_text(encoding="utf-8").replace(
        "/opt/multipair/venv/bin/multipair", str(Path(sys.executable).parent / "multipair")
    )
    copy = tmp_path / UNIT.name
    copy.write_text(text, encoding="utf-8")
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    about_the_unit = [line for line in done.stderr.splitlines() if UNIT.name in line]
    assert (0, []) == (done.returncode, about_the_unit), done.stderr
