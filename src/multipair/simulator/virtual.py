"""One virtual terminal: the I/O shell around :class:`multipair.spi.terminal.Terminal`.

The shell is thin (STYLE.md §5): it pumps websocket text into the session,
writes the session's frames out in order through one writer task, arms one
timer at ``next_deadline()``, and plays the customer and the bank for each
transaction by the rules of :mod:`multipair.simulator.rules`. Every
protocol decision stays in the session.

Connections: one POS at a time. A new connection closes the old one (code
1001) and waits until it is gone before the session sees the new one, so
``max_concurrent_connections`` stays 1; the counter exists to prove it.
What it cannot show is that two POS processes fought over the terminal:
``replaced_connections`` counts the connections that arrived while another
was still open (each one closed an open link), and ``max_open_sockets`` is
the most websockets open at once, handshake done, including one waiting for
the old one to go. A correct hand-over between two lane processes (the old
one gone before the new one connects) leaves them at 0 and 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from multipair.exceptions import LocalProtocolError
from multipair.simulator.bank import Bank, main_amount
from multipair.simulator.pay_at_table import Handheld
from multipair.simulator.rules import (
    Behaviour,
    DropStep,
    PairingMode,
    behaviour_for_amount,
)
from multipair.spi.envelope import JsonObject, Message
from multipair.spi.terminal import (
    AuthCodeReceived,
    CloseConnection,
    FrameRejected,
    MessageIn,
    MessageOut,
    Outcome,
    PairingCodeReady,
    PayAtTableAnswered,
    ReceivedTransaction,
    SignatureDecided,
    Terminal,
    TerminalEvent,
    TerminalOptions,
    TerminalState,
    TransactionFinished,
    TransactionRefused,
    TransactionRequested,
    TxState,
)

__all__ = ["DeviceAddressFault", "SimulatedTerminal", "is_spi_subprotocol", "redact"]

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]

# Requests that involve no card: no card delay, no customer on the terminal.
_NO_CARD: frozenset[str] = frozenset({"settle", "settlement_enquiry", "reverse_transaction"})
_SLOW_CARD_TEXTS = ("PRESENT CARD", "READING CARD", "PROCESSING", "PLEASE WAIT")
_REDACTED_KEYS = frozenset({"A", "B", "enc_key", "hmac_key", "pos_spi_auth_token"})
_RECEIPT_KEYS = frozenset({"customer_receipt", "merchant_receipt"})


def is_spi_subprotocol(name: str) -> bool:
    """``spi.2.x.y`` with numeric x and y (§1)."""
    parts = name.split(".")
    return len(parts) == 4 and parts[:2] == ["spi", "2"] and all(p.isdigit() for p in parts[2:])


def _select_subprotocol(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    # §1: accept any spi.2.x.y and echo the one offered; a client that offers
    # none still gets a connection (Java's older builds).
    for name in offered:
        if is_spi_subprotocol(name):
            return name
    return None


def redact(value: Any) -> Any:
    """A copy of decoded message data safe to log: DH values and tokens hidden,
    receipts shortened (§9 of STYLE.md: never log keys or secrets)."""
    if isinstance(value, dict):
        out: JsonObject = {}
        for key, item in value.items():
            if key in _REDACTED_KEYS:
                out[key] = "<redacted>"
            elif key in _RECEIPT_KEYS and isinstance(item, str):
                out[key] = f"<receipt {item.count(chr(10)) + 1} lines>"
            else:
                out[key] = redact(item)
        return out
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


@dataclass(slots=True)
class DeviceAddressFault:
    """What the fake device-address service answers for one terminal (§10 item 18)."""

    mode: str = "none"  # none | error | hang | not_found
    hang_seconds: float = 10.0


@dataclass(slots=True)
class _Settings:
    next_outcome: Behaviour | None = None
    sticky_outcome: Behaviour | None = None
    card_delay: float = 0.0
    slow_card_seconds: float = 3.0
    processing_seconds: float = 3.0
    pairing_mode: PairingMode = PairingMode.AUTO
    pairing_delay: float = 0.0
    drop_at: DropStep | None = None
    refuse_until: float = 0.0


@dataclass(slots=True)
class _Stats:
    connections_total: int = 0
    active_connections: int = 0
    max_concurrent_connections: int = 0
    refused_connections: int = 0
    replaced_connections: int = 0
    open_sockets: int = 0
    max_open_sockets: int = 0
    transaction_requests: Counter[str] = field(default_factory=Counter)
    purchase_requests: Counter[str] = field(default_factory=Counter)


class SimulatedTerminal:
    """A terminal on its own websocket port, driven by the SPI terminal session."""

    def __init__(
        self,
        *,
        serial: str,
        index: int,
        host: str,
        port: int,
        advertised_host: str,
        spawn: Spawn,
        ssl_context: Any = None,
        state_path: Path | None = None,
        options: TerminalOptions | None = None,
        pairing_mode: PairingMode = PairingMode.AUTO,
        pairing_delay: float = 0.0,
    ) -> None:
        self.serial = serial
        self.index = index
        self.host = host
        self.port = port
        self.advertised_host = advertised_host
        self.tls = ssl_context is not None
        self._ssl = ssl_context
        self._spawn = spawn
        self._state_path = state_path
        state = self._load_state() or TerminalState(serial_number=serial)
        self.session = Terminal(
            state=state, responder=Bank, options=options or TerminalOptions(), trace=True
        )
        self.settings = _Settings(pairing_mode=pairing_mode, pairing_delay=pairing_delay)
        self.stats = _Stats()
        self.device_address = DeviceAddressFault()
        self.address_override: dict[str, str] = {}
        self.address_updated_at = time.time()
        self.log = structlog.get_logger("multipair.simulator").bind(serial=serial)
        self._saved_version = self.session.state_version
        self._server: Server | None = None
        self._conn: ServerConnection | None = None
        self._conn_done: asyncio.Event | None = None
        self._handover = asyncio.Lock()
        self._outq: asyncio.Queue[tuple[ServerConnection, str | asyncio.Future[None]]] = (
            asyncio.Queue()
        )
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._tx_task: asyncio.Task[None] | None = None
        self._signature: asyncio.Future[bool] | None = None
        self._auth_code: asyncio.Future[str] | None = None
        self.pat = Handheld(self)
        """Pay at table played on this terminal (§7.23)."""

    # ------------------------------------------------------------------ addresses

    @property
    def ws_url(self) -> str:
        """Where a POS connects: ``ws(s)://host:port``."""
        return f"{'wss' if self.tls else 'ws'}://{self.advertised_host}:{self.port}"

    def advertised_address(self, kind: str) -> str:
        """The ``ip`` / ``fqdn`` value the device-address service gives (host:port)."""
        if kind in self.address_override:
            return self.address_override[kind]
        host = "localhost" if kind == "fqdn" else self.advertised_host
        return f"{host}:{self.port}"

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen; port 0 becomes a free port."""
        self._server = await serve(
            self._handler,
            self.host,
            self.port,
            select_subprotocol=_select_subprotocol,
            process_request=self._process_request,
            compression=None,
            ping_interval=None,
            close_timeout=2,
            ssl=self._ssl,
        )
        sockets = list(self._server.sockets)
        self.port = int(sockets[0].getsockname()[1])
        self._spawn(self._writer())

    async def close(self) -> None:
        """Stop listening, close the POS connection, stop timers and tasks, persist."""
        if self._tx_task is not None:
            self._tx_task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._closed = True  # from here on no timer is armed again
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._persist()

    # ------------------------------------------------------------------ websocket

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if time.time() < self.settings.refuse_until:
            self.stats.refused_connections += 1
            self.log.info("connection.refused", path=request.path)
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "terminal refuses\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        self.stats.open_sockets += 1
        self.stats.max_open_sockets = max(self.stats.max_open_sockets, self.stats.open_sockets)
        try:
            await self._serve(ws)
        finally:
            self.stats.open_sockets -= 1

    async def _serve(self, ws: ServerConnection) -> None:
        query = parse_qs(urlsplit(ws.request.path if ws.request else "/").query)
        query_pos_id = query.get("posId", [None])[0]
        async with self._handover:
            old, old_done = self._conn, self._conn_done
            if old is not None and old_done is not None:
                self.stats.replaced_connections += 1
                self.log.info("connection.replace", old=self.session.conn_id)
                await old.close(1001, "replaced by a new POS connection")
                await old_done.wait()
            done = asyncio.Event()
            self._conn, self._conn_done = ws, done
            self.stats.connections_total += 1
            self.stats.active_connections += 1
            self.stats.max_concurrent_connections = max(
                self.stats.max_concurrent_connections, self.stats.active_connections
            )
            self.session.connection_made(
                time.time(), subprotocol=ws.subprotocol, query_pos_id=query_pos_id
            )
            self.log.info(
                "connection.open",
                conn_id=self.session.conn_id,
                subprotocol=ws.subprotocol,
                pos_id_query=query_pos_id,
            )
            self._pump()
        try:
            async for frame in ws:
                self.session.receive_text(frame, time.time())
                self._pump()
        except ConnectionClosed:
            pass
        except Exception:
            self.log.exception("connection.failed")
        finally:
            self.log.info("connection.closed", conn_id=self.session.conn_id)
            self._conn, self._conn_done = None, None
            self.session.connection_lost(time.time())
            self.stats.active_connections -= 1
            self._pump()
            done.set()

    async def _writer(self) -> None:
        # One writer per terminal keeps frames in the order the session made them.
        while True:
            ws, item = await self._outq.get()
            if isinstance(item, asyncio.Future):
                if not item.done():
                    item.set_result(None)
                continue
            with contextlib.suppress(ConnectionClosed):
                await ws.send(item)

    async def _flush(self, ws: ServerConnection) -> None:
        """Wait until every frame queued so far for ``ws`` has been written."""
        marker: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outq.put_nowait((ws, marker))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await marker

    async def drop(self, reason: str = "dropped by the simulator", *, abort: bool = False) -> bool:
        """Drop the POS connection now; True if there was one. The session goes on."""
        ws, done = self._conn, self._conn_done
        if ws is None or done is None:
            return False
        self.log.info("connection.drop", reason=reason, abort=abort)
        await self._flush(ws)  # what the session sent before the drop goes out first
        if abort:
            ws.transport.abort()
        else:
            await ws.close(1001, reason[:100])
        await done.wait()
        return True

    # ------------------------------------------------------------------ session pump

    def _pump(self) -> None:
        """Move the session's frames to the writer and act on its events, until quiet."""
        while True:
            frames = self.session.data_to_send()
            ws = self._conn
            if ws is not None:
                for frame in frames:
                    self._outq.put_nowait((ws, frame))
            events = self.session.events_received()
            if not frames and not events:
                break
            for event in events:
                self._on_event(event)
        if self.session.state_version != self._saved_version:
            self._persist()
        self._rearm()

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.session.next_deadline()
        if deadline is not None and not self._closed:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(0.0, deadline - time.time()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.session.handle_timer(time.time())
        self._pump()

    def act(self, action: Callable[[float], None]) -> None:
        """Run one session call (``lambda now: session.x(now)``) and pump its results."""
        try:
            action(time.time())
        finally:
            self._pump()

    def _log_message(self, direction: str, message: Message, encrypted: bool) -> None:
        self.log.info(
            f"spi.{direction}",
            spi_event=message.event,
            id=message.id,
            encrypted=encrypted,
            data=redact(message.data),
        )

    def _on_event(self, event: TerminalEvent) -> None:
        now = time.time()
        if isinstance(event, MessageIn):
            self._log_message("in", event.message, event.encrypted)
            return
        if isinstance(event, MessageOut):
            self._log_message("out", event.message, event.encrypted)
            return
        if isinstance(event, FrameRejected):
            self.log.warning("spi.rejected", reason=str(event.reason), detail=event.detail)
            return
        self.log.info(event.type, **_loggable(event))
        if isinstance(event, PairingCodeReady):
            if self.settings.pairing_mode is PairingMode.AUTO:
                self.session.confirm_pairing(now)
            elif self.settings.pairing_mode is PairingMode.DELAY:
                self._spawn(
                    self._confirm_later(self.settings.pairing_delay, event.confirmation_code)
                )
        elif isinstance(event, TransactionRequested):
            self._count(event.tx.event, event.tx.pos_ref_id)
            behaviour = self.choose_behaviour(event.tx)
            if behaviour is Behaviour.PAST_NO_RETURN:
                # "At once": before the next frame is read, so a cancel that
                # arrived together with the request already finds it too late.
                self.session.pass_point_of_no_return(now)
            self._tx_task = self._spawn(self._run_transaction(event.tx, behaviour))
        elif isinstance(event, TransactionRefused):
            self._count(event.request, event.pos_ref_id)
        elif isinstance(event, TransactionFinished):
            task, self._tx_task = self._tx_task, None
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        elif isinstance(event, SignatureDecided):
            if self._signature is not None and not self._signature.done():
                self._signature.set_result(event.accepted)
        elif isinstance(event, AuthCodeReceived):
            if self._auth_code is not None and not self._auth_code.done():
                self._auth_code.set_result(event.code)
        elif isinstance(event, PayAtTableAnswered):
            self.pat.answered(event)
        elif isinstance(event, CloseConnection):
            self._spawn(self._drop_quietly(event.reason))

    def _count(self, request: str, pos_ref_id: str | None) -> None:
        ref = pos_ref_id or ""
        self.stats.transaction_requests[ref] += 1
        if request == "purchase":
            self.stats.purchase_requests[ref] += 1

    async def _drop_quietly(self, reason: str) -> None:
        await self.drop(reason)

    async def _confirm_later(self, delay: float, code: str) -> None:
        await asyncio.sleep(delay)
        if self.session.confirmation_code == code:
            self.act(self.session.confirm_pairing)

    # ------------------------------------------------------------------ the customer and the bank

    def choose_behaviour(self, tx: ReceivedTransaction) -> Behaviour:
        """Control-API override first (once, then sticky), else the cents rule."""
        return self.behaviour_for(main_amount(tx.request))

    def behaviour_for(self, amount_cents: int) -> Behaviour:
        """Control-API override first (once, then sticky), else the cents rule for the amount."""
        if self.settings.next_outcome is not None:
            behaviour, self.settings.next_outcome = self.settings.next_outcome, None
            return behaviour
        if self.settings.sticky_outcome is not None:
            return self.settings.sticky_outcome
        return behaviour_for_amount(amount_cents)

    def open_preauth(self, amount_cents: int) -> str:
        """Open a preauth at the simulated acquirer, as if opened earlier elsewhere (§7.16)."""
        session = self.session
        pid = Bank(session.state, session.profile, session.options).open_preauth(amount_cents)
        self.persist()
        return pid

    def _take_drop(self, step: DropStep) -> bool:
        if self.settings.drop_at is step:
            self.settings.drop_at = None
            return True
        return False

    async def _run_transaction(self, tx: ReceivedTransaction, behaviour: Behaviour) -> None:
        log = self.log.bind(pos_ref_id=tx.pos_ref_id)
        try:
            await self._play(tx, behaviour)
        except asyncio.CancelledError:
            raise
        except LocalProtocolError as exc:
            # The transaction moved on under us (finished by a cancel, say).
            log.info("transaction.abandoned", detail=str(exc))
        except Exception:
            log.exception("transaction.failed")
        finally:
            self._signature = None
            self._auth_code = None

    def _txn_update(self, text: str, code: int, now: float) -> None:
        self.session.send_txn_update(text, now, code)

    async def _play(self, tx: ReceivedTransaction, behaviour: Behaviour) -> None:
        self.log.info("transaction.behaviour", pos_ref_id=tx.pos_ref_id, behaviour=behaviour.value)
        session = self.session
        if self._take_drop(DropStep.AFTER_REQUEST_RECEIVED) or (
            behaviour is Behaviour.DROP_AFTER_REQUEST
        ):
            await self.drop("after_request_received")
        if tx.event not in _NO_CARD:
            if behaviour is Behaviour.SLOW_CARD:
                step = self.settings.slow_card_seconds / len(_SLOW_CARD_TEXTS)
                for code, text in enumerate(_SLOW_CARD_TEXTS):
                    self.act(functools.partial(self._txn_update, text, code))
                    await asyncio.sleep(step)
            if self.settings.card_delay > 0:
                self.act(lambda now: session.send_txn_update("PRESENT CARD", now))
                await asyncio.sleep(self.settings.card_delay)
        if behaviour is Behaviour.NO_ANSWER:
            return  # the session keeps it in progress; a cancel still ends it
        outcome: Outcome
        force_signature = self.settings.drop_at is DropStep.WHILE_AWAITING_SIGNATURE
        if behaviour is Behaviour.AUTH_CODE:
            self._auth_code = asyncio.get_running_loop().create_future()
            self.act(session.require_auth_code)
            outcome = Outcome.approve(auth_code=await self._auth_code)
        else:
            if session.tx_state is not TxState.PROCESSING:  # .57 passed it on arrival
                self.act(session.pass_point_of_no_return)
            if behaviour is Behaviour.PAST_NO_RETURN:
                self.act(lambda now: session.send_txn_update("PROCESSING", now))
                await asyncio.sleep(self.settings.processing_seconds)
            if behaviour is Behaviour.SIGNATURE or force_signature:
                self._signature = asyncio.get_running_loop().create_future()
                self.act(session.require_signature)
                if self._take_drop(DropStep.WHILE_AWAITING_SIGNATURE):
                    await self.drop("while_awaiting_signature")
                accepted = await self._signature
                outcome = Outcome.approve() if accepted else Outcome.signature_declined()
            elif behaviour is Behaviour.DECLINE:
                outcome = Outcome.decline()
            elif behaviour is Behaviour.PARTIAL:
                outcome = Outcome.partial(max(1, main_amount(tx.request) // 2))
            else:
                outcome = Outcome.approve()
        send = not (
            self._take_drop(DropStep.AFTER_RESULT_BEFORE_SEND)
            or behaviour is Behaviour.DROP_BEFORE_SEND
        )
        self.act(lambda now: session.complete_transaction(outcome, now, send=send))
        if not send:
            await self.drop("after_result_before_send")

    # ------------------------------------------------------------------ persistence

    def _load_state(self) -> TerminalState | None:
        if self._state_path is None or not self._state_path.exists():
            return None
        return TerminalState.from_json(orjson.loads(self._state_path.read_bytes()))

    def persist(self) -> None:
        """Write the state now (after the bank changed it outside a transaction)."""
        self._persist()

    def _persist(self) -> None:
        """Write the state atomically (temp file + ``os.replace``), mode 0600: it holds keys."""
        self._saved_version = self.session.state_version
        path = self._state_path
        if path is None:
            return
        data = orjson.dumps(self.session.state.to_json(), option=orjson.OPT_INDENT_2)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    # ------------------------------------------------------------------ views

    def snapshot(self) -> JsonObject:
        """The state the control API shows (never keys: a fingerprint at most)."""
        session = self.session
        state = session.state
        tx = session.current_tx
        s = self.settings
        return {
            "serial": self.serial,
            "index": self.index,
            "ws_url": self.ws_url,
            "paired": state.paired,
            "pos_id": state.pos_id,
            "keys_fingerprint": None if state.secrets is None else state.secrets.fingerprint(),
            "pairing_state": session.pairing_state.value,
            "confirmation_code": session.confirmation_code,
            "connected": session.connected,
            "conn_id": session.conn_id,
            "generation": None if session.generation is None else session.generation.value,
            "key_rollover_pending": session.key_rollover_pending,
            "current_tx": None
            if tx is None
            else {
                "event": tx.event,
                "pos_ref_id": tx.pos_ref_id,
                "message_id": tx.message_id,
                "amount_cents": main_amount(tx.request),
                "state": session.tx_state.value,
            },
            "last_tx": None
            if state.last_tx is None
            else {
                "pos_ref_id": state.last_tx.pos_ref_id,
                "request_event": state.last_tx.request_event,
                "success": state.last_tx.success,
                "sent": state.last_tx.sent,
            },
            "history": [
                {"pos_ref_id": r.pos_ref_id, "request_event": r.request_event, "success": r.success}
                for r in state.history
            ],
            "counters": {
                "frames_in": session.counters.frames_in,
                "frames_out": session.counters.frames_out,
                "frames_rejected": session.counters.frames_rejected,
                "connections_total": self.stats.connections_total,
                "active_connections": self.stats.active_connections,
                "max_concurrent_connections": self.stats.max_concurrent_connections,
                "refused_connections": self.stats.refused_connections,
                "replaced_connections": self.stats.replaced_connections,
                "max_open_sockets": self.stats.max_open_sockets,
            },
            "table_config": session.pay_at_table.table_config,
            "pat_pending": [
                {"request_id": p.message_id, "event": p.event} for p in session.pay_at_table.pending
            ],
            "preauths": {
                pid: {"balance": balance.balance, "open": balance.open}
                for pid, balance in state.preauths.items()
            },
            "transaction_requests": dict(self.stats.transaction_requests),
            "purchase_requests": dict(self.stats.purchase_requests),
            "settings": {
                "next_outcome": None if s.next_outcome is None else s.next_outcome.value,
                "sticky_outcome": None if s.sticky_outcome is None else s.sticky_outcome.value,
                "card_delay": s.card_delay,
                "slow_card_seconds": s.slow_card_seconds,
                "processing_seconds": s.processing_seconds,
                "pairing": s.pairing_mode.value
                if s.pairing_mode is not PairingMode.DELAY
                else f"delay:{s.pairing_delay:g}",
                "drop_at": None if s.drop_at is None else s.drop_at.value,
                "refusing_for": max(0.0, s.refuse_until - time.time()),
                "terminal_model": session.options.terminal_model,
                "answer_pings": session.options.answer_pings,
                "pong_delay": session.options.pong_delay,
                "ping_interval": session.options.ping_interval,
                "answer_cancel": session.options.answer_cancel,
                "cancel_completion_delay": session.options.cancel_completion_delay,
                "get_transaction_error": session.options.get_transaction_error,
                "device_address_fault": self.device_address.mode,
            },
        }

    @property
    def tx_state(self) -> TxState:
        """Where the current transaction stands."""
        return self.session.tx_state


def _loggable(event: TerminalEvent) -> JsonObject:
    """An event's fields for a log line, with transactions and records summarised."""
    fields: JsonObject = {}
    for name in getattr(event, "__slots__", ()):
        value = getattr(event, name)
        if isinstance(value, ReceivedTransaction):
            fields["pos_ref_id"] = value.pos_ref_id
            fields["request"] = value.event
            fields["amount_cents"] = main_amount(value.request)
        elif name == "record":
            fields["pos_ref_id"] = value.pos_ref_id
            fields["success"] = value.success
            fields["sent"] = value.sent
        elif name == "data":
            fields["data"] = redact(value)
        elif name == "event":
            # structlog's own first argument: UnexpectedMessage's field would clash with it.
            fields["spi_event"] = value
        else:
            fields[name] = value
    return fields
