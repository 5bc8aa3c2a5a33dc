"""The blocking client: :class:`AsyncClient` run on a private event loop in a background thread.

Every method submits the matching coroutine to that loop
(``asyncio.run_coroutine_threadsafe``) and waits for it, so a ``Client`` may be
shared by several threads. Callbacks (``on_event``, a callable ``confirm``)
run on the background thread: keep them short and thread-safe.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator, Sequence
from functools import partial
from types import TracebackType
from typing import Any, Final, Self, TypeVar

from multipair import broker_schema as bs
from multipair.client._async import AsyncClient, EventCallback, require_url
from multipair.client._pairing import ConfirmPolicy
from multipair.client.outcome import LaneInfo, Outcome
from multipair.client.pay_at_table import (
    BillAnswer,
    OnServed,
    OpenTable,
    PayAtTableHandler,
)
from multipair.config import Settings
from multipair.redis_conn import connect
from multipair.store.profiles import LaneProfile
from multipair.store.secrets_box import MasterKey

__all__ = ["Client"]

_T = TypeVar("_T")

_WIND_DOWN_S: Final = 2.0
"""After Ctrl-C, how long ``pair`` waits for its call to send ``pair_cancel`` and end."""


class Client:
    """Blocking twin of :class:`AsyncClient`, for code without an event loop.

    ``redis_url`` names the lanes' Redis; ``prefix`` and ``master_key`` are
    as for :class:`AsyncClient`. Close it (or use ``with``) to stop its thread.
    """

    def __init__(
        self, redis_url: str, *, prefix: str = "mp", master_key: MasterKey | None = None
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="multipair-client", daemon=True
        )
        self._thread.start()
        self._closed = False

        async def build() -> AsyncClient:
            redis = await connect(redis_url)  # a single server or any node of a Redis Cluster
            client = AsyncClient(redis, prefix=prefix, master_key=master_key)
            client._owns_redis = True
            return client

        try:
            self._client = self._run(build())
        except BaseException:
            self._stop_loop()
            raise

    @classmethod
    def from_settings(cls, settings: Settings) -> Client:
        """A client on ``settings.redis_url`` with the settings' prefix and master key."""
        url = require_url(settings)
        return cls(url, prefix=settings.prefix, master_key=settings.master_key)

    def __repr__(self) -> str:
        return f"Client(keys={self._client.keys!r})"

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._closed:
            coro.close()
            raise RuntimeError("the client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def close(self) -> None:
        """Close the Redis connections and stop the background thread (idempotent)."""
        if self._closed:
            return
        try:
            self._run(self._client.aclose())
        finally:
            self._closed = True
            self._stop_loop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- lanes ------------------------------------------------------------------------------

    def add_lane(
        self,
        *,
        pos_id: str,
        serial_number: str,
        device_address: str | None = None,
        auto_address: bool = False,
        tenant_code: str | None = None,
        test_mode: bool = False,
        secure: bool = False,
        instance_id: str | None = None,
    ) -> LaneProfile:
        """See :meth:`AsyncClient.add_lane`."""
        return self._run(
            self._client.add_lane(
                pos_id=pos_id,
                serial_number=serial_number,
                device_address=device_address,
                auto_address=auto_address,
                tenant_code=tenant_code,
                test_mode=test_mode,
                secure=secure,
                instance_id=instance_id,
            )
        )

    def list_lanes(self) -> list[LaneProfile]:
        """See :meth:`AsyncClient.list_lanes`."""
        return self._run(self._client.list_lanes())

    def get_lane(self, instance_id: str) -> LaneProfile:
        """See :meth:`AsyncClient.get_lane`."""
        return self._run(self._client.get_lane(instance_id))

    def lane_info(self, instance_id: str) -> LaneInfo:
        """See :meth:`AsyncClient.lane_info`."""
        return self._run(self._client.lane_info(instance_id))

    def lanes_info(self) -> list[LaneInfo]:
        """See :meth:`AsyncClient.lanes_info`."""
        return self._run(self._client.lanes_info())

    def remove_lane(self, instance_id: str, *, unpair: bool = True, timeout: float = 10.0) -> None:
        """See :meth:`AsyncClient.remove_lane`."""
        self._run(self._client.remove_lane(instance_id, unpair=unpair, timeout=timeout))

    def set_enabled(self, instance_id: str, enabled: bool) -> None:
        """See :meth:`AsyncClient.set_enabled`."""
        self._run(self._client.set_enabled(instance_id, enabled))

    # --- commands ---------------------------------------------------------------------------

    def send(self, instance_id: str, command: bs.Command) -> str:
        """See :meth:`AsyncClient.send`."""
        return self._run(self._client.send(instance_id, command))

    def send_and_wait(
        self,
        instance_id: str,
        command: bs.Command,
        *,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> bs.Event:
        """See :meth:`AsyncClient.send_and_wait`."""
        return self._run(
            self._client.send_and_wait(instance_id, command, timeout=timeout, on_event=on_event)
        )

    def purchase(
        self,
        instance_id: str,
        amount_cents: int,
        *,
        pos_ref_id: str | None = None,
        tip_cents: int = 0,
        cashout_cents: int = 0,
        surcharge_cents: int = 0,
        prompt_for_cashout: bool = False,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """See :meth:`AsyncClient.purchase`."""
        return self._run(
            self._client.purchase(
                instance_id,
                amount_cents,
                pos_ref_id=pos_ref_id,
                tip_cents=tip_cents,
                cashout_cents=cashout_cents,
                surcharge_cents=surcharge_cents,
                prompt_for_cashout=prompt_for_cashout,
                timeout=timeout,
                on_event=on_event,
            )
        )

    def refund(
        self,
        instance_id: str,
        amount_cents: int,
        *,
        pos_ref_id: str | None = None,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """See :meth:`AsyncClient.refund`."""
        return self._run(
            self._client.refund(
                instance_id, amount_cents, pos_ref_id=pos_ref_id, timeout=timeout, on_event=on_event
            )
        )

    def cashout(
        self,
        instance_id: str,
        amount_cents: int,
        *,
        pos_ref_id: str | None = None,
        surcharge_cents: int = 0,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """See :meth:`AsyncClient.cashout`."""
        return self._run(
            self._client.cashout(
                instance_id,
                amount_cents,
                pos_ref_id=pos_ref_id,
                surcharge_cents=surcharge_cents,
                timeout=timeout,
                on_event=on_event,
            )
        )

    def moto_purchase(
        self,
        instance_id: str,
        amount_cents: int,
        *,
        pos_ref_id: str | None = None,
        surcharge_cents: int = 0,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """See :meth:`AsyncClient.moto_purchase`."""
        return self._run(
            self._client.moto_purchase(
                instance_id,
                amount_cents,
                pos_ref_id=pos_ref_id,
                surcharge_cents=surcharge_cents,
                timeout=timeout,
                on_event=on_event,
            )
        )

    def account_verify(
        self,
        instance_id: str,
        *,
        pos_ref_id: str | None = None,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """See :meth:`AsyncClient.account_verify`."""
        return self._run(
            self._client.account_verify(
                instance_id, pos_ref_id=pos_ref_id, timeout=timeout, on_event=on_event
            )
        )

    def preauth_open(
        self,
        instance_id: str,
        amount_cents: int,
        *,
        pos_ref_id: str | None = None,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """See :meth:`AsyncClient.preauth_open`."""
        return self._run(
            self._client.preauth_open(
                instance_id, amount_cents, pos_ref_id=pos_ref_id, timeout=timeout, on_event=on_event
            )
        )

    def preauth_topup(
        self,
        instance_id: str,
        preauth_id: str,
        amount_cents: int,
        *,
        pos_ref_id: str | None = None,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """See :meth:`AsyncClient.preauth_topup`."""
        return self._run(
            self._client.preauth_topup(
                instance_id,
                preauth_id,
                amount_cents,
                pos_ref_id=pos_ref_id,
                timeout=timeout,
                on_event=on_event,
            )
        )

    def preauth_partial_cancel(
        self,
        instance_id: str,
        preauth_id: str,
        amount_cents: int,
        *,
        pos_ref_id: str | None = None,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """See :meth:`AsyncClient.preauth_partial_cancel`."""
        return self._run(
            self._client.preauth_partial_cancel(
                instance_id,
                preauth_id,
                amount_cents,
                pos_ref_id=pos_ref_id,
                timeout=timeout,
                on_event=on_event,
            )
        )

    def preauth_extend(
        self,
        instance_id: str,
        preauth_id: str,
        *,
        pos_ref_id: str | None = None,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """See :meth:`AsyncClient.preauth_extend`."""
        return self._run(
            self._client.preauth_extend(
                instance_id, preauth_id, pos_ref_id=pos_ref_id, timeout=timeout, on_event=on_event
            )
        )

    def preauth_cancel(
        self,
        instance_id: str,
        preauth_id: str,
        *,
        pos_ref_id: str | None = None,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """See :meth:`AsyncClient.preauth_cancel`."""
        return self._run(
            self._client.preauth_cancel(
                instance_id, preauth_id, pos_ref_id=pos_ref_id, timeout=timeout, on_event=on_event
            )
        )

    def preauth_complete(
        self,
        instance_id: str,
        preauth_id: str,
        amount_cents: int,
        *,
        surcharge_cents: int = 0,
        pos_ref_id: str | None = None,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """See :meth:`AsyncClient.preauth_complete`."""
        return self._run(
            self._client.preauth_complete(
                instance_id,
                preauth_id,
                amount_cents,
                surcharge_cents=surcharge_cents,
                pos_ref_id=pos_ref_id,
                timeout=timeout,
                on_event=on_event,
            )
        )

    def zip_purchase(
        self,
        instance_id: str,
        amount_cents: int,
        *,
        store_code: str,
        description: str = "",
        pos_ref_id: str | None = None,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """See :meth:`AsyncClient.zip_purchase`."""
        return self._run(
            self._client.zip_purchase(
                instance_id,
                amount_cents,
                store_code=store_code,
                description=description,
                pos_ref_id=pos_ref_id,
                timeout=timeout,
                on_event=on_event,
            )
        )

    def zip_refund(
        self,
        instance_id: str,
        amount_cents: int,
        *,
        original_receipt_number: str,
        pos_ref_id: str | None = None,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """See :meth:`AsyncClient.zip_refund`."""
        return self._run(
            self._client.zip_refund(
                instance_id,
                amount_cents,
                original_receipt_number=original_receipt_number,
                pos_ref_id=pos_ref_id,
                timeout=timeout,
                on_event=on_event,
            )
        )

    def cancel(
        self, instance_id: str, *, pos_ref_id: str | None = None, timeout: float = 30.0
    ) -> bs.CommandAccepted:
        """See :meth:`AsyncClient.cancel`."""
        return self._run(self._client.cancel(instance_id, pos_ref_id=pos_ref_id, timeout=timeout))

    def get_transaction(
        self, instance_id: str, pos_ref_id: str, *, timeout: float = 60.0
    ) -> bs.TransactionLookup:
        """See :meth:`AsyncClient.get_transaction`."""
        return self._run(self._client.get_transaction(instance_id, pos_ref_id, timeout=timeout))

    def settle(
        self, instance_id: str, *, timeout: float = 120.0, on_event: EventCallback | None = None
    ) -> bs.Settlement:
        """See :meth:`AsyncClient.settle`."""
        return self._run(self._client.settle(instance_id, timeout=timeout, on_event=on_event))

    def settlement_enquiry(
        self, instance_id: str, *, timeout: float = 120.0, on_event: EventCallback | None = None
    ) -> bs.Settlement:
        """See :meth:`AsyncClient.settlement_enquiry`."""
        return self._run(
            self._client.settlement_enquiry(instance_id, timeout=timeout, on_event=on_event)
        )

    def terminal_status(
        self, instance_id: str, *, timeout: float = 30.0
    ) -> bs.TerminalStatusReport:
        """See :meth:`AsyncClient.terminal_status`."""
        return self._run(self._client.terminal_status(instance_id, timeout=timeout))

    def pair(
        self,
        instance_id: str,
        *,
        confirm: ConfirmPolicy = False,
        timeout: float = 180.0,
        on_event: EventCallback | None = None,
    ) -> bs.Pairing:
        """See :meth:`AsyncClient.pair` (a callable ``confirm`` runs on the client's thread).

        Ctrl-C (``KeyboardInterrupt``) while it waits gives the pairing up as
        a cancelled :meth:`AsyncClient.pair` does: ``pair_cancel`` is sent
        before the ``KeyboardInterrupt`` goes on.
        """
        ended = threading.Event()

        async def call() -> bs.Pairing:
            try:
                return await self._client.pair(
                    instance_id, confirm=confirm, timeout=timeout, on_event=on_event
                )
            finally:
                ended.set()

        if self._closed:
            raise RuntimeError("the client is closed")
        future = asyncio.run_coroutine_threadsafe(call(), self._loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()  # cancels the call on the loop: it sends pair_cancel as it ends
            ended.wait(_WIND_DOWN_S)
            raise

    # --- pay at table -----------------------------------------------------------------------

    def set_table_config(
        self, instance_id: str, *, timeout: float = 30.0, **options: Any
    ) -> bs.CommandAccepted:
        """See :meth:`AsyncClient.set_table_config` (the same keyword options)."""
        return self._run(self._client.set_table_config(instance_id, timeout=timeout, **options))

    def serve_pay_at_table(
        self,
        instance_id: str,
        handler: PayAtTableHandler,
        *,
        stop: threading.Event | None = None,
        since: str = "$",
        replay_duplicates: bool = False,
        on_served: OnServed | None = None,
    ) -> None:
        """See :meth:`AsyncClient.serve_pay_at_table`; blocks until ``stop`` is set or Ctrl-C.

        Each call of the handler's methods runs in a worker thread
        (``asyncio.to_thread``), so a slow one does not hold up the client's
        loop; ``on_served`` runs on the client's thread. Another
        thread ends the serving by setting ``stop``; ``stop`` is set when the
        serving ends for any reason (Ctrl-C, Redis lost), and that error is
        raised here.
        """
        stopped = stop if stop is not None else threading.Event()
        threaded = _Threaded(handler)

        async def call() -> None:
            serving = asyncio.create_task(
                self._client.serve_pay_at_table(
                    instance_id,
                    threaded,
                    since=since,
                    replay_duplicates=replay_duplicates,
                    on_served=on_served,
                )
            )
            waiting = asyncio.ensure_future(asyncio.to_thread(stopped.wait))
            try:
                await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.set()  # ends the thread waiting on it, whatever ended the serving
                serving.cancel()
                await asyncio.gather(serving, waiting, return_exceptions=True)
            error = None if serving.cancelled() else serving.exception()
            if error is not None:
                raise error

        if self._closed:
            raise RuntimeError("the client is closed")
        future = asyncio.run_coroutine_threadsafe(call(), self._loop)
        try:
            future.result()
        except KeyboardInterrupt:
            stopped.set()
            future.cancel()
            raise

    # --- events -----------------------------------------------------------------------------

    def last_event_id(self, instance_id: str) -> str:
        """See :meth:`AsyncClient.last_event_id`."""
        return self._run(self._client.last_event_id(instance_id))

    def events(
        self, instance_id: str, *, since: str = "$", follow: bool = True, count: int | None = None
    ) -> Iterator[tuple[str, bs.Event]]:
        """See :meth:`AsyncClient.events`; a plain iterator (close it to stop following)."""
        stream = self._client.events(instance_id, since=since, follow=follow, count=count)
        return self._iterate(stream)

    def _iterate(
        self, stream: AsyncGenerator[tuple[str, bs.Event], None]
    ) -> Iterator[tuple[str, bs.Event]]:
        async def step() -> tuple[str, bs.Event] | None:
            try:
                return await anext(stream)
            except StopAsyncIteration:
                return None

        try:
            while (item := self._run(step())) is not None:
                yield item
        finally:
            if not self._closed:
                self._run(stream.aclose())

    # --- hosts and ops ----------------------------------------------------------------------

    def send_control(
        self, host_id: str, action: str, instance_id: str, *, requested_by: str | None = None
    ) -> None:
        """See :meth:`AsyncClient.send_control`."""
        self._run(
            self._client.send_control(host_id, action, instance_id, requested_by=requested_by)
        )

    def lane_owner(self, instance_id: str) -> str | None:
        """See :meth:`AsyncClient.lane_owner`."""
        return self._run(self._client.lane_owner(instance_id))

    def hosts(self) -> list[dict[str, Any]]:
        """See :meth:`AsyncClient.hosts`."""
        return self._run(self._client.hosts())


class _Threaded:
    """A handler whose methods run in worker threads (``asyncio.to_thread``).

    A method that returns an awaitable (an ``async def``) has it awaited on
    the client's loop.
    """

    def __init__(self, handler: PayAtTableHandler) -> None:
        self._handler = handler
        on_payment = getattr(handler, "on_payment", None)
        on_flow_ended = getattr(handler, "on_flow_ended", None)
        if on_payment is not None:
            self.on_payment = partial(_in_thread, on_payment)
        if on_flow_ended is not None:
            self.on_flow_ended = partial(_in_thread, on_flow_ended)

    async def get_bill(
        self, table_id: str, operator_id: str, bill_id: str, *, payment_flow_started: bool
    ) -> BillAnswer:
        answer: BillAnswer = await _in_thread(
            self._handler.get_bill,
            table_id,
            operator_id,
            bill_id,
            payment_flow_started=payment_flow_started,
        )
        return answer

    async def get_open_tables(self, operator_id: str) -> Sequence[OpenTable]:
        tables: Sequence[OpenTable] = await _in_thread(self._handler.get_open_tables, operator_id)
        return tables


async def _in_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    result = await asyncio.to_thread(function, *args, **kwargs)
    if inspect.isawaitable(result):
        return await result
    return result
