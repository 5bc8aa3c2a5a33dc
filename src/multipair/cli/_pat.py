"""Pay at table from the command line: ``lane set-pat`` (ops) and ``pat serve`` (a POS stand-in).

``lane set-pat ID`` changes a lane's pay-at-table set-up (PROTOCOL.md §7.23).
While the lane runs, the change goes to it as a ``set_table_config``
command: the lane keeps it in its profile and tells its terminal at once.
A lane that does not run gets it in its profile directly; it tells the
terminal when it next connects.

``pat serve ID --bills FILE.json`` answers the lane's bill and open-table
requests from a JSON file, through ``AsyncClient.serve_pay_at_table``: a
stand-in for the POS for trials, demos and tests. Payments reduce the
outstanding amounts in memory only (the file is never written). The file
(examples/pat-bills.json)::

    {
      "operators": ["7", "12"],
      "bills": [
        {"table_id": "12", "bill_id": "B-1012", "label": "Window", "total_cents": 8450},
        {"table_id": "14", "bill_id": "B-1014", "total_cents": 12000, "outstanding_cents": 7000}
      ]
    }

``operators`` (optional, empty = any) are the operator ids allowed to take
payments; ``label`` defaults to ``Table <table_id>``, ``outstanding_cents``
to ``total_cents``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Final

import orjson

from multipair import broker_schema as bs
from multipair.broker_schema.events import (
    BillFlowEnded,
    BillPaymentReported,
    BillRequested,
    BillRequestExpired,
    OpenTablesRequested,
)
from multipair.broker_schema.pat_commands import SetTableConfig
from multipair.cli._base import (
    Context,
    ExitCode,
    Fail,
    Parser,
    Subparsers,
    add_global_options,
    add_lane_argument,
    client_command,
    seconds,
)
from multipair.cli._views import is_running, resolve_lane
from multipair.cli.amounts import format_cents
from multipair.client import AsyncClient, Bill, BillError, OpenTable, Served
from multipair.client.pay_at_table import BillAnswer
from multipair.store.profiles import PayAtTableConfig, ProfileStore

__all__ = [
    "BillBook",
    "add_pat_parser",
    "add_set_pat_parser",
    "describe_config",
    "load_bills",
    "pat_summary",
    "served_json",
    "served_text",
]

# ---------------------------------------------------------------------- lane set-pat

_SWITCHES: Final = (
    # (option, set_table_config field, help)
    ("operator-id", "operator_id_enabled", "the terminal asks for an operator id"),
    ("split-by-amount", "split_by_amount_enabled", "a bill may be split by amount"),
    ("equal-split", "equal_split_enabled", "a bill may be split in equal parts"),
    ("tipping", "tipping_enabled", "the customer may add a tip"),
    ("summary-report", "summary_report_enabled", "the terminal prints a summary report"),
    ("table-retrieval", "table_retrieval_enabled", "the terminal may list the open tables"),
)
_LABELS: Final = {
    "pay": "pay_button_label",
    "operator": "operator_id_label",
    "table": "table_id_label",
}


def add_set_pat_parser(actions: Subparsers, common: Parser) -> None:
    """Register ``multipair lane set-pat`` (called by ``add_lane_parser``)."""
    parser = actions.add_parser(
        "set-pat",
        parents=[common],
        help="change the lane's pay-at-table set-up",
        description=(
            "Change the lane's pay-at-table set-up (what the terminal offers and shows); options "
            "left out keep their value. A running lane gets it as a set_table_config command and "
            "tells its terminal at once; otherwise it is saved in the profile, for the lane's "
            "next start. Prints the whole set-up (--json: "
            '{"instance_id", "pat", "via": "lane"|"profile"}).'
        ),
    )
    add_lane_argument(parser)
    onoff = parser.add_mutually_exclusive_group()
    onoff.add_argument(
        "--enabled", dest="enabled", action="store_const", const=True, help="turn pay at table on"
    )
    onoff.add_argument(
        "--disabled", dest="enabled", action="store_const", const=False, help="turn it off"
    )
    for option, dest, text in _SWITCHES:
        parser.add_argument(
            f"--{option}", dest=dest, action=argparse.BooleanOptionalAction, help=text
        )
    parser.add_argument(
        "--operator-ids",
        type=_operator_ids,
        metavar="A,B",
        help='the operator ids allowed to take payments ("" = any)',
    )
    parser.add_argument(
        "--labels",
        type=_labels,
        metavar="pay=...,operator=...,table=...",
        help="what the terminal shows on its pay button and its operator and table prompts",
    )
    parser.add_argument(
        "--answer-timeout",
        type=_answer_timeout,
        dest="answer_timeout_ms",
        metavar="SECONDS",
        help="how long the lane waits for the POS's answer to a request (1-60; default 10)",
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=30.0,
        metavar="S",
        help="how long to wait for a running lane to take the change (30)",
    )
    parser.set_defaults(handler=client_command(_set_pat))


def _operator_ids(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for part in text.split(","):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or name not in _LABELS:
            raise argparse.ArgumentTypeError(
                f"{part!r}: give NAME=TEXT pairs, NAME one of {', '.join(_LABELS)}"
            )
        labels[_LABELS[name]] = value
    return labels


def _answer_timeout(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 1 <= value <= 60:
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds from 1 to 60")
    return round(value * 1000)


def _set_pat_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {
        "enabled": args.enabled,
        **{dest: getattr(args, dest) for _, dest, _ in _SWITCHES},
        **(args.labels or {}),
        "operator_ids": args.operator_ids,
        "answer_timeout_ms": args.answer_timeout_ms,
    }
    return {name: value for name, value in options.items() if value is not None}


async def _set_pat(ctx: Context, client: AsyncClient) -> int:
    options = _set_pat_options(ctx.args)
    if not options:
        raise Fail("nothing to change: give at least one option (see --help)")
    command = SetTableConfig(command_id="check", **options)  # a bad value: exit 2 here
    iid = await resolve_lane(client, ctx.args.id)
    info = await client.lane_info(iid)
    if is_running(info):
        await client.set_table_config(iid, timeout=ctx.args.timeout, **options)
        via = "lane"
        config = (await client.get_lane(iid)).pat
    else:
        profiles = ProfileStore(client.redis, client.keys)
        config = (info.profile.pat or PayAtTableConfig()).updated(command)
        await profiles.update(iid, pat=config)
        via = "profile"
    if config is None:  # the lane took the command, so its profile has a set-up
        raise Fail(f"lane {iid} took the change but its profile shows no pay-at-table set-up")
    if ctx.json:
        ctx.emit({"instance_id": iid, "pat": dataclasses.asdict(config), "via": via})
        return ExitCode.OK
    for line in describe_config(config):
        ctx.say(line)
    if via == "lane":
        ctx.say(f"Lane {iid} took the change and tells its terminal.")
    else:
        ctx.say(f"Saved in lane {iid}'s profile; the lane tells its terminal when it next runs.")
    return ExitCode.OK


def describe_config(config: PayAtTableConfig) -> list[str]:
    """The set-up as ``key  value`` lines for people."""

    def onoff(flag: bool) -> str:
        return "on" if flag else "off"

    rows = [
        ("pay at table", onoff(config.enabled)),
        ("operator ids", ", ".join(config.operator_ids) or "any"),
        ("operator id entry", onoff(config.operator_id_enabled)),
        ("split by amount", onoff(config.split_by_amount_enabled)),
        ("equal split", onoff(config.equal_split_enabled)),
        ("tipping", onoff(config.tipping_enabled)),
        ("summary report", onoff(config.summary_report_enabled)),
        ("table retrieval", onoff(config.table_retrieval_enabled)),
        ("labels", _labels_text(config)),
        ("answer timeout", f"{config.answer_timeout_ms / 1000:g} s"),
    ]
    width = max(len(key) for key, _ in rows)
    return [f"{key:<{width}}  {value}" for key, value in rows]


def pat_summary(config: PayAtTableConfig | None) -> str:
    """One line for ``lane show``: on or off, who may take payments, the answer timeout."""
    if config is None:
        return "off (never set up: `lane set-pat`)"
    if not config.enabled:
        return "off"
    operators = ", ".join(config.operator_ids) or "any"
    return (
        f"on; operators {operators}; the POS answers within {config.answer_timeout_ms / 1000:g} s"
    )


def _labels_text(config: PayAtTableConfig) -> str:
    return ", ".join(f"{name}={getattr(config, field)!r}" for name, field in _LABELS.items())


# ---------------------------------------------------------------------- pat serve


@dataclasses.dataclass
class _OpenBill:
    table_id: str
    bill_id: str
    label: str
    total_cents: int
    outstanding_cents: int

    def bill(self) -> Bill:
        return Bill(
            bill_id=self.bill_id,
            table_id=self.table_id,
            total_cents=self.total_cents,
            outstanding_cents=self.outstanding_cents,
        )


class BillBook:
    """The POS stand-in: bills by table, payments booked in memory (a ``PayAtTableHandler``)."""

    def __init__(self, bills: list[_OpenBill], operators: tuple[str, ...]) -> None:
        self._by_table = {b.table_id: b for b in bills}
        self._by_id = {b.bill_id: b for b in bills}
        self._operators = frozenset(operators)

    def _operator_ok(self, operator_id: str) -> bool:
        return not self._operators or operator_id in self._operators

    def get_bill(
        self, table_id: str, operator_id: str, bill_id: str, *, payment_flow_started: bool
    ) -> BillAnswer:
        """The table's bill (the named one, when the terminal names a bill)."""
        if not self._operator_ok(operator_id):
            return BillError.INVALID_OPERATOR_ID
        if bill_id:
            named = self._by_id.get(bill_id)
            if named is None or (table_id and named.table_id != table_id):
                return BillError.INVALID_BILL_ID
            return named.bill()
        found = self._by_table.get(table_id)
        return BillError.INVALID_TABLE_ID if found is None else found.bill()

    def get_open_tables(self, operator_id: str) -> list[OpenTable]:
        """Every table with something left to pay (none for an operator not allowed)."""
        if not self._operator_ok(operator_id):
            return []
        return [
            OpenTable(table_id=b.table_id, label=b.label, outstanding_cents=b.outstanding_cents)
            for b in self._by_table.values()
            if b.outstanding_cents > 0
        ]

    def on_payment(self, report: BillPaymentReported) -> BillAnswer:
        """Book a payment: the outstanding amount goes down by it (never below 0)."""
        found = self._by_id.get(report.bill_id) or self._by_table.get(report.table_id)
        if found is None:
            return BillError.INVALID_BILL_ID
        found.outstanding_cents = max(0, found.outstanding_cents - report.amount_cents)
        return found.bill()


def load_bills(path: Path) -> BillBook:
    """Read a bills file (module docstring); :class:`Fail` naming what is wrong."""
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise Fail(f"cannot read {path}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise Fail(f"{path} is not JSON: {exc}") from None
    if type(data) is not dict or type(data.get("bills")) is not list:
        raise Fail(f'{path}: expected an object with a "bills" list (see `pat serve --help`)')
    operators = data.get("operators", [])
    if type(operators) is not list or any(type(o) is not str or not o for o in operators):
        raise Fail(f'{path}: "operators" must be a list of operator ids (strings)')
    bills: list[_OpenBill] = []
    for index, raw in enumerate(data["bills"]):
        bill = _read_bill(path, index, raw)
        if any(b.table_id == bill.table_id or b.bill_id == bill.bill_id for b in bills):
            raise Fail(f"{path}: bills[{index}] repeats a table_id or bill_id of another bill")
        bills.append(bill)
    return BillBook(bills, tuple(operators))


def _read_bill(path: Path, index: int, raw: object) -> _OpenBill:
    where = f"{path}: bills[{index}]"
    if type(raw) is not dict:
        raise Fail(f"{where} must be an object")
    unknown = sorted(
        set(raw) - {"table_id", "bill_id", "label", "total_cents", "outstanding_cents"}
    )
    if unknown:
        raise Fail(f"{where} has an unknown field {unknown[0]!r}")
    for name in ("table_id", "bill_id"):
        value = raw.get(name)
        if type(value) is not str or not 1 <= len(value) <= 64 or not value.isprintable():
            raise Fail(f"{where}.{name} must be 1-64 printable characters")
    total = raw.get("total_cents")
    if type(total) is not int or not 0 < total <= bs.MAX_CENTS:
        raise Fail(f"{where}.total_cents must be a whole number of cents above 0")
    outstanding = raw.get("outstanding_cents", total)
    if type(outstanding) is not int or not 0 <= outstanding <= total:
        raise Fail(f"{where}.outstanding_cents must be whole cents from 0 to total_cents")
    label = raw.get("label", f"Table {raw['table_id']}")
    if type(label) is not str or len(label) > 64 or not label.isprintable():
        raise Fail(f"{where}.label must be at most 64 printable characters")
    return _OpenBill(raw["table_id"], raw["bill_id"], label, total, outstanding)


def add_pat_parser(subparsers: Subparsers) -> None:
    """Register ``multipair pat``."""
    pat = subparsers.add_parser(
        "pat",
        help="pay at table: answer a lane's bill requests from a file",
        description="Pay at table (the terminal asks the POS for bills).",
    )
    actions = pat.add_subparsers(dest="action", metavar="ACTION", required=True)
    serve = actions.add_parser(
        "serve",
        help="answer the lane's bill and open-table requests from a JSON file",
        description=(
            "Stand in for the POS: answer the lane's pay-at-table requests (bills, open "
            "tables, payments) from a JSON file until Ctrl-C. Payments lower the outstanding "
            "amounts in memory only. One line per request (--json: one JSON object per line). "
            'FILE: {"operators": ["7"], "bills": [{"table_id": "12", "bill_id": "B-1012", '
            '"label": "Window", "total_cents": 8450, "outstanding_cents": 8450}]} '
            "(operators: optional, empty = any; label and outstanding_cents optional); "
            "see examples/pat-bills.json."
        ),
    )
    add_global_options(serve, top=False)
    add_lane_argument(serve)
    serve.add_argument("--bills", type=Path, required=True, metavar="FILE", help="the bills")
    serve.set_defaults(handler=client_command(_serve))


async def _serve(ctx: Context, client: AsyncClient) -> int:
    book = load_bills(ctx.args.bills)
    iid = await resolve_lane(client, ctx.args.id)
    profile = await client.get_lane(iid)
    if profile.pat is None or not profile.pat.enabled:
        ctx.note(
            f"note: pay at table is off on lane {iid}: the terminal asks nothing until "
            f"`multipair lane set-pat {iid} --enabled`"
        )
    # Requests from now on: the cursor is read before saying so, so a request made after
    # the line below is never missed.
    since = await client.last_event_id(iid)
    ctx.note(f"Answering pay-at-table requests of lane {iid} from {ctx.args.bills} (Ctrl-C stops)")
    ctx.interrupt_code = ExitCode.OK  # Ctrl-C is the way out

    def show(served: Served) -> None:
        if ctx.json:
            ctx.emit(served_json(served))
        else:
            ctx.say(served_text(served))

    await client.serve_pay_at_table(iid, book, since=since, on_served=show)
    return ExitCode.OK


def _answer_json(answer: object) -> object:
    if isinstance(answer, BillError):
        return {"error": str(answer)}
    if isinstance(answer, tuple):
        return [dataclasses.asdict(t) for t in answer]
    if isinstance(answer, Bill):
        return dataclasses.asdict(answer)
    return None


def served_json(served: Served) -> dict[str, Any]:
    """One line of ``pat serve --json``: the event, what was answered, and any failure."""
    return {
        "type": served.event.type,
        "request_id": getattr(served.event, "request_id", None),
        "event": bs.event_body(served.event),
        "answer": _answer_json(served.answer),
        "command_id": served.command_id,
        "failure": served.failure,
    }


def served_text(served: Served) -> str:
    """One line of ``pat serve`` for people."""
    event, answer = served.event, served.answer
    said = _answer_text(answer)
    match event:
        case BillRequested():
            named = f", bill {event.bill_id}" if event.bill_id else ""
            line = f"bill     table {event.table_id}, operator {event.operator_id}{named}: {said}"
        case BillPaymentReported():
            extra = f" + tip {format_cents(event.tip_cents)}" if event.tip_cents else ""
            repeat = " (repeat, not booked again)" if event.duplicate else ""
            line = (
                f"payment  {event.payment_type} {format_cents(event.amount_cents)}{extra} on "
                f"{event.bill_id} (table {event.table_id}, ref {event.terminal_ref_id or '-'})"
                f"{repeat}: {said}"
            )
        case OpenTablesRequested():
            line = f"tables   operator {event.operator_id}: {said}"
        case BillFlowEnded():
            line = (
                f"ended    {event.bill_id} (table {event.table_id}): card {event.card_total_count}"
                f" for {format_cents(event.card_total_cents)}, cash {event.cash_total_count} for "
                f"{format_cents(event.cash_total_cents)}; "
                f"{format_cents(event.bill_outstanding_cents)} of "
                f"{format_cents(event.bill_total_cents)} outstanding"
            )
        case BillRequestExpired():
            sent = event.error_sent or "no open tables"
            line = (
                f"expired  {event.request} {event.request_id}: not answered in time, "
                f"the lane sent {sent}"
            )
        case _:
            line = f"{event.type}: {said}"
    if served.failure is not None:
        line += f" (handler failed: {served.failure})"
    return line


def _answer_text(answer: object) -> str:
    if isinstance(answer, BillError):
        return str(answer)
    if isinstance(answer, Bill):
        return (
            f"{answer.bill_id} {format_cents(answer.outstanding_cents)} outstanding of "
            f"{format_cents(answer.total_cents)}"
        )
    if isinstance(answer, tuple):
        return (
            ", ".join(f"{t.table_id} ({format_cents(t.outstanding_cents)})" for t in answer)
            or "none open"
        )
    return "-"
