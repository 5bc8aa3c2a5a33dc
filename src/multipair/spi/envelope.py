"""The SPI envelope (PROTOCOL.md §2): plain and encrypted frames, both directions.

Rules this module keeps:

- Outgoing POS messages are serialised compactly, keys in the order of the
  generation being spoken (§2.4, §13.3), non-ASCII unescaped, so tests can
  compare bytes with the reference client's vectors.
- ``enc`` is AES over the exact inner bytes; ``hmac`` is over the exact
  ``enc`` text. A receiver verifies the HMAC over ``enc`` *as received* and
  never re-serialises first (§2.4).
- :func:`decode_frame` never raises: any bad input (not JSON, bad signature,
  bad hex, bad padding, bad UTF-8, decrypted text that is not JSON, a
  ``message`` without ``id``/``event``) becomes a :class:`RejectedFrame`
  with a :class:`RejectReason` the caller logs and counts (§2.6).
- Terminal frames never carry ``pos_id``; POS frames carry it outside the
  ciphertext, and inside every message from 2.9 on (§13.3).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import orjson

from multipair.exceptions import CryptoError
from multipair.spi.crypto import (
    Secrets,
    aes_decrypt,
    aes_encrypt,
    hex_to_bytes,
    hmac_sha256_hex,
    hmac_verify,
)

__all__ = [
    "MAX_FRAME_CHARS",
    "PLAIN_EVENTS",
    "SUBPROTOCOLS",
    "Generation",
    "JsonObject",
    "Message",
    "MessageStamp",
    "Received",
    "RejectReason",
    "RejectedFrame",
    "decode_frame",
    "dumps",
    "encode_frame",
    "format_local_datetime",
    "format_utc_datetime",
    "generation_from_subprotocol",
    "pos_inner_json",
    "terminal_inner_json",
]

JsonObject = dict[str, Any]
"""A decoded JSON object: only at the wire edge, never across the session API."""

# Frames larger than this are rejected before any parsing. Real frames are a
# few KiB (settlement receipts are the largest); 1 MiB leaves ample room.
MAX_FRAME_CHARS: Final = 1 << 20

# Messages the POS sends in clear even when it could encrypt (§2.1, §4.3).
PLAIN_EVENTS: Final = frozenset({"pair_request", "key_response", "key_request"})


class Generation(StrEnum):
    """Which client generation's serialisation a POS stamp imitates (§12, §13)."""

    V26 = "2.6"  # Java: id,event,data,datetime,pos_id; nulls dropped; no counter/conn_id
    V28 = "2.8"  # JS 2.8.3: pos_id only inside plain messages, after conn_id
    V29 = "2.9"  # JS 2.9.13: pos_id inside every message, before conn_id


SUBPROTOCOLS: Final[dict[Generation, str]] = {
    Generation.V26: "spi.2.6.0",
    Generation.V28: "spi.2.8.0",
    Generation.V29: "spi.2.9.0",
}


def generation_from_subprotocol(subprotocol: str | None) -> Generation:
    """Map an offered ``spi.2.x.y`` sub-protocol to the generation it names (§1)."""
    if subprotocol:
        parts = subprotocol.split(".")
        if len(parts) >= 3 and parts[0] == "spi" and parts[1] == "2" and parts[2].isdigit():
            minor = int(parts[2])
            if minor >= 9:
                return Generation.V29
            if minor >= 7:
                return Generation.V28
            return Generation.V26
    return Generation.V28


def dumps(obj: Any) -> bytes:
    """Compact JSON, insertion order kept, non-ASCII unescaped (as JSON.stringify)."""
    return orjson.dumps(obj)


def format_utc_datetime(now: float) -> str:
    """JS 2.8+ ``datetime``: UTC ISO-8601 with milliseconds and ``Z`` (§2.3)."""
    return _format_millis(now) + "Z"


def format_local_datetime(now: float, *, utc_offset_seconds: float = 0.0) -> str:
    """Terminal and Java ``datetime``: ``yyyy-MM-ddTHH:mm:ss.SSS``, no zone (§2.3)."""
    return _format_millis(now + utc_offset_seconds)


def _format_millis(seconds: float) -> str:
    # Round to whole milliseconds first: float seconds such as 1623128612.123
    # would otherwise print as .122.
    millis = round(seconds * 1000)
    moment = _dt.datetime.fromtimestamp(millis // 1000, tz=_dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One SPI message: the object under ``"message"`` (§2.3).

    ``data`` is the JSON edge: typed views of it live in :mod:`multipair.spi.messages`.
    """

    id: str
    event: str
    data: JsonObject | None = None
    datetime: str | None = None
    pos_counter: int | None = None
    conn_id: str | None = None
    pos_id: str | None = None

    def get(self, key: str, default: Any = None) -> Any:
        """A field of ``data``, or ``default`` when there is no such field or no data."""
        if self.data is None:
            return default
        return self.data.get(key, default)


def pos_inner_json(message: Message, generation: Generation, *, encrypted: bool) -> bytes:
    """Serialise a POS message the way the given client generation does (§2.4, §13.3)."""
    inner: JsonObject = {"id": message.id, "event": message.event}
    if generation is Generation.V26:
        if message.data is not None:
            inner["data"] = message.data
        if message.datetime is not None:
            inner["datetime"] = message.datetime
        if not encrypted and message.pos_id is not None:
            inner["pos_id"] = message.pos_id
        return dumps({"message": inner})
    inner["data"] = message.data
    inner["datetime"] = message.datetime
    inner["pos_counter"] = message.pos_counter
    if generation is Generation.V29:
        inner["pos_id"] = message.pos_id
        if message.conn_id is not None:
            inner["conn_id"] = message.conn_id
    else:
        if message.conn_id is not None:
            inner["conn_id"] = message.conn_id
        if not encrypted:
            inner["pos_id"] = message.pos_id
    return dumps({"message": inner})


def terminal_inner_json(message: Message) -> bytes:
    """Serialise a terminal message: ``event, id, datetime, conn_id, data``, absent fields left out.

    Real terminals order fields differently again (§2.4); this is the order of
    the terminal frames in the vectors, which a POS must not depend on anyway.
    """
    inner: JsonObject = {"event": message.event, "id": message.id}
    if message.datetime is not None:
        inner["datetime"] = message.datetime
    if message.conn_id is not None:
        inner["conn_id"] = message.conn_id
    if message.data is not None:
        inner["data"] = message.data
    return dumps({"message": inner})


def encode_frame(
    inner: bytes,
    *,
    secrets: Secrets | None,
    outer_pos_id: str | None = None,
    upper_enc: bool = False,
) -> str:
    """Wrap serialised inner JSON into a frame: plain when ``secrets`` is None, else encrypted.

    JS POSes send lower-case ``enc`` (``upper_enc=False``); terminals and Java
    send upper case. ``hmac`` is always upper case (§3.2).
    """
    if secrets is None:
        return inner.decode("utf-8")
    enc = aes_encrypt(secrets.enc_key, inner).hex()
    if upper_enc:
        enc = enc.upper()
    envelope: JsonObject = {"enc": enc, "hmac": hmac_sha256_hex(secrets.hmac_key, enc)}
    if outer_pos_id is not None:
        envelope["pos_id"] = outer_pos_id
    return dumps(envelope).decode("utf-8")


@dataclass(slots=True)
class MessageStamp:
    """What the POS puts on every outgoing message of one connection (§5.6).

    ``conn_id`` is ``""`` until the first pong of a connection, then what that
    pong carried; ``None`` means the pong had none, and the key is left out.
    """

    pos_id: str
    generation: Generation = Generation.V29
    secrets: Secrets | None = None
    conn_id: str | None = ""
    pos_counter: int = 0

    def reset_connection(self, counter_start: int) -> None:
        """A new or lost connection: forget ``conn_id`` and restart the counter."""
        self.conn_id = ""
        self.pos_counter = counter_start

    def encode(self, message_id: str, event: str, data: JsonObject | None, *, now: float) -> str:
        """Stamp and serialise one POS message, encrypting it unless it travels in clear."""
        encrypt = self.secrets is not None and event not in PLAIN_EVENTS
        counter = self.pos_counter
        self.pos_counter += 1
        v26 = self.generation is Generation.V26
        message = Message(
            id=message_id,
            event=event,
            data=data,
            datetime=format_local_datetime(now) if v26 else format_utc_datetime(now),
            pos_counter=None if v26 else counter,
            conn_id=None if v26 else self.conn_id,
            pos_id=self.pos_id,
        )
        inner = pos_inner_json(message, self.generation, encrypted=encrypt)
        if not encrypt:
            return encode_frame(inner, secrets=None)
        return encode_frame(inner, secrets=self.secrets, outer_pos_id=self.pos_id, upper_enc=v26)


class RejectReason(StrEnum):
    """Why an incoming frame was dropped (§2.6 and §9's pseudo-events)."""

    TOO_LARGE = "too_large"
    NOT_JSON = "not_json"
    NOT_AN_ENVELOPE = "not_an_envelope"
    BAD_MESSAGE = "bad_message"
    NO_SECRETS = "no_secrets"
    INVALID_SIGNATURE = "invalid_signature"
    BAD_HEX = "bad_hex"
    BAD_CIPHERTEXT = "bad_ciphertext"
    NOT_UTF8 = "not_utf8"
    UNPARSEABLE = "unparseable"


@dataclass(frozen=True, slots=True, kw_only=True)
class RejectedFrame:
    """A frame that could not be accepted. ``detail`` never contains key material."""

    reason: RejectReason
    detail: str
    encrypted: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Received:
    """An accepted frame and what came with it."""

    message: Message
    encrypted: bool
    hmac: str | None = None
    outer_pos_id: str | None = None
    inner_text: str = field(default="", repr=False)


def _message_from(obj: Any) -> Message | str:
    """Validate the object under ``"message"``; return the problem as text if it is bad."""
    if not isinstance(obj, dict):
        return "'message' is not an object"
    msg_id = obj.get("id")
    event = obj.get("event")
    if isinstance(msg_id, int) and not isinstance(msg_id, bool):
        msg_id = str(msg_id)  # some terminals use plain numbers as ids (§2.5)
    if not isinstance(msg_id, str):
        return "message has no string 'id'"
    if not isinstance(event, str) or not event:
        return "message has no string 'event'"
    data = obj.get("data")
    if data is not None and not isinstance(data, dict):
        return "message 'data' is neither an object nor null"
    datetime = obj.get("datetime")
    pos_counter = obj.get("pos_counter")
    if (
        isinstance(pos_counter, str)
        and 0 < len(pos_counter) <= 18
        and pos_counter.isascii()
        and pos_counter.isdigit()
    ):
        # Lenient: some terminals write numbers as strings. ASCII digits only
        # (str.isdigit also accepts '²'), and bounded so int() cannot refuse.
        pos_counter = int(pos_counter)
    conn_id = obj.get("conn_id")
    pos_id = obj.get("pos_id")
    return Message(
        id=msg_id,
        event=event,
        data=data,
        datetime=datetime if isinstance(datetime, str) else None,
        pos_counter=pos_counter
        if isinstance(pos_counter, int) and not isinstance(pos_counter, bool)
        else None,
        conn_id=conn_id if isinstance(conn_id, str) else None,
        pos_id=pos_id if isinstance(pos_id, str) else None,
    )


def decode_frame(
    frame: str | bytes,
    secrets: Secrets | None,
    *,
    strict_hmac_case: bool = False,
) -> Received | RejectedFrame:
    """Decode one websocket text frame (§2.6). Never raises.

    ``strict_hmac_case`` rejects a lower-case ``hmac`` as the JS client does;
    the default compares case-insensitively, as a terminal should (§3.2).
    """
    if len(frame) > MAX_FRAME_CHARS:
        return RejectedFrame(reason=RejectReason.TOO_LARGE, detail=f"{len(frame)} characters")
    try:
        outer = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return RejectedFrame(reason=RejectReason.NOT_JSON, detail="frame is not JSON")
    if not isinstance(outer, dict):
        return RejectedFrame(reason=RejectReason.NOT_AN_ENVELOPE, detail="frame is not an object")
    if "message" in outer:
        plain = _message_from(outer["message"])
        if isinstance(plain, str):
            return RejectedFrame(reason=RejectReason.BAD_MESSAGE, detail=plain)
        text = frame if isinstance(frame, str) else frame.decode("utf-8", errors="replace")
        return Received(message=plain, encrypted=False, inner_text=text)
    enc, mac = outer.get("enc"), outer.get("hmac")
    if not isinstance(enc, str) or not isinstance(mac, str):
        return RejectedFrame(
            reason=RejectReason.NOT_AN_ENVELOPE, detail="frame has neither 'message' nor enc/hmac"
        )
    outer_pos_id = outer.get("pos_id")
    outer_pos_id = outer_pos_id if isinstance(outer_pos_id, str) else None
    if secrets is None:
        return RejectedFrame(
            reason=RejectReason.NO_SECRETS, detail="encrypted frame, no keys", encrypted=True
        )
    if not hmac_verify(secrets.hmac_key, enc, mac, strict_case=strict_hmac_case):
        return RejectedFrame(
            reason=RejectReason.INVALID_SIGNATURE, detail="hmac does not match", encrypted=True
        )
    try:
        ciphertext = hex_to_bytes(enc, what="enc")
    except CryptoError:
        return RejectedFrame(reason=RejectReason.BAD_HEX, detail="enc is not hex", encrypted=True)
    try:
        plaintext = aes_decrypt(secrets.enc_key, ciphertext)
    except CryptoError as exc:
        return RejectedFrame(reason=RejectReason.BAD_CIPHERTEXT, detail=str(exc), encrypted=True)
    try:
        inner_text = plaintext.decode("utf-8")
    except UnicodeDecodeError:
        return RejectedFrame(
            reason=RejectReason.NOT_UTF8, detail="decrypted bytes are not UTF-8", encrypted=True
        )
    try:
        inner = orjson.loads(inner_text)
    except orjson.JSONDecodeError:
        return RejectedFrame(
            reason=RejectReason.UNPARSEABLE, detail="decrypted text is not JSON", encrypted=True
        )
    if not isinstance(inner, dict) or "message" not in inner:
        return RejectedFrame(
            reason=RejectReason.BAD_MESSAGE,
            detail="decrypted JSON has no 'message'",
            encrypted=True,
        )
    message = _message_from(inner["message"])
    if isinstance(message, str):
        return RejectedFrame(reason=RejectReason.BAD_MESSAGE, detail=message, encrypted=True)
    return Received(
        message=message,
        encrypted=True,
        hmac=mac.upper(),
        outer_pos_id=outer_pos_id,
        inner_text=inner_text,
    )
