"""Service-wide settings, in one place (DESIGN.md "Configuration").

Every setting is read from an environment variable ``MULTIPAIR_<NAME>`` and
may be overridden by a caller (the CLI's options). Per-lane settings live in
the lane's profile, not here.

Variables, meanings and defaults:

- ``MULTIPAIR_REDIS_URL``: ``redis://``, ``rediss://`` or ``unix://`` URL,
  ACL user and password in it; or a Sentinel deployment,
  ``redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]``
  (``rediss+sentinel://`` for TLS), where ``HOST:PORT`` are the Sentinels and
  the user and password the data nodes' (:mod:`multipair.redis_conn`). Default
  unset: the caller starts an embedded redis-server.
- ``MULTIPAIR_REDIS_SENTINELS``: instead of a URL, the Sentinels as
  ``HOST:PORT,HOST:PORT`` (port 26379 when left out), with
  ``MULTIPAIR_REDIS_MASTER_NAME`` (required with it: the name the Sentinels
  monitor the primary under) and optionally ``MULTIPAIR_REDIS_USERNAME`` /
  ``MULTIPAIR_REDIS_PASSWORD`` (the data nodes' ACL user and password; only
  with ``MULTIPAIR_REDIS_SENTINELS``: a URL carries its own). They are turned
  into the ``redis+sentinel://`` URL, which is all the rest of multipair
  sees (:attr:`Settings.redis_url`). Setting it and ``MULTIPAIR_REDIS_URL``
  both is an error. Default unset.
- ``MULTIPAIR_REDIS_SENTINEL_PASSWORD``, ``MULTIPAIR_REDIS_SENTINEL_USERNAME``:
  the Sentinels' own password (their ``requirepass``) and ACL user, for a
  Sentinel URL of either form; they travel in the URL as its
  ``sentinel_password``/``sentinel_username`` options (giving one both ways
  is an error). Default unset.
- ``MULTIPAIR_PREFIX``: prefix of every Redis key. Default ``mp``.
- ``MULTIPAIR_MASTER_KEY``: base64 of the 32-byte master key that seals the
  lanes' secrets (``multipair keygen`` makes one). Default unset.
- ``MULTIPAIR_MASTER_KEY_FILE``: a file holding that base64 text instead.
  It must be readable by its owner only (mode ``0600`` or ``0400``): a file
  that group or others may read is refused, with the ``chmod 600`` that
  fixes it. Default unset. Prefer it to ``MULTIPAIR_MASTER_KEY``; either way
  the key is read once, and the supervisor removes both variables from its
  environment before it starts any child (:mod:`multipair.hardening`).
- ``MULTIPAIR_POS_VENDOR_ID``: POS vendor id sent in ``set_pos_info``
  (PROTOCOL.md §7.21). Default ``multipair``.
- ``MULTIPAIR_POS_VERSION``: POS version sent in ``set_pos_info``. Default:
  the package version.
- ``MULTIPAIR_DEVICE_API_KEY``: key of the device-address service (§6.1);
  without it no lane resolves its address automatically. Default unset.
- ``MULTIPAIR_DEVICE_ADDRESS_ENV``: the device-address environment code
  (§13.11), e.g. ``sb``. Default unset: chosen by test mode as the protocol
  says.
- ``MULTIPAIR_DEVICE_ADDRESS_BASE_URL``: a base URL that replaces the
  device-address service (the simulator's fake one). It must be
  ``https://``; ``http://`` is accepted only for a loopback host
  (``127.0.0.0/8``, ``::1``, ``localhost``), since the request carries the
  API key. Default unset.
- ``MULTIPAIR_DEVICE_ADDRESS_ALLOW``: comma-separated places the
  device-address service may send a lane to: IPv4 networks in CIDR form
  (``10.0.0.0/8``), host-name suffixes (``.shop.example.com``) and exact host
  names (``term1.example.com``). An answer outside them is refused and the
  lane keeps its address. Default unset: any valid address.
- ``MULTIPAIR_TLS_CA_FILE``: a CA bundle that ``wss://`` terminals are
  verified against instead of the system store (the simulator's own CA).
  Default unset.
- ``MULTIPAIR_EVENTS_MAXLEN``: the approximate length each events stream is
  trimmed to (``XADD ... MAXLEN ~``). Default ``10000``.
- ``MULTIPAIR_LANE_MEMORY_MAX``: the most memory one lane process may use,
  in bytes, or with a ``K``, ``M`` or ``G`` suffix (powers of 1024:
  ``256M``). The supervisor reads each lane's resident set size
  (``/proc/<pid>/statm``, which counts the pages it shares with the lane
  template too) on every tick; a lane over the bound is stopped like a
  drain (SIGTERM: it finishes its running transaction), killed at once past
  twice the bound, and restarted with backoff like a crash, its
  ``last_exit`` saying ``memory``. ``0`` turns the bound off. Default
  ``256M`` (an idle lane uses about 50 MiB resident, most of it shared).
- ``MULTIPAIR_HOST_ID``: this host's id in leases, ``mp:hosts`` and its
  control stream. Default: the host name.
- ``MULTIPAIR_LOG_FORMAT``: ``auto`` (JSON unless on a terminal), ``json`` or
  ``console``. Default ``auto``.
- ``MULTIPAIR_REDIS_MIN_REPLICAS``: how many replicas must confirm (``WAIT``)
  a write a guarantee rests on (the record before its request leaves, the
  outcome with its event and acknowledgement, a fencing-token increment)
  before the lane relies on it. ``0`` sends no ``WAIT``: right for a single
  server. With replicas (Sentinel, Cluster) ``1`` is recommended
  (docs/deploy-ha.md, "Durable writes"). Default ``0``.
- ``MULTIPAIR_REDIS_WAIT_MS``: the timeout of one such ``WAIT``, in
  milliseconds (1 to 60000). Default ``500``.
- ``MULTIPAIR_PAT_RETENTION_S``: how long a lane keeps each pay-at-table
  payment it stored (``mp:lane:{ID}:pat:payments``: a repeat of it is a
  ``duplicate``, and it is in its bill's ``bill_payment_history``), in
  seconds (60 to 31622400). Older ones are pruned as new ones are stored.
  Default ``604800`` (7 days).

Rules this module keeps:

- A bad value raises :class:`ConfigurationError` naming the variable, never a
  bare ``ValueError``.
- Overrides win over the environment; an override of ``None`` means "not
  given" (so CLI options that were not used can be passed straight through).
- The master key comes from at most one place: an override ``master_key`` or
  ``master_key_file``, else ``MULTIPAIR_MASTER_KEY_FILE``, else
  ``MULTIPAIR_MASTER_KEY``; both variables set at once is an error, since a
  silent choice could seal with one key and open with another.
- Neither the master key, the device API key nor a password in the Redis URL
  (the data nodes' or the Sentinels') appears in ``repr``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, cast

from multipair import __version__
from multipair.broker_schema.keys import validate_host_id, validate_prefix
from multipair.exceptions import ConfigurationError, MultipairError
from multipair.redis_conn import (
    SENTINEL_SCHEMES,
    is_sentinel_url,
    parse_sentinel_url,
    parse_sentinels,
    sentinel_url,
    url_for_logs,
)
from multipair.spi.address import DeviceAddressAllowlist, validate_device_address_base_url
from multipair.store.secrets_box import MasterKey

__all__ = [
    "DEFAULT_LANE_MEMORY_MAX",
    "DEFAULT_PAT_RETENTION_S",
    "ENV_PREFIX",
    "LogFormat",
    "Settings",
    "parse_bytes",
]

ENV_PREFIX: Final = "MULTIPAIR_"

DEFAULT_LANE_MEMORY_MAX: Final = 256 * 1024 * 1024
"""``MULTIPAIR_LANE_MEMORY_MAX`` when unset: 256 MiB."""
DEFAULT_PAT_RETENTION_S: Final = 7 * 86_400
"""``MULTIPAIR_PAT_RETENTION_S`` when unset: 7 days."""

LogFormat = Literal["auto", "json", "console"]

T = TypeVar("T")

_LOG_FORMATS: Final = ("auto", "json", "console")
_REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://", *SENTINEL_SCHEMES)
_ENV_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,31}")
_PRINTABLE_ID = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,63}")
_BYTES = re.compile(r"\s*(\d+)\s*([KMG]?)\s*", re.IGNORECASE)
_BYTE_UNITS: Final = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def _default_host_id() -> str:
    return socket.gethostname() or "localhost"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Service-wide settings; build with :meth:`from_env`. See the module docstring table."""

    redis_url: str | None = None
    """``None``: the caller starts an embedded redis-server."""
    prefix: str = "mp"
    master_key: MasterKey | None = field(default=None, repr=False)
    master_key_file: Path | None = None
    """Where :attr:`master_key` was read from, if from a file."""
    pos_vendor_id: str = "multipair"
    pos_version: str = __version__
    device_api_key: str | None = field(default=None, repr=False)
    device_address_env: str | None = None
    device_address_base_url: str | None = None
    device_address_allow: tuple[str, ...] = ()
    """Entries of ``MULTIPAIR_DEVICE_ADDRESS_ALLOW``; empty admits any valid address."""
    tls_ca_file: str | None = None
    events_maxlen: int = 10_000
    drain_timeout_s: float = 30.0
    """On SIGTERM, how long a lane lets its running transaction finish."""
    lane_memory_max: int = DEFAULT_LANE_MEMORY_MAX
    """Bytes of resident memory one lane may use before the supervisor restarts it; 0: off."""
    host_id: str = field(default_factory=_default_host_id)
    log_format: LogFormat = "auto"
    redis_min_replicas: int = 0
    """Replicas that must confirm the writes a guarantee rests on (docs/deploy-ha.md)."""
    redis_wait_ms: int = 500
    """The timeout of one replication ``WAIT``, in milliseconds."""
    pat_retention_s: int = DEFAULT_PAT_RETENTION_S
    """Seconds a lane keeps each pay-at-table payment it stored."""

    def __post_init__(self) -> None:
        if self.redis_url is not None and not self.redis_url.startswith(_REDIS_SCHEMES):
            raise ConfigurationError(
                "MULTIPAIR_REDIS_URL must start with redis://, rediss://, unix://, "
                "redis+sentinel:// or rediss+sentinel://"
            )
        if self.redis_url is not None and is_sentinel_url(self.redis_url):
            _named("MULTIPAIR_REDIS_URL", parse_sentinel_url, self.redis_url)
        _named("MULTIPAIR_PREFIX", validate_prefix, self.prefix)
        _named("MULTIPAIR_HOST_ID", validate_host_id, self.host_id)
        for name in ("pos_vendor_id", "pos_version"):
            if not _PRINTABLE_ID.fullmatch(getattr(self, name)):
                raise ConfigurationError(
                    f"{_env(name)} must be 1-64 printable ASCII characters, "
                    f"got {getattr(self, name)!r}"
                )
        if self.device_api_key is not None and not self.device_api_key.strip():
            raise ConfigurationError("MULTIPAIR_DEVICE_API_KEY is empty")
        if self.device_address_env is not None and not _ENV_CODE.fullmatch(self.device_address_env):
            raise ConfigurationError(
                "MULTIPAIR_DEVICE_ADDRESS_ENV must be letters, digits or '-' (max 32), "
                f"got {self.device_address_env!r}"
            )
        if self.device_address_base_url is not None:
            _named(
                "MULTIPAIR_DEVICE_ADDRESS_BASE_URL",
                validate_device_address_base_url,
                self.device_address_base_url,
            )
        allow = _allow_entries(self.device_address_allow)
        object.__setattr__(self, "device_address_allow", allow)
        _named("MULTIPAIR_DEVICE_ADDRESS_ALLOW", DeviceAddressAllowlist.parse, allow)
        if self.tls_ca_file is not None and not Path(self.tls_ca_file).is_file():
            raise ConfigurationError(
                f"MULTIPAIR_TLS_CA_FILE names no readable file: {self.tls_ca_file!r}"
            )
        if type(self.events_maxlen) is not int or self.events_maxlen < 1:
            raise ConfigurationError(
                f"MULTIPAIR_EVENTS_MAXLEN must be a whole number >= 1, got {self.events_maxlen!r}"
            )
        if (
            isinstance(self.drain_timeout_s, bool)
            or not isinstance(self.drain_timeout_s, int | float)
            or not 0 <= self.drain_timeout_s <= 3600
        ):
            raise ConfigurationError(
                f"MULTIPAIR_DRAIN_TIMEOUT must be 0 to 3600 seconds, got {self.drain_timeout_s!r}"
            )
        if type(self.lane_memory_max) is not int or self.lane_memory_max < 0:
            raise ConfigurationError(
                "MULTIPAIR_LANE_MEMORY_MAX must be 0 (off) or a number of bytes, "
                f"got {self.lane_memory_max!r}"
            )
        # Durable writes (issue 19), pay-at-table retention: from the environment, text.
        for name, low, high in (
            ("redis_min_replicas", 0, 16),
            ("redis_wait_ms", 1, 60_000),
            ("pat_retention_s", 60, 366 * 86_400),
        ):
            value: object = getattr(self, name)
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value.strip(), 10)
                object.__setattr__(self, name, value)
            if type(value) is not int or not low <= value <= high:
                raise ConfigurationError(
                    f"{_env(name)} must be a whole number from {low} to {high}, got {value!r}"
                )
        if self.log_format not in _LOG_FORMATS:
            raise ConfigurationError(
                f"MULTIPAIR_LOG_FORMAT must be one of {', '.join(_LOG_FORMATS)}, "
                f"got {self.log_format!r}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``MULTIPAIR_*`` from ``environ`` (default ``os.environ``), then apply overrides.

        ``overrides`` are field names with typed values (``events_maxlen=500``,
        ``master_key_file=Path(...)``); ``None`` values are ignored.
        """
        env = os.environ if environ is None else environ
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigurationError(f"unknown setting {unknown[0]!r}")
        given = {k: v for k, v in overrides.items() if v is not None}

        values: dict[str, Any] = {}
        parsed = {
            "master_key",
            "master_key_file",
            "events_maxlen",
            "drain_timeout_s",
            "lane_memory_max",
        }
        for name in names - parsed:
            text = env.get(_env(name))
            if text is not None and text != "":
                values[name] = text
        maxlen = env.get("MULTIPAIR_EVENTS_MAXLEN")
        if maxlen:
            try:
                values["events_maxlen"] = int(maxlen.strip(), 10)
            except ValueError:
                raise ConfigurationError(
                    f"MULTIPAIR_EVENTS_MAXLEN must be a whole number, got {maxlen!r}"
                ) from None
        drain = env.get("MULTIPAIR_DRAIN_TIMEOUT")
        if drain:
            try:
                values["drain_timeout_s"] = float(drain.strip())
            except ValueError:
                raise ConfigurationError(
                    f"MULTIPAIR_DRAIN_TIMEOUT must be a number of seconds, got {drain!r}"
                ) from None
        memory = env.get("MULTIPAIR_LANE_MEMORY_MAX")
        if memory:
            values["lane_memory_max"] = _named("MULTIPAIR_LANE_MEMORY_MAX", parse_bytes, memory)
        values.update(
            {k: v for k, v in given.items() if k not in ("master_key", "master_key_file")}
        )
        redis_url = _sentinel_env(env, values.get("redis_url"), "redis_url" in given)
        if redis_url is not None:
            values["redis_url"] = redis_url
        values["master_key"], values["master_key_file"] = _master_key(env, given)
        return cls(**values)

    def __repr__(self) -> str:
        shown = []
        for f in dataclasses.fields(self):
            value: object = getattr(self, f.name)
            if f.name == "redis_url" and value is not None:
                value = self.redis_url_for_logs()
            elif f.name == "device_api_key" and value is not None:
                value = "<set>"
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def redis_url_for_logs(self) -> str | None:
        """The Redis URL with any password (the data nodes', the Sentinels') as ``***``."""
        if self.redis_url is None:
            return None
        return url_for_logs(self.redis_url)

    def require_master_key(self) -> MasterKey:
        """The master key, or :class:`ConfigurationError` saying how to provide one."""
        if self.master_key is None:
            raise ConfigurationError(
                "no master key: set MULTIPAIR_MASTER_KEY (base64 of 32 bytes) or "
                "MULTIPAIR_MASTER_KEY_FILE / --master-key-file; make one with `multipair keygen`"
            )
        return self.master_key


def _env(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _allow_entries(value: object) -> tuple[str, ...]:
    """``MULTIPAIR_DEVICE_ADDRESS_ALLOW`` as entries: comma-separated text or a sequence.

    A sequence arrives from the lane template (JSON makes the tuple a list).
    Blank entries (``a,,b``, a final comma) are dropped, but text that holds
    only blanks is an error rather than an allowlist that admits everything.
    """
    items: list[object]
    if isinstance(value, str):
        items = list(value.split(",")) if value else []
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ConfigurationError("MULTIPAIR_DEVICE_ADDRESS_ALLOW must be comma-separated text")
    if not all(isinstance(item, str) for item in items):
        raise ConfigurationError("MULTIPAIR_DEVICE_ADDRESS_ALLOW entries must be text")
    entries = tuple(item.strip() for item in cast(list[str], items) if item.strip())
    if items and not entries:
        raise ConfigurationError("MULTIPAIR_DEVICE_ADDRESS_ALLOW lists no entry")
    return entries


def _sentinel_env(env: Mapping[str, str], url: str | None, overridden: bool) -> str | None:
    """The Redis URL once the ``MULTIPAIR_REDIS_SENTINEL*`` variables are folded into it.

    ``MULTIPAIR_REDIS_SENTINELS`` (with ``MULTIPAIR_REDIS_MASTER_NAME`` and
    the data nodes' ``MULTIPAIR_REDIS_USERNAME``/``PASSWORD``) becomes a
    ``redis+sentinel://`` URL, unless a caller's override (``--redis-url``)
    gave the URL; the Sentinels' credentials become its options. None: no URL.
    """
    sentinels = (env.get("MULTIPAIR_REDIS_SENTINELS") or "").strip()
    master_name = env.get("MULTIPAIR_REDIS_MASTER_NAME")
    username = env.get("MULTIPAIR_REDIS_USERNAME") or None
    password = env.get("MULTIPAIR_REDIS_PASSWORD") or None
    s_username = env.get("MULTIPAIR_REDIS_SENTINEL_USERNAME") or None
    s_password = env.get("MULTIPAIR_REDIS_SENTINEL_PASSWORD") or None
    if sentinels and not overridden:
        if url is not None:
            raise ConfigurationError(
                "both MULTIPAIR_REDIS_URL and MULTIPAIR_REDIS_SENTINELS are set; keep one"
            )
        if master_name is None or not master_name.strip():
            raise ConfigurationError(
                "MULTIPAIR_REDIS_SENTINELS is set but MULTIPAIR_REDIS_MASTER_NAME is empty: "
                "give the name the Sentinels monitor the primary under"
            )
        hosts = _named("MULTIPAIR_REDIS_SENTINELS", parse_sentinels, sentinels)
        url = sentinel_url(
            hosts,
            master_name.strip(),
            username=username,
            password=password,
            sentinel_username=s_username,
            sentinel_password=s_password,
        )
        # Check the name here, so the error names the variable that holds it.
        _named("MULTIPAIR_REDIS_MASTER_NAME", parse_sentinel_url, url)
        return url
    if master_name is not None and master_name.strip() and not overridden:
        raise ConfigurationError(
            "MULTIPAIR_REDIS_MASTER_NAME is set without MULTIPAIR_REDIS_SENTINELS"
        )
    if (username or password) and not overridden:
        raise ConfigurationError(
            "MULTIPAIR_REDIS_USERNAME/MULTIPAIR_REDIS_PASSWORD go with "
            "MULTIPAIR_REDIS_SENTINELS; with MULTIPAIR_REDIS_URL put them in the URL"
        )
    if s_username is None and s_password is None:
        return url
    if url is None or not is_sentinel_url(url):
        raise ConfigurationError(
            "MULTIPAIR_REDIS_SENTINEL_PASSWORD/USERNAME are set but the Redis URL is not "
            "a redis+sentinel:// one"
        )
    parsed = _named("MULTIPAIR_REDIS_URL", parse_sentinel_url, url)
    if (s_password is not None and parsed.sentinel_password is not None) or (
        s_username is not None and parsed.sentinel_username is not None
    ):
        raise ConfigurationError(
            "the Sentinel credentials are both in MULTIPAIR_REDIS_SENTINEL_* and in the "
            "Redis URL's options; keep one"
        )
    return sentinel_url(
        parsed.sentinels,
        parsed.master_name,
        username=parsed.username,
        password=parsed.password,
        sentinel_username=s_username or parsed.sentinel_username,
        sentinel_password=s_password or parsed.sentinel_password,
        db=parsed.db,
        ssl=parsed.ssl,
    )


def _named(variable: str, check: Callable[[Any], T], value: object) -> T:
    try:
        return check(value)
    except MultipairError as exc:
        raise ConfigurationError(f"{variable}: {exc}") from None


def parse_bytes(text: str) -> int:
    """``"268435456"``, ``"512K"``, ``"256M"``, ``"1G"`` (powers of 1024, any case) in bytes."""
    match = _BYTES.fullmatch(text)
    if match is None:
        raise ConfigurationError(
            f"must be a whole number of bytes, optionally with K, M or G (256M), got {text!r}"
        )
    return int(match[1]) * _BYTE_UNITS[match[2].upper()]


def _master_key(
    env: Mapping[str, str], given: Mapping[str, Any]
) -> tuple[MasterKey | None, Path | None]:
    if "master_key" in given:
        if "master_key_file" in given:
            raise ConfigurationError("give the master key or a master key file, not both")
        key = given["master_key"]
        if not isinstance(key, MasterKey):
            raise ConfigurationError("master_key must be a MasterKey")
        return key, None
    if "master_key_file" in given:
        path = Path(cast(str, given["master_key_file"]))
        return MasterKey.from_file(path), path
    file_text = env.get("MULTIPAIR_MASTER_KEY_FILE") or None
    key_text = env.get("MULTIPAIR_MASTER_KEY") or None
    if file_text is not None and key_text is not None:
        raise ConfigurationError(
            "both MULTIPAIR_MASTER_KEY and MULTIPAIR_MASTER_KEY_FILE are set; keep one"
        )
    if file_text is not None:
        path = Path(file_text)
        return MasterKey.from_file(path), path
    if key_text is not None:
        return MasterKey.from_base64(key_text, source="MULTIPAIR_MASTER_KEY"), None
    return None, None
