"""Errors of the RQ jobs (a branch of ``multipair.exceptions``' tree).

::

    MultipairError
    └── JobError                 .reason, .detail: the job did not do its work
        ├── OutcomeUnknown       a purchase or refund ended ``unknown`` (or unanswered) and
        │                        a lookup could not settle it: never send a new transaction;
        │                        a retry of the same job re-sends the same command, which
        │                        the lane answers from its record
        └── SettlementNotDone    ``settle_lane`` did not settle the lane (.record says why)

A job also lets through, unchanged: the client's errors
(:class:`~multipair.client.LaneNotFound`, :class:`~multipair.client.CommandRejected`:
nothing ran), :class:`~multipair.exceptions.CommandError` for a bad argument,
:class:`~multipair.exceptions.RetryLater` when Redis is unreachable and
:class:`~multipair.exceptions.ConfigurationError` for missing settings.
RQ records the exception of a failed job, and retries it when the job was
enqueued with ``Retry``: every job is safe to run again.
"""

from __future__ import annotations

from typing import Any

from multipair.exceptions import MultipairError

__all__ = ["JobError", "OutcomeUnknown", "SettlementNotDone"]


class JobError(MultipairError):
    """A job could not do its work; ``reason`` is machine-readable, ``detail`` for people."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable with its arguments (RQ may serialise exceptions of failed jobs).
        return (type(self), (self.reason, self.detail))


class OutcomeUnknown(JobError):
    """Nobody knows whether the money moved: look at the terminal before charging again.

    ``reason`` is ``unknown`` (the lane published ``result: unknown`` and the
    lookup did not find a definite outcome) or ``timeout`` (no outcome within
    the job's wait: the lane keeps running it). ``lookup`` is the
    ``transaction_lookup`` body when one was made.
    """

    def __init__(
        self,
        reason: str,
        detail: str = "",
        *,
        instance_id: str = "",
        pos_ref_id: str = "",
        command_id: str = "",
        lookup: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(reason, detail)
        self.instance_id = instance_id
        self.pos_ref_id = pos_ref_id
        self.command_id = command_id
        self.lookup = lookup

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_unknown,
            (
                self.reason,
                self.detail,
                self.instance_id,
                self.pos_ref_id,
                self.command_id,
                self.lookup,
            ),
        )


def _rebuild_unknown(
    reason: str,
    detail: str,
    instance_id: str,
    pos_ref_id: str,
    command_id: str,
    lookup: dict[str, Any] | None,
) -> OutcomeUnknown:
    return OutcomeUnknown(
        reason,
        detail,
        instance_id=instance_id,
        pos_ref_id=pos_ref_id,
        command_id=command_id,
        lookup=lookup,
    )


class SettlementNotDone(JobError):
    """``settle_lane`` ended without the lane settled; ``record`` is its report entry."""

    def __init__(self, reason: str, detail: str = "", *, record: dict[str, Any] | None = None):
        super().__init__(reason, detail)
        self.record = record

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_not_done, (self.reason, self.detail, self.record))


def _rebuild_not_done(reason: str, detail: str, record: dict[str, Any] | None) -> SettlementNotDone:
    return SettlementNotDone(reason, detail, record=record)
