"""The only module that forks and reaps lane processes (STYLE.md §7, DESIGN.md "Process model").

A **template** process is started once per supervisor: a fresh interpreter
(``python -c ...template_main()``), so it inherits none of the supervisor's
event loop, sockets or Redis connections. It imports the worker's modules
(:data:`PRELOAD`), freezes its heap (``gc.freeze()``, so the children's
garbage collector does not touch, and thereby copy, the shared pages), then
waits on a private socket pair for requests. Each ``spawn`` forks one lane:
its own OS process with its own pid, sharing the template's pages copy-on-
write, so an idle lane costs a few MiB instead of a fresh interpreter.

Rules this module keeps:

- **No orphans.** The template and every lane set ``PR_SET_PDEATHSIG`` to
  SIGKILL (``prctl``) and then check their parent is still the one they
  were forked by: when the supervisor dies, however it dies, the template
  is killed, and with it every lane, so no lane keeps a terminal connection.
- **Only the template reaps**, so only the template signals lanes: a pid it
  has not reaped yet is certainly its child (alive or a zombie), never a
  recycled pid of some other process. The supervisor asks it over the socket.
- **Every exit is reported** with its exit code, or the signal that ended
  it, in the order the template reaped them; a ``spawned`` reply always
  comes before the ``exited`` report of the same pid. A lane that fails
  says why in one line (at most :data:`CAUSE_MAX` bytes) on a pipe of its
  own, written just before it exits; the template reads it when it reaps
  the lane and sends it along as the exit's ``cause``, so the reason a lane
  crash-loops reaches its state hash, not only the host's log.
- The template ignores SIGTERM and SIGINT: a signal sent to the whole
  process group (Ctrl-C, systemd) must not kill it, since its death kills the
  lanes that are draining. It exits when the supervisor closes the socket,
  after killing and reaping its lanes.

- **Secrets stay out of reach** (:mod:`multipair.hardening`). The template
  is started with an environment without :data:`~multipair.hardening.SECRET_ENV`
  (the master key, its file, the device API key, the Redis URL), so neither
  it nor any lane shows them in ``/proc/<pid>/environ``. The template makes
  itself non-dumpable with no core files before it receives the settings,
  and every lane does the same again as it is forked: another process of the
  same user cannot ``ptrace`` a lane or read its memory, and a crash writes
  no core file holding the key.

The wire between the two is JSON lines (``op`` names the message). The
service settings, master key included, travel once over that private socket
(never in an environment a ``ps e`` could show).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import gc
import importlib
import json
import mmap
import os
import selectors
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from multipair.config import Settings
from multipair.exceptions import ConfigurationError, RetryLater
from multipair.hardening import guard_process, private_env
from multipair.lifecycle import AsyncRunning
from multipair.logs import configure_logging, get_logger
from multipair.store.secrets_box import MasterKey

__all__ = [
    "EXIT_CONFIG",
    "EXIT_LEASE_LOST",
    "PRELOAD",
    "LaneExit",
    "LaneProcesses",
    "private_kib",
    "pss_kib",
    "rss_bytes",
    "settings_from_wire",
    "settings_to_wire",
    "template_main",
]

log = get_logger(__name__)

PRELOAD: Final = (
    "multipair.worker.__main__",
    "multipair.worker.lane",
    "multipair.worker.link",
    "multipair.worker.retry",
    "multipair.store.profiles",
    "multipair.store.transactions",
    "multipair.leases",
    "redis.asyncio",
    "websockets.asyncio.client",
    "aiohttp",
    "ssl",
    "encodings.idna",
)
"""Modules the template imports before it forks anything."""

EXIT_CONFIG: Final = 2
"""A lane's exit code for a configuration error (the worker's; no quick retry helps)."""
EXIT_LEASE_LOST: Final = 4
"""A lane's exit code when its fenced write was refused: the lease moved on."""

CAUSE_MAX: Final = 1000
"""Bytes of a lane's exit cause kept (less than PIPE_BUF: one write, never blocking)."""

_PR_SET_PDEATHSIG: Final = 1
_PR_SET_NAME: Final = 15
_READY_TIMEOUT_S: Final = 60.0
_SPAWN_TIMEOUT_S: Final = 10.0
_TEMPLATE_CLOSE_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class LaneExit:
    """A lane process ended: by ``exit_code``, or killed by ``signal``."""

    instance_id: str
    pid: int
    exit_code: int | None
    signal: int | None
    cause: str | None = None
    """The lane's own one line on why it ended (``cannot start: master key ... does not
    open ...``), when it failed and could say; ``None`` when killed or silent."""

    def describe(self) -> str:
        """``exit code 1`` or ``signal 9 (SIGKILL)``."""
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = "?"
            return f"signal {self.signal} ({name})"
        return f"exit code {self.exit_code}"


def settings_to_wire(settings: Settings) -> dict[str, Any]:
    """The settings as a JSON object for the template (the master key as base64)."""
    wire: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if f.name == "master_key":
            value = None if value is None else value.to_base64()
        elif isinstance(value, os.PathLike):
            value = os.fspath(value)
        wire[f.name] = value
    return wire


def settings_from_wire(wire: Mapping[str, Any]) -> Settings:
    """Rebuild what :func:`settings_to_wire` sent."""
    values = dict(wire)
    key = values.get("master_key")
    values["master_key"] = None if key is None else MasterKey.from_base64(key)
    path = values.get("master_key_file")
    values["master_key_file"] = None if path is None else Path(path)
    return Settings(**values)


def pss_kib(pid: int) -> int:
    """Proportional set size of a process in KiB: its private pages plus its share of
    the pages it shares (``Pss`` of ``/proc/<pid>/smaps_rollup``)."""
    return _rollup(pid)["Pss"]


def private_kib(pid: int) -> int:
    """Pages only this process maps, in KiB (unique set size): what one more lane costs."""
    rollup = _rollup(pid)
    return rollup["Private_Clean"] + rollup["Private_Dirty"]


_PAGE_SIZE: Final = mmap.PAGESIZE


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process in bytes (``/proc/<pid>/statm``), None when it is gone.

    It counts every page the process has in memory, those it still shares
    with the lane template included: more than the process alone costs
    (:func:`private_kib`), but cheap enough to read for every lane on every
    tick (``smaps_rollup`` walks every mapping), and readable by the
    supervisor although lanes are not dumpable.
    """
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None


def _rollup(pid: int) -> dict[str, int]:
    figures: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
        for line in rollup:
            name, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB":
                figures[name] = int(parts[0])
    return figures


# ---------------------------------------------------------------------------
# Both sides: prctl


def _prctl(option: int, arg: int | bytes) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl({option}) failed: {os.strerror(errno)}")


def _die_with_parent(expected_parent: int) -> None:
    """SIGKILL this process when its parent dies; exit now if it already did."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != expected_parent:  # the parent died before prctl took effect
        os._exit(1)


def _set_name(name: bytes) -> None:
    """The name ``ps -o comm`` and ``top`` show (15 bytes at most)."""
    with contextlib.suppress(OSError):
        _prctl(_PR_SET_NAME, name[:15])


# ---------------------------------------------------------------------------
# The template process (blocking, single-threaded)


def template_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the template: ``--fd N --parent PID [--preload a,b]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    opts = dict(zip(args[::2], args[1::2], strict=True))
    parent = int(opts["--parent"])
    # No collection in the template at all: a collection frees slots all over
    # the heap, which the lanes' own allocations would then fill, copying
    # each page they touch (the gc.freeze() recipe of the Python docs).
    gc.disable()
    _die_with_parent(parent)
    guard_process()  # before the settings (master key) arrive; the lanes inherit it
    _set_name(b"mp-template")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=int(opts["--fd"]))
    preload = opts.get("--preload")
    for name in PRELOAD if preload is None else [p for p in preload.split(",") if p]:
        importlib.import_module(name)
    if "multipair.worker.__main__" in sys.modules:
        sys.modules["multipair.worker.__main__"].prepare_for_fork()
    return _Template(sock).serve()


class _Template:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.children: dict[int, str] = {}
        self.causes: dict[int, int] = {}
        """pid -> the read end of the pipe the lane writes its exit cause to."""
        self.settings: Settings | None = None
        self.buffer = b""
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda _sig, _frame: None)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.sock, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)

    def send(self, **message: Any) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def serve(self) -> int:
        while True:
            for key, _ in self.selector.select():
                if key.fileobj == self.wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake_r, 4096)
                    self.reap()
                    continue
                data = self.sock.recv(65536)
                if not data:  # the supervisor closed the socket or died
                    self.kill_all()
                    return 0
                self.buffer += data
                while b"\n" in self.buffer:
                    line, _, self.buffer = self.buffer.partition(b"\n")
                    self.handle(json.loads(line))

    def handle(self, message: Mapping[str, Any]) -> None:
        op = message["op"]
        if op == "init":
            try:
                self.settings = settings_from_wire(message["settings"])
            except (ConfigurationError, TypeError) as exc:
                self.send(op="failed", error=str(exc))
                raise SystemExit(2) from None
            configure_logging(self.settings.log_format)
            # Everything imported so far is shared with every lane: keep the
            # lanes' collector off those objects so their pages stay shared.
            gc.freeze()
            self.send(op="ready", pid=os.getpid())
        elif op == "spawn":
            self.spawn(int(message["req"]), str(message["instance_id"]), int(message["token"]))
        elif op == "signal":
            pid = int(message["pid"])
            if pid in self.children:  # not reaped yet: certainly ours
                os.kill(pid, int(message["signal"]))

    def spawn(self, req: int, instance_id: str, token: int) -> None:
        assert self.settings is not None, "init comes first"
        template_pid = os.getpid()
        try:
            cause_r, cause_w = os.pipe()
        except OSError as exc:
            self.send(op="spawn_failed", req=req, error=str(exc))
            return
        try:
            pid = os.fork()
        except OSError as exc:  # out of processes or memory: say so, stay alive
            os.close(cause_r)
            os.close(cause_w)
            self.send(op="spawn_failed", req=req, error=str(exc))
            return
        if pid == 0:
            code = 1
            try:
                os.close(cause_r)
                self.become_lane(template_pid)
                code = _run_lane(instance_id, token, self.settings, cause_w)
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        os.close(cause_w)
        os.set_blocking(cause_r, False)
        self.causes[pid] = cause_r
        self.children[pid] = instance_id
        self.send(op="spawned", req=req, pid=pid, instance_id=instance_id)

    def become_lane(self, template_pid: int) -> None:
        """In the forked child: drop the template's plumbing, die with the template."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        self.selector.close()
        self.sock.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        for fd in self.causes.values():  # the other lanes' pipes are none of ours
            os.close(fd)
        self.causes.clear()
        self.children.clear()
        _die_with_parent(template_pid)
        guard_process()  # inherited from the template already; said again, explicitly
        _set_name(b"mp-lane")
        gc.enable()

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            instance_id = self.children.pop(pid, None)
            cause = self.read_cause(pid)
            if instance_id is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            self.send(
                op="exited",
                instance_id=instance_id,
                pid=pid,
                exit_code=code if code >= 0 else None,
                signal=-code if code < 0 else None,
                cause=cause,
            )

    def read_cause(self, pid: int) -> str | None:
        """What the reaped lane ``pid`` wrote on its cause pipe (it is dead: all is there)."""
        fd = self.causes.pop(pid, None)
        if fd is None:
            return None
        try:
            data = os.read(fd, CAUSE_MAX)
        except OSError:
            data = b""
        finally:
            os.close(fd)
        text = data.decode("utf-8", errors="replace").strip()
        return text or None

    def kill_all(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self.read_cause(pid)
        self.children.clear()


def _run_lane(instance_id: str, token: int, settings: Settings, cause_fd: int) -> int:
    """Serve one lane in this (forked) process; exit codes as ``python -m multipair.worker``.

    Why it failed, if it did, goes to ``cause_fd`` in one write (the template reads it).
    """
    # Imported by the template already: this is a dictionary lookup.
    from multipair.worker.__main__ import run

    def on_cause(text: str) -> None:
        data = text.encode("utf-8", errors="replace")[:CAUSE_MAX]
        with contextlib.suppress(OSError):
            os.write(cause_fd, data)

    try:
        return run(instance_id, settings, fencing_token=token, on_cause=on_cause)
    finally:
        with contextlib.suppress(OSError):
            os.close(cause_fd)


# ---------------------------------------------------------------------------
# The supervisor's side (asyncio)


class LaneProcesses(AsyncRunning):
    """The supervisor's handle on the template: spawn lanes, signal them, hear their exits.

    Use as ``async with LaneProcesses(settings) as procs:``; leaving the block
    kills every lane still running and stops the template. Exits arrive on
    :attr:`exits` (``LaneExit``); ``on_exit`` is called as each is queued.
    When the template dies, every lane it had is reported killed (its
    children die with it) and the next :meth:`spawn` starts a new template.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        on_exit: Callable[[], None] | None = None,
        preload: Sequence[str] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.settings = settings
        self.exits: asyncio.Queue[LaneExit] = asyncio.Queue()
        self._on_exit = on_exit
        self._preload = preload
        self._python = python
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[int] | None = None
        self._spawning: dict[int, asyncio.Future[int]] = {}
        self._live: dict[int, str] = {}
        self._next_req = 0
        self._start_lock = asyncio.Lock()

    @property
    def template_pid(self) -> int | None:
        """The template's pid while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    @property
    def live_pids(self) -> dict[int, str]:
        """pid -> instance id of every lane spawned and not yet reported exited."""
        return dict(self._live)

    async def start(self) -> None:
        """Start the template (if it is not running) and wait until it has preloaded."""
        async with self._start_lock:
            if self._writer is not None:
                return
            ours, theirs = socket.socketpair()
            command = [
                self._python,
                "-c",
                "import sys; from multipair.supervisor.procs import template_main; "
                "sys.exit(template_main())",
                "--fd",
                str(theirs.fileno()),
                "--parent",
                str(os.getpid()),
            ]
            if self._preload is not None:
                command += ["--preload", ",".join(self._preload)]
            try:
                # A session of its own: Ctrl-C in a terminal reaches the supervisor
                # only, which then stops the lanes in order (a lane that got the
                # terminal's SIGINT too would take our SIGTERM as a second signal).
                self._proc = await asyncio.create_subprocess_exec(
                    *command,
                    stdin=asyncio.subprocess.DEVNULL,
                    pass_fds=(theirs.fileno(),),
                    start_new_session=True,
                    # No secret in the template's (and so the lanes') environ:
                    # the settings come over the socket.
                    env=private_env(),
                )
            finally:
                theirs.close()
            reader, self._writer = await asyncio.open_unix_connection(sock=ours)
            self._ready = asyncio.get_running_loop().create_future()
            self._reader_task = asyncio.create_task(self._read(reader), name="template-reader")
            self._send(op="init", settings=settings_to_wire(self.settings))
            try:
                async with asyncio.timeout(_READY_TIMEOUT_S):
                    pid = await self._ready
            except BaseException:
                await self.close()
                raise
            log.info("lane template ready", template_pid=pid)

    async def spawn(self, instance_id: str, token: int) -> int:
        """Fork a lane serving ``instance_id`` under fencing ``token``; its pid.

        Raises :class:`RetryLater` when the template could not do it.
        """
        await self.start()
        self._next_req += 1
        req = self._next_req
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._spawning[req] = future
        try:
            self._send(op="spawn", req=req, instance_id=instance_id, token=token)
            async with asyncio.timeout(_SPAWN_TIMEOUT_S):
                return await future
        except TimeoutError:
            raise RetryLater("the lane template did not answer a spawn request") from None
        finally:
            self._spawning.pop(req, None)

    def signal(self, pid: int, signum: int) -> None:
        """Send ``signum`` to a lane (ignored when it has exited meanwhile)."""
        if pid in self._live and self._writer is not None:
            self._send(op="signal", pid=pid, signal=int(signum))

    async def close(self) -> None:
        """Kill every lane still running, stop the template, wait for it."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        proc = self._proc
        if proc is not None:
            try:
                async with asyncio.timeout(_TEMPLATE_CLOSE_TIMEOUT_S):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
            self._reader_task = None
        self._template_gone()

    # -- internals ---------------------------------------------------------

    def _send(self, **message: Any) -> None:
        if self._writer is None:
            raise RetryLater("the lane template is not running")
        self._writer.write(json.dumps(message).encode() + b"\n")

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                self._dispatch(json.loads(line))
        except (ConnectionError, ValueError) as exc:
            log.error("lane template link broken", error=str(exc))
        finally:
            if self._writer is not None:
                log.error("lane template exited; its lanes died with it")
                self._writer.close()
                self._writer = None
            self._template_gone()

    def _dispatch(self, message: Mapping[str, Any]) -> None:
        op = message["op"]
        if op == "ready" and self._ready is not None and not self._ready.done():
            self._ready.set_result(int(message["pid"]))
        elif op == "failed" and self._ready is not None and not self._ready.done():
            self._ready.set_exception(ConfigurationError(str(message["error"])))
        elif op == "spawned":
            pid = int(message["pid"])
            future = self._spawning.get(int(message["req"]))
            self._live[pid] = str(message["instance_id"])
            if future is not None and not future.done():
                future.set_result(pid)
        elif op == "spawn_failed":
            future = self._spawning.get(int(message["req"]))
            if future is not None and not future.done():
                future.set_exception(RetryLater(f"fork failed: {message['error']}"))
        elif op == "exited":
            pid = int(message["pid"])
            self._live.pop(pid, None)
            self._report(
                LaneExit(
                    instance_id=str(message["instance_id"]),
                    pid=pid,
                    exit_code=message["exit_code"],
                    signal=message["signal"],
                    cause=message.get("cause"),
                )
            )

    def _template_gone(self) -> None:
        """Fail pending spawns; report every lane the template had as killed."""
        for future in self._spawning.values():
            if not future.done():
                future.set_exception(RetryLater("the lane template exited"))
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(RetryLater("the lane template exited before it was ready"))
        live, self._live = self._live, {}
        for pid, instance_id in live.items():
            self._report(LaneExit(instance_id, pid, None, int(signal.SIGKILL)))

    def _report(self, exit_: LaneExit) -> None:
        self.exits.put_nowait(exit_)
        if self._on_exit is not None:
            self._on_exit()
