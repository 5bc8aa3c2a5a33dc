"""The simulated bank behind each virtual terminal: what a transaction's answer says.

The terminal session (:mod:`multipair.spi.terminal`) decides *when* a
transaction ends; the simulator's customer decides *how* (the cents table of
:mod:`multipair.simulator.rules`, played by :mod:`multipair.simulator.virtual`,
as an :class:`~multipair.spi.terminal.Outcome`); :class:`Bank` writes the
response ``data`` a real terminal sends for that outcome: card and host
fields, receipts, amounts, preauth balances, settlement totals (§7.1,
§7.14-7.17). It is the session's injected responder, so ``multipair.spi``
never depends on the simulator.
"""

from __future__ import annotations

import datetime as _dt
from typing import Final

from multipair.spi import messages as m
from multipair.spi.envelope import JsonObject
from multipair.spi.terminal import (
    HOST_DETAIL,
    PRINTERLESS_MODELS,
    Outcome,
    PreauthBalance,
    ReceivedTransaction,
    SettlementBatch,
    TerminalOptions,
    TerminalProfile,
    TerminalState,
)

__all__ = ["Bank", "main_amount"]

_TRANSACTION_TYPES: Final[dict[str, str]] = {
    "purchase": "PURCHASE",
    "refund": "REFUND",
    "cash": "CASH",
    "moto_purchase": "MOTO",
    "account_verify": "VERIFY",
    "preauth": "PRE-AUTH",
    "preauth_topup": "TOPUP",
    "preauth_partial_cancellation": "CANCEL",
    "preauth_extend": "PRE-AUTH EXT",
    "preauth_cancellation": "PRE-AUTH CANCEL",
    "completion": "PCOMP",
    "purchase_zip": "PURCHASE",
    "refund_zip": "REFUND",
    "reverse_transaction": "REVERSAL",
    "settle": "SETTLE",
    "settlement_enquiry": "SETTLEMENT ENQUIRY",
}
"""The ``transaction_type`` a terminal reports for each request event."""

_PREAUTH_EVENTS: Final = frozenset(
    {
        "preauth_topup",
        "preauth_partial_cancellation",
        "preauth_extend",
        "preauth_cancellation",
        "completion",
    }
)
_SETTLE_SCHEMES: Final = ("Debit", "MasterCard", "Visa", "Amex", "Diners", "JCB", "UnionPay")


def main_amount(request: m.TransactionRequest) -> int:
    """The request's main amount in cents (purchase, refund, cash, preauth, top-up …
    amount), the one the outcome rules read; 0 for requests without one."""
    if isinstance(request, m.PurchaseRequest | m.MotoPurchaseRequest | m.ZipPurchaseRequest):
        return request.purchase_amount
    if isinstance(request, m.RefundRequest | m.ZipRefundRequest):
        return request.refund_amount
    if isinstance(request, m.CashoutRequest):
        return request.cash_amount
    if isinstance(request, m.PreauthOpenRequest):
        return request.preauth_amount
    if isinstance(request, m.PreauthTopupRequest):
        return request.topup_amount
    if isinstance(request, m.PreauthPartialCancellationRequest):
        return request.preauth_cancel_amount
    if isinstance(request, m.PreauthCompletionRequest):
        return request.completion_amount
    return 0


def _tip(request: m.TransactionRequest) -> int:
    return request.tip_amount if isinstance(request, m.PurchaseRequest) else 0


def _surcharge(request: m.TransactionRequest) -> int:
    if isinstance(
        request,
        m.PurchaseRequest | m.CashoutRequest | m.MotoPurchaseRequest | m.PreauthCompletionRequest,
    ):
        return request.surcharge_amount or 0  # a cashout's null surcharge is none (§7.4)
    return 0


def _preauth_id(request: m.TransactionRequest) -> str | None:
    if isinstance(
        request,
        m.PreauthTopupRequest
        | m.PreauthPartialCancellationRequest
        | m.PreauthExtendRequest
        | m.PreauthCancellationRequest
        | m.PreauthCompletionRequest,
    ):
        return request.preauth_id
    return None


def _receipt_options(request: m.TransactionRequest) -> m.ReceiptOptions:
    options = getattr(request, "options", None)
    return options if isinstance(options, m.ReceiptOptions) else m.ReceiptOptions()


def _prints_merchant_copy(request: m.TransactionRequest) -> bool:
    config = getattr(request, "config", None)
    return isinstance(config, m.PrintingConfig) and config.print_merchant_copy


def _money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}AUD{cents // 100}.{cents % 100:02d}"


class Bank:
    """The simulated bank: the response data a real terminal sends (§7.1, §7.14-7.17),
    fixtures as templates. A :class:`~multipair.spi.terminal.Responder`; pass the class
    itself as a terminal's ``responder``.

    Kept apart from the session: the session decides *when* to answer, this
    decides *what* the answer says, and keeps the bank-side state (STANs,
    preauth balances, the settlement batch) in the :class:`TerminalState`.
    """

    def __init__(
        self, state: TerminalState, profile: TerminalProfile, options: TerminalOptions
    ) -> None:
        self.state = state
        self.profile = profile
        self.options = options

    @property
    def has_printer(self) -> bool:
        """False for the printer-less models (§7.1)."""
        return self.options.terminal_model.upper() not in PRINTERLESS_MODELS

    def _next_sequence(self) -> int:
        self.state.sequence += 1
        return self.state.sequence

    def _receipt(self, tx: ReceivedTransaction, outcome: Outcome, amount: int, copy: str) -> str:
        texts = dict(_receipt_options(tx.request).items())
        header = texts[f"{copy}_receipt_header"]
        footer = texts[f"{copy}_receipt_footer"]
        lines = [
            *([header] if header else []),
            self.profile.merchant_acquirer,
            self.profile.merchant_name,
            "",
            f"{_TRANSACTION_TYPES[tx.event]:<12}{_money(amount):>9}",
            "",
            f"   ({outcome.host_response_code}) {outcome.host_response_text}",
            "",
            *(["Partial Approval", ""] if outcome.partial_amount is not None else []),
            f"  *{copy.upper()} COPY*",
            *([footer] if footer else []),
            "",
        ]
        return "\r\n".join(lines)

    def signature_receipt(self, tx: ReceivedTransaction) -> str:
        """The merchant receipt sent with ``signature_required`` (§7.7)."""
        lines = [
            self.profile.merchant_acquirer,
            self.profile.merchant_name,
            "",
            f"{_TRANSACTION_TYPES[tx.event]:<12}{_money(main_amount(tx.request)):>9}",
            "",
            "SIGNATURE:",
            "",
            "________________________",
            "",
        ]
        return "\r\n".join(lines)

    def _card_fields(self, tx: ReceivedTransaction, outcome: Outcome, now: float) -> JsonObject:
        moment = _dt.datetime.fromtimestamp(now, tz=_dt.UTC)
        seq = self._next_sequence()
        stan = f"{seq % 1_000_000:06d}"
        moto = tx.event == "moto_purchase"
        approved = outcome.approved
        auth = outcome.auth_code or (f"{(seq * 7919) % 1_000_000:06d}" if approved else "")
        fields: JsonObject = {
            "account_type": self.profile.account_type,
            "auth_code": auth,
            "bank_date": moment.strftime("%d%m%Y"),
            "bank_settlement_date": moment.strftime("%d%m%Y"),
            "bank_time": moment.strftime("%H%M%S"),
            "card_entry": "MANUAL_PHONE" if moto else "EMV_CTLS",
            "currency": "AUD",
            "emv_actioncode": "TC" if approved else "AAC",
            "emv_actioncode_values": f"{(seq * 2654435761) % (1 << 64):016X}",
            "emv_pix": "1010",
            "emv_rid": "A000000003",
            "emv_tsi": "E800",
            "emv_tvr": "0000000000",
            "expiry_date": self.profile.expiry_date,
            "host_response_code": outcome.host_response_code,
            "host_response_text": outcome.host_response_text,
            "informative_text": "                ",
            "masked_pan": self.profile.masked_pan,
            "merchant_acquirer": self.profile.merchant_acquirer,
            "merchant_addr": self.profile.merchant_addr,
            "merchant_city": self.profile.merchant_city,
            "merchant_country": self.profile.merchant_country,
            "merchant_id": self.profile.merchant_id,
            "merchant_name": self.profile.merchant_name,
            "merchant_postcode": self.profile.merchant_postcode,
            "online_indicator": "Y",
            "rrn": moment.strftime("%y%m%d") + stan,
            "scheme_app_name": self.profile.scheme_name,
            "scheme_name": self.profile.scheme_name,
            "stan": stan,
            "terminal_id": self.profile.terminal_id,
            "terminal_ref_id": f"{self.profile.merchant_id}_{moment:%Y%m%d%H%M%S}{stan}",
            "transaction_type": _TRANSACTION_TYPES[tx.event],
        }
        return fields

    def response_data(self, tx: ReceivedTransaction, outcome: Outcome, now: float) -> JsonObject:
        """The complete response ``data`` for ``tx`` finished with ``outcome``."""
        if tx.event in ("settle", "settlement_enquiry"):
            return self._settlement_data(tx, outcome, now)
        if tx.event == "reverse_transaction":
            return self._reversal_data(tx, outcome)
        failure = self._preauth_check(tx) if outcome.approved else None
        if failure is not None:
            reason, detail = failure
            outcome = Outcome(
                approved=False,
                host_response_code="12",
                host_response_text="INVALID TRANSACTION",
                error_reason=reason,
                error_detail=detail,
            )
        amount = main_amount(tx.request)
        if outcome.approved and outcome.partial_amount is not None:
            amount = outcome.partial_amount
        data: JsonObject = {"success": outcome.approved, "pos_ref_id": tx.pos_ref_id}
        data.update(self._card_fields(tx, outcome, now))
        printed = self.has_printer and _prints_merchant_copy(tx.request)
        data["customer_receipt"] = self._receipt(tx, outcome, amount, "customer")
        data["customer_receipt_printed"] = False
        data["merchant_receipt"] = self._receipt(tx, outcome, amount, "merchant")
        data["merchant_receipt_printed"] = printed
        data.update(self._amount_fields(tx, amount, outcome.approved))
        if tx.event in ("purchase_zip", "refund_zip"):
            data["host_response_text"] = (
                "TRANS APPROVED" if outcome.approved else (outcome.host_response_text)
            )
            zip_data: JsonObject = {
                "location_id": "1234",
                "receipt_number": f"{self.state.sequence:06d}",
            }
            if isinstance(tx.request, m.ZipPurchaseRequest):
                zip_data["store_code"] = tx.request.store_code
            elif isinstance(tx.request, m.ZipRefundRequest):
                zip_data["original_receipt_number"] = tx.request.original_receipt_number
            data["zip_data"] = zip_data
        if not outcome.approved:
            data["error_reason"] = outcome.error_reason or "HOST_DECLINED"
            data["error_detail"] = outcome.error_detail or HOST_DETAIL
        if outcome.approved:
            self._apply_to_batch(tx, amount)
        return data

    def _amount_fields(self, tx: ReceivedTransaction, amount: int, approved: bool) -> JsonObject:
        event = tx.event
        tip, surcharge = _tip(tx.request), _surcharge(tx.request)
        if event in ("purchase", "purchase_zip"):
            # The simulated customer declines any cashout prompt.
            cash = tx.request.cash_amount if isinstance(tx.request, m.PurchaseRequest) else 0
            return {
                "purchase_amount": amount,
                "tip_amount": tip,
                "surcharge_amount": surcharge,
                "cash_amount": cash,
                "bank_noncash_amount": amount + tip + surcharge,
                "bank_cash_amount": cash,
            }
        if event in ("refund", "refund_zip"):
            return {"refund_amount": amount, "bank_noncash_amount": amount}
        if event == "cash":
            return {
                "cash_amount": amount,
                "surcharge_amount": surcharge,
                "bank_cash_amount": amount,
                "bank_noncash_amount": surcharge,
            }
        if event == "moto_purchase":
            return {
                "purchase_amount": amount,
                "surcharge_amount": surcharge,
                "bank_noncash_amount": amount + surcharge,
            }
        if event == "account_verify":
            return {}
        return self._preauth_fields(tx, amount, approved)

    def _preauth_check(self, tx: ReceivedTransaction) -> tuple[str, str] | None:
        if tx.event not in _PREAUTH_EVENTS:
            return None
        pid = _preauth_id(tx.request)
        if not pid:
            return ("MISSING_ARGUMENTS", "Pre Auth ID is missing")
        found = self.state.preauths.get(pid)
        if found is None:
            return ("PRE_AUTH_ID_NOT_FOUND", f"Pre Auth ID {pid} was not found")
        if not found.open:
            return (
                "PRE_AUTH_ID_ALREADY_COMPLETED",
                f"Pre Auth ID {pid} has already been completed",
            )
        if tx.event == "preauth_partial_cancellation" and main_amount(tx.request) > found.balance:
            return ("INVALID_ARGUMENTS", f"Cancel amount exceeds the balance of Pre Auth ID {pid}")
        return None

    def _preauth_fields(self, tx: ReceivedTransaction, amount: int, approved: bool) -> JsonObject:
        event = tx.event
        if event == "preauth":
            if not approved:
                return {"preauth_amount": amount}
            return {"preauth_id": self.open_preauth(amount), "preauth_amount": amount}
        pid = _preauth_id(tx.request) or ""
        found = self.state.preauths.get(pid)
        before = found.balance if found is not None else 0
        fields: JsonObject = {"preauth_id": pid}
        after = before
        if event == "preauth_topup":
            after = before + amount
            fields.update(topup_amount=amount, existing_preauth_amount=before, balance_amount=after)
        elif event == "preauth_partial_cancellation":
            after = before - amount
            fields.update(
                preauth_cancel_amount=amount, existing_preauth_amount=before, balance_amount=after
            )
        elif event == "preauth_extend":
            fields.update(existing_preauth_amount=before, balance_amount=before)
        elif event == "preauth_cancellation":
            after = 0
            fields.update(preauth_amount=before)
        elif event == "completion":
            after = 0
            fields.update(
                completion_amount=amount,
                surcharge_amount=_surcharge(tx.request),
                bank_noncash_amount=amount + _surcharge(tx.request),
            )
        if approved and found is not None:
            found.balance = after
            if event in ("preauth_cancellation", "completion"):
                found.open = False
        return fields

    def open_preauth(self, amount: int) -> str:
        """Open a preauthorisation of ``amount`` cents at the acquirer; its new ``preauth_id``.

        Also what the control API uses to stand for a preauth opened earlier
        elsewhere (another terminal, another day), which a POS then tops up,
        extends or completes by id (§7.16).
        """
        pid = f"{15765000 + self._next_sequence()}"
        self.state.preauths[pid] = PreauthBalance(balance=amount)
        return pid

    def bill_payment_details(
        self, payment_type: str, amount: int, tip: int, outcome: Outcome, now: float
    ) -> JsonObject:
        """The ``payment_details`` of a pay-at-table ``bill_payment`` (§7.23).

        A card payment is a purchase through this bank (STAN, RRN, auth code,
        ``terminal_ref_id``, receipts, the settlement batch), its data the
        purchase response's without ``pos_ref_id`` (no POS started it), as in
        fixture BillPaymentWithCard.json. A cash payment only has the fields
        a cash entry of the fixtures' payment history shows.
        """
        if payment_type == "cash":
            moment = _dt.datetime.fromtimestamp(now, tz=_dt.UTC)
            stan = f"{self._next_sequence() % 1_000_000:06d}"
            return {
                "bank_date": moment.strftime("%d%m%Y"),
                "bank_time": moment.strftime("%H%M%S"),
                "purchase_amount": amount,
                "terminal_id": self.profile.terminal_id,
                "terminal_ref_id": f"{self.profile.merchant_id}_{moment:%Y%m%d%H%M%S}{stan}C",
                "tip_amount": tip,
            }
        request = m.PurchaseRequest(
            pos_ref_id=f"bill-payment-{self.state.sequence + 1}",
            purchase_amount=amount,
            tip_amount=tip,
        )
        tx = ReceivedTransaction(request=request, message_id="", received_at=now)
        data = self.response_data(tx, outcome, now)
        del data["pos_ref_id"]
        return data

    def _apply_to_batch(self, tx: ReceivedTransaction, amount: int) -> None:
        batch = self.state.batch
        if tx.event in ("purchase", "moto_purchase", "completion", "purchase_zip"):
            batch.purchase_count += 1
            batch.purchase_value += amount + _tip(tx.request) + _surcharge(tx.request)
        elif tx.event in ("refund", "refund_zip"):
            batch.refund_count += 1
            batch.refund_value -= amount
        elif tx.event == "cash":
            batch.cash_count += 1
            batch.cash_value += amount

    def _reversal_data(self, tx: ReceivedTransaction, outcome: Outcome) -> JsonObject:
        original = self.state.find(tx.pos_ref_id) if tx.pos_ref_id else None
        if outcome.approved and original is not None and original.success:
            return {"pos_ref_id": tx.pos_ref_id, "success": True}
        return {
            "pos_ref_id": tx.pos_ref_id,
            "success": False,
            "error_reason": outcome.error_reason or "INTERNAL_ERROR",
            "error_detail": "This transaction could not be reversed",
        }

    def _settlement_data(self, tx: ReceivedTransaction, outcome: Outcome, now: float) -> JsonObject:
        moment = _dt.datetime.fromtimestamp(now, tz=_dt.UTC)
        batch = self.state.batch
        settle = tx.event == "settle"
        total_count = batch.purchase_count + batch.refund_count + batch.cash_count
        total_value = batch.purchase_value + batch.refund_value + batch.cash_value
        schemes: list[JsonObject] = []
        for name in _SETTLE_SCHEMES:
            scheme: JsonObject = {
                "scheme_name": name,
                "settle_by_acquirer": "Yes" if name in ("Debit", "MasterCard", "Visa") else "No",
                "total_count": "0",
                "total_value": "0",
            }
            if name == self.profile.scheme_name:
                scheme.update(
                    total_count=str(total_count),
                    total_value=str(total_value),
                    total_purchase_count=str(batch.purchase_count),
                    total_purchase_value=str(batch.purchase_value),
                    total_refund_count=str(batch.refund_count),
                    total_refund_value=str(batch.refund_value),
                    total_cash_count=str(batch.cash_count),
                    total_cash_value=str(batch.cash_value),
                )
            schemes.append(scheme)
        if outcome.approved:
            code, text = ("941", "CUTOVER COMPLETE") if settle else ("000", "APPROVED")
        else:
            code, text = outcome.host_response_code, outcome.host_response_text
        title = "SETTLEMENT CUTOVER" if settle else "SETTLEMENT INQUIRY"
        receipt = "\r\n".join(
            [
                self.profile.merchant_acquirer,
                self.profile.merchant_name,
                "",
                f" {title}",
                "",
                f"TOTAL   {total_count:<6}{_money(total_value)}",
                "",
                f" ({code}) {text}",
                "",
            ]
        )
        day = moment.strftime("%d%b%y")
        data: JsonObject = {
            "success": outcome.approved,
            "accumulated_purchase_count": str(batch.purchase_count),
            "accumulated_purchase_value": str(batch.purchase_value),
            "accumulated_refund_count": str(batch.refund_count),
            "accumulated_refund_value": str(batch.refund_value),
            "accumulated_cash_count": str(batch.cash_count),
            "accumulated_cash_value": str(batch.cash_value),
            "accumulated_settle_by_acquirer_count": str(total_count),
            "accumulated_settle_by_acquirer_value": str(total_value),
            "accumulated_total_count": str(total_count),
            "accumulated_total_value": str(total_value),
            "bank_date": moment.strftime("%d%m%Y"),
            "bank_time": moment.strftime("%H%M%S"),
            "host_response_code": code,
            "host_response_text": text,
            "merchant_acquirer": self.profile.merchant_acquirer,
            "merchant_address": self.profile.merchant_addr,
            "merchant_city": self.profile.merchant_city,
            "merchant_country": self.profile.merchant_country,
            "merchant_name": self.profile.merchant_name,
            "merchant_postcode": self.profile.merchant_postcode,
            "merchant_receipt": receipt,
            "merchant_receipt_printed": self.has_printer and _prints_merchant_copy(tx.request),
            "schemes": schemes,
            "settlement_period_end_date": day,
            "settlement_period_end_time": moment.strftime("%H:%M"),
            "settlement_period_start_date": day,
            "settlement_period_start_time": "00:00",
            "settlement_triggered_date": day,
            "settlement_triggered_time": moment.strftime("%H:%M:%S"),
            "stan": f"{self._next_sequence() % 1_000_000:06d}",
            "terminal_id": self.profile.terminal_id,
            "transaction_range": "000000-000000",
        }
        if not outcome.approved:
            data["error_reason"] = outcome.error_reason or "HOST_DECLINED"
            data["error_detail"] = outcome.error_detail or HOST_DETAIL
        elif settle:
            self.state.batch = SettlementBatch()
        return data
