// The Alpha Panda operator console. Polls the daemon's read routes every 2 s and renders
// per broker: trading state, degradations, pauses, stages and partitions, each strategy's
// book and equity curve, the latest fills and rejections; and DLQ counts. Buttons call the
// admin API with the token typed into the page (kept in sessionStorage: this tab only).
// Everything is built with DOM calls and textContent: no HTML from data, no inline code.
"use strict";

const POLL_MS = 2000;
const STAGES = ["risk", "trader", "portfolio"];
const STATES = ["ACTIVE", "REDUCING", "HALTED"];
const TOKEN_KEY = "alpha-panda-admin-token";

let lastReadError = null;
let symbols = {};

// An instrument's symbol when the daemon knows it, else its token.
function sym(token) {
  return symbols[String(token)] || String(token);
}
let actionMessage = null;

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function headers(json) {
  const h = {};
  const t = token();
  if (t) h["Authorization"] = "Bearer " + t;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

// An element: h("td", {class: "num"}, "12.5", otherNode).
function h(tag, attrs, ...children) {
  const svg = ["svg", "path", "line", "text", "polyline"].includes(tag);
  const el = svg
    ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("data-")) el.setAttribute(k, typeof v === "string" ? v : JSON.stringify(v));
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// The API's own words for a failed call: "401 Unauthorized: missing or wrong bearer token".
async function failure(resp) {
  let why = "";
  try {
    const body = await resp.json();
    why = body && body.error ? body.error : JSON.stringify(body);
  } catch (_) {
    why = "";
  }
  return `${resp.status} ${resp.statusText}${why ? ": " + why : ""}`;
}

async function getJson(path) {
  const resp = await fetch(path, { headers: headers(false), cache: "no-store" });
  if (!resp.ok) throw new Error(await failure(resp));
  return resp.json();
}

function showMessage(text, kind) {
  const m = document.getElementById("message");
  if (!text) {
    m.hidden = true;
    m.textContent = "";
    return;
  }
  m.hidden = false;
  m.className = "message " + kind;
  m.textContent = text;
}

function refreshMessage() {
  if (actionMessage) showMessage(actionMessage.text, actionMessage.kind);
  else if (lastReadError) showMessage(lastReadError, "error");
  else showMessage(null);
}

function money(v) {
  if (v === null || v === undefined) return "–";
  const n = Number(v);
  return Number.isFinite(n) ? n.toFixed(2) : String(v);
}

function signed(v) {
  const n = Number(v);
  return h("span", { class: n > 0 ? "pos" : n < 0 ? "neg" : null }, money(v));
}

function button(label, action, body, cls) {
  return h("button", { type: "button", class: cls || null, "data-action": action, "data-body": body }, label);
}

function isPaused(pauses, broker, stage, strategy) {
  return pauses.some(
    (p) => p.broker === broker && (p.stage || null) === (stage || null) && (p.strategy || null) === (strategy || null)
  );
}

// Stages the operator opened to see each partition, kept across refreshes.
const openStages = new Set();

function stageTable(name, stages, pauses) {
  const rows = [];
  for (const [stage, s] of Object.entries(stages || {})) {
    const parts = s.partitions;
    const states = {};
    for (const p of parts) states[p.state] = (states[p.state] || 0) + 1;
    const lag = parts.reduce((n, p) => n + (Number(p.lag) || 0), 0);
    const restarts = parts.reduce((n, p) => n + (Number(p.restarts) || 0), 0);
    const lastError = (parts.find((p) => p.last_error) || {}).last_error || "";
    const key = `${name}/${stage}`;
    const detail = h("details", { "data-key": key, open: openStages.has(key) },
      h("summary", {}, `${parts.length} partitions`),
      h("div", { class: "scroll" },
        h("table", { class: "partitions" },
          h("thead", {}, h("tr", {}, ["partition", "state", "lag", "restarts", "last error"].map((c) => h("th", {}, c)))),
          h("tbody", {}, parts.map((p) =>
            h("tr", {},
              h("td", {}, `${p.topic}/${p.partition}`),
              h("td", { class: p.state === "running" ? null : "paused" }, p.state),
              h("td", { class: "num" }, p.lag === null || p.lag === undefined ? "–" : p.lag),
              h("td", { class: "num" }, p.restarts),
              h("td", { class: "error-text" }, p.last_error || "")))))));
    rows.push(
      h("tr", { "data-stage": stage },
        h("td", {}, stage),
        h("td", { class: Object.keys(states).some((k) => k !== "running") ? "paused" : null },
          Object.entries(states).map(([k, n]) => `${k} ${n}`).join(", ")),
        h("td", { class: "num" }, lag),
        h("td", { class: "num" }, restarts),
        h("td", { class: "error-text" }, lastError)));
    rows.push(h("tr", { class: "detail-row" }, h("td", { colspan: 5 }, detail)));
  }
  const stageNames = name === "market" ? ["strategy"] : STAGES;
  const buttons = stageNames.map((st) =>
    isPaused(pauses, name, st, null)
      ? button(`Resume ${st}`, "resume", { broker: name, stage: st })
      : button(`Pause ${st}`, "pause", { broker: name, stage: st }, "secondary")
  );
  return [
    h("h3", {}, "Stages"),
    h("div", { class: "controls" }, buttons),
    h("div", { class: "scroll" },
      h("table", { class: "stages" },
        h("thead", {}, h("tr", {}, ["stage", "partitions", "lag", "restarts", "last error"].map((c) => h("th", {}, c)))),
        h("tbody", {}, rows)
      )
    ),
  ];
}

function equityCurve(points) {
  const w = 300, hgt = 90, pad = 4;
  const svg = h("svg", { class: "equity", viewBox: `0 0 ${w} ${hgt}`, preserveAspectRatio: "none", role: "img" });
  if (!points || points.length < 2) {
    svg.append(h("text", { x: 8, y: 48 }, "equity curve: waiting for snapshots"));
    return svg;
  }
  const xs = points.map((p) => Date.parse(p.ts));
  const ys = points.map((p) => Number(p.total));
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  const y0 = Math.min(0, ...ys), y1 = Math.max(0, ...ys);
  const sx = (x) => pad + ((x - x0) / Math.max(1, x1 - x0)) * (w - 2 * pad);
  const sy = (y) => hgt - pad - ((y - y0) / (y1 - y0 || 1)) * (hgt - 2 * pad);
  svg.append(h("line", { class: "zero", x1: 0, x2: w, y1: sy(0), y2: sy(0) }));
  svg.append(h("polyline", { class: "line", points: xs.map((x, i) => `${sx(x).toFixed(1)},${sy(ys[i]).toFixed(1)}`).join(" ") }));
  svg.append(h("text", { x: 6, y: 12 }, `${money(ys[ys.length - 1])} (min ${money(Math.min(...ys))}, max ${money(Math.max(...ys))})`));
  return svg;
}

function strategyBlock(broker, id, snap, curve, status) {
  const paused = isPaused(status.paused, broker, null, id);
  const disabled = status.disabled_strategies.includes(id);
  const own = status.strategy_trading_states.find((s) => s.broker === broker && s.strategy === id);
  const badges = [
    own ? h("span", { class: `badge state-${own.trading_state}` }, own.trading_state) : null,
    paused ? h("span", { class: "badge paused" }, "paused") : null,
    disabled ? h("span", { class: "badge paused" }, "disabled") : null,
  ];
  const controls = h("div", { class: "controls" },
    paused
      ? button("Resume", "resume", { broker, strategy: id })
      : button("Pause", "pause", { broker, strategy: id }, "secondary"),
    disabled
      ? button("Enable", "enable", { strategy: id })
      : button("Disable", "disable", { strategy: id }, "secondary"),
    STATES.map((s) => button(s, "state", { broker, strategy: id, state: s }, s === "HALTED" ? "danger" : "secondary"))
  );
  const figures = snap
    ? h("div", { class: "figures" },
        h("span", {}, "cash ", money(snap.cash)),
        h("span", {}, "realized ", signed(snap.realized_pnl)),
        h("span", {}, "unrealized ", signed(snap.unrealized_pnl)),
        h("span", {}, "total ", signed(snap.total_pnl)),
        h("span", { class: "muted" }, "fees ", money(snap.fees)))
    : h("div", { class: "muted" }, "no fills yet");
  const positions = snap && snap.positions.length
    ? h("div", { class: "scroll" },
        h("table", { class: "positions" },
          h("thead", {}, h("tr", {}, ["instrument", "qty", "avg", "last", "unrealized"].map((c) => h("th", {}, c)))),
          h("tbody", {}, snap.positions.map((p) =>
            h("tr", {},
              h("td", {}, sym(p.instrument_token)),
              h("td", { class: "num" }, p.quantity),
              h("td", { class: "num" }, money(p.average_price)),
              h("td", { class: "num" }, money(p.last_price)),
              h("td", { class: "num" }, signed(p.unrealized_pnl)))))))
    : null;
  return h("div", { class: "strategy", "data-strategy": id },
    h("div", { class: "strategy-head" }, h("strong", {}, id), badges),
    figures, positions, equityCurve(curve), controls);
}

function rowsTable(cls, columns, rows) {
  if (!rows.length) return h("div", { class: "muted" }, "none yet");
  return h("div", { class: "scroll" },
    h("table", { class: cls },
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
      h("tbody", {}, rows)));
}

function time(ts) {
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? String(ts) : d.toLocaleTimeString();
}

function brokerPanel(name, b, status, portfolio, feed) {
  const paused = isPaused(status.paused, name, null, null);
  const reasons = b.degraded ? Object.entries(b.degraded).map(([st, why]) => `${st}: ${why}`) : [];
  const head = h("div", { class: "broker-head" },
    h("h2", {}, name === "market" ? "market (strategy stage)" : name),
    name === "market" ? null : h("span", { class: `badge state-${b.trading_state}`, "data-trading-state": b.trading_state }, b.trading_state),
    paused ? h("span", { class: "badge paused", "data-paused": "all" }, "paused") : null,
    reasons.length ? h("span", { class: "badge degraded" }, "degraded") : null);
  const parts = [head];
  if (reasons.length) parts.push(h("ul", { class: "degraded" }, reasons.map((r) => h("li", {}, r))));
  const pauseList = status.paused.filter((p) => p.broker === name);
  if (pauseList.length) {
    parts.push(h("div", { class: "paused" }, "Operator pauses: ",
      pauseList.map((p) => p.stage ? `stage ${p.stage}` : p.strategy ? `strategy ${p.strategy}` : "all stages").join(", ")));
  }
  if (name !== "market") {
    parts.push(h("div", { class: "controls" },
      paused
        ? button(`Resume ${name}`, "resume", { broker: name }, null)
        : button(`Pause ${name}`, "pause", { broker: name }, "secondary"),
      STATES.map((s) => button(`Set ${s}`, "state", { broker: name, state: s }, s === "HALTED" ? "danger" : "secondary"))));
  }
  if (name === "market" || !portfolio) {
    parts.push(...stageTable(name, b.stages, status.paused));
    return h("section", { class: "panel broker", id: `broker-${name}` }, parts);
  }

  const strategies = Object.entries(portfolio.strategies).map(([id, snap]) =>
    strategyBlock(name, id, snap, feed && feed.equity ? feed.equity[id] : null, status));
  parts.push(h("h3", {}, "Strategies"), h("div", { class: "strategies" }, strategies));
  const fills = (feed ? feed.fills : []).map((f) =>
    h("tr", {}, h("td", {}, time(f.ts)), h("td", {}, f.strategy), h("td", {}, sym(f.instrument_token)),
      h("td", {}, f.side), h("td", { class: "num" }, f.quantity), h("td", { class: "num" }, money(f.price)),
      h("td", { class: "num" }, money(f.fees))));
  const rejections = (feed ? feed.rejections : []).map((r) =>
    h("tr", {}, h("td", {}, time(r.ts)), h("td", {}, r.stage), h("td", {}, r.strategy), h("td", {}, sym(r.instrument_token)),
      h("td", {}, r.side), h("td", { class: "num" }, r.quantity), h("td", {}, r.reason)));
  parts.push(h("div", { class: "grid" },
    h("div", {}, h("h3", {}, "Latest fills"),
      rowsTable("fills", ["time", "strategy", "instrument", "side", "qty", "price", "fees"], fills)),
    h("div", {}, h("h3", {}, "Latest rejections"),
      rowsTable("rejections", ["time", "stage", "strategy", "instrument", "side", "qty", "reason"], rejections))));
  parts.push(...stageTable(name, b.stages, status.paused));
  return h("section", { class: "panel broker", id: `broker-${name}` }, parts);
}

async function poll() {
  try {
    const [status, data] = await Promise.all([getJson("/status"), getJson("/console/data")]);
    symbols = data.instruments || {};
    const names = Object.keys(status.brokers).filter((n) => n !== "market");
    const portfolios = await Promise.all(names.map((n) => getJson(`/portfolio/${encodeURIComponent(n)}`)));
    const main = document.getElementById("brokers");
    const panels = names.map((n, i) => brokerPanel(n, status.brokers[n], status, portfolios[i], data.brokers[n]));
    if (status.brokers.market) panels.push(brokerPanel("market", status.brokers.market, status, null, null));
    main.replaceChildren(...panels);
    const dlq = Object.entries(data.dlq).map(([t, n]) =>
      h("tr", { class: n > 0 ? "neg" : null }, h("td", {}, t), h("td", { class: "num" }, n)));
    document.querySelector("#dlq tbody").replaceChildren(...dlq);
    lastReadError = data.reader_error ? `console reader: ${data.reader_error}` : null;
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    lastReadError = `${e.message}${token() ? "" : " — enter the admin token"}`;
    document.getElementById("updated").textContent = "not updated";
  }
  refreshMessage();
}

async function act(action, body) {
  let path = "/admin/" + action;
  let payload = body;
  if (action === "enable" || action === "disable") {
    path = `/admin/strategies/${encodeURIComponent(body.strategy)}/${action}`;
    payload = null;
  } else if (action === "state") {
    path = "/admin/trading-state";
  }
  if (action === "state" && body.state === "HALTED") {
    const what = body.strategy ? `strategy ${body.strategy} on ${body.broker}` : `broker ${body.broker}`;
    if (!(await confirmHalt(`Halt ${what}? Risk will reject every signal and waiting orders fail.`))) return;
  }
  try {
    const resp = await fetch(path, {
      method: "POST",
      headers: headers(payload !== null),
      body: payload === null ? null : JSON.stringify(payload),
    });
    if (!resp.ok) {
      actionMessage = { text: `${action} refused: ${await failure(resp)}`, kind: "error" };
    } else {
      actionMessage = { text: `${action} done: ${JSON.stringify(body)}`, kind: "ok" };
    }
  } catch (e) {
    actionMessage = { text: `${action} failed: ${e.message}`, kind: "error" };
  }
  const shown = actionMessage;
  // An action's answer stays 10 s, unless another replaces it.
  setTimeout(() => {
    if (actionMessage === shown) {
      actionMessage = null;
      refreshMessage();
    }
  }, 10000);
  refreshMessage();
  await poll();
}

function confirmHalt(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

function start() {
  const input = document.getElementById("token");
  input.value = token();
  document.getElementById("auth").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    actionMessage = null;
    poll();
  });
  document.getElementById("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    input.value = "";
    actionMessage = null;
    poll();
  });
  document.addEventListener("toggle", (ev) => {
    const key = ev.target.dataset && ev.target.dataset.key;
    if (!key) return;
    if (ev.target.open) openStages.add(key);
    else openStages.delete(key);
  }, true);
  document.getElementById("brokers").addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-action]");
    if (!b) return;
    act(b.dataset.action, JSON.parse(b.dataset.body));
  });
  poll();
  setInterval(poll, POLL_MS);
}

document.addEventListener("DOMContentLoaded", start);
