"""``multipair tx ...``: run a transaction on a lane and report its outcome.

Each money command (``purchase``, ``refund``, ``cashout``, ``moto``, and the
preauthorisation, account verify and Zip ones of :mod:`multipair.cli._preauth`)
checks that the lane can take it, sends it, shows the terminal's progress, and
prints the outcome; the exit code is the outcome (0 approved, 1 declined or
failed, 3 unknown). Rules:

- Amounts are dollars as typed, converted exactly (:mod:`multipair.cli.amounts`).
- The ``pos_ref_id`` is chosen (or taken from ``--pos-ref-id``) and shown
  before anything is sent, so an operator always knows what to look up.
- Money commands carry ``expires_at`` = now + ``--timeout``: a command that
  could not *start* before the CLI gives up is rejected by the lane, never
  run later behind the operator's back (docs/broker-schema.md, "Expiry").
  One that started runs to its end; a timeout then means "unknown" (3).
- Receipts are printed only with ``--receipt`` (also left out of ``--json``).
- ``tx status`` says "not found" (1) only when the terminal answers
  ``POS_REF_ID_NOT_FOUND``; a transaction still in progress on the terminal,
  or a lookup that failed for another reason, is "not known yet" (3).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as _dt
from collections.abc import Callable, Coroutine
from typing import Any, Final

from redis.exceptions import RedisError

from multipair import broker_schema as bs
from multipair.cli._base import (
    Context,
    ExitCode,
    Fail,
    Parser,
    Stake,
    Subparsers,
    add_global_options,
    add_lane_argument,
    client_command,
    interactive,
    read_answer,
    seconds,
)
from multipair.cli._preauth import Build, add_preauth_actions, describe, outcome_rows
from multipair.cli._views import ready_lane, resolve_lane
from multipair.cli.amounts import AmountError, format_cents, parse_amount
from multipair.client import AsyncClient, OutcomeTimeout, new_command_id, new_pos_ref_id
from multipair.client.outcome import Outcome
from multipair.exceptions import CommandError, MultipairError
from multipair.store.transactions import TxRecord

__all__ = ["RecordAnswer", "add_tx_parser", "answer_from_record", "outcome_heading"]

_RECEIPTS = ("customer_receipt", "merchant_receipt")


def _amount(text: str) -> int:
    try:
        return parse_amount(text)
    except AmountError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _amount_or_zero(text: str) -> int:
    try:
        return parse_amount(text, allow_zero=True)
    except AmountError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_tx_parser(subparsers: Subparsers) -> None:
    """Register ``multipair tx`` and its actions."""
    tx = subparsers.add_parser(
        "tx",
        help="purchase, refund, cashout, MOTO, preauth, Zip, cancel, look up and settle",
        description=(
            "Run transactions on a lane. Amounts are dollars (12.50). Exit codes: 0 approved, "
            "1 declined or failed (tx status: or not found), 2 usage error or refused, 3 outcome "
            "unknown: timed out, or (tx status) still in progress."
        ),
    )
    actions = tx.add_subparsers(dest="action", metavar="ACTION", required=True)
    common = Parser(add_help=False)
    add_global_options(common, top=False)

    def money(
        within: Subparsers,
        name: str,
        text: str,
        build: Build,
        *,
        amount: bool = True,
        tip: bool = False,
        surcharge: bool = False,
    ) -> Parser:
        parser = within.add_parser(
            name, parents=[common], help=text, description=text + "; waits for the outcome."
        )
        add_lane_argument(parser)
        if amount:
            parser.add_argument(
                "--amount", type=_amount, required=True, metavar="DOLLARS", help="e.g. 12.50"
            )
        if tip:
            parser.add_argument("--tip", type=_amount_or_zero, default=0, metavar="DOLLARS")
            parser.add_argument(
                "--cashout", type=_amount_or_zero, default=0, metavar="DOLLARS", help="cash out"
            )
            parser.add_argument(
                "--prompt-for-cashout",
                action="store_true",
                help="the terminal offers cash out to the customer",
            )
        if surcharge:
            parser.add_argument("--surcharge", type=_amount_or_zero, default=0, metavar="DOLLARS")
        parser.add_argument(
            "--pos-ref-id", metavar="REF", help="the transaction's reference (default: new)"
        )
        parser.add_argument("--timeout", type=seconds, default=120.0, metavar="S", help="(120)")
        parser.add_argument("--receipt", action="store_true", help="print the receipts too")
        parser.set_defaults(handler=client_command(_money), build=build)
        return parser

    money(
        actions,
        "purchase",
        "card purchase",
        lambda a: (
            bs.Purchase,
            {
                "amount_cents": a.amount,
                "tip_cents": a.tip,
                "cashout_cents": a.cashout,
                "surcharge_cents": a.surcharge,
                "prompt_for_cashout": a.prompt_for_cashout,
            },
        ),
        tip=True,
        surcharge=True,
    )
    money(actions, "refund", "refund to a card", lambda a: (bs.Refund, {"amount_cents": a.amount}))
    money(
        actions,
        "cashout",
        "cash out only",
        lambda a: (bs.Cashout, {"amount_cents": a.amount, "surcharge_cents": a.surcharge}),
        surcharge=True,
    )
    money(
        actions,
        "moto",
        "mail or telephone order purchase (card keyed on the terminal)",
        lambda a: (bs.MotoPurchase, {"amount_cents": a.amount, "surcharge_cents": a.surcharge}),
        surcharge=True,
    )
    add_preauth_actions(actions, money)

    cancel = actions.add_parser(
        "cancel",
        parents=[common],
        help="cancel the running transaction",
        description=(
            "Ask the terminal to cancel the running transaction. The transaction still ends "
            "with its own outcome (declined, or approved when past the point of no return)."
        ),
    )
    add_lane_argument(cancel)
    cancel.add_argument("--pos-ref-id", metavar="REF", help="cancel only this transaction")
    cancel.add_argument("--timeout", type=seconds, default=30.0, metavar="S", help="(30)")
    cancel.set_defaults(handler=client_command(_cancel))

    status = actions.add_parser(
        "status",
        parents=[common],
        help="ask the terminal for the outcome of a transaction",
        description=(
            "Ask the terminal for a transaction's outcome. Exit codes: 0 approved, 1 declined, "
            "or not found (POS_REF_ID_NOT_FOUND: the terminal never ran it), 3 still in "
            "progress on the terminal or not known (the terminal could not say): ask again "
            "later and never re-send it."
        ),
    )
    add_lane_argument(status)
    status.add_argument("--pos-ref-id", required=True, metavar="REF")
    status.add_argument("--timeout", type=seconds, default=60.0, metavar="S", help="(60)")
    status.add_argument("--receipt", action="store_true", help="print the receipts too")
    status.set_defaults(handler=client_command(_status))

    for name, text in (
        ("settle", "settle: close the day with the acquirer"),
        ("enquiry", "settlement enquiry: the totals, without closing the day"),
    ):
        parser = actions.add_parser(name, parents=[common], help=text, description=text + ".")
        add_lane_argument(parser)
        parser.add_argument("--timeout", type=seconds, default=120.0, metavar="S", help="(120)")
        parser.add_argument("--receipt", action="store_true", help="print the receipt too")
        parser.set_defaults(handler=client_command(_settle), settle=name)

    signature = actions.add_parser(
        "signature",
        parents=[common],
        help="answer a signature request: --accept or --decline",
        description="The customer's signature matches (--accept) or not (--decline).",
    )
    add_lane_argument(signature)
    answer = signature.add_mutually_exclusive_group(required=True)
    answer.add_argument("--accept", action="store_true", help="the signature matches")
    answer.add_argument("--decline", action="store_true", help="it does not")
    signature.add_argument("--pos-ref-id", metavar="REF", help="only for this transaction")
    signature.add_argument("--timeout", type=seconds, default=30.0, metavar="S", help="(30)")
    signature.set_defaults(handler=client_command(_signature))

    auth = actions.add_parser(
        "auth-code",
        parents=[common],
        help="give the phone authorisation code the terminal asked for",
        description="Give the terminal the 6-character authorisation code obtained by phone.",
    )
    add_lane_argument(auth)
    auth.add_argument("code", metavar="CODE", help="6 letters or digits")
    auth.add_argument("--pos-ref-id", metavar="REF", help="only for this transaction")
    auth.add_argument("--timeout", type=seconds, default=30.0, metavar="S", help="(30)")
    auth.set_defaults(handler=client_command(_auth_code))


# ---------------------------------------------------------------------- progress


class _Progress:
    """The ``on_event`` callback: the terminal's screen and the operator's next step.

    On a terminal (stdin a TTY, no ``--json``) a signature or a phone
    authorisation code is asked for right here, as ``lane pair`` asks for the
    code: the receipt to sign is shown, the answer sent to the lane. Elsewhere
    it says which command answers it (from a second shell, or a script).
    """

    def __init__(self, ctx: Context, iid: str, client: AsyncClient | None = None) -> None:
        self.ctx = ctx
        self.iid = iid
        self.client = client if client is not None and interactive(ctx) else None
        self.last_text: list[str] = []
        self.prompts: set[asyncio.Task[None]] = set()

    def __call__(self, event: bs.Event) -> None:
        ctx, iid = self.ctx, self.iid
        if isinstance(event, bs.CommandAccepted):
            ctx.note("Accepted by the lane; waiting for the terminal…")
        elif isinstance(event, bs.TransactionUpdate):
            text = (event.display_text or "").strip()
            if text and text not in self.last_text[-1:]:
                self.last_text.append(text)
                ctx.note(f"  terminal: {text}")
        elif isinstance(event, bs.SignatureRequired):
            if self.client is not None:
                self._prompt(self._signature(event))
            else:
                ctx.note(
                    f"Signature required — run `multipair tx signature {iid} --accept|--decline`"
                )
        elif isinstance(event, bs.AuthCodeRequired):
            call = f"call {event.phone_number}" if event.phone_number else "call the bank"
            merchant = f" (merchant id {event.merchant_id})" if event.merchant_id else ""
            if self.client is not None:
                ctx.note(f"Authorisation code required — {call}{merchant}")
                self._prompt(self._auth_code(event))
            else:
                ctx.note(
                    f"Authorisation code required — {call}{merchant}, then run "
                    f"`multipair tx auth-code {iid} CODE`"
                )
        elif isinstance(event, bs.Error):
            ctx.note(f"  lane error: {event.reason}: {event.detail}")

    def _prompt(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.prompts.add(task)
        task.add_done_callback(self.prompts.discard)

    def close(self) -> None:
        """The outcome is in: a question still open is moot."""
        for task in list(self.prompts):
            task.cancel()

    async def _signature(self, event: bs.SignatureRequired) -> None:
        assert self.client is not None
        ctx = self.ctx
        ctx.note("Signature required. The receipt to print and have signed:")
        ctx.note((event.merchant_receipt or "(the terminal sent no receipt)").rstrip())
        while True:
            answer = (await read_answer("Does the signature match? [a]ccept / [d]ecline: ")).lower()
            if answer in ("a", "accept", "y", "yes", "d", "decline", "n", "no"):
                break
        accept = answer in ("a", "accept", "y", "yes")
        cls = bs.SignatureAccept if accept else bs.SignatureDecline
        await self._answer(cls(command_id=new_command_id(), pos_ref_id=event.pos_ref_id))
        done = "accepted" if accept else "declined"
        ctx.note(f"Signature {done}; waiting for the outcome…")

    async def _auth_code(self, event: bs.AuthCodeRequired) -> None:
        assert self.client is not None
        while True:
            code = await read_answer("Authorisation code (6 letters or digits): ")
            try:
                command = bs.AuthCode(
                    command_id=new_command_id(), auth_code=code, pos_ref_id=event.pos_ref_id
                )
            except CommandError as exc:
                self.ctx.note(f"  {exc.detail}")
                continue
            break
        await self._answer(command)
        self.ctx.note("Authorisation code given; waiting for the outcome…")

    async def _answer(self, command: bs.Command) -> None:
        assert self.client is not None
        try:
            event = await self.client.send_and_wait(self.iid, command, timeout=30.0)
        except (MultipairError, RedisError) as exc:  # the purchase goes on; say what to do
            self.ctx.note(f"  could not answer ({exc}): answer with `multipair tx` from a shell")
            return
        if isinstance(event, bs.CommandRejected):
            self.ctx.note(f"  the lane refused the answer: {event.reason}: {event.detail}")


def _progress(
    ctx: Context, iid: str, client: AsyncClient | None = None
) -> Callable[[bs.Event], None]:
    """The ``on_event`` callback (see :class:`_Progress`)."""
    return _Progress(ctx, iid, client)


# ---------------------------------------------------------------------- money


async def _money(ctx: Context, client: AsyncClient) -> int:
    """Every money action: send what the action's ``build`` says, show progress, print the
    outcome; 0 approved, 1 declined, 3 unknown."""
    args = ctx.args
    build: Build = args.build
    cls, fields = build(args)
    requested: int | None = fields.get("amount_cents")
    ref: str = args.pos_ref_id or new_pos_ref_id()
    expires = _dt.datetime.now(_dt.UTC) + _dt.timedelta(seconds=args.timeout)
    sent = {"pos_ref_id": ref, "expires_at": expires, **fields}
    try:
        command = cls(command_id=new_command_id(), **sent)
    except CommandError as exc:
        raise Fail(exc.detail) from None
    iid = await resolve_lane(client, args.id)
    await ready_lane(ctx, client, iid)
    ctx.note(f"{cls.type.replace('_', ' ')}{describe(fields)} on lane {iid}, pos_ref_id {ref}")
    ctx.stake = Stake(cls.type.replace("_", " "), iid, ref)
    progress = _Progress(ctx, iid, client)
    try:
        event = await client.send_and_wait(iid, command, timeout=args.timeout, on_event=progress)
    except OutcomeTimeout as exc:
        if ctx.json:
            ctx.emit(
                {
                    "instance_id": iid,
                    "command_id": command.command_id,
                    "pos_ref_id": ref,
                    "tx_type": cls.type,
                    "result": "unknown",
                    "approved": False,
                    "timed_out": True,
                }
            )
        raise Fail(
            f"no outcome within {args.timeout:g}s; the transaction may still complete: check it "
            f"with `multipair tx status {iid} --pos-ref-id {ref}`",
            ExitCode.UNKNOWN,
        ) from exc
    finally:
        progress.close()
    if not isinstance(event, bs.TransactionCompleted | bs.TransactionLookup):
        raise Fail(f"the lane answered {event.type!r} to a {cls.type}", ExitCode.UNKNOWN)
    outcome = Outcome.from_event(event, command_id=command.command_id, pos_ref_id=ref)
    ctx.stake = None
    if ctx.json:
        heading, _ = outcome_heading(outcome.event, requested)
        ctx.emit(
            {
                **_body(outcome.event, receipts=args.receipt),
                "approved": outcome.approved,
                "repeated": outcome.repeated,
                "partial": heading == "APPROVED (PARTIAL)",
                "cancelled": heading == "CANCELLED",
            }
        )
    else:
        _print_outcome(ctx, outcome.event, iid, receipts=args.receipt, requested_cents=requested)
        if outcome.repeated:
            ctx.say("  (answered from the lane's record: this command was sent before)")
    return _exit_for(outcome.result)


def _exit_for(result: str) -> ExitCode:
    if result == "success":
        return ExitCode.OK
    if result == "failed":
        return ExitCode.FAILED
    return ExitCode.UNKNOWN


def _body(event: bs.Event, *, receipts: bool) -> dict[str, object]:
    body = bs.event_body(event)
    if not receipts:
        for name in _RECEIPTS:
            body.pop(name, None)
    return body


_HEADINGS = {"success": "APPROVED", "failed": "DECLINED", "unknown": "UNKNOWN"}
_PARTIAL_CODE: Final = "002"
"""The host's answer to an approval of part of the amount (PROTOCOL.md §7.1)."""
_CANCELLED: Final = frozenset({"TXN_CANCELLED", "TRANSACTION_CANCELLED"})


def outcome_heading(
    event: bs.TransactionCompleted | bs.TransactionLookup, requested_cents: int | None = None
) -> tuple[str, str | None]:
    """The first word of an outcome for people, and a line about what it means (pure).

    ``APPROVED``; ``APPROVED (PARTIAL)`` when the host approved less than was
    asked (code ``002``, or an amount below ``requested_cents``): the rest must
    be paid another way; ``CANCELLED`` for a decline that is a cancel (by the
    POS or the customer), not the card's; ``DECLINED``; ``UNKNOWN``.
    """
    heading = _HEADINGS.get(event.result, event.result.upper())
    if event.result == "success":
        approved = event.amount_cents
        short = requested_cents is not None and approved is not None and approved < requested_cents
        if event.host_response_code == _PARTIAL_CODE or short:
            rest = (
                f"; {format_cents(requested_cents - approved)} of "
                f"{format_cents(requested_cents)} still to pay another way"
                if short and requested_cents is not None and approved is not None
                else ""
            )
            return "APPROVED (PARTIAL)", f"only part of the amount was approved{rest}"
    if event.result == "failed":
        reason = (event.error_reason or "").upper()
        if reason in _CANCELLED or event.host_response_code == "511":
            return "CANCELLED", "cancelled at the terminal or by the POS: no money moved"
    return heading, None


def _print_outcome(
    ctx: Context,
    event: bs.TransactionCompleted | bs.TransactionLookup,
    iid: str,
    *,
    receipts: bool,
    requested_cents: int | None = None,
) -> None:
    heading, meaning = outcome_heading(event, requested_cents)
    what = (event.tx_type or "transaction").replace("_", " ")
    # No amount for what moves no money (account verify, preauth extend: amount_cents 0).
    amount = f" {format_cents(event.amount_cents)}" if event.amount_cents else ""
    ctx.say(f"{heading}  {what}{amount}  pos_ref_id {event.pos_ref_id or '-'}")
    if meaning is not None:
        ctx.say(f"  {meaning}")
    card = " ".join(x for x in (event.scheme_name, event.masked_pan, event.card_entry) if x)
    extras = [
        f"{label} {format_cents(value)}"
        for label, value in (
            ("tip", event.tip_cents),
            ("cash out", event.cashout_cents),
            ("surcharge", event.surcharge_cents),
        )
        if value
    ]
    host = " ".join(x for x in (event.host_response_code, event.host_response_text) if x)
    rows: list[tuple[str, str | None]] = [
        ("also", ", ".join(extras) or None),
        *outcome_rows(event),
        ("host response", host or None),
        ("RRN", event.rrn),
        ("auth code", event.auth_code),
        ("card", card or None),
        ("account", event.account_type),
        ("terminal ref", event.terminal_ref_id),
        ("bank date", " ".join(x for x in (event.bank_date, event.bank_time) if x) or None),
        (
            "error",
            ": ".join(x for x in (event.error_reason, event.error_detail) if x) or None,
        ),
    ]
    for key, value in rows:
        if value:
            ctx.say(f"  {key:<14} {value}")
    if isinstance(event, bs.TransactionCompleted) and event.recovered:
        ctx.say("  (recovered from the terminal after a disconnect or lane restart)")
    if event.result not in ("success", "failed"):
        ctx.say(
            "  Nobody knows whether money moved: check the terminal, or run "
            f"`multipair tx status {iid} --pos-ref-id {event.pos_ref_id}`, before trying again."
        )
    if receipts:
        for name in _RECEIPTS:
            text = getattr(event, name)
            if text:
                ctx.say(f"\n--- {name.replace('_', ' ')} ---\n{text.rstrip()}")


# ---------------------------------------------------------------------- cancel, status


async def _cancel(ctx: Context, client: AsyncClient) -> int:
    iid = await resolve_lane(client, ctx.args.id)
    await ready_lane(ctx, client, iid)
    event = await client.cancel(iid, pos_ref_id=ctx.args.pos_ref_id, timeout=ctx.args.timeout)
    if ctx.json:
        ctx.emit({**bs.event_body(event), "accepted": True})
    else:
        ctx.say(
            "Cancel sent to the terminal; the transaction ends with its own outcome "
            "(declined, or approved if it was past the point of no return)."
        )
    return ExitCode.OK


_NOT_FOUND: Final = "POS_REF_ID_NOT_FOUND"
"""The only lookup failure that proves the terminal never ran the transaction."""


def lookup_state(event: bs.TransactionLookup) -> str:
    """What a ``transaction_lookup`` tells: ``found``, ``not_found``, ``in_progress`` or
    ``unknown`` (the lookup failed for another reason: the outcome is still not known)."""
    if event.found:
        return "found"
    reason = (event.error_reason or "").upper()
    if reason == _NOT_FOUND:
        return "not_found"
    if "IN_PROGRESS" in reason or "NOT_FINISHED" in reason:
        return "in_progress"
    return "unknown"


@dataclasses.dataclass(frozen=True, slots=True)
class RecordAnswer:
    """What ``tx status`` says from the lane's record while the lane is busy."""

    state: str
    """``found`` (completed: its outcome), ``in_progress`` (recorded, not completed) or
    ``not_recorded`` (the lane has no record of it)."""
    event: bs.Event | None = None
    """The recorded ``transaction_completed``, when ``found``."""


def answer_from_record(record: TxRecord | None) -> RecordAnswer:
    """``tx status`` on a busy lane (pure): the lane's record answers at once.

    A lookup sent to a lane that runs a transaction (or a pairing) would wait
    its turn behind it, up to ``--timeout``; the record says as much now. A
    completed record holds the published outcome; one not completed is the
    transaction in progress (or queued); no record proves nothing (records
    expire after 30 days, a restore loses the newest), so it stays unknown.
    """
    if record is None:
        return RecordAnswer("not_recorded")
    if record.completed:
        event = record.outcome_event()
        if isinstance(event, bs.TransactionCompleted):
            return RecordAnswer("found", event)
    return RecordAnswer("in_progress")


async def _status(ctx: Context, client: AsyncClient) -> int:
    """``tx status``: 0 approved, 1 declined or never ran (``POS_REF_ID_NOT_FOUND``), 3 still
    running on the terminal, or not known (the terminal could not say)."""
    iid = await resolve_lane(client, ctx.args.id)
    info = await ready_lane(ctx, client, iid)
    ref: str = ctx.args.pos_ref_id
    if info.flow not in (None, bs.Flow.IDLE):
        return await _status_from_record(ctx, client, iid, ref, info.flow)
    event = await client.get_transaction(iid, ref, timeout=ctx.args.timeout)
    state = lookup_state(event)
    if ctx.json:
        ctx.emit(
            {
                **_body(event, receipts=ctx.args.receipt),
                "approved": event.found and event.result == "success",
                "in_progress": state == "in_progress",
            }
        )
    elif state == "found":
        _print_outcome(ctx, event, iid, receipts=ctx.args.receipt)
    else:
        ctx.say(_lookup_failure_line(event, ref, state))
    if state == "found":
        return _exit_for(event.result)
    return ExitCode.FAILED if state == "not_found" else ExitCode.UNKNOWN


async def _status_from_record(
    ctx: Context, client: AsyncClient, iid: str, ref: str, flow: str
) -> int:
    """The lane is busy (``flow`` not idle): answer from its record, at once."""
    answer = answer_from_record(await client.transaction_record(iid, ref))
    busy = f"the lane is busy ({flow}), so the terminal was not asked"
    if ctx.json:
        body: dict[str, object] = (
            _body(answer.event, receipts=ctx.args.receipt)
            if answer.event is not None
            else {"type": "transaction_lookup", "instance_id": iid, "pos_ref_id": ref}
        )
        found = answer.event is not None
        result = getattr(answer.event, "result", "unknown")
        ctx.emit(
            {
                **body,
                "found": found,
                "result": result,
                "approved": found and result == "success",
                "in_progress": answer.state == "in_progress",
                "source": "record",
                "lane_flow": flow,
            }
        )
    if isinstance(answer.event, bs.TransactionCompleted):
        if not ctx.json:
            _print_outcome(ctx, answer.event, iid, receipts=ctx.args.receipt)
            ctx.say(f"  (from the lane's record: {busy})")
        return _exit_for(answer.event.result)
    if not ctx.json:
        if answer.state == "in_progress":
            ctx.say(
                f"IN PROGRESS  {ref} is recorded and not finished ({busy}); the outcome is not "
                "known yet: ask again when the lane is idle, never re-send it"
            )
        else:
            ctx.say(
                f"UNKNOWN  the lane has no record of {ref} ({busy}); ask again when the lane "
                "is idle: the terminal has the last word"
            )
    return ExitCode.UNKNOWN


def _lookup_failure_line(event: bs.TransactionLookup, ref: str, state: str) -> str:
    if state == "not_found":
        return f"NOT FOUND  the terminal has no transaction {ref}"
    why = ": ".join(x for x in (event.error_reason, event.error_detail) if x) or "no reason given"
    if state == "in_progress":
        return (
            f"IN PROGRESS  the terminal has not finished ({why}); the outcome of {ref} is not "
            "known yet: ask again when the terminal is idle, never re-send it"
        )
    return (
        f"UNKNOWN  the terminal could not look up {ref} ({why}); the outcome is still unknown: "
        "ask again later, never re-send it"
    )


# ---------------------------------------------------------------------- settle, enquiry


async def _settle(ctx: Context, client: AsyncClient) -> int:
    iid = await resolve_lane(client, ctx.args.id)
    await ready_lane(ctx, client, iid)
    enquiry = ctx.args.settle == "enquiry"
    what = "settlement enquiry" if enquiry else "settlement"
    ctx.note(f"{what} on lane {iid}")
    ctx.stake = Stake(what, iid, check=f"multipair tx enquiry {iid}")
    method = client.settlement_enquiry if enquiry else client.settle
    event = await method(iid, timeout=ctx.args.timeout, on_event=_progress(ctx, iid))
    ctx.stake = None
    if ctx.json:
        body = bs.event_body(event)
        if not ctx.args.receipt:
            body.pop("merchant_receipt", None)
        ctx.emit(body)
        return _exit_for(event.result)
    heading = {"success": "SETTLED", "failed": "SETTLEMENT FAILED"}.get(event.result, "UNKNOWN")
    if enquiry:
        heading = {"success": "TOTALS", "failed": "ENQUIRY FAILED"}.get(event.result, "UNKNOWN")
    ctx.say(f"{heading}  lane {iid}")
    host = " ".join(x for x in (event.host_response_code, event.host_response_text) if x)
    total = (
        f"{_count(event.accumulated_total_count)}, "
        f"{format_cents(event.accumulated_total_value_cents)}"
        if event.accumulated_total_count is not None
        and event.accumulated_total_value_cents is not None
        else None
    )
    for key, value in (
        ("host response", host or None),
        ("total", total),
        ("terminal id", event.terminal_id),
        ("bank date", " ".join(x for x in (event.bank_date, event.bank_time) if x) or None),
        ("error", ": ".join(x for x in (event.error_reason, event.error_detail) if x) or None),
    ):
        if value:
            ctx.say(f"  {key:<14} {value}")
    for scheme in event.schemes:
        ctx.say(f"  {_scheme_line(scheme)}")
    if ctx.args.receipt and event.merchant_receipt:
        ctx.say(f"\n--- merchant receipt ---\n{event.merchant_receipt.rstrip()}")
    return _exit_for(event.result)


def _scheme_line(scheme: dict[str, Any]) -> str:
    """One card scheme's settlement totals (the terminal's numbers may be text)."""
    name = str(scheme.get("scheme_name") or "scheme")
    count = scheme.get("total_count")
    value = scheme.get("total_value_cents", scheme.get("total_value"))
    try:
        money = format_cents(int(value)) if value is not None else "-"
    except (TypeError, ValueError):
        money = str(value)
    by_acquirer = scheme.get("settle_by_acquirer")
    note = "" if by_acquirer in (None, True, "Yes") else "  (not settled by this acquirer)"
    return f"{name:<14} {_count(count)}, {money}{note}"


def _count(count: object) -> str:
    if count is None:
        return "- transactions"
    return f"{count} transaction" + ("" if str(count) == "1" else "s")


# ---------------------------------------------------------------------- signature, auth code


async def _signature(ctx: Context, client: AsyncClient) -> int:
    iid = await resolve_lane(client, ctx.args.id)
    await ready_lane(ctx, client, iid)
    cls = bs.SignatureAccept if ctx.args.accept else bs.SignatureDecline
    command = cls(command_id=new_command_id(), pos_ref_id=ctx.args.pos_ref_id)
    done = "signature accepted" if ctx.args.accept else "signature declined"
    return await _control(ctx, client, iid, command, done)


async def _auth_code(ctx: Context, client: AsyncClient) -> int:
    iid = await resolve_lane(client, ctx.args.id)
    await ready_lane(ctx, client, iid)
    try:
        command = bs.AuthCode(
            command_id=new_command_id(), auth_code=ctx.args.code, pos_ref_id=ctx.args.pos_ref_id
        )
    except CommandError as exc:
        raise Fail(exc.detail) from None
    return await _control(ctx, client, iid, command, "authorisation code given")


async def _control(
    ctx: Context, client: AsyncClient, iid: str, command: bs.Command, done: str
) -> int:

    event = await client.send_and_wait(iid, command, timeout=ctx.args.timeout)
    if ctx.json:
        ctx.emit({**bs.event_body(event), "accepted": True})
    else:
        ctx.say(f"OK: {done}; the transaction goes on (its outcome goes to whoever waits for it).")
    return ExitCode.OK
