"""What multipair keeps in Redis: lane profiles, sealed secrets, transaction records.

Every key name comes from :class:`multipair.broker_schema.Keys`. Stores take
a ``redis.asyncio.Redis`` (bytes or decoded replies both work) and turn an
unreachable Redis into :class:`multipair.exceptions.RetryLater`.
"""

from __future__ import annotations

from multipair.store.profiles import (
    PROFILE_FIELDS,
    LaneProfile,
    PayAtTableConfig,
    ProfileStore,
    ensure_command_group,
)
from multipair.store.secrets_box import MasterKey, keygen_main, lane_aad
from multipair.store.transactions import (
    DEFAULT_COMMAND_TTL,
    DEFAULT_TX_RETENTION,
    TxRecord,
    TxState,
    TxStore,
)

__all__ = [
    "DEFAULT_COMMAND_TTL",
    "DEFAULT_TX_RETENTION",
    "PROFILE_FIELDS",
    "LaneProfile",
    "MasterKey",
    "PayAtTableConfig",
    "ProfileStore",
    "TxRecord",
    "TxState",
    "TxStore",
    "ensure_command_group",
    "keygen_main",
    "lane_aad",
]
