"""Running the published mx51 JavaScript client (js/harness.mjs) against the simulator.

Shared by the interop tests (test_js_client.py tells how the library is run
under Node and why each shim is there; test_js_more_flows.py and
test_js_pay_at_table.py reuse it) and by tests/docs/test_spi_coverage.py,
which reads the installed library's sources. The fixtures are in conftest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from multipair.simulator import SimulatedTerminal
from multipair.spi.crypto import Secrets

JS_DIR = Path(__file__).parent / "js"
HARNESS = JS_DIR / "harness.mjs"
LIBRARY = "@mx51/spi-client-js"
LIBRARY_VERSION = "2.9.13"
NPM_TIMEOUT = 90.0  # inside the 120 s pytest-timeout of the first test
RUN_TIMEOUT = 30.0  # one harness run; each of its own waits gives up after STEP_TIMEOUT
STEP_TIMEOUT = 15.0
RECONNECT_PAUSE_MS = 1500  # 2.9.7+ (§13.8)

Event = dict[str, Any]


# ---------------------------------------------------------------- installing the client


def _installed_matches_lock() -> bool:
    """True when js/node_modules holds exactly what package-lock.json pins."""
    hidden = JS_DIR / "node_modules" / ".package-lock.json"
    if not hidden.exists():
        return False
    wanted = json.loads((JS_DIR / "package-lock.json").read_text())["packages"]
    have = json.loads(hidden.read_text())["packages"]

    def versions(packages: dict[str, Any]) -> dict[str, str | None]:
        return {path: meta.get("version") for path, meta in packages.items() if path}

    if versions(wanted) != versions(have):
        return False
    return all((JS_DIR / path / "package.json").exists() for path in versions(wanted))


def install_client() -> str:
    """The node binary, with js/node_modules installed (npm ci if needed); skips the test
    (with the reason) when that cannot be done. The ``node`` fixture, once per session."""
    node_bin = shutil.which("node")
    if node_bin is None:
        pytest.skip("node is needed to run the mx51 JavaScript client")
    if not _installed_matches_lock():
        npm_bin = shutil.which("npm")
        if npm_bin is None:
            pytest.skip(f"npm is needed to install the mx51 JavaScript client in {JS_DIR}")
        try:
            done = subprocess.run(
                [npm_bin, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
                cwd=JS_DIR,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.skip(f"npm ci did not finish within {NPM_TIMEOUT:g} s in {JS_DIR}")
        if done.returncode != 0:
            pytest.skip(f"npm ci failed in {JS_DIR}: {(done.stderr or done.stdout)[-2000:]}")
    installed = JS_DIR / "node_modules" / LIBRARY / "package.json"
    version = json.loads(installed.read_text())["version"]
    assert LIBRARY_VERSION == version
    return node_bin


# ---------------------------------------------------------------- running the harness


@dataclass
class HarnessRun:
    """What one harness process printed."""

    events: list[Event] = field(default_factory=list)
    returncode: int | None = None
    stderr: str = ""

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e["type"] == kind]

    def one(self, kind: str) -> Event:
        found = self.of(kind)
        assert 1 == len(found), self.explain(f"expected one {kind!r} event, got {len(found)}")
        return found[0]

    def explain(self, what: str) -> str:
        lines = "\n".join(json.dumps(e) for e in self.events)
        tail = self.stderr[-6000:]
        return f"{what}\n--- harness events:\n{lines}\n--- harness stderr (tail):\n{tail}"

    def assert_clean(self) -> None:
        """Exit 0 after the whole plan, and no exception inside the library."""
        problems = self.of("uncaught") + self.of("unhandled_rejection") + self.of("failed")
        assert [] == problems, self.explain("the harness reported problems")
        assert 0 == self.returncode, self.explain(f"harness exit code {self.returncode}")
        assert self.events, self.explain("no events")
        assert "done" == self.events[-1]["type"], self.explain("the plan did not finish")


OnEvent = Callable[[Event], Awaitable[None]]


async def run_harness(
    node: str,
    terminal: SimulatedTerminal,
    plan: list[dict[str, Any]],
    *,
    keys: Secrets | None = None,
    on_event: OnEvent | None = None,
    address: str | None = None,
    tenant: str = "wbc",
    extra: tuple[str, ...] = (),
) -> HarnessRun:
    """Run the harness against ``terminal`` until it exits (or RUN_TIMEOUT).

    The POS is configured with the terminal's address (``address`` overrides)
    and serial number, POS id POS1, and ``tenant``.
    """
    argv = [
        str(HARNESS),
        "--address",
        address or f"{terminal.advertised_host}:{terminal.port}",
        "--pos-id",
        "POS1",
        "--serial",
        terminal.serial,
        "--tenant",
        tenant,
        *extra,
        "--step-timeout",
        f"{STEP_TIMEOUT:g}",
        "--plan",
        json.dumps(plan),
    ]
    if keys is not None:
        argv += ["--enc-key", keys.enc_key, "--hmac-key", keys.hmac_key]
    proc = await asyncio.create_subprocess_exec(
        node,
        *argv,
        cwd=JS_DIR,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    run = HarnessRun()
    stderr = asyncio.ensure_future(proc.stderr.read())
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            async for raw in proc.stdout:
                event: Event = json.loads(raw)
                run.events.append(event)
                if on_event is not None:
                    await on_event(event)
            run.returncode = await proc.wait()
            run.stderr = (await stderr).decode(errors="replace")
    except TimeoutError:
        proc.kill()
        await proc.wait()
        run.stderr = (await stderr).decode(errors="replace")
        pytest.fail(run.explain(f"the harness did not finish within {RUN_TIMEOUT:g} s"))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if not stderr.done():
            stderr.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stderr
    return run


def finished_tx(run: HarnessRun, ref: str) -> Event:
    found = [e for e in run.of("tx_finished") if e["pos_ref_id"] == ref]
    assert 1 == len(found), run.explain(f"expected one finished transaction {ref!r}")
    return found[0]
