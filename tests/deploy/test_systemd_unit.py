"""deploy/systemd/multipair-supervise.service: drains on stop, is hardened, systemd accepts it."""

from __future__ import annotations

import configparser
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

from multipair.config import Settings
from multipair.store.secrets_box import MasterKey
from multipair.supervisor.policy import RestartPolicy
from tests.deploy.helpers import needs_systemd_analyze, systemd_verify

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "multipair-supervise.service"
ENV_EXAMPLE = UNIT.with_name("multipair.env.example")


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
    # No core files (memory holds the master key), no capabilities, the system
    # calls of an ordinary service, a memory ceiling for the whole unit.
    assert ("0", "", "", "@system-service") == (
        unit["LimitCORE"],
        unit["CapabilityBoundingSet"],
        unit["AmbientCapabilities"],
        unit["SystemCallFilter"],
    )
    assert re.fullmatch(r"\d+[KMGT]?", unit["MemoryMax"]), unit["MemoryMax"]
    assert "continue" == unit["OOMPolicy"], "one lane's OOM kill must not stop the host"
    # ProtectSystem=strict: whatever must be written is listed, by absolute path.
    for path in unit.get("ReadWritePaths", "").split():
        assert Path(path.lstrip("-")).is_absolute(), path


def example_env() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    return values


def test_the_example_env_file_it_names_is_settings_multipair_accepts(tmp_path: Path) -> None:
    text = UNIT.read_text(encoding="utf-8")
    assert f"deploy/systemd/{ENV_EXAMPLE.name}" in text, "the unit's comments name the example"
    env = example_env()
    assert all(name.startswith("MULTIPAIR_") for name in env), sorted(env)
    assert "MULTIPAIR_MASTER_KEY" not in env, "the key belongs in a file"
    url = urlsplit(env["MULTIPAIR_REDIS_URL"])
    assert ("redis", "multipair-service", "CHANGE-ME") == (url.scheme, url.username, url.password)
    key_file = tmp_path / "master.key"
    key_file.write_text(MasterKey.generate().to_base64() + "\n", encoding="ascii")
    key_file.chmod(0o600)
    settings = Settings.from_env({**env, "MULTIPAIR_MASTER_KEY_FILE": str(key_file)})
    assert ("json", 30.0) == (settings.log_format, settings.drain_timeout_s)


@needs_systemd_analyze
def test_systemd_analyze_verify_finds_nothing_to_say(tmp_path: Path) -> None:
    code, about_the_unit, stderr = systemd_verify(
        UNIT,
        tmp_path,
        "/opt/multipair/venv/bin/multipair",
        str(Path(sys.executable).parent / "multipair"),
    )
    assert (0, []) == (code, about_the_unit), stderr
