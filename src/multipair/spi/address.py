"""Where a lane connects, and how it finds out (PROTOCOL.md §1, §6.1, §8.4, §13.2, §13.8, §13.11).

Rules this module keeps (pure: strings in, strings and verdicts out, no I/O):

- A POS id is 1-16 ASCII letters or digits (§1, §8.4).
- A configured terminal address is validated as the JS client does (§1): in
  plain mode four dot-separated groups of 1-3 digits with an optional ``:port``
  of 1-5 digits; in secure mode only letters, digits, ``.`` and ``-`` (a host
  name, so no port). Both are checked on the bare address, without a scheme.
- The websocket URL follows spi-client-js 2.9.13 (§13.2): ``ws://`` in plain
  mode, ``wss://`` in secure mode; for tenant ``wbc`` (any case) the address
  is kept as configured, for any other tenant *and for no tenant* only scheme
  and host are kept and ``:8080`` (ws) or ``:8443`` (wss) appended; then
  ``?posId=<pos id>``. An empty address degenerates to ``?posId=<pos id>``.
  An explicit lab/simulator address (``explicit=True``) is used as given.
  Unlike the library, callers recompute the URL whenever POS id, tenant or
  address changes (§13.2: the library's stale URL is a bug), which is easy
  because this is one pure function.
- The device-address service (§6.1, §13.11) is reached at
  ``https://device-address-api[-sb|-<env>].<tenant>.mspenv.io/v1/<serial>/<ip|fqdn>``
  with an API-key header and an 8 s timeout. Its answer is sorted into a
  :class:`DeviceAddressResponseCode` by :func:`interpret_device_address_response`,
  which never raises. "Not changed" compares *host names* (§11: both reference
  clients compare the wrong things and never report it).
- The service is trusted no further than it must be (STYLE 16; the reference
  clients trust it entirely): it is asked over ``https://`` only, plain
  ``http://`` being kept for a base URL on this machine (loopback, the
  simulator's fake); a redirect is a service error, never followed, so the
  API key cannot travel to another host; an answer over
  :data:`DEVICE_ADDRESS_MAX_BODY` bytes is a service error. The address it
  returns is held to a stricter rule than a user's (§1): ASCII only, no
  scheme, path, query or user info, an ``ip`` a real IPv4 address with an
  optional port of 1-65535, an ``fqdn`` (or any address in secure mode) a
  host name of DNS labels with no port. It must then lie inside the
  operator's :class:`DeviceAddressAllowlist` when one is configured.
- The reconnect and address-resolution timings of §8.4 as amended by §13.7 and
  §13.8 live in one frozen :class:`Timings`, injected where they are used.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Final
from urllib.parse import quote, urlsplit

import orjson

from multipair.exceptions import ConfigurationError
from multipair.spi.envelope import SUBPROTOCOLS, Generation

__all__ = [
    "DEFAULT_TIMINGS",
    "DEVICE_ADDRESS_API_KEY_HEADER",
    "DEVICE_ADDRESS_MAX_BODY",
    "DEVICE_ADDRESS_TIMEOUT_S",
    "SUBPROTOCOL",
    "DeviceAddressAllowlist",
    "DeviceAddressResponseCode",
    "DeviceAddressResult",
    "Timings",
    "device_address_url",
    "device_service_error",
    "interpret_device_address_response",
    "is_valid_eftpos_address",
    "is_valid_pos_id",
    "validate_device_address_base_url",
    "websocket_url",
]

SUBPROTOCOL: Final[str] = SUBPROTOCOLS[Generation.V29]
"""The websocket sub-protocol every spi-client-js 2.9.x offers (§13.2): ``spi.2.9.0``."""

DEVICE_ADDRESS_API_KEY_HEADER: Final = "ASM-MSP-DEVICE-ADDRESS-API-KEY"
"""Header carrying the device-address API key (§6.1); its value is a secret, never log it."""

DEVICE_ADDRESS_TIMEOUT_S: Final = 8.0
"""How long one device-address lookup may take before it counts as a service error (§6.1)."""

DEVICE_ADDRESS_MAX_BODY: Final = 64 * 1024
"""The most bytes of a device-address answer read; a longer one is a service error.

The samples (fixtures/device-address/) are about 200 bytes.
"""

# Ports a non-wbc tenant's terminal listens on (§13.2).
_WS_PORT: Final = 8080
_WSS_PORT: Final = 8443
_PORT_KEEPING_TENANT: Final = "wbc"

# §1, §8.4. Explicit ASCII classes (``\d`` and ``\w`` would admit Unicode digits
# and letters) and ``fullmatch`` (``$`` would admit a trailing newline).
_POS_ID = re.compile(r"[A-Za-z0-9]{1,16}")
# §1, the JS client's rules, kept exactly (groups of up to 999 and ports up to
# 99999 pass, as there): an address the reference client accepts is accepted.
_PLAIN_ADDRESS = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?::[0-9]{1,5})?")
_SECURE_ADDRESS = re.compile(r"[A-Za-z0-9.-]+")

# What :func:`websocket_url` accepts after an optional scheme: a host and an
# optional port, nothing that would add a path, query, fragment or user info.
_HOST_PORT = re.compile(r"(?P<host>[A-Za-z0-9._-]+)(?::(?P<port>[0-9]{1,5}))?")
_SCHEME = re.compile(r"(?P<scheme>wss?)://", re.IGNORECASE)

# Tenant and environment codes become DNS labels of the service host (§6.1).
_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_BASE_URL = re.compile(r"https?://[^\s/?#@]+(?:/[^\s?#]*)?", re.IGNORECASE)
_USERINFO = re.compile(r"//[^/?#]*@")
_LOOPBACK_NAME: Final = "localhost"

# What the service may answer (§1, stricter: STYLE 16). Explicit ASCII classes
# and ``fullmatch``, as above; the dotted quad is then checked by ``ipaddress``.
_ANSWER_IPV4 = re.compile(r"(?P<host>[0-9]{1,3}(?:\.[0-9]{1,3}){3})(?::(?P<port>[0-9]{1,5}))?")
_ANSWER_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_ALL_DIGITS_AND_DOTS = re.compile(r"[0-9.]+")
_MAX_HOST_NAME: Final = 253


def is_valid_pos_id(pos_id: str) -> bool:
    """True for 1 to 16 ASCII letters or digits, the only POS ids terminals accept (§1)."""
    return _POS_ID.fullmatch(pos_id) is not None


def is_valid_eftpos_address(address: str, *, secure: bool) -> bool:
    """Check a configured terminal address (no scheme) the way the JS client does (§1).

    Plain mode: an IPv4 address, optionally with ``:port``. Secure mode: a host
    name made of letters, digits, ``.`` and ``-`` (no port).
    """
    pattern = _SECURE_ADDRESS if secure else _PLAIN_ADDRESS
    return pattern.fullmatch(address) is not None


def websocket_url(
    address: str,
    *,
    pos_id: str,
    tenant_code: str | None,
    secure: bool,
    explicit: bool = False,
) -> str:
    """The URL a 2.9 POS opens for ``address`` (§13.2).

    ``address`` is ``host``, ``host:port``, or the same behind ``ws://`` /
    ``wss://``. A bare address gets ``wss://`` when ``secure`` else ``ws://``.
    Tenant ``wbc`` (any case) keeps the address as given; any other tenant,
    or none, keeps scheme and host and sets port 8080 (ws) or 8443 (wss).
    ``explicit=True`` is for an address a profile spelled out for a simulator
    or a lab: it is used as given, port included, whatever the tenant. Then
    ``?posId=<pos id>`` is appended (percent-escaped, which changes nothing for
    a valid POS id). An empty address gives ``?posId=<pos id>``, as the library
    does; such a lane must not try to connect.

    Raises :class:`~multipair.exceptions.ConfigurationError` when the address
    is not ``[ws[s]://]host[:port]`` or its scheme contradicts ``secure``.
    """
    query = "?posId=" + quote(pos_id, safe="")
    if not address:
        return query
    scheme, host, port = _parse_address(address, secure=secure)
    if explicit or (tenant_code is not None and tenant_code.lower() == _PORT_KEEPING_TENANT):
        authority = host if port is None else f"{host}:{port}"
    else:
        authority = f"{host}:{_WSS_PORT if scheme == 'wss' else _WS_PORT}"
    return f"{scheme}://{authority}{query}"


def _parse_address(address: str, *, secure: bool) -> tuple[str, str, str | None]:
    """Split ``[ws[s]://]host[:port]`` into scheme, host and port (None when absent)."""
    expected = "wss" if secure else "ws"
    rest = address
    scheme_match = _SCHEME.match(address)
    if scheme_match is not None:
        scheme = scheme_match["scheme"].lower()
        if scheme != expected:
            raise ConfigurationError(
                f"address {address!r} uses {scheme}:// but secure websockets are "
                f"{'on' if secure else 'off'}"
            )
        rest = address[scheme_match.end() :]
    host_port = _HOST_PORT.fullmatch(rest)
    if host_port is None:
        raise ConfigurationError(f"address {address!r} is not [ws[s]://]host[:port]")
    return expected, host_port["host"], host_port["port"]


# --- Device-address service (§6.1, §13.11) -------------------------------------------


class DeviceAddressResponseCode(StrEnum):
    """What a device-address lookup told the application (§6.1, §13.11)."""

    SUCCESS = "SUCCESS"
    INVALID_SERIAL_NUMBER = "INVALID_SERIAL_NUMBER"
    ADDRESS_NOT_CHANGED = "ADDRESS_NOT_CHANGED"
    # Produced by the caller, not by a lookup: the same serial was set again.
    SERIAL_NUMBER_NOT_CHANGED = "SERIAL_NUMBER_NOT_CHANGED"
    DEVICE_SERVICE_ERROR = "DEVICE_SERVICE_ERROR"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceAddressResult:
    """The outcome of one lookup.

    ``address`` is the bare host (``ip`` or ``fqdn``, no scheme) on
    ``SUCCESS`` and ``ADDRESS_NOT_CHANGED``, else None. ``last_updated`` is the
    service's ISO time when it sent one. ``detail`` is a short text for logs;
    it never holds the API key.
    """

    code: DeviceAddressResponseCode
    address: str | None
    last_updated: str | None
    detail: str


def device_address_url(
    serial_number: str,
    *,
    tenant_code: str,
    test_mode: bool,
    secure: bool,
    environment_code: str | None = None,
    base_url: str | None = None,
) -> str:
    """The GET URL of a device-address lookup (§6.1, §13.11).

    Host ``device-address-api.<tenant>.mspenv.io`` in production,
    ``device-address-api-sb.…`` in test mode, ``device-address-api-<env>.…``
    whenever ``environment_code`` is set (whatever the test mode). The path is
    ``/v1/<serial>/fqdn`` in secure mode, ``/v1/<serial>/ip`` otherwise.
    ``base_url`` (e.g. ``http://127.0.0.1:8123`` for a local fake) replaces
    scheme and host and keeps the path; it must pass
    :func:`validate_device_address_base_url`.

    Raises :class:`~multipair.exceptions.ConfigurationError` for an empty
    serial number, a tenant or environment code that is not a DNS label, or a
    ``base_url`` that is refused.
    """
    if not serial_number:
        raise ConfigurationError("device-address lookup needs a serial number")
    path = f"/v1/{quote(serial_number, safe='')}/{'fqdn' if secure else 'ip'}"
    if base_url is not None:
        validate_device_address_base_url(base_url)
        return base_url.rstrip("/") + path
    if _DNS_LABEL.fullmatch(tenant_code) is None:
        raise ConfigurationError(f"tenant code {tenant_code!r} is not a DNS label")
    if environment_code:
        if _DNS_LABEL.fullmatch(environment_code) is None:
            raise ConfigurationError(f"environment code {environment_code!r} is not a DNS label")
        suffix = f"-{environment_code}"
    else:
        suffix = "-sb" if test_mode else ""
    return f"https://device-address-api{suffix}.{tenant_code}.mspenv.io{path}"


def validate_device_address_base_url(base_url: str) -> None:
    """Refuse a base URL the API key must not be sent to (§6.1).

    Accepted: ``https://host[:port][/prefix]``, and ``http://`` only when the
    host is loopback (``127.0.0.0/8``, ``::1`` or ``localhost``): plain HTTP
    would show the API key and the answer to the network, so it is kept for a
    fake service on this machine (the simulator's, the tests'). No user info,
    query or fragment.

    Raises :class:`~multipair.exceptions.ConfigurationError` saying why.
    """
    shown = _USERINFO.sub("//***@", base_url)
    if _BASE_URL.fullmatch(base_url) is None:
        raise ConfigurationError(
            f"device-address base URL {shown!r} is not https://host[:port][/prefix] "
            "(no user info, query or fragment)"
        )
    try:
        parts = urlsplit(base_url)
        host = parts.hostname
        _ = parts.port  # a port that is not 0-65535 raises here
    except ValueError:
        host = None
    if not host:
        raise ConfigurationError(f"device-address base URL {shown!r} has no valid host and port")
    if parts.scheme.lower() == "http" and not _is_loopback(host):
        raise ConfigurationError(
            f"device-address base URL {shown!r} uses http:// for a host that is not loopback; "
            "use https:// (http:// is allowed only for 127.0.0.0/8, ::1 or localhost)"
        )


def _is_loopback(host: str) -> bool:
    """True for ``localhost`` and for addresses in 127.0.0.0/8 or ``::1``."""
    if host.lower() == _LOOPBACK_NAME:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceAddressAllowlist:
    """Where the device-address service may send a lane (``MULTIPAIR_DEVICE_ADDRESS_ALLOW``).

    Built by :meth:`parse` from entries of three kinds: IPv4 networks in CIDR
    form (``10.0.0.0/8``; a bare address is a ``/32``), host-name suffixes
    starting with a dot (``.shop.example.com`` admits ``t1.shop.example.com``
    but not ``shop.example.com`` itself) and exact host names. Names compare
    case-insensitively and without a final dot. An IPv4 answer is matched
    against the networks only and a host name against the names only: nothing
    is resolved here, so list a name to admit it. No entries: any valid
    address is admitted.
    """

    networks: tuple[ipaddress.IPv4Network, ...] = ()
    names: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> DeviceAddressAllowlist:
        """Sort ``entries`` into networks, names and suffixes.

        Raises :class:`~multipair.exceptions.ConfigurationError` naming the
        first entry that is none of the three (a network with host bits set,
        ``10.0.0.1/8``, is refused as a likely typo; so is an IPv6 network,
        since terminal addresses are IPv4, §1).
        """
        networks: list[ipaddress.IPv4Network] = []
        names: list[str] = []
        suffixes: list[str] = []
        for raw in entries:
            entry = raw.strip()
            if "/" in entry or ":" in entry or _ALL_DIGITS_AND_DOTS.fullmatch(entry):
                try:
                    networks.append(ipaddress.IPv4Network(entry, strict=True))
                except ValueError:
                    raise ConfigurationError(
                        f"allowlist entry {entry!r} is not an IPv4 network in CIDR form "
                        "(e.g. 10.0.0.0/8)"
                    ) from None
                continue
            name = entry.lower()
            is_suffix = name.startswith(".")
            name = name.removeprefix(".").removesuffix(".")
            if not _is_host_name(name):
                raise ConfigurationError(
                    f"allowlist entry {entry!r} is neither an IPv4 network (10.0.0.0/8), "
                    "a host name (term1.example.com) nor a suffix (.example.com)"
                )
            (suffixes if is_suffix else names).append("." + name if is_suffix else name)
        return cls(networks=tuple(networks), names=tuple(names), suffixes=tuple(suffixes))

    def permits(self, host: str) -> bool:
        """Whether ``host`` (an IPv4 address or a host name, no port) is admitted."""
        if not (self.networks or self.names or self.suffixes):
            return True
        try:
            ip = ipaddress.IPv4Address(host)
        except ValueError:
            name = host.lower().removesuffix(".")
            return name in self.names or name.endswith(self.suffixes)
        return any(ip in network for network in self.networks)


def interpret_device_address_response(
    status: int | None,
    body: bytes | None,
    *,
    secure: bool,
    current_address: str | None,
    allowlist: DeviceAddressAllowlist | None = None,
) -> DeviceAddressResult:
    """Sort one device-address HTTP outcome into a result (§6.1, §13.11). Never raises.

    ``status`` None means the request failed (network error or the 8 s
    timeout). 404 means the serial is unknown; a redirect (3xx), any other
    non-200, an empty or non-JSON body, or a body without a usable
    ``fqdn``/``ip`` is a service error. On 200 the address is ``fqdn`` when
    present, else ``ip``; other fields (including the ``error`` the service's
    samples carry next to a valid address) are ignored. The address must meet
    the rules of the module docstring and, when ``allowlist`` is given, lie
    inside it; else the answer is a service error whose detail says why.
    ``current_address`` is what the lane connects to now, in any form
    :func:`websocket_url` takes or returns; when its host equals the new one
    (case-insensitively) the result is ``ADDRESS_NOT_CHANGED``.
    """
    if status is None:
        return device_service_error("no response (network error or timeout)")
    if status == 404:
        return DeviceAddressResult(
            code=DeviceAddressResponseCode.INVALID_SERIAL_NUMBER,
            address=None,
            last_updated=None,
            detail="HTTP 404: serial number not known to the service",
        )
    if 300 <= status < 400:
        # The caller never follows one: the API key goes to the service's host only.
        return device_service_error(
            f"HTTP {status}: a redirect, refused (redirects are not followed)"
        )
    if status != 200:
        return device_service_error(f"HTTP {status}")
    if not body:
        return device_service_error("HTTP 200 with an empty body")
    try:
        document = orjson.loads(body)
    except (orjson.JSONDecodeError, TypeError):
        return device_service_error("HTTP 200 with a body that is not JSON")
    if not isinstance(document, dict):
        return device_service_error("HTTP 200 with a body that is not a JSON object")
    fqdn, ip = document.get("fqdn"), document.get("ip")
    from_fqdn = isinstance(fqdn, str) and bool(fqdn)
    address = fqdn if from_fqdn else ip
    if not isinstance(address, str) or not address:
        return device_service_error("HTTP 200 without 'fqdn' or 'ip'")
    # The address goes into a URL: hold it to the rule a user's address meets
    # (§1), more strictly. A host name is checked as one even in plain mode.
    shown = ascii(address[:80])
    host = _answered_host(address, host_name=secure or from_fqdn)
    if isinstance(host, _Refusal):
        return device_service_error(
            f"HTTP 200 with an address that is not valid ({host.why}): {shown}"
        )
    if allowlist is not None and not allowlist.permits(host):
        return device_service_error(f"HTTP 200 with an address outside the allowlist: {shown}")
    last_updated = document.get("last_updated")
    last_updated = last_updated if isinstance(last_updated, str) else None
    if current_address and _host_of(current_address) == _host_of(address):
        return DeviceAddressResult(
            code=DeviceAddressResponseCode.ADDRESS_NOT_CHANGED,
            address=address,
            last_updated=last_updated,
            detail="the service gave the host already in use",
        )
    return DeviceAddressResult(
        code=DeviceAddressResponseCode.SUCCESS,
        address=address,
        last_updated=last_updated,
        detail="HTTP 200 OK",
    )


@dataclass(frozen=True, slots=True)
class _Refusal:
    why: str


def _answered_host(address: str, *, host_name: bool) -> str | _Refusal:
    """The host of an address the service answered, or why it cannot be used.

    ``host_name``: a host name (or IPv4 address) without a port, as secure
    mode and ``fqdn`` take (§1); else an IPv4 address with an optional port.
    """
    if not address.isascii():
        return _Refusal("not ASCII")
    if not address.isprintable() or " " in address:
        return _Refusal("has spaces or control characters")
    if "://" in address:
        return _Refusal("has a scheme")
    if "@" in address:
        return _Refusal("has user info")
    if any(stop in address for stop in "/?#"):
        return _Refusal("has a path, query or fragment")
    if host_name:
        if ":" in address:
            return _Refusal("a host name takes no port")
        name = address.removesuffix(".")
        if _ALL_DIGITS_AND_DOTS.fullmatch(name):
            return _ipv4_refusal(name) or name
        return name if _is_host_name(name) else _Refusal("not a host name")
    match = _ANSWER_IPV4.fullmatch(address)
    if match is None:
        return _Refusal("not an IPv4 address with an optional port")
    port = match["port"]
    if port is not None and not 1 <= int(port) <= 65535:
        return _Refusal("port out of range")
    return _ipv4_refusal(match["host"]) or match["host"]


def _ipv4_refusal(text: str) -> _Refusal | None:
    """Why ``text`` is not the IPv4 address of a terminal, or None."""
    try:
        ip = ipaddress.IPv4Address(text)
    except ValueError:
        return _Refusal("not a valid IPv4 address")
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return _Refusal("not a unicast IPv4 address")
    return None


def _is_host_name(name: str) -> bool:
    """True for dot-separated DNS labels of ASCII letters, digits and ``-`` (253 at most)."""
    return 0 < len(name) <= _MAX_HOST_NAME and all(
        _ANSWER_LABEL.fullmatch(label) for label in name.split(".")
    )


def device_service_error(detail: str) -> DeviceAddressResult:
    """A lookup that got no usable answer (``DEVICE_SERVICE_ERROR``), with ``detail`` for logs."""
    return DeviceAddressResult(
        code=DeviceAddressResponseCode.DEVICE_SERVICE_ERROR,
        address=None,
        last_updated=None,
        detail=detail,
    )


def _host_of(address: str) -> str:
    """The host of ``host``, ``host:port`` or ``ws[s]://host[:port][?query]``, for comparison.

    §11: the reference clients compare a missing field (JS) or ``ws://x`` with
    ``x`` (Java). Hosts compare case-insensitively and without a final dot.
    """
    scheme = _SCHEME.match(address)
    rest = address[scheme.end() :] if scheme is not None else address
    for stop in "/?#":
        rest = rest.split(stop, 1)[0]
    host = rest.rsplit(":", 1)[0] if ":" in rest else rest
    return host.lower().rstrip(".")


# --- Timings (§8.4, §13.7, §13.8) ----------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Timings:
    """Timers and limits of a POS session, as spi-client-js 2.9.13 has them.

    Seconds unless the name says otherwise. Inject a different instance in
    tests instead of patching; :data:`DEFAULT_TIMINGS` is the reference.
    """

    ping_interval_s: float = 18.0  # §5.4, §8.4
    pong_timeout_s: float = 5.0  # §8.4
    missed_pongs_before_disconnect: int = 2  # §8.4
    reconnect_pause_s: float = 1.5  # §13.8 (3 s before 2.9.7)
    connect_timeout_s: float = 4.0  # §1 connect watchdog
    pairing_retries: int = 3  # §4.5, §13.8
    reconnects_before_address_lookup: int = 3  # §5.5: the lookup runs on the 4th attempt
    get_transaction_interval_s: float = 20.0  # §7.10: GT poll when there is no news
    cancel_wait_disconnected_s: float = 10.0  # §13.7: while the socket is down
    cancel_wait_connected_s: float = 25.0  # §13.7: since the cancel or the last GT response
    tx_monitor_interval_s: float = 1.0  # §8.4
    device_address_timeout_s: float = DEVICE_ADDRESS_TIMEOUT_S  # §6.1

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigurationError(f"Timings.{spec.name} must be a number, got {value!r}")
            # Durations must be positive (a zero period would spin); counts may be 0.
            if not math.isfinite(value) or value < 0 or (spec.name.endswith("_s") and value == 0):
                raise ConfigurationError(f"Timings.{spec.name} is out of range: {value!r}")


DEFAULT_TIMINGS: Final = Timings()
"""The reference timings (§8.4 with the 2.9.13 changes of §13.7 and §13.8)."""
