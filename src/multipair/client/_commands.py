"""What the asyncio client builds and checks around a command, without I/O.

Fresh ids (:func:`new_command_id`, :func:`new_pos_ref_id`), commands built
with the schema's errors turned into the client's (:func:`build`), which
event answers a command for good (:func:`is_final`), and the small parsers
of what a lane's state hash says. :mod:`multipair.client._async` does the
Redis side.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final, TypeVar

from multipair import broker_schema as bs
from multipair.broker_schema.keys import validate_instance_id
from multipair.client.errors import ClientError, LaneNotFound
from multipair.exceptions import CommandError

__all__ = [
    "PAIRED_STATES",
    "PAIR_FAILED_STATES",
    "CancelWatch",
    "build",
    "client_errors",
    "expect",
    "is_final",
    "lane_id",
    "new_command_id",
    "new_pos_ref_id",
    "not_found",
    "parse_int",
    "parse_time",
]

_MONEY_FINAL: Final = frozenset({"transaction_completed", "transaction_lookup"})
# Command type -> the event types that answer it for good (besides command_rejected).
# Commands not listed are answered by command_accepted (control commands,
# unpair, set_config); pair is answered by a final pairing event.
_FINAL_EVENTS: Final[dict[str, frozenset[str]]] = {
    "purchase": _MONEY_FINAL,
    "refund": _MONEY_FINAL,
    "cashout": _MONEY_FINAL,
    "moto_purchase": _MONEY_FINAL,
    "reversal": _MONEY_FINAL,
    "account_verify": _MONEY_FINAL,
    "preauth_open": _MONEY_FINAL,
    "preauth_topup": _MONEY_FINAL,
    "preauth_partial_cancel": _MONEY_FINAL,
    "preauth_extend": _MONEY_FINAL,
    "preauth_cancel": _MONEY_FINAL,
    "preauth_complete": _MONEY_FINAL,
    "zip_purchase": _MONEY_FINAL,
    "zip_refund": _MONEY_FINAL,
    "get_transaction": frozenset({"transaction_lookup"}),
    "get_last_transaction": frozenset({"transaction_lookup"}),
    "settle": frozenset({"settlement"}),
    "settlement_enquiry": frozenset({"settlement"}),
    "terminal_status": frozenset({"terminal_status"}),
    "terminal_configuration": frozenset({"terminal_configuration"}),
    "print": frozenset({"printing"}),
    "pair": frozenset(),
}
PAIRED_STATES: Final = frozenset({"succeeded"})
PAIR_FAILED_STATES: Final = frozenset({"failed", "cancelled"})

_E = TypeVar("_E", bound=bs.Event)


def new_command_id() -> str:
    """A fresh ``command_id`` (32 hex digits of a random UUID)."""
    return uuid.uuid4().hex


def new_pos_ref_id() -> str:
    """A fresh ``pos_ref_id``: ``mp-`` and 20 random hex digits."""
    return f"mp-{uuid.uuid4().hex[:20]}"


@contextmanager
def client_errors() -> Iterator[None]:
    """Turn the schema's and the store's ``CommandError`` into the client's errors."""
    try:
        yield
    except CommandError as exc:
        if exc.reason == bs.Reason.UNKNOWN_LANE:
            raise LaneNotFound(exc.reason, exc.detail) from None
        raise ClientError(exc.reason, exc.detail) from None


def lane_id(instance_id: str) -> str:
    """``instance_id`` checked; ``ClientError`` when it is not a lane id."""
    with client_errors():
        return validate_instance_id(instance_id)


def not_found(iid: str) -> LaneNotFound:
    """The error for a lane that has no profile."""
    return LaneNotFound(bs.Reason.UNKNOWN_LANE, f"no lane has instance id {iid}")


def build(cls: Callable[..., bs.Command], **fields: Any) -> bs.Command:
    """Build a command; a bad value raises ``ClientError`` with the schema's reason."""
    with client_errors():
        return cls(command_id=new_command_id(), **fields)


def is_final(command: bs.Command, event: bs.Event) -> bool:
    """Whether ``event`` (of ``command``'s id) answers ``command`` for good."""
    if isinstance(event, bs.CommandRejected):
        return True
    if isinstance(event, bs.Pairing):
        return event.state in PAIRED_STATES or event.state in PAIR_FAILED_STATES
    final = _FINAL_EVENTS.get(command.type)
    if final is None:
        return isinstance(event, bs.CommandAccepted)
    return event.type in final


class CancelWatch:
    """Notices a cancellation of the current task that never arrived as ``CancelledError``.

    On Python 3.11, ``asyncio.wait_for`` (redis-py sends every command
    through it) drops a cancellation that lands as the command completes
    (gh-86296): the task goes on as if nothing happened, only its
    ``cancelling()`` count says otherwise. ``check()`` raises it then.
    """

    def __init__(self) -> None:
        self._task = asyncio.current_task()
        self._before = self._task.cancelling() if self._task is not None else 0

    def check(self) -> None:
        """Raise ``CancelledError`` if the task was cancelled since this watch began."""
        if self._task is not None and self._task.cancelling() > self._before:
            raise asyncio.CancelledError


def expect(event: bs.Event, cls: type[_E]) -> _E:
    """``event`` as a ``cls``; ``ClientError('unexpected_event')`` when it is another type."""
    if not isinstance(event, cls):
        raise ClientError(
            "unexpected_event", f"expected a {cls.type!r} event, the lane answered {event.type!r}"
        )
    return event


def parse_time(text: str | None) -> _dt.datetime | None:
    """A state hash time (UTC when naive); None when absent or unreadable."""
    if not text:
        return None
    try:
        moment = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=_dt.UTC)


def parse_int(text: str | None) -> int | None:
    """A state hash number; None when absent or unreadable."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None
