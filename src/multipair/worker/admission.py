"""What a lane does with a command: a pure decision (STYLE.md §13).

The lane shell reads (the command's transaction record, the prior claim of
its ``command_id``, the session's readiness), calls a function of this
module, and acts on the answer; nothing here does I/O or reads a clock.
Tested as a table, without Redis (``tests/worker/test_admission.py``), the
way :mod:`multipair.supervisor.decide` is.

The rules (DESIGN.md "No double charge", "No lost outcome"):

- **Claims.** The first use of a ``command_id`` wins. The same stream entry
  seen again (a redelivery after a crash) runs again; a money command
  repeated with the same type and ``pos_ref_id`` goes on (it is answered
  from its record); anything else reusing the id is refused
  (``duplicate_command_id``): :func:`judge_claim`.
- **Records.** A transaction command with a ``pos_ref_id`` has a record
  (:func:`admit`). No record yet: run it (creating the record), once the
  lane is paired and idle. A record of another command: refused
  (``duplicate_pos_ref_id``). A completed record: answered from the record,
  never run twice. A record past ``requested`` (it may have reached the
  terminal): resumed, asking the terminal, never sent again. A record still
  ``requested``: run it.
- **Readiness.** A new request goes out only over a live link: a paired lane
  whose terminal is not connected waits (a bounded time, in the shell) for
  it, once, before a request that may be new. Running needs a paired, idle
  session (``Not Paired`` / ``Not Idle`` refusals, as the SPI session words
  them).
- **One pairing.** A ``pair`` while another is queued or running is refused
  at once (``busy``): :func:`pair_busy`; a pairing ends at its command's
  ``expires_at``, at the latest after :data:`PAIRING_TIMEOUT_S`:
  :func:`pairing_limit`.
"""

from __future__ import annotations

import datetime as _dt
import enum
from dataclasses import dataclass
from typing import Final

import orjson

from multipair import broker_schema as bs
from multipair.exceptions import CommandError, LocalProtocolError
from multipair.spi import pos as spi
from multipair.store.transactions import TxRecord, TxState

__all__ = [
    "PAIRING_TIMEOUT_S",
    "POISON_DELIVERIES",
    "AnswerFromRecord",
    "Claim",
    "Decision",
    "Readiness",
    "Refuse",
    "Resume",
    "Run",
    "WaitForTerminal",
    "admit",
    "can_start_now",
    "expired",
    "gives_up",
    "judge_claim",
    "pair_busy",
    "pairing_limit",
    "refusal",
]

PAIRING_TIMEOUT_S: Final = 180.0
"""The longest a pairing may run; a ``pair`` with an earlier ``expires_at`` ends then."""
POISON_DELIVERIES: Final = 3
"""An entry delivered this many times without an answer is dead-lettered, not run again."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Readiness:
    """What the decisions need to know of the SPI session."""

    paired: bool
    """Not ``unpaired``."""
    ready: bool
    """Linked and ready to send a request (``PosSession.ready``)."""
    flow: spi.SpiFlow

    @classmethod
    def of(cls, session: spi.PosSession) -> Readiness:
        """The readiness of ``session`` now."""
        return cls(
            paired=session.status is not spi.SpiStatus.UNPAIRED,
            ready=session.ready,
            flow=session.flow,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """Send the request (after ``command_accepted``); ``create_record``: no record yet."""

    type: str = "run"
    create_record: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Resume:
    """The record says the request may have reached the terminal: ask it, never resend."""

    type: str = "resume"


@dataclass(frozen=True, slots=True, kw_only=True)
class AnswerFromRecord:
    """The transaction completed before: answer from its record, no second outcome."""

    type: str = "answer_from_record"


@dataclass(frozen=True, slots=True, kw_only=True)
class Refuse:
    """Refuse the command; ``error`` says why (its reason goes out in ``command_rejected``)."""

    error: CommandError | LocalProtocolError
    type: str = "refuse"


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitForTerminal:
    """Wait (bounded) for the terminal link, then read the record and decide again."""

    type: str = "wait_for_terminal"


Decision = Run | Resume | AnswerFromRecord | Refuse | WaitForTerminal


class Claim(enum.Enum):
    """What a ``command_id`` claim found."""

    FIRST = "first"
    """Nobody claimed it before: this command has it now."""
    REDELIVERY = "redelivery"
    """This very stream entry claimed it before: delivered again (after a crash)."""
    SAME_MONEY = "same_money"
    """Another entry of the same money command (type and pos_ref_id): its record answers."""


def judge_claim(command: bs.Command, entry_id: str, prior: bytes | None) -> Claim | Refuse:
    """Whether ``command`` (stream entry ``entry_id``) may go on, given the prior claim.

    ``prior`` is what :func:`~multipair.worker.translate.claim_of` stored for
    the first claimant, or None when this claim was the first.
    """
    if prior is None:
        return Claim.FIRST
    earlier = orjson.loads(prior)
    if earlier.get("entry_id") == entry_id:
        return Claim.REDELIVERY  # redelivered after a crash: run it again
    same_money = (
        command.records_tx
        and earlier.get("type") == command.type
        and earlier.get("pos_ref_id") == getattr(command, "pos_ref_id", None)
    )
    if not same_money:
        return Refuse(
            error=CommandError(
                bs.Reason.DUPLICATE_COMMAND_ID,
                f"command_id {command.command_id!r} was already used by "
                f"{earlier.get('type')} {earlier.get('pos_ref_id') or ''}".rstrip(),
            )
        )
    return Claim.SAME_MONEY


def idle_refusal(readiness: Readiness) -> Refuse | None:
    """Why no new transaction may start now (not paired, not idle); None when it may."""
    if not readiness.paired:
        return Refuse(error=LocalProtocolError("Not Paired: pair the lane first"))
    if readiness.flow is not spi.SpiFlow.IDLE:
        return Refuse(error=LocalProtocolError(f"Not Idle: the lane is in flow {readiness.flow}"))
    return None


def can_start_now(readiness: Readiness) -> bool:
    """A new transaction would go out at once: linked, ready, paired, idle."""
    return readiness.ready and readiness.paired and readiness.flow is spi.SpiFlow.IDLE


def admit(
    command: bs.Command, record: TxRecord | None, readiness: Readiness, *, waited: bool
) -> Decision:
    """What to do with a transaction command whose ``command_id`` claim let it go on.

    ``record``: the transaction record of the command's ``pos_ref_id`` (None:
    there is none, or the command keeps none). ``waited``: the shell already
    waited for the terminal link for this command (it waits once).
    """
    pos_ref_id = getattr(command, "pos_ref_id", None)
    if not (command.records_tx and pos_ref_id):
        if readiness.paired and not readiness.ready and not waited:
            return WaitForTerminal()
        return idle_refusal(readiness) or Run()
    if (
        (record is None or record.state is TxState.REQUESTED)
        and readiness.paired
        and not readiness.ready
        and not waited
    ):
        return WaitForTerminal()
    if record is None:
        return idle_refusal(readiness) or Run(create_record=True)
    if record.command_id != command.command_id:
        return Refuse(
            error=CommandError(
                bs.Reason.DUPLICATE_POS_REF_ID,
                f"pos_ref_id {pos_ref_id!r} belongs to command {record.command_id!r} "
                f"({record.state}); a new transaction needs a new pos_ref_id",
            )
        )
    if record.completed:
        # A repeat (or a redelivery after a crash) of a finished command: answer
        # from the record, never a second transaction_completed.
        return AnswerFromRecord()
    if record.state is not TxState.REQUESTED:
        return Resume()
    return idle_refusal(readiness) or Run()


def expired(command: bs.Command, now: _dt.datetime) -> bool:
    """Whether ``command``'s ``expires_at`` has passed at ``now``."""
    return command.expires_at is not None and command.expires_at <= now


def gives_up(delivered: int, has_record: bool) -> bool:
    """Whether an entry delivered ``delivered`` times before, never answered, is given up.

    Every earlier try ended the lane before an answer: running it again would
    end this one too. An entry whose transaction record exists is never given
    up on: it is recovered from the terminal, not re-run.
    """
    return delivered >= POISON_DELIVERIES and not has_record


def pair_busy(command: bs.Command, pending: bs.Command | None) -> CommandError | None:
    """Why ``command`` may not be queued: a ``pair`` while the ``pair`` ``pending`` is not done.

    One pairing at a time. Queued, a second ``pair`` would wait out the
    first (up to :data:`PAIRING_TIMEOUT_S`) and start long after its sender
    gave up, so it is refused at once: nothing was done, send it again once
    the first has ended.
    """
    if not isinstance(command, bs.Pair) or pending is None:
        return None
    return CommandError(
        bs.Reason.BUSY,
        f"pairing {pending.command_id!r} is in progress on this lane; send pair again once it "
        "has ended (pair_cancel ends it)",
    )


def pairing_limit(expires_at: _dt.datetime | None, now: _dt.datetime) -> tuple[float, str]:
    """How long a pairing started at ``now`` may run, in seconds, and why it would end then.

    Until the ``pair`` command's ``expires_at`` (docs/broker-schema.md,
    ``pair``), and never longer than :data:`PAIRING_TIMEOUT_S`.
    """
    if expires_at is not None:
        left = (expires_at - now).total_seconds()
        if left < PAIRING_TIMEOUT_S:
            return max(0.0, left), (
                f"the pair command's expires_at ({bs.format_time(expires_at)}) passed "
                "before it finished"
            )
    return PAIRING_TIMEOUT_S, f"it did not finish within {PAIRING_TIMEOUT_S:g} s"


def refusal(exc: TimeoutError | LocalProtocolError) -> CommandError:
    """Why a command that could not run is refused: the terminal did not answer in time
    (``terminal_timeout``), or the session would not do it now (``not_allowed``)."""
    if isinstance(exc, TimeoutError):
        return CommandError(bs.Reason.TERMINAL_TIMEOUT, "the terminal did not answer in time")
    return CommandError(bs.Reason.NOT_ALLOWED, str(exc))
