"""The device-address client against a real HTTP server on loopback (§6.1, §13.11).

The service is trusted no further than it must be: a redirect is refused and
never followed (the API key stays with the service's host), an answer over
64 KiB is refused without being read, and the address it returns must be
valid and inside ``MULTIPAIR_DEVICE_ADDRESS_ALLOW``. Whatever is refused is a
``DEVICE_SERVICE_ERROR`` that says why, and the lane keeps its address.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import orjson
import pytest
from aiohttp import web

from multipair.config import Settings
from multipair.spi.address import (
    DEVICE_ADDRESS_API_KEY_HEADER,
    DEVICE_ADDRESS_MAX_BODY,
    DeviceAddressResponseCode,
    DeviceAddressResult,
)
from multipair.store.profiles import LaneProfile
from multipair.worker.link import AddressBook, resolve_device_address

API_KEY = "BurgerPosDeviceAPIKey"
SERIAL = "321-417-722"
OLD_ADDRESS = "10.0.0.1"
TEN_MIB = 10 * 1024 * 1024
SERVICE_ERROR = DeviceAddressResponseCode.DEVICE_SERVICE_ERROR

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FakeService:
    """A device-address service on 127.0.0.1 that records what reached it."""

    handler: Handler
    url: str = ""
    requests: int = 0
    keys: list[str] = field(default_factory=list)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if DEVICE_ADDRESS_API_KEY_HEADER in request.headers:
            self.keys.append(request.headers[DEVICE_ADDRESS_API_KEY_HEADER])
        return await self.handler(request)


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[FakeService]:
    """Run ``handler`` for every path on a free port of 127.0.0.1."""
    service = FakeService(handler)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", service._handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        service.url = f"http://{host}:{port}"
        yield service
    finally:
        await runner.cleanup()


def answering(document: object) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=orjson.dumps(document), content_type="application/json")

    return handler


def profile(*, secure: bool = False) -> LaneProfile:
    return LaneProfile(
        pos_id="POS1",
        serial_number=SERIAL,
        device_address=OLD_ADDRESS,
        auto_address=True,
        tenant_code="wbc",
        secure=secure,
    )


def settings(base_url: str, allow: tuple[str, ...] = ()) -> Settings:
    return Settings(
        device_api_key=API_KEY,
        device_address_base_url=base_url,
        device_address_allow=allow,
        host_id="test-host",
    )


async def lookup(
    base_url: str, *, allow: tuple[str, ...] = (), secure: bool = False
) -> tuple[DeviceAddressResult, bool, str | None, str | None]:
    """One lookup as a lane makes it: the result, whether it was applied, URL before and after."""
    lane = profile(secure=secure)
    book = AddressBook(lane)
    before = book.url()
    result = await resolve_device_address(lane, settings(base_url, allow), current=before)
    applied = book.apply(result)
    return result, applied, before, book.url()


# --- redirects ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_refused_and_the_api_key_never_reaches_its_target(
    status: int,
) -> None:
    async with serve(answering({"ip": "10.9.9.9"})) as elsewhere:

        async def redirect(request: web.Request) -> web.StreamResponse:
            location = f"{elsewhere.url}/v1/{SERIAL}/ip?token=secret-in-location"
            return web.Response(status=status, headers={"Location": location})

        async with serve(redirect) as service:
            result, applied, before, after = await lookup(service.url)
    assert (1, [API_KEY]) == (service.requests, service.keys)
    assert (0, []) == (elsewhere.requests, elsewhere.keys)
    assert (SERVICE_ERROR, None, False, before) == (result.code, result.address, applied, after)
    assert f"HTTP {status}: a redirect" in result.detail
    assert [] == [s for s in ("secret-in-location", elsewhere.url, API_KEY) if s in result.detail]


# --- answer size -------------------------------------------------------------------------


@dataclass
class Streamer:
    """Streams a valid 10 MiB answer; records whether all of it went out."""

    declare_length: bool
    finished: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        head, tail = b'{"ip": "10.9.9.9", "pad": "', b'"}'
        chunk = b"x" * 65536
        padding = TEN_MIB - len(head) - len(tail)
        # A fixed send buffer turns off the kernel's autotuning, so how much can
        # sit in socket buffers (well under 10 MiB) does not depend on sysctls.
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if self.declare_length:
            response.content_length = TEN_MIB
        try:
            await response.prepare(request)
            await response.write(head)
            for _ in range(padding // len(chunk)):
                await response.write(chunk)
            await response.write(b"x" * (padding % len(chunk)) + tail)
            await response.write_eof()
            self.finished = True
        except ConnectionError:
            pass  # the client hung up: what this test wants
        finally:
            self.done.set()
        return response


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
async def test_a_10_mib_answer_is_refused_without_being_read(declare_length: bool) -> None:
    streamer = Streamer(declare_length=declare_length)
    async with serve(streamer) as service:
        result, applied, before, after = await lookup(service.url)
        await asyncio.wait_for(streamer.done.wait(), 10)
    assert (SERVICE_ERROR, False, before) == (result.code, applied, after)
    assert "HTTP 200 with an answer larger than 64 KiB" == result.detail
    # The client hung up before the server could hand all of it to the socket.
    assert not streamer.finished


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (DEVICE_ADDRESS_MAX_BODY, DeviceAddressResponseCode.SUCCESS),
        (DEVICE_ADDRESS_MAX_BODY + 1, SERVICE_ERROR),
    ],
)
async def test_an_answer_of_64_kib_is_read_and_one_byte_more_is_refused(
    size: int, expected: DeviceAddressResponseCode
) -> None:
    head, tail = b'{"ip": "10.9.9.9", "pad": "', b'"}'
    body = head + b"x" * (size - len(head) - len(tail)) + tail
    assert size == len(body)

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/json")

    async with serve(handler) as service:
        result, _, _, _ = await lookup(service.url)
    assert expected == result.code


# --- allowlist ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allow", "document", "secure"),
    [
        ((), {"ip": "192.168.7.7:9000"}, False),  # no allowlist: any valid address
        (("10.0.0.0/8",), {"ip": "10.200.3.4"}, False),
        (("192.168.1.0/24", "10.0.0.0/8"), {"ip": "10.200.3.4:8080"}, False),
        (("10.20.30.40",), {"ip": "10.20.30.40"}, False),  # a bare address is a /32
        ((".shop.example.com",), {"fqdn": "t1.shop.example.com"}, True),
        ((".shop.example.com",), {"fqdn": "T1.Shop.Example.COM."}, True),
        (("term1.example.com",), {"fqdn": "term1.example.com"}, True),
        (("10.0.0.0/8", ".shop.example.com"), {"fqdn": "10.1.1.1"}, True),
    ],
)
async def test_an_address_inside_the_allowlist_is_taken(
    allow: tuple[str, ...], document: dict[str, str], secure: bool
) -> None:
    async with serve(answering(document)) as service:
        result, applied, _, after = await lookup(service.url, allow=allow, secure=secure)
    expected_address = next(iter(document.values()))
    assert (DeviceAddressResponseCode.SUCCESS, expected_address, True) == (
        result.code,
        result.address,
        applied,
    )
    assert after is not None
    assert expected_address.split(":")[0] in after


@pytest.mark.parametrize(
    ("allow", "document", "secure"),
    [
        (("10.0.0.0/8",), {"ip": "192.168.1.5"}, False),
        (("10.0.0.0/8",), {"ip": "11.0.0.1:8080"}, False),
        (("192.168.1.0/24",), {"ip": "192.168.2.1"}, False),
        (("10.20.30.40",), {"ip": "10.20.30.41"}, False),
        ((".shop.example.com",), {"fqdn": "evil.example.net"}, True),
        ((".shop.example.com",), {"fqdn": "evilshop.example.com"}, True),
        ((".shop.example.com",), {"fqdn": "shop.example.com.evil.net"}, True),
        ((".shop.example.com",), {"fqdn": "shop.example.com"}, True),  # a suffix, not the name
        (("term1.example.com",), {"fqdn": "x.term1.example.com"}, True),
        ((".shop.example.com",), {"ip": "10.0.0.5"}, False),  # names admit no IPv4 address
        (("10.0.0.0/8",), {"fqdn": "t1.shop.example.com"}, True),  # nothing is resolved
    ],
)
async def test_an_address_outside_the_allowlist_is_refused_and_the_old_one_kept(
    allow: tuple[str, ...], document: dict[str, str], secure: bool
) -> None:
    async with serve(answering(document)) as service:
        result, applied, before, after = await lookup(service.url, allow=allow, secure=secure)
    assert (SERVICE_ERROR, None, False, before) == (result.code, result.address, applied, after)
    assert result.detail.startswith("HTTP 200 with an address outside the allowlist: ")


# --- address validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "secure", "why"),
    [
        ({"ip": "ws://10.0.0.5"}, False, "has a scheme"),
        ({"ip": "10.0.0.5/path"}, False, "has a path, query or fragment"),
        ({"ip": "10.0.0.5:8080?x=1"}, False, "has a path, query or fragment"),
        ({"ip": "admin@10.0.0.5"}, False, "has user info"),
        ({"ip": "\u0661\u0660.0.0.5"}, False, "not ASCII"),  # Arabic-Indic digits
        ({"ip": "10.0.0.\uff15"}, False, "not ASCII"),  # a fullwidth 5
        ({"ip": "10.0.0.256"}, False, "not a valid IPv4 address"),
        ({"ip": "010.0.0.5"}, False, "not a valid IPv4 address"),
        ({"ip": "10.0.0.5:0"}, False, "port out of range"),
        ({"ip": "10.0.0.5:70000"}, False, "port out of range"),
        ({"ip": "0.0.0.0"}, False, "not a unicast IPv4 address"),  # noqa: S104 (an answer, not a bind)
        ({"ip": "224.0.0.1"}, False, "not a unicast IPv4 address"),
        ({"ip": "10.0.0.5 "}, False, "has spaces or control characters"),
        ({"fqdn": "wss://t1.example.com"}, True, "has a scheme"),
        ({"fqdn": "t1.example.com/evil"}, True, "has a path, query or fragment"),
        ({"fqdn": "user:pw@t1.example.com"}, True, "has user info"),
        ({"fqdn": "t1.ex\u0430mple.com"}, True, "not ASCII"),  # a Cyrillic a
        ({"fqdn": "t1.example.com:8443"}, True, "a host name takes no port"),
        ({"fqdn": "-t1.example.com"}, True, "not a host name"),
        ({"fqdn": "t1..example.com"}, True, "not a host name"),
        ({"fqdn": "a" * 64 + ".example.com"}, True, "not a host name"),
        ({"fqdn": "999.1.1.1"}, True, "not a valid IPv4 address"),
    ],
)
async def test_an_invalid_address_is_refused_and_says_why(
    document: dict[str, str], secure: bool, why: str
) -> None:
    async with serve(answering(document)) as service:
        result, applied, before, after = await lookup(service.url, secure=secure)
    assert (SERVICE_ERROR, None, False, before) == (result.code, result.address, applied, after)
    assert result.detail.startswith(f"HTTP 200 with an address that is not valid ({why}): ")
    assert result.detail.isascii()


async def test_a_valid_answer_carries_the_api_key_and_replaces_the_address() -> None:
    async with serve(
        answering({"ip": "10.9.9.9:9000", "last_updated": "2026-01-02T03:04:05Z"})
    ) as (service):
        result, applied, _, after = await lookup(service.url)
    assert [API_KEY] == service.keys
    assert (
        DeviceAddressResponseCode.SUCCESS,
        "10.9.9.9:9000",
        True,
        "ws://10.9.9.9:9000?posId=POS1",
    ) == (
        result.code,
        result.address,
        applied,
        after,
    )


async def test_the_same_host_again_is_not_changed_and_keeps_the_address() -> None:
    async with serve(answering({"ip": OLD_ADDRESS})) as service:
        result, applied, before, after = await lookup(service.url)
    assert (DeviceAddressResponseCode.ADDRESS_NOT_CHANGED, False, before) == (
        result.code,
        applied,
        after,
    )
