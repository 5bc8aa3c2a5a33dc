"""The simulator's control API: HTTP + JSON, one server for all terminals (loopback by default).

Chaos tests, benchmarks and demos drive the simulated terminals only
through these routes. Every ``POST`` answers with the terminal's state after
the action (the same document ``GET /terminals/<serial>`` returns). Errors
are JSON ``{"error": ...}``: 404 unknown serial, 400 bad body, 409 a move the
terminal's state does not allow (e.g. confirm when no pairing waits).

=======  ===========================================  =========================================
method   path                                         body
=======  ===========================================  =========================================
GET      /terminals                                   –
GET      /terminals/<serial>                          –
POST     /terminals/<serial>/outcome                  ``{"outcome": name|null, "sticky": bool}``
POST     /terminals/<serial>/card-delay               ``{"seconds": 2.5}``
POST     /terminals/<serial>/pairing/confirm          –
POST     /terminals/<serial>/pairing/reject           –
POST     /terminals/<serial>/pairing/mode             ``{"mode": "auto"|"manual"|"delay:S"}``
POST     /terminals/<serial>/drop                     ``{"at": "now"|step, "abort": bool}``
POST     /terminals/<serial>/refuse                   ``{"seconds": 10}``
POST     /terminals/<serial>/key-rollover             ``{"switch": true}``
POST     /terminals/<serial>/battery                  ``{"level": 15}``
POST     /terminals/<serial>/inject                   ``{"kind": "garbage"|"bad_signature",
                                                      "text": "..."}``
POST     /terminals/<serial>/unpair                   –
POST     /terminals/<serial>/spi-token                ``{"token": "..."}``
POST     /terminals/<serial>/options                  any of ``terminal_model``,
                                                      ``answer_pings``, ``pong_delay``,
                                                      ``ping_interval``, ``answer_cancel``,
                                                      ``cancel_completion_delay``,
                                                      ``get_transaction_error``,
                                                      ``pos_spi_token``, ``slow_card_seconds``,
                                                      ``processing_seconds``
POST     /terminals/<serial>/device-address           ``{"ip": "h:p", "fqdn": "h:p",
                                                      "fault": "none"|"error"|"hang"|"not_found",
                                                      "hang_seconds": 10}``
POST     /terminals/<serial>/preauths                 ``{"amount_cents": 5000}``
POST     /terminals/<serial>/pat/config               ``{}`` (get_table_config)
POST     /terminals/<serial>/pat/tables               ``{"operator_id": "7"}``
POST     /terminals/<serial>/pat/bill                 ``{"table_id": "12", "operator_id": "7",
                                                      "bill_id": "",
                                                      "payment_flow_started": false}``
POST     /terminals/<serial>/pat/pay                  ``{"bill_id", "table_id", "operator_id",
                                                      "payment_type": "card"|"cash",
                                                      "amount_cents", "tip_cents": 0,
                                                      "repeat": false}``
POST     /terminals/<serial>/pat/end                  ``{"bill_id", "table_id", "operator_id"}``
POST     /terminals/<serial>/pat/session              ``{"table_id", "operator_id", "payments":
                                                      [{"payment_type", "amount_cents",
                                                      "tip_cents"}, ...]}``
=======  ===========================================  =========================================

Steps for ``drop``: ``after_request_received``, ``after_result_before_send``,
``while_awaiting_signature`` (one-shot, for the current or next transaction;
the terminal completes the transaction internally all the same, so a correct
POS must recover it). Outcome names: see :mod:`multipair.simulator.rules`.

``preauths`` opens a preauthorisation at the simulated acquirer, as if opened
earlier elsewhere, so a POS can top it up, extend, cancel or complete it by
id; the answer is ``{"preauth_id": ..., **state}``. The state document shows
every preauth (``preauths``: ``{id: {"balance": cents, "open": bool}}``), the
last ``set_table_config`` data the POS pushed or answered (``table_config``,
null before any) and the pay-at-table requests still waiting (``pat_pending``:
``[{"request_id", "event"}]``).

Pay at table (§7.23): the ``pat/`` routes make the terminal start a request
(``pat/config`` get_table_config, ``tables`` get_open_tables, ``bill``
get_bill_details, ``pay`` bill_payment, ``end`` bill_payment_flow_ended) and
wait up to ``timeout`` seconds (body, default 30) for the POS's reply: 200
``{"request_id", "request": {"event", "data"}, "reply": {"event",
"message_id", "data"}, **state}``, the reply as the POS sent it (an error
``bill_details`` too). 504 ``{"error", "request_id", "request", "replies"}``
when none came: the request is abandoned, a late reply is ignored and the
terminal stays usable. 409 when no paired POS is connected, or ``repeat``
with nothing to repeat.

``pay``: a ``card`` payment goes through the bank like a purchase (cents
``.51`` or the ``outcome`` override ``decline`` declines, ``.56``/``partial``
approves half, anything else approves; STAN, RRN, auth code,
``terminal_ref_id``, receipts, the settlement batch); a ``cash`` one gets the
few fields of a cash history entry. The answer adds ``payment_details`` and
``sent``; a declined card is not reported to the POS (``sent: false``,
``reply: null``). ``repeat: true`` sends the previous bill_payment again
unchanged (same ``terminal_ref_id``; other body fields are ignored).
``end`` reports this bill's flow totals (payments taken since its last
acknowledged end; a repeat is not counted again) with the bill's totals from
the POS's last successful ``bill_details``, and waits for the
``bill_payment_flow_ended_ack`` (new id, matched by ``bill_id``).
``session`` plays a visit: bill (``payment_flow_started: true``), each
payment, end; it answers ``{"replies": [step, ...], **state}`` (each step as
``pat/bill`` or ``pat/pay`` answer it, without the state) and stops after an
error bill; a 504 carries the steps done so far in ``replies``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from multipair.exceptions import LocalProtocolError
from multipair.simulator.pay_at_table import Exchange, NoReply
from multipair.simulator.rules import Behaviour, DropStep, parse_pairing_mode
from multipair.simulator.virtual import SimulatedTerminal
from multipair.spi import messages as m
from multipair.spi.envelope import JsonObject

__all__ = ["build_control_app"]

Lookup = Callable[[str], SimulatedTerminal | None]
_Handler = Callable[[web.Request, SimulatedTerminal, JsonObject], Awaitable[JsonObject]]

_FLOAT_OPTIONS: Final = ("pong_delay", "pong_timeout")
_OPTIONAL_FLOAT_OPTIONS: Final = ("ping_interval", "cancel_completion_delay")
_BOOL_OPTIONS: Final = ("answer_pings", "answer_cancel", "charging")
_OPTIONAL_STR_OPTIONS: Final = ("get_transaction_error", "pos_spi_token")
_DEFAULT_PAT_WAIT: Final = 30.0
_MAX_CENTS: Final = m.MAX_AMOUNT


class _BadRequest(Exception):
    pass


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _number(body: JsonObject, key: str, *, minimum: float = 0.0) -> float:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise _BadRequest(f"{key!r} must be a number >= {minimum:g}")
    return float(value)


def _flag(body: JsonObject, key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise _BadRequest(f"{key!r} must be true or false")
    return value


def _cents(body: JsonObject, key: str, *, minimum: int = 1, default: int | None = None) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= _MAX_CENTS:
        raise _BadRequest(f"{key!r} must be an integer of cents >= {minimum}")
    return value


def _text(body: JsonObject, key: str, *, default: str | None = None) -> str:
    value = body.get(key, default)
    if not isinstance(value, str):
        raise _BadRequest(f"{key!r} must be a string")
    return value


def _patience(body: JsonObject) -> float:
    if "timeout" not in body:
        return _DEFAULT_PAT_WAIT
    value = _number(body, "timeout")
    if value <= 0:
        raise _BadRequest("'timeout' must be a number > 0")
    return value


def _payments(body: JsonObject) -> list[JsonObject]:
    items = body.get("payments")
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise _BadRequest("'payments' must be a list of objects")
    checked: list[JsonObject] = []
    for item in items:
        kind = item.get("payment_type", "card")
        if kind not in m.PAYMENT_TYPES:
            raise _BadRequest("'payment_type' must be 'card' or 'cash'")
        checked.append(
            {
                "payment_type": kind,
                "amount_cents": _cents(item, "amount_cents"),
                "tip_cents": _cents(item, "tip_cents", minimum=0, default=0),
            }
        )
    return checked


def build_control_app(
    lookup: Lookup, every: Callable[[], list[SimulatedTerminal]]
) -> web.Application:
    """The aiohttp application; ``lookup`` finds a terminal by serial, ``every`` lists them."""

    def route(handler: _Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def wrapped(request: web.Request) -> web.Response:
            terminal = lookup(request.match_info["serial"])
            if terminal is None:
                return _error(404, "unknown terminal")
            body: JsonObject = {}
            if request.body_exists:
                try:
                    parsed = await request.json()
                except ValueError:
                    return _error(400, "body is not JSON")
                if not isinstance(parsed, dict):
                    return _error(400, "body must be a JSON object")
                body = parsed
            try:
                result = await handler(request, terminal, body)
            except _BadRequest as exc:
                return _error(400, str(exc))
            except LocalProtocolError as exc:
                return _error(409, str(exc))
            except NoReply as exc:
                return web.json_response(
                    {
                        "error": str(exc),
                        "request_id": exc.request_id,
                        "request": {"event": str(exc.request.event), "data": exc.request.to_data()},
                        "replies": exc.done,
                    },
                    status=504,
                )
            return web.json_response(result)

        return wrapped

    async def list_terminals(request: web.Request) -> web.Response:
        return web.json_response({"terminals": [t.snapshot() for t in every()]})

    async def show(request: web.Request, t: SimulatedTerminal, body: JsonObject) -> JsonObject:
        return t.snapshot()

    async def outcome(request: web.Request, t: SimulatedTerminal, body: JsonObject) -> JsonObject:
        name = body.get("outcome")
        sticky = _flag(body, "sticky", False)
        try:
            behaviour = None if name is None else Behaviour(name)
        except ValueError:
            raise _BadRequest(
                f"unknown outcome {name!r}; one of {', '.join(b.value for b in Behaviour)}"
            ) from None
        if sticky:
            t.settings.sticky_outcome = behaviour
        else:
            t.settings.next_outcome = behaviour
        return t.snapshot()

    async def card_delay(
        request: web.Request, t: SimulatedTerminal, body: JsonObject
    ) -> JsonObject:
        t.settings.card_delay = _number(body, "seconds")
        return t.snapshot()

    async def confirm(request: web.Request, t: SimulatedTerminal, body: JsonObject) -> JsonObject:
        t.act(t.session.confirm_pairing)
        return t.snapshot()

    async def reject(request: web.Request, t: SimulatedTerminal, body: JsonObject) -> JsonObject:
        t.act(t.session.reject_pairing)
        return t.snapshot()

    async def pairing_mode(
        request: web.Request, t: SimulatedTerminal, body: JsonObject
    ) -> JsonObject:
        try:
            mode, delay = parse_pairing_mode(str(body.get("mode")))
        except ValueError as exc:
            raise _BadRequest(str(exc)) from None
        t.settings.pairing_mode, t.settings.pairing_delay = mode, delay
        return t.snapshot()

    async def drop(request: web.Request, t: SimulatedTerminal, body: JsonObject) -> JsonObject:
        at = body.get("at", "now")
        abort = _flag(body, "abort", False)
        if at == "now":
            dropped = await t.drop("dropped through the control API", abort=abort)
            return {"dropped": dropped, **t.snapshot()}
        try:
            step = DropStep(at)
        except ValueError:
            raise _BadRequest(
                f"unknown step {at!r}; 'now' or one of {', '.join(s.value for s in DropStep)}"
            ) from None
        t.settings.drop_at = step
        return {"dropped": False, **t.snapshot()}

    async def refuse(request: web.Request, t: SimulatedTerminal, body: JsonObject) -> JsonObject:
        t.settings.refuse_until = time.time() + _number(body, "seconds")
        return t.snapshot()

    async def key_rollover(
        request: web.Request, t: SimulatedTerminal, body: JsonObject
    ) -> JsonObject:
        switch = _flag(body, "switch", True)
        t.act(lambda now: t.session.start_key_rollover(now, switch=switch))
        return t.snapshot()

    async def battery(request: web.Request, t: SimulatedTerminal, body: JsonObject) -> JsonObject:
        level = body.get("level")
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 100:
            raise _BadRequest("'level' must be an integer 0..100")
        t.act(lambda now: t.session.send_battery_level(level, now))
        return t.snapshot()

    async def inject(request: web.Request, t: SimulatedTerminal, body: JsonObject) -> JsonObject:
        kind = body.get("kind")
        if kind == "garbage":
            text = body.get("text", "this is not an SPI frame {")
            if not isinstance(text, str):
                raise _BadRequest("'text' must be a string")
            t.act(lambda now: t.session.inject_raw(text))
        elif kind == "bad_signature":
            t.act(t.session.inject_bad_signature)
        else:
            raise _BadRequest("'kind' must be 'garbage' or 'bad_signature'")
        return t.snapshot()

    async def unpair(request: web.Request, t: SimulatedTerminal, body: JsonObject) -> JsonObject:
        t.act(t.session.unpair)
        return t.snapshot()

    async def spi_token(request: web.Request, t: SimulatedTerminal, body: JsonObject) -> JsonObject:
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise _BadRequest("'token' must be a non-empty string")
        t.act(lambda now: t.session.send_pos_spi_token(token, now))
        return t.snapshot()

    async def options(request: web.Request, t: SimulatedTerminal, body: JsonObject) -> JsonObject:
        opts = t.session.options
        changes: dict[str, Any] = {}
        for key, value in body.items():
            if key in _FLOAT_OPTIONS:
                changes[key] = _number(body, key)
            elif key in _OPTIONAL_FLOAT_OPTIONS:
                changes[key] = None if value is None else _number(body, key)
            elif key in _BOOL_OPTIONS:
                changes[key] = _flag(body, key, False)
            elif key in _OPTIONAL_STR_OPTIONS:
                if value is not None and not isinstance(value, str):
                    raise _BadRequest(f"{key!r} must be a string or null")
                changes[key] = value
            elif key == "terminal_model":
                if not isinstance(value, str) or not value:
                    raise _BadRequest("'terminal_model' must be a non-empty string")
                changes[key] = value
            elif key in ("slow_card_seconds", "processing_seconds"):
                changes[key] = _number(body, key)
            else:
                raise _BadRequest(f"unknown option {key!r}")
        for key, value in changes.items():
            if key in ("slow_card_seconds", "processing_seconds"):
                setattr(t.settings, key, value)
            else:
                setattr(opts, key, value)
        t.act(t.session.options_changed)
        return t.snapshot()

    async def device_address(
        request: web.Request, t: SimulatedTerminal, body: JsonObject
    ) -> JsonObject:
        for kind in ("ip", "fqdn"):
            if kind in body:
                value = body[kind]
                if value is None:
                    t.address_override.pop(kind, None)
                elif isinstance(value, str) and value:
                    t.address_override[kind] = value
                else:
                    raise _BadRequest(f"{kind!r} must be a non-empty string or null")
                t.address_updated_at = time.time()
        if "fault" in body:
            fault = body["fault"]
            if fault not in ("none", "error", "hang", "not_found"):
                raise _BadRequest("'fault' must be none, error, hang or not_found")
            t.device_address.mode = fault
        if "hang_seconds" in body:
            t.device_address.hang_seconds = _number(body, "hang_seconds")
        return {
            "ip": t.advertised_address("ip"),
            "fqdn": t.advertised_address("fqdn"),
            "fault": t.device_address.mode,
            "hang_seconds": t.device_address.hang_seconds,
        }

    async def preauths(request: web.Request, t: SimulatedTerminal, body: JsonObject) -> JsonObject:
        pid = t.open_preauth(_cents(body, "amount_cents"))
        return {"preauth_id": pid, **t.snapshot()}

    def answer(done: Exchange, t: SimulatedTerminal) -> JsonObject:
        return {**done.to_json(), **t.snapshot()}

    async def pat_config(
        request: web.Request, t: SimulatedTerminal, body: JsonObject
    ) -> JsonObject:
        return answer(await t.pat.exchange(m.GetTableConfigRequest(), _patience(body)), t)

    async def pat_tables(
        request: web.Request, t: SimulatedTerminal, body: JsonObject
    ) -> JsonObject:
        ask = m.GetOpenTablesRequest(operator_id=_text(body, "operator_id", default=""))
        return answer(await t.pat.exchange(ask, _patience(body)), t)

    async def pat_bill(request: web.Request, t: SimulatedTerminal, body: JsonObject) -> JsonObject:
        ask = m.GetBillDetailsRequest(
            table_id=_text(body, "table_id"),
            operator_id=_text(body, "operator_id", default=""),
            bill_id=_text(body, "bill_id", default=""),
            payment_flow_started=_flag(body, "payment_flow_started", False),
        )
        return answer(await t.pat.exchange(ask, _patience(body)), t)

    async def pat_pay(request: web.Request, t: SimulatedTerminal, body: JsonObject) -> JsonObject:
        patience = _patience(body)
        if _flag(body, "repeat", False):
            payment = await t.pat.pay(
                bill_id="",
                table_id="",
                operator_id="",
                payment_type="card",
                amount=0,
                tip=0,
                repeat=True,
                patience=patience,
            )
        else:
            kind = body.get("payment_type", "card")
            if kind not in m.PAYMENT_TYPES:
                raise _BadRequest("'payment_type' must be 'card' or 'cash'")
            payment = await t.pat.pay(
                bill_id=_text(body, "bill_id"),
                table_id=_text(body, "table_id"),
                operator_id=_text(body, "operator_id", default=""),
                payment_type=kind,
                amount=_cents(body, "amount_cents"),
                tip=_cents(body, "tip_cents", minimum=0, default=0),
                repeat=False,
                patience=patience,
            )
        return {**payment.to_json(), **t.snapshot()}

    async def pat_end(request: web.Request, t: SimulatedTerminal, body: JsonObject) -> JsonObject:
        done = await t.pat.end(
            bill_id=_text(body, "bill_id"),
            table_id=_text(body, "table_id", default=""),
            operator_id=_text(body, "operator_id", default=""),
            patience=_patience(body),
        )
        return answer(done, t)

    async def pat_session(
        request: web.Request, t: SimulatedTerminal, body: JsonObject
    ) -> JsonObject:
        steps = await t.pat.session(
            table_id=_text(body, "table_id"),
            operator_id=_text(body, "operator_id", default=""),
            payments=_payments(body),
            patience=_patience(body),
        )
        return {"replies": steps, **t.snapshot()}

    app = web.Application()
    app.router.add_get("/terminals", list_terminals)
    app.router.add_get("/terminals/{serial}", route(show))
    posts: dict[str, _Handler] = {
        "outcome": outcome,
        "card-delay": card_delay,
        "pairing/confirm": confirm,
        "pairing/reject": reject,
        "pairing/mode": pairing_mode,
        "drop": drop,
        "refuse": refuse,
        "key-rollover": key_rollover,
        "battery": battery,
        "inject": inject,
        "unpair": unpair,
        "spi-token": spi_token,
        "options": options,
        "device-address": device_address,
        "preauths": preauths,
        "pat/config": pat_config,
        "pat/tables": pat_tables,
        "pat/bill": pat_bill,
        "pat/pay": pat_pay,
        "pat/end": pat_end,
        "pat/session": pat_session,
    }
    for path, handler in posts.items():
        app.router.add_post(f"/terminals/{{serial}}/{path}", route(handler))
    return app
