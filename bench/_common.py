"""Shared plumbing of the benchmarks in ``bench/`` (``make bench`` runs every ``bench_*.py``).

Nothing here asserts a time: the scripts measure, print a table and write
``bench/results/<name>.json`` with the machine, the versions, the parameters,
the raw sample counts and the percentiles.

The pieces every benchmark needs:

- :func:`machine_facts`: cores, memory, CPU model, kernel, Python, package
  versions, the ``redis-server`` in use, the git commit.
- :class:`Rig`: a private ``redis-server`` (``tests/redis_server.py``), a
  simulator with N terminals seeded as already paired with ``POS1`` under
  the test keys (``tests/simulator/helpers.py``) running as ``multipair
  simulate`` in its own process, N lane profiles holding the same keys, and
  ``multipair supervise`` (or ``python -m multipair.supervisor``) as a
  subprocess, everything logged into one work folder and stopped on exit.
- PSS / USS / CPU time of processes from ``/proc``; percentiles; tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import functools
import importlib.metadata
import os
import platform
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # tests.redis_server, tests.simulator.helpers
    sys.path.insert(0, str(REPO))

import redis.asyncio as aioredis  # noqa: E402

from multipair import broker_schema as bs  # noqa: E402
from multipair.simulator import serial_for  # noqa: E402
from multipair.store.profiles import LaneProfile, ProfileStore  # noqa: E402
from multipair.store.secrets_box import MasterKey  # noqa: E402

try:  # the test helper (importable without pytest) ...
    from tests.redis_server import RedisServer, find_redis_server
except ImportError:  # ... or its successor inside the package
    from multipair.embedded import RedisServer, find_redis_server  # type: ignore[no-redef]
from tests.simulator.helpers import KEYS, seed_paired_state  # noqa: E402

RESULTS = REPO / "bench" / "results"
PACKAGES = ("redis", "websockets", "cryptography", "orjson", "aiohttp", "structlog", "multipair")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


# ---------------------------------------------------------------------------
# Facts, numbers, output


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            name, _, rest = line.partition(":")
            out[name] = int(rest.split()[0])
    return out


def mem_available_mib() -> float:
    return _meminfo()["MemAvailable"] / 1024


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _redis_server_version(path: str | None) -> str | None:
    if path is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(  # noqa: S603
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
        return out.stdout.strip()
    return None


def _git(*args: str) -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(  # noqa: S603 - read-only queries
            [git, "-C", str(REPO), *args], capture_output=True, text=True, timeout=10, check=False
        )
        return out.stdout.strip() if out.returncode == 0 else None
    return None


def machine_facts() -> dict[str, Any]:
    """Where and with what the figures were measured."""
    mem = _meminfo()
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    server = find_redis_server()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    status = _git("status", "--porcelain")
    return {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_total_mib": round(mem["MemTotal"] / 1024),
        "memory_available_mib_at_start": round(mem["MemAvailable"] / 1024),
        "swap_total_mib": round(mem.get("SwapTotal", 0) / 1024),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "packages": versions,
        "redis_server": {"path": server, "version": _redis_server_version(server)},
        "rlimit_nofile": [soft, hard],
        "git_commit": _git("rev-parse", "HEAD"),
        # The benchmarks' own output (bench/results/) does not make a tree dirty.
        "git_dirty": None
        if status is None
        else any(not line[2:].strip().startswith("bench/results/") for line in status.splitlines()),
    }


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (children inherit it); the new limits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not sorted_values:
        return float("nan")
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return float(sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low))


def summary_ms(samples_ns: Iterable[int]) -> dict[str, Any]:
    """count, min, p50, p95, p99, max, mean in milliseconds (3 decimals)."""
    values = sorted(v / 1e6 for v in samples_ns)
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "min": round(values[0], 3),
        "p50": round(percentile(values, 50), 3),
        "p95": round(percentile(values, 95), 3),
        "p99": round(percentile(values, 99), 3),
        "max": round(values[-1], 3),
        "mean": round(sum(values) / len(values), 3),
    }


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain text table with right-aligned columns (left for the first)."""
    cells = [[str(h) for h in headers]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        parts = [
            row[i].ljust(widths[i]) if i == 0 else row[i].rjust(widths[i]) for i in range(len(row))
        ]
        lines.append("  ".join(parts))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """``bench/results/<name>.json`` (indented, keys in insertion order)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2) + b"\n")
    return path


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def say(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# /proc


def rollup_kib(pid: int) -> dict[str, int]:
    """``/proc/<pid>/smaps_rollup`` figures in KiB (Pss, Rss, Private_*, ...); {} if gone."""
    figures: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                name, _, rest = line.partition(":")
                parts = rest.split()
                if len(parts) == 2 and parts[1] == "kB":
                    figures[name] = int(parts[0])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    return figures


def memory_of(pids: Iterable[int]) -> dict[str, Any]:
    """Summed PSS, USS (private) and RSS in MiB of ``pids``, and how many were readable."""
    pss = uss = rss = 0
    count = 0
    for pid in pids:
        r = rollup_kib(pid)
        if not r:
            continue
        count += 1
        pss += r.get("Pss", 0)
        uss += r.get("Private_Clean", 0) + r.get("Private_Dirty", 0)
        rss += r.get("Rss", 0)
    return {
        "processes": count,
        "pss_mib": round(pss / 1024, 2),
        "uss_mib": round(uss / 1024, 2),
        "rss_mib": round(rss / 1024, 2),
    }


def _writable_ranges(pid: int) -> list[tuple[int, int]]:
    ranges = []
    with open(f"/proc/{pid}/maps", encoding="ascii") as f:
        for line in f:
            parts = line.split()
            if "w" in parts[1]:
                start, end = (int(x, 16) for x in parts[0].split("-"))
                ranges.append((start, end))
    return ranges


def _frames(pid: int, start: int, end: int) -> list[int | None]:
    """Physical frame of each page in [start, end) of ``pid`` (None: not present)."""
    page = PAGE_KIB * 1024
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(start // page * 8)
        data = f.read((end - start) // page * 8)
    out: list[int | None] = []
    for (entry,) in struct.iter_unpack("Q", data):
        out.append(entry & ((1 << 55) - 1) if entry >> 63 & 1 else None)
    return out


def cow_breakdown(template: int, lane: int) -> dict[str, Any]:
    """Where a forked lane's writable memory is: still shared with the template, copied
    from it on write, or new. Needs root (page frame numbers); else says why not."""
    shared = copied = new = 0
    try:
        for start, end in _writable_ranges(lane):
            mine = _frames(lane, start, end)
            try:
                theirs = _frames(template, start, end)
            except OSError:
                theirs = [None] * len(mine)
            for index, frame in enumerate(mine):
                if frame is None:
                    continue
                parent = theirs[index] if index < len(theirs) else None
                if frame == 0:
                    return {"unavailable": "page frame numbers hidden (not root)"}
                if parent == frame:
                    shared += 1
                elif parent is None:
                    new += 1
                else:
                    copied += 1
    except OSError as exc:
        return {"unavailable": repr(exc)}
    mib = PAGE_KIB / 1024
    return {
        "shared_with_template_mib": round(shared * mib, 2),
        "copied_on_write_mib": round(copied * mib, 2),
        "new_mib": round(new * mib, 2),
    }


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (its own, not its children's); 0.0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_of(pid: int) -> set[int]:
    """Direct children of ``pid`` (from ``/proc/<pid>/task/*/children``)."""
    found: set[int] = set()
    with contextlib.suppress(FileNotFoundError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with (
                contextlib.suppress(FileNotFoundError),
                open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f,
            ):
                found |= {int(p) for p in f.read().split()}
    return found


def fd_count(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return None


# ---------------------------------------------------------------------------
# The rig: Redis, simulator, profiles, supervisor


def _die_with_us() -> None:
    """In a child before exec: SIGTERM when the benchmark dies (no stray simulators)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def run(main: Coroutine[Any, Any, int]) -> int:
    """``asyncio.run(main)`` where SIGTERM / SIGINT cancel ``main``, so every rig cleans up."""

    async def guarded() -> int:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)  # type: ignore[union-attr]
        return await main

    try:
        return asyncio.run(guarded())
    except asyncio.CancelledError:
        say("interrupted: cleaned up")
        return 130


@functools.cache
def _cli_has_supervise() -> bool:
    probe = subprocess.run(
        [sys.executable, "-m", "multipair.cli", "supervise", "--help"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return probe.returncode == 0


def supervise_command(host_id: str, capacity: int) -> list[str]:
    """``multipair supervise`` when the CLI has it, else ``python -m multipair.supervisor``."""
    args = ["--host-id", host_id, "--capacity", str(capacity)]
    if _cli_has_supervise():
        return [sys.executable, "-m", "multipair.cli", "supervise", *args]
    return [sys.executable, "-m", "multipair.supervisor", *args]


class SupervisorLog:
    """Reads the supervisor's JSON log (its lanes' too) as it grows; counts the trouble."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.kill_reasons: dict[str, int] = {}
        self.warnings: dict[str, int] = {}
        self.samples: dict[str, str] = {}

    def read(self) -> None:
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n")
        if end < 0:
            return
        self.offset += end + 1
        for line in data[: end + 1].splitlines():
            if b'"warning"' not in line and b'"error"' not in line:
                continue
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if entry.get("level") not in ("warning", "error"):
                continue
            event = str(entry.get("event"))
            self.warnings[event] = self.warnings.get(event, 0) + 1
            if event == "lane killed":
                reason = str(entry.get("reason"))
                self.kill_reasons[reason] = self.kill_reasons.get(reason, 0) + 1
            detail = entry.get("error") or entry.get("detail") or entry.get("reason")
            if detail is not None and event not in self.samples:
                self.samples[event] = str(detail)[:200]

    def kills(self) -> int:
        return sum(self.kill_reasons.values())

    def describe(self) -> str:
        top = sorted(self.warnings.items(), key=lambda kv: -kv[1])[:4]
        parts = [f"{n}x {event!r} ({self.samples.get(event, '')})" for event, n in top]
        return f"{self.kills()} killed {self.kill_reasons}; " + "; ".join(parts)

    def summary(self) -> dict[str, Any]:
        self.read()
        return {
            "kills_by_reason": dict(self.kill_reasons),
            "warnings_by_event": dict(self.warnings),
            "first_detail_by_event": dict(self.samples),
        }


@dataclass
class Rig:
    """One benchmark's world; use as ``async with Rig(n) as rig:``.

    ``terminals`` terminals are seeded paired; ``lanes`` of them (default:
    all) get a lane profile. The simulator keeps its state in ``/dev/shm``
    when it exists (its per-transaction ``fsync`` then costs nothing, as on a
    real terminal it costs the terminal, not us).
    """

    terminals: int
    lanes: int | None = None
    prefix: str = "mp"
    host_id: str = "bench-host"
    sim_log_level: str = "warning"
    redis_aof: bool = False
    redis_args: tuple[str, ...] = ()
    """More ``redis-server`` options (``("--appendfsync", "always")``)."""
    keep: bool = False
    work: Path = field(init=False)
    redis_server: Any = field(init=False, default=None)
    redis: aioredis.Redis = field(init=False)
    master: MasterKey = field(init=False, default_factory=MasterKey.generate)
    manifest: dict[str, Any] = field(init=False, default_factory=dict)
    instance_ids: list[str] = field(init=False, default_factory=list)
    sim_proc: subprocess.Popen[bytes] | None = field(init=False, default=None)
    sup_proc: subprocess.Popen[bytes] | None = field(init=False, default=None)
    sup_command: list[str] = field(init=False, default_factory=list)
    sup_started_ns: int = field(init=False, default=0)
    sup_started_wall: float = field(init=False, default=0.0)
    timings: dict[str, float] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108
        self.work = Path(tempfile.mkdtemp(prefix="multipair-bench-", dir=base))

    @property
    def keys(self) -> bs.Keys:
        return bs.Keys(self.prefix)

    async def __aenter__(self) -> Rig:
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _start(self) -> None:
        t = time.perf_counter()
        extra = ("--maxclients", "20000", *self.redis_args)
        self.redis_server = RedisServer(
            data_dir=self.work / "redis", appendonly=self.redis_aof, extra_args=extra
        )
        self.redis_server.start()
        # Many blocking readers at once: lift redis-py's default pool limit of 100.
        self.redis = aioredis.Redis.from_url(
            self.redis_server.url, max_connections=100_000, client_name="bench"
        )
        state_dir = self.work / "sim"
        for index in range(self.terminals):
            seed_paired_state(state_dir, serial_for(index))
        manifest_path = self.work / "manifest.json"
        with (self.work / "simulator.log").open("ab") as log:
            # Popen, not asyncio's: the handle outlives loops and is polled/killed in close().
            self.sim_proc = subprocess.Popen(  # noqa: S603, ASYNC220
                [
                    sys.executable,
                    "-m",
                    "multipair.cli",
                    "simulate",
                    "--terminals",
                    str(self.terminals),
                    "--state-dir",
                    str(state_dir),
                    "--manifest",
                    str(manifest_path),
                    "--log-level",
                    self.sim_log_level,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self._env(),
                preexec_fn=_die_with_us,
            )
        deadline = time.monotonic() + 120 + self.terminals * 0.2
        while not manifest_path.exists():
            if self.sim_proc.poll() is not None:
                raise RuntimeError(f"simulator exited: see {self.work / 'simulator.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError("simulator did not write its manifest in time")
            await asyncio.sleep(0.05)
        self.manifest = orjson.loads(manifest_path.read_bytes())
        self.timings["simulator_start_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        profiles = ProfileStore(self.redis, self.keys, self.master)
        count = self.terminals if self.lanes is None else self.lanes
        sem = asyncio.Semaphore(32)

        async def add(term: dict[str, Any]) -> str:
            async with sem:
                profile = await profiles.create(
                    LaneProfile(
                        pos_id="POS1", serial_number=term["serial"], device_address=term["ws_url"]
                    )
                )
                await profiles.save_secrets(profile.instance_id, KEYS)
                return profile.instance_id

        self.instance_ids = list(
            await asyncio.gather(*(add(t) for t in self.manifest["terminals"][:count]))
        )
        self.timings["profiles_s"] = round(time.perf_counter() - t, 3)

    @functools.cached_property
    def sup_log(self) -> SupervisorLog:
        return SupervisorLog(self.work / "supervisor.log")

    def _env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIPAIR_")}
        env.update(
            MULTIPAIR_REDIS_URL=self.redis_server.url if self.redis_server else "",
            MULTIPAIR_PREFIX=self.prefix,
            MULTIPAIR_MASTER_KEY=self.master.to_base64(),
            MULTIPAIR_LOG_FORMAT="json",
            MULTIPAIR_HOST_ID=self.host_id,
        )
        env.update(extra)
        return env

    def start_supervisor(
        self,
        capacity: int | None = None,
        command: list[str] | None = None,
    ) -> None:
        """Start ``multipair supervise`` for this rig's lanes (a subprocess, logging to a file)."""
        cap = capacity if capacity is not None else max(len(self.instance_ids), 1)
        self.sup_command = command or supervise_command(self.host_id, cap)
        with (self.work / "supervisor.log").open("ab") as log:
            self.sup_started_wall = time.time()
            self.sup_started_ns = time.perf_counter_ns()
            self.sup_proc = subprocess.Popen(  # noqa: S603
                self.sup_command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self._env(),
                preexec_fn=_die_with_us,
            )

    async def host_entry(self) -> dict[str, Any] | None:
        raw = await self.redis.hget(self.keys.hosts(), self.host_id)
        return None if raw is None else orjson.loads(raw)

    async def template_pid(self, limit_s: float = 60) -> int:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            entry = await self.host_entry()
            if entry and entry.get("template_pid"):
                return int(entry["template_pid"])
            self._check_supervisor()
            await asyncio.sleep(0.05)
        raise RuntimeError("the supervisor never reported its template")

    def _check_supervisor(self) -> None:
        if self.sup_proc is not None and self.sup_proc.poll() is not None:
            raise RuntimeError(
                f"supervisor exited with {self.sup_proc.returncode}: "
                f"see {self.work / 'supervisor.log'}"
            )

    async def lane_states(self, ids: Sequence[str] | None = None) -> list[tuple[str, str]]:
        """(status, pid) of each lane, in the order of ``ids`` (default: all)."""
        ids = self.instance_ids if ids is None else ids
        async with self.redis.pipeline(transaction=False) as pipe:
            for iid in ids:
                pipe.hmget(self.keys.state(iid), ["status", "pid"])
            replies = await pipe.execute()
        return [
            ((s or b"").decode(), (p or b"").decode())
            for s, p in replies  # type: ignore[misc]
        ]

    async def wait_connected(
        self,
        limit_s: float,
        poll_s: float = 0.05,
        *,
        stall_s: float = 60.0,
        max_kills: int | None = None,
    ) -> tuple[dict[str, int], str | None]:
        """Poll until every lane is ``paired_connected``; when each was first seen so
        (perf_counter_ns), and why it stopped early (None: all connected within ``limit_s``).

        Stops early when no new lane connected for ``stall_s``, or when the
        supervisor's log shows more than ``max_kills`` lanes killed (a limit hit:
        lease renewals failing, heartbeats missed), and says so."""
        seen: dict[str, int] = {}
        pending = list(self.instance_ids)
        start = time.monotonic()
        deadline = start + limit_s
        progress_at = start
        while pending:
            now = time.monotonic()
            if now > deadline:
                return seen, f"timeout: {len(seen)} of {len(self.instance_ids)} in {limit_s:.0f} s"
            if now - progress_at > stall_s:
                return seen, f"stalled: no lane connected for {stall_s:.0f} s"
            self._check_supervisor()
            if max_kills is not None:
                self.sup_log.read()
                if self.sup_log.kills() > max_kills:
                    return seen, f"lanes killed by the supervisor: {self.sup_log.describe()}"
            states = await self.lane_states(pending)
            stamp = time.perf_counter_ns()
            still = []
            for iid, (status, _) in zip(pending, states, strict=True):
                if status == "paired_connected":
                    seen[iid] = stamp
                    progress_at = time.monotonic()
                else:
                    still.append(iid)
            pending = still
            if pending:
                await asyncio.sleep(poll_s)
        return seen, None

    async def lane_pids(self) -> list[int]:
        return [int(p) for _, p in await self.lane_states() if p]

    def pids(self) -> dict[str, int | None]:
        return {
            "redis": self.redis_server.pid if self.redis_server else None,
            "simulator": self.sim_proc.pid if self.sim_proc else None,
            "supervisor": self.sup_proc.pid if self.sup_proc else None,
        }

    async def stop_supervisor(self, limit_s: float = 60) -> float | None:
        """SIGTERM the supervisor, wait for it (SIGKILL after ``limit_s``); seconds it took."""
        proc, self.sup_proc = self.sup_proc, None
        if proc is None or proc.poll() is not None:
            return None
        t = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, limit_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None
        return round(time.perf_counter() - t, 3)

    async def close(self) -> None:
        await self.stop_supervisor(limit_s=20)
        sim, self.sim_proc = self.sim_proc, None
        if sim is not None and sim.poll() is None:
            sim.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(sim.wait, 20)
            except subprocess.TimeoutExpired:
                sim.kill()
                sim.wait()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        if self.redis_server is not None:
            self.redis_server.stop()
            self.redis_server = None
        if self.keep:
            say(f"kept the work folder {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


FINAL_EVENTS = frozenset({"transaction_completed", "command_rejected", "transaction_lookup"})


async def last_event_id(redis: aioredis.Redis, stream: str) -> str:
    """The id of the newest entry of ``stream`` ("0" when empty): read from there on."""
    newest: Any = await redis.xrevrange(stream, count=1)
    return newest[0][0].decode() if newest else "0"


async def purchase_via_redis(
    redis: aioredis.Redis, keys: bs.Keys, iid: str, ref: str, cents: int = 1000
) -> dict[str, Any]:
    """XADD one purchase and read the lane's events until its final event; that event."""
    stream = keys.events(iid)
    last = await last_event_id(redis, stream)
    command_id = f"c-{ref}"
    body = {"command_id": command_id, "type": "purchase", "pos_ref_id": ref, "amount_cents": cents}
    await redis.xadd(keys.commands(iid), {"v": "1", "body": orjson.dumps(body)})
    while True:
        reply: Any = await redis.xread({stream: last}, count=100, block=30_000)
        if not reply:
            raise TimeoutError(f"no final event for {command_id} within 30 s")
        for entry_id, fields in reply[0][1]:
            last = entry_id.decode()
            event = orjson.loads(fields[b"body"])
            if event.get("command_id") == command_id and event["type"] in FINAL_EVENTS:
                return dict(event)


def loadavg() -> list[float]:
    with open("/proc/loadavg", encoding="ascii") as f:
        return [float(x) for x in f.read().split()[:3]]


def system_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (all cores, from ``/proc/stat``)."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


@contextlib.contextmanager
def cpu_meter(pids: dict[str, Sequence[int]]) -> Iterator[dict[str, float]]:
    """CPU seconds each named group of processes used inside the block, the whole
    machine's busy seconds, and ``others``: what processes not ours used (noise)."""
    before = {name: sum(cpu_seconds(p) for p in group) for name, group in pids.items()}
    busy = system_busy_seconds()
    out: dict[str, float] = {}
    t = time.perf_counter()
    yield out
    out["wall_s"] = round(time.perf_counter() - t, 3)
    ours = 0.0
    for name, group in pids.items():
        out[name] = round(sum(cpu_seconds(p) for p in group) - before[name], 3)
        ours += out[name]
    out["machine_busy_s"] = round(system_busy_seconds() - busy, 3)
    out["others"] = round(max(0.0, out["machine_busy_s"] - ours), 3)
