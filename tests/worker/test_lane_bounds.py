"""Bounded input: no entry size and no flood makes a lane or Redis grow without bound.

Three 20 MB entries and then a flood of 10,000 bad ones are sent to a real
lane process; it must refuse them, keep only a few KiB of each in its dead
letters, trim its commands stream, and stay about the size it was. The
figures are measured and asserted with generous margins (the point is
"bounded", not a benchmark).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from multipair.worker.lane import DEAD_LETTER_KEEP_BYTES
from tests.worker.helpers import LaneRig

MIB = 1024 * 1024


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def _used_memory(redis: aioredis.Redis) -> int:
    info: Any = await redis.info("memory")
    return int(info["used_memory"])


async def _purchase_works(rig: LaneRig, ref: str) -> None:
    done = await rig.answer(
        await rig.send({"type": "purchase", "pos_ref_id": ref, "amount_cents": 500})
    )
    assert "success" == done["result"], done


async def test_huge_entries_are_refused_unread_and_leave_a_small_dead_letter(
    lane: LaneRig, redis: aioredis.Redis
) -> None:
    assert lane.process.proc is not None
    pid = lane.process.proc.pid
    await _purchase_works(lane, "warm-1")
    rss_before = _rss(pid)
    redis_before = await _used_memory(redis)
    stream = lane.keys.commands(lane.instance_id)
    big = b"x" * (20 * MIB)
    for n in range(3):
        body = b'{"command_id":"huge-%d","type":"purchase","pad":"' % n + big + b'"}'
        await redis.xadd(stream, {"v": "1", "body": body})
    await lane.wait_acknowledged(60)
    refused = lane.events.of_type("command_rejected", reason="oversize")
    # Refused unread: the command_id is not echoed, the entry id is.
    assert 3 == len(refused), refused
    assert [None] * 3 == [r["command_id"] for r in refused]
    dead: Any = await redis.xrange(lane.keys.dead_letter(lane.instance_id))
    assert 3 == len(dead)
    for _, fields in dead:
        kept = sum(len(k) + len(v) for k, v in fields.items())
        assert kept < DEAD_LETTER_KEEP_BYTES + 1024, kept
        assert b"1" == fields[b"truncated"]
        assert int(fields[b"size"]) > 20 * MIB
        assert 64 == len(fields[b"sha256"])
    first = dead[0][1]
    assert (
        first[b"sha256"]
        == _sha256_of(
            [
                (b"v", b"1"),
                (b"body", b'{"command_id":"huge-0","type":"purchase","pad":"' + big + b'"}'),
            ]
        ).encode()
    )
    # The lane goes on, at about its size; Redis holds none of the 60 MB.
    await _purchase_works(lane, "after-huge")
    rss_after = _rss(pid)
    redis_after = await _used_memory(redis)
    print(
        f"lane RSS {rss_before / MIB:.1f} -> {rss_after / MIB:.1f} MiB; "
        f"Redis used_memory {redis_before / MIB:.1f} -> {redis_after / MIB:.1f} MiB"
    )
    assert rss_after < rss_before + 40 * MIB, (rss_before, rss_after)
    # What Redis keeps of them: the stream and the dead letters are small again.
    # (used_memory also counts client buffers, which Redis shrinks lazily.)
    stream_bytes = int(await redis.memory_usage(stream) or 0)
    dead_bytes = int(await redis.memory_usage(lane.keys.dead_letter(lane.instance_id)) or 0)
    print(f"commands stream {stream_bytes} B, dead letters {dead_bytes} B")
    assert stream_bytes < 64 * 1024, stream_bytes
    assert dead_bytes < 64 * 1024, dead_bytes
    assert await redis.xlen(stream) < 10


def _sha256_of(pairs: list[tuple[bytes, bytes]]) -> str:
    digest = hashlib.sha256()
    for name, value in pairs:
        for part in (name, value):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()


async def test_a_flood_of_bad_entries_leaves_the_commands_stream_bounded(
    lane: LaneRig, redis: aioredis.Redis
) -> None:
    stream = lane.keys.commands(lane.instance_id)
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(10_000):
            pipe.xadd(stream, {"v": "1", "body": b"{not json %d" % n})
        await pipe.execute()
    await lane.wait_acknowledged(180)
    await _purchase_works(lane, "after-flood")
    length = await redis.xlen(stream)
    print(f"commands stream after 10,000 refused entries: {length} entries")
    assert length < 600, length
    state = await lane.state()
    assert lane.process.proc is not None
    assert lane.process.proc.returncode is None
    assert "paired_connected" == state["status"]
