"""``multipair lane set-pat`` and ``multipair pat serve`` against a real lane process, the
simulator playing the terminal's side of pay at table (its control API's ``pat/*`` routes).

All tests share one paired lane (tests/cli/conftest.py); each leaves pay at table enabled.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from multipair import broker_schema as bs
from multipair.store.profiles import LaneProfile, ProfileStore
from tests.cli.conftest import SERIAL, SharedLane
from tests.cli.helpers import WAIT, Cli, Running
from tests.poll import poll_until
from tests.simulator.helpers import Control

pytestmark = pytest.mark.asyncio(loop_scope="module")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pat-bills.json"


@pytest.fixture
def cli(shared: SharedLane) -> Cli:
    return shared.cli


@pytest_asyncio.fixture(loop_scope="module")
async def control(shared: SharedLane) -> AsyncIterator[Control]:
    async with aiohttp.ClientSession() as http:
        yield Control(http, shared.sim.control_url)


@pytest_asyncio.fixture(loop_scope="module")
async def profiles(shared: SharedLane, redis_url: str) -> AsyncIterator[ProfileStore]:
    """The profiles of the shared lane's prefix (not the ``redis`` fixture: it flushes Redis)."""
    client = aioredis.Redis.from_url(redis_url)
    yield ProfileStore(client, bs.Keys(shared.cli.prefix))
    await client.aclose()


async def test_set_pat_on_a_running_lane_goes_through_the_lane_to_the_terminal(
    cli: Cli, shared: SharedLane, control: Control
) -> None:
    result = await cli.run(
        *("lane", "set-pat", shared.iid, "--enabled", "--tipping", "--no-equal-split"),
        *("--operator-ids", "7,12", "--labels", "pay=Pay now,table=Table no."),
        *("--answer-timeout", "5"),
    )
    assert 0 == result.code, result
    doc = result.json()
    assert (shared.iid, "lane") == (doc["instance_id"], doc["via"])
    pat = doc["pat"]
    assert (True, True, False, ["7", "12"], "Pay now", "", "Table no.", 5000) == (
        pat["enabled"],
        pat["tipping_enabled"],
        pat["equal_split_enabled"],
        pat["operator_ids"],
        pat["pay_button_label"],
        pat["operator_id_label"],
        pat["table_id_label"],
        pat["answer_timeout_ms"],
    )

    async def told() -> dict[str, Any] | None:
        config: dict[str, Any] | None = (await control.get(SERIAL)).get("table_config")
        return config if config and config.get("pay_button_label") == "Pay now" else None

    config = await poll_until(told, "the terminal got the new table config")
    assert (True, True, ["7", "12"], "Table no.") == (
        config["pay_at_table_enabled"],
        config["tipping_enabled"],
        config["operator_id_list"],
        config["table_id_label"],
    )


async def test_set_pat_on_a_lane_that_does_not_run_writes_its_profile(
    cli: Cli, profiles: ProfileStore, redis_url: str
) -> None:
    iid = str(uuid.uuid4())
    await profiles.create(
        LaneProfile(
            instance_id=iid, pos_id="POS9", serial_number="S-9", device_address="ws://127.0.0.1:1"
        )
    )
    result = await cli.run("lane", "set-pat", iid, "--enabled", "--operator-ids", "", json=False)
    assert 0 == result.code, result
    lines = result.out.splitlines()
    assert "pay at table       on" in lines
    assert "operator ids       any" in lines
    assert f"Saved in lane {iid}'s profile" in result.out
    pat = (await profiles.get(iid)).pat
    assert pat is not None
    assert (True, (), 10_000) == (pat.enabled, pat.operator_ids, pat.answer_timeout_ms)
    # Nothing was queued for the lane: its profile holds the change.
    redis = aioredis.Redis.from_url(redis_url)
    try:
        assert 0 == await redis.xlen(bs.Keys(cli.prefix).commands(iid))
    finally:
        await redis.aclose()
    shown = await cli.run("lane", "show", iid, json=False)
    assert "pay at table      on; operators any; the POS answers within 10 s" in shown.out
    again = await cli.run("lane", "set-pat", iid, "--disabled")
    assert (0, False, True) == (again.code, again.json()["pat"]["enabled"], pat.enabled)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "nothing to change"),
        (("--answer-timeout", "0.5"), "from 1 to 60"),
        (("--labels", "colour=red"), "NAME one of pay, operator, table"),
        (("--operator-ids", ",".join(str(n) for n in range(101))), "at most 100"),
        (("--labels", "pay=" + "x" * 65), "pay_button_label"),
        (("--enabled", "--disabled"), "not allowed with"),
    ],
)
async def test_set_pat_refuses_nothing_to_change_and_bad_values(
    cli: Cli, shared: SharedLane, args: tuple[str, ...], says: str
) -> None:
    result = await cli.run("lane", "set-pat", shared.iid, *args)
    assert 2 == result.code, result
    assert says in result.err
    assert "" == result.out


async def _serving(cli: Cli, iid: str, bills: Path, *, json: bool = True) -> Running:
    """``pat serve`` started and reading the lane's events (it says so first)."""
    running = await cli.start("pat", "serve", iid, "--bills", str(bills), json=json)
    if json:
        assert running.proc.stderr is not None
        async with asyncio.timeout(WAIT):
            while b"Answering" not in await running.proc.stderr.readline():
                pass
    else:
        await running.until(lambda line: line.startswith("Answering"))
    return running


async def test_pat_serve_answers_a_session_from_the_file_and_books_payments_in_memory(
    cli: Cli, shared: SharedLane, control: Control, tmp_path: Path
) -> None:
    await cli.run("lane", "set-pat", shared.iid, "--enabled", "--operator-ids", "")
    bills = tmp_path / "bills.json"
    shutil.copy(EXAMPLE, bills)
    running = await _serving(cli, shared.iid, bills)
    try:
        session = await control.post(
            SERIAL,
            "pat/session",
            {
                "table_id": "12",
                "operator_id": "7",
                "payments": [
                    {"payment_type": "card", "amount_cents": 2000, "tip_cents": 300},
                    {"payment_type": "cash", "amount_cents": 450},
                ],
            },
        )
        lines = [await running.line() for _ in range(4)]
        tables = await control.post(SERIAL, "pat/tables", {"operator_id": "7"})
        lines.append(await running.line())
        await running.interrupt()
        result = await running.finish()
    finally:
        await running.kill()
    assert 0 == result.code, result
    docs = result.json_lines()
    assert [
        "bill_requested",
        "bill_payment_reported",
        "bill_payment_reported",
        "bill_flow_ended",
        "open_tables_requested",
    ] == [d["type"] for d in docs]
    assert [8450, 6450, 6000] == [d["answer"]["outstanding_cents"] for d in docs[:3]]
    assert all(d["request_id"] == d["event"]["request_id"] for d in docs)
    assert [None] * 5 == [d["failure"] for d in docs]
    # What the terminal got back.
    steps = session["replies"]
    assert [8450, 6450, 6000] == [s["reply"]["data"]["bill_outstanding_amount"] for s in steps[:3]]
    assert [
        {"table_id": "12", "label": "Window, 4 guests", "bill_outstanding_amount": 6000},
        {"table_id": "14", "label": "Terrace", "bill_outstanding_amount": 7000},
    ] == tables["reply"]["data"]["tables"]
    # The file is never written.
    assert EXAMPLE.read_bytes() == bills.read_bytes()


async def test_pat_serve_prints_a_line_per_request_for_people(
    cli: Cli, shared: SharedLane, control: Control
) -> None:
    await cli.run("lane", "set-pat", shared.iid, "--enabled", "--operator-ids", "7")
    running = await _serving(cli, shared.iid, EXAMPLE, json=False)
    try:
        await control.post(SERIAL, "pat/bill", {"table_id": "14", "operator_id": "7"})
        found = await running.line()
        await control.post(SERIAL, "pat/bill", {"table_id": "99", "operator_id": "7"})
        missing = await running.line()
        await running.interrupt()
        result = await running.finish()
    finally:
        await running.kill()
    assert 0 == result.code, result
    assert "bill     table 14, operator 7: B-1014 $70.00 outstanding of $120.00" == found
    assert "bill     table 99, operator 7: INVALID_TABLE_ID" == missing


async def test_pat_serve_refuses_a_bad_bills_file_before_serving(
    cli: Cli, shared: SharedLane, tmp_path: Path
) -> None:
    bills = tmp_path / "bills.json"
    bills.write_text('{"bills": [{"table_id": "1"}]}')
    result = await cli.run("pat", "serve", shared.iid, "--bills", str(bills))
    missing = await cli.run("pat", "serve", shared.iid, "--bills", str(tmp_path / "none.json"))
    assert (2, 2) == (result.code, missing.code), (result, missing)
    assert "bills[0].bill_id" in result.err
    assert "cannot read" in missing.err
