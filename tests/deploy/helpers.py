"""Checking the deploy/ files with the tools that read them on a real host."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="no systemd-analyze here"
)


def systemd_verify(
    unit: Path, tmp_path: Path, binary: str, here: str
) -> tuple[int, list[str], str]:
    """``systemd-analyze verify`` of a copy of ``unit`` in ``tmp_path``.

    verify insists the ExecStart binary exists: the copy names ``here`` (this
    virtualenv's) where the unit names ``binary``. Its exit code, the lines of
    its stderr about the unit, and the whole stderr.
    """
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text(encoding="utf-8").replace(binary, here), encoding="utf-8")
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    about = [line for line in done.stderr.splitlines() if unit.name in line]
    return done.returncode, about, done.stderr
