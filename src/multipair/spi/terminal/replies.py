"""The answers a terminal gives at once, as pure functions of what it knows (§7.6, §7.10-7.20).

Lookups (``get_transaction``, ``get_last_transaction``), terminal services
(status, configuration, print) and the cancel failures. The session decides
when to answer and sends; these decide what the ``data`` says, with all the
error variants a POS must handle (§10 item 15).
"""

from __future__ import annotations

from typing import Final

from multipair.spi.envelope import JsonObject
from multipair.spi.terminal.machines import TxState
from multipair.spi.terminal.state import TerminalOptions, TerminalProfile, TerminalState
from multipair.spi.terminal.transactions import BUSY_DETAIL, ReceivedTransaction

__all__ = [
    "NO_TRANSACTION_TO_CANCEL",
    "PAST_POINT_OF_NO_RETURN",
    "get_transaction_reply",
    "in_progress_reason",
    "last_transaction_reply",
    "print_reply",
    "terminal_configuration",
    "terminal_status",
]

_NO_TX_DETAIL: Final = "No transactions have been performed"

NO_TRANSACTION_TO_CANCEL: Final[JsonObject] = {
    "success": False,
    "error_reason": "NO_TRANSACTION",
    "error_detail": "There is no transaction to cancel",
}
"""The ``error`` event's data for a cancel with nothing running (§7.6)."""

PAST_POINT_OF_NO_RETURN: Final[JsonObject] = {
    "error_reason": "TXN_PAST_POINT_OF_NO_RETURN",
    "error_detail": "Txn has passed the point of no return",
}
"""Why a ``cancel_response`` fails once the card went to the bank (§7.6)."""


def in_progress_reason(prefix: str, tx_state: TxState) -> str:
    """``prefix`` with the ``_AWAITING_…`` suffix the POS's recovery table reads (§7.10 R1-R4)."""
    if tx_state is TxState.AWAITING_SIGNATURE:
        return f"{prefix}_AWAITING_SIGNATURE"
    if tx_state is TxState.AWAITING_AUTH_CODE:
        return f"{prefix}_AWAITING_PHONE_AUTH_CODE"
    return prefix


def _gt_failure(pos_ref_id: object, reason: str, detail: str) -> JsonObject:
    data: JsonObject = {"success": False, "error_reason": reason, "error_detail": detail}
    if isinstance(pos_ref_id, str):
        data["pos_ref_id"] = pos_ref_id
    return data


def get_transaction_reply(
    raw: object,
    *,
    state: TerminalState,
    current: ReceivedTransaction | None,
    tx_state: TxState,
    forced_error: str | None,
) -> JsonObject:
    """``get_transaction_response`` data for the ``pos_ref_id`` value ``raw`` as sent (§7.10).

    A ``pos_ref_id`` must be a printable, non-blank string: a number is
    ``INVALID_ARGUMENTS`` here, stricter than the catalogue's reading.
    """
    if forced_error is not None:
        return _gt_failure(raw, forced_error, "Simulated failure")
    if raw is None:
        return _gt_failure(None, "MISSING_ARGUMENTS", "PosRefId is missing")
    if not isinstance(raw, str) or not raw.strip() or not raw.isprintable():
        return _gt_failure(raw, "INVALID_ARGUMENTS", "PosRefId is invalid")
    if current is not None and current.pos_ref_id == raw:
        reason = in_progress_reason("TRANSACTION_IN_PROGRESS", tx_state)
        return _gt_failure(raw, reason, BUSY_DETAIL)
    if current is not None:
        return _gt_failure(raw, "OPERATION_IN_PROGRESS", BUSY_DETAIL)
    record = state.find(raw)
    if record is None:
        return _gt_failure(raw, "POS_REF_ID_NOT_FOUND", "PosRefId not found")
    return {"success": True, "pos_ref_id": raw, "tx": record.data}


def last_transaction_reply(
    *, state: TerminalState, current: ReceivedTransaction | None, tx_state: TxState
) -> JsonObject:
    """``last_transaction`` data: the last one's fields flat, or why not (§7.11)."""
    if current is not None:
        reply: JsonObject = {
            "success": False,
            "error_reason": in_progress_reason("OPERATION_IN_PROGRESS", tx_state),
            "error_detail": BUSY_DETAIL,
        }
        if current.pos_ref_id is not None:
            reply["pos_ref_id"] = current.pos_ref_id
        return reply
    if state.last_tx is None:
        return {"success": False, "error_reason": "NO_TRANSACTION", "error_detail": _NO_TX_DETAIL}
    return dict(state.last_tx.data)


def terminal_status(options: TerminalOptions, *, busy: bool) -> JsonObject:
    """``terminal_status`` data (§7.18)."""
    return {
        "success": True,
        "status": "BUSY" if busy else "IDLE",
        "battery_level": str(options.battery_level),
        "charging": options.charging,
    }


def terminal_configuration(
    state: TerminalState, profile: TerminalProfile, options: TerminalOptions
) -> JsonObject:
    """``terminal_configuration`` data (§7.19)."""
    return {
        "success": True,
        "comms_selected": "WIFI",
        "merchant_id": profile.merchant_id,
        "pa_version": "SIM-PA-1.0",
        "payment_interface_version": "SIM-PI-1.0",
        "plugin_version": "SIM-PL-1.0",
        "serial_number": state.serial_number,
        "terminal_id": profile.terminal_id,
        "terminal_model": options.terminal_model,
    }


def print_reply(options: TerminalOptions, *, has_printer: bool) -> JsonObject:
    """``print_response`` data (§7.20): a printer-less model cannot print."""
    if has_printer:
        return {"success": True}
    return {
        "success": False,
        "error_reason": "PRINTER_NOT_AVAILABLE",
        "error_detail": f"Terminal model {options.terminal_model} has no printer",
    }
