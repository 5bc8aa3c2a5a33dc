"""Where a lane's terminal is and how to reach it (PROTOCOL.md §1, §6, §13.2).

- An explicit ``ws://host:port`` (or ``wss://``) profile address is used as
  given (simulators, labs); a bare host is put through the 2.9 port rule.
- With auto address resolution, the device-address service is asked when
  the lane has no address yet and on every 4th consecutive failed connect
  (§5.5); its answer replaces the address for later attempts.
- ``wss`` verifies the terminal's certificate against the system store, or
  against ``MULTIPAIR_TLS_CA_FILE`` when given (the simulator's own CA).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import aiohttp

from multipair.config import Settings
from multipair.spi.address import (
    DEVICE_ADDRESS_API_KEY_HEADER,
    DeviceAddressResponseCode,
    DeviceAddressResult,
    device_address_url,
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


async def resolve_device_address(
    profile: LaneProfile, settings: Settings, *, current: str | None
) -> DeviceAddressResult:
    """Ask the device-address service for the terminal's address (§6.1). Never raises."""
    if not settings.device_api_key or not profile.tenant_code:
        return DeviceAddressResult(
            code=DeviceAddressResponseCode.DEVICE_SERVICE_ERROR,
            address=None,
            last_updated=None,
            detail="auto address needs MULTIPAIR_DEVICE_API_KEY and a tenant code",
        )
    url = device_address_url(
        profile.serial_number,
        tenant_code=profile.tenant_code,
        test_mode=profile.test_mode,
        secure=profile.secure,
        environment_code=settings.device_address_env,
        base_url=settings.device_address_base_url,
    )
    timeout = aiohttp.ClientTimeout(total=8.0)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(url, headers={DEVICE_ADDRESS_API_KEY_HEADER: settings.device_api_key}) as resp,
        ):
            body = await resp.read()
            status: int | None = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return DeviceAddressResult(
            code=DeviceAddressResponseCode.DEVICE_SERVICE_ERROR,
            address=None,
            last_updated=None,
            detail=f"device-address service unreachable: {type(exc).__name__}",
        )
    return interpret_device_address_response(
        status, body, secure=profile.secure, current_address=current
    )


def client_ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """TLS for ``wss://`` terminals: verify against the system store or a given CA file."""
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
