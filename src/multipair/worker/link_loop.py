"""The terminal link: websocket in, session out, one timer (STYLE.md §5).

:class:`LinkLoop` opens the websocket to the terminal when the session wants
a connection (resolving the device address when the profile asks for it,
with jittered reconnect delays, :mod:`multipair.worker.retry`), pumps each
frame into the session through the lane's one step
(:meth:`Lane.step <multipair.worker.lane.Lane.step>`, which sends the
session's frames out after its writes landed), and arms one timer at the
session's next deadline. A drain closes the link and stops the reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from multipair.logs import get_logger
from multipair.spi.address import DEFAULT_TIMINGS, SUBPROTOCOL, DeviceAddressResponseCode
from multipair.worker.link import client_ssl_context, resolve_device_address
from multipair.worker.pump import feed
from multipair.worker.redis_wait import Stopping, first
from multipair.worker.retry import is_retryable, reconnect_delays

if TYPE_CHECKING:
    from multipair.worker.lane import Lane

__all__ = ["CLOSE_TIMEOUT_S", "LinkLoop"]

log = get_logger("multipair.worker.lane")  # the lane's log lines, as they always were

CLOSE_TIMEOUT_S: Final = 2.0
"""How long closing the link, or its bookkeeping while cancelled, may take."""


class LinkLoop:
    """The lane's terminal link and session timer."""

    def __init__(self, lane: Lane) -> None:
        self.lane = lane

    async def link_loop(self) -> None:
        """Keep the terminal link up while the session wants one, until draining."""
        assert self.lane.address is not None
        assert self.lane.profile is not None
        delays = reconnect_delays(self.lane.deps.reconnect)
        failures = 0
        ssl_ctx = (
            client_ssl_context(self.lane.deps.settings.tls_ca_file)
            if self.lane.profile.secure
            else None
        )
        while not self.lane.draining.is_set():
            if not self.lane.session.wants_connection:
                self.lane.want_link.clear()
                await self.lane.want_link.wait()
                continue
            if self.lane.profile.auto_address and (
                self.lane.address.url() is None
                or (
                    failures
                    and failures % (self.lane.deps.reconnect.attempts_before_lookup + 1) == 0
                )
            ):
                await self._resolve_address()
            url = self.lane.address.url()
            if url is None:
                await self.lane.write_state(last_error="no terminal address known")
                await asyncio.sleep(next(delays))
                failures += 1
                continue
            try:
                ws = await connect(
                    url,
                    subprotocols=[Subprotocol(SUBPROTOCOL)],
                    open_timeout=DEFAULT_TIMINGS.connect_timeout_s,  # §1 watchdog
                    ping_interval=None,  # SPI pings itself (§5.4)
                    close_timeout=1.0,
                    max_size=1 << 20,
                    ssl=ssl_ctx,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                retryable = is_retryable(exc)
                log.warning(
                    "terminal connect failed",
                    error=type(exc).__name__,
                    detail=str(exc)[:200],
                    attempt=failures,
                    retryable=retryable,
                )
                await self.lane.write_state(
                    last_error=f"connect: {type(exc).__name__}: {exc}"[:300]
                )
                await asyncio.sleep(next(delays) * (1 if retryable else 10))
                continue
            failures = 0
            await self._serve_connection(ws)
            if not self.lane.draining.is_set():
                await first(asyncio.sleep(next(delays)), self.lane.draining.wait())

    async def _serve_connection(self, ws: ClientConnection) -> None:
        self.lane.ws = ws
        log.info("terminal connected", subprotocol=ws.subprotocol)
        try:
            await feed(ws, self.lane.session, self.lane.step)
        finally:
            # Bounded: this also runs while the lane is being cancelled, and a
            # shutdown must never wait on a peer or a lock for ever.
            self.lane.ws = None
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await ws.close()
            except Exception as exc:
                log.info("terminal close did not complete", error=type(exc).__name__)
            try:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    async with asyncio.timeout(CLOSE_TIMEOUT_S):
                        await self.lane.step(self.lane.session.connection_lost)
                else:
                    # Its writes wait out a Redis outage (the link is opened
                    # again only after they landed); a stop ends the wait.
                    await self.lane.step(self.lane.session.connection_lost)
            except TimeoutError:
                log.warning("connection_lost bookkeeping timed out")
            except Stopping:
                log.info("connection_lost bookkeeping not written: stopping while Redis is away")
            log.info("terminal disconnected")

    async def _resolve_address(self) -> None:
        assert self.lane.address is not None
        assert self.lane.profile is not None
        result = await resolve_device_address(
            self.lane.profile, self.lane.deps.settings, current=self.lane.address.url()
        )
        log.info("device address lookup", code=str(result.code), detail=result.detail)
        # Only SUCCESS replaces the address; anything refused keeps the old one.
        if not self.lane.address.apply(result) and (
            result.code is not DeviceAddressResponseCode.ADDRESS_NOT_CHANGED
        ):
            await self.lane.write_state(
                last_error=f"device address: {result.code}: {result.detail}"
            )

    async def timer_loop(self) -> None:
        """Call the session's ``handle_timer`` at its next deadline, until stopped."""
        while not self.lane.stopped.is_set():
            deadline = self.lane.session.next_deadline()
            self.lane.wake.clear()
            if deadline is None:
                await self.lane.wake.wait()
                continue
            delay = deadline - self.lane.clock.time()
            if delay > 0:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                # cancellation that lands as the wake event is set (gh-86296),
                # and this loop would then outlive its task group.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self.lane.wake.wait()
                continue
            await self.lane.step(self.lane.session.handle_timer)
