"""Lane profiles in Redis: ``mp:lane:{ID}:profile`` and the ``mp:lanes`` set.

Rules this module keeps:

- A profile is a hash of text fields (booleans ``1``/``0``, times ISO-8601
  UTC); fields this version does not know are kept untouched, so an older
  process never erases a newer one's data.
- The pairing secrets and the SPI token live in the same hash, sealed with
  the master key and bound to the lane and field (``secrets_box``). They are
  not part of :class:`LaneProfile`, so no ``repr`` or log of a profile can
  show them.
- Every write to an existing lane first checks that its profile still exists
  (a Lua script or ``WATCH``), so a lane deleted meanwhile is never brought
  back half-made.
- :data:`SEALED_FIELDS` names every sealed field; :meth:`ProfileStore.reseal`
  moves them all from one master key to another in one transaction per lane.
- Only single-lane keys are touched together (one hash-tag slot); ``mp:lanes``
  is updated on its own: first the profile, then the set on create, the
  other way round on delete, so the set never names a lane without a profile
  for long.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as _dt
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError, WatchError
from redis.typing import EncodableT, FieldT

from multipair.broker_schema import CONSUMER_GROUP, Keys, Reason, format_time, parse_time
from multipair.broker_schema.commands import SetTableConfig, check_table_config_value
from multipair.broker_schema.keys import validate_instance_id
from multipair.exceptions import CommandError, ConfigurationError, CryptoError, InternalError
from multipair.leases import FencedScript, parse_lease
from multipair.redis_conn import as_text, redis_errors, text_map
from multipair.spi.crypto import Secrets
from multipair.store.secrets_box import MasterKey, lane_aad

__all__ = [
    "DEFAULT_ANSWER_TIMEOUT_MS",
    "PROFILE_FIELDS",
    "SEALED_FIELDS",
    "LaneProfile",
    "PayAtTableConfig",
    "ProfileStore",
    "ResealResult",
    "ensure_command_group",
]

_POS_ID = re.compile(r"[A-Za-z0-9]{1,16}")
_SERIAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
_ADDRESS = re.compile(
    r"(?:(?P<scheme>wss?)://)?(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}))(?::(?P<port>\d{1,5}))?/?"
)

_SECRETS_FIELD: Final = "secrets"
_SPI_TOKEN_FIELD: Final = "spi_token"  # noqa: S105 - a field name, not a token
_VERSION_FIELD: Final = "v"

SEALED_FIELDS: Final = (_SECRETS_FIELD, _SPI_TOKEN_FIELD)
"""Every profile hash field sealed with the master key (the pairing keys, with the
pre-roll keys inside the same field, and the SPI token). A new sealed field goes here."""


def _now_ms() -> _dt.datetime:
    now = _dt.datetime.now(_dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _new_id() -> str:
    return str(uuid.uuid4())


DEFAULT_ANSWER_TIMEOUT_MS: Final = 10_000
"""How long a lane waits for the POS's answer to a pay-at-table request, unless configured."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PayAtTableConfig:
    """The lane's pay-at-table set-up (PROTOCOL.md §7.23), as ``set_table_config`` left it.

    The fields are those of the ``set_table_config`` command, with the same
    rules; stored as JSON in the profile's ``pat`` field. Building one
    validates it (``CommandError`` naming the field).
    """

    enabled: bool = False
    operator_id_enabled: bool = False
    split_by_amount_enabled: bool = False
    equal_split_enabled: bool = False
    tipping_enabled: bool = False
    summary_report_enabled: bool = False
    table_retrieval_enabled: bool = False
    pay_button_label: str = ""
    operator_id_label: str = ""
    table_id_label: str = ""
    operator_ids: tuple[str, ...] = ()
    """Operator ids the terminal accepts; empty = any."""
    answer_timeout_ms: int = DEFAULT_ANSWER_TIMEOUT_MS
    """How long the lane waits for the POS's answer to a terminal request."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_table_config_value(f.name, getattr(self, f.name))

    def updated(self, command: SetTableConfig) -> PayAtTableConfig:
        """This config with the options ``command`` sets (the others unchanged)."""
        changes = {
            f.name: getattr(command, f.name)
            for f in dataclasses.fields(self)
            if getattr(command, f.name) is not None
        }
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        """The profile hash's ``pat`` field."""
        return orjson.dumps(dataclasses.asdict(self)).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> PayAtTableConfig:
        """Read the ``pat`` field; keys this version does not know are ignored.

        Raises ``CommandError`` (``invalid_value``, ``wrong_type``) for damaged text.
        """
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise CommandError(Reason.INVALID_VALUE, "pat is not JSON") from None
        if type(data) is not dict:
            raise CommandError(Reason.WRONG_TYPE, "pat must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if type(values.get("operator_ids")) is list:
            values["operator_ids"] = tuple(values["operator_ids"])
        return cls(**values)


@dataclass(frozen=True, slots=True, kw_only=True)
class LaneProfile:
    """What a lane needs to reach and pair with its terminal (DESIGN.md key table).

    Building one validates it and raises ``CommandError('invalid_value' |
    'wrong_type' | 'invalid_instance_id')`` naming the field.
    """

    instance_id: str = field(default_factory=_new_id)
    """Canonical lower-case UUID; a new random one unless given."""
    pos_id: str
    """1-16 letters or digits: the POS as the terminal knows it (PROTOCOL.md §8.4)."""
    serial_number: str
    """The terminal's serial number, e.g. ``202-206-301``."""
    device_address: str | None = None
    """``ws://host:port``, ``wss://host``, or a bare ``host[:port]``; required unless auto."""
    auto_address: bool = False
    """Resolve the address from the serial number through the device-address service."""
    tenant_code: str | None = None
    """The acquirer (tenant) code, e.g. ``wbc`` or ``gko`` (the seed's ``acquirerCode``)."""
    test_mode: bool = False
    secure: bool = False
    """Use secure websockets (``wss://``)."""
    print_merchant_copy: bool = False
    prompt_for_customer_copy: bool = False
    signature_flow_on_eftpos: bool = False
    enabled: bool = True
    """False after ``lane stop``: no host runs the lane until it is started again."""
    created_at: _dt.datetime = field(default_factory=_now_ms)
    pat: PayAtTableConfig | None = None
    """Pay at table (``set_table_config``); ``None``: never set up, the terminal is told off."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "instance_id", validate_instance_id(self.instance_id))
        _require_str("pos_id", self.pos_id, _POS_ID, "1-16 letters or digits")
        _require_str(
            "serial_number", self.serial_number, _SERIAL, "letters, digits and '-' (max 64)"
        )
        if self.tenant_code is not None:
            _require_str(
                "tenant_code", self.tenant_code, _TENANT, "letters, digits, '_' or '-' (max 32)"
            )
        if self.device_address is not None:
            _check_address(self.device_address)
        for name in (
            "auto_address",
            "test_mode",
            "secure",
            "print_merchant_copy",
            "prompt_for_customer_copy",
            "signature_flow_on_eftpos",
            "enabled",
        ):
            if type(getattr(self, name)) is not bool:
                raise CommandError(Reason.WRONG_TYPE, f"{name} must be true or false")
        if not self.auto_address and self.device_address is None:
            raise CommandError(
                Reason.INVALID_VALUE, "a lane needs a device_address unless auto_address is on"
            )
        if not isinstance(self.created_at, _dt.datetime) or self.created_at.tzinfo is None:
            raise CommandError(Reason.WRONG_TYPE, "created_at must be an aware datetime")
        object.__setattr__(self, "created_at", self.created_at.astimezone(_dt.UTC))
        if self.pat is not None and not isinstance(self.pat, PayAtTableConfig):
            raise CommandError(Reason.WRONG_TYPE, "pat must be a PayAtTableConfig or None")


@dataclass(frozen=True, slots=True, kw_only=True)
class ResealResult:
    """What :meth:`ProfileStore.reseal` did to one lane: field names only, never values."""

    resealed: tuple[str, ...] = ()
    """Fields that opened under the old key and are now sealed under the new one
    (with ``dry_run``: would be)."""
    already_new: tuple[str, ...] = ()
    """Fields that already open under the new key, left alone (an earlier run did them)."""


PROFILE_FIELDS: Final = tuple(f.name for f in dataclasses.fields(LaneProfile))
"""The profile hash fields that map to :class:`LaneProfile` (besides sealed secrets)."""

_BOOL_FIELDS: Final = frozenset(
    f.name for f in dataclasses.fields(LaneProfile) if f.type in ("bool", bool)
)


def _require_str(name: str, value: object, pattern: re.Pattern[str], rule: str) -> None:
    if not isinstance(value, str):
        raise CommandError(Reason.WRONG_TYPE, f"{name} must be a string")
    if not pattern.fullmatch(value):
        raise CommandError(Reason.INVALID_VALUE, f"{name} must be {rule}, got {value[:70]!r}")


def _check_address(address: object) -> None:
    if not isinstance(address, str):
        raise CommandError(Reason.WRONG_TYPE, "device_address must be a string")
    match = _ADDRESS.fullmatch(address)
    if match is None or (match["port"] is not None and not 0 < int(match["port"]) <= 65535):
        raise CommandError(
            Reason.INVALID_VALUE,
            f"device_address must be ws://host:port, wss://host or host[:port], "
            f"got {address[:80]!r}",
        )


def _to_hash(profile: LaneProfile) -> tuple[dict[str, str], list[str]]:
    """Fields to set and fields to delete (those that are ``None``)."""
    values: dict[str, str] = {_VERSION_FIELD: "1"}
    absent: list[str] = []
    for name in PROFILE_FIELDS:
        value = getattr(profile, name)
        if value is None:
            absent.append(name)
        elif isinstance(value, bool):
            values[name] = "1" if value else "0"
        elif isinstance(value, _dt.datetime):
            values[name] = format_time(value)
        elif isinstance(value, PayAtTableConfig):
            values[name] = value.to_json()
        else:
            values[name] = str(value)
    return values, absent


def _from_hash(instance_id: str, raw: Mapping[str, str]) -> LaneProfile:
    values: dict[str, Any] = {}
    try:
        for name in PROFILE_FIELDS:
            if name not in raw:
                continue
            text = raw[name]
            if name in _BOOL_FIELDS:
                if text not in ("0", "1"):
                    raise CommandError(Reason.INVALID_VALUE, f"{name} must be 0 or 1")
                values[name] = text == "1"
            elif name == "created_at":
                values[name] = parse_time(text, name)
            elif name == "pat":
                values[name] = PayAtTableConfig.from_json(text)
            else:
                values[name] = text
        values["instance_id"] = instance_id
        return LaneProfile(**values)
    except (CommandError, TypeError) as exc:
        raise ConfigurationError(
            f"the stored profile of lane {instance_id} is damaged: {exc}"
        ) from None


# KEYS[1] profile. ARGV[1] n (pairs to set), then n field/value pairs, then fields to delete.
# Writes only while the profile exists; returns 0 when it does not.
_WRITE_IF_EXISTS: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = tonumber(ARGV[1])
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 2, 1 + 2 * n)) end
if #ARGV > 1 + 2 * n then redis.call('HDEL', KEYS[1], unpack(ARGV, 2 + 2 * n)) end
return 1
"""

# KEYS[1] profile. ARGV: field/value pairs. Creates only when absent; returns 0 when present.
_CREATE_IF_ABSENT: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


async def ensure_command_group(redis: Redis, keys: Keys, instance_id: str) -> None:
    """Create the lane's command stream and its consumer group ``lane`` if missing.

    The group starts at ``0``, so commands added before the lane first runs
    are delivered too.
    """
    with redis_errors():
        try:
            await redis.xgroup_create(
                keys.commands(instance_id), CONSUMER_GROUP, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


class ProfileStore:
    """Create, read, update, list and delete lane profiles, and keep their sealed secrets.

    ``master_key`` may be ``None`` for tools that never touch secrets; any use
    of secrets without it raises :class:`ConfigurationError`.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        master_key: MasterKey | None = None,
        *,
        fencing_token: int | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._master_key = master_key
        # Sealed-field writes (secrets, tokens) are fenced when a lane owns this
        # store: a stale lane must never overwrite the keys its successor rolled.
        self._write_if_exists = FencedScript(redis, _WRITE_IF_EXISTS, keys, fencing_token)
        self._create_if_absent = redis.register_script(_CREATE_IF_ABSENT)

    def __repr__(self) -> str:
        return f"ProfileStore(keys={self._keys!r}, master_key={self._master_key!r})"

    # --- profiles ---------------------------------------------------------------------------

    async def create(self, profile: LaneProfile) -> LaneProfile:
        """Store a new lane, add it to ``mp:lanes`` and create its command group.

        Raises ``CommandError('lane_exists')`` when the instance id is taken.
        """
        iid = profile.instance_id
        values, _ = _to_hash(profile)
        args = [item for pair in values.items() for item in pair]
        with redis_errors():
            created = await self._create_if_absent(keys=[self._keys.profile(iid)], args=args)
            if not created:
                raise CommandError(Reason.LANE_EXISTS, f"lane {iid} already exists")
            await ensure_command_group(self._redis, self._keys, iid)
            await self._redis.sadd(self._keys.lanes(), iid)
        return profile

    async def get(self, instance_id: str) -> LaneProfile:
        """The lane's profile; ``CommandError('unknown_lane')`` when there is none."""
        iid = validate_instance_id(instance_id)
        with redis_errors():
            raw = await self._redis.hgetall(self._keys.profile(iid))
        if not raw:
            raise CommandError(Reason.UNKNOWN_LANE, f"no lane has instance id {iid}")
        return _from_hash(iid, text_map(raw))

    async def exists(self, instance_id: str) -> bool:
        """True when the lane has a profile."""
        iid = validate_instance_id(instance_id)
        with redis_errors():
            return bool(await self._redis.exists(self._keys.profile(iid)))

    async def update(self, instance_id: str, /, **changes: Any) -> LaneProfile:
        """Change profile fields (not ``instance_id`` or ``created_at``); returns the new profile.

        Read, validated and written under ``WATCH``, so concurrent updates
        never mix into a profile that breaks its rules.
        """
        iid = validate_instance_id(instance_id)
        for name in changes:
            if name not in PROFILE_FIELDS or name in ("instance_id", "created_at"):
                raise CommandError(
                    Reason.UNKNOWN_FIELD, f"a profile has no changeable field {name!r}"
                )
        key = self._keys.profile(iid)
        with redis_errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(key)
                        raw = await pipe.hgetall(key)
                        if not raw:
                            raise CommandError(
                                Reason.UNKNOWN_LANE, f"no lane has instance id {iid}"
                            )
                        updated = dataclasses.replace(_from_hash(iid, text_map(raw)), **changes)
                        values, absent = _to_hash(updated)
                        pipe.multi()  # type: ignore[no-untyped-call]
                        mapping: dict[FieldT, EncodableT] = {k: v for k, v in values.items()}
                        pipe.hset(key, mapping=mapping)
                        if absent:
                            pipe.hdel(key, *absent)
                        await pipe.execute()
                        return updated
                    except WatchError:
                        continue

    async def list_ids(self) -> builtins.list[str]:
        """The instance ids in ``mp:lanes``, sorted."""
        with redis_errors():
            members = await self._redis.smembers(self._keys.lanes())
        return sorted(as_text(m) for m in members)

    async def list(self) -> builtins.list[LaneProfile]:
        """Every lane in ``mp:lanes`` that has a profile, oldest first."""
        ids = await self.list_ids()
        if not ids:
            return []
        with redis_errors():
            # One round trip; each HGETALL is a single-key command (cluster-safe).
            async with self._redis.pipeline(transaction=False) as pipe:
                for iid in ids:
                    pipe.hgetall(self._keys.profile(iid))
                replies = await pipe.execute()
        profiles = [
            _from_hash(iid, text_map(raw)) for iid, raw in zip(ids, replies, strict=True) if raw
        ]
        profiles.sort(key=lambda p: (p.created_at, p.instance_id))
        return profiles

    async def delete(self, instance_id: str) -> bool:
        """Remove the lane from ``mp:lanes`` and delete every key it has; False if it had none.

        Deleted: profile (with secrets), command and event streams, state,
        every transaction record and its indexes, remembered command replies,
        lease and dead-letter stream. A lane process still running may write
        its state again; stop the lane first.
        """
        iid = validate_instance_id(instance_id)
        keys = self._keys
        with redis_errors():
            await self._redis.srem(keys.lanes(), iid)
            async with self._redis.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(keys.txs(iid), keys.txs_open(iid), keys.profile(iid))
                        # EXISTS by name: a cluster pipeline's exists() splits its keys by
                        # slot and, while watching, returns the pipeline, not the reply.
                        existed = bool(await pipe.execute_command("EXISTS", keys.profile(iid)))
                        refs = {as_text(r) for r in await pipe.zrange(keys.txs(iid), 0, -1)}
                        refs |= {as_text(r) for r in await pipe.smembers(keys.txs_open(iid))}
                        doomed = [*keys.lane_fixed_keys(iid), *(keys.tx(iid, r) for r in refs)]
                        pipe.multi()  # type: ignore[no-untyped-call]
                        pipe.delete(*doomed)
                        results = await pipe.execute()
                        return existed or bool(results[0])
                    except WatchError:
                        continue

    # --- sealed secrets ---------------------------------------------------------------------

    def _require_key(self, instance_id: str) -> MasterKey:
        if self._master_key is None:
            raise ConfigurationError(
                f"lane {instance_id} needs the master key (MULTIPAIR_MASTER_KEY or "
                "--master-key-file) to use its secrets; refusing to go on without it"
            )
        return self._master_key

    async def _save_sealed(
        self, instance_id: str, field_name: str, plaintext: bytes | None
    ) -> None:
        iid = validate_instance_id(instance_id)
        if plaintext is None:
            args: builtins.list[str] = ["0", field_name]
        else:
            sealed = self._require_key(iid).seal(plaintext, aad=lane_aad(iid, field_name))
            args = ["1", field_name, sealed]
        with redis_errors():
            written = await self._write_if_exists(keys=[self._keys.profile(iid)], args=args)
        if not written:
            raise CommandError(Reason.UNKNOWN_LANE, f"no lane has instance id {iid}")

    async def _load_sealed(self, instance_id: str, field_name: str, what: str) -> bytes | None:
        iid = validate_instance_id(instance_id)
        key = self._keys.profile(iid)
        with redis_errors():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.exists(key)
                pipe.hget(key, field_name)
                exists, sealed = await pipe.execute()
        if not exists:
            raise CommandError(Reason.UNKNOWN_LANE, f"no lane has instance id {iid}")
        if sealed is None:
            return None
        master_key = self._require_key(iid)
        try:
            return master_key.open(as_text(sealed), aad=lane_aad(iid, field_name))
        except CryptoError:
            raise ConfigurationError(
                f"master key {master_key.fingerprint()} does not open the stored {what} of "
                f"lane {iid}; refusing to re-pair (use the master key the lane was paired with)"
            ) from None

    async def save_secrets(
        self, instance_id: str, secrets: Secrets | None, *, previous: Secrets | None = None
    ) -> None:
        """Seal and store the pairing keys; ``None`` forgets them (unpaired).

        ``previous`` keeps the keys from before a key roll that the terminal
        has not yet confirmed, in the same sealed field, so one ``HSET`` holds
        both: after it returns, a lane that dies still finds the new keys
        (PROTOCOL.md §5.7) and can fall back to the old ones if the terminal
        never received its reply (§13.6).
        """
        plaintext = None
        if secrets is not None:
            data: dict[str, object] = {"enc_key": secrets.enc_key, "hmac_key": secrets.hmac_key}
            if previous is not None:
                data["previous"] = {"enc_key": previous.enc_key, "hmac_key": previous.hmac_key}
            plaintext = orjson.dumps(data)
        await self._save_sealed(instance_id, _SECRETS_FIELD, plaintext)

    async def load_secrets(self, instance_id: str) -> Secrets | None:
        """The lane's pairing keys, or ``None`` when it is not paired.

        Raises :class:`ConfigurationError` when there are sealed keys but no
        master key, or a master key that does not open them.
        """
        current, _ = await self.load_secrets_and_previous(instance_id)
        return current

    async def load_secrets_and_previous(
        self, instance_id: str
    ) -> tuple[Secrets | None, Secrets | None]:
        """The keys in use and the pre-roll keys of an unconfirmed key roll (or ``None``)."""
        plaintext = await self._load_sealed(instance_id, _SECRETS_FIELD, "secrets")
        if plaintext is None:
            return None, None
        try:
            data = orjson.loads(plaintext)
            old = data.get("previous")
            return (
                Secrets(enc_key=data["enc_key"], hmac_key=data["hmac_key"]),
                None if old is None else Secrets(enc_key=old["enc_key"], hmac_key=old["hmac_key"]),
            )
        except Exception as exc:  # opened fine, so this is our own bad write
            raise InternalError(f"sealed secrets of lane {instance_id} are malformed") from exc

    async def save_spi_token(self, instance_id: str, token: str | None) -> None:
        """Seal and store the latest SPI token (PROTOCOL.md §13.10); ``None`` forgets it."""
        await self._save_sealed(
            instance_id, _SPI_TOKEN_FIELD, None if token is None else token.encode("utf-8")
        )

    async def load_spi_token(self, instance_id: str) -> str | None:
        """The lane's latest SPI token, or ``None``."""
        plaintext = await self._load_sealed(instance_id, _SPI_TOKEN_FIELD, "SPI token")
        return None if plaintext is None else plaintext.decode("utf-8")

    async def reseal(
        self, instance_id: str, old: MasterKey, new: MasterKey, *, dry_run: bool = False
    ) -> ResealResult:
        """Seal every field of :data:`SEALED_FIELDS` of one lane under ``new`` instead of ``old``.

        Restartable: a field that already opens under ``new`` is left alone.
        A field that opens under neither raises :class:`ConfigurationError`
        naming the lane and the field, and nothing of that lane is written.
        The fields are read and written in one ``MULTI`` under ``WATCH`` of
        the profile and the lane's lease (one slot), so a lane is never left
        half re-sealed and a lease taken meanwhile aborts the write.

        Raises ``CommandError('not_allowed')`` while the lane has a lease (a
        running lane could roll its keys under the old key; with ``dry_run``
        the lease is ignored) and ``CommandError('unknown_lane')`` when the lane
        has no profile. ``dry_run`` checks and writes nothing. This store's own
        master key is not used.
        """
        iid = validate_instance_id(instance_id)
        if old == new:
            raise ConfigurationError(
                f"the old and the new master key are the same key ({new.fingerprint()})"
            )
        profile_key, lease_key = self._keys.profile(iid), self._keys.lease(iid)
        with redis_errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(profile_key, lease_key)
                        # EXISTS by name, as in delete(): a cluster pipeline's exists()
                        # returns the pipeline, not the reply, while watching.
                        exists = await pipe.execute_command("EXISTS", profile_key)
                        lease = await pipe.get(lease_key)
                        stored = await pipe.hmget(profile_key, list(SEALED_FIELDS))
                        if not exists:
                            raise CommandError(
                                Reason.UNKNOWN_LANE, f"no lane has instance id {iid}"
                            )
                        if lease is not None and not dry_run:
                            holder = parse_lease(lease)
                            host = "another host" if holder is None else holder.host_id
                            raise CommandError(
                                Reason.NOT_ALLOWED,
                                f"lane {iid} is running (lease held by {host}): not re-sealed",
                            )
                        resealed: dict[FieldT, EncodableT] = {}
                        already_new: builtins.list[str] = []
                        for name, value in zip(SEALED_FIELDS, stored, strict=True):
                            if value is None:
                                continue
                            aad = lane_aad(iid, name)
                            try:
                                plaintext = old.open(as_text(value), aad=aad)
                            except CryptoError:
                                try:
                                    new.open(as_text(value), aad=aad)
                                except CryptoError:
                                    raise ConfigurationError(
                                        f"the {name} field of lane {iid} opens under neither "
                                        f"the old master key {old.fingerprint()} nor the new "
                                        f"one {new.fingerprint()}: not re-sealed"
                                    ) from None
                                already_new.append(name)
                                continue
                            resealed[name] = new.seal(plaintext, aad=aad)
                        if resealed and not dry_run:
                            pipe.multi()  # type: ignore[no-untyped-call]
                            pipe.hset(profile_key, mapping=resealed)
                            await pipe.execute()
                        return ResealResult(
                            resealed=tuple(str(name) for name in resealed),
                            already_new=tuple(already_new),
                        )
                    except WatchError:
                        continue
