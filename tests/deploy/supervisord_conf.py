"""deploy/supervisord.conf as supervisord reads it, through supervisor's own parser.

Import it after ``pytest.importorskip("supervisor")``.
"""

from __future__ import annotations

from pathlib import Path

from supervisor.options import ProcessConfig, ServerOptions, UnhosedConfigParser

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CONF = DEPLOY / "supervisord.conf"


def shipped_program(name: str, log_dir: Path) -> tuple[ProcessConfig, dict[str, str]]:
    """The ``program:<name>`` section as shipped, through supervisor's parser, and its raw
    options.

    Only the log file moves to ``log_dir``: supervisor refuses a log path whose
    directory does not exist, and /var/log/multipair does not exist here.
    """
    section = f"program:{name}"
    parser = UnhosedConfigParser()
    assert [str(CONF)] == parser.read(str(CONF))
    raw = dict(parser.items(section))
    parser.set(section, "stdout_logfile", str(log_dir / Path(raw["stdout_logfile"]).name))
    options = ServerOptions()
    options.here = str(DEPLOY)
    [program] = options.processes_from_section(parser, section, name)
    return program, raw
