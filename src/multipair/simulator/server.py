"""Many virtual terminals in one asyncio process, plus their HTTP side services.

Usable in-process from tests and benchmarks::

    async with Simulator(n=3, state_dir=tmp_path) as sim:
        url = sim.terminals[0].ws_url          # ws://127.0.0.1:<port>
        sim.control_url                         # http://127.0.0.1:<port>
        sim.device_address_url                  # base URL for device_address_url(base_url=...)

and from the command line as ``multipair simulate`` (:mod:`multipair.cli`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiohttp import web

from multipair.lifecycle import AsyncRunning
from multipair.simulator.control import build_control_app
from multipair.simulator.device_address import build_device_address_app
from multipair.simulator.rules import PairingMode, parse_pairing_mode
from multipair.simulator.tls import server_ssl_context, write_self_signed
from multipair.simulator.virtual import SimulatedTerminal
from multipair.spi.envelope import JsonObject
from multipair.spi.terminal import TerminalOptions

__all__ = ["Simulator", "serial_for"]

_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - names, not binds


def serial_for(index: int, prefix: str = "SIM-") -> str:
    """The stable serial number of terminal ``index`` (0-based): ``SIM-0001`` …"""
    return f"{prefix}{index + 1:04d}"


class Simulator(AsyncRunning):
    """``n`` simulated terminals, each on its own port, a control API and a device-address service.

    ``base_port`` 0 gives every terminal a free port; otherwise terminal *i*
    listens on ``base_port + i``. ``state_dir`` keeps each terminal's
    :class:`~multipair.spi.terminal.TerminalState` (pairing keys included) in
    ``<serial>.json``. ``tls`` serves ``wss://`` with a self-signed
    certificate written to ``cert_dir`` (default: ``state_dir``, else a
    temporary folder removed on close).
    """

    def __init__(
        self,
        n: int = 1,
        *,
        host: str = "127.0.0.1",
        base_port: int = 0,
        state_dir: str | os.PathLike[str] | None = None,
        tls: bool = False,
        cert_dir: str | os.PathLike[str] | None = None,
        pairing: str = "auto",
        control_host: str = "127.0.0.1",
        control_port: int = 0,
        device_address_host: str | None = None,
        device_address_port: int = 0,
        device_api_key: str | None = None,
        advertised_host: str | None = None,
        serial_prefix: str = "SIM-",
        terminal_options: TerminalOptions | None = None,
    ) -> None:
        if n < 0:
            raise ValueError("n must be >= 0")
        self.n = n
        self.host = host
        self.base_port = base_port
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.tls = tls
        self._cert_dir = Path(cert_dir) if cert_dir is not None else self.state_dir
        self.pairing_mode: PairingMode
        self.pairing_mode, self.pairing_delay = parse_pairing_mode(pairing)
        self.control_host = control_host
        self.control_port = control_port
        self.device_address_host = device_address_host or control_host
        self.device_address_port = device_address_port
        self.device_api_key = device_api_key
        self.advertised_host = advertised_host or ("127.0.0.1" if host in _WILDCARD_HOSTS else host)
        self.serial_prefix = serial_prefix
        self._options = terminal_options
        self.terminals: list[SimulatedTerminal] = []
        self._by_serial: dict[str, SimulatedTerminal] = {}
        self.cert_path: Path | None = None
        self.key_path: Path | None = None
        self.control_url = ""
        self.device_address_url = ""
        self.started_at = 0.0
        self._stack: AsyncExitStack | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._children: set[asyncio.Task[None]] = set()
        self._temp_dir: Path | None = None
        self.log = structlog.get_logger("multipair.simulator")

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start every server; on failure, whatever started is closed again."""
        if self._stack is not None:
            raise RuntimeError("simulator already started")
        self.started_at = time.time()
        stack = AsyncExitStack()
        self._stack = stack
        try:
            self._tasks = await stack.enter_async_context(asyncio.TaskGroup())
            stack.push_async_callback(self._stop_children)
            ssl_context = self._make_tls() if self.tls else None
            if self.state_dir is not None:
                self.state_dir.mkdir(parents=True, exist_ok=True)
            self.device_address_url = await self._start_app(
                stack,
                build_device_address_app(self.terminal_or_none, api_key=self.device_api_key),
                self.device_address_host,
                self.device_address_port,
            )
            self.control_url = await self._start_app(
                stack,
                build_control_app(self.terminal_or_none, lambda: list(self.terminals)),
                self.control_host,
                self.control_port,
            )
            for index in range(self.n):
                serial = serial_for(index, self.serial_prefix)
                terminal = SimulatedTerminal(
                    serial=serial,
                    index=index,
                    host=self.host,
                    port=self.base_port + index if self.base_port else 0,
                    advertised_host=self.advertised_host,
                    spawn=self.spawn,
                    ssl_context=ssl_context,
                    state_path=None
                    if self.state_dir is None
                    else self.state_dir / f"{serial}.json",
                    options=self._copy_options(),
                    pairing_mode=self.pairing_mode,
                    pairing_delay=self.pairing_delay,
                )
                await terminal.start()
                stack.push_async_callback(terminal.close)
                self.terminals.append(terminal)
                self._by_serial[serial] = terminal
        except BaseException:
            await self.close()
            raise
        self.log.info(
            "simulator.started",
            terminals=self.n,
            control_url=self.control_url,
            device_address_url=self.device_address_url,
            tls=self.tls,
        )

    async def close(self) -> None:
        """Close terminals (persisting their state), HTTP servers and tasks."""
        stack, self._stack = self._stack, None
        if stack is None:
            return
        try:
            await stack.aclose()
        finally:
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
                self._temp_dir = None
            self.log.info("simulator.stopped")

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` in the simulator's task group; its exceptions are logged, never spread."""
        if self._tasks is None:
            coro.close()
            raise RuntimeError("simulator is not running")
        task = self._tasks.create_task(self._guard(coro))
        self._children.add(task)
        task.add_done_callback(self._children.discard)
        # A task cancelled before its first step never enters _guard, so
        # ``coro`` would be left un-awaited (RuntimeWarning): close it then.
        # Closing a coroutine that already ran to its end does nothing.
        task.add_done_callback(lambda _: coro.close())
        return task

    async def _guard(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("simulator.task_failed")

    async def _stop_children(self) -> None:
        for task in list(self._children):
            task.cancel()

    async def _start_app(
        self, stack: AsyncExitStack, app: web.Application, host: str, port: int
    ) -> str:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0]
        shown = self.advertised_host if host in _WILDCARD_HOSTS else host
        return f"http://{shown}:{bound[1]}"

    def _make_tls(self) -> Any:
        directory = self._cert_dir
        if directory is None:
            directory = self._temp_dir = Path(tempfile.mkdtemp(prefix="multipair-sim-"))
        hosts = [h for h in (self.host, self.advertised_host) if h not in _WILDCARD_HOSTS]
        self.cert_path, self.key_path = write_self_signed(directory, hosts)
        return server_ssl_context(self.cert_path, self.key_path)

    def _copy_options(self) -> TerminalOptions:
        if self._options is None:
            return TerminalOptions()
        # Each terminal gets its own copy: the control API changes them per terminal.
        return dataclasses.replace(self._options)

    # ------------------------------------------------------------------ views

    def terminal(self, serial: str) -> SimulatedTerminal:
        """The terminal with this serial; KeyError if there is none."""
        return self._by_serial[serial]

    def terminal_or_none(self, serial: str) -> SimulatedTerminal | None:
        """The terminal with this serial, or None."""
        return self._by_serial.get(serial)

    def manifest(self) -> JsonObject:
        """What scripts need to find everything: serials, addresses, URLs, the certificate."""
        return {
            "pid": os.getpid(),
            "tls": self.tls,
            "cert_path": None if self.cert_path is None else str(self.cert_path),
            "control_url": self.control_url,
            "device_address_url": self.device_address_url,
            "terminals": [
                {
                    "serial": t.serial,
                    "ws_url": t.ws_url,
                    "host": t.advertised_host,
                    "port": t.port,
                    "control_url": f"{self.control_url}/terminals/{t.serial}",
                    "paired": t.session.state.paired,
                    "pos_id": t.session.state.pos_id,
                }
                for t in self.terminals
            ],
        }

    def write_manifest(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`manifest` atomically (temp file + ``os.replace``)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(orjson.dumps(self.manifest(), option=orjson.OPT_INDENT_2))
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return target
