// knfn's dashboard: polls /status and /metrics once a second and /events every two seconds,
// keeps five minutes of history in the page and draws it with plotly.js (served from the
// plotly wheel: knfn/dashboard/__init__.py says why). Text from the server is only ever set
// with textContent, never parsed as HTML.
"use strict";

const TICK_MS = 1000;
const EVENTS_MS = 2000;
const KEEP_POINTS = 300; // five minutes at one point a second
const EVENTS_SHOWN = 60;

const history = new Map(); // "ns/service/revision" -> {t: [], desired: [], ...}
let lastCounts = null; // {time, requests: Map(key -> count)}
let selected = null; // the stored event number shown in the inspector
let replayNote = { number: null, text: "" }; // what the last replay answered, for its event

// -- small DOM helpers -------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else if (k === "onclick") node.addEventListener("click", v);
    else node[k] = v;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  }
  return node;
}

function td(value, cls = "") {
  return el("td", cls ? { class: cls } : {}, value ?? "");
}

function fmt(x, digits = 1) {
  return typeof x === "number" ? x.toFixed(digits).replace(/\.0+$/, "") : "–";
}

async function getJSON(path) {
  const resp = await fetch(path, { cache: "no-store" });
  if (!resp.ok) throw new Error(`${path}: ${resp.status}`);
  return resp.json();
}

// -- /metrics: the counters /status does not carry ----------------------------------------------
// Prometheus text lines: name{label="value",...} number
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)\{([^}]*)\}\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of m[2].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

function sumBy(samples, name) {
  const sums = new Map();
  for (const s of samples) {
    if (s.name !== name) continue;
    const key = `${s.labels.namespace}/${s.labels.service}/${s.labels.revision}`;
    sums.set(key, (sums.get(key) || 0) + s.value);
  }
  return sums;
}

// -- one tick: /status and /metrics -------------------------------------------------------------
function revisions(status) {
  const out = [];
  for (const svc of status.services || []) {
    for (const rev of svc.revisions) {
      out.push({ key: `${svc.namespace}/${svc.name}/${rev.name}`, svc, rev });
    }
  }
  return out;
}

function record(status, samples, now) {
  const requests = sumBy(samples, "knfn_requests_total");
  const coldStarts = sumBy(samples, "knfn_cold_starts_total");
  const rates = new Map();
  for (const { key, rev } of revisions(status)) {
    let rate = 0;
    if (lastCounts && lastCounts.requests.has(key)) {
      const seconds = (now - lastCounts.time) / 1000;
      rate = Math.max(0, (requests.get(key) || 0) - lastCounts.requests.get(key)) / seconds;
    }
    rates.set(key, rate);
    const h = history.get(key) || {
      t: [], desired: [], ready: [], inFlight: [], rate: [], stable: [], panic: [], target: [],
    };
    const kpa = rev.autoscaler || null;
    h.t.push(new Date(now));
    h.desired.push(rev.desired_replicas);
    h.ready.push(rev.ready_replicas);
    h.inFlight.push(rev.in_flight ?? 0);
    h.rate.push(rate);
    h.stable.push(kpa ? kpa.stable_value : null);
    h.panic.push(kpa ? kpa.panic_value : null);
    h.target.push(kpa ? kpa.target : null);
    h.kpa = Boolean(kpa) || h.kpa;
    for (const series of Object.values(h)) {
      if (Array.isArray(series) && series.length > KEEP_POINTS) series.shift();
    }
    history.set(key, h);
  }
  lastCounts = { time: now, requests };
  return { rates, coldStarts };
}

// -- tables ---------------------------------------------------------------------------------
function renderServices(status, rates, coldStarts) {
  const body = document.getElementById("services-body");
  const rows = [];
  for (const { key, svc, rev } of revisions(status)) {
    const cold = rev.cold_starts ?? coldStarts.get(key) ?? 0;
    let note = "";
    if (rev.capped_at != null) note = `capped at ${rev.capped_at} (${rev.capped_by || "budget"})`;
    else if (svc.latest_ready_revision === rev.name) note = "latest ready";
    rows.push(
      el("tr", { "data-service": svc.name, "data-revision": rev.name },
        td(`${svc.name}.${svc.namespace}`), td(rev.name), td(`${rev.traffic_percent}%`, "num"),
        td(rev.tag || ""), td(rev.desired_replicas, "num"), td(rev.ready_replicas, "num"),
        td(rev.in_flight ?? 0, "num"), td(rev.waiting ?? 0, "num"),
        td(fmt(rates.get(key) || 0), "num"), td(cold, "num"), td(note, "muted")),
    );
  }
  body.replaceChildren(...rows);
  const r = status.replicas;
  const caps = r && [r.cap_total != null ? `at most ${r.cap_total} in all` : "",
    r.cap_per_revision != null ? `${r.cap_per_revision} per revision` : "", r.limits || ""]
    .filter(Boolean).join(", ");
  document.getElementById("budget").textContent = r
    ? `replicas running: ${r.running}${caps ? "; " + caps : ""}`
    : "";
}

function renderKpa(status) {
  const rows = [];
  for (const { rev } of revisions(status)) {
    const a = rev.autoscaler;
    if (!a) continue;
    const panic = a.panic_mode
      ? el("span", { class: "panic" }, `panic${a.panic_since ? " since " + a.panic_since : ""}`)
      : "stable";
    rows.push(
      el("tr", { "data-revision": rev.name },
        td(rev.name), td(a.metric), td(fmt(a.target), "num"), td(fmt(a.stable_value), "num"),
        td(fmt(a.panic_value), "num"), el("td", {}, panic), td(a.desired_pods, "num"),
        td(a.ready_pods, "num"), td(fmt(a.excess_burst_capacity), "num"),
        td(a.activator_in_path ? "yes (proxy)" : "no (serve)")),
    );
  }
  document.getElementById("kpa-body").replaceChildren(...rows);
  document.getElementById("kpa-note").textContent = rows.length
    ? ""
    : "This knfn's /status does not report the autoscaler's state yet.";
}

function renderBrokers(status) {
  const rows = [];
  for (const b of status.brokers || []) {
    rows.push(
      el("tr", { class: "broker", "data-broker": b.name },
        td(`${b.namespace}/${b.name}`), td(b.address, "muted"), td(b.queue_depth, "num"),
        td(""), td(b.dead_lettered, "num"), td("")),
    );
    for (const t of b.triggers) {
      rows.push(
        el("tr", { class: "trigger", "data-trigger": t.name },
          td(t.name), td(t.subscriber, "muted"), td(t.pending, "num"), td(t.delivered, "num"),
          td(t.dead_lettered, "num"), td(t.failed, "num")),
      );
    }
  }
  document.getElementById("brokers-body").replaceChildren(...rows);
}

// -- charts ---------------------------------------------------------------------------------
const PALETTE = ["#2f5fd0", "#e4572e", "#17a398", "#ffb400", "#8e44ad", "#3d405b", "#76b041",
  "#d81159", "#00a6ed", "#7f8c8d"];

function layout(title, yTitle, empty = "") {
  const out = {
    title: { text: title, font: { size: 13 } },
    margin: { l: 48, r: 10, t: 30, b: 30 },
    yaxis: { title: { text: yTitle }, rangemode: "tozero", automargin: true },
    xaxis: { type: "date", tickformat: "%H:%M:%S" },
    legend: { font: { size: 10 } },
    showlegend: true,
  };
  if (empty) {
    out.xaxis.visible = false;
    out.yaxis.visible = false;
    out.annotations = [{ text: empty, showarrow: false, xref: "paper", yref: "paper",
      x: 0.5, y: 0.5, font: { color: "#6b7480" } }];
  }
  return out;
}

const CONFIG = { displayModeBar: false, responsive: true };

function drawCharts() {
  const replicas = [], rate = [], inFlight = [], kpa = [];
  let i = 0;
  // Plotly.react redraws what changed by reference: every draw gets fresh arrays.
  const trace = (key, name, t, y, line, legend = true) => ({
    x: t.slice(), y: y.slice(), name, mode: "lines", line, meta: key, legendgroup: key,
    showlegend: legend,
  });
  for (const [key, h] of history) {
    const name = key.split("/")[2];
    const color = PALETTE[i++ % PALETTE.length];
    replicas.push(trace(key, name, h.t, h.ready, { color }));
    replicas.push(trace(key, `${name} desired`, h.t, h.desired, { color, dash: "dot" }, false));
    rate.push(trace(key, name, h.t, h.rate, { color }));
    inFlight.push(trace(key, name, h.t, h.inFlight, { color }));
    if (h.kpa) {
      kpa.push(trace(key, `${name} stable`, h.t, h.stable, { color }));
      kpa.push(trace(key, `${name} panic`, h.t, h.panic, { color, dash: "dot" }, false));
      kpa.push(trace(key, `${name} target`, h.t, h.target, { color, dash: "dash", width: 1 },
        false));
    }
  }
  Plotly.react("chart-replicas", replicas,
    layout("Replicas: ready (solid) and desired (dotted)", "replicas"), CONFIG);
  Plotly.react("chart-rate", rate, layout("Requests per second", "req/s"), CONFIG);
  Plotly.react("chart-inflight", inFlight, layout("Requests in flight", "requests"), CONFIG);
  Plotly.react("chart-kpa", kpa, kpa.length
    ? layout("KPA: stable (solid), panic (dotted), target (dashed)", "per replica")
    : layout("KPA averages", "", "not reported by this knfn's /status"), CONFIG);
}

async function tick() {
  try {
    const [status, metrics] = await Promise.all([
      getJSON("/status"),
      fetch("/metrics", { cache: "no-store" }).then((r) => r.text()),
    ]);
    const { rates, coldStarts } = record(status, parseMetrics(metrics), Date.now());
    renderServices(status, rates, coldStarts);
    renderKpa(status);
    renderBrokers(status);
    drawCharts();
    document.getElementById("updated").textContent =
      `updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    document.getElementById("updated").textContent = `knfn does not answer: ${err.message}`;
  }
}

// -- the event inspector ----------------------------------------------------------------------
function stateBadge(text, state) {
  return el("span", { class: `badge state-${state}` }, text);
}

function renderEvents(rows) {
  const events = new Map(); // number -> {first row, deliveries}
  for (const row of rows) {
    if (!events.has(row.event)) events.set(row.event, { row, deliveries: [] });
    events.get(row.event).deliveries.push(row);
  }
  const out = [];
  for (const [number, { row, deliveries }] of [...events].slice(0, EVENTS_SHOWN)) {
    const badges = deliveries
      .slice()
      .reverse()
      .map((d) => stateBadge(`${d.kind === "dead-letter" ? "☠ " : ""}${d.trigger}: ${d.state}` +
        (d.replay ? ` (replay ${d.replay})` : ""), d.state));
    const tr = el("tr", {
      class: "event" + (number === selected ? " selected" : ""),
      "data-event": number,
      "data-event-id": row.event_id ?? "",
      onclick: () => select(number),
    },
    td(number, "num"), td(new Date(row.accepted_at).toLocaleTimeString()), td(row.type),
    el("td", {}, row.source, el("br"), el("span", { class: "muted" }, row.event_id)),
    el("td", {}, ...badges));
    out.push(tr);
  }
  document.getElementById("events-body").replaceChildren(...out);
  document.getElementById("events-note").textContent = out.length
    ? `${out.length} most recent events`
    : "No events yet: post one to a broker.";
}

async function refreshEvents() {
  try {
    const { events } = await getJSON("/events?limit=500");
    renderEvents(events);
    if (selected !== null) await showEvent(selected);
  } catch (err) {
    document.getElementById("events-note").textContent = `cannot read /events: ${err.message}`;
  }
}

function select(number) {
  selected = number;
  for (const tr of document.querySelectorAll("tr.event")) {
    tr.classList.toggle("selected", Number(tr.dataset.event) === number);
  }
  showEvent(number);
}

async function replay(number, trigger) {
  const out = document.getElementById("replay-result");
  const body = trigger ? { trigger } : {};
  const resp = await fetch(`/events/${number}/replay`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await resp.json();
  const text = resp.ok
    ? `replay ${answer.replay} sent to ${answer.deliveries.map((d) => d.trigger).join(", ")}`
    : `refused (${resp.status}): ${answer.error}`;
  replayNote = { number, text };
  if (out) out.textContent = text;
  await refreshEvents();
}

function deliveryRows(number, d) {
  const rows = [];
  const action = d.kind === "subscriber" && d.replay === 0
    ? el("button", { class: "replay-one", onclick: () => replay(number, d.trigger) }, "Replay")
    : "";
  rows.push(
    el("tr", { class: "delivery", "data-delivery": d.delivery, "data-kind": d.kind,
      "data-trigger": d.trigger, "data-state": d.state },
      td(`${d.kind === "dead-letter" ? "dead letter of " : ""}${d.trigger}` +
        (d.replay ? ` (replay ${d.replay})` : "")),
      el("td", {}, stateBadge(d.state, d.state)), td(`${d.attempts} attempt(s)`),
      td(d.last_status ?? ""), td(d.latency_ms != null ? `${fmt(d.latency_ms)} ms end to end` : ""),
      el("td", {}, action)),
  );
  rows.push(el("tr", { class: "destination" }, el("td", { colSpan: 6, class: "muted" },
    `→ ${d.destination}`)));
  for (const a of d.attempt_log) {
    rows.push(
      el("tr", { class: "attempt", "data-delivery": d.delivery, "data-outcome": a.outcome },
        td(`attempt ${a.attempt}`), el("td", {}, stateBadge(a.outcome, a.outcome)),
        td(new Date(a.started_at).toLocaleTimeString()), td(a.status ?? "no answer"),
        td(a.latency_ms != null ? `${fmt(a.latency_ms)} ms` : ""), td(a.error || "", "muted")),
    );
  }
  return rows;
}

async function showEvent(number) {
  const pane = document.getElementById("event-detail");
  let ev;
  try {
    ev = await getJSON(`/events/${number}`);
  } catch (err) {
    pane.replaceChildren(el("p", { class: "muted" }, `event ${number}: ${err.message}`));
    return;
  }
  if (selected !== number) return;
  const keep = replayNote.number === number ? replayNote.text : "";
  const attrs = Object.entries(ev.attributes).map(([k, v]) => `${k}: ${v}`).join("\n");
  const deliveries = ev.deliveries.flatMap((d) => deliveryRows(number, d));
  pane.replaceChildren(
    el("h3", { "data-event": number }, `Event ${number}: ${ev.type}`),
    el("div", {},
      el("button", { id: "replay-all", onclick: () => replay(number, null) },
        "Replay to its Triggers"),
      el("span", { id: "replay-result", class: "muted" }, keep)),
    el("pre", { class: "attributes" }, attrs),
    el("pre", { class: "data" }, ev.data == null ? "(no data)" :
      `${ev.data}${ev.data_truncated ? `\n… (${ev.data_bytes} bytes in all)` : ""}`),
    el("table", { class: "deliveries" }, el("tbody", {}, ...deliveries)),
  );
}

// Each loop waits for its round to end before the next is timed: slow answers never pile up.
function every(ms, work) {
  const round = async () => {
    await work();
    setTimeout(round, ms);
  };
  round();
}

every(TICK_MS, tick);
every(EVENTS_MS, refreshEvents);
