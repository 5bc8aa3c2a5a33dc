#!/usr/bin/env node
// Drives the published mx51 SPI client (@mx51/spi-client-js) against a terminal,
// through the library's public API only, and reports what happened as JSON lines
// on stdout (one object per line, each with "type" and "t", milliseconds since
// start). The library's own log (it logs to `console`) goes to stderr.
//
//   node harness.mjs --address 127.0.0.1:PORT --pos-id POS1 --serial SIM-0001 \
//       [--tenant wbc] [--enc-key HEX --hmac-key HEX] --plan '[{"do": "pair"}, ...]'
//       [--device-address-url http://127.0.0.1:PORT --device-api-key KEY]
//       [--pay-at-table '{"config": {...}, "bills": {...}}']
//
// With --device-address-url the library's device-address lookups (https to
// device-address-api[-env].<tenant>.mspenv.io) go to that base URL instead,
// same path and headers, and automatic address resolution is switched on
// before Start() (SetDeviceApiKey, SetAutoAddressResolution(true)).
//
// Plan steps, run in order (each wait gives up after --step-timeout seconds):
//   {"do": "pair"}                      Pair(); when the code shows, report it and
//                                       press YES (PairingConfirmCode); wait until
//                                       pairing finished and PairedConnected.
//   {"do": "wait_status", "status": S}  wait until CurrentStatus is S.
//   {"do": "wait_event", "type": T, "count": N}
//                                       wait until N (default 1) events of type T
//                                       (e.g. "secrets", "battery") were printed.
//   {"do": "purchase", "ref": R, "cents": N}
//                                       InitiatePurchaseTx; wait until finished; ack.
//       optional: "signature": true|false  AcceptSignature(...) when asked to
//                 "auth_code": "123456"    SubmitAuthCode(...) when asked for one
//                 "cancel": "now"          CancelTransaction() right after initiating
//                 "cancel": "on_update"    CancelTransaction() at the first txn_update
//                 "then_exit": true        return at once (with a following step)
//   {"do": "tx", "kind": K, "ref": R, ...}
//                                       one of the other transactions, through the
//                                       library's own method; wait until finished; ack.
//       K = account_verify                    SpiPreauth.InitiateAccountVerifyTx(R)
//           preauth_open "cents"               SpiPreauth.InitiateOpenTx
//           preauth_topup "cents"              SpiPreauth.InitiateTopupTx
//           preauth_partial_cancel "cents"     SpiPreauth.InitiatePartialCancellationTx
//           preauth_extend                     SpiPreauth.InitiateExtendTx
//           preauth_cancel                     SpiPreauth.InitiateCancelTx
//           preauth_complete "cents" ["surcharge_cents"]  SpiPreauth.InitiateCompletionTx
//             (the preauth ones: "preauth_id": ID, or "preauth_of": an earlier ref
//             whose response's preauth_id is used)
//           zip_purchase "cents" "store_code" ["description"]  Spi.InitiateZipPurchaseTx
//           zip_refund "cents" and "original_receipt_number", or "receipt_of": an
//             earlier Zip purchase's ref (its zip_data.receipt_number)   Spi.InitiateZipRefundTx
//   {"do": "recover", "ref": R, "tx_type": "Purchase"}
//                                       InitiateRecovery; wait until finished; ack.
//   {"do": "bills"}                     print the POS's bills (with --pay-at-table).
//   {"do": "exit"}                      skip the rest and exit at once, with the
//                                       library mid-flow (a POS that crashes).
//
// Starting with --enc-key/--hmac-key is starting a POS that kept its keys
// (Start() goes to PairedConnecting and connects).
//
// Environment shims (the library is written for browsers):
// WebSocket (from `ws`), document (the library's default event bus, and
// document.location for its https check), window (read for a customCrypto
// hook), navigator.userAgent (sent in set_pos_info), and a fetch guard so that
// the analytics / device-address HTTP calls never leave this machine. Why each
// is needed: tests/interop/test_js_client.py.

import { createRequire } from "node:module";
import { format, parseArgs } from "node:util";

const started = Date.now();
const emitted = new Map(); // event type -> how many were printed
let pongsThisConnection = 0; // reset at each websocket open
// What the POS user does during the current purchase (answer a signature or
// auth-code request, cancel): run after the library's event has been
// dispatched, as a UI would.
let txHook = null;
let updateHook = null;

function emit(type, fields = {}) {
  emitted.set(type, (emitted.get(type) ?? 0) + 1);
  process.stdout.write(JSON.stringify({ ...fields, type, t: Date.now() - started }) + "\n");
}

// ---------------------------------------------------------------- arguments

const { values: args } = parseArgs({
  options: {
    address: { type: "string" },
    "pos-id": { type: "string", default: "POS1" },
    serial: { type: "string", default: "" },
    tenant: { type: "string", default: "wbc" },
    "enc-key": { type: "string" },
    "hmac-key": { type: "string" },
    plan: { type: "string", default: "[]" },
    "step-timeout": { type: "string", default: "20" },
    "device-address-url": { type: "string" },
    "device-api-key": { type: "string", default: "multipair-interop" },
    "pay-at-table": { type: "string" },
  },
});
if (!args.address) {
  process.stderr.write("--address host:port is required\n");
  process.exit(2);
}
const plan = JSON.parse(args.plan);
const stepTimeoutMs = Number(args["step-timeout"]) * 1000;

// ---------------------------------------------------------------- shims

// The library logs through `console`; keep stdout for our JSON lines.
for (const level of ["log", "info", "warn", "error", "debug", "trace"]) {
  console[level] = (...parts) => process.stderr.write(`[spi ${level}] ${format(...parts)}\n`);
}

// A browser reports an exception thrown in an event listener and carries on;
// Node's EventTarget turns it into an uncaught exception. Behave like the
// browser, but make every such exception visible to the test.
process.on("uncaughtException", (err) => {
  emit("uncaught", { error: String(err && err.stack ? err.stack : err) });
});
process.on("unhandledRejection", (err) => {
  emit("unhandled_rejection", { error: String(err && err.stack ? err.stack : err) });
});

const require = createRequire(import.meta.url);
const { WebSocket: WsWebSocket } = await import("ws");

// The browser WebSocket API: `new WebSocket(url, protocol)`, on* handlers,
// readyState/OPEN/CLOSED, text frames as strings. `ws` provides all of it;
// the subclass only reports connections so the test can see reconnects.
class ReportingWebSocket extends WsWebSocket {
  constructor(url, protocols) {
    super(url, protocols);
    emit("ws_connecting", { url: String(url), offered: protocols ?? null });
    this.addEventListener("open", () => {
      pongsThisConnection = 0;
      emit("ws_open", { url: String(url), protocol: this.protocol });
    });
    this.addEventListener("close", (e) => emit("ws_close", { code: e.code, reason: e.reason }));
    this.addEventListener("error", (e) => emit("ws_error", { message: String(e.message ?? e) }));
  }
}
globalThis.WebSocket = ReportingWebSocket;

// The library's default event bus is `document`, and it reads
// `document.location.protocol` to decide between ws and wss.
const documentShim = new EventTarget();
documentShim.location = { protocol: "http:" };
globalThis.document = documentShim;

// Crypto.generateRandomInt reads `window.customCrypto` (a hook mx51 uses in its
// own Node adaptor); without it the bundled polyfill uses globalThis.crypto
// (Node's WebCrypto), exactly as in a browser. `window` only has to exist.
globalThis.window = globalThis;

// Sent as device_system in set_pos_info. Node 20 has no navigator.
if (typeof globalThis.navigator === "undefined") {
  globalThis.navigator = { userAgent: `Node.js/${process.version} (multipair interop harness)` };
}

// The library reports every finished transaction to mx51's analytics service
// (and may look up terminal addresses) over https. Nothing may leave this
// machine: such calls fail as a network error would, and are reported.
const realFetch = globalThis.fetch;
globalThis.fetch = async (input, init) => {
  let url = new URL(typeof input === "string" ? input : input.url);
  const deviceAddressHost = /^device-address-api(-[a-z0-9]+)?\.[a-z0-9-]+\.mspenv\.io$/i;
  if (args["device-address-url"] && deviceAddressHost.test(url.hostname)) {
    const to = new URL(url.pathname + url.search, args["device-address-url"]);
    emit("http_redirected", { from: url.href, to: to.href, headers: init && init.headers });
    url = to;
    input = to.href;
  }
  const loopback = ["127.0.0.1", "localhost", "[::1]"].includes(url.hostname);
  if (!loopback) {
    emit("http_blocked", { url: url.href, method: (init && init.method) || "GET" });
    throw new TypeError(`fetch to ${url.host} blocked by the interop harness`);
  }
  return realFetch(input, init);
};

// ---------------------------------------------------------------- the library

const spiLib = require("@mx51/spi-client-js");
const libPackage = require("@mx51/spi-client-js/package.json");
const {
  Spi,
  Secrets,
  AccountVerifyResponse,
  PreauthResponse,
  BillStatusResponse,
  BillRetrievalResult,
  GetOpenTablesResponse,
  OpenTablesEntry,
  SpiStatus,
  SpiFlow,
  SuccessState,
  PurchaseResponse,
  TerminalConfigurationResponse,
  TransactionType,
  TransactionUpdate,
} = spiLib;

const secrets =
  args["enc-key"] && args["hmac-key"] ? new Secrets(args["enc-key"], args["hmac-key"]) : null;
const spi = new Spi(args["pos-id"], args.serial, args.address, secrets);
spi.SetPosInfo("multipair", "interop-1.0");
// 2.9 throws away the configured port unless the tenant is "wbc" (§13.2).
spi.SetTenantCode(args.tenant);

// Callbacks the library requires a POS to overwrite (the defaults throw
// "Method not implemented. Please overwrite this method in your POS").
spi.TerminalConfigurationResponse = (m) => {
  const r = new TerminalConfigurationResponse(m);
  emit("terminal_configuration", {
    success: r.isSuccess(),
    serial_number: r.GetSerialNumber(),
    terminal_model: r.GetTerminalModel(),
  });
  poke();
};
spi.TerminalStatusResponse = (m) => {
  emit("terminal_status", { data: m.Data });
  poke();
};
spi.BatteryLevelChanged = (m) => {
  emit("battery", { data: m.Data });
  poke();
};
spi.PrintingResponse = (m) => {
  emit("printing", { data: m.Data });
  poke();
};
spi.TransactionUpdateMessage = (m) => {
  const u = new TransactionUpdate(m);
  emit("txn_update", { code: u.GetDisplayMessageCode(), text: u.GetDisplayMessageText() });
  if (updateHook) {
    const hook = updateHook;
    setImmediate(() => hook(u));
  }
  poke();
};

const waiters = new Set();
function poke() {
  for (const waiter of [...waiters]) {
    let done = false;
    try {
      done = waiter.predicate();
    } catch (err) {
      waiters.delete(waiter);
      clearTimeout(waiter.timer);
      waiter.reject(err);
      continue;
    }
    if (done) {
      waiters.delete(waiter);
      clearTimeout(waiter.timer);
      waiter.resolve();
    }
  }
}

/** Resolve when predicate() holds: now, or after some later library event. */
function waitFor(what, predicate) {
  return new Promise((resolve, reject) => {
    const waiter = { predicate, resolve, reject, timer: null };
    waiter.timer = setTimeout(() => {
      waiters.delete(waiter);
      reject(new Error(`timed out after ${stepTimeoutMs} ms waiting for ${what}`));
    }, stepTimeoutMs);
    waiters.add(waiter);
    poke();
  });
}

/** The purchase-like fields of a response, through the library's PurchaseResponse getters. */
function purchaseLike(r) {
  return {
    pos_ref_id: r.PosRefId,
    success: r.Success,
    host_response_code: r.GetResponseCode(),
    host_response_text: r.GetResponseText(),
    error_reason: r.GetResponseValue("error_reason") ?? null,
    purchase_amount: r.GetPurchaseAmount() ?? null,
    rrn: r.GetRRN(),
    auth_code: r.GetAuthCode(),
    terminal_ref_id: r.GetTerminalReferenceId() ?? null,
    has_customer_receipt: Boolean(r.GetCustomerReceipt()),
    has_merchant_receipt: Boolean(r.GetMerchantReceipt()),
  };
}

function describeTx(state) {
  const out = {
    pos_ref_id: state.PosRefId,
    tx_type: state.Type,
    finished: state.Finished,
    success: state.Success,
    request_sent: state.RequestSent,
    awaiting_gt: state.AwaitingGtResponse,
    awaiting_signature: state.AwaitingSignatureCheck,
    awaiting_auth_code: state.AwaitingPhoneForAuth,
    attempting_to_cancel: state.AttemptingToCancel,
    display: state.DisplayMessage,
  };
  const m = state.Response;
  if (m && m.Data) {
    out.response_event = m.EventName;
    if (state.Type === TransactionType.Purchase && typeof m.Data.pos_ref_id !== "undefined") {
      const r = new PurchaseResponse(m);
      out.response = {
        pos_ref_id: r.PosRefId,
        success: r.Success,
        host_response_code: r.GetResponseCode(),
        host_response_text: r.GetResponseText(),
        purchase_amount: r.GetPurchaseAmount(),
        rrn: r.GetRRN(),
        auth_code: r.GetAuthCode(),
        scheme_name: r.SchemeName,
        has_customer_receipt: Boolean(r.GetCustomerReceipt()),
        has_merchant_receipt: Boolean(r.GetMerchantReceipt()),
      };
    } else if (state.Type === TransactionType.Preauth && typeof m.Data.pos_ref_id !== "undefined") {
      // What a POS reads from a preauth response (PreauthResponse), balances included.
      const r = new PreauthResponse(m);
      out.response = {
        ...purchaseLike(r.Details),
        preauth_id: r.PreauthId ?? null,
        transaction_type: m.Data.transaction_type ?? null,
        balance_amount: r.GetBalanceAmount() ?? null,
        previous_balance_amount: r.GetPreviousBalanceAmount() ?? null,
        completion_amount: r.GetCompletionAmount() ?? null,
        surcharge_amount: r.GetSurchargeAmount() ?? null,
      };
    } else if (state.Type === TransactionType.AccountVerify && typeof m.Data.pos_ref_id !== "undefined") {
      const r = new AccountVerifyResponse(m);
      out.response = {
        ...purchaseLike(r.Details),
        transaction_type: m.Data.transaction_type ?? null,
      };
    } else if (
      (state.Type === TransactionType.ZipPurchase || state.Type === TransactionType.ZipRefund) &&
      typeof m.Data.pos_ref_id !== "undefined"
    ) {
      // The library keeps ZipPurchaseResponse / ZipRefundResponse out of its
      // exports: a POS reads the message data, as those classes' getters do.
      out.response = {
        pos_ref_id: m.Data.pos_ref_id,
        success: m.GetSuccessState() === SuccessState.Success,
        host_response_code: m.Data.host_response_code ?? null,
        host_response_text: m.Data.host_response_text ?? null,
        purchase_amount: m.Data.purchase_amount ?? null,
        refund_amount: m.Data.refund_amount ?? null,
        bank_date: m.Data.bank_date ?? null,
        bank_time: m.Data.bank_time ?? null,
        zip_data: m.Data.zip_data ?? null,
        has_customer_receipt: Boolean(m.Data.customer_receipt),
        has_merchant_receipt: Boolean(m.Data.merchant_receipt),
        error_reason: m.Data.error_reason ?? null,
      };
    } else {
      out.response = {
        pos_ref_id: m.Data.pos_ref_id ?? null,
        success: m.Data.success ?? null,
        error_reason: m.Data.error_reason ?? null,
      };
    }
  }
  return out;
}

documentShim.addEventListener("StatusChanged", (e) => {
  emit("status", { status: e.detail });
  poke();
});
documentShim.addEventListener("PairingFlowStateChanged", (e) => {
  const s = e.detail;
  emit("pairing", {
    message: s.Message,
    code: s.ConfirmationCode,
    awaiting_pos: s.AwaitingCheckFromPos,
    awaiting_eftpos: s.AwaitingCheckFromEftpos,
    finished: s.Finished,
    successful: s.Successful,
  });
  poke();
});
documentShim.addEventListener("SecretsChanged", (e) => {
  const s = e.detail;
  // Throwaway keys of a loopback test pairing: the test compares them with
  // the terminal's own.
  emit("secrets", s ? { enc_key: s.EncKey, hmac_key: s.HmacKey } : { enc_key: null, hmac_key: null });
  poke();
});
documentShim.addEventListener("DeviceAddressChanged", (e) => {
  const d = e.detail;
  emit("device_address", {
    code: d.DeviceAddressResponseCode,
    address: d.Address,
    ip: d.ip,
    fqdn: d.fqdn,
    last_updated: d.LastUpdated,
    description: d.ResponseStatusDescription,
  });
  poke();
});
documentShim.addEventListener("PosSpiToken", (e) => {
  emit("pos_spi_token", { token: e.detail });
  poke();
});
documentShim.addEventListener("TxFlowStateChanged", (e) => {
  emit("tx", describeTx(e.detail));
  if (txHook) {
    const hook = txHook;
    setImmediate(() => hook(spi.CurrentTxFlowState));
  }
  poke();
});
// The first pong of a connection is when the library is ready to transact
// (§5.3); after a pairing, PairedConnected comes earlier, with pair_response.
documentShim.addEventListener("SpiPong", (e) => {
  pongsThisConnection += 1;
  if (pongsThisConnection === 1) emit("first_pong", { conn_id: e.detail.ConnId ?? null });
  poke();
});

// ---------------------------------------------------------------- pay at table

// With --pay-at-table, the POS enables pay at table before Start() and
// answers the terminal from its own bills (a dict, as a POS's database):
//   {"config": {"PayAtTableEnabled": true, "OperatorIdEnabled": true, ...,
//               "AllowedOperatorIds": ["7"], "LabelPayButton": "PAY"},
//    "bills": {"<table id>": {"bill_id": "B12", "total_cents": N,
//              "outstanding_cents": N, "label": "Table 12"}}}
// Config keys are PayAtTableConfig's own property names. A payment lowers the
// bill's outstanding amount by its purchase amount (tips are the customer's
// extra); the library's "bill data" (the payment history it keeps through
// the POS) is stored with the bill and handed back, as the library asks.
let payAtTable = null;

function billOf(billId, tableId) {
  const bills = payAtTable.bills;
  if (billId) return Object.values(bills).find((b) => b.bill_id === billId) ?? null;
  return bills[tableId] ?? null;
}

function billStatus(bill, tableId, operatorId) {
  if (!bill) return new BillStatusResponse({ Result: BillRetrievalResult.INVALID_TABLE_ID, TableId: tableId });
  return new BillStatusResponse({
    Result: BillRetrievalResult.SUCCESS,
    BillId: bill.bill_id,
    TableId: tableId,
    OperatorId: operatorId,
    TotalAmount: bill.total_cents,
    OutstandingAmount: bill.outstanding_cents,
    BillData: bill.bill_data ?? "",
  });
}

function enablePayAtTable(setup) {
  payAtTable = { bills: setup.bills ?? {} };
  const pat = spi.EnablePayAtTable();
  Object.assign(pat.Config, setup.config ?? {});
  pat.GetBillStatus = (billId, tableId, operatorId, paymentFlowStarted) => {
    const bill = billOf(billId, tableId);
    emit("pat_get_bill", {
      bill_id: billId,
      table_id: tableId,
      operator_id: operatorId,
      payment_flow_started: paymentFlowStarted ?? null,
      found: Boolean(bill),
    });
    setImmediate(poke);
    return billStatus(bill, tableId, operatorId);
  };
  pat.BillPaymentReceived = (billPayment, updatedBillData) => {
    const bill = billOf(billPayment.BillId, billPayment.TableId);
    emit("pat_payment", {
      bill_id: billPayment.BillId,
      table_id: billPayment.TableId,
      operator_id: billPayment.OperatorId,
      payment_type: billPayment.PaymentType,
      purchase_amount: billPayment.PurchaseAmount,
      tip_amount: billPayment.TipAmount,
      surcharge_amount: billPayment.SurchargeAmount,
      terminal_ref_id: billPayment.PurchaseResponse.GetTerminalReferenceId() ?? null,
      history_entries: updatedBillData ? JSON.parse(updatedBillData).length : 0,
      found: Boolean(bill),
    });
    setImmediate(poke);
    if (!bill) return billStatus(null, billPayment.TableId, billPayment.OperatorId);
    bill.outstanding_cents -= billPayment.PurchaseAmount;
    bill.bill_data = updatedBillData;
    return billStatus(bill, billPayment.TableId, billPayment.OperatorId);
  };
  // 2.9: may answer asynchronously (§13.14); this POS looks it up "in its database".
  pat.GetOpenTables = async (operatorId) => {
    const open = Object.entries(payAtTable.bills).filter(([, b]) => b.outstanding_cents > 0);
    emit("pat_get_open_tables", { operator_id: operatorId, tables: open.map(([id]) => id) });
    setImmediate(poke);
    return new GetOpenTablesResponse(
      open.map(([id, b]) => new OpenTablesEntry({ TableId: id, Label: b.label ?? id, BillOutstandingAmount: b.outstanding_cents })),
    );
  };
  pat.BillPaymentFlowEnded = async (ended) => {
    emit("pat_flow_ended", {
      bill_id: ended.BillId,
      table_id: ended.TableId,
      operator_id: ended.OperatorId,
      bill_total_amount: ended.BillTotalAmount,
      bill_outstanding_amount: ended.BillOutstandingAmount,
      card_total_count: ended.CardTotalCount,
      card_total_amount: ended.CardTotalAmount,
      cash_total_count: ended.CashTotalCount,
      cash_total_amount: ended.CashTotalAmount,
    });
    setImmediate(poke);
  };
}

// ---------------------------------------------------------------- the plan

async function pair() {
  if (!spi.Pair()) throw new Error("Pair() refused");
  await waitFor(
    "the pairing confirmation code",
    () => spi.CurrentPairingFlowState.AwaitingCheckFromPos && spi.CurrentPairingFlowState.ConfirmationCode,
  );
  emit("pairing_code", { code: spi.CurrentPairingFlowState.ConfirmationCode });
  spi.PairingConfirmCode(); // the POS user presses YES
  await waitFor("the end of pairing", () => spi.CurrentPairingFlowState.Finished);
  const s = spi.CurrentPairingFlowState;
  emit("pairing_finished", { successful: s.Successful, code: s.ConfirmationCode });
  if (!s.Successful) throw new Error(`pairing failed: ${s.Message}`);
  await waitFor("PairedConnected", () => spi.CurrentStatus === SpiStatus.PairedConnected);
  await waitFor("the first pong after pairing", () => pongsThisConnection > 0);
  emit("ack", { idle: spi.AckFlowEndedAndBackToIdle() });
}

async function finishTx(ref) {
  await waitFor(`the end of transaction ${ref}`, () => spi.CurrentTxFlowState.Finished);
  const response = spi.CurrentTxFlowState.Response;
  if (response && response.Data) finishedResponses.set(ref, response.Data);
  emit("tx_finished", describeTx(spi.CurrentTxFlowState));
  emit("ack", { idle: spi.AckFlowEndedAndBackToIdle() });
}

async function purchase(step) {
  await waitFor("PairedConnected and idle", () => spi.CurrentStatus === SpiStatus.PairedConnected && spi.CurrentFlow === SpiFlow.Idle);
  let signatureAnswered = null; // the request last answered: a recovery may ask again
  let phoned = false;
  txHook = (state) => {
    if (state.Finished) return;
    const asked = state.SignatureRequiredMessage;
    if (typeof step.signature === "boolean" && state.AwaitingSignatureCheck && asked !== signatureAnswered) {
      signatureAnswered = asked;
      const r = spi.AcceptSignature(step.signature);
      emit("signature_answered", { accepted: step.signature, valid: r.Valid, message: r.Message });
    }
    if (step.auth_code && state.AwaitingPhoneForAuth && !phoned) {
      phoned = true;
      const r = spi.SubmitAuthCode(step.auth_code);
      emit("auth_code_submitted", { code: step.auth_code, valid: r.ValidFormat, message: r.Message });
    }
  };
  const cancel = () => {
    const r = spi.CancelTransaction();
    emit("cancel_requested", { valid: r.Valid, message: r.Message });
  };
  let cancelled = false;
  updateHook = () => {
    if (step.cancel === "on_update" && !cancelled) {
      cancelled = true;
      cancel();
    }
  };
  const result = spi.InitiatePurchaseTx(step.ref, step.cents);
  emit("initiated", { pos_ref_id: step.ref, initiated: result.Initiated, message: result.Message });
  if (!result.Initiated) throw new Error(`InitiatePurchaseTx refused: ${result.Message}`);
  if (step.cancel === "now") cancel();
  if (step.then_exit) return;
  try {
    await finishTx(step.ref);
  } finally {
    txHook = null;
    updateHook = null;
  }
}

// What earlier steps of the plan produced, for later steps to use: the
// preauth id a preauth response carried, the receipt number of a Zip purchase.
const finishedResponses = new Map(); // pos_ref_id -> response Message data
let preauthApi = null; // spi.EnablePreauth(), made before Start()

function fromEarlier(ref, what, pick) {
  const data = finishedResponses.get(ref);
  if (!data) throw new Error(`no finished transaction ${ref} to take the ${what} from`);
  const value = pick(data);
  if (value === undefined || value === null || value === "") throw new Error(`transaction ${ref} has no ${what}`);
  return value;
}

/** Starts the transaction of a "tx" step through the library's own Initiate* method. */
function initiate(step) {
  const preauthId = () =>
    step.preauth_of ? fromEarlier(step.preauth_of, "preauth_id", (d) => d.preauth_id) : step.preauth_id;
  switch (step.kind) {
    case "account_verify":
      return preauthApi.InitiateAccountVerifyTx(step.ref);
    case "preauth_open":
      return preauthApi.InitiateOpenTx(step.ref, step.cents);
    case "preauth_topup":
      return preauthApi.InitiateTopupTx(step.ref, preauthId(), step.cents);
    case "preauth_partial_cancel":
      return preauthApi.InitiatePartialCancellationTx(step.ref, preauthId(), step.cents);
    case "preauth_extend":
      return preauthApi.InitiateExtendTx(step.ref, preauthId());
    case "preauth_cancel":
      return preauthApi.InitiateCancelTx(step.ref, preauthId());
    case "preauth_complete":
      return preauthApi.InitiateCompletionTx(step.ref, preauthId(), step.cents, step.surcharge_cents ?? 0);
    case "zip_purchase":
      return spi.InitiateZipPurchaseTx(step.ref, step.cents, step.description ?? "", step.store_code);
    case "zip_refund": {
      const receipt = step.receipt_of
        ? fromEarlier(step.receipt_of, "zip receipt_number", (d) => d.zip_data && d.zip_data.receipt_number)
        : step.original_receipt_number;
      return spi.InitiateZipRefundTx(step.ref, step.cents, receipt);
    }
    default:
      throw new Error(`unknown transaction kind ${step.kind}`);
  }
}

async function transaction(step) {
  await waitFor("PairedConnected and idle", () => spi.CurrentStatus === SpiStatus.PairedConnected && spi.CurrentFlow === SpiFlow.Idle);
  const result = initiate(step);
  emit("initiated", { pos_ref_id: step.ref, kind: step.kind, initiated: result.Initiated, message: result.Message });
  if (!result.Initiated) throw new Error(`${step.kind} refused: ${result.Message}`);
  await finishTx(step.ref);
}

async function recover(step) {
  await waitFor("PairedConnected and idle", () => spi.CurrentStatus === SpiStatus.PairedConnected && spi.CurrentFlow === SpiFlow.Idle);
  const result = spi.InitiateRecovery(step.ref, TransactionType[step.tx_type ?? "Purchase"]);
  emit("initiated", { pos_ref_id: step.ref, initiated: result.Initiated, message: result.Message });
  if (!result.Initiated) throw new Error(`InitiateRecovery refused: ${result.Message}`);
  await finishTx(step.ref);
}

emit("library", {
  version: libPackage.version,
  spi_version: Spi.GetVersion(),
  node: process.version,
  success_states: Object.values(SuccessState),
});

let exitCode = 0;
try {
  if (args["device-address-url"]) {
    spi.SetDeviceApiKey(args["device-api-key"]);
    spi.SetAutoAddressResolution(true); // looks the serial number up now
  }
  preauthApi = spi.EnablePreauth(); // before Start(), as the library's samples do
  if (args["pay-at-table"]) enablePayAtTable(JSON.parse(args["pay-at-table"]));
  spi.Start();
  emit("started", { status: spi.CurrentStatus });
  for (const step of plan) {
    emit("step", { step });
    if (step.do === "pair") await pair();
    else if (step.do === "wait_status") await waitFor(`status ${step.status}`, () => spi.CurrentStatus === step.status);
    else if (step.do === "wait_event") {
      const count = step.count ?? 1;
      await waitFor(`${count} ${step.type} event(s)`, () => (emitted.get(step.type) ?? 0) >= count);
    }
    else if (step.do === "purchase") await purchase(step);
    else if (step.do === "tx") await transaction(step);
    else if (step.do === "recover") await recover(step);
    else if (step.do === "bills") emit("bills", { bills: payAtTable ? payAtTable.bills : null });
    else if (step.do === "exit") break;
    else throw new Error(`unknown step ${JSON.stringify(step)}`);
  }
  emit("done", { status: spi.CurrentStatus });
} catch (err) {
  emit("failed", { error: String(err && err.message ? err.message : err), status: spi.CurrentStatus });
  exitCode = 1;
}
// The library has no Stop(): its ping and monitor timers run forever.
process.exit(exitCode);
