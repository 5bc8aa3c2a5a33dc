"""The asyncio client's preauthorisation, account verify and Zip methods (PROTOCOL.md §7.16-17).

Each is a money command with a purchase's guarantees (docs/broker-schema.md):
it is sent, and its outcome awaited by ``command_id``, exactly as
:meth:`AsyncClient.purchase <multipair.client.AsyncClient.purchase>` does, through the
client's ``_money``. They live in this mixin only to keep ``_async.py`` a small room.

The lane keeps nothing about a preauthorisation beyond its transaction
records: the ``preauth_id`` a ``preauth_open`` outcome carries is the POS
backend's to keep, and every later step names it.
"""

# ruff: noqa: ASYNC109 - a per-call ``timeout`` is this API's contract, as in _async.py.

from __future__ import annotations

from typing import Any, Protocol

from multipair import broker_schema as bs
from multipair.client._events import EventCallback
from multipair.client.outcome import Outcome

__all__ = ["PreauthCommands"]


class _SendsMoney(Protocol):
    async def _money(
        self,
        instance_id: str,
        cls: type[bs.Command],
        *,
        pos_ref_id: str | None,
        timeout: float,
        on_event: EventCallback | None,
        **fields: Any,
    ) -> Outcome: ...


class PreauthCommands:
    """Preauthorisation, account verify and Zip for :class:`~multipair.client.AsyncClient`.

    Every method waits for the outcome and returns an :class:`Outcome`
    (``preauth_id``, ``transaction_type``, ``balance_before_cents``,
    ``balance_after_cents``, ``zip_data`` besides a purchase's fields); a
    decline is ``result == 'failed'``, not an exception. ``pos_ref_id``
    defaults to a fresh ``mp-...`` reference. Errors are those of ``purchase``:
    :class:`~multipair.client.CommandRejected`, and
    :class:`~multipair.client.OutcomeTimeout` meaning *unknown*: look the
    transaction up (``get_transaction``) before sending it again.
    """

    async def account_verify(
        self: _SendsMoney,
        instance_id: str,
        *,
        pos_ref_id: str | None = None,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """Check that a card is valid, moving no money."""
        return await self._money(
            instance_id, bs.AccountVerify, pos_ref_id=pos_ref_id, timeout=timeout, on_event=on_event
        )

    async def preauth_open(
        self: _SendsMoney,
        instance_id: str,
        amount_cents: int,
        *,
        pos_ref_id: str | None = None,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """Hold ``amount_cents`` on a card; keep the outcome's ``preauth_id`` for what follows."""
        return await self._money(
            instance_id,
            bs.PreauthOpen,
            pos_ref_id=pos_ref_id,
            timeout=timeout,
            on_event=on_event,
            amount_cents=amount_cents,
        )

    async def preauth_topup(
        self: _SendsMoney,
        instance_id: str,
        preauth_id: str,
        amount_cents: int,
        *,
        pos_ref_id: str | None = None,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """Raise the open preauthorisation ``preauth_id`` by ``amount_cents``."""
        return await self._money(
            instance_id,
            bs.PreauthTopup,
            pos_ref_id=pos_ref_id,
            timeout=timeout,
            on_event=on_event,
            preauth_id=preauth_id,
            amount_cents=amount_cents,
        )

    async def preauth_partial_cancel(
        self: _SendsMoney,
        instance_id: str,
        preauth_id: str,
        amount_cents: int,
        *,
        pos_ref_id: str | None = None,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """Release ``amount_cents`` of the open preauthorisation ``preauth_id``."""
        return await self._money(
            instance_id,
            bs.PreauthPartialCancel,
            pos_ref_id=pos_ref_id,
            timeout=timeout,
            on_event=on_event,
            preauth_id=preauth_id,
            amount_cents=amount_cents,
        )

    async def preauth_extend(
        self: _SendsMoney,
        instance_id: str,
        preauth_id: str,
        *,
        pos_ref_id: str | None = None,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """Extend the life of the open preauthorisation ``preauth_id``."""
        return await self._money(
            instance_id,
            bs.PreauthExtend,
            pos_ref_id=pos_ref_id,
            timeout=timeout,
            on_event=on_event,
            preauth_id=preauth_id,
        )

    async def preauth_cancel(
        self: _SendsMoney,
        instance_id: str,
        preauth_id: str,
        *,
        pos_ref_id: str | None = None,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """Release the whole of the open preauthorisation ``preauth_id``, closing it."""
        return await self._money(
            instance_id,
            bs.PreauthCancel,
            pos_ref_id=pos_ref_id,
            timeout=timeout,
            on_event=on_event,
            preauth_id=preauth_id,
        )

    async def preauth_complete(
        self: _SendsMoney,
        instance_id: str,
        preauth_id: str,
        amount_cents: int,
        *,
        surcharge_cents: int = 0,
        pos_ref_id: str | None = None,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """Capture ``amount_cents`` (plus ``surcharge_cents``) of ``preauth_id``, closing it."""
        return await self._money(
            instance_id,
            bs.PreauthComplete,
            pos_ref_id=pos_ref_id,
            timeout=timeout,
            on_event=on_event,
            preauth_id=preauth_id,
            amount_cents=amount_cents,
            surcharge_cents=surcharge_cents,
        )

    async def zip_purchase(
        self: _SendsMoney,
        instance_id: str,
        amount_cents: int,
        *,
        store_code: str,
        description: str = "",
        pos_ref_id: str | None = None,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """A Zip (buy now, pay later) purchase; its outcome's ``zip_data`` has the receipt."""
        return await self._money(
            instance_id,
            bs.ZipPurchase,
            pos_ref_id=pos_ref_id,
            timeout=timeout,
            on_event=on_event,
            amount_cents=amount_cents,
            store_code=store_code,
            description=description,
        )

    async def zip_refund(
        self: _SendsMoney,
        instance_id: str,
        amount_cents: int,
        *,
        original_receipt_number: str,
        pos_ref_id: str | None = None,
        timeout: float = 120.0,
        on_event: EventCallback | None = None,
    ) -> Outcome:
        """Refund a Zip purchase named by its ``zip_data.receipt_number``."""
        return await self._money(
            instance_id,
            bs.ZipRefund,
            pos_ref_id=pos_ref_id,
            timeout=timeout,
            on_event=on_event,
            amount_cents=amount_cents,
            original_receipt_number=original_receipt_number,
        )
