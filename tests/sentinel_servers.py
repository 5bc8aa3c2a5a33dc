"""A Redis Sentinel deployment on loopback: a primary, replicas, and three Sentinels.

For tests (tests/sentinel) and chaos runs that kill the primary::

    with SentinelDeployment(replicas=1) as deployment:
        url = deployment.url            # redis+sentinel://127.0.0.1:P1,.../mymaster/0
        old = deployment.kill_primary() # kill -9
        deployment.wait_for_failover(old)
        deployment.restart_as_replica(old)  # not promotable until it has synced

Data nodes are :class:`tests.redis_server.RedisServer` (the binary the suite
finds, its free-port retries); every one is started with ``masterauth`` when
the deployment has a data password, since any of them may be a replica
after a failover. Sentinels are ``redis-server sentinel.conf --sentinel``
with the config written (0600) to a folder of their own: Sentinel rewrites
that file as it learns the replicas and other Sentinels. They declare the
primary down after :attr:`down_after_ms` and fail over with quorum 2.
``sentinel_password`` locks the Sentinels (``requirepass``, and
``sentinel sentinel-pass`` so they still talk to each other).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import pytest
import redis

from multipair.redis_conn import sentinel_url
from tests.poll import poll_until_sync
from tests.redis_server import RedisServer, RedisServerError, find_redis_server

__all__ = [
    "DATA_PASSWORD",
    "SENTINEL_PASSWORD",
    "SentinelDeployment",
    "SentinelProcess",
    "start_deployment",
]

DATA_PASSWORD: Final = "data-pw-1"
SENTINEL_PASSWORD: Final = "sentinel-pw-1"

_START_TIMEOUT_S: Final = 10.0
_PORT_ATTEMPTS: Final = 5


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _quoted(value: str) -> str:
    if any(c in value for c in '"\\\r\n') or not value.isprintable():
        raise RedisServerError("passwords must be printable, without quotes or backslashes")
    return f'"{value}"'


class SentinelProcess:
    """One Sentinel: ``redis-server CONF --sentinel`` on 127.0.0.1:``port``."""

    def __init__(self, folder: Path, password: str | None) -> None:
        self.folder = folder
        self.password = password
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, config: str) -> None:
        """Write ``config`` (plus port, folder, log) and start; return once it answers PING."""
        executable = find_redis_server()
        if executable is None:
            raise RedisServerError("no redis-server")
        self.folder.mkdir(parents=True, exist_ok=True)
        last = ""
        for _ in range(_PORT_ATTEMPTS):
            port = _free_port()
            conf = self.folder / "sentinel.conf"
            conf.unlink(missing_ok=True)
            fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(
                    f"port {port}\nbind 127.0.0.1\ndaemonize no\n"
                    f'dir "{self.folder}"\nlogfile "{self.folder / "sentinel.log"}"\n{config}'
                )
            process = subprocess.Popen(
                [executable, str(conf), "--sentinel"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

            def started(port: int = port, process: subprocess.Popen[bytes] = process) -> str | None:
                if process.poll() is not None:
                    return "exited"
                return "answers" if self._answers(port) else None

            try:
                state = poll_until_sync(
                    started, "a Sentinel answering PING", _START_TIMEOUT_S, interval=0.02
                )
            except AssertionError:
                state = "timed out"
            if state == "answers":
                self._process, self.port = process, port
                return
            process.kill()
            process.wait()
            log = self.folder / "sentinel.log"
            last = log.read_text(errors="replace")[-1000:] if log.exists() else "no log"
        raise RedisServerError(f"a Sentinel did not start: {last}")

    def _answers(self, port: int) -> bool:
        client = redis.Redis(port=port, password=self.password, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def client(self) -> redis.Redis:
        """A blocking client on this Sentinel (close it)."""
        assert self.port is not None, "not running"
        return redis.Redis(
            port=self.port, password=self.password, socket_timeout=1.0, decode_responses=True
        )

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.port = None


class SentinelDeployment:
    """A primary, ``replicas`` replicas and ``sentinels`` Sentinels on 127.0.0.1 (module doc)."""

    def __init__(
        self,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        master_name: str = "mymaster",
        password: str | None = None,
        sentinel_password: str | None = None,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        appendonly: bool = False,
    ) -> None:
        self.replicas = replicas
        self.master_name = master_name
        self.password = password
        self.sentinel_password = sentinel_password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.appendonly = appendonly
        self.nodes: list[RedisServer] = []
        self.sentinels: list[SentinelProcess] = []
        self._sentinel_count = sentinels
        self._dir: Path | None = None
        self._killed: dict[int, RedisServer] = {}

    # --- addresses -------------------------------------------------------------------

    @property
    def sentinel_addresses(self) -> tuple[tuple[str, int], ...]:
        return tuple(("127.0.0.1", s.port) for s in self.sentinels if s.port is not None)

    @property
    def url(self) -> str:
        """The ``redis+sentinel://`` URL of the deployment, both passwords in it."""
        return sentinel_url(
            self.sentinel_addresses,
            self.master_name,
            password=self.password,
            sentinel_password=self.sentinel_password,
        )

    def node_url(self, node: RedisServer) -> str:
        """A plain ``redis://`` URL of one data node (for looking at it directly)."""
        return node.url

    def node_on(self, port: int) -> RedisServer:
        for node in self.nodes:
            if node.port == port:
                return node
        raise LookupError(f"no data node on port {port}")

    # --- start and stop --------------------------------------------------------------

    def start(self) -> None:
        """Start the primary, the replicas (in sync) and the Sentinels (seeing each other)."""
        self._dir = Path(tempfile.mkdtemp(prefix="multipair-sentinel-"))
        try:
            primary = self._node(0, ())
            primary.start()
            self.nodes.append(primary)
            assert primary.port is not None
            for index in range(1, self.replicas + 1):
                replica = self._node(index, ("--replicaof", "127.0.0.1", str(primary.port)))
                replica.start()
                self.nodes.append(replica)
            self._wait_replicas_in_sync(primary)
            for index in range(self._sentinel_count):
                sentinel = SentinelProcess(self._dir / f"sentinel-{index}", self.sentinel_password)
                sentinel.start(self._sentinel_config(primary.port))
                self.sentinels.append(sentinel)
            self._wait_sentinels_ready()
        except BaseException:
            self.stop()
            raise

    def _node(self, index: int, extra: tuple[str, ...]) -> RedisServer:
        assert self._dir is not None
        auth = ("--masterauth", self.password) if self.password is not None else ()
        return RedisServer(
            data_dir=self._dir / f"node-{index}",
            appendonly=self.appendonly,
            password=self.password,
            extra_args=(*auth, *extra),
        )

    def _sentinel_config(self, primary_port: int) -> str:
        name = self.master_name
        lines = [
            f"sentinel monitor {name} 127.0.0.1 {primary_port} 2",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {name} 1",
        ]
        if self.password is not None:
            lines.append(f"sentinel auth-pass {name} {_quoted(self.password)}")
        if self.sentinel_password is not None:
            lines.append(f"requirepass {_quoted(self.sentinel_password)}")
            lines.append(f"sentinel sentinel-pass {_quoted(self.sentinel_password)}")
        return "\n".join(lines) + "\n"

    def _wait_replicas_in_sync(self, primary: RedisServer, timeout: float = 20.0) -> None:
        client = redis.Redis.from_url(primary.url, decode_responses=True, socket_timeout=1.0)
        seen: dict[str, Any] = {}

        def in_sync() -> bool:
            seen.clear()
            seen.update(client.info("replication"))
            online = [v for k, v in seen.items() if k.startswith("slave") and isinstance(v, dict)]
            return len([v for v in online if v.get("state") == "online"]) >= self.replicas

        try:
            poll_until_sync(
                in_sync,
                lambda: f"replicas never came online: {seen}",
                timeout,
                error=RedisServerError,
            )
        finally:
            client.close()

    def _wait_sentinels_ready(self, timeout: float = 20.0) -> None:
        """Until every Sentinel sees the others and every replica (a failover needs them)."""
        others = len(self.sentinels) - 1
        states: list[dict[str, str]] = []

        def ready() -> bool:
            states[:] = [self._master_state(s) for s in self.sentinels]
            return all(
                int(st.get("num-other-sentinels", -1)) >= others
                and int(st.get("num-slaves", -1)) >= self.replicas
                for st in states
            )

        poll_until_sync(
            ready,
            lambda: f"the Sentinels never saw each other: {states}",
            timeout,
            interval=0.1,
            error=RedisServerError,
        )

    def _master_state(self, sentinel: SentinelProcess) -> dict[str, str]:
        client: Any = sentinel.client()
        try:
            raw = client.execute_command("SENTINEL", "MASTER", self.master_name)
        except redis.RedisError:
            return {}
        finally:
            client.close()
        if isinstance(raw, dict):
            return {str(k): str(v) for k, v in raw.items()}
        items = list(raw)
        return {str(items[i]): str(items[i + 1]) for i in range(0, len(items) - 1, 2)}

    def stop(self) -> None:
        """Stop every process and remove the folder."""
        sentinels, self.sentinels = self.sentinels, []
        for sentinel in sentinels:
            sentinel.stop()
        nodes, self.nodes = self.nodes, []
        for node in nodes:
            node.stop()
        if self._dir is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._dir)
            self._dir = None

    def __enter__(self) -> SentinelDeployment:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- failover --------------------------------------------------------------------

    def primary_address(self) -> tuple[str, int] | None:
        """The primary most Sentinels name now (``SENTINEL get-master-addr-by-name``)."""
        votes: dict[tuple[str, int], int] = {}
        for sentinel in self.sentinels:
            client: Any = sentinel.client()
            try:
                answer = client.execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
                )
            except redis.RedisError:
                continue
            finally:
                client.close()
            if answer:
                address = (str(answer[0]), int(answer[1]))
                votes[address] = votes.get(address, 0) + 1
        if not votes:
            return None
        address, count = max(votes.items(), key=lambda item: item[1])
        return address if count * 2 > len(self.sentinels) else None

    def primary(self) -> RedisServer:
        """The data node the Sentinels name as primary."""
        address = self.primary_address()
        if address is None:
            raise RedisServerError("no majority of Sentinels names a primary")
        return self.node_on(address[1])

    def wait_replicated(self, timeout: float = 10.0) -> None:
        """Until every replica has acknowledged everything the primary has written so far
        (so killing the primary loses nothing: replication is asynchronous)."""
        client = redis.Redis.from_url(self.primary().url, decode_responses=True, socket_timeout=1.0)
        try:
            target = int(client.info("replication")["master_repl_offset"])
            seen: dict[str, Any] = {}

            def caught_up() -> bool:
                seen.clear()
                seen.update(client.info("replication"))
                offsets = [
                    int(v["offset"])
                    for k, v in seen.items()
                    if k.startswith("slave") and isinstance(v, dict)
                ]
                return len(offsets) >= self.replicas and all(o >= target for o in offsets)

            poll_until_sync(
                caught_up,
                lambda: f"replicas stayed behind offset {target}: {seen}",
                timeout,
                interval=0.02,
                error=RedisServerError,
            )
        finally:
            client.close()

    def kill_primary(self) -> int:
        """``kill -9`` the primary; its port (for :meth:`wait_for_failover`)."""
        node = self.primary()
        port = node.port
        assert port is not None
        node.kill()
        self._killed[port] = node
        return port

    def wait_for_failover(self, old_port: int, timeout: float = 30.0) -> int:
        """Until a majority of Sentinels names a primary other than ``old_port`` that
        answers as a master; its port."""

        def promoted() -> int | None:
            address = self.primary_address()
            if address is not None and address[1] != old_port and self._is_master(address[1]):
                return address[1]
            return None

        return poll_until_sync(
            promoted, f"a failover away from port {old_port}", timeout, error=RedisServerError
        )

    def _is_master(self, port: int) -> bool:
        node = self.node_on(port)
        client = redis.Redis.from_url(node.url, decode_responses=True, socket_timeout=1.0)
        try:
            return client.info("replication").get("role") == "master"
        except redis.RedisError:
            return False
        finally:
            client.close()

    def restart_as_replica(self, port: int, timeout: float = 30.0) -> RedisServer:
        """Bring the killed node back as an operator must (docs/deploy-ha.md "Bringing a
        dead node back"): :meth:`start_returning`, then :meth:`make_promotable`; it holds
        the primary's data and may be promoted when this returns.

        Started as a plain replica instead, it stays empty for seconds (the primary delays
        a diskless sync by 5 s), and a Sentinel that wrongly sees the primary down then (a
        loaded machine, ``down-after`` 1000 ms) promotes it: the primary, made its replica,
        throws every write away. A fresh-clone CI run lost acknowledged purchases and sent
        two of them twice that way."""
        return self.make_promotable(self.start_returning(port), timeout)

    def start_returning(self, port: int, *, priority: int = 0) -> RedisServer:
        """Start the killed node again on its port, a replica of the primary the Sentinels
        name (never a primary of its own) with ``replica-priority 0``: no Sentinel promotes
        it before :meth:`make_promotable`. (``priority`` 100 starts a plain replica, the
        unsafe way tests/sentinel/test_returning_node.py shows.)"""
        node = self._killed.pop(port)
        primary = self.primary_address()
        assert primary is not None, "no primary to follow"
        auth = ("--masterauth", self.password) if self.password is not None else ()
        node.extra_args = (
            *auth,
            *("--replicaof", primary[0], str(primary[1])),
            *("--replica-priority", str(priority)),
        )
        node.start()
        return node

    def make_promotable(self, node: RedisServer, timeout: float = 30.0) -> RedisServer:
        """Once ``node`` finished its first sync (link up, no sync in progress), give it
        the default ``replica-priority`` 100 back."""
        client = redis.Redis.from_url(node.url, decode_responses=True, socket_timeout=1.0)
        seen: dict[str, Any] = {}

        def synced() -> bool:
            seen.clear()
            try:
                seen.update(client.info("replication"))
            except redis.RedisError:
                return False
            return (
                seen.get("master_link_status") == "up"
                and int(seen.get("master_sync_in_progress", 1)) == 0
            )

        try:
            poll_until_sync(
                synced,
                lambda: f"the returning node never finished its first sync: {seen}",
                timeout,
                interval=0.02,
                error=RedisServerError,
            )
            client.config_set("replica-priority", "100")
        finally:
            client.close()
        return node


def start_deployment(**options: Any) -> SentinelDeployment:
    """A running deployment with both passwords, for a test (skips without a redis-server,
    fails when it cannot start)."""
    if find_redis_server() is None:
        pytest.skip("no redis-server: cannot start Sentinels")
    deployment = SentinelDeployment(
        password=DATA_PASSWORD, sentinel_password=SENTINEL_PASSWORD, **options
    )
    try:
        deployment.start()
    except RedisServerError as exc:
        pytest.fail(f"could not start a Sentinel deployment: {exc}")
    return deployment
