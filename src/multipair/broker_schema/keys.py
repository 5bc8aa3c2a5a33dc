"""Redis key names of the v1 contract (DESIGN.md, "The Redis contract (v1)").

Rules this module keeps:

- Every key of one lane carries the lane's instance id as a Redis Cluster
  hash tag, ``mp:lane:{8a5e2dcc-...}:commands``, so all of a lane's keys live
  in one slot and a lane's multi-key updates (MULTI/EXEC, Lua) are legal on a
  cluster. Nothing here names keys of two lanes together; ``mp:lanes`` and
  ``mp:hosts`` are single keys touched on their own.
- A host's keys carry the host id as a hash tag the same way.
- Instance ids are canonical UUIDs; ``Keys`` accepts any case and always
  writes lower case, so one lane never has two spellings of its keys.
- The key of a transaction record ends with the ``pos_ref_id`` as given,
  which the contract limits to ASCII letters, digits and ``- _ : .`` (it is
  not a hash tag: the lane's tag comes first and is the one Redis uses).
"""

from __future__ import annotations

import re
import uuid
from typing import Final

from multipair.broker_schema._fields import is_valid_pos_ref_id
from multipair.broker_schema.reasons import Reason
from multipair.exceptions import CommandError, ConfigurationError

__all__ = [
    "CONSUMER_GROUP",
    "SCHEMA_VERSION",
    "Keys",
    "validate_host_id",
    "validate_instance_id",
    "validate_prefix",
]

SCHEMA_VERSION: Final = 1
"""The ``v`` of every stream entry this code writes and the only one it reads."""

CONSUMER_GROUP: Final = "lane"
"""The consumer group of every lane's command stream."""

_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_HOST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def validate_instance_id(instance_id: object) -> str:
    """The canonical (lower-case, hyphenated) form of a lane's UUID.

    Raises ``CommandError('invalid_instance_id')`` for anything else, braces,
    ``urn:uuid:`` and hyphen-less forms included: an id names Redis keys, so it
    has exactly one spelling.
    """
    if isinstance(instance_id, uuid.UUID):
        return str(instance_id)
    if not isinstance(instance_id, str) or not _UUID.fullmatch(instance_id.lower()):
        shown = instance_id[:60] if isinstance(instance_id, str) else type(instance_id).__name__
        raise CommandError(
            Reason.INVALID_INSTANCE_ID,
            f"a lane's instance id is a UUID like 8a5e2dcc-bfa0-469f-95d7-eec778b08453, "
            f"got {shown!r}",
        )
    return instance_id.lower()


def validate_prefix(prefix: str) -> str:
    """A key prefix: 1-64 of letters, digits, ``_ . : -``, starting with a letter or digit.

    Braces are refused because they would become the hash tag of every key.
    """
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix) or prefix.endswith(":"):
        raise ConfigurationError(
            f"key prefix must be 1-64 letters, digits or '_.:-' (not ending in ':'), got {prefix!r}"
        )
    return prefix


def validate_host_id(host_id: str) -> str:
    """A host id: 1-128 of letters, digits, ``_ . -``, starting with a letter or digit."""
    if not isinstance(host_id, str) or not _HOST_ID.fullmatch(host_id):
        raise ConfigurationError(f"host id must be 1-128 letters, digits or '_.-', got {host_id!r}")
    return host_id


class Keys:
    """Names every Redis key of the contract under one prefix (default ``mp``).

    >>> Keys().commands("8a5e2dcc-bfa0-469f-95d7-eec778b08453")
    'mp:lane:{8a5e2dcc-bfa0-469f-95d7-eec778b08453}:commands'
    """

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = "mp") -> None:
        self.prefix: Final = validate_prefix(prefix)

    def __repr__(self) -> str:
        return f"Keys(prefix={self.prefix!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Keys) and other.prefix == self.prefix

    def __hash__(self) -> int:
        return hash(("Keys", self.prefix))

    # Service-wide keys.

    def lanes(self) -> str:
        """Set of the instance ids that should be running."""
        return f"{self.prefix}:lanes"

    def hosts(self) -> str:
        """Hash: host id -> heartbeat, pid, lane count."""
        return f"{self.prefix}:hosts"

    def meta(self) -> str:
        """Hash: facts about the whole deployment (``master_key_fingerprint``)."""
        return f"{self.prefix}:meta"

    def host_control(self, host_id: str) -> str:
        """Stream of ops messages for one supervisor."""
        return f"{self.prefix}:host:{{{validate_host_id(host_id)}}}:control"

    def host_claim(self, host_id: str) -> str:
        """String with a TTL: which running supervisor holds this host id (one at a time)."""
        return f"{self.prefix}:host:{{{validate_host_id(host_id)}}}:claim"

    # One lane's keys: all share the ``{ID}`` hash tag.

    def lane_base(self, instance_id: str) -> str:
        """``mp:lane:{ID}:``, the start of every key of the lane."""
        return f"{self.prefix}:lane:{{{validate_instance_id(instance_id)}}}:"

    def profile(self, instance_id: str) -> str:
        """Hash: the lane's profile and its sealed secrets."""
        return self.lane_base(instance_id) + "profile"

    def commands(self, instance_id: str) -> str:
        """Stream of commands in; read through consumer group ``lane``."""
        return self.lane_base(instance_id) + "commands"

    def events(self, instance_id: str) -> str:
        """Stream of events out, trimmed with ``MAXLEN ~``."""
        return self.lane_base(instance_id) + "events"

    def state(self, instance_id: str) -> str:
        """Hash: status, flow, host, pid, heartbeat and counters of the running lane."""
        return self.lane_base(instance_id) + "state"

    def tx(self, instance_id: str, pos_ref_id: str) -> str:
        """Hash: the transaction record of one ``pos_ref_id``."""
        if not is_valid_pos_ref_id(pos_ref_id):
            raise CommandError(
                Reason.INVALID_VALUE,
                f"pos_ref_id must be 1-64 ASCII letters, digits or '-_:.', got {pos_ref_id!r:.70}",
            )
        return self.lane_base(instance_id) + "tx:" + pos_ref_id

    def txs_open(self, instance_id: str) -> str:
        """Set of the ``pos_ref_id`` values whose record is not completed (in flight)."""
        return self.lane_base(instance_id) + "txs_open"

    def txs(self, instance_id: str) -> str:
        """Sorted set ``pos_ref_id`` -> creation time (ms) of every live transaction record."""
        return self.lane_base(instance_id) + "txs"

    def command_replies(self, instance_id: str) -> str:
        """Hash ``command_id`` -> the JSON reply remembered for a repeated command."""
        return self.lane_base(instance_id) + "cmds"

    def command_times(self, instance_id: str) -> str:
        """Sorted set ``command_id`` -> when it was remembered (ms), for expiry."""
        return self.lane_base(instance_id) + "cmds_at"

    def lease(self, instance_id: str) -> str:
        """String: owning host and fencing token, with a TTL."""
        return self.lane_base(instance_id) + "lease"

    def fence(self, instance_id: str) -> str:
        """Counter: the last fencing token handed out for this lane (only grows)."""
        return self.lane_base(instance_id) + "fence"

    def dead_letter(self, instance_id: str) -> str:
        """Stream of rejected command entries, copied as received, with the reason."""
        return self.lane_base(instance_id) + "dead"

    def writes(self, instance_id: str) -> str:
        """Hash: write id -> reply of the lane's writes whose reply may not have arrived.

        A write sent again after its reply was lost (Redis went away) finds
        its id here and gets the first reply back instead of being applied
        twice (:mod:`multipair.store.once`).
        """
        return self.lane_base(instance_id) + "writes"

    def logs(self, instance_id: str) -> str:
        """Stream of the lane's recent log lines (``multipair logs``), trimmed ``MAXLEN ~``."""
        return self.lane_base(instance_id) + "logs"

    def pat_payments(self, instance_id: str) -> str:
        """Hash: terminal_ref_id -> JSON of the first pay-at-table payment reported with it."""
        return self.lane_base(instance_id) + "pat:payments"

    def pat_payment_times(self, instance_id: str) -> str:
        """Sorted set: each stored pay-at-table payment's bill entry -> when it was stored (ms).

        A bill entry is ``<byte length of bill_id>:<bill_id><field>``, ``field``
        its ``pat:payments`` field; entries older than the retention are pruned
        (with their field and their :meth:`pat_bills` entry) on each new payment.
        """
        return self.lane_base(instance_id) + "pat:payments_at"

    def pat_bills(self, instance_id: str) -> str:
        """Sorted set (every score 0): the bill entries of the stored payments, read by
        lexicographic range: one bill's payments without reading any other's."""
        return self.lane_base(instance_id) + "pat:bills"

    def lane_fixed_keys(self, instance_id: str) -> tuple[str, ...]:
        """Every key of the lane whose name does not depend on data (all but ``tx:*``)."""
        return (
            self.profile(instance_id),
            self.commands(instance_id),
            self.events(instance_id),
            self.state(instance_id),
            self.txs_open(instance_id),
            self.txs(instance_id),
            self.command_replies(instance_id),
            self.command_times(instance_id),
            self.lease(instance_id),
            self.fence(instance_id),
            self.dead_letter(instance_id),
            self.writes(instance_id),
            self.logs(instance_id),
            self.pat_payments(instance_id),
            self.pat_payment_times(instance_id),
            self.pat_bills(instance_id),
        )
