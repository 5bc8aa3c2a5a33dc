"""The protocol core does no I/O (STYLE.md §1): ``multipair.spi`` imports no I/O library.

Two checks, over every module found under ``src/multipair/spi`` (new modules
are covered without touching this file):

- the source, read with :mod:`ast`, names none of the forbidden packages in
  any ``import`` (module-level or nested, plain or ``from``, submodules too);
- importing the module in a fresh interpreter pulls none of them in
  transitively. ``time`` is only checked in the source: the standard library
  itself imports it.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import multipair.spi

FORBIDDEN_IN_SOURCE = frozenset({"asyncio", "websockets", "redis", "socket", "time"})
FORBIDDEN_AT_RUNTIME = frozenset({"asyncio", "websockets", "redis", "socket"})

SPI_DIR = Path(next(iter(multipair.spi.__path__)))


def _spi_modules() -> list[str]:
    """``multipair.spi`` and every module and subpackage below it, by dotted name."""
    names = [multipair.spi.__name__]
    names += [
        info.name for info in pkgutil.walk_packages(multipair.spi.__path__, prefix="multipair.spi.")
    ]
    return sorted(names)


def _source_of(module: str) -> Path:
    parts = module.split(".")[2:]  # drop "multipair.spi"
    package = SPI_DIR.joinpath(*parts)
    if package.is_dir():
        return package / "__init__.py"
    return package.with_suffix(".py")


def _imported_roots(tree: ast.AST, module: str) -> set[str]:
    """Top-level package of every import in ``tree``; relative imports resolved."""
    roots: set[str] = set()
    is_package = _source_of(module).name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            roots.add(target.split(".")[0])
    return roots


def test_module_list_finds_the_modules_on_disk() -> None:
    """Guards the dynamic list itself: every ``.py`` file under spi/ is in it."""
    on_disk = {
        ".".join(
            ["multipair", *path.relative_to(SPI_DIR.parent).with_suffix("").parts]
        ).removesuffix(".__init__")
        for path in SPI_DIR.rglob("*.py")
    }
    assert on_disk == set(_spi_modules())


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import asyncio", {"asyncio"}),
        ("import time as _t", {"time"}),
        ("from asyncio import sleep", {"asyncio"}),
        ("from websockets.asyncio.client import connect", {"websockets"}),
        ("import redis.asyncio", {"redis"}),
        ("def f():\n    import socket\n", {"socket"}),
        ("if TYPE_CHECKING:\n    from time import monotonic\n", {"time"}),
        ("from . import crypto", {"multipair"}),
        ("import datetime, hmac", {"datetime", "hmac"}),
    ],
)
def test_import_scan_sees_every_form_of_import(source: str, expected: set[str]) -> None:
    assert expected == _imported_roots(ast.parse(source), "multipair.spi.example")


@pytest.mark.parametrize("module", _spi_modules())
def test_spi_source_imports_no_io_library(module: str) -> None:
    path = _source_of(module)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    expected: set[str] = set()
    assert expected == _imported_roots(tree, module) & FORBIDDEN_IN_SOURCE


@pytest.mark.parametrize("module", _spi_modules())
def test_importing_spi_module_pulls_in_no_io_library(module: str) -> None:
    forbidden = sorted(FORBIDDEN_AT_RUNTIME)
    program = (
        f"import sys, {module}\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False, timeout=60
    )
    expected = (0, "[]")
    assert expected == (result.returncode, result.stdout.strip()), result.stderr
