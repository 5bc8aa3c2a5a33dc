"""The fake device-address service of PROTOCOL.md §6.1 (and the tenants list, §6.2).

``GET /v1/<serial>/ip`` and ``GET /v1/<serial>/fqdn`` with the header
``ASM-MSP-DEVICE-ADDRESS-API-KEY``, answered for the simulator's own
terminals, with the real response fields (``ip`` / ``fqdn``,
``last_updated``, ``Serial``, ``request_id``). Errors:

- 401 without the header (or with an empty key), 403 with a key other than
  the configured one (any non-empty key is accepted when none is configured);
- 400 for a kind other than ``ip`` / ``fqdn``;
- 404 for a serial the simulator does not have;
- per terminal, through the control API: 500, a 404, or a hang longer than
  the client's 8 s timeout (§10 item 18).

The answered address is ``host:port``: simulated terminals share one host,
so the port has to travel with it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable

from aiohttp import web

from multipair.simulator.virtual import SimulatedTerminal
from multipair.spi.address import DEVICE_ADDRESS_API_KEY_HEADER

__all__ = ["TENANTS", "build_device_address_app"]

TENANTS = [
    {"code": "gko", "name": "Gecko Demo Bank"},
    {"code": "wbc", "name": "Westpac Banking Corporation"},
    {"code": "sim", "name": "multipair Simulator Bank"},
]


def _iso(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_device_address_app(
    lookup: Callable[[str], SimulatedTerminal | None], *, api_key: str | None = None
) -> web.Application:
    """The aiohttp application; ``lookup`` maps a serial to its terminal (or None)."""

    async def device_address(request: web.Request) -> web.Response:
        serial = request.match_info["serial"]
        kind = request.match_info["kind"]
        request_id = f"multipair-sim/{uuid.uuid4().hex[:12]}"
        key = request.headers.get(DEVICE_ADDRESS_API_KEY_HEADER, "")
        if not key:
            return web.json_response(
                {"error": f"missing {DEVICE_ADDRESS_API_KEY_HEADER}", "request_id": request_id},
                status=401,
            )
        if api_key is not None and key != api_key:
            return web.json_response(
                {"error": "invalid API key", "request_id": request_id}, status=403
            )
        if kind not in ("ip", "fqdn"):
            return web.json_response(
                {"error": f"unknown kind {kind!r}: use ip or fqdn", "request_id": request_id},
                status=400,
            )
        terminal = lookup(serial)
        fault = terminal.device_address.mode if terminal is not None else "none"
        if terminal is None or fault == "not_found":
            return web.json_response(
                {"error": "device not found", "Serial": serial, "request_id": request_id},
                status=404,
            )
        if fault == "error":
            return web.json_response(
                {"error": "internal error", "request_id": request_id}, status=500
            )
        if fault == "hang":
            await asyncio.sleep(terminal.device_address.hang_seconds)
        return web.json_response(
            {
                kind: terminal.advertised_address(kind),
                "last_updated": _iso(terminal.address_updated_at),
                "Serial": serial,
                "request_id": request_id,
            }
        )

    async def tenants(request: web.Request) -> web.Response:
        return web.json_response({"data": TENANTS})

    app = web.Application()
    app.router.add_get("/v1/{serial}/{kind}", device_address)
    app.router.add_get("/tenants", tenants)
    return app
