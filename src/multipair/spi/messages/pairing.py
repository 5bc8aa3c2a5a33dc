"""Pairing, keys and liveness (PROTOCOL.md §4, §5, §13.10).

What the POS sends to pair, unpair and keep the link alive, and the
terminal messages of the key exchange, key roll, ping/pong and the 2.9.12
token. Fields are declared in wire order; the codec is :mod:`._wire`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from multipair.spi.messages._wire import wire
from multipair.spi.messages.base import FromTerminal, Request
from multipair.spi.messages.events import Event

__all__ = [
    "DropKeys",
    "DropKeysRequest",
    "KeyCheck",
    "KeyRequest",
    "PairRequest",
    "PairResponse",
    "Ping",
    "PingRequest",
    "Pong",
    "PongReply",
    "PosSpiToken",
    "RequestUseNextKeys",
]

# ---------------------------------------------------------------------------
# POS -> terminal
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PairRequest(Request):
    """``pair_request`` (§4.3), always sent in clear with data ``{"padding": true}``."""

    event: ClassVar[Event] = Event.PAIR_REQUEST
    id_prefix: ClassVar[str] = "pr"

    padding: bool = field(default=True, init=False, repr=False, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class DropKeysRequest(Request):
    """``drop_keys`` (§4.6): the POS unpairs; data ``null``."""

    event: ClassVar[Event] = Event.DROP_KEYS
    id_prefix: ClassVar[str] = "drpkys"
    data_is_null: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class PingRequest(Request):
    """``ping`` (§5.4); data ``null``."""

    event: ClassVar[Event] = Event.PING
    id_prefix: ClassVar[str] = "ping"
    data_is_null: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class PongReply(Request):
    """``pong`` answering a terminal ``ping`` (§5.4): always sent with the ping's id."""

    event: ClassVar[Event] = Event.PONG
    id_prefix: ClassVar[str] = ""
    data_is_null: ClassVar[bool] = True


# ---------------------------------------------------------------------------
# Terminal -> POS
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRequest(FromTerminal):
    """``key_request`` (§4.3): the terminal's DH public values ``enc.A`` and ``hmac.A`` (hex).

    Without both as non-empty strings the message means nothing:
    ``RemoteProtocolError``.
    """

    enc_a: str = field(metadata=wire(path=("enc", "A")))
    hmac_a: str = field(metadata=wire(path=("hmac", "A")))


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyCheck(FromTerminal):
    """``key_check`` (§4.4): the first encrypted message; its HMAC gives the confirmation code."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PairResponse(FromTerminal):
    """``pair_response`` (§4.4): pairing confirmed on the terminal only when ``success`` is true."""

    success: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping(FromTerminal):
    """``ping`` from the terminal (§5.4): answer with :class:`PongReply` and this id."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Pong(FromTerminal):
    """``pong`` (§5.3-5.4); the first one of a connection means ready to transact."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestUseNextKeys(FromTerminal):
    """``request_use_next_keys`` (§5.7): roll the keys, answer with the new ones."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DropKeys(FromTerminal):
    """``drop_keys`` from the terminal (§4.6): it unpaired."""


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class PosSpiToken(FromTerminal):
    """``provision_pos_spi_token`` (§13.10): a secret; ``repr`` shows only its last 4 characters.

    Without a non-empty ``pos_spi_auth_token`` string: ``RemoteProtocolError``.
    """

    token: str = field(metadata=wire(path=("pos_spi_auth_token",)))

    def __repr__(self) -> str:
        tail = self.token[-4:] if len(self.token) > 8 else ""
        return f"PosSpiToken(id={self.id!r}, token='…{tail}')"
