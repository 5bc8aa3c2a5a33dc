"""``mp:meta``: which master key this deployment's lanes are sealed under.

A host started with another master key than the one its lanes' pairing keys
are sealed under would take its share of the lanes and crash-loop every one
of them (their secrets do not open). So the key's fingerprint
(:meth:`~multipair.store.secrets_box.MasterKey.fingerprint`, 12 hex digits
of a hash: it tells keys apart and gives nothing of a key away) is kept in
the hash ``mp:meta``, field ``master_key_fingerprint``, and every supervisor
(and ``multipair up``) checks its key against it before it runs a lane:

- the same fingerprint: go on;
- another one: refuse, in one line, naming both fingerprints and the way
  out (the right key file, or ``multipair reseal``, which moves the lanes to
  a new key and writes the new fingerprint: :func:`record_master_key`);
- none yet (a new deployment, or lanes paired before the fingerprint was
  kept): try the sealed pairing keys of up to :data:`SAMPLE` lanes. If one
  opens, or no lane has sealed keys, this key is recorded (the first one to
  record wins, ``HSETNX``); if some are sealed and none opens, refuse.

One key, touched on its own (fine on a Redis Cluster).
"""

from __future__ import annotations

from typing import Final

from redis.asyncio import Redis

from multipair.broker_schema import Keys
from multipair.exceptions import ConfigurationError
from multipair.redis_conn import as_text, redis_errors
from multipair.store.profiles import ProfileStore
from multipair.store.secrets_box import MasterKey

__all__ = ["FINGERPRINT_FIELD", "SAMPLE", "check_master_key", "record_master_key"]

FINGERPRINT_FIELD: Final = "master_key_fingerprint"
SAMPLE: Final = 20
"""At most this many lanes' sealed keys are tried when no fingerprint is kept yet."""


async def check_master_key(redis: Redis, keys: Keys, master_key: MasterKey) -> None:
    """Refuse (:class:`ConfigurationError`) a master key the lanes are not sealed under."""
    mine = master_key.fingerprint()
    with redis_errors():
        stored = await redis.hget(keys.meta(), FINGERPRINT_FIELD)
    if stored is None:
        tried = await _sealed_lanes_tried(redis, keys, master_key)
        if tried:
            raise ConfigurationError(
                f"master key {mine} opens the sealed pairing keys of none of the {tried} "
                "lane(s) tried: this is not the key the lanes were paired under; refusing to "
                "start (use that key file, or move the lanes to this key with "
                "`multipair reseal --old-key-file OLD --new-key-file NEW`)"
            )
        with redis_errors():
            await redis.hsetnx(keys.meta(), FINGERPRINT_FIELD, mine)
            stored = await redis.hget(keys.meta(), FINGERPRINT_FIELD)
    theirs = as_text(stored) if stored is not None else mine
    if theirs != mine:
        raise ConfigurationError(
            f"master key {mine} is not the key the lanes in this Redis are sealed under "
            f"({theirs}, {keys.meta()} {FINGERPRINT_FIELD}); refusing to start: use that key "
            "file (every host needs the same one), or move the lanes to this key with "
            "`multipair reseal --old-key-file OLD --new-key-file NEW`"
        )


async def record_master_key(redis: Redis, keys: Keys, master_key: MasterKey) -> None:
    """Record ``master_key`` as the lanes' key (after ``multipair reseal`` moved them to it)."""
    with redis_errors():
        await redis.hset(keys.meta(), FINGERPRINT_FIELD, master_key.fingerprint())


async def _sealed_lanes_tried(redis: Redis, keys: Keys, master_key: MasterKey) -> int:
    """0 when ``master_key`` opens a lane's sealed keys or none are sealed; else how many
    sealed lanes were tried (none opened)."""
    profiles = ProfileStore(redis, keys, master_key)
    with redis_errors():
        ids = sorted(as_text(raw) for raw in await redis.smembers(keys.lanes()))
    tried = 0
    for iid in ids:
        with redis_errors():
            sealed = await redis.hget(keys.profile(iid), "secrets")
        if sealed is None:
            continue
        try:
            await profiles.load_secrets(iid)
        except ConfigurationError:
            tried += 1
            if tried >= SAMPLE:
                break
            continue
        except Exception:  # noqa: S112 - a damaged or vanished lane proves nothing either way
            continue
        return 0
    return tried
