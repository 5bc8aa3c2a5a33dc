// multipair console: the lanes table, a lane's page and the hosts, kept live by
// server-sent events (/api/stream). No framework, no build: plain DOM.
"use strict";

const page = document.body.dataset.page;
let csrf = null;

// ------------------------------------------------------------------ helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

const dash = (value) => (value === null || value === undefined || value === "" ? "–" : String(value));
const shortId = (iid) => iid.slice(0, 8);

function age(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor(s / 3600) % 24}h`;
}

const when = (iso) => (iso ? iso.slice(0, 19).replace("T", " ") : "–");
const cents = (n) => (n === null || n === undefined ? "–" : (n / 100).toFixed(2));

// A status word on a chip; the tint only repeats the word.
const TONES = {
  paired_connected: "ok", success: "ok", live: "ok", yes: "ok", completed: "ok",
  paired_connecting: "warn", restarting: "warn", starting: "warn", draining: "warn",
  stopping: "warn", unknown: "warn", transaction: "info", pairing: "info",
  crash_loop: "bad", down: "bad", failed: "bad", stale: "bad",
};
const chip = (word) => el("span", { class: `chip ${TONES[word] || ""}`, text: dash(word) });

async function session() {
  const response = await fetch("/api/session", { credentials: "same-origin" });
  if (!response.ok) throw new Error(`session: ${response.status}`);
  csrf = (await response.json()).csrf;
}

async function act(url, body) {
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Multipair-Csrf": csrf },
    body: JSON.stringify(body || {}),
  });
  const doc = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(doc.detail || `${response.status} ${response.statusText}`);
  return doc;
}

// The confirmation dialog of every action: resolves true on OK.
function ask(text, okLabel) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

function say(text) {
  const note = document.getElementById("action-result");
  if (note) note.textContent = text;
}

// Server-sent events; the browser reconnects by itself, and a snapshot comes first.
function follow(handlers) {
  const live = document.getElementById("live");
  const source = new EventSource("/api/stream");
  source.onopen = () => { live.textContent = "live"; live.classList.add("on"); };
  source.onerror = () => { live.textContent = "reconnecting…"; live.classList.remove("on"); };
  for (const [kind, handle] of Object.entries(handlers)) {
    source.addEventListener(kind, (message) => handle(JSON.parse(message.data)));
  }
  return source;
}

// Uptimes tick in the page between updates (no clock shared with the server needed).
const ticking = new Map(); // node -> [uptime_s, received at (ms)]
function tick(node, seconds) {
  if (seconds === null || seconds === undefined) { ticking.delete(node); node.textContent = "–"; return; }
  ticking.set(node, [seconds, Date.now()]);
  node.textContent = age(seconds);
}
setInterval(() => {
  for (const [node, [seconds, at]] of ticking) {
    if (!node.isConnected) { ticking.delete(node); continue; }
    node.textContent = age(seconds + (Date.now() - at) / 1000);
  }
}, 1000);

// ------------------------------------------------------------------ lanes

function laneCells(row) {
  const link = el("a", { href: `/lanes/${row.instance_id}`, class: "mono", title: row.instance_id, text: shortId(row.instance_id) });
  const tx = row.last_pos_ref_id ? el("span", { class: "mono", title: row.last_pos_ref_id, text: row.last_pos_ref_id }) : "–";
  const uptime = el("span");
  tick(uptime, row.uptime_s);
  const error = row.last_error || (row.crash_loop ? row.last_exit : null);
  return {
    id: link, pos: dash(row.pos_id), serial: dash(row.serial_number), status: chip(row.shown),
    flow: row.running && row.flow ? chip(row.flow) : "–", host: dash(row.owner || row.host),
    pid: dash(row.pid), uptime, restarts: String(row.restarts), tx,
    result: row.last_result ? chip(row.last_result) : "–",
    error: el("span", { title: error || "", text: dash(error) }),
  };
}

const LANE_COLUMNS = ["id", "pos", "serial", "status", "flow", "host", "pid", "uptime", "restarts", "tx", "result", "error"];
const NUMERIC = new Set(["pid", "uptime", "restarts"]);

function renderLane(body, row) {
  let tr = document.getElementById(`lane-${row.instance_id}`);
  const fresh = !tr;
  if (fresh) {
    tr = el("tr", { id: `lane-${row.instance_id}`, "data-id": row.instance_id });
    for (const column of LANE_COLUMNS) {
      tr.append(el("td", { "data-col": column, class: NUMERIC.has(column) ? "num" : null }));
    }
    body.append(tr);
  }
  const cells = laneCells(row);
  let changed = false;
  for (const column of LANE_COLUMNS) {
    const td = tr.querySelector(`[data-col="${column}"]`);
    if (column === "uptime" && td.firstChild && td.firstChild.nodeName === "SPAN") {
      tick(td.firstChild, row.uptime_s); // the same ticking node, re-based
      continue;
    }
    const cell = typeof cells[column] === "string" ? document.createTextNode(cells[column]) : cells[column];
    const same = td.firstChild && td.childNodes.length === 1 && td.firstChild.isEqualNode(cell);
    if (same) continue; // untouched: no flash, no DOM churn
    td.replaceChildren(cell);
    if (column !== "uptime") changed = true;
  }
  tr.dataset.status = row.shown;
  if (!fresh && changed) {
    tr.classList.remove("flash");
    void tr.offsetWidth; // restart the animation
    tr.classList.add("flash");
  }
}

function lanesPage() {
  const body = document.querySelector("#lanes tbody");
  const summary = () => {
    const rows = [...body.querySelectorAll("tr")];
    const counts = {};
    for (const tr of rows) counts[tr.dataset.status] = (counts[tr.dataset.status] || 0) + 1;
    const parts = Object.entries(counts).sort().map(([word, n]) => `${n} ${word}`);
    document.getElementById("summary").textContent = rows.length ? `${rows.length} · ${parts.join(", ")}` : "";
    document.getElementById("empty").hidden = rows.length > 0;
  };
  follow({
    snapshot: (doc) => {
      // In place: rows keep their identity (and a reader's selection); gone lanes go.
      const keep = new Set(doc.lanes.map((row) => `lane-${row.instance_id}`));
      for (const tr of [...body.querySelectorAll("tr")]) if (!keep.has(tr.id)) tr.remove();
      doc.lanes.forEach((row) => renderLane(body, row));
      summary();
    },
    lane: (row) => { renderLane(body, row); summary(); },
    removed: (doc) => { document.getElementById(`lane-${doc.instance_id}`)?.remove(); summary(); },
  });
}

// ------------------------------------------------------------------ one lane

function facts(dl, pairs) {
  dl.replaceChildren(...pairs.flatMap(([name, value]) => [
    el("dt", { text: name }),
    el("dd", { "data-fact": name }, value instanceof Node ? value : dash(value)),
  ]));
}

function laneState(row) {
  const uptime = el("span");
  tick(uptime, row.uptime_s);
  facts(document.getElementById("state"), [
    ["status", chip(row.shown)],
    ["flow", row.flow ? chip(row.flow) : null],
    ["enabled", row.enabled ? "yes" : "no (stopped: Start runs it again)"],
    ["host", row.owner || row.host],
    ["pid", row.pid],
    ["uptime", uptime],
    ["restarts", String(row.restarts) + (row.crash_loop ? "  (crash loop)" : "")],
    ["last transaction", row.last_pos_ref_id ? `${row.last_pos_ref_id} (${row.last_result || "?"})` : null],
    ["last exit", row.last_exit],
    ["last error", row.last_error],
    ["heartbeat", row.heartbeat_at ? `${when(row.heartbeat_at)} UTC` : null],
  ]);
  document.body.dataset.status = row.shown;
}

function eventItem(event) {
  return el("li", { "data-type": event.type, title: JSON.stringify(event.body, null, 2) },
    el("time", { datetime: event.at, text: when(event.at) }), el("span", { text: event.line }));
}

function txRows(records) {
  if (!records.length) {
    document.querySelector("#txs tbody").replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "none", text: "No transactions yet." })));
    return;
  }
  document.querySelector("#txs tbody").replaceChildren(...records.map((tx) => el("tr", { "data-ref": tx.pos_ref_id },
    el("td", { class: "mono", title: tx.pos_ref_id, text: tx.pos_ref_id }), el("td", { text: tx.tx_type }),
    el("td", { class: "num", text: cents(tx.amount_cents) }), el("td", {}, chip(tx.state)),
    el("td", {}, tx.result ? chip(tx.result) : "–"), el("td", { text: when(tx.created_at) }))));
}

function lanePage() {
  const iid = location.pathname.split("/").pop();
  const list = document.getElementById("events");
  const panel = document.getElementById("pairing");
  let code = null;

  const showPairing = (body) => {
    const done = ["succeeded", "failed", "cancelled"].includes(body.state);
    panel.hidden = false;
    if (body.confirmation_code) code = body.confirmation_code;
    document.getElementById("pair-code").textContent = code || "······";
    const waitingTerminal = body.awaiting_terminal ? " Confirm it on the terminal too." : "";
    const text = {
      started: "Pairing started: waiting for the terminal…",
      awaiting_confirmation: `Check that the terminal shows the same code.${waitingTerminal}`,
      succeeded: "Paired.", failed: `Pairing failed${body.detail ? `: ${body.detail}` : "."}`,
      cancelled: "Pairing cancelled.",
    }[body.state] || body.state;
    document.getElementById("pair-state").textContent = text;
    const canConfirm = !done && Boolean(code) && body.awaiting_pos;
    document.getElementById("pair-confirm").disabled = !canConfirm;
    document.getElementById("pair-cancel").disabled = done;
    panel.dataset.state = body.state;
  };

  const addEvent = (event, fresh) => {
    const item = eventItem(event);
    if (fresh) item.classList.add("fresh");
    list.prepend(item);
    while (list.children.length > 200) list.lastChild.remove();
    if (event.type === "pairing") showPairing(event.body);
  };

  const load = async () => {
    const response = await fetch(`/api/lanes/${iid}`, { credentials: "same-origin" });
    if (!response.ok) { say((await response.json().catch(() => ({}))).detail || "no such lane"); return null; }
    return response.json();
  };

  const reloadTxs = async () => { const doc = await load(); if (doc) txRows(doc.transactions); };

  (async () => {
    const doc = await load();
    if (!doc) return;
    document.getElementById("lane-id").textContent = iid;
    document.getElementById("lane-name").textContent = `${doc.profile.pos_id} · ${doc.profile.serial_number}`;
    document.title = `multipair · ${doc.profile.pos_id} ${doc.profile.serial_number}`;
    laneState(doc.row);
    const p = doc.profile;
    facts(document.getElementById("profile"), [
      ["instance id", el("span", { class: "mono", text: p.instance_id })], ["pos id", p.pos_id],
      ["serial", p.serial_number], ["address", p.auto_address ? "auto (device-address service)" : p.device_address],
      ["tenant", p.tenant_code], ["test mode", p.test_mode ? "yes" : "no"], ["secure (wss)", p.secure ? "yes" : "no"],
      ["created", `${when(p.created_at)} UTC`],
    ]);
    txRows(doc.transactions);
    list.replaceChildren();
    for (const event of doc.events) addEvent(event, false);
    const last = [...doc.events].reverse().find((e) => e.type === "pairing");
    if (!(last && doc.row.status === "unpaired" && last.body.state === "awaiting_confirmation")) panel.hidden = true;
    follow({
      snapshot: (snap) => { const row = snap.lanes.find((r) => r.instance_id === iid); if (row) laneState(row); },
      lane: (row) => { if (row.instance_id === iid) laneState(row); },
      event: (event) => {
        if (event.instance_id !== iid) return;
        addEvent(event, true);
        if (["transaction_completed", "command_accepted"].includes(event.type)) reloadTxs();
      },
      removed: (gone) => { if (gone.instance_id === iid) say("This lane was removed."); },
    });
  })();

  const QUESTIONS = {
    restart: ["Restart this lane's process? A running transaction is finished first.", "Restart"],
    stop: ["Stop this lane? It stays stopped on every host until Start.", "Stop"],
    start: ["Start this lane again?", "Start"],
    pair: ["Pair this lane with its terminal? A code will show here and on the terminal.", "Pair"],
    unpair: ["Unpair this lane? The terminal forgets its keys; pairing again needs the terminal.", "Unpair"],
  };
  for (const button of document.querySelectorAll("[data-action]")) {
    button.addEventListener("click", async () => {
      const action = button.dataset.action;
      const [question, label] = QUESTIONS[action];
      if (!(await ask(question, label))) return;
      say(`${label}…`);
      try {
        if (action === "pair") { code = null; showPairing({ state: "started" }); }
        const doc = await act(`/api/lanes/${iid}/${action}`);
        say(action === "pair" ? "Pairing started." : `${label}: sent${doc.owner ? ` to host ${doc.owner}` : ""}.`);
      } catch (error) {
        say(`${label} refused: ${error.message}`);
        if (action === "pair") panel.hidden = true;
      }
    });
  }
  document.getElementById("pair-confirm").addEventListener("click", async () => {
    if (!(await ask(`Does the terminal show ${code}? Confirm only if both codes match.`, "Codes match"))) return;
    try {
      await act(`/api/lanes/${iid}/pair_confirm`, { confirmation_code: code });
      document.getElementById("pair-confirm").disabled = true;
      say("Code confirmed.");
    } catch (error) { say(`Confirm refused: ${error.message}`); }
  });
  document.getElementById("pair-cancel").addEventListener("click", async () => {
    if (!(await ask("Cancel this pairing?", "Cancel pairing"))) return;
    try { await act(`/api/lanes/${iid}/pair_cancel`); say("Pairing cancel sent."); } catch (error) { say(`Cancel refused: ${error.message}`); }
  });
}

// ------------------------------------------------------------------ hosts

function hostsPage() {
  const body = document.querySelector("#hosts tbody");
  const render = (hosts) => {
    body.replaceChildren(...hosts.map((host) => {
      const lanes = host.lane_ids.length
        ? el("span", {}, ...host.lane_ids.flatMap((iid, i) => [i ? ", " : "", el("a", { href: `/lanes/${iid}`, class: "mono", text: shortId(iid) })]))
        : "none";
      const action = host.draining ? "accept" : "drain";
      const button = el("button", { type: "button", "data-host": host.host_id, "data-action": action, text: action === "drain" ? "Drain" : "Accept" });
      button.addEventListener("click", async () => {
        const question = action === "drain"
          ? `Drain ${host.host_id}? Its lanes move to other hosts, each between transactions.`
          : `Let ${host.host_id} take lanes again?`;
        if (!(await ask(question, button.textContent))) return;
        try { await act(`/api/hosts/${host.host_id}/${action}`); say(`${button.textContent}: sent to ${host.host_id}.`); } catch (error) { say(`Refused: ${error.message}`); }
      });
      const beat = el("span");
      tick(beat, host.heartbeat_age_s);
      return el("tr", { "data-host": host.host_id },
        el("td", { class: "mono", text: host.host_id }), el("td", {}, chip(host.state)), el("td", {}, beat, " ago"),
        el("td", { class: "num", text: String(host.capacity) }), el("td", {}, `${host.lane_ids.length}: `, lanes),
        el("td", {}, chip(host.accepting ? "yes" : "no")), el("td", { class: "num", text: dash(host.pid) }), el("td", {}, button));
    }));
    document.getElementById("empty").hidden = hosts.length > 0;
    const live = hosts.filter((h) => h.state === "live").length;
    document.getElementById("summary").textContent = hosts.length ? `${hosts.length} · ${live} live` : "";
  };
  follow({ snapshot: (doc) => render(doc.hosts), hosts: render });
}

// ------------------------------------------------------------------ start

session().then(() => {
  if (page === "lanes") lanesPage();
  else if (page === "lane") lanePage();
  else if (page === "hosts") hostsPage();
}).catch((error) => { document.getElementById("live").textContent = `not signed in (${error.message})`; });
