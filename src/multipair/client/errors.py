"""Errors of the client library (a branch of ``multipair.exceptions``' tree).

::

    MultipairError
    └── ClientError            .reason, .detail
        ├── LaneNotFound       no lane has that instance id ('unknown_lane')
        ├── CommandRejected    the lane answered command_rejected (.event)
        └── OutcomeTimeout     no final answer in time: the outcome is UNKNOWN
"""

from __future__ import annotations

from multipair.broker_schema import CommandRejected as CommandRejectedEvent
from multipair.exceptions import MultipairError

__all__ = ["ClientError", "CommandRejected", "LaneNotFound", "OutcomeTimeout"]


class ClientError(MultipairError):
    """Something the client library refuses or could not get; ``reason`` is machine-readable."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class LaneNotFound(ClientError):
    """No lane has this instance id (``reason`` is ``unknown_lane``)."""


class CommandRejected(ClientError):
    """The lane refused the command; ``reason``/``detail`` are the event's, ``event`` is it."""

    def __init__(self, event: CommandRejectedEvent) -> None:
        super().__init__(event.reason, event.detail)
        self.event = event


class OutcomeTimeout(ClientError):
    """No final answer arrived in time. The outcome is unknown: look it up before retrying."""
