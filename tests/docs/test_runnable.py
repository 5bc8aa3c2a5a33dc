"""Every example in README.md, docs/integration.md and docs/runbook.md runs as written (issue 14).

A fenced block is either *runnable*, its info string saying so and in what
(```` ```bash runnable ````, ``redis`` (lines for ``redis-cli``), ``python``,
``js``), or preceded by ``<!-- not runnable: WHY -->``: no example escapes
unclassified (:func:`test_every_example_runs_or_says_why_not`). The runnable
ones are run against a real stack, ``multipair up --simulate N`` in a fresh
folder, with the docs' lane id (``8a5e2dcc-...``, ``8a5e``) replaced by a
real lane's, its Redis URL for the docs' placeholders and ``pos-host-N`` for
its host id. A block that sends a command (a ``"command_id"`` in an
``XADD``) must see that command answered by the lane, not rejected.

Options after ``runnable``: ``needs=order-17``: the lane has an approved
purchase ``order-17`` before the block runs (for ``tx status`` examples).
Blocks that send fixed ids, or stop and start their lane, get a lane of
their own; the others share one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from tests.cli.helpers import clean_env, script, start
from tests.poll import poll_until
from tests.stack.test_up_private import read_env_file

ROOT = Path(__file__).resolve().parents[2]
DOCS = (ROOT / "README.md", ROOT / "docs" / "integration.md", ROOT / "docs" / "runbook.md")
DOC_LANE = "8a5e2dcc-bfa0-469f-95d7-eec778b08453"
LANGUAGES = ("bash", "redis", "python", "js")
_FENCE = re.compile(r"^(\s*)```(.*)$")
_NOT_RUNNABLE = re.compile(r"^<!-- not runnable: (.+\S) -->$")
_OWN_LANE = ("order-17", "command_id", "lane stop", "lane restart")
_REDIS_ERROR = re.compile(r"^(ERR|WRONGTYPE|NOPERM|NOAUTH|EXECABORT|NOGROUP|NOSCRIPT)\b", re.M)
READY_TIMEOUT_S = 180.0
BLOCK_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    info: str
    text: str
    before: str
    """The last non-blank line before the opening fence."""

    @property
    def words(self) -> list[str]:
        return self.info.split()

    @property
    def runnable(self) -> bool:
        return "runnable" in self.words

    @property
    def language(self) -> str:
        return self.words[0] if self.words else ""

    @property
    def options(self) -> dict[str, str]:
        return dict(w.split("=", 1) for w in self.words if "=" in w)

    @property
    def name(self) -> str:
        return f"{self.path.name}:{self.line}"

    @property
    def own_lane(self) -> bool:
        return any(word in self.text for word in _OWN_LANE)


def blocks_of(path: Path) -> Iterator[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    before = ""
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if match is None:
            if lines[index].strip():
                before = lines[index].strip()
            index += 1
            continue
        indent, info = match.group(1), match.group(2).strip()
        end = index + 1
        while lines[end].strip() != "```":
            end += 1
        text = textwrap.dedent("\n".join(lines[index + 1 : end])) + "\n"
        yield Block(path, index + 1, info, text, before)
        before = ""
        index = end + 1
        del indent


ALL_BLOCKS = [block for path in DOCS for block in blocks_of(path)]
RUNNABLE = [block for block in ALL_BLOCKS if block.runnable]


def test_every_example_runs_or_says_why_not() -> None:
    unclassified = [
        block.name
        for block in ALL_BLOCKS
        if not block.runnable and _NOT_RUNNABLE.match(block.before) is None
    ]
    assert [] == unclassified, "mark each `runnable`, or `<!-- not runnable: WHY -->` before it"
    assert [] == [b.name for b in RUNNABLE if b.language not in LANGUAGES]
    assert 20 <= len(RUNNABLE), len(RUNNABLE)


# ---------------------------------------------------------------------- the stack


@dataclass
class DocStack:
    folder: Path
    env: dict[str, str]
    url: str
    lanes: list[str]
    assigned: dict[str, str] = field(default_factory=dict)
    purchased: set[str] = field(default_factory=set)

    def lane_for(self, block: Block) -> str:
        if block.name not in self.assigned:
            if block.options.get("needs"):
                key = f"needs={block.options['needs']}"
                if key not in self.assigned:
                    self.assigned[key] = self._next()
                self.assigned[block.name] = self.assigned[key]
            elif block.own_lane:
                self.assigned[block.name] = self._next()
            else:
                self.assigned[block.name] = self.lanes[0]
        return self.assigned[block.name]

    def _next(self) -> str:
        taken = set(self.assigned.values()) | {self.lanes[0]}
        return next(lane for lane in self.lanes if lane not in taken)


def _lanes_needed() -> int:
    needs = {b.options["needs"] for b in RUNNABLE if "needs" in b.options}
    own = sum(1 for b in RUNNABLE if b.own_lane and "needs" not in b.options)
    return 1 + own + len(needs)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DocStack]:
    folder = tmp_path_factory.mktemp("docs")
    lanes = _lanes_needed()
    proc = await start(
        *("--json", "up", "--simulate", str(lanes), "--interval", "0.5"),
        cwd=folder,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        ids: list[str] = []
        async with asyncio.timeout(READY_TIMEOUT_S):
            while True:
                line = await proc.stdout.readline()
                assert line, "multipair up ended early"
                doc = json.loads(line)
                rows = doc.get("lanes") or []
                if len(rows) == lanes and all(r["status"] == "paired_connected" for r in rows):
                    ids = [r["instance_id"] for r in sorted(rows, key=lambda r: r["serial_number"])]
                    break
        values = read_env_file(folder / ".multipair" / "env")
        env = clean_env(**values)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        drain = asyncio.create_task(proc.stdout.read())  # keep its pipe from filling up
        yield DocStack(folder, env, values["MULTIPAIR_REDIS_URL"], ids)
        drain.cancel()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _substitute(text: str, lane: str, url: str) -> str:
    text = text.replace(DOC_LANE, lane)
    text = re.sub(r"(?<![0-9a-f-])8a5e(?![0-9a-f-])", lane[:8], text)
    text = re.sub(r"redis://[^\s\"']*@redis\.internal:6379/0", url, text)
    text = text.replace("redis://127.0.0.1:6379", url)
    return re.sub(r"pos-host-\d", "local", text)


async def _run(argv: list[str], stack: DocStack, stdin: str | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=stack.folder,
        env=stack.env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(
            proc.communicate(None if stdin is None else stdin.encode()), BLOCK_TIMEOUT_S
        )
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def _answered(url: str, lane: str, command_ids: list[str]) -> dict[str, str]:
    """Each command's answer type: the first event with its id that ends it."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    found: dict[str, str] = {}

    async def all_answered() -> bool:
        entries: Any = await client.xrange(f"mp:lane:{{{lane}}}:events")
        for _, fields in entries:
            event = json.loads(fields["body"])
            cid = event.get("command_id")
            if cid in command_ids and cid not in found and _ends(event):
                found[cid] = event["type"]
        return not set(command_ids) - set(found)

    try:
        with contextlib.suppress(AssertionError):  # the caller says which went unanswered
            await poll_until(all_answered, "every command answered", 30, interval=0.2)
    finally:
        await client.aclose()
    return found


def _ends(event: dict[str, object]) -> bool:
    return event["type"] not in (
        "command_accepted",
        "transaction_update",
        "status_changed",
        "signature_required",
        "auth_code_required",
    ) or (event["type"] == "command_accepted" and event.get("command_type") == "terminal_status")


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.timeout(400)
@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.name)
async def test_the_example_runs_as_written(block: Block, stack: DocStack, tmp_path: Path) -> None:
    lane = stack.lane_for(block)
    needs = block.options.get("needs")
    if needs is not None and lane not in stack.purchased:
        code, out = await _run(
            [*script(), "tx", "purchase", lane, "--amount", "12.50", "--pos-ref-id", needs], stack
        )
        assert 0 == code, out
        stack.purchased.add(lane)
    text = _substitute(block.text, lane, stack.url)
    if block.language == "bash":
        code, out = await _run(["bash", "-e", "-o", "pipefail", "-c", text], stack)
    elif block.language == "redis":
        cli = shutil.which("redis-cli")
        if cli is None:
            pytest.skip("no redis-cli on PATH")
        code, out = await _run([cli, "--no-auth-warning", "-u", stack.url], stack, stdin=text)
        errors = _REDIS_ERROR.findall(out)
        assert [] == errors, out
    elif block.language == "python":
        program = tmp_path / "example.py"
        program.write_text(text)
        code, out = await _run([sys.executable, str(program)], stack)
    else:
        node = shutil.which("node")
        if node is None:
            pytest.skip("no node on PATH")
        probed, _ = await _run([node, "-e", "require('redis')"], stack)
        if probed != 0:
            pytest.skip("the npm package `redis` is not installed (npm install redis)")
        program = tmp_path / "example.js"
        program.write_text(text)
        code, out = await _run([node, str(program)], stack)
    assert 0 == code, f"{block.name} exited {code}:\n{text}\n---\n{out}"
    sent = sorted(set(re.findall(r"\"command_id\":\"([^\"]+)\"", text))) if "XADD" in text else []
    if sent:
        answers = await _answered(stack.url, lane, sent)
        assert sorted(sent) == sorted(answers), (block.name, answers, out)
        assert "command_rejected" not in answers.values(), (block.name, answers, out)
