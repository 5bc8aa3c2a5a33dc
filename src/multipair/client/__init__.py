"""Drive multipair lanes from a Python POS backend: send commands, await outcomes, follow events.

Async (one ``AsyncClient`` per process, shared by all tasks)::

    import redis.asyncio as aioredis
    from multipair.client import AsyncClient

    async with AsyncClient(aioredis.Redis.from_url("redis://localhost:6379/0")) as mp:
        outcome = await mp.purchase(
            "8a5e2dcc-bfa0-469f-95d7-eec778b08453",
            1250,  # integer cents: $12.50
            on_event=lambda e: print(getattr(e, "display_text", None) or e.type),
        )
        if outcome.approved:
            print(outcome.host_response_text, outcome.customer_receipt)

Sync (a private event loop on a background thread)::

    from multipair.client import Client

    with Client("redis://localhost:6379/0") as mp:
        outcome = mp.purchase("8a5e2dcc-bfa0-469f-95d7-eec778b08453", 1250)
        print(outcome.result, outcome.pos_ref_id)

Every money command has its method, answering an :class:`Outcome`:
``purchase``, ``refund``, ``cashout``, ``moto_purchase``, ``account_verify``,
``preauth_open`` (keep its ``preauth_id``), ``preauth_topup``,
``preauth_partial_cancel``, ``preauth_extend``, ``preauth_cancel``,
``preauth_complete``, ``zip_purchase`` and ``zip_refund`` (docs/integration.md).

``Client(url)``, ``Client.from_settings`` and ``AsyncClient.connect(settings)``
work with a single Redis or a Redis Cluster alike: the URL may name any
node of a cluster (:func:`multipair.redis_conn.connect` asks which it is).
An ``AsyncClient`` built by hand takes ``await multipair.redis_conn.connect(url)``
or a ``redis.asyncio.RedisCluster`` just as well as a ``Redis``.

A declined purchase is an :class:`Outcome` with ``result == 'failed'``; the
errors are typed (all :class:`ClientError`, itself a ``MultipairError``):

- :class:`LaneNotFound`: no lane has that instance id; nothing was sent.
- :class:`CommandRejected`: the lane refused the command; ``reason`` is
  machine-readable (``not_allowed``, ``duplicate_pos_ref_id``, ...).
- :class:`OutcomeTimeout`: no final answer in time. The outcome is
  *unknown*, not failed: call ``get_transaction(instance_id, pos_ref_id)``
  before charging again.

Pay at table (the terminal asks the POS for bills, PROTOCOL.md §7.23):
``serve_pay_at_table(instance_id, handler)`` answers a lane's bill and
open-table requests with a :class:`PayAtTableHandler` (``get_bill`` returns
a :class:`Bill` or a :class:`BillError`, ``get_open_tables`` a list of
:class:`OpenTable`); see :mod:`multipair.client.pay_at_table`.

Redis being unreachable raises :class:`multipair.exceptions.RetryLater`.
Money is integer cents; a float, a bool or a string is refused
(``ClientError('wrong_type')``) before anything is sent.
"""

from __future__ import annotations

from multipair.client._async import AsyncClient, EventCallback, new_command_id, new_pos_ref_id
from multipair.client._sync import Client
from multipair.client.errors import ClientError, CommandRejected, LaneNotFound, OutcomeTimeout
from multipair.client.outcome import LaneInfo, Outcome
from multipair.client.pay_at_table import Bill, BillError, OpenTable, PayAtTableHandler, Served

__all__ = [
    "AsyncClient",
    "Bill",
    "BillError",
    "Client",
    "ClientError",
    "CommandRejected",
    "EventCallback",
    "LaneInfo",
    "LaneNotFound",
    "OpenTable",
    "Outcome",
    "OutcomeTimeout",
    "PayAtTableHandler",
    "Served",
    "new_command_id",
    "new_pos_ref_id",
]
