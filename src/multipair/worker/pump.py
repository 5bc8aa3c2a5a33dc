"""The POS-side session pump: websocket frames into the SPI session, its output back out.

One home for what every POS shell around a
:class:`~multipair.spi.pos.PosSession` does (STYLE.md §5), used by the lane
(:mod:`multipair.worker.lane`, :mod:`multipair.worker.link_loop`) and by
:class:`~multipair.direct.DirectPos`:

- :func:`feed`: ``connection_made``, then every received frame through the
  shell's one session step, until the link closes.
- :func:`flush`: round after round, the session's events go to the shell's
  handler *before* that round's frames are sent (so what must be stored
  first is stored first: PROTOCOL.md §5.7), until the session is quiet.
- :func:`answer_to`: which session event answers a request, by the
  request's message id (PROTOCOL.md §7.10, §7.11, §7.18–§7.20).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from multipair.spi import messages as m
from multipair.spi import pos as spi

__all__ = ["Answer", "answer_to", "feed", "flush"]

Answer = spi.TerminalAnswer | spi.TransactionLookupResult | spi.LastTransactionResult
"""The events that answer a request by its message id."""


async def feed(
    ws: ClientConnection,
    session: spi.PosSession,
    step: Callable[[Callable[[float], Any]], Awaitable[Any]],
) -> None:
    """Tell ``session`` the link is up, then step every frame of ``ws`` into it, until closed."""
    try:
        await step(session.connection_made)
        async for frame in ws:
            await step(functools.partial(session.receive_text, frame))
    except ConnectionClosed:
        pass


async def flush(
    session: spi.PosSession,
    handle: Callable[[Sequence[spi.PosSessionEvent]], Awaitable[None]],
    link: Callable[[], ClientConnection | None],
    *,
    sent: Callable[[], None] | None = None,
) -> None:
    """Handle the session's events, then send its frames, round after round until quiet.

    ``handle`` gets each round's events (possibly none) before any frame of
    the round leaves; if it raises, nothing more is sent. ``link`` is the
    websocket now (None: down, the frames are dropped: the session learns
    of the drop from the reader). ``sent`` runs after a round that had
    frames to send.
    """
    while True:
        events = session.events_received()
        await handle(events)
        frames = session.data_to_send()
        ws = link()
        for frame in frames:
            if ws is None:
                break
            try:
                await ws.send(frame)
            except ConnectionClosed:
                break  # the reader sees the close and tells the session
        if sent is not None and frames:
            sent()
        if not events and not frames:
            return


def answer_to(message_id: str, event: spi.PosSessionEvent) -> Answer | None:
    """``event`` when it answers the request sent as ``message_id``, else None."""
    match event:
        case spi.TerminalAnswer(answer=m.PrintResponse()):
            return event  # §7.20: its id may be the terminal's own
        case spi.TerminalAnswer() if event.answer.id == message_id:
            return event
        case spi.TransactionLookupResult() | spi.LastTransactionResult():
            return event if event.response.id == message_id else None
    return None
