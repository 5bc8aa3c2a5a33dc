"""Where a lane's terminal is and how to reach it (PROTOCOL.md §1, §6, §13.2).

- An explicit ``ws://host:port`` (or ``wss://``) profile address is used as
  given (simulators, labs); a bare host is put through the 2.9 port rule.
- With auto address resolution, the device-address service is asked when
  the lane has no address yet and on every 4th consecutive failed connect
  (§5.5); only a ``SUCCESS`` answer replaces the address for later attempts
  (:meth:`AddressBook.apply`): a refused or failed lookup keeps the old one.
- ``wss`` verifies the terminal's certificate against the system store, or
  against ``MULTIPAIR_TLS_CA_FILE`` when given (the simulator's own CA).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import aiohttp

from multipair.config import Settings
from multipair.exceptions import ConfigurationError
from multipair.spi.address import (
    DEVICE_ADDRESS_API_KEY_HEADER,
    DEVICE_ADDRESS_MAX_BODY,
    DEVICE_ADDRESS_TIMEOUT_S,
    DeviceAddressAllowlist,
    DeviceAddressResponseCode,
    DeviceAddressResult,
    device_address_url,
    device_service_error,
    interpret_device_address_response,
    websocket_url,
)
from multipair.store.profiles import LaneProfile

__all__ = ["AddressBook", "client_ssl_context", "resolve_device_address"]


@dataclass(slots=True)
class AddressBook:
    """The address a lane connects to, and how it was learned."""

    profile: LaneProfile
    resolved: str | None = None

    def url(self) -> str | None:
        """The websocket URL to open now, or None when no address is known yet."""
        profile = self.profile
        address = self.resolved or profile.device_address
        if not address:
            return None
        explicit = self.resolved is None and "://" in address
        return websocket_url(
            address,
            pos_id=profile.pos_id,
            tenant_code=profile.tenant_code,
            secure=profile.secure,
            explicit=explicit,
        )

    def apply(self, result: DeviceAddressResult) -> bool:
        """Take a lookup's outcome; True when it replaced the address.

        Only ``SUCCESS`` with an address does: an error, a refused answer or
        ``ADDRESS_NOT_CHANGED`` leaves the address the lane has (§6.1).
        """
        if result.code is not DeviceAddressResponseCode.SUCCESS or not result.address:
            return False
        self.resolved = result.address
        return True


async def resolve_device_address(
    profile: LaneProfile, settings: Settings, *, current: str | None
) -> DeviceAddressResult:
    """Ask the device-address service for the terminal's address (§6.1). Never raises.

    The service is trusted no further than it must be (``spi.address``
    docstring): the base URL is ``https://`` (``http://`` on loopback only), a
    redirect is refused rather than followed so the API key never reaches
    another host, at most :data:`DEVICE_ADDRESS_MAX_BODY` bytes are read (no
    decompression, so that bound is the memory bound), and the address is
    validated and held to ``MULTIPAIR_DEVICE_ADDRESS_ALLOW``. Anything refused
    is a ``DEVICE_SERVICE_ERROR`` whose detail says why; it never carries the
    API key, nor anything of a redirect but its status.
    """
    if not settings.device_api_key or not profile.tenant_code:
        return device_service_error("auto address needs MULTIPAIR_DEVICE_API_KEY and a tenant code")
    try:
        url = device_address_url(
            profile.serial_number,
            tenant_code=profile.tenant_code,
            test_mode=profile.test_mode,
            secure=profile.secure,
            environment_code=settings.device_address_env,
            base_url=settings.device_address_base_url,
        )
        allowlist = DeviceAddressAllowlist.parse(settings.device_address_allow)
    except ConfigurationError as exc:
        return device_service_error(f"device-address lookup not possible: {exc}")
    headers = {
        DEVICE_ADDRESS_API_KEY_HEADER: settings.device_api_key,
        "Accept": "application/json",
        "Accept-Encoding": "identity",
    }
    body: bytes | None = None
    try:
        async with (
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=DEVICE_ADDRESS_TIMEOUT_S),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            ) as http,
            http.get(url, headers=headers, allow_redirects=False) as resp,
        ):
            status: int | None = resp.status
            # Only a 200 has a body worth reading (§6.1); a redirect's never is.
            if status == 200:
                body = await _read_at_most(resp, DEVICE_ADDRESS_MAX_BODY)
                if body is None:
                    return device_service_error(
                        f"HTTP 200 with an answer larger than {DEVICE_ADDRESS_MAX_BODY // 1024} KiB"
                    )
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return device_service_error(f"device-address service unreachable: {type(exc).__name__}")
    return interpret_device_address_response(
        status, body, secure=profile.secure, current_address=current, allowlist=allowlist
    )


async def _read_at_most(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None when it is longer than ``limit``; never reads more than ``limit + 1``."""
    if resp.content_length is not None and resp.content_length > limit:
        return None
    body = bytearray()
    while len(body) <= limit:
        # ``read(n)`` returns what has arrived, up to n bytes; b"" only at the end.
        chunk = await resp.content.read(limit + 1 - len(body))
        if not chunk:
            return bytes(body)
        body += chunk
    return None


def client_ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """TLS for ``wss://`` terminals: verify against the system store or a given CA file."""
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
