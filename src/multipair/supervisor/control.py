"""Ops messages to one supervisor: ``mp:host:{HOST}:control`` (issue 5, "Ops control").

An entry has the fields of every stream of the contract, ``v`` (``1``) and
``body``, a JSON object::

    {"action": "restart", "instance_id": "8a5e2dcc-...", "request_id": "r1"}

``action`` is one of:

- ``restart``: the supervisor stops the lane gracefully (its in-flight
  transaction finishes) and starts it again at once, forgetting earlier
  crashes. Only the host that runs the lane acts on it.
- ``stop``: the profile's ``enabled`` becomes false, so no host runs the lane,
  also after restarts; the running one drains and exits.
- ``start``: ``enabled`` becomes true again; some host starts the lane.

Host actions (issue 7) carry no ``instance_id``::

    {"action": "drain", "request_id": "r2"}

- ``drain``: the host stops taking lanes and hands its lanes to the other
  hosts one by one, each between two transactions (SIGTERM: the lane
  finishes what it runs, exits, its lease is released at once and another
  host starts it), until it holds none. It keeps running, heartbeating with
  ``"accepting": false, "draining": true``, so it can be stopped or
  un-drained. ``multipair host drain H`` sends it.
- ``accept`` (or its synonym ``undrain``): take lanes again (ends a drain).

A drain lasts as long as that supervisor process; a restarted supervisor
accepts lanes.

``request_id`` (1-128 printable characters) is optional, echoed in the
supervisor's log. ``requested_by`` (1-256 printable characters) says who
asked: the CLI and the client library fill it with ``user@host``
(:func:`default_requester`) and the supervisor logs it with every message it
takes or refuses. It is what the sender says, an audit aid, not
authentication: who may write a control stream at all is Redis' ACL
(``deploy/redis/users.acl``: the ``multipair-ops`` and ``multipair-service``
roles only). Optional, so a hand-written ``XADD`` still works.

A message is taken only when it is well formed (:func:`decode_control`):
exactly the entry fields ``v`` and ``body``, a body of at most
:data:`MAX_BODY_BYTES` that is a JSON object with no field but ``action``,
``instance_id``, ``request_id`` and ``requested_by``, each of its type, and a
known action. Anything else is refused with its reason; the supervisor logs
it, acknowledges it and goes on.

The CLI sends ``restart`` to the host named by the lane's lease
(:func:`owning_host`); ``stop`` and ``start`` go to the owning host too
when there is one, else the CLI may flip ``enabled`` itself
(``ProfileStore.update``): the effect is the same, the profile is what
every host obeys.

The supervisor reads its stream through consumer group ``supervisor`` (so a
message sent while it restarts is not lost) and ignores messages older than
:data:`MAX_AGE_S` (a stale ``stop`` replayed hours later would surprise).
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import orjson
from redis.asyncio import Redis

from multipair.broker_schema import Keys, Reason, validate_instance_id
from multipair.exceptions import CommandError
from multipair.leases import parse_lease

__all__ = [
    "CONTROL_GROUP",
    "CONTROL_MAXLEN",
    "MAX_AGE_S",
    "MAX_BODY_BYTES",
    "MAX_REQUESTED_BY",
    "MAX_REQUEST_ID",
    "ControlAction",
    "ControlMessage",
    "decode_control",
    "default_requester",
    "encode_control",
    "owning_host",
    "peek_requested_by",
    "send_control",
]

CONTROL_GROUP: Final = "supervisor"
"""Consumer group of every host's control stream."""

MAX_AGE_S: Final = 300.0
"""Control messages older than this (by stream entry id) are ignored."""

CONTROL_MAXLEN: Final = 1000
"""The supervisor trims its control stream to about this many entries."""

MAX_BODY_BYTES: Final = 1024
"""The longest control body taken; a real one is under 300 bytes."""

MAX_REQUEST_ID: Final = 128
"""The longest ``request_id``, in characters."""

MAX_REQUESTED_BY: Final = 256
"""The longest ``requested_by``, in characters."""

_ENTRY_FIELDS: Final = frozenset({"v", "body"})
_BODY_FIELDS: Final = frozenset({"action", "instance_id", "request_id", "requested_by"})


class ControlAction(StrEnum):
    RESTART = "restart"
    STOP = "stop"
    START = "start"
    DRAIN = "drain"
    ACCEPT = "accept"
    UNDRAIN = "undrain"

    @property
    def for_host(self) -> bool:
        """True for actions on the whole host (no ``instance_id``)."""
        return self in _HOST_ACTIONS


_HOST_ACTIONS: Final = frozenset({ControlAction.DRAIN, ControlAction.ACCEPT, ControlAction.UNDRAIN})


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlMessage:
    """One ops request to a supervisor: about one lane, or (``drain``, ``accept``) the host."""

    action: ControlAction
    instance_id: str | None = None
    """The lane of a lane action; None for a host action."""
    request_id: str | None = None
    requested_by: str | None = None
    """Who asked, as the sender says (``user@host``); logged, not authenticated."""


def default_requester() -> str:
    """``user@host`` of this process: the ``requested_by`` the CLI and the client send."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name for this uid (a container's user)
        user = f"uid-{os.getuid()}"
    text = f"{user}@{socket.gethostname() or 'unknown-host'}"
    cleaned = "".join(c if c.isprintable() else "?" for c in text)
    return cleaned[:MAX_REQUESTED_BY]


def encode_control(message: ControlMessage) -> dict[str, bytes]:
    """Stream entry fields (``v``, ``body``) for ``XADD``."""
    body: dict[str, Any] = {"action": str(message.action)}
    if message.instance_id is not None:
        body["instance_id"] = message.instance_id
    if message.request_id is not None:
        body["request_id"] = message.request_id
    if message.requested_by is not None:
        body["requested_by"] = message.requested_by
    return {"v": b"1", "body": orjson.dumps(body)}


def _entry(fields: Any) -> dict[str, Any]:
    """The entry's fields by name; ``bad_entry`` unless exactly ``v`` and ``body``."""
    try:
        pairs = dict(fields).items()
        raw = {(k.decode() if isinstance(k, bytes) else k): v for k, v in pairs}
    except (TypeError, ValueError):  # not a mapping, or a field name that is not UTF-8
        raise CommandError(Reason.BAD_ENTRY, "control entry is not a map of fields") from None
    if set(raw) != _ENTRY_FIELDS:
        shown = ", ".join(sorted(repr(k)[:40] for k in raw)[:8])
        raise CommandError(
            Reason.BAD_ENTRY, f"control entry must have exactly the fields v and body, got {shown}"
        )
    return raw


def _text(body: Mapping[str, Any], name: str, longest: int) -> str | None:
    """An optional text field: None, or 1-``longest`` printable characters."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise CommandError(Reason.WRONG_TYPE, f"{name} must be a string")
    if not 1 <= len(value) <= longest or not value.isprintable():
        raise CommandError(Reason.INVALID_VALUE, f"{name} must be 1-{longest} printable characters")
    return value


def decode_control(fields: Any) -> ControlMessage:
    """A control entry's message; ``CommandError`` naming what is wrong otherwise.

    Checked in this order: the entry's fields (``bad_entry``), ``v``
    (``unsupported_version``), the body's size (``oversize``), JSON
    (``not_json``, ``not_an_object``), the body's fields (``unknown_field``),
    ``action`` (``missing_field``, ``wrong_type``, ``unknown_type``), the
    texts ``request_id`` and ``requested_by`` (``wrong_type``,
    ``invalid_value``), then the lane (``invalid_instance_id``; a host
    action with one: ``unknown_field``).
    """
    raw = _entry(fields)
    version = raw["v"]
    if version not in (b"1", "1"):
        raise CommandError(
            Reason.UNSUPPORTED_VERSION, f"control entry v must be 1, got {version!r:.40}"
        )
    text = raw["body"]
    if not isinstance(text, bytes | str):
        raise CommandError(Reason.NOT_JSON, "control entry body is not JSON text")
    size = len(text.encode()) if isinstance(text, str) else len(text)
    if size > MAX_BODY_BYTES:
        raise CommandError(
            Reason.OVERSIZE, f"control entry body is {size} bytes, at most {MAX_BODY_BYTES}"
        )
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise CommandError(Reason.NOT_JSON, "control entry body is not JSON") from None
    if not isinstance(body, dict):
        raise CommandError(Reason.NOT_AN_OBJECT, "control entry body is not a JSON object")
    unknown = sorted(set(body) - _BODY_FIELDS)
    if unknown:
        shown = ", ".join(repr(name)[:40] for name in unknown[:8])
        raise CommandError(Reason.UNKNOWN_FIELD, f"control message has unknown fields: {shown}")
    name = body.get("action")
    if name is None:
        raise CommandError(Reason.MISSING_FIELD, "control message has no action")
    if not isinstance(name, str):
        raise CommandError(Reason.WRONG_TYPE, "control action must be a string")
    try:
        action = ControlAction(name)
    except ValueError:
        raise CommandError(
            Reason.UNKNOWN_TYPE,
            "control action must be one of "
            f"{', '.join(a.value for a in ControlAction)}, got {name!r:.40}",
        ) from None
    request_id = _text(body, "request_id", MAX_REQUEST_ID)
    requested_by = _text(body, "requested_by", MAX_REQUESTED_BY)
    if action.for_host:
        if body.get("instance_id") is not None:
            raise CommandError(
                Reason.UNKNOWN_FIELD, f"{action} is for the whole host: it takes no instance_id"
            )
        return ControlMessage(action=action, request_id=request_id, requested_by=requested_by)
    return ControlMessage(
        action=action,
        instance_id=validate_instance_id(body.get("instance_id")),
        request_id=request_id,
        requested_by=requested_by,
    )


def peek_requested_by(fields: Any) -> str | None:
    """The ``requested_by`` of an entry, if it has a readable one: for the log of a refusal.

    Never raises; the text is cut to :data:`MAX_REQUESTED_BY` characters and
    anything unprintable in it shown as ``?``.
    """
    try:
        raw = {(k.decode() if isinstance(k, bytes) else k): v for k, v in dict(fields).items()}
        text = raw.get("body")
        if not isinstance(text, bytes | str) or len(text) > MAX_BODY_BYTES:
            return None
        body = orjson.loads(text)
        value = body.get("requested_by") if isinstance(body, dict) else None
    except Exception:  # best effort, on an entry already known to be bad
        return None
    if not isinstance(value, str):
        return None
    return "".join(c if c.isprintable() else "?" for c in value[:MAX_REQUESTED_BY])


async def owning_host(redis: Redis, keys: Keys, instance_id: str) -> str | None:
    """The host whose lease holds the lane now, if any."""
    lease = parse_lease(await redis.get(keys.lease(instance_id)))
    return None if lease is None else lease.host_id


async def send_control(redis: Redis, keys: Keys, host_id: str, message: ControlMessage) -> str:
    """``XADD`` a control message to ``host_id``'s stream; the entry id."""
    entry_id = await redis.xadd(
        keys.host_control(host_id),
        dict(encode_control(message)),  # type: ignore[arg-type]
        maxlen=CONTROL_MAXLEN,
        approximate=True,
    )
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
