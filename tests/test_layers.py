"""The rules the rooms keep (docs/architecture.md): which way imports go, and which
modules stay pure (no I/O, no clock). A new import that crosses a rule fails here,
with the rule it broke, before a reviewer has to spot it."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

SRC: Final = Path(__file__).resolve().parents[1] / "src" / "multipair"

# Room -> the rooms it may import. A room is a top-level module or package of
# multipair. Lower rooms never import higher ones; the table is the picture in
# docs/architecture.md.
_BASE: Final = frozenset({"exceptions", "lifecycle"})
_UTIL: Final = _BASE | {"logs", "failpoints", "hardening", "envfile", "redis_conn"}
ALLOWED: Final[dict[str, frozenset[str]]] = {
    "exceptions": frozenset(),
    "lifecycle": frozenset(),
    "logs": _BASE,
    "failpoints": _BASE,
    "hardening": _BASE,
    "envfile": _BASE,
    "redis_conn": _BASE,
    "embedded": _BASE,
    # The protocol: pure, knows nothing of Redis, lanes or the contract.
    "spi": _BASE,
    # The Redis contract: names the protocol's states, nothing else of ours.
    "broker_schema": _BASE | {"spi"},
    "leases": _UTIL | {"broker_schema"},
    "store": _UTIL | {"broker_schema", "leases", "spi"},
    "config": _UTIL | {"broker_schema", "spi", "store"},
    # The simulated terminal: the protocol's other side, no Redis.
    "simulator": _BASE | {"spi", "logs"},
    "worker": _UTIL | {"broker_schema", "config", "leases", "spi", "store"},
    "direct": _UTIL | {"spi", "worker"},
    "supervisor": _UTIL | {"broker_schema", "config", "leases", "store", "worker"},
    "client": _UTIL | {"broker_schema", "config", "leases", "store", "supervisor"},
    "jobs": _UTIL | {"broker_schema", "client", "config", "store"},
    "stack": _UTIL | {"broker_schema", "client", "config", "embedded", "store"},
    "console": _UTIL | {"broker_schema", "cli", "client", "config", "store", "supervisor"},
    "cli": _UTIL
    | {
        "broker_schema",
        "client",
        "config",
        "console",
        "jobs",
        "leases",
        "simulator",
        "store",
        "supervisor",
        "up",
    },
    "demo": _UTIL | {"broker_schema", "client", "stack"},
    "up": _UTIL | {"broker_schema", "cli", "config", "console", "stack"},
}

# Modules that decide without doing: no sockets, no Redis, no event loop, no clock.
# Time comes in as an argument.
PURE: Final = (
    "spi",
    "broker_schema",
    "supervisor/decide.py",
    "supervisor/policy.py",
    "worker/admission.py",
    "worker/translate.py",
    "worker/pat_replies.py",
    "console/views.py",
    "jobs/reconcile.py",
)
_IMPURE_MODULES: Final = frozenset(
    {"asyncio", "socket", "time", "redis", "websockets", "subprocess", "os", "threading"}
)
_CLOCK_CALLS: Final = frozenset({"now", "utcnow", "today", "time", "monotonic"})


def _room_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _module_of(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, source: str | None = None) -> Iterator[tuple[int, str]]:
    """Every absolute module name ``path`` imports (nested and ``TYPE_CHECKING``
    imports too), relative imports resolved. ``source`` overrides the file's text."""
    module = _module_of(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    text = path.read_text() if source is None else source
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            yield node.lineno, name
            for alias in node.names:
                yield node.lineno, f"{name}.{alias.name}"


def _sources() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p.parent != SRC or p.name != "__init__.py")


def test_every_room_is_in_the_table() -> None:
    rooms = {_room_of(p) for p in _sources()} - {"py", "__main__"}
    assert rooms <= set(ALLOWED), f"rooms missing from ALLOWED: {sorted(rooms - set(ALLOWED))}"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_go_the_allowed_way(path: Path) -> None:
    room = _room_of(path)
    wrong = []
    for line, name in _imports(path):
        parts = name.split(".")
        if parts[0] != "multipair" or len(parts) < 2:
            continue
        target = parts[1]
        if target == room or target not in ALLOWED:
            continue  # itself, or a name imported from the package root
        if target not in ALLOWED[room]:
            wrong.append(f"line {line}: {room} -> {target} ({name})")
    assert not wrong, f"{path.relative_to(SRC)} crosses the layering:\n" + "\n".join(wrong)


def _pure_sources() -> list[Path]:
    found: list[Path] = []
    for entry in PURE:
        target = SRC / entry
        found.extend(sorted(target.rglob("*.py")) if target.is_dir() else [target])
    return found


@pytest.mark.parametrize("path", _pure_sources(), ids=lambda p: str(p.relative_to(SRC)))
def test_pure_rooms_do_no_io_and_read_no_clock(path: Path) -> None:
    assert path.exists(), f"{path} is listed as pure but does not exist"
    wrong = [
        f"line {line}: imports {name}"
        for line, name in _imports(path)
        if name.split(".")[0] in _IMPURE_MODULES
    ]
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _CLOCK_CALLS
            and not node.args
            and not node.keywords
        ):
            wrong.append(f"line {node.lineno}: reads the clock (.{node.func.attr}())")
    assert not wrong, f"{path.relative_to(SRC)} is meant to be pure:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import asyncio", {"asyncio"}),
        ("import time as _t", {"time"}),
        ("from asyncio import sleep", {"asyncio", "asyncio.sleep"}),
        ("import redis.asyncio", {"redis.asyncio"}),
        ("def f():\n    import socket\n", {"socket"}),
        ("if TYPE_CHECKING:\n    from time import monotonic\n", {"time", "time.monotonic"}),
        ("from . import crypto", {"multipair.spi", "multipair.spi.crypto"}),
        ("from ..worker import lane", {"multipair.worker", "multipair.worker.lane"}),
        ("import datetime, hmac", {"datetime", "hmac"}),
    ],
)
def test_the_import_scan_sees_every_form_of_import(source: str, expected: set[str]) -> None:
    example = SRC / "spi" / "example.py"
    assert expected == {name for _, name in _imports(example, source)}


_RUNTIME_IO: Final = ("asyncio", "websockets", "redis", "socket")


@pytest.mark.parametrize(
    "path", sorted((SRC / "spi").rglob("*.py")), ids=lambda p: str(p.relative_to(SRC))
)
def test_importing_an_spi_module_pulls_in_no_io_library(path: Path) -> None:
    """The source check above cannot see what a module's imports import in turn:
    a fresh interpreter can. (``time`` is left out: the standard library imports it.)"""
    module = _module_of(path)
    program = (
        f"import sys, {module}\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {_RUNTIME_IO!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False, timeout=60
    )
    assert (0, "[]") == (result.returncode, result.stdout.strip()), result.stderr
