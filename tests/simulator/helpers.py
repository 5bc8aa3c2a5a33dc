"""A small raw POS for talking to the simulator over real websockets.

Just websockets + MessageStamp + crypto, so the simulator is tested against
the wire format itself (the POS session gets its own tests against the
simulator).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from pathlib import Path
from typing import Any, Self

import aiohttp
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from multipair.simulator import Simulator, serial_for
from multipair.spi.crypto import (
    Secrets,
    confirmation_code,
)
from multipair.spi.envelope import (
    SUBPROTOCOLS,
    Generation,
    Message,
    MessageStamp,
    Received,
    RejectedFrame,
    decode_frame,
)
from multipair.spi.terminal import TerminalState
from tests.spi.helpers import KEYS as KEYS  # re-exported: the simulator tests import it here
from tests.spi.helpers import answer_key_request

TIMEOUT = 10.0


def seed_paired_state(state_dir: Path, serial: str, pos_id: str = "POS1") -> None:
    """Write a terminal state file as if ``serial`` had paired with ``pos_id`` (test keys)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    state = TerminalState(serial_number=serial, pos_id=pos_id, secrets=KEYS)
    (state_dir / f"{serial}.json").write_bytes(orjson.dumps(state.to_json()))


def paired_simulator(state_dir: Path, terminals: int) -> Simulator:
    """A simulator of ``terminals`` terminals, each already paired with POS1 (test keys)."""
    for index in range(terminals):
        seed_paired_state(state_dir, serial_for(index))
    return Simulator(terminals, state_dir=state_dir)


class RawPos:
    """One POS connection: send stamped frames, read decoded terminal messages."""

    def __init__(self, ws: ClientConnection, stamp: MessageStamp) -> None:
        self.ws = ws
        self.stamp = stamp
        self.counter = 0
        self.code: str | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        generation: Generation = Generation.V29,
        pos_id: str = "POS1",
        secrets: Secrets | None = None,
        query: bool = True,
        cafile: Path | None = None,
    ) -> Self:
        context = ssl.create_default_context(cafile=str(cafile)) if cafile is not None else None
        full = f"{url}?posId={pos_id}" if query else url
        ws = await asyncio.wait_for(
            connect(
                full,
                subprotocols=[Subprotocol(SUBPROTOCOLS[generation])],
                ssl=context,
                compression=None,
                open_timeout=TIMEOUT,
                close_timeout=2,
            ),
            TIMEOUT,
        )
        return cls(ws, MessageStamp(pos_id=pos_id, generation=generation, secrets=secrets))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    @property
    def secrets(self) -> Secrets | None:
        return self.stamp.secrets

    def frame(
        self, event: str, data: dict[str, Any] | None = None, msg_id: str | None = None
    ) -> str:
        if msg_id is None:
            self.counter += 1
            msg_id = f"{event[:5]}{self.counter}"
        return self.stamp.encode(msg_id, event, data, now=time.time())

    async def send(
        self, event: str, data: dict[str, Any] | None = None, msg_id: str | None = None
    ) -> str:
        frame = self.frame(event, data, msg_id)
        await self.ws.send(frame)
        return str(json.loads(self._inner(frame))["message"]["id"])

    def _inner(self, frame: str) -> str:
        outer = json.loads(frame)
        if "message" in outer:
            return frame
        got = decode_frame(frame, self.secrets)
        assert isinstance(got, Received)
        return got.inner_text

    async def recv_raw(self) -> str:
        text = await asyncio.wait_for(self.ws.recv(), TIMEOUT)
        assert isinstance(text, str)
        return text

    async def recv(self) -> Message:
        """The next terminal message, checked the strict JS way (upper-case hmac)."""
        got = decode_frame(await self.recv_raw(), self.secrets, strict_hmac_case=True)
        assert isinstance(got, Received), got
        return got.message

    async def expect(self, event: str) -> Message:
        """Read until a message with ``event`` arrives (others, e.g. progress, are skipped)."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                message = await self.recv()
                if message.event == event:
                    return message

    async def request(self, event: str, data: dict[str, Any] | None, reply: str) -> Message:
        msg_id = await self.send(event, data)
        message = await self.expect(reply)
        assert msg_id == message.id
        return message

    async def pair(self) -> str:
        """§4.2 up to key_check; returns the POS-side confirmation code."""
        await self.send("pair_request", {"padding": True})
        key_request = await self.expect("key_request")
        answer, secrets = answer_key_request(key_request.data or {})
        await self.send("key_response", answer, msg_id=key_request.id)
        self.stamp.secrets = secrets
        raw = await self.recv_raw()
        got = decode_frame(raw, self.secrets, strict_hmac_case=True)
        assert isinstance(got, Received)
        assert "key_check" == got.message.event
        self.code = confirmation_code(json.loads(raw)["hmac"])
        return self.code

    async def purchase(self, ref: str, amount: int, **extra: Any) -> Message:
        data = {"pos_ref_id": ref, "purchase_amount": amount, "tip_amount": 0, "cash_amount": 0}
        data.update(extra)
        return await self.request("purchase", data, "purchase_response")

    async def ping(self) -> Message:
        return await self.request("ping", None, "pong")

    async def closed_code(self) -> int | None:
        """Wait for the server to close the connection; its close code."""
        async with asyncio.timeout(TIMEOUT):
            await self.ws.wait_closed()
        rcvd = self.ws.protocol.close_rcvd
        return None if rcvd is None else rcvd.code

    def reject_reason(self, frame: str) -> str | None:
        got = decode_frame(frame, self.secrets, strict_hmac_case=True)
        return got.reason.value if isinstance(got, RejectedFrame) else None


class Control:
    """The control API through aiohttp."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base

    async def get(self, serial: str) -> dict[str, Any]:
        async with self.http.get(f"{self.base}/terminals/{serial}") as response:
            assert 200 == response.status
            body: dict[str, Any] = await response.json()
            return body

    async def post(
        self, serial: str, path: str, body: dict[str, Any] | None = None, status: int = 200
    ) -> dict[str, Any]:
        async with self.http.post(f"{self.base}/terminals/{serial}/{path}", json=body) as response:
            result: dict[str, Any] = await response.json()
            assert status == response.status, result
            return result
