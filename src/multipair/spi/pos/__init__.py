"""The POS side of SPI as a sans-I/O session (PROTOCOL.md §4, §5, §7, §8, §13).

The session is fed what happens (a socket opened or closed, a text frame, the
time) and hands back what to do: text frames to send (:meth:`data_to_send`),
events for the lane (:meth:`events_received`) and the next moment it needs to
be woken (:meth:`next_deadline`). It never reads a clock, opens a socket or
sleeps; ``now`` is the caller's wall clock in seconds.

Rooms of the package:

- :mod:`~multipair.spi.pos.session`: :class:`PosSession`, the transaction
  flow (§7, §8.3, §8.4) on top of
- :mod:`~multipair.spi.pos.table`: pay at table (§7.23) on top of
- :mod:`~multipair.spi.pos.link`: the connection, pairing, keys and pings
  (§4, §5), status and flow (§8.1, §8.2);
- :mod:`~multipair.spi.pos.pairing`: the pairing machine and its table;
- :mod:`~multipair.spi.pos.transaction`: the transaction machine and the
  pure parts of binding an answer to it;
- :mod:`~multipair.spi.pos.events`: what the session hands its caller;
- :mod:`multipair.spi.states`: status, flow, outcome and transaction phase,
  the words shared with the broker contract and the transaction record.

Rules it keeps:

- Status and flow are the reference client's (§8.1, §8.2). The pairing and
  the transaction move only along their tables (:mod:`multipair.spi.pos.pairing`,
  :data:`multipair.spi.states.TX_MOVES`); an illegal request raises
  :class:`~multipair.exceptions.LocalProtocolError`.
- One transaction at a time. A transaction started while the link is down is
  kept and sent at the next "ready to transact" (first pong, §5.3).
- A transaction request is sent at most once per session. After a reconnect,
  or when resumed with :meth:`PosSession.recover` after a restart, the session
  asks the terminal (``get_transaction``, §7.12) and never re-sends (§7.12.6).
- The 1 s transaction monitor of the reference client (§8.4) is kept as a
  tick anchored at the moment the request went out, so ``get_transaction``
  polls and cancel give-ups land on the same seconds as 2.9.13 (§13.7).
- Responses are matched on ``pos_ref_id`` wherever they carry one (§13.9).
- Key rollover (§5.7): the reply under the new keys is held back until the
  caller confirms it persisted them (:meth:`PosSession.secrets_persisted`),
  and frames still signed with the old keys are accepted only until the
  first frame verifies under the new ones (§13.6).
- A ``get_transaction`` lookup that fails for a reason other than "not found"
  ends the transaction **Unknown**, not Failed as the reference client does
  (§7.10 R9): a failed lookup says nothing about the money.

Link integrity (stricter than the reference clients; docs/security.md):

- Once the session holds keys, only frames that verify under them count. A
  plaintext frame is a :class:`FrameRejected` (counted as an invalid
  signature) and is never dispatched; the one exception is a plaintext
  ``pair_response`` while a pairing waits for the terminal's confirmation,
  which the sources allow (§4.3) and which cannot move money.
- Replies are bound to what they answer. ``get_transaction_response`` must
  carry the id of the latest ``get_transaction`` *and* name the transaction's
  ``pos_ref_id`` (outside or inside ``tx``), and never another one; a
  settlement or get-last-transaction response (no ``pos_ref_id``, §7.14)
  must carry the request's id. Anything else is ignored and the transaction
  keeps recovering. An id already answered is not answered twice.
- Request ids start from a value drawn from :mod:`secrets` per session, not
  from 1, so a reply recorded on an earlier connection or by an earlier
  process cannot be aimed at a future request.
- Key-exchange values are plain hex only; anything else fails the pairing.
"""

from __future__ import annotations

from multipair.spi.pos.events import (
    AuthCodeRequired,
    BillPaymentRefused,
    CancelFailed,
    CloseConnection,
    FrameRejected,
    IgnoredMessage,
    LastTransactionResult,
    PairingFinished,
    PairingProgress,
    PayAtTableRequest,
    PosInfo,
    PosSessionEvent,
    PosSpiTokenReceived,
    SecretsChanged,
    SignatureRequired,
    StatusChanged,
    TerminalAnswer,
    TerminalErrorReceived,
    TransactionCompleted,
    TransactionLookupResult,
    TransactionRequestSent,
    TransactionUpdate,
)
from multipair.spi.pos.pairing import PairingStep
from multipair.spi.pos.session import PosSession
from multipair.spi.pos.table import BILL_UNKNOWN
from multipair.spi.pos.transaction import PRINTERLESS_MODELS
from multipair.spi.states import Outcome, SpiFlow, SpiStatus, TxPhase

__all__ = [
    "BILL_UNKNOWN",
    "PRINTERLESS_MODELS",
    "AuthCodeRequired",
    "BillPaymentRefused",
    "CancelFailed",
    "CloseConnection",
    "FrameRejected",
    "IgnoredMessage",
    "LastTransactionResult",
    "Outcome",
    "PairingFinished",
    "PairingProgress",
    "PairingStep",
    "PayAtTableRequest",
    "PosInfo",
    "PosSession",
    "PosSessionEvent",
    "PosSpiTokenReceived",
    "SecretsChanged",
    "SignatureRequired",
    "SpiFlow",
    "SpiStatus",
    "StatusChanged",
    "TerminalAnswer",
    "TerminalErrorReceived",
    "TransactionCompleted",
    "TransactionLookupResult",
    "TransactionRequestSent",
    "TransactionUpdate",
    "TxPhase",
]
