"""Command stream entries as Redis hands them over: pure helpers of the lane's intake.

Entries are read as sent (field pairs, in order, repeats kept) so that the
codec can refuse an entry that names a field twice (docs/broker-schema.md,
"Stream entries"); a refused entry's dead letter keeps a bounded copy of it
(docs/security.md, "Bounded input"). Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.connection import Connection

from multipair import broker_schema as bs
from multipair.exceptions import CommandError

__all__ = [
    "DEAD_LETTER_KEEP_BYTES",
    "MAX_ENTRY_BYTES",
    "READ_BLOCK_MARGIN_MS",
    "READ_BLOCK_MS",
    "Entry",
    "Pairs",
    "dead_letter",
    "entry_size",
    "id_order",
    "next_id",
    "pairs",
    "read_block_ms",
    "stream_entries",
    "text",
]

READ_BLOCK_MS: Final = 10_000
"""How long one read of new commands blocks; a drain or stop cuts it short."""
READ_BLOCK_MARGIN_MS: Final = 2_000
"""A blocking read ends this long before the client's socket timeout would fire."""
MAX_ENTRY_BYTES: Final = bs.MAX_BODY_BYTES + 1024
"""An entry's names and values together; anything larger is refused unread."""
DEAD_LETTER_KEEP_BYTES: Final = 4096
"""How much of a refused entry's fields its dead letter keeps."""

Pairs = list[tuple[Any, Any]]
"""A stream entry's fields as sent: (name, value) pairs, in order, repeats kept."""


@dataclass(slots=True, kw_only=True)
class Entry:
    """A command stream entry in flight through the lane."""

    entry_id: str
    command: bs.Command
    read_at: float
    """When this process read it, monotonic (``m:txb:*``: command read to outcome written)."""
    fields: Any = None
    """The entry's field pairs as read (for its dead letter, should handling it fail)."""
    acked: bool = False
    """Acknowledged already (with the outcome, in the same write)."""


def id_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``ms-seq``) as a sort key: stream order."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def read_block_ms(redis: Redis) -> int:
    """:data:`READ_BLOCK_MS`, shortened to end before ``redis``'s socket timeout.

    redis-py reads a blocking command's reply under the client's
    ``socket_timeout`` (5 s by default in redis-py 8): a longer block would
    raise ``TimeoutError`` and drop the connection. The lane worker builds its
    client with a timeout that fits the full block; any other client still
    works, with shorter blocks.
    """
    kwargs: Any = getattr(redis, "connection_kwargs", None)  # RedisCluster
    if kwargs is None:
        kwargs = redis.connection_pool.connection_kwargs
    # Not given: the connection's own default applies (an unconnected one reads it).
    timeout = (
        kwargs["socket_timeout"] if "socket_timeout" in kwargs else Connection().socket_timeout
    )
    if timeout is None:
        return READ_BLOCK_MS
    timeout_ms = int(float(timeout) * 1000)
    fits = (
        timeout_ms - READ_BLOCK_MARGIN_MS
        if timeout_ms > 2 * READ_BLOCK_MARGIN_MS
        else timeout_ms // 2
    )
    return max(1, min(READ_BLOCK_MS, fits))  # BLOCK 0 would mean "for ever"


def stream_entries(reply: Any) -> list[tuple[str, Pairs]]:
    """The entries of a raw XREADGROUP reply on one stream: RESP2 (a list) or RESP3 (a map).

    A pending entry deleted from the stream since (trimmed) comes with no
    fields, and is refused as a bad entry like any other empty one.
    """
    if not reply:
        return []  # nothing new before the block ended
    streams = list(reply.values()) if isinstance(reply, dict) else [item[1] for item in reply]
    return [
        (text(entry_id), pairs(flat)) for entries in streams for entry_id, flat in entries or ()
    ]


def pairs(flat: Any) -> Pairs:
    """A raw reply's flat field list (or RESP3 map) as (name, value) pairs."""
    if not flat:
        return []
    if isinstance(flat, dict):
        return list(flat.items())
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat) - 1, 2)]


def dead_letter(fields: Any, entry_id: str, exc: CommandError) -> Pairs:
    """The dead-letter copy of an entry: its fields as received, then why it was refused.

    Names and values stay bytes (Redis takes any bytes; nothing is decoded,
    so a name that is not UTF-8 cannot fail here), repeats and order are
    kept; ``entry_id``, ``reason`` and ``detail`` come last, so a reader
    that folds fields into a map sees ours. Never raises: a copy that failed
    would leave the entry pending, and every start of the lane would meet it
    again.
    """
    try:
        items = fields.items() if isinstance(fields, Mapping) else fields
        whole = [(_binary(name), _binary(value)) for name, value in items]
    except Exception:  # not pairs at all: keep what it was, for people
        whole = [(b"fields", repr(fields)[:4096].encode("utf-8", "backslashreplace"))]
    copy, extra = _kept(whole)
    return [
        *copy,
        *extra,
        (b"entry_id", entry_id.encode()),
        (b"reason", str(exc.reason).encode()),
        (b"detail", exc.detail.encode("utf-8", "backslashreplace")),
    ]


def _kept(whole: Pairs) -> tuple[Pairs, Pairs]:
    """At most :data:`DEAD_LETTER_KEEP_BYTES` of an entry's fields, and how to know the rest.

    A small entry is kept whole. A larger one keeps its fields in order until
    the budget is spent (the last one cut short), and gains ``size`` (all its
    names and values, in bytes) and ``sha256`` (of the entry as sent: each
    name and value as its length in 8 bytes big-endian, then its bytes).
    """
    size = sum(len(name) + len(value) for name, value in whole)
    if size <= DEAD_LETTER_KEEP_BYTES:
        return whole, []
    digest = hashlib.sha256()
    for name, value in whole:
        for part in (name, value):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    budget = DEAD_LETTER_KEEP_BYTES
    copy: Pairs = []
    for name, value in whole:
        if budget <= 0:
            break
        name_part = name[:budget]
        budget -= len(name_part)
        value_part = value[: max(budget, 0)]
        budget -= len(value_part)
        copy.append((name_part, value_part))
    extra: Pairs = [
        (b"truncated", b"1"),
        (b"size", str(size).encode()),
        (b"sha256", digest.hexdigest().encode()),
    ]
    return copy, extra


def entry_size(fields: Any) -> int:
    """Bytes of an entry's names and values; 0 for what is not pairs (decoding refuses it)."""
    try:
        items = fields.items() if isinstance(fields, Mapping) else fields
        return sum(_len(name) + _len(value) for name, value in items)
    except Exception:
        return 0


def _len(value: object) -> int:
    if isinstance(value, bytes | bytearray | memoryview | str):
        return len(value)
    return 0


def next_id(entry_id: str) -> str:
    """The smallest stream id above ``entry_id``."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def _binary(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    text = value if isinstance(value, str) else repr(value)
    return text.encode("utf-8", "backslashreplace")  # lone surrogates too


def text(value: Any) -> str:
    """A reply value (bytes or not) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
