"""A direct SPI client: one POS session over one websocket, no Redis, no lane processes.

:class:`DirectPos` is the thin I/O shell of STYLE.md §5 around a
:class:`~multipair.spi.pos.PosSession`: websocket text in, frames out, one
timer at ``next_deadline()``, its two tasks in one ``asyncio.TaskGroup``.
Every session call runs under one lock and is followed by a flush that
handles events *before* sending frames, so rolled keys are stored (in memory)
before the reply that uses them leaves (PROTOCOL.md §5.7). After a drop it
reconnects by itself (1.5 s plus up to 20 % jitter, §13.8). For tests,
``make bench`` (the "direct SPI client" baseline) and scripts::

    async with DirectPos("ws://10.0.0.7:8080?posId=POS1") as pos:  # the URL as given
        code = await pos.pair(timeout=60)  # compare with the terminal's screen
        done = await pos.transact(m.PurchaseRequest(pos_ref_id="o-1", purchase_amount=1000))
"""

# ruff: noqa: ASYNC109 - the waits take ``timeout=`` by design (a script's one-liners)

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from ssl import SSLContext
from typing import Self, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake
from websockets.typing import Subprotocol

from multipair import __version__
from multipair.exceptions import RetryLater
from multipair.logs import get_logger
from multipair.spi import messages as m
from multipair.spi import pos as spi
from multipair.spi.address import DEFAULT_TIMINGS, SUBPROTOCOL, Timings
from multipair.spi.crypto import Secrets
from multipair.worker.pump import Answer, answer_to, feed, flush
from multipair.worker.retry import ReconnectPolicy, reconnect_delays

__all__ = ["Answer", "DirectPos"]

log = get_logger(__name__)

_E = TypeVar("_E")
_T = TypeVar("_T")
_JITTER = 0.2  # drops seen by many POSes at once must not reconnect in lockstep


class DirectPos:
    """One POS talking SPI 2.9 to the terminal at ``url``; an async context manager.

    ``secrets`` resumes a pairing; :attr:`secrets` holds the keys in use.
    ``on_signature`` / ``on_auth_code`` answer those steps at once (else use
    :meth:`act`); a handler that raises ends the client. Waits raise
    :class:`TimeoutError` after ``timeout`` s (None: never), and ``RetryLater``
    once the link is down for good (``reconnect=False``, or closed).
    """

    def __init__(
        self,
        url: str,
        *,
        pos_id: str = "POS1",
        secrets: Secrets | None = None,
        ssl: SSLContext | None = None,
        reconnect: bool = True,
        clock: Callable[[], float] = time.time,
        pos_info: spi.PosInfo | None = None,
        timings: Timings = DEFAULT_TIMINGS,
        on_signature: Callable[[spi.SignatureRequired], bool] | None = None,
        on_auth_code: Callable[[spi.AuthCodeRequired], str] | None = None,
    ) -> None:
        self.url, self.ssl, self.reconnect, self.clock = url, ssl, reconnect, clock
        self.timings = timings
        self.on_signature, self.on_auth_code = on_signature, on_auth_code
        info = pos_info or spi.PosInfo(
            pos_vendor_id="multipair-direct", pos_version=__version__, library_version=__version__
        )
        self.session = spi.PosSession(
            pos_id=pos_id, pos_info=info, secrets=secrets, timings=timings
        )  # the protocol core: call it through act()
        self.secrets: Secrets | None = secrets  # as last "persisted"; a restart passes them in
        self.events: list[spi.PosSessionEvent] = []  # every session event, oldest first
        self._ws: ClientConnection | None = None
        self._lock = asyncio.Lock()
        self._rearm = asyncio.Event()
        self._watchers: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._down: str | None = None  # set when the link loop ended: every wait fails
        self._close_requested = False
        self._confirm_pairing = True
        self._confirmed_code: str | None = None
        self._rng = random.Random()  # jitter only
        self._stack: AsyncExitStack | None = None

    async def __aenter__(self) -> Self:
        stack = AsyncExitStack()
        group = await stack.enter_async_context(asyncio.TaskGroup())
        for loop in (self._link_loop(), self._timer_loop()):
            stack.callback(group.create_task(loop).cancel)  # before the group waits for them
        self._stack = stack
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def act(self, action: Callable[[float], _T]) -> _T:
        """Run one session call (``lambda now: session.x(..., now)``), then flush its output."""
        async with self._lock:
            try:
                return action(self.clock())
            finally:
                await self._flush()

    async def pair(self, *, confirm: bool = True, timeout: float | None = None) -> str:
        """Pair (§4); return the confirmation code shown on both screens.

        With ``confirm`` the POS confirms at once and this returns when the
        pairing finished (keys then in :attr:`secrets`), else as soon as the
        code is known: confirm with ``act(session.pair_confirm)``. A failed
        pairing raises ``RetryLater``.
        """
        self._confirm_pairing = confirm
        async with asyncio.timeout(timeout):
            since = await self.act(lambda now: self._mark(self.session.pair, now))
            shown = await self.wait_for(spi.PairingProgress, _shows_code, since=since)
            if not confirm:
                return str(shown.confirmation_code)
            finished = await self.wait_for(spi.PairingFinished, since=since)
        if not finished.success:
            raise RetryLater(f"pairing failed: {finished.message}")
        # The last code shown: a pairing retried after a drop shows a new one.
        progress = [e for e in self.events[since:] if isinstance(e, spi.PairingProgress)]
        return str([e.confirmation_code for e in progress if _shows_code(e)][-1])

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until paired, connected and ready to transact (first pong seen, §5.3)."""
        s = self.session
        async with asyncio.timeout(timeout):
            await self._until(lambda: s.ready and s.status is spi.SpiStatus.PAIRED_CONNECTED)

    async def transact(
        self, request: m.TransactionRequest, timeout: float | None = None
    ) -> spi.TransactionCompleted:
        """Run a transaction of any type to its end (recovered after drops, §7.12)."""
        start = functools.partial(self.session.start_transaction, request)
        async with asyncio.timeout(timeout):
            return await self._run(start, request.pos_ref_id)

    async def recover(
        self, pos_ref_id: str, tx_type: m.TxType, timeout: float | None = None
    ) -> spi.TransactionCompleted:
        """Learn how a transaction sent before a restart ended, never re-sending it (§7.12.5)."""
        start = functools.partial(self.session.recover, pos_ref_id, tx_type)
        async with asyncio.timeout(timeout):
            return await self._run(start, pos_ref_id)

    async def request(self, send: Callable[[float], str], timeout: float | None = None) -> Answer:
        """Send a request answered by message id and return the answer, e.g.
        ``await pos.request(pos.session.get_terminal_status)`` (§7.10, §7.11, §7.18–§7.20)."""
        since = len(self.events)  # an answer cannot come before its request
        async with asyncio.timeout(timeout):
            message_id = await self.act(send)
            return await self._first(functools.partial(answer_to, message_id), since)

    async def wait_for(
        self,
        kind: type[_E],
        match: Callable[[_E], bool] = lambda _: True,
        timeout: float | None = None,
        *,
        since: int = 0,
    ) -> _E:
        """The first event of ``kind`` in :attr:`events` from index ``since`` that ``match``es."""

        def pick(event: spi.PosSessionEvent) -> _E | None:
            return event if isinstance(event, kind) and match(event) else None

        async with asyncio.timeout(timeout):
            return await self._first(pick, since)

    def _mark(self, action: Callable[[float], object], now: float) -> int:
        """Run ``action``; return the index in :attr:`events` where its events will start."""
        action(now)
        return len(self.events)

    async def _run(self, start: Callable[[float], None], ref: str) -> spi.TransactionCompleted:
        since = await self.act(lambda now: self._mark(start, now))
        return await self.wait_for(
            spi.TransactionCompleted, lambda e: e.pos_ref_id == ref, since=since
        )

    async def _first(self, pick: Callable[[spi.PosSessionEvent], _T | None], since: int) -> _T:
        found: list[_T] = []

        def seen() -> bool:
            found[:] = [p for e in self.events[since:] if (p := pick(e)) is not None]
            return bool(found)

        await self._until(seen)
        return found[0]

    async def _until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()``; it is checked after every flush."""
        if condition():
            return
        if self._down is not None:
            raise RetryLater(self._down)
        entry = (condition, asyncio.get_running_loop().create_future())
        self._watchers.append(entry)
        try:
            await entry[1]
        finally:
            self._watchers.remove(entry)

    def _wake(self) -> None:
        self._rearm.set()
        for condition, waiter in self._watchers:
            if not waiter.done() and condition():
                waiter.set_result(None)

    async def _flush(self) -> None:
        await flush(self.session, self._handle_round, lambda: self._ws)
        if self._close_requested:
            self._close_requested = False
            if self._ws is not None:
                await self._ws.close()
        self._wake()

    async def _handle_round(self, events: Sequence[spi.PosSessionEvent]) -> None:
        for event in events:
            self._handle(event)

    def _handle(self, event: spi.PosSessionEvent) -> None:
        """Act on one event; session calls made here are flushed by the same loop."""
        self.events.append(event)
        session, now = self.session, self.clock()
        match event:
            case spi.SecretsChanged():
                self.secrets = event.secrets  # "persisted": kept in memory
                if event.reason == "rolled":
                    session.secrets_persisted()
            case spi.PairingProgress(confirmation_code=str(code), awaiting_pos_confirmation=True):
                if self._confirm_pairing and code != self._confirmed_code:
                    self._confirmed_code = code
                    session.pair_confirm(now)
            case spi.SignatureRequired() if self.on_signature is not None:
                session.accept_signature(self.on_signature(event), now)
            case spi.AuthCodeRequired() if self.on_auth_code is not None:
                session.submit_auth_code(self.on_auth_code(event), now)
            case spi.CloseConnection():
                self._close_requested = True

    async def _link_loop(self) -> None:
        # 1.5 s plus up to 20 % jitter (§13.8), as the lane paces its reconnects.
        policy = ReconnectPolicy(pause_s=self.timings.reconnect_pause_s, jitter=_JITTER)
        delays = reconnect_delays(policy, self._rng)
        try:
            while True:
                await self._until(lambda: self.session.wants_connection)
                try:
                    ws = await connect(
                        self.url,
                        subprotocols=[Subprotocol(SUBPROTOCOL)],
                        ssl=self.ssl,
                        open_timeout=self.timings.connect_timeout_s,  # §1 watchdog
                        ping_interval=None,  # SPI pings itself (§5.4)
                        close_timeout=1.0,
                        compression=None,
                    )
                except (OSError, TimeoutError, InvalidHandshake) as exc:
                    log.warning("direct.connect_failed", url=self.url, error=repr(exc))
                else:
                    await self._serve(ws)
                if not self.reconnect:
                    break
                await asyncio.sleep(next(delays))
        finally:
            self._down = "the terminal link is down for good (reconnect is off, or closed)"
            for _, waiter in self._watchers:
                if not waiter.done():
                    waiter.set_exception(RetryLater(self._down))

    async def _serve(self, ws: ClientConnection) -> None:
        self._ws = ws
        try:
            await feed(ws, self.session, self.act)
        finally:
            self._ws = None
            await ws.close()
            await self.act(self.session.connection_lost)

    async def _timer_loop(self) -> None:
        while True:
            self._rearm.clear()
            deadline = self.session.next_deadline()
            delay = None if deadline is None else deadline - self.clock()
            if delay is not None and delay <= 0:
                await self.act(self.session.handle_timer)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._rearm.wait()


def _shows_code(event: spi.PairingProgress) -> bool:
    return event.confirmation_code is not None
