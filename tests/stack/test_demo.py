"""``make demo`` keeps working: the scripted demo exits 0 only if every outcome was scripted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_the_scripted_demo_passes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIPAIR_")}
    done = subprocess.run(
        [sys.executable, "-m", "multipair.demo", "--data-dir", str(tmp_path / "demo")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert 0 == done.returncode, done.stdout + done.stderr
    assert "every outcome was as scripted" in done.stdout
    assert "kill -9" in done.stdout
    codes = [line for line in done.stdout.splitlines() if "confirmation code" in line]
    assert 8 == len(codes), codes  # each lane's code once (issue 14: it was printed twice)
    assert "source .venv/bin/activate" in done.stdout  # how to get `multipair` on PATH
