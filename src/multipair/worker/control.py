"""Control commands: acted on at once, beside the running transaction (docs/broker-schema.md).

``cancel``, signature and auth-code answers, pairing confirmation and
cancellation act on what runs now; ``terminal_status`` and
``terminal_configuration`` ask the terminal and wait for its answer
(:meth:`Control.ask`, bounded by :data:`TERMINAL_ANSWER_TIMEOUT_S`);
``bill_details`` and ``open_tables`` answer the terminal's pay-at-table
requests (:mod:`multipair.worker.pay_at_table`). Each
claims its ``command_id`` like any command, and is answered and
acknowledged in one write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from multipair import broker_schema as bs
from multipair import failpoints
from multipair.exceptions import CommandError, LocalProtocolError
from multipair.spi import messages as m
from multipair.worker.admission import expired, refusal
from multipair.worker.entries import Entry
from multipair.worker.session_events import Awaited
from multipair.worker.translate import config_event, status_event

if TYPE_CHECKING:
    from multipair.worker.lane import Lane

__all__ = ["TERMINAL_ANSWER_TIMEOUT_S", "Control"]

TERMINAL_ANSWER_TIMEOUT_S: Final = 15.0
"""How long a request to the terminal waits for its answer."""

_A = TypeVar("_A")


class Control:
    """The lane's control commands."""

    def __init__(self, lane: Lane) -> None:
        self.lane = lane

    async def run(self, entry: Entry) -> None:
        """Run one control command at once and answer it (``command_accepted`` or a refusal)."""
        failpoints.hit("lane.control_command")
        failpoints.fault("lane.control_command_fails")
        command = entry.command
        if expired(command, self.lane.now()):
            await self.lane.intake.refuse(
                entry, CommandError(bs.Reason.EXPIRED, "the command expired before it could run")
            )
            return
        try:
            # Control commands claim their command_id too (one atomic step): one
            # that reuses another command's id must not act and answer under it.
            await self.lane.runner.claim_command_id(entry)
        except CommandError as exc:
            await self.lane.intake.refuse(entry, exc)
            return
        session = self.lane.session
        try:
            match command:
                case bs.Cancel():
                    self._check_target(command.pos_ref_id)
                    await self.lane.step(session.cancel_transaction)
                case bs.SignatureAccept() | bs.SignatureDecline():
                    self._check_target(command.pos_ref_id)
                    accepted = isinstance(command, bs.SignatureAccept)
                    await self.lane.step(lambda now: session.accept_signature(accepted, now))
                case bs.AuthCode():
                    self._check_target(command.pos_ref_id)
                    code = command.auth_code
                    await self.lane.step(lambda now: session.submit_auth_code(code, now))
                case bs.PairConfirm():
                    expected = session.pairing_code
                    if (
                        command.confirmation_code
                        and expected
                        and (command.confirmation_code.upper() != expected.upper())
                    ):
                        raise LocalProtocolError(
                            "the confirmation code does not match the one the terminal shows"
                        )
                    await self.lane.step(session.pair_confirm)
                case bs.PairCancel():
                    self._check_pairing(command.pair_command_id)
                    await self.lane.step(session.pair_cancel)
                case bs.TerminalStatus():
                    answer = await self.ask(m.TerminalStatus, session.get_terminal_status)
                    await self.lane.intake.answer(
                        entry, status_event(self.lane.event_base(command), answer)
                    )
                    return
                case bs.TerminalConfiguration():
                    config = await self.ask(
                        m.TerminalConfiguration, session.get_terminal_configuration
                    )
                    await self.lane.intake.answer(
                        entry, config_event(self.lane.event_base(command), config)
                    )
                    return
                case bs.BillDetails():
                    await self.lane.pat.answer_bill(command)
                case bs.OpenTables():
                    await self.lane.pat.answer_tables(command)
                case _:
                    raise LocalProtocolError(f"{command.type} is not a control command")
        except (LocalProtocolError, TimeoutError) as exc:
            await self.lane.intake.refuse(entry, refusal(exc))
            return
        except CommandError as exc:  # pay at table: unknown_request, terminal_unavailable
            await self.lane.intake.refuse(entry, exc)
            return
        await self.lane.intake.answer(
            entry,
            self.lane.event(
                bs.CommandAccepted, command_id=command.command_id, command_type=command.type
            ),
        )

    def _check_pairing(self, pair_command_id: str | None) -> None:
        """A ``pair_cancel`` naming a pairing acts only on that one, never on a later one."""
        if pair_command_id is None:
            return
        entry = self.lane.tx_entry if self.lane.pairing_done is not None else None
        running = entry.command.command_id if entry is not None else None
        if running != pair_command_id:
            now = f"pairing {running!r} is running" if running else "no pairing is running"
            raise LocalProtocolError(
                f"pair {pair_command_id!r} is not the running pairing ({now}); nothing cancelled"
            )

    def _check_target(self, pos_ref_id: str | None) -> None:
        current = self.lane.session.current_pos_ref_id
        if pos_ref_id is not None and current is not None and pos_ref_id != current:
            raise LocalProtocolError(
                f"pos_ref_id {pos_ref_id!r} is not the running transaction ({current!r})"
            )

    async def ask(self, kind: type[_A], request: Callable[[float], str]) -> _A:
        """Send a request whose answer (a ``kind``) arrives later as a session event; wait for it.

        The answer is matched to the request by its message id (what
        ``request`` returns), registered as the request is made, so no answer
        can come before it is awaited (:func:`~multipair.worker.pump.answer_to`).
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        sent: list[str] = []

        def send(now: float) -> str:
            message_id = request(now)
            sent.append(message_id)
            self.lane.answers[message_id] = Awaited(kind=kind, future=future)
            return message_id

        try:
            await self.lane.step(send)
            async with asyncio.timeout(TERMINAL_ANSWER_TIMEOUT_S):
                answer: _A = await future
                return answer
        finally:
            for message_id in sent:
                self.lane.answers.pop(message_id, None)

    # ------------------------------------------------------------------
    # Transaction commands: one at a time, in order
    # ------------------------------------------------------------------
