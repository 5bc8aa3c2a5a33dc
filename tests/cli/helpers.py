"""Run the real ``multipair`` script as a subprocess, the way ops and scripts do."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

WAIT = 30.0

_SCRIPT = Path(sys.executable).parent / "multipair"
MODULE = (sys.executable, "-m", "multipair.cli")  # the CLI as a module of this interpreter


def script() -> list[str]:
    """The installed console script; ``python -m multipair.cli`` where there is none."""
    if _SCRIPT.exists():
        return [str(_SCRIPT)]
    return list(MODULE)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any ``MULTIPAIR_*`` (the test says what it wants)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIPAIR_")}
    env.update(extra)
    return env


async def start(
    *args: str,
    stderr: int | IO[bytes],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    command: Sequence[str] | None = None,
) -> asyncio.subprocess.Process:
    """``multipair ARGS`` (``command ARGS`` if given) started with its stdout piped.

    It runs in ``cwd`` (default: here) with ``env`` (default: :func:`clean_env`).
    """
    return await asyncio.create_subprocess_exec(
        *(script() if command is None else command),
        *args,
        cwd=cwd,
        env=clean_env() if env is None else env,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
    )


@dataclass
class Result:
    """A finished command: exit code, stdout, stderr."""

    argv: list[str]
    code: int
    out: str
    err: str

    def json(self) -> Any:
        """Stdout as exactly one JSON document."""
        return json.loads(self.out)

    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.out.splitlines() if line]

    def error_lines(self) -> list[str]:
        return self.err.splitlines()

    def __repr__(self) -> str:  # what pytest shows when an assert fails
        return f"Result(code={self.code}, argv={self.argv[1:]}, out={self.out!r}, err={self.err!r})"


@dataclass
class Running:
    """A command still running (``--follow``, ``--watch``, a purchase waiting for a step)."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)

    async def line(self, timeout: float = WAIT) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            raise AssertionError(f"stdout closed; lines so far: {self.lines}")
        text = raw.decode().rstrip("\n")
        self.lines.append(text)
        return text

    async def until(self, predicate: Callable[[str], bool], timeout: float = WAIT) -> str:
        """Read stdout lines until one matches; returns it."""
        async with asyncio.timeout(timeout):
            while True:
                text = await self.line(timeout)
                if predicate(text):
                    return text

    async def interrupt(self) -> None:
        """Ctrl-C."""
        self.proc.send_signal(signal.SIGINT)

    async def finish(self, timeout: float = WAIT) -> Result:
        out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        assert self.proc.returncode is not None
        rest = out.decode()
        return Result(
            [], self.proc.returncode, "\n".join([*self.lines, rest]).lstrip("\n"), err.decode()
        )

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@dataclass
class Cli:
    """``multipair --redis-url URL --prefix P [--json] ...`` against the test session's Redis."""

    redis_url: str
    prefix: str
    env: dict[str, str] = field(default_factory=clean_env)

    def argv(self, args: tuple[str, ...], *, json: bool) -> list[str]:
        options = ["--redis-url", self.redis_url, "--prefix", self.prefix]
        return [*script(), *options, *(["--json"] if json else []), *args]

    async def run(
        self, *args: str, json: bool = True, timeout: float = WAIT, stdin: bytes | None = None
    ) -> Result:
        argv = self.argv(args, json=json)
        return await run(argv, env=self.env, timeout=timeout, stdin=stdin)

    async def start(self, *args: str, json: bool = True) -> Running:
        proc = await asyncio.create_subprocess_exec(
            *self.argv(args, json=json),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )
        return Running(proc)


async def run(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = WAIT,
    stdin: bytes | None = None,
) -> Result:
    """Run a command to its end."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env if env is not None else clean_env(),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Result(argv, proc.returncode, out.decode(), err.decode())
