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

``request_id`` is optional, echoed in the supervisor's log. The CLI sends
``restart`` to the host named by the lane's lease (:func:`owning_host`);
``stop`` and ``start`` go to the owning host too when there is one, else
the CLI may flip ``enabled`` itself (``ProfileStore.update``): the effect is
the same, the profile is what every host obeys.

The supervisor reads its stream through consumer group ``supervisor`` (so a
message sent while it restarts is not lost) and ignores messages older than
:data:`MAX_AGE_S` (a stale ``stop`` replayed hours later would surprise).
"""

from __future__ import annotations

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
    "ControlAction",
    "ControlMessage",
    "decode_control",
    "encode_control",
    "owning_host",
    "send_control",
]

CONTROL_GROUP: Final = "supervisor"
"""Consumer group of every host's control stream."""

MAX_AGE_S: Final = 300.0
"""Control messages older than this (by stream entry id) are ignored."""

CONTROL_MAXLEN: Final = 1000
"""The supervisor trims its control stream to about this many entries."""


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


def encode_control(message: ControlMessage) -> dict[str, bytes]:
    """Stream entry fields (``v``, ``body``) for ``XADD``."""
    body: dict[str, Any] = {"action": str(message.action)}
    if message.instance_id is not None:
        body["instance_id"] = message.instance_id
    if message.request_id is not None:
        body["request_id"] = message.request_id
    return {"v": b"1", "body": orjson.dumps(body)}


def decode_control(fields: Any) -> ControlMessage:
    """A control entry's message; ``CommandError`` naming what is wrong otherwise."""
    raw = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in dict(fields).items()}
    version = raw.get("v")
    if version not in (b"1", "1"):
        raise CommandError(
            Reason.UNSUPPORTED_VERSION, f"control entry v must be 1, got {version!r}"
        )
    try:
        body = orjson.loads(raw.get("body") or b"")
    except orjson.JSONDecodeError:
        raise CommandError(Reason.NOT_JSON, "control entry body is not JSON") from None
    if not isinstance(body, dict):
        raise CommandError(Reason.NOT_AN_OBJECT, "control entry body is not a JSON object")
    try:
        action = ControlAction(str(body.get("action")))
    except ValueError:
        raise CommandError(
            Reason.UNKNOWN_TYPE,
            "control action must be one of "
            f"{', '.join(a.value for a in ControlAction)}, got {body.get('action')!r:.40}",
        ) from None
    request_id = body.get("request_id")
    if request_id is not None and not isinstance(request_id, str):
        raise CommandError(Reason.WRONG_TYPE, "request_id must be a string")
    if action.for_host:
        if body.get("instance_id") is not None:
            raise CommandError(
                Reason.UNKNOWN_FIELD, f"{action} is for the whole host: it takes no instance_id"
            )
        return ControlMessage(action=action, request_id=request_id)
    return ControlMessage(
        action=action,
        instance_id=validate_instance_id(body.get("instance_id")),
        request_id=request_id,
    )


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
