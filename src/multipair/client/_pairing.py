"""Pairing from the asyncio client: follow a ``pair`` to its end, answer its code, give up.

:meth:`AsyncClient.pair <multipair.client.AsyncClient.pair>` sends ``pair``
and hands the rest to :func:`follow_pairing`, which reads the lane's events
in short blocks (a cancellation is noticed within :data:`PAIR_POLL_S`),
answers the confirmation code as the caller's :data:`ConfirmPolicy` says,
and returns the final ``pairing`` event; :func:`give_up_pairing` cancels a
pairing given up, best effort and bounded.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Final

from redis.exceptions import RedisError

from multipair import broker_schema as bs
from multipair.client._commands import PAIRED_STATES, CancelWatch, build, is_final
from multipair.client._events import EventCallback, EventReader
from multipair.client.errors import ClientError, CommandRejected
from multipair.exceptions import MultipairError

__all__ = ["PAIR_POLL_S", "ConfirmPolicy", "Send", "follow_pairing", "give_up_pairing"]

ConfirmPolicy = bool | Callable[[str], Awaitable[bool] | bool]
"""``pair``'s ``confirm``: True, False, or a callable given the code (it may be async)."""

Send = Callable[[str, bs.Command], Awaitable[str]]
"""Adds a command to a lane's stream and returns its id (:meth:`AsyncClient.send`)."""

PAIR_POLL_S: Final = 0.25
"""While pairing, how long one read of events blocks (a cancellation is looked for after each)."""
_GIVE_UP_S: Final = 1.0
"""How long a ``pair`` given up may take to send its ``pair_cancel``."""


async def follow_pairing(
    events: EventReader,
    send: Send,
    iid: str,
    command: bs.Command,
    cursor: str,
    deadline: float,
    confirm: ConfirmPolicy,
    on_event: EventCallback | None,
    cancelled: CancelWatch,
) -> bs.Pairing | None:
    """The events of the pairing ``command`` started, to its end; ``None`` at ``deadline``.

    Reads in short blocks and looks for a cancellation after each, so a
    cancelled call gives the pairing up within :data:`PAIR_POLL_S`.
    """
    loop = asyncio.get_running_loop()
    follow_up: str | None = None  # our pair_confirm / pair_cancel
    answered = False
    while (left := deadline - loop.time()) > 0:
        block_ms = max(1, int(min(PAIR_POLL_S, left) * 1000))
        entries = await events.read(iid, cursor, block_ms=block_ms)
        cancelled.check()
        for entry_id, event in entries:
            cursor = entry_id
            if event is None:
                continue
            if follow_up is not None and event.command_id == follow_up:
                if isinstance(event, bs.CommandRejected):
                    raise CommandRejected(event)
                continue
            if event.command_id != command.command_id:
                continue
            if isinstance(event, bs.CommandRejected):
                raise CommandRejected(event)
            if isinstance(event, bs.Pairing) and is_final(command, event):
                if event.state in PAIRED_STATES:
                    return event
                raise ClientError("pairing_failed", event.detail or f"pairing ended: {event.state}")
            if on_event is not None:
                on_event(event)
            if (
                isinstance(event, bs.Pairing)
                and event.confirmation_code
                and event.awaiting_pos
                and not answered
                and confirm is not False
            ):
                answered = True
                code = event.confirmation_code
                decision: object = True
                if callable(confirm):
                    decision = confirm(code)
                    if inspect.isawaitable(decision):
                        decision = await decision
                reply: bs.Command = (
                    build(bs.PairConfirm, confirmation_code=code)
                    if decision
                    else build(bs.PairCancel, pair_command_id=command.command_id)
                )
                follow_up = await send(iid, reply)
                cancelled.check()
    return None


async def give_up_pairing(send: Send, iid: str, pair: bs.Command) -> str:
    """Send ``pair_cancel`` for the pairing ``pair`` started; say what became of it.

    Best effort and bounded (the CLI ends a second after Ctrl-C): a
    ``pair_cancel`` that cannot be sent leaves the pairing to end at the
    ``pair``'s ``expires_at``. It names the pairing, so it never cancels
    a later one; one that arrives after the pairing ended is refused
    (``not_allowed``) and does nothing.
    """
    cancel = build(bs.PairCancel, pair_command_id=pair.command_id)
    try:
        async with asyncio.timeout(_GIVE_UP_S):
            await send(iid, cancel)
    except (TimeoutError, MultipairError, RedisError) as exc:
        return (
            f"could not send pair_cancel ({exc or type(exc).__name__}): the lane cancels "
            "the pairing itself at the pair's expires_at"
        )
    return "sent pair_cancel: the lane cancels the pairing"
