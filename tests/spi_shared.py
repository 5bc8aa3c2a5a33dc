"""Where the SPI ground truth lives: ``../shared/spi`` beside the checkout (CI has it there).

Tests that need it call :func:`load_vector` / :func:`load_fixture`, which
skip with a clear reason when the folder is absent. Never copy these files
into the repository: they are the reference, not ours.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_SPI = Path(os.environ.get("MULTIPAIR_SPI_SHARED", REPO.parent / "shared" / "spi"))
VECTORS = SHARED_SPI / "vectors"
FIXTURES = SHARED_SPI / "fixtures"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(
            f"SPI ground truth not found at {path}: check out shared/ beside the repository "
            "or set MULTIPAIR_SPI_SHARED"
        )
    return path


def load_vector(name: str) -> Any:
    """One file of ``shared/spi/vectors`` as JSON, or skip."""
    return json.loads(_require(VECTORS / name).read_text(encoding="utf-8"))


def load_fixture(name: str) -> Any:
    """One file of ``shared/spi/fixtures`` as JSON, or skip."""
    return json.loads(_require(FIXTURES / name).read_text(encoding="utf-8"))


def fixture_names() -> list[str]:
    """Every fixture file name (empty when the folder is absent; the test then skips)."""
    if not FIXTURES.exists():
        return []
    return sorted(p.name for p in FIXTURES.glob("*.json"))
