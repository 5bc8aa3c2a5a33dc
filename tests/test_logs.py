"""Log lines of processes sharing stderr (a supervisor and the lanes forked from its
template) stay whole: every line is one JSON object."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

WRITERS = 4
LINES = 2000

_WRITER = f"""
from multipair.logs import configure_logging, get_logger
configure_logging("json")
log = get_logger("test")
for i in range({LINES}):
    log.info("a line of a lane", i=i, padding="x" * 40)
"""


def test_lines_of_processes_logging_at_once_never_run_together(tmp_path: Path) -> None:
    shared = tmp_path / "supervisor.log"
    with shared.open("ab") as out:
        writers = [
            subprocess.Popen([sys.executable, "-c", _WRITER], stderr=out) for _ in range(WRITERS)
        ]
        assert [0] * WRITERS == [w.wait(timeout=60) for w in writers]
    lines = shared.read_bytes().splitlines()
    unreadable = []
    for line in lines:
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError:
            unreadable.append(line[:120])
    assert ([], WRITERS * LINES) == (unreadable[:3], len(lines))
