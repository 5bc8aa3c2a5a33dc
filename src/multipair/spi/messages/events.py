"""Every event name on the wire and every kind of transaction (PROTOCOL.md Appendix B, §7).

One enum per concept (STYLE.md 14): :class:`Event` names messages, :class:`TxType`
names what a POS runs; each request class carries both as class variables.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Event", "TxType"]


class Event(StrEnum):
    """Every event name on the wire (Appendix B, §7.23, §13.10)."""

    # Pairing, keys, liveness (§4, §5)
    PAIR_REQUEST = "pair_request"
    KEY_REQUEST = "key_request"
    KEY_RESPONSE = "key_response"
    KEY_CHECK = "key_check"
    PAIR_RESPONSE = "pair_response"
    DROP_KEYS = "drop_keys"
    LOGIN_REQUEST = "login_request"
    LOGIN_RESPONSE = "login_response"
    PING = "ping"
    PONG = "pong"
    REQUEST_USE_NEXT_KEYS = "request_use_next_keys"
    RESPONSE_USE_NEXT_KEYS = "response_use_next_keys"
    # Transactions (§7.2-7.17)
    PURCHASE = "purchase"
    PURCHASE_RESPONSE = "purchase_response"
    REFUND = "refund"
    REFUND_RESPONSE = "refund_response"
    CASH = "cash"
    CASH_RESPONSE = "cash_response"
    MOTO_PURCHASE = "moto_purchase"
    MOTO_PURCHASE_RESPONSE = "moto_purchase_response"
    CANCEL_TRANSACTION = "cancel_transaction"
    CANCEL_RESPONSE = "cancel_response"
    SIGNATURE_REQUIRED = "signature_required"
    SIGNATURE_ACCEPT = "signature_accept"
    SIGNATURE_DECLINE = "signature_decline"
    AUTHORISATION_CODE_REQUIRED = "authorisation_code_required"
    AUTHORISATION_CODE_ADVICE = "authorisation_code_advice"
    TXN_UPDATE_MESSAGE = "txn_update_message"
    GET_TRANSACTION = "get_transaction"
    GET_TRANSACTION_RESPONSE = "get_transaction_response"
    GET_LAST_TRANSACTION = "get_last_transaction"
    LAST_TRANSACTION = "last_transaction"
    REVERSE_TRANSACTION = "reverse_transaction"
    REVERSE_TRANSACTION_RESPONSE = "reverse_transaction_response"
    SETTLE = "settle"
    SETTLE_RESPONSE = "settle_response"
    SETTLEMENT_ENQUIRY = "settlement_enquiry"
    SETTLEMENT_ENQUIRY_RESPONSE = "settlement_enquiry_response"
    ACCOUNT_VERIFY = "account_verify"
    ACCOUNT_VERIFY_RESPONSE = "account_verify_response"
    PREAUTH = "preauth"
    PREAUTH_RESPONSE = "preauth_response"
    PREAUTH_TOPUP = "preauth_topup"
    PREAUTH_TOPUP_RESPONSE = "preauth_topup_response"
    PREAUTH_PARTIAL_CANCELLATION = "preauth_partial_cancellation"
    PREAUTH_PARTIAL_CANCELLATION_RESPONSE = "preauth_partial_cancellation_response"
    PREAUTH_EXTEND = "preauth_extend"
    PREAUTH_EXTEND_RESPONSE = "preauth_extend_response"
    PREAUTH_CANCELLATION = "preauth_cancellation"
    PREAUTH_CANCELLATION_RESPONSE = "preauth_cancellation_response"
    COMPLETION = "completion"
    COMPLETION_RESPONSE = "completion_response"
    PURCHASE_ZIP = "purchase_zip"
    PURCHASE_ZIP_RESPONSE = "purchase_zip_response"
    REFUND_ZIP = "refund_zip"
    REFUND_ZIP_RESPONSE = "refund_zip_response"
    # Terminal services (§7.18-7.21)
    PRINT = "print"
    PRINT_RESPONSE = "print_response"
    GET_TERMINAL_STATUS = "get_terminal_status"
    TERMINAL_STATUS = "terminal_status"
    BATTERY_LEVEL_CHANGED = "battery_level_changed"
    GET_TERMINAL_CONFIGURATION = "get_terminal_configuration"
    TERMINAL_CONFIGURATION = "terminal_configuration"
    SET_POS_INFO = "set_pos_info"
    SET_POS_INFO_RESPONSE = "set_pos_info_response"
    # Pay at table (§7.23)
    GET_TABLE_CONFIG = "get_table_config"
    SET_TABLE_CONFIG = "set_table_config"
    GET_BILL_DETAILS = "get_bill_details"
    BILL_DETAILS = "bill_details"
    BILL_PAYMENT = "bill_payment"
    GET_OPEN_TABLES = "get_open_tables"
    OPEN_TABLES = "open_tables"
    BILL_PAYMENT_FLOW_ENDED = "bill_payment_flow_ended"
    BILL_PAYMENT_FLOW_ENDED_ACK = "bill_payment_flow_ended_ack"
    # 2.9.12 (§13.10) and errors (§9)
    PROVISION_POS_SPI_TOKEN = "provision_pos_spi_token"  # noqa: S105 an event name, not a secret
    ERROR = "error"


class TxType(StrEnum):
    """The kind of transaction a POS runs; one request class each (:data:`TRANSACTION_REQUESTS`)."""

    PURCHASE = "purchase"
    REFUND = "refund"
    CASHOUT = "cashout"
    MOTO = "moto"
    SETTLE = "settle"
    SETTLEMENT_ENQUIRY = "settlement_enquiry"
    GET_TRANSACTION = "get_transaction"
    GET_LAST_TRANSACTION = "get_last_transaction"
    REVERSAL = "reversal"
    ACCOUNT_VERIFY = "account_verify"
    PREAUTH = "preauth"
    PREAUTH_TOPUP = "preauth_topup"
    PREAUTH_PARTIAL_CANCELLATION = "preauth_partial_cancellation"
    PREAUTH_EXTEND = "preauth_extend"
    PREAUTH_CANCELLATION = "preauth_cancellation"
    COMPLETION = "completion"
    ZIP_PURCHASE = "zip_purchase"
    ZIP_REFUND = "zip_refund"
