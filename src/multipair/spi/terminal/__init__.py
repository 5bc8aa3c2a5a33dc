"""The terminal side of SPI, sans I/O: what a simulated EFTPOS terminal decides.

Rules this package keeps (PROTOCOL.md §10, §13.16):

- It does no I/O and reads no clock. The caller feeds websocket text and
  ``now`` (seconds since the epoch) in, and takes events
  (:meth:`Terminal.events_received`), frames to send
  (:meth:`Terminal.data_to_send`) and the next deadline
  (:meth:`Terminal.next_deadline`) out, like websockets' ``protocol.py``.
- Three state machines, each a table (:mod:`.machines`): the link
  (:class:`LinkState`), pairing (:class:`PairingState`) and the current
  transaction (:class:`TxState`). A move the table does not allow raises
  :class:`LocalProtocolError`; that is the caller's bug (e.g. "confirm
  pairing" when no pairing waits).
- Nothing the POS sends can make it raise: bad frames, tampered HMACs,
  unknown events and malformed fields become :class:`FrameRejected` or
  :class:`UnexpectedMessage` events, counted in :class:`TerminalCounters`;
  a transaction request the message catalogue cannot read is refused
  (:mod:`.transactions`).
- Every reply echoes the request's id and ``pos_ref_id`` (§2.5, §13.9);
  frames go out with upper-case ``enc`` and ``hmac`` (§3.2) and no ``pos_id``.
- The caller (the simulated customer, bank and merchant) chooses outcomes:
  the terminal never approves or declines on its own, except where the
  protocol leaves no choice (busy, cancel, lookups). What an answer says is
  the injected :class:`Responder`'s (the simulator's bank).
- What a terminal keeps across restarts is :class:`TerminalState`, which
  round-trips through JSON (secrets included: it is the terminal's own
  storage, so the file must be protected by whoever writes it).

- Pay at table is the one flow the terminal starts (§7.23): its requests
  stay pending until a reply with the same id (the flow-ended ack: the same
  ``bill_id``) arrives or the caller abandons them (:mod:`.pay_at_table`).

Rooms: :mod:`.session` (the :class:`Terminal` class) on :mod:`.core` (its
plumbing), :mod:`.machines`, :mod:`.state`, :mod:`.transactions`,
:mod:`.pay_at_table`, :mod:`.replies`, :mod:`.events`; shared with the POS session:
:mod:`multipair.spi.common`.
"""

from __future__ import annotations

from multipair.spi.common import PRINTERLESS_MODELS, CloseConnection, FrameRejected
from multipair.spi.terminal.events import (
    AuthCodeReceived,
    CancelRequested,
    KeysRolled,
    MessageIn,
    MessageOut,
    Paired,
    PairingCodeReady,
    PairingFailed,
    PairingRequested,
    PayAtTableAnswered,
    PosIdMismatch,
    PosInfoReceived,
    PrintRequested,
    SignatureDecided,
    TableConfigReceived,
    TerminalEvent,
    TransactionFinished,
    TransactionRefused,
    TransactionRequested,
    UnexpectedMessage,
    Unpaired,
)
from multipair.spi.terminal.machines import LinkState, PairingState, TxState
from multipair.spi.terminal.pay_at_table import PayAtTable, PendingPatRequest
from multipair.spi.terminal.session import Terminal
from multipair.spi.terminal.state import (
    HISTORY_LIMIT,
    PreauthBalance,
    SettlementBatch,
    TerminalCounters,
    TerminalOptions,
    TerminalProfile,
    TerminalState,
    TransactionRecord,
)
from multipair.spi.terminal.transactions import (
    BUSY_DETAIL,
    HOST_DETAIL,
    TRANSACTION_EVENTS,
    Outcome,
    ReceivedTransaction,
    Responder,
    ResponderFactory,
)

__all__ = [
    "BUSY_DETAIL",
    "HISTORY_LIMIT",
    "HOST_DETAIL",
    "PRINTERLESS_MODELS",
    "TRANSACTION_EVENTS",
    "AuthCodeReceived",
    "CancelRequested",
    "CloseConnection",
    "FrameRejected",
    "KeysRolled",
    "LinkState",
    "MessageIn",
    "MessageOut",
    "Outcome",
    "Paired",
    "PairingCodeReady",
    "PairingFailed",
    "PairingRequested",
    "PairingState",
    "PayAtTable",
    "PayAtTableAnswered",
    "PendingPatRequest",
    "PosIdMismatch",
    "PosInfoReceived",
    "PreauthBalance",
    "PrintRequested",
    "ReceivedTransaction",
    "Responder",
    "ResponderFactory",
    "SettlementBatch",
    "SignatureDecided",
    "TableConfigReceived",
    "Terminal",
    "TerminalCounters",
    "TerminalEvent",
    "TerminalOptions",
    "TerminalProfile",
    "TerminalState",
    "TransactionFinished",
    "TransactionRecord",
    "TransactionRefused",
    "TransactionRequested",
    "TxState",
    "UnexpectedMessage",
    "Unpaired",
]
