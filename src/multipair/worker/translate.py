"""Commands to SPI requests, SPI outcomes to event fields: the lane's pure translations.

Nothing here does I/O or reads a clock: times come in as arguments. The lane
shell (:mod:`multipair.worker.lane`) calls these at the one boundary where
broker commands (docs/broker-schema.md) meet the SPI session's messages
(PROTOCOL.md §7) and back.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from typing import Any, Final

import orjson

from multipair import broker_schema as bs
from multipair.exceptions import LocalProtocolError
from multipair.spi import messages as m
from multipair.spi import pos as spi
from multipair.store.profiles import LaneProfile
from multipair.store.transactions import TxRecord

__all__ = [
    "TX_TYPES",
    "amounts",
    "claim_of",
    "completed_event",
    "config_event",
    "last_tx_event",
    "lookup_event",
    "lookup_fields_from_record",
    "new_record",
    "pairing_end",
    "print_event",
    "settlement_event",
    "spi_request",
    "status_event",
    "tx_fields",
    "tx_kind",
]

TX_TYPES: Final[dict[str, m.TxType]] = {
    "purchase": m.TxType.PURCHASE,
    "refund": m.TxType.REFUND,
    "cashout": m.TxType.CASHOUT,
    "moto_purchase": m.TxType.MOTO,
    "settle": m.TxType.SETTLE,
    "settlement_enquiry": m.TxType.SETTLEMENT_ENQUIRY,
    "reversal": m.TxType.REVERSAL,
    # preauthorisation and zip (PROTOCOL.md §7.16, §7.17)
    "account_verify": m.TxType.ACCOUNT_VERIFY,
    "preauth_open": m.TxType.PREAUTH,
    "preauth_topup": m.TxType.PREAUTH_TOPUP,
    "preauth_partial_cancel": m.TxType.PREAUTH_PARTIAL_CANCELLATION,
    "preauth_extend": m.TxType.PREAUTH_EXTEND,
    "preauth_cancel": m.TxType.PREAUTH_CANCELLATION,
    "preauth_complete": m.TxType.COMPLETION,
    "zip_purchase": m.TxType.ZIP_PURCHASE,
    "zip_refund": m.TxType.ZIP_REFUND,
}
"""Command type -> how the session learns of a transaction of that type."""

_PREAUTH_KINDS: Final[dict[str, str]] = {
    "preauth_open": "PRE-AUTH",
    "preauth_topup": "TOPUP",
    "preauth_partial_cancel": "CANCEL",
    "preauth_extend": "PRE-AUTH EXT",
    "preauth_cancel": "PRE-AUTH CANCEL",
    "preauth_complete": "PCOMP",
}
"""Command type -> the terminal's ``transaction_type`` of its answer (PROTOCOL.md §7.16)."""


def tx_kind(tx_type: m.TxType) -> str:
    """The command type of an SPI transaction type (the counters' ``<type>``)."""
    return next((k for k, v in TX_TYPES.items() if v == tx_type), str(tx_type))


def claim_of(command: bs.Command, entry_id: str) -> bytes:
    """What a command_id claim remembers: the command's type, pos_ref_id and stream entry."""
    return orjson.dumps(
        {
            "type": command.type,
            "pos_ref_id": getattr(command, "pos_ref_id", None),
            "entry_id": entry_id,
        }
    )


def lookup_fields_from_record(record: TxRecord) -> dict[str, Any]:
    """The ``transaction_lookup`` fields that answer a repeated command from its record."""
    published = record.outcome_event()
    fields: dict[str, Any] = {}
    if isinstance(published, bs.TransactionCompleted):
        fields = {
            f.name: getattr(published, f.name)
            for f in dataclasses.fields(bs.TransactionLookup)
            if f.name not in ("instance_id", "at", "command_id", "found")
            and hasattr(published, f.name)
        }
    fields.setdefault("result", str(record.result))
    fields["pos_ref_id"] = record.pos_ref_id
    return fields


def pairing_end(event: spi.PairingFinished) -> bs.PairingState:
    """How a finished pairing is published (``pairing`` event ``state``)."""
    if event.success:
        return bs.PairingState.SUCCEEDED
    return bs.PairingState.CANCELLED if event.cancelled else bs.PairingState.FAILED


def new_record(command: bs.Command, pos_ref_id: str) -> TxRecord:
    """The ``requested`` record of a new transaction command."""
    return TxRecord(
        pos_ref_id=pos_ref_id,
        command_id=command.command_id,
        tx_type=command.type,
        amount_cents=getattr(command, "amount_cents", 0) or 0,
        tip_cents=getattr(command, "tip_cents", 0) or 0,
        cashout_cents=getattr(command, "cashout_cents", 0) or 0,
        surcharge_cents=getattr(command, "surcharge_cents", 0) or 0,
    )


def _options(profile: LaneProfile | None) -> dict[str, Any]:
    if profile is None:
        return {}
    return {
        "config": m.PrintingConfig(
            print_merchant_copy=profile.print_merchant_copy,
            prompt_for_customer_copy=profile.prompt_for_customer_copy,
            print_for_signature_required_transactions=profile.signature_flow_on_eftpos,
        )
    }


def spi_request(command: bs.Command, profile: LaneProfile | None) -> m.TransactionRequest:
    """Map a broker command to the SPI request the session sends (§7.2–§7.15)."""
    opts = _options(profile)
    match command:
        case bs.Purchase():
            return m.PurchaseRequest(
                pos_ref_id=command.pos_ref_id,
                purchase_amount=command.amount_cents,
                tip_amount=command.tip_cents,
                cash_amount=command.cashout_cents,
                prompt_for_cashout=command.prompt_for_cashout,
                surcharge_amount=command.surcharge_cents,
                **opts,
            )
        case bs.Refund():
            return m.RefundRequest(
                pos_ref_id=command.pos_ref_id,
                refund_amount=command.amount_cents,
                suppress_merchant_password=command.suppress_merchant_password,
                **opts,
            )
        case bs.Cashout():
            return m.CashoutRequest(
                pos_ref_id=command.pos_ref_id,
                cash_amount=command.amount_cents,
                surcharge_amount=command.surcharge_cents,
                **opts,
            )
        case bs.MotoPurchase():
            return m.MotoPurchaseRequest(
                pos_ref_id=command.pos_ref_id,
                purchase_amount=command.amount_cents,
                surcharge_amount=command.surcharge_cents,
                suppress_merchant_password=command.suppress_merchant_password,
                **opts,
            )
        case bs.Settle():
            return m.SettleRequest(pos_ref_id=command.pos_ref_id or "", **_settle_opts(profile))
        case bs.SettlementEnquiry():
            return m.SettlementEnquiryRequest(
                pos_ref_id=command.pos_ref_id or "", **_settle_opts(profile)
            )
        case bs.Reversal():
            return m.ReversalRequest(pos_ref_id=command.pos_ref_id)
        case bs.AccountVerify():
            return m.AccountVerifyRequest(pos_ref_id=command.pos_ref_id)  # no options (§7.16)
        case bs.PreauthOpen():
            return m.PreauthOpenRequest(
                pos_ref_id=command.pos_ref_id, preauth_amount=command.amount_cents, **opts
            )
        case bs.PreauthTopup():
            return m.PreauthTopupRequest(
                pos_ref_id=command.pos_ref_id,
                preauth_id=command.preauth_id,
                topup_amount=command.amount_cents,
                **opts,
            )
        case bs.PreauthPartialCancel():
            return m.PreauthPartialCancellationRequest(
                pos_ref_id=command.pos_ref_id,
                preauth_id=command.preauth_id,
                preauth_cancel_amount=command.amount_cents,
                **opts,
            )
        case bs.PreauthExtend():
            return m.PreauthExtendRequest(
                pos_ref_id=command.pos_ref_id, preauth_id=command.preauth_id, **opts
            )
        case bs.PreauthCancel():
            return m.PreauthCancellationRequest(
                pos_ref_id=command.pos_ref_id, preauth_id=command.preauth_id, **opts
            )
        case bs.PreauthComplete():
            return m.PreauthCompletionRequest(
                pos_ref_id=command.pos_ref_id,
                preauth_id=command.preauth_id,
                completion_amount=command.amount_cents,
                surcharge_amount=command.surcharge_cents,
                **opts,
            )
        case bs.ZipPurchase():
            return m.ZipPurchaseRequest(
                pos_ref_id=command.pos_ref_id,
                purchase_amount=command.amount_cents,
                store_code=command.store_code,
                description=command.description,
                **opts,
            )
        case bs.ZipRefund():
            return m.ZipRefundRequest(
                pos_ref_id=command.pos_ref_id,
                refund_amount=command.amount_cents,
                original_receipt_number=command.original_receipt_number,
                **opts,
            )
    raise LocalProtocolError(f"{command.type} has no SPI transaction request")


def _settle_opts(profile: LaneProfile | None) -> dict[str, Any]:
    if profile is None or not profile.print_merchant_copy:
        return {}
    return {"config": m.PrintingConfig(print_merchant_copy=True)}


def tx_fields(response: m.TransactionResponse | None, tx_type: str | None = None) -> dict[str, Any]:
    """The ``transaction_completed`` / ``transaction_lookup`` fields of a terminal response.

    ``tx_type`` is the command type when the lane knows it (its record);
    otherwise a preauthorisation is known by the terminal's ``transaction_type``.
    """
    if response is None:
        return {}
    zip_data = response.zip_data
    return {
        "host_response_code": response.host_response_code,
        "host_response_text": response.host_response_text,
        "rrn": response.rrn,
        "stan": response.stan,
        "auth_code": response.auth_code,
        "account_type": response.account_type,
        "card_entry": response.card_entry,
        "masked_pan": response.masked_pan,
        "scheme_name": response.scheme_name,
        "terminal_id": response.terminal_id,
        "terminal_ref_id": response.terminal_ref_id,
        "merchant_id": response.merchant_id,
        "bank_date": response.bank_date,
        "bank_time": response.bank_time,
        "customer_receipt": response.customer_receipt,
        "merchant_receipt": response.merchant_receipt,
        "customer_receipt_printed": response.customer_receipt_printed,
        "merchant_receipt_printed": response.merchant_receipt_printed,
        "error_reason": response.error_reason,
        "error_detail": response.error_detail,
        "preauth_id": response.preauth_id,
        "transaction_type": response.transaction_type,
        "zip_data": (
            None
            if zip_data is None
            else {k: v for k, v in dataclasses.asdict(zip_data).items() if v is not None}
        ),
        **_balances(response, _preauth_kind(response, tx_type)),
    }


def _preauth_kind(response: m.TransactionResponse, tx_type: str | None) -> str | None:
    """Which row of the §7.16 table the response is: by command type, else by the terminal's."""
    if tx_type is not None:
        return _PREAUTH_KINDS.get(tx_type)
    if response.preauth_id and response.transaction_type in _PREAUTH_KINDS.values():
        return response.transaction_type
    return None


def _balances(response: m.TransactionResponse, kind: str | None) -> dict[str, int | None]:
    """The preauthorisation's balance before and after (PROTOCOL.md §7.16 table).

    Only for an approved preauthorisation transaction: a declined one moved
    nothing, and its amount fields say what was asked, not what is held.
    """
    if kind is None or response.success is not True:
        return {}
    before: int | None
    after: int | None
    match kind:
        case "PRE-AUTH":
            before, after = 0, response.preauth_amount
        case "TOPUP" | "CANCEL" | "PRE-AUTH EXT":
            before, after = response.existing_preauth_amount, response.balance_amount
        case "PCOMP":
            # No better field: the terminal reports what was captured (§7.16).
            before, after = response.completion_amount, 0
        case _:  # "PRE-AUTH CANCEL"
            before, after = response.preauth_amount, 0
    return {"balance_before_cents": before, "balance_after_cents": after}


def _main_amount(response: m.TransactionResponse, tx_type: str | None) -> int | None:
    """The response's main amount: the field the request's amount went into (§7.16)."""
    kind = _preauth_kind(response, tx_type)
    match kind:
        case None:
            return response.purchase_amount or response.refund_amount
        case "PRE-AUTH" | "PRE-AUTH CANCEL":
            return response.preauth_amount  # cancel: the amount released
        case "TOPUP":
            return response.topup_amount
        case "CANCEL":
            return response.preauth_cancel_amount
        case "PCOMP":
            return response.completion_amount
    return None  # "PRE-AUTH EXT" moves no money


def amounts(
    response: m.TransactionResponse | None,
    record: TxRecord | None,
    tx_type: str | None = None,
) -> dict[str, Any]:
    """The amounts of a transaction: the record's, overridden by what the terminal reports.

    ``tx_type`` (default: the record's) picks the response's main amount field.
    """
    fields: dict[str, Any] = {}
    if record is not None:
        fields = {
            "amount_cents": record.amount_cents,
            "tip_cents": record.tip_cents,
            "cashout_cents": record.cashout_cents,
            "surcharge_cents": record.surcharge_cents,
        }
        if tx_type is None:
            tx_type = record.tx_type
    if response is not None:
        for name, value in (
            ("amount_cents", _main_amount(response, tx_type)),
            ("tip_cents", response.tip_amount),
            ("cashout_cents", response.cash_amount),
            ("surcharge_cents", response.surcharge_amount),
        ):
            if value is not None:
                fields[name] = value
    return fields


def completed_event(
    iid: str,
    command_id: str | None,
    done: spi.TransactionCompleted,
    record: TxRecord | None,
    at: _dt.datetime,
) -> bs.Event:
    """The ``transaction_completed`` event of any transaction but a settlement.

    Purchase, refund, cashout, MOTO, reversal, the preauthorisation family,
    account verify and Zip.
    """
    response = done.response if isinstance(done.response, m.TransactionResponse) else None
    tx_type = record.tx_type if record is not None else None
    fields = {**amounts(response, record), **tx_fields(response, tx_type)}
    if response is None:
        fields["error_detail"] = done.message
    return bs.TransactionCompleted(
        instance_id=iid,
        at=at,
        command_id=command_id,
        result=str(done.outcome),
        pos_ref_id=done.pos_ref_id,
        tx_type=record.tx_type if record is not None else str(done.tx_type),
        recovered=done.recovered,
        **fields,
    )


def settlement_event(
    iid: str, command_id: str | None, done: spi.TransactionCompleted, at: _dt.datetime
) -> bs.Event:
    """The ``settlement`` event of a settle or settlement enquiry (§7.14)."""
    response = done.response if isinstance(done.response, m.SettlementResponse) else None
    fields: dict[str, Any] = {}
    if response is not None:
        fields = {
            "host_response_code": response.host_response_code,
            "host_response_text": response.host_response_text,
            "accumulated_total_count": response.accumulated_total_count,
            "accumulated_total_value_cents": response.accumulated_total_value,
            "merchant_receipt": response.merchant_receipt,
            "schemes": tuple(
                {
                    "scheme_name": s.scheme_name,
                    "settle_by_acquirer": s.settle_by_acquirer,
                    "total_count": s.total_count,
                    "total_value_cents": s.total_value,
                }
                for s in response.schemes
            ),
        }
    else:
        fields["error_detail"] = done.message
    return bs.Settlement(
        instance_id=iid,
        at=at,
        command_id=command_id,
        result=str(done.outcome),
        enquiry=done.tx_type is m.TxType.SETTLEMENT_ENQUIRY,
        **fields,
    )


def lookup_event(
    base: dict[str, Any], pos_ref_id: str, response: m.GetTransactionResponse
) -> bs.Event:
    """The ``transaction_lookup`` answer to ``get_transaction`` (§7.10)."""
    tx = response.tx
    found = response.success is True and tx is not None
    result = "unknown"
    if tx is not None and tx.success is not None:
        result = "success" if tx.success else "failed"
    fields = {**amounts(tx, None), **tx_fields(tx)}
    if not found:
        fields["error_reason"] = response.error_reason
        fields["error_detail"] = response.error_detail
    return bs.TransactionLookup(**base, result=result, pos_ref_id=pos_ref_id, found=found, **fields)


def last_tx_event(base: dict[str, Any], response: m.TransactionResponse) -> bs.Event:
    """The ``transaction_lookup`` answer to ``get_last_transaction`` (§7.11)."""
    found = response.retrieved
    result = "unknown"
    if found and response.success is not None:
        result = "success" if response.success else "failed"
    return bs.TransactionLookup(
        **base,
        result=result,
        pos_ref_id=response.pos_ref_id,
        found=found,
        **amounts(response, None),
        **tx_fields(response),
    )


def status_event(base: dict[str, Any], answer: m.TerminalStatus) -> bs.Event:
    """The ``terminal_status`` answer (§7.18)."""
    return bs.TerminalStatusReport(
        **base,
        success=answer.success,
        status=answer.status,
        battery_level=answer.battery_level,
        charging=answer.charging,
    )


def config_event(base: dict[str, Any], answer: m.TerminalConfiguration) -> bs.Event:
    """The ``terminal_configuration`` answer (§7.19)."""
    return bs.TerminalConfigurationReport(
        **base,
        success=answer.success,
        comms_selected=answer.comms_selected,
        merchant_id=answer.merchant_id,
        pa_version=answer.pa_version,
        payment_interface_version=answer.payment_interface_version,
        plugin_version=answer.plugin_version,
        serial_number=answer.serial_number,
        terminal_id=answer.terminal_id,
        terminal_model=answer.terminal_model,
    )


def print_event(base: dict[str, Any], key: str, answer: m.PrintResponse) -> bs.Event:
    """The ``printing`` answer (§7.20)."""
    return bs.Printing(
        **base,
        success=bool(answer.success),
        key=key,
        error_reason=answer.error_reason,
        error_detail=answer.error_detail,
    )
