"""A man in the middle on the shop network cannot forge or replay a payment outcome.

A real lane process talks to the simulator through a websocket proxy on
loopback that plays the attacker: it forwards every frame both ways, records
the terminal's signed frames, and during a later purchase injects a plaintext
approval and replays the recorded signed replies. It has no keys (the test
uses them only to recognise frames). The lane must report the terminal's true
outcome, and the proxy's frames may show up only as rejections.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.typing import Subprotocol

from multipair.simulator import Simulator
from multipair.spi.envelope import Message, decode_frame, encode_frame, terminal_inner_json
from tests.simulator.helpers import KEYS, Control
from tests.worker.helpers import SERIAL, LaneRig, make_rig


def _message(frame: str | bytes) -> Message | None:
    """What a frame says, read with the test's copy of the keys (the proxy has none)."""
    got = decode_frame(frame, KEYS)
    return getattr(got, "message", None)


def _plain(event: str, msg_id: str, data: dict[str, Any]) -> str:
    inner = terminal_inner_json(Message(id=msg_id, event=event, data=data))
    return encode_frame(inner, secrets=None)


@dataclass
class MitmProxy:
    """Forwards lane <-> terminal frames; records the terminal's; injects on a trigger."""

    upstream: str
    port: int = 0
    from_terminal: list[str] = field(default_factory=list)
    on_pos_frame: Callable[[Message], list[str]] | None = None
    injected: list[str] = field(default_factory=list)
    lane_ws: ServerConnection | None = None

    async def _handle(self, lane: ServerConnection) -> None:
        self.lane_ws = lane
        path = lane.request.path if lane.request is not None else "/"
        query = path[path.index("?") :] if "?" in path else ""
        async with connect(
            self.upstream + query,
            subprotocols=[Subprotocol(lane.subprotocol or "spi.2.9.0")],
            compression=None,
        ) as terminal:
            await asyncio.gather(self._to_terminal(lane, terminal), self._to_lane(terminal, lane))

    async def _to_terminal(self, lane: ServerConnection, terminal: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            async for frame in lane:
                await terminal.send(frame)
                message = _message(frame)
                if message is not None and self.on_pos_frame is not None:
                    for evil in self.on_pos_frame(message):
                        self.injected.append(evil)
                        await lane.send(evil)
        await terminal.close()

    async def _to_lane(self, terminal: ClientConnection, lane: ServerConnection) -> None:
        with contextlib.suppress(Exception):
            async for frame in terminal:
                self.from_terminal.append(str(frame))
                await lane.send(frame)
        await lane.close()

    def recorded(self, event: str, pos_ref_id: str) -> str:
        """A signed frame the terminal sent earlier: ``event`` about ``pos_ref_id``."""
        for frame in self.from_terminal:
            message = _message(frame)
            if message is None or message.event != event:
                continue
            data = message.data or {}
            named = data.get("pos_ref_id") or (data.get("tx") or {}).get("pos_ref_id")
            if named == pos_ref_id:
                return frame
        raise AssertionError(f"the terminal sent no {event} for {pos_ref_id}")

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        async with serve(self._handle, "127.0.0.1", 0, compression=None) as server:
            self.port = server.sockets[0].getsockname()[1]
            yield f"ws://127.0.0.1:{self.port}"


@pytest.fixture
async def proxied(
    redis: aioredis.Redis, redis_url: str, key_prefix: str, tmp_path: Path, sim: Simulator
) -> AsyncIterator[tuple[LaneRig, MitmProxy]]:
    proxy = MitmProxy(upstream=sim.terminals[0].ws_url)
    async with proxy.running() as url:
        lane = await make_rig(redis, redis_url, key_prefix, tmp_path, address=url, secrets=KEYS)
        await lane.process.start()
        try:
            await lane.wait_state(status="paired_connected")
            yield lane, proxy
        finally:
            await lane.process.kill()


async def test_injected_approval_and_replayed_replies_never_decide_a_purchase(
    proxied: tuple[LaneRig, MitmProxy], control: Control
) -> None:
    rig, proxy = proxied
    # An earlier $5 sale, approved, and a lookup of it: both replies are recorded.
    old = await rig.answer(
        await rig.send({"type": "purchase", "pos_ref_id": "old-5", "amount_cents": 500})
    )
    assert "success" == old["result"]
    await rig.answer(await rig.send({"type": "get_transaction", "pos_ref_id": "old-5"}))
    old_response = proxy.recorded("purchase_response", "old-5")
    old_lookup = proxy.recorded("get_transaction_response", "old-5")

    def attack(message: Message) -> list[str]:
        if message.event != "purchase" or message.get("pos_ref_id") != "new-999":
            return []
        approval = {
            "success": True,
            "pos_ref_id": "new-999",
            "purchase_amount": 99_951,
            "host_response_code": "000",
            "host_response_text": "APPROVED",
        }
        return [
            _plain("purchase_response", message.id, approval),
            _plain("get_transaction_response", message.id, {"success": True, "tx": approval}),
            old_response,
            old_lookup,
        ]

    proxy.on_pos_frame = attack
    # The customer takes a while with the card; the bank declines ($999.51: 51 = decline).
    await control.post(SERIAL, "card-delay", {"seconds": 1.5})
    command_id = await rig.send(
        {"type": "purchase", "pos_ref_id": "new-999", "amount_cents": 99_951}
    )
    done = await rig.answer(command_id)
    assert 4 == len(proxy.injected)
    assert ("transaction_completed", "failed", "new-999") == (
        done["type"],
        done["result"],
        done["pos_ref_id"],
    )
    completions = rig.events.of_type("transaction_completed", pos_ref_id="new-999")
    assert 1 == len(completions)
    state = await rig.state()
    assert "2" == state.get("frames_rejected:invalid_signature"), state
    logs = rig.process.logs()
    assert "plaintext 'purchase_response' while keys are held" in logs
    # The two replays were ignored as answers to nothing, not taken as outcomes.
    assert logs.count("terminal message ignored") >= 2
    # And the lane goes on serving.
    after = await rig.answer(
        await rig.send({"type": "purchase", "pos_ref_id": "after-1", "amount_cents": 700})
    )
    assert "success" == after["result"]


async def test_a_burst_of_forged_frames_raises_one_error_and_few_log_lines(
    proxied: tuple[LaneRig, MitmProxy],
) -> None:
    rig, proxy = proxied
    lane_ws = proxy.lane_ws
    assert lane_ws is not None
    for n in range(25):
        await lane_ws.send(_plain("drop_keys", f"evil{n}", {}))
        await lane_ws.send(b"\xff not even json")
    alarm = await rig.events.wait_for(
        lambda b: b["type"] == "error" and b["reason"] == "link_tampering"
    )
    # It fires on the 10th frame of the burst: 5 of each kind so far.
    assert "terminal" == alarm["source"]
    assert alarm["detail"].startswith("10 terminal frames rejected within 60 s")
    assert "5 invalid_signature, 5 not_json" in alarm["detail"]
    # Still paired, still serving; 50 frames counted, one alarm, two log lines.
    done = await rig.answer(
        await rig.send({"type": "purchase", "pos_ref_id": "b-1", "amount_cents": 300})
    )
    assert "success" == done["result"]
    state = await rig.state()
    assert ("50", "paired_connected") == (state["frames_rejected"], state["status"])
    assert 1 == len(rig.events.of_type("error", reason="link_tampering"))
    lines = [line for line in rig.process.logs().splitlines() if "terminal frame rejected" in line]
    # One line per kind, not one per frame.
    assert ["invalid_signature", "not_json"] == sorted(orjson.loads(x)["reason"] for x in lines)
