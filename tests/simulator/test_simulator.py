"""The simulator as a POS sees it: real websockets on loopback, a raw POS client."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs
from websockets.exceptions import InvalidStatus

from multipair.simulator import Simulator
from multipair.spi.envelope import Generation
from tests.poll import poll_until
from tests.simulator.helpers import KEYS, Control, RawPos, seed_paired_state


async def connect(sim: Simulator, **kwargs: object) -> RawPos:
    return await RawPos.connect(sim.terminals[0].ws_url, secrets=KEYS, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- pairing and purchase


@pytest.mark.parametrize("generation", [Generation.V28, Generation.V29])
async def test_pos_pairs_and_purchases_with_a_simulated_terminal(
    tmp_path: Path, generation: Generation
) -> None:
    async with Simulator(1) as sim:
        terminal = sim.terminals[0]
        with capture_logs() as logs:
            async with await RawPos.connect(terminal.ws_url, generation=generation) as pos:
                assert f"spi.2.{generation.value[-1]}.0" == pos.ws.subprotocol
                code = await pos.pair()
                pair_response = await pos.expect("pair_response")
                assert {"success": True} == pair_response.data
                pong = await pos.ping()
                assert "C1" == pong.conn_id
                response = await pos.purchase("order-1", 1000)
        assert (True, "order-1", "000") == (
            response.get("success"),
            response.get("pos_ref_id"),
            response.get("host_response_code"),
        )
        assert 6 == len(code)
        assert terminal.session.state.secrets is not None
        assert pos.secrets is not None
        assert terminal.session.state.secrets.same_as(pos.secrets)
        assert "POS1" == terminal.session.state.pos_id
    spi_lines = [line for line in logs if line["event"] in ("spi.in", "spi.out")]
    assert {"pair_request", "key_request", "key_response", "key_check", "purchase"} <= {
        line["spi_event"] for line in spi_lines
    }
    assert all(
        "<redacted>" == line["data"]["enc"]["A"]
        for line in spi_lines
        if line["spi_event"] == "key_request"
    )
    text = repr(logs)
    assert pos.secrets.enc_key not in text
    assert pos.secrets.hmac_key not in text


async def test_any_spi_2_subprotocol_is_echoed_and_posid_query_is_optional(
    sim: Simulator,
) -> None:
    for generation, query in [
        (Generation.V26, False),
        (Generation.V28, False),
        (Generation.V29, True),
    ]:
        async with await connect(sim, generation=generation, query=query) as pos:
            assert f"spi.2.{generation.value[-1]}.0" == pos.ws.subprotocol
            assert "pong" == (await pos.ping()).event


async def test_manual_pairing_waits_for_the_control_api(http: aiohttp.ClientSession) -> None:
    async with Simulator(1, pairing="manual") as sim:
        control = Control(http, sim.control_url)
        async with await RawPos.connect(sim.terminals[0].ws_url) as pos:
            code = await pos.pair()
            state = await control.get("SIM-0001")
            assert ("awaiting_confirmation", code) == (
                state["pairing_state"],
                state["confirmation_code"],
            )
            await control.post("SIM-0001", "pairing/confirm")
            assert {"success": True} == (await pos.expect("pair_response")).data
        await control.post("SIM-0001", "pairing/confirm", status=409)
        # A paired terminal takes no plaintext pair_request (docs/security.md):
        # the merchant unpairs it first.
        await control.post("SIM-0001", "unpair")
        async with await RawPos.connect(sim.terminals[0].ws_url, pos_id="POS2") as pos:
            await pos.pair()
            await control.post("SIM-0001", "pairing/reject")
            assert {"success": False} == (await pos.expect("pair_response")).data
        assert False is (await control.get("SIM-0001"))["paired"]


async def test_delayed_pairing_confirms_after_the_delay() -> None:
    async with (
        Simulator(1, pairing="delay:0.2") as sim,
        await RawPos.connect(sim.terminals[0].ws_url) as pos,
    ):
        await pos.pair()
        assert "awaiting_confirmation" == sim.terminals[0].session.pairing_state.value
        assert {"success": True} == (await pos.expect("pair_response")).data


# ---------------------------------------------------------------- connections


async def test_a_second_connection_replaces_the_first_never_two_at_once(
    sim: Simulator, control: Control
) -> None:
    first = await connect(sim)
    assert "C1" == (await first.ping()).conn_id
    async with await connect(sim) as second:
        assert 1001 == await first.closed_code()
        assert "C2" == (await second.ping()).conn_id
        counters = (await control.get("SIM-0001"))["counters"]
        assert (2, 1, 1) == (
            counters["connections_total"],
            counters["max_concurrent_connections"],
            counters["active_connections"],
        )
        # ...but the terminal saw two POS connected at once, and says so.
        assert (1, 2) == (counters["replaced_connections"], counters["max_open_sockets"])


async def test_a_hand_over_closes_the_old_connection_first_and_counts_no_overlap(
    sim: Simulator, control: Control
) -> None:
    """What fencing must give: the old POS gone before the new one connects."""
    async with await connect(sim) as first:
        await first.ping()
    terminal = sim.terminals[0]

    async def closed() -> bool:
        return terminal.stats.open_sockets == 0

    await poll_until(closed, "the first socket closed at the terminal")
    async with await connect(sim) as second:
        await second.ping()
    counters = (await control.get("SIM-0001"))["counters"]
    assert (2, 0, 1, 1) == (
        counters["connections_total"],
        counters["replaced_connections"],
        counters["max_open_sockets"],
        counters["max_concurrent_connections"],
    )


async def test_many_simultaneous_connections_still_leave_one(
    sim: Simulator, control: Control
) -> None:
    clients = await asyncio.gather(*(connect(sim) for _ in range(5)))
    survivors = []
    for client in clients:
        try:
            survivors.append(await client.ping())
        except Exception:  # noqa: S112 - replaced connections fail; that is the point
            continue
        finally:
            await client.ws.close()
    assert 1 <= len(survivors)
    counters = (await control.get("SIM-0001"))["counters"]
    assert (5, 1) == (counters["connections_total"], counters["max_concurrent_connections"])
    assert counters["replaced_connections"] >= 1


async def test_tampered_frame_is_dropped_and_counted(sim: Simulator, control: Control) -> None:
    async with await connect(sim) as pos:
        outer = json.loads(pos.frame("ping", msg_id="bad1"))
        outer["hmac"] = ("0" if outer["hmac"][0] != "0" else "1") + outer["hmac"][1:]
        tampered = json.dumps(outer)
        await pos.ws.send(tampered)
        pong = await pos.ping()  # the next answer is for the good ping: the bad one was dropped
        assert "bad1" != pong.id
    counters = (await control.get("SIM-0001"))["counters"]
    assert 1 == counters["frames_rejected"]


async def test_restart_with_state_dir_keeps_the_pairing_and_history(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    async with (
        Simulator(1, state_dir=state_dir) as sim,
        await RawPos.connect(sim.terminals[0].ws_url) as pos,
    ):
        await pos.pair()
        await pos.expect("pair_response")
        await pos.purchase("before-restart", 1000)
        keys = pos.secrets
    assert (state_dir / "SIM-0001.json").exists()
    async with Simulator(1, state_dir=state_dir) as sim:
        assert sim.terminals[0].session.state.paired
        async with await RawPos.connect(sim.terminals[0].ws_url, secrets=keys) as pos:
            assert "pong" == (await pos.ping()).event
            found = await pos.request(
                "get_transaction", {"pos_ref_id": "before-restart"}, "get_transaction_response"
            )
            assert (True, "before-restart") == (found.get("success"), found.get("tx")["pos_ref_id"])


async def test_tls_serves_wss_with_the_generated_certificate(tmp_path: Path) -> None:
    seed_paired_state(tmp_path / "state", "SIM-0001")
    async with Simulator(1, tls=True, state_dir=tmp_path / "state", cert_dir=tmp_path) as sim:
        assert sim.cert_path is not None
        assert sim.cert_path.parent == tmp_path
        url = sim.terminals[0].ws_url
        assert url.startswith("wss://")
        async with await RawPos.connect(url, secrets=KEYS, cafile=sim.cert_path) as pos:
            assert "pong" == (await pos.ping()).event
            assert "order-tls" == (await pos.purchase("order-tls", 1000)).get("pos_ref_id")


# ---------------------------------------------------------------- transactions


async def test_second_transaction_while_one_runs_gets_operation_in_progress(
    sim: Simulator,
) -> None:
    async with await connect(sim) as pos:
        await pos.send("purchase", {"pos_ref_id": "slow", "purchase_amount": 1055})
        busy = await pos.purchase("second", 1000)
        assert (False, "second", "OPERATION_IN_PROGRESS") == (
            busy.get("success"),
            busy.get("pos_ref_id"),
            busy.get("error_reason"),
        )
        cancel = await pos.request("cancel_transaction", None, "cancel_response")
        assert True is cancel.get("success")
        cancelled = await pos.expect("purchase_response")
        assert ("slow", "511") == (cancelled.get("pos_ref_id"), cancelled.get("host_response_code"))
    state = sim.terminals[0].snapshot()
    assert {"slow": 1, "second": 1} == state["purchase_requests"]


async def test_hundred_terminals_each_complete_a_purchase_concurrently(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    for i in range(100):
        seed_paired_state(state_dir, f"SIM-{i + 1:04d}")
    async with Simulator(100, state_dir=state_dir) as sim:

        async def one(url: str, ref: str) -> bool:
            async with await RawPos.connect(url, secrets=KEYS) as pos:
                await pos.ping()
                response = await pos.purchase(ref, 1000)
                return response.get("success") is True and response.get("pos_ref_id") == ref

        results = await asyncio.gather(*(one(t.ws_url, f"order-{t.serial}") for t in sim.terminals))
        assert [True] * 100 == results
        assert {1} == {len(t.session.state.history) for t in sim.terminals}
        assert 100 == len({t.port for t in sim.terminals})


async def test_refused_connections_get_503_until_the_window_ends(
    sim: Simulator, control: Control
) -> None:
    await control.post("SIM-0001", "refuse", {"seconds": 60})
    with pytest.raises(InvalidStatus) as refused:
        await connect(sim)
    assert 503 == refused.value.response.status_code
    await control.post("SIM-0001", "refuse", {"seconds": 0})
    async with await connect(sim) as pos:
        assert "pong" == (await pos.ping()).event
    assert 1 == (await control.get("SIM-0001"))["counters"]["refused_connections"]
