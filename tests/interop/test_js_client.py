"""The published mx51 JavaScript client against the simulator (the bar of issue 3).

``js/harness.mjs`` runs ``@mx51/spi-client-js`` 2.9.13, unchanged, from npm,
under Node, through its public API only (``new Spi``, ``Start``, ``Pair``,
``PairingConfirmCode``, ``InitiatePurchaseTx``, ``AcceptSignature``,
``SubmitAuthCode``, ``CancelTransaction``, ``InitiateRecovery``,
``AckFlowEndedAndBackToIdle``, the callbacks a POS must overwrite, and its
events), following a plan given on its command line, and prints one JSON
object per line. Each test starts an in-process :class:`Simulator` on
loopback (free ports), runs the harness as a subprocess against it, and
checks what both sides saw: pairing (both ways of confirming), the outcomes
of the rules table, recovery after drops and after a POS restart, the
terminal's own messages (key rollover, forged frame, SPI token, battery,
unpairing), the device-address service, and the tenant port rule.

The library is written for browsers. The harness gives it, and nothing more:

- ``WebSocket``: the ``ws`` package (the browser API: ``new WebSocket(url,
  protocol)``, ``on*`` handlers, ``readyState``); the library's Connection
  throws "Environment does not support WebSockets" without one.
- ``document``: an ``EventTarget`` with ``location.protocol = "http:"``. The
  library uses ``document`` as its event bus (``this._eventBus = document`` in
  the constructor) and reads ``document.location.protocol`` to choose ws/wss.
- ``window``: ``Crypto.generateRandomInt`` (DH private keys) reads
  ``window.customCrypto``; left unset, the bundled polyfill draws from Node's
  ``globalThis.crypto.getRandomValues`` as it would in a browser.
- ``navigator.userAgent``: sent as ``device_system`` in ``set_pos_info``.
- ``fetch`` guard: after every transaction the library POSTs a report to
  ``spi-analytics-api.<tenant>.mspenv.io``; the guard fails such calls as a
  network error would (the library catches it) and reports them, so nothing
  leaves the machine.
- Exceptions thrown inside event listeners are reported (``uncaught``) and the
  process carries on, as a browser does; every test asserts there were none.

Address: 2.9 keeps the configured port only for tenant ``wbc`` (PROTOCOL.md
§13.2); any other tenant connects to ``:8080``. The simulated terminals listen
on free ports, so the harness sets tenant ``wbc`` and the library opens
``ws://127.0.0.1:<port>?posId=POS1`` exactly as it would for a Westpac
terminal at that address.

Needs Node 20+ (the library dispatches ``CustomEvent``, global from Node 19).
``npm ci`` installs ``js/node_modules`` from ``js/package-lock.json`` once per
session when it is missing or differs from the lock (``--ignore-scripts``: no
package needs its install script; core-js's only prints a banner). Skipped,
with the reason, without ``node``, or when the install is needed and ``npm``
is missing or fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from multipair.simulator import Simulator
from multipair.spi.crypto import Secrets
from tests.interop.js_harness import RECONNECT_PAUSE_MS, Event, finished_tx, run_harness
from tests.simulator.helpers import KEYS, Control, seed_paired_state

# ---------------------------------------------------------------- a. pairing


async def test_js_client_pairs_confirming_on_the_terminal_through_the_control_api(
    node: str, http: aiohttp.ClientSession
) -> None:
    async with Simulator(1, pairing="manual") as sim:
        terminal = sim.terminals[0]
        control = Control(http, sim.control_url)
        seen: dict[str, Any] = {}

        async def on_event(event: Event) -> None:
            if event["type"] == "pairing_code":
                # The code is on both screens now: read the terminal's, then press YES there.
                seen["terminal"] = await control.get(terminal.serial)
                await control.post(terminal.serial, "pairing/confirm")

        plan: list[dict[str, Any]] = [
            {"do": "pair"},
            {"do": "purchase", "ref": "after-pairing", "cents": 1000},
        ]
        run = await run_harness(node, terminal, plan, on_event=on_event)
        run.assert_clean()

        code = run.one("pairing_code")["code"]
        assert 6 == len(code)
        assert ("awaiting_confirmation", code) == (
            seen["terminal"]["pairing_state"],
            seen["terminal"]["confirmation_code"],
        )
        finished = run.one("pairing_finished")
        assert (True, code) == (finished["successful"], finished["code"])
        assert "PairedConnected" in [e["status"] for e in run.of("status")]

        # The library handed the application the keys, and they are the terminal's.
        secrets = run.one("secrets")
        keys = Secrets(enc_key=secrets["enc_key"], hmac_key=secrets["hmac_key"])
        state = await control.get(terminal.serial)
        assert (True, "POS1", keys.fingerprint()) == (
            state["paired"],
            state["pos_id"],
            state["keys_fingerprint"],
        )
        assert terminal.session.state.secrets is not None
        assert terminal.session.state.secrets.same_as(keys)

        # One connection, the conn_id of its pongs, and a transaction on the new keys.
        assert [f"ws://127.0.0.1:{terminal.port}?posId=POS1"] == [
            e["url"] for e in run.of("ws_open")
        ]
        assert "spi.2.9.0" == run.one("ws_open")["protocol"]
        assert "C1" == run.one("first_pong")["conn_id"]
        assert terminal.serial == run.one("terminal_configuration")["serial_number"]
        tx = finished_tx(run, "after-pairing")
        assert ("Success", "000") == (tx["success"], tx["response"]["host_response_code"])
        assert 1 == state["counters"]["connections_total"]
        assert 0 == state["counters"]["frames_rejected"]


async def test_js_client_pairs_with_a_terminal_that_confirms_at_once(node: str) -> None:
    # The terminal's pair_response can come before the POS user answers: the
    # library then confirms on the user's behalf (§4.4).
    async with Simulator(1, pairing="auto") as sim:
        terminal = sim.terminals[0]
        with capture_logs() as logs:
            run = await run_harness(node, terminal, [{"do": "pair"}])
        run.assert_clean()
        shown = [
            line["confirmation_code"] for line in logs if line["event"] == "pairing_code_ready"
        ]
        assert shown == [run.one("pairing_code")["code"]]
        assert run.one("pairing_finished")["successful"] is True
        # On this path the library runs its pairing-success handler twice (once
        # inside PairingConfirmCode, once after it), so SecretsChanged fires
        # twice, with the same keys.
        handed_out = {(e["enc_key"], e["hmac_key"]) for e in run.of("secrets")}
        assert 1 == len(handed_out), run.explain("the library handed out different keys")
        (enc_key, hmac_key) = handed_out.pop()
        keys = Secrets(enc_key=enc_key, hmac_key=hmac_key)
        assert terminal.session.state.secrets is not None
        assert terminal.session.state.secrets.same_as(keys)
        assert "PairedConnected" == run.events[-1]["status"]


# ---------------------------------------------------------------- b. purchases


async def test_js_client_purchases_get_the_outcomes_of_the_rules_table(
    node: str, paired_sim: Simulator
) -> None:
    terminal = paired_sim.terminals[0]
    plan: list[dict[str, Any]] = [
        {"do": "wait_status", "status": "PairedConnected"},
        {"do": "purchase", "ref": "order-approve", "cents": 1000},
        {"do": "purchase", "ref": "order-decline", "cents": 1051},
    ]
    run = await run_harness(node, terminal, plan, keys=KEYS)
    run.assert_clean()

    approved = finished_tx(run, "order-approve")
    assert ("Success", "purchase_response") == (approved["success"], approved["response_event"])
    assert {
        "pos_ref_id": "order-approve",
        "success": True,
        "host_response_code": "000",
        "host_response_text": "APPROVED",
        "purchase_amount": 1000,
    }.items() <= approved["response"].items()
    assert approved["response"]["has_customer_receipt"]
    assert approved["response"]["has_merchant_receipt"]

    declined = finished_tx(run, "order-decline")
    assert ("Failed", "purchase_response") == (declined["success"], declined["response_event"])
    assert {
        "pos_ref_id": "order-decline",
        "success": False,
        "host_response_code": "51",
        "host_response_text": "DECLINED",
        "purchase_amount": 1051,
    }.items() <= declined["response"].items()

    snapshot = terminal.snapshot()
    assert {"order-approve": 1, "order-decline": 1} == snapshot["purchase_requests"]
    assert [("order-approve", True), ("order-decline", False)] == [
        (r["pos_ref_id"], r["success"]) for r in snapshot["history"]
    ]
    # Started with stored keys: one connection, ready at its first pong.
    assert 1 == len(run.of("ws_open"))
    assert 0 == snapshot["counters"]["frames_rejected"]


# ---------------------------------------------------------------- c. recovery after a drop


@pytest.mark.parametrize(
    ("cents", "drop_at"),
    [
        pytest.param(1058, None, id="cents-58-drop-before-send"),
        pytest.param(1000, "after_result_before_send", id="control-api-drop-before-send"),
        pytest.param(1059, None, id="cents-59-drop-after-request"),
    ],
)
async def test_js_client_reconnects_and_recovers_the_true_outcome_after_a_drop(
    node: str,
    paired_sim: Simulator,
    http: aiohttp.ClientSession,
    cents: int,
    drop_at: str | None,
) -> None:
    terminal = paired_sim.terminals[0]
    control = Control(http, paired_sim.control_url)
    if drop_at is not None:
        await control.post(terminal.serial, "drop", {"at": drop_at})
    ref = f"dropped-{cents}"
    plan: list[dict[str, Any]] = [
        {"do": "wait_status", "status": "PairedConnected"},
        {"do": "purchase", "ref": ref, "cents": cents},
    ]
    run = await run_harness(node, terminal, plan, keys=KEYS)
    run.assert_clean()

    # The terminal closed the socket; the library reconnected on its own after
    # its pause and asked get_transaction at the first pong (§7.12).
    opens, closes = run.of("ws_open"), run.of("ws_close")
    assert 2 == len(opens), run.explain("expected one reconnect")
    assert 1001 == closes[0]["code"]
    reconnect = [e for e in run.of("ws_connecting") if e["t"] > closes[0]["t"]]
    assert reconnect[0]["t"] - closes[0]["t"] >= RECONNECT_PAUSE_MS - 100
    statuses = [e["status"] for e in run.of("status")]
    assert ["PairedConnected", "PairedConnecting", "PairedConnected"] == statuses

    tx = finished_tx(run, ref)
    assert ("Success", "gt", f"Transaction Recovered for {ref}.") == (
        tx["success"],
        tx["response_event"],
        tx["display"],
    )
    assert {
        "pos_ref_id": ref,
        "success": True,
        "host_response_code": "000",
        "purchase_amount": cents,
    }.items() <= tx["response"].items()

    state = await control.get(terminal.serial)
    assert {ref: 1} == state["purchase_requests"]  # recovered by asking, never re-sent
    assert [(ref, True)] == [(r["pos_ref_id"], r["success"]) for r in state["history"]]
    assert (2, 0) == (
        state["counters"]["connections_total"],
        state["counters"]["frames_rejected"],
    )


async def test_js_client_completes_a_signature_interrupted_by_a_drop(
    node: str, paired_sim: Simulator, http: aiohttp.ClientSession
) -> None:
    # The terminal asks for a signature and drops the line at once. The POS's
    # "accept" may or may not get through before the close; after the
    # reconnect, get_transaction tells it the terminal still waits (GTR-01:
    # the library asks the user again) or gives the finished outcome.
    terminal = paired_sim.terminals[0]
    control = Control(http, paired_sim.control_url)
    await control.post(terminal.serial, "drop", {"at": "while_awaiting_signature"})
    ref = "signature-dropped"
    plan: list[dict[str, Any]] = [
        {"do": "wait_status", "status": "PairedConnected"},
        {"do": "purchase", "ref": ref, "cents": 1052, "signature": True},
    ]
    run = await run_harness(node, terminal, plan, keys=KEYS)
    run.assert_clean()

    assert 2 == len(run.of("ws_open")), run.explain("expected one reconnect")
    assert 1 <= len(run.of("signature_answered"))
    tx = finished_tx(run, ref)
    assert ("Success", ref, "000") == (
        tx["success"],
        tx["response"]["pos_ref_id"],
        tx["response"]["host_response_code"],
    )
    state = await control.get(terminal.serial)
    assert {ref: 1} == state["purchase_requests"]
    assert [(ref, True)] == [(r["pos_ref_id"], r["success"]) for r in state["history"]]


async def test_js_client_recovers_after_a_pos_restart_with_initiate_recovery(
    node: str, paired_sim: Simulator, http: aiohttp.ClientSession
) -> None:
    terminal = paired_sim.terminals[0]
    control = Control(http, paired_sim.control_url)
    ref = "restart-1058"
    # The POS sends the purchase, the terminal approves it and drops the line
    # before answering, and the POS dies while disconnected.
    crash: list[dict[str, Any]] = [
        {"do": "wait_status", "status": "PairedConnected"},
        {"do": "purchase", "ref": ref, "cents": 1058, "then_exit": True},
        {"do": "wait_status", "status": "PairedConnecting"},
        {"do": "exit"},
    ]
    first = await run_harness(node, terminal, crash, keys=KEYS)
    first.assert_clean()
    assert [] == first.of("tx_finished")

    # Restarted with its stored keys and the stored pos_ref_id (§7.12 step 5).
    restart = [{"do": "recover", "ref": ref, "tx_type": "Purchase"}]
    second = await run_harness(node, terminal, restart, keys=KEYS)
    second.assert_clean()
    tx = finished_tx(second, ref)
    assert ("Success", "gt", "000") == (
        tx["success"],
        tx["response_event"],
        tx["response"]["host_response_code"],
    )
    state = await control.get(terminal.serial)
    assert {ref: 1} == state["purchase_requests"]
    assert 2 == state["counters"]["connections_total"]


# ---------------------------------------------------------------- b'. the rest of the table

INTERACTIVE = [
    # id, cents, purchase-step options, control-API setup, outcome, host_response_code,
    # txn_update_message texts the POS is shown
    ("signature-accepted", 1052, {"signature": True}, {}, "Success", "000", []),
    ("signature-declined", 1052, {"signature": False}, {}, "Failed", "512", []),
    ("auth-code", 1053, {"auth_code": "654321"}, {}, "Success", "000", []),
    (
        "slow-card",
        1054,
        {},
        {},
        "Success",
        "000",
        ["PRESENT CARD", "READING CARD", "PROCESSING", "PLEASE WAIT"],
    ),
    # The merchant cancels while the terminal shows PRESENT CARD.
    (
        "no-answer-cancelled",
        1055,
        {"cancel": "on_update"},
        {"card-delay": {"seconds": 0.3}},
        "Failed",
        "511",
        ["PRESENT CARD"],
    ),
    ("partial", 1056, {}, {}, "Success", "002", []),
    # The merchant cancels when the terminal shows PROCESSING: too late.
    (
        "past-no-return-cancel-fails",
        1057,
        {"cancel": "on_update"},
        {},
        "Success",
        "000",
        ["PROCESSING"],
    ),
    # The merchant cancels in the same breath as the request.
    ("no-answer-cancelled-at-once", 1055, {"cancel": "now"}, {}, "Failed", "511", []),
    (
        "past-no-return-cancelled-at-once",
        1057,
        {"cancel": "now"},
        {},
        "Success",
        "000",
        ["PROCESSING"],
    ),
]


@pytest.mark.parametrize(
    ("cents", "options", "setup", "success", "code", "updates"),
    [pytest.param(*row[1:], id=row[0]) for row in INTERACTIVE],
)
async def test_js_client_goes_through_the_interactive_outcomes_of_the_rules_table(
    node: str,
    paired_sim: Simulator,
    http: aiohttp.ClientSession,
    cents: int,
    options: dict[str, Any],
    setup: dict[str, dict[str, Any]],
    success: str,
    code: str,
    updates: list[str],
) -> None:
    terminal = paired_sim.terminals[0]
    control = Control(http, paired_sim.control_url)
    # The slow steps of the table, shortened (the table's ~3 s are defaults).
    await control.post(
        terminal.serial, "options", {"slow_card_seconds": 0.4, "processing_seconds": 0.4}
    )
    for path, body in setup.items():
        await control.post(terminal.serial, path, body)
    ref = f"table-{cents}"
    plan = [
        {"do": "wait_status", "status": "PairedConnected"},
        {"do": "purchase", "ref": ref, "cents": cents, **options},
    ]
    run = await run_harness(node, terminal, plan, keys=KEYS)
    run.assert_clean()

    tx = finished_tx(run, ref)
    assert (success, "purchase_response", ref, code) == (
        tx["success"],
        tx["response_event"],
        tx["response"]["pos_ref_id"],
        tx["response"]["host_response_code"],
    ), run.explain("unexpected outcome")
    assert updates == [e["text"] for e in run.of("txn_update")]
    states = [e for e in run.of("tx") if e["pos_ref_id"] == ref]
    if "signature" in options:
        assert any(e["awaiting_signature"] for e in states)
        answered = run.one("signature_answered")
        assert (options["signature"], True) == (answered["accepted"], answered["valid"])
    if "auth_code" in options:
        assert any(e["awaiting_auth_code"] for e in states)
        assert run.one("auth_code_submitted")["valid"]
        assert options["auth_code"] == tx["response"]["auth_code"]
    if "cancel" in options:
        assert run.one("cancel_requested")["valid"]
        assert any(e["attempting_to_cancel"] for e in states)
        if success == "Success":  # the terminal refused the cancel, and the POS said so
            assert any(e["display"].startswith("Failed to cancel transaction") for e in states)
    assert {ref: 1} == terminal.snapshot()["purchase_requests"]


# ---------------------------------------------------------------- terminal-initiated messages


async def test_js_client_follows_the_terminals_own_messages(
    node: str, paired_sim: Simulator, http: aiohttp.ClientSession
) -> None:
    """Key rollover, a forged frame, SPI token, battery advice, then unpairing on the terminal."""
    terminal = paired_sim.terminals[0]
    control = Control(http, paired_sim.control_url)
    token = "interop-spi-token-7Q2x"

    # Each step is triggered by what the POS has seen, so the order is causal:
    # rollover; a purchase under the new keys (the terminal can only read it
    # once it switched too); then a forged frame, a token and a battery advice;
    # then the terminal's user unpairs.
    async def on_event(event: Event) -> None:
        if event["type"] == "first_pong":
            await control.post(terminal.serial, "key-rollover", {"switch": True})
        elif event["type"] == "tx_finished":
            await control.post(terminal.serial, "inject", {"kind": "bad_signature"})
            await control.post(terminal.serial, "spi-token", {"token": token})
            await control.post(terminal.serial, "battery", {"level": 15})
        elif event["type"] == "battery":
            await control.post(terminal.serial, "unpair")

    plan: list[dict[str, Any]] = [
        {"do": "wait_status", "status": "PairedConnected"},
        {"do": "wait_event", "type": "secrets"},
        {"do": "purchase", "ref": "after-rollover", "cents": 1000},
        {"do": "wait_event", "type": "battery"},
        {"do": "wait_status", "status": "Unpaired"},
    ]
    run = await run_harness(node, terminal, plan, keys=KEYS, on_event=on_event)
    run.assert_clean()

    rolled = KEYS.rolled()
    handed_out = [(e["enc_key"], e["hmac_key"]) for e in run.of("secrets")]
    assert [(rolled.enc_key, rolled.hmac_key), (None, None)] == [
        (k[0] and k[0].upper(), k[1] and k[1].upper()) for k in handed_out
    ]
    # The forged frame was dropped (and logged) by the library, nothing else happened.
    assert "I could not verify message from Eftpos" in run.stderr
    assert token == run.one("pos_spi_token")["token"]
    assert 15 == run.one("battery")["data"]["battery_level"]
    tx = finished_tx(run, "after-rollover")
    assert ("Success", "000") == (tx["success"], tx["response"]["host_response_code"])
    assert "Unpaired" == run.events[-1]["status"]
    state = await control.get(terminal.serial)
    assert (False, None) == (state["paired"], state["keys_fingerprint"])
    assert {"after-rollover": 1} == state["purchase_requests"]
    assert (1, 0) == (
        state["counters"]["connections_total"],
        state["counters"]["frames_rejected"],
    )


# ---------------------------------------------------------------- addresses


async def test_js_client_finds_a_moved_terminal_through_the_device_address_service(
    node: str, paired_sim: Simulator
) -> None:
    # The POS kept an address the terminal no longer has (nothing listens on
    # port 1); with automatic address resolution it asks the device-address
    # service for the serial number and reconnects to what it answers.
    terminal = paired_sim.terminals[0]
    stale = "127.0.0.1:1"
    plan: list[dict[str, Any]] = [
        {"do": "wait_status", "status": "PairedConnected"},
        {"do": "purchase", "ref": "found-again", "cents": 1000},
    ]
    extra = ("--device-address-url", paired_sim.device_address_url)
    run = await run_harness(node, terminal, plan, keys=KEYS, address=stale, extra=extra)
    run.assert_clean()

    asked = run.one("http_redirected")
    assert asked["from"] == f"https://device-address-api.wbc.mspenv.io/v1/{terminal.serial}/ip"
    assert asked["headers"]["ASM-MSP-DEVICE-ADDRESS-API-KEY"] == "multipair-interop"
    found = run.one("device_address")
    address = f"127.0.0.1:{terminal.port}"
    assert ("SUCCESS", address, address, "OK") == (
        found["code"],
        found["address"],
        found["ip"],
        found["description"],
    )
    assert found["last_updated"]
    tried = [e["url"] for e in run.of("ws_connecting")]
    assert f"ws://{stale}?posId=POS1" == tried[0]
    assert [f"ws://{address}?posId=POS1"] == [e["url"] for e in run.of("ws_open")]
    tx = finished_tx(run, "found-again")
    assert ("Success", "000") == (tx["success"], tx["response"]["host_response_code"])


async def test_js_client_of_another_tenant_connects_to_port_8080(node: str, tmp_path: Path) -> None:
    # 2.9 throws the configured port away for every tenant but wbc (§13.2):
    # a terminal for such a POS listens on 8080, as real ones do.
    seed_paired_state(tmp_path / "state", "SIM-0001")
    try:
        sim = Simulator(1, base_port=8080, state_dir=tmp_path / "state")
        await sim.start()
    except OSError as exc:
        pytest.skip(f"port 8080 on loopback is taken: {exc}")
    try:
        terminal = sim.terminals[0]
        plan: list[dict[str, Any]] = [
            {"do": "wait_status", "status": "PairedConnected"},
            {"do": "purchase", "ref": "tenant-gko", "cents": 1000},
        ]
        address = "127.0.0.1:9999"  # what the user typed; 2.9 ignores the port
        run = await run_harness(node, terminal, plan, keys=KEYS, address=address, tenant="gko")
        run.assert_clean()
        assert ["ws://127.0.0.1:8080?posId=POS1"] == [e["url"] for e in run.of("ws_open")]
        tx = finished_tx(run, "tenant-gko")
        assert ("Success", "000") == (tx["success"], tx["response"]["host_response_code"])
    finally:
        await sim.close()
