"""Purchases and refunds run as jobs: send once, wait, and never re-send blindly.

Rules this module keeps (docs/integration.md, "Idempotency" and "Outcomes"):

- The ``command_id`` is derived from the transaction (:func:`money_command_id`),
  unless the caller gives one, so a retry of the job sends the *same*
  command with the same ``pos_ref_id``: the lane runs it once, and answers a
  repeat from its record (``transaction_lookup``, ``found: true``).
- The command carries ``expires_at`` (now + the job's wait), so a purchase
  that could not start before the job gave up is refused by the lane rather
  than run behind its back; a retry then starts it afresh.
- ``success`` and ``failed`` are returned as the ``transaction_completed``
  body. ``unknown`` is looked up on the terminal (``get_transaction``): a
  definite answer is returned (``recovered: true``), anything else raises
  :class:`~multipair.jobs.errors.OutcomeUnknown`. So does no answer in time
  (the lane keeps running the transaction). Nothing here ever sends a
  transaction with a new ``pos_ref_id``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Callable
from typing import Any, Final, Literal

import orjson

from multipair import broker_schema as bs
from multipair.client import AsyncClient, ClientError, OutcomeTimeout
from multipair.client.outcome import Outcome
from multipair.exceptions import CommandError
from multipair.jobs.errors import OutcomeUnknown

__all__ = ["DEFAULT_WAIT_S", "MoneyType", "money_command_id", "run_money"]

MoneyType = Literal["purchase", "refund"]

DEFAULT_WAIT_S: Final = 120.0
"""How long a money job waits for the outcome (option ``timeout_s``)."""

LOOKUP_WAIT_S: Final = 60.0

_FIELDS: Final[dict[str, frozenset[str]]] = {
    "purchase": frozenset({"tip_cents", "cashout_cents", "surcharge_cents", "prompt_for_cashout"}),
    "refund": frozenset({"suppress_merchant_password"}),
}
_CLASSES: Final[dict[str, Callable[..., bs.Command]]] = {
    "purchase": bs.Purchase,
    "refund": bs.Refund,
}


def money_command_id(tx_type: str, pos_ref_id: str) -> str:
    """The ``command_id`` a job uses for a transaction: the same on every retry."""
    return f"job:{tx_type}:{pos_ref_id}"


def _body(event: bs.Event) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(bs.event_to_json(event))
    return document


async def run_money(
    client: AsyncClient,
    tx_type: MoneyType,
    instance_id: str,
    amount_cents: int,
    pos_ref_id: str,
    options: dict[str, Any],
) -> dict[str, Any]:
    """Run one purchase or refund to a definite outcome; its ``transaction_completed`` body.

    ``options``: the command's own fields (``tip_cents`` ... for a purchase,
    ``suppress_merchant_password`` for a refund), and ``timeout_s`` (the wait,
    default 120), ``command_id`` (default :func:`money_command_id`).
    """
    if tx_type not in _CLASSES:
        raise CommandError(bs.Reason.INVALID_VALUE, f"not a money job: {tx_type!r}")
    options = dict(options)
    wait = options.pop("timeout_s", DEFAULT_WAIT_S)
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 < wait <= 3600:
        raise CommandError(bs.Reason.INVALID_VALUE, "timeout_s must be 0 to 3600 seconds")
    command_id = options.pop("command_id", None) or money_command_id(tx_type, pos_ref_id)
    unknown = sorted(set(options) - _FIELDS[tx_type])
    if unknown:
        raise CommandError(bs.Reason.UNKNOWN_FIELD, f"a {tx_type} job has no option {unknown[0]!r}")
    expires_at = _dt.datetime.now(_dt.UTC) + _dt.timedelta(seconds=wait)
    command = _CLASSES[tx_type](
        command_id=command_id,
        pos_ref_id=pos_ref_id,
        amount_cents=amount_cents,
        expires_at=expires_at,
        **options,
    )
    try:
        event = await client.send_and_wait(instance_id, command, timeout=wait)
    except OutcomeTimeout:
        raise OutcomeUnknown(
            "timeout",
            f"no outcome of {tx_type} {pos_ref_id} within {wait:g} s; the lane keeps running "
            "it: run the job again (the same command) or look it up before charging again",
            instance_id=instance_id,
            pos_ref_id=pos_ref_id,
            command_id=command_id,
        ) from None
    if not isinstance(event, bs.TransactionCompleted | bs.TransactionLookup):
        raise ClientError("unexpected_event", f"a {tx_type} was answered by {event.type!r}")
    outcome = Outcome.from_event(event, command_id=command_id, pos_ref_id=pos_ref_id)
    if not outcome.unknown:
        return _body(outcome.event)
    return await _look_up(client, tx_type, instance_id, pos_ref_id, command_id, outcome)


async def _look_up(
    client: AsyncClient,
    tx_type: str,
    instance_id: str,
    pos_ref_id: str,
    command_id: str,
    outcome: Outcome,
) -> dict[str, Any]:
    """Ask the terminal about an ``unknown`` outcome; a definite answer, or OutcomeUnknown."""
    lookup: bs.TransactionLookup | None = None
    why = outcome.error_detail or outcome.error_reason or "the lane could not learn it"
    try:
        lookup = await client.get_transaction(instance_id, pos_ref_id, timeout=LOOKUP_WAIT_S)
    except OutcomeTimeout:
        why += "; the lookup got no answer"
    except ClientError as exc:  # CommandRejected: busy or not connected now
        why += f"; the lookup was refused ({exc.reason}: {exc.detail})"
    if lookup is not None:
        if lookup.found and lookup.result in (bs.TxResult.SUCCESS, bs.TxResult.FAILED):
            names = {f.name for f in dataclasses.fields(bs.TransactionCompleted)} - {"recovered"}
            fields = {
                f.name: getattr(lookup, f.name)
                for f in dataclasses.fields(bs.TransactionLookup)
                if f.name in names
            }
            fields.update(command_id=command_id, pos_ref_id=pos_ref_id, tx_type=tx_type)
            return _body(bs.TransactionCompleted(**fields, recovered=True))
        why += (
            f"; the terminal does not know it ({lookup.error_reason})"
            if not lookup.found
            else "; the terminal's answer is unknown too"
        )
    raise OutcomeUnknown(
        "unknown",
        f"{tx_type} {pos_ref_id} on lane {instance_id}: {why}. Money may or may not have "
        "moved: check the terminal before charging again; never send it with a new pos_ref_id",
        instance_id=instance_id,
        pos_ref_id=pos_ref_id,
        command_id=command_id,
        lookup=None if lookup is None else _body(lookup),
    )
