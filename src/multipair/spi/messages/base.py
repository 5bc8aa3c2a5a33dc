"""What every SPI message has: the request and parsed-message bases, ids, and building a message.

- A POS request or reply subclasses :class:`Request`: ``event`` names it,
  ``id_prefix`` is its id prefix (§2.5), empty for replies that always reuse
  the id of the message they answer. Its ``to_data``/``from_data`` are the
  generic codec of :mod:`._wire` over its declared fields.
- A message from the terminal subclasses :class:`FromTerminal`: its id, its
  raw ``data`` and its declared fields, read leniently by ``parse``.
- Ids are a prefix plus one counter shared by every request (§2.5); a reply
  reuses the id of the message it answers (:func:`build_message`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from multipair.exceptions import LocalProtocolError
from multipair.spi.envelope import JsonObject
from multipair.spi.messages._wire import Checked, decode, encode, read, wire
from multipair.spi.messages.events import Event, TxType

__all__ = [
    "FromTerminal",
    "Request",
    "RequestIds",
    "TransactionRequest",
    "build_message",
]


class Request(Checked):
    """Base of every message body the POS sends; validated when built (``InvalidRequest``).

    ``data_is_null`` classes send ``null`` instead of their (local-only) fields.
    """

    __slots__ = ()

    event: ClassVar[Event]
    id_prefix: ClassVar[str]
    data_is_null: ClassVar[bool] = False

    def to_data(self) -> JsonObject | None:
        """The ``data`` of the message, keys in wire order; ``None`` sends ``null``."""
        return None if self.data_is_null else encode(self)

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Self:
        """Read the request from received ``data`` (terminal side); RemoteProtocolError if bad."""
        return decode(cls, cls.event, data)


class TransactionRequest(Request):
    """A request that starts (or looks up) a transaction; answered by ``response_event``."""

    __slots__ = ()

    tx_type: ClassVar[TxType]
    response_event: ClassVar[Event]
    pos_ref_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FromTerminal:
    """What every parsed terminal message has: its id and its raw ``data`` (``{}`` when absent).

    ``data`` stays out of ``repr``: it may hold receipts, tokens or key values.
    """

    id: str = field(metadata=wire(local=True))
    data: JsonObject = field(default_factory=dict, repr=False, metadata=wire(local=True))

    @classmethod
    def parse(cls, message_id: str, event: str, data: JsonObject) -> Self:
        """Read a message of this type; fields of the wrong type read as ``None``."""
        return cls(id=message_id, data=data, **read(cls, message_id, event, data))


class RequestIds:
    """Message ids for POS requests: a prefix plus one counter shared by all of them (§2.5).

    The counter starts at 1 (or ``start``) and moves by one per id; unlike
    spi-client-js 2.8 a refund does not burn two values (§11).
    """

    __slots__ = ("_next",)

    def __init__(self, start: int = 1) -> None:
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"start must be an int >= 0, got {start!r}")
        self._next = start

    @property
    def counter(self) -> int:
        """The number the next id will carry."""
        return self._next

    def next(self, prefix: str) -> str:
        """Return ``prefix`` followed by the counter, and advance the counter."""
        value = self._next
        self._next += 1
        return f"{prefix}{value}"


def build_message(
    request: Request, ids: RequestIds, *, reply_to: str | None = None
) -> tuple[str, str, JsonObject | None]:
    """The ``(id, event, data)`` of a request; the envelope stamps and sends it.

    ``reply_to`` is the id of the terminal message being answered (a pong, a
    pay-at-table reply); it is used as is and no counter value is spent.
    Replies that always answer something (``id_prefix == ""``) require it.
    """
    if reply_to is not None:
        message_id = reply_to
    elif request.id_prefix:
        message_id = ids.next(request.id_prefix)
    else:
        raise LocalProtocolError(f"{request.event} only answers a terminal message: give reply_to")
    return message_id, str(request.event), request.to_data()
