"""deploy/supervisord.conf: supervisor's own loader accepts it, and it really runs the supervisor.

The shipped file names production paths (/var/log/multipair, /run/multipair,
/opt/multipair/venv) that do not exist here. So:

- its ``[program:multipair-supervise]`` section is loaded as shipped (but
  for its log file, whose directory supervisor insists exists), with the
  installed supervisor package's parser (``ServerOptions``), and checked
  against what the drain needs (stop as a group, SIGTERM, a stop wait longer
  than the supervisor's own drain bound);
- a copy in which only the paths, the Redis URL, the master key file, the key
  prefix and the rlimits this machine cannot grant are replaced is loaded
  whole (``ServerOptions.realize``, as ``supervisord -c`` does) and run with
  the real ``supervisord``: the program must reach RUNNING, write its host
  heartbeat to ``mp:hosts`` and start a lane; ``supervisorctl stop`` must
  end it with exit status 0, its lanes' leases released and its ``mp:hosts``
  entry removed (the clean drain path, not supervisord's SIGKILL).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from multipair import broker_schema as bs
from multipair.store.secrets_box import MasterKey
from multipair.supervisor.policy import RestartPolicy
from tests.poll import poll_until_sync

pytest.importorskip("supervisor", reason="the 'supervisor' package (supervisord) is not installed")

from supervisor.datatypes import dict_of_key_value_pairs
from supervisor.options import ProcessConfig, ServerOptions, UnhosedConfigParser
from supervisor.process import RestartUnconditionally
from supervisor.xmlrpc import SupervisorTransport

from tests.deploy.supervisord_conf import CONF, shipped_program

PROGRAM = "multipair-supervise"
SECTION = f"program:{PROGRAM}"
BIN = Path(sys.executable).parent
"""The virtualenv's scripts: ``multipair``, ``supervisord``, ``supervisorctl``."""

START_TIMEOUT_S = 60.0
"""supervisord start + ``startsecs`` + the supervisor's preload: a few seconds normally."""
STOP_TIMEOUT_S = 60.0
"""More than ``stopwaitsecs``: a stop that needed supervisord's SIGKILL still ends in time."""


def drain_bound(program: ProcessConfig) -> RestartPolicy:
    """The supervisor's stop rules for the drain timeout the program's environment sets."""
    drain = program.environment.get("MULTIPAIR_DRAIN_TIMEOUT")
    return RestartPolicy() if drain is None else RestartPolicy(drain_timeout_s=float(drain))


# ---------------------------------------------------------------------- the file as shipped


def test_the_program_runs_multipair_supervise_with_this_hosts_name(tmp_path: Path) -> None:
    program, raw = shipped_program(PROGRAM, tmp_path)
    argv = program.command.split()
    assert "%(host_node_name)s" in raw["command"]
    assert Path(argv[0]).is_absolute(), "supervisord's PATH is not the virtualenv's"
    assert ("multipair", "supervise") == (Path(argv[0]).name, argv[1])
    assert platform.node() == argv[argv.index("--host-id") + 1]


def test_the_program_is_stopped_the_way_the_drain_needs(tmp_path: Path) -> None:
    program, _ = shipped_program(PROGRAM, tmp_path)
    policy = drain_bound(program)
    assert (True, True, signal.SIGTERM) == (
        program.stopasgroup,
        program.killasgroup,
        program.stopsignal,
    )
    # supervisord's SIGKILL must come after the lanes' drain (30 s) and after the
    # supervisor's own SIGKILL of stragglers (drain + margin), never before.
    assert program.stopwaitsecs > policy.drain_timeout_s
    assert program.stopwaitsecs > policy.stop_timeout_s
    assert program.autorestart is RestartUnconditionally
    assert program.startsecs >= 1
    assert [0] == program.exitcodes


def test_the_program_logs_to_a_rotated_file_with_stderr_folded_in(tmp_path: Path) -> None:
    program, raw = shipped_program(PROGRAM, tmp_path)
    assert program.redirect_stderr
    assert raw["stdout_logfile"].startswith("/var/log/multipair/")
    assert program.stdout_logfile_maxbytes > 0
    assert program.stdout_logfile_backups > 0


def test_the_program_environment_names_redis_and_a_master_key_file(tmp_path: Path) -> None:
    program, _ = shipped_program(PROGRAM, tmp_path)
    env = program.environment
    assert env["MULTIPAIR_REDIS_URL"].startswith(("redis://", "rediss://", "unix://"))
    assert Path(env["MULTIPAIR_MASTER_KEY_FILE"]).is_absolute()
    assert "MULTIPAIR_MASTER_KEY" not in env, "the key belongs in a file, not an environment"
    assert "json" == env["MULTIPAIR_LOG_FORMAT"]


# ---------------------------------------------------------------------- a running copy


def localised(
    target: Path, *, run_dir: Path, sock: Path, redis_url: str, prefix: str, key_file: Path
) -> Path:
    """Write the shipped config with this test's paths and Redis; everything else as shipped."""
    parser = UnhosedConfigParser()
    parser.read(str(CONF))
    parser.set("supervisord", "logfile", str(run_dir / "supervisord.log"))
    parser.set("supervisord", "pidfile", str(run_dir / "supervisord.pid"))
    parser.set("supervisord", "childlogdir", str(run_dir))
    # rlimits this machine cannot grant to a non-root user would stop supervisord;
    # the shipped values are checked above, the copy asks for what is possible.
    for option, limit in (("minfds", resource.RLIMIT_NOFILE), ("minprocs", resource.RLIMIT_NPROC)):
        hard = resource.getrlimit(limit)[1]
        if hard != resource.RLIM_INFINITY and hard < int(parser.get("supervisord", option)):
            parser.set("supervisord", option, str(hard))
    # The RQ programs have tests of their own (tests/deploy/test_rq_deploy.py).
    for section in ("program:multipair-rq-worker", "program:multipair-rq-cron"):
        parser.remove_section(section)
    parser.set("unix_http_server", "file", str(sock))
    parser.set("supervisorctl", "serverurl", f"unix://{sock}")

    command = parser.get(SECTION, "command").split()
    command[0] = str(BIN / "multipair")
    parser.set(SECTION, "command", " ".join(command))
    parser.set(SECTION, "stdout_logfile", str(run_dir / "supervise.log"))
    env = dict_of_key_value_pairs(parser.get(SECTION, "environment"))
    env.update(
        MULTIPAIR_REDIS_URL=redis_url,
        MULTIPAIR_MASTER_KEY_FILE=str(key_file),
        MULTIPAIR_PREFIX=prefix,
    )
    parser.set(SECTION, "environment", ",".join(f'{k}="{v}"' for k, v in env.items()))
    with target.open("w", encoding="utf-8") as out:
        parser.write(out)
    return target


class Supervisord:
    """A real ``supervisord -n`` on a config, with ``supervisorctl`` and XML-RPC at hand."""

    def __init__(self, conf: Path, sock: Path, env: dict[str, str]) -> None:
        self.conf = conf
        self.sock = sock
        self.env = env
        self.process = subprocess.Popen(
            [str(BIN / "supervisord"), "-c", str(conf), "-n"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def ctl(self, *args: str, timeout: float = STOP_TIMEOUT_S) -> str:
        done = subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(self.conf), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return done.stdout + done.stderr

    def info(self) -> dict[str, Any] | None:
        """``getProcessInfo`` of the program; None while supervisord does not answer yet."""
        if self.process.poll() is not None:
            raise AssertionError(f"supervisord exited {self.process.returncode}: {self.stderr()}")
        # A fresh connection per call: the transport's kept-alive connection is
        # unusable after a refused connect (supervisord still starting).
        rpc = xmlrpc.client.ServerProxy(
            "http://127.0.0.1", transport=SupervisorTransport(None, None, f"unix://{self.sock}")
        )
        try:
            info: dict[str, Any] = rpc.supervisor.getProcessInfo(PROGRAM)  # type: ignore[assignment]
        except (OSError, http.client.HTTPException, xmlrpc.client.Fault):
            return None
        finally:
            rpc("close")()
        return info

    def stderr(self) -> str:
        if self.process.stderr is None:
            return ""
        with contextlib.suppress(OSError, ValueError):
            os.set_blocking(self.process.stderr.fileno(), False)
            return (self.process.stderr.read() or b"").decode(errors="replace")
        return ""

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.ctl("shutdown", timeout=STOP_TIMEOUT_S)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short path for the control socket (a unix socket path has ~108 bytes at most)."""
    path = Path(tempfile.mkdtemp(prefix="mpsd-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def add_lane(env: dict[str, str]) -> str:
    """``multipair lane add`` (unpaired; nothing listens at its address): its instance id."""
    done = subprocess.run(
        [
            *(str(BIN / "multipair"), "--json", "lane", "add", "--pos-id", "DEPLOY1"),
            *("--serial", "DEPLOY-0001", "--address", "ws://127.0.0.1:9"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    instance_id: str = orjson.loads(done.stdout)["instance_id"]
    return instance_id


def lane_events(client: redis.Redis, keys: bs.Keys, instance_id: str) -> list[bs.Event]:
    entries: Any = client.xrange(keys.events(instance_id))
    return [bs.decode_event(fields) for _, fields in entries]


def test_supervisord_runs_the_supervisor_and_stops_it_cleanly(
    tmp_path: Path, short_dir: Path, redis_url: str, key_prefix: str, sync_redis: redis.Redis
) -> None:
    keys = bs.Keys(key_prefix)
    host = platform.node()
    key_file = tmp_path / "master.key"
    key_file.write_text(MasterKey.generate().to_base64() + "\n", encoding="ascii")
    key_file.chmod(0o600)
    sock = short_dir / "s.sock"
    conf = localised(
        tmp_path / "supervisord.conf",
        run_dir=tmp_path,
        sock=sock,
        redis_url=redis_url,
        prefix=key_prefix,
        key_file=key_file,
    )
    # The copy loads whole with supervisord's own loader, as `supervisord -c` does.
    options = ServerOptions()
    options.realize(args=["-c", str(conf)])
    [group] = options.process_group_configs
    assert [PROGRAM] == [p.name for p in group.process_configs]

    env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIPAIR_")}
    lane_env = {**env, "MULTIPAIR_REDIS_URL": redis_url, "MULTIPAIR_PREFIX": key_prefix}
    instance_id = add_lane(lane_env)

    sd = Supervisord(conf, sock, env)
    try:
        running = poll_until_sync(
            lambda: (info := sd.info()) is not None and info["statename"] == "RUNNING" and info,
            "the program RUNNING",
            START_TIMEOUT_S,
        )
        assert "RUNNING" in sd.ctl("status", PROGRAM)

        beat: Any = poll_until_sync(
            lambda: sync_redis.hget(keys.hosts(), host), "the host heartbeat", 30
        )
        heartbeat = orjson.loads(beat)
        assert (running["pid"], True) == (heartbeat["pid"], heartbeat["accepting"])

        lease: Any = poll_until_sync(
            lambda: sync_redis.get(keys.lease(instance_id)), "the lane's lease", 30
        )
        assert lease.decode().endswith(f":{host}")
        poll_until_sync(
            lambda: sync_redis.hget(keys.state(instance_id), "heartbeat_at"),
            "the lane process's own heartbeat",
            30,
        )

        started = time.monotonic()
        out = sd.ctl("stop", PROGRAM)
        took = time.monotonic() - started
        assert f"{PROGRAM}: stopped" in out, out
        stopped = poll_until_sync(
            lambda: (info := sd.info()) is not None and info["statename"] == "STOPPED" and info,
            "the program STOPPED",
            STOP_TIMEOUT_S,
        )
        # Exit status 0 is the supervisor's own clean exit: supervisord's SIGKILL
        # (after stopwaitsecs) would leave no exit status 0 behind.
        assert 0 == stopped["exitstatus"], stopped
        assert took < running_stopwaitsecs(options)
        # The drain path ran to its end: lease given back, host entry removed.
        assert None is sync_redis.get(keys.lease(instance_id))
        assert None is sync_redis.hget(keys.hosts(), host)
        stops = [e for e in lane_events(sync_redis, keys, instance_id) if e.type == "lane_stopped"]
        assert "shutdown" in [getattr(e, "reason", None) for e in stops]
    finally:
        sd.close()

    lines = (tmp_path / "supervise.log").read_text(encoding="utf-8").splitlines()
    records = [orjson.loads(line) for line in lines if line.strip()]
    assert all(isinstance(r, dict) for r in records), "every log line is one JSON object"
    said = [r.get("event") for r in records]
    assert "supervisor started" in said
    assert "supervisor stopped" in said


def running_stopwaitsecs(options: ServerOptions) -> int:
    [group] = options.process_group_configs
    [program] = group.process_configs
    seconds: int = program.stopwaitsecs
    return seconds
