// The bulkhead dashboard: plain JavaScript, no build step, no library.
// Live data comes from one server-sent event stream (/ui/events); searches,
// job details and bulk actions use the HTTP API, authenticated by the
// HttpOnly cookie the login set (same origin, so the browser sends it).
"use strict";

const $ = (id) => document.getElementById(id);
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const SVG = "http://www.w3.org/2000/svg";
let poolsFilled = false;
let nextAfter = null;
let shownJob = null;
const poolNames = new Map(); // priority -> pool name, from the snapshot

function poolOf(priority) {
  return poolNames.get(priority) || String(priority);
}

function text(tag, value, attrs) {
  const node = document.createElement(tag);
  node.textContent = value === null || value === undefined ? "" : String(value);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function problemText(body, status) {
  if (body && typeof body === "object" && body.error) {
    const fields = (body.fields || []).map((f) => `${f.field}: ${f.message}`);
    return [body.error, ...fields].join("; ");
  }
  return `HTTP ${status}`;
}

// One API call; a 401 means the cookie is gone or wrong: back to the login.
async function api(method, path, body) {
  const options = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  if (response.status === 401) {
    window.location.assign("/ui/login");
    throw new Error("not logged in");
  }
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  return { ok: response.ok, status: response.status, data };
}

// ------------------------------------------------------------- live data

function connect() {
  const events = new EventSource("/ui/events");
  events.addEventListener("snapshot", (event) => {
    render(JSON.parse(event.data));
  });
  events.addEventListener("error", () => {
    setStatus("Disconnected: reconnecting…", false);
    if (events.readyState === EventSource.CLOSED) {
      // Refused (token gone) or the server went away: find out which.
      api("GET", "/stats").then(() => setTimeout(connect, 2000), () => {});
    }
  });
}

// The status is a live region: change it only when the state changes, so
// that a screen reader is not told the time every second.
function setStatus(message, good) {
  const status = $("status");
  if (status.textContent !== message) status.textContent = message;
  status.className = good ? "status good" : "status bad";
}

function render(snap) {
  setStatus(snap.draining ? "Draining: the service is shutting down" : "Live", !snap.draining);
  $("updated").textContent = `updated ${snap.at.slice(11, 19)} UTC`;
  $("journal").textContent = snap.writable
    ? `Journal ${snap.journal}: writable`
    : `Journal ${snap.journal}: NOT writable (submissions refused)`;
  $("journal").className = snap.writable ? "journal good" : "journal bad";
  $("logout").hidden = !snap.auth;
  renderPools(snap);
  renderFailures(snap.failures);
}

function sum(values) {
  return values.reduce((a, b) => a + b, 0);
}

function renderPools(snap) {
  const body = $("pools").tBodies[0];
  body.replaceChildren();
  const charts = $("charts");
  charts.replaceChildren();
  for (const pool of snap.pools) {
    const row = document.createElement("tr");
    row.append(
      text("th", pool.name + (pool.paused ? " (paused)" : ""), { scope: "row" }),
      text("td", pool.backlog),
      text("td", pool.running),
      text("td", `${pool.busy} / ${pool.workers}`),
      text("td", sum(pool.minutes.succeeded)),
      text("td", sum(pool.minutes.failed)),
    );
    row.id = `pool-${pool.name}`;
    body.append(row);
    charts.append(chart(pool, snap.minutes));
  }
  if (!poolsFilled) {
    poolsFilled = true;
    for (const pool of snap.pools) {
      poolNames.set(pool.priority, pool.name);
      $("bulk-pool").append(text("option", pool.name, { value: pool.priority }));
    }
  }
}

// A bar per minute: succeeded at the bottom, failed stacked on top.
function chart(pool, minutes) {
  const width = 300;
  const height = 100;
  const top = 14;
  const bottom = 18;
  const ok = pool.minutes.succeeded;
  const bad = pool.minutes.failed;
  const peak = Math.max(1, ...ok.map((n, i) => n + bad[i]));
  const scale = (height - top - bottom) / peak;
  const bar = width / minutes;
  const figure = document.createElement("figure");
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  const summary =
    `Pool ${pool.name}: ${sum(ok)} succeeded and ${sum(bad)} failed ` +
    `in the last hour; at most ${peak} in a minute.`;
  svg.setAttribute("aria-label", summary);
  const title = document.createElementNS(SVG, "title");
  title.textContent = summary;
  svg.append(title);
  const base = height - bottom;
  const line = document.createElementNS(SVG, "line");
  for (const [k, v] of Object.entries({ x1: 0, x2: width, y1: base, y2: base, class: "axis" })) {
    line.setAttribute(k, v);
  }
  svg.append(line);
  ok.forEach((n, i) => {
    const x = i * bar + 1;
    const hOk = n * scale;
    const hBad = bad[i] * scale;
    if (n) svg.append(rect(x, base - hOk, bar - 2, hOk, "ok"));
    if (bad[i]) svg.append(rect(x, base - hOk - hBad, bar - 2, hBad, "bad"));
  });
  svg.append(label(2, 11, `${peak}/min`, "start"));
  svg.append(label(2, height - 4, `-${minutes} min`, "start"));
  svg.append(label(width / 2, height - 4, `-${minutes / 2} min`, "middle"));
  svg.append(label(width - 2, height - 4, "now", "end"));
  const caption = text("figcaption", "");
  caption.append(
    text("strong", pool.name),
    document.createTextNode(" "),
    text("span", `${sum(ok)} succeeded`, { class: "key ok" }),
    document.createTextNode(" "),
    text("span", `${sum(bad)} failed`, { class: "key bad" }),
  );
  figure.append(caption, svg);
  return figure;
}

function rect(x, y, w, h, cls) {
  const node = document.createElementNS(SVG, "rect");
  for (const [k, v] of Object.entries({ x, y, width: w, height: h, class: cls })) {
    node.setAttribute(k, v);
  }
  return node;
}

function label(x, y, value, anchor) {
  const node = document.createElementNS(SVG, "text");
  for (const [k, v] of Object.entries({ x, y, "text-anchor": anchor })) {
    node.setAttribute(k, v);
  }
  node.textContent = value;
  return node;
}

function jobButton(id) {
  const button = text("button", `#${id}`, { type: "button", class: "link" });
  button.setAttribute("aria-label", `Show job ${id}`);
  button.addEventListener("click", () => showJob(id));
  return button;
}

function renderFailures(failures) {
  $("no-failures").hidden = failures.length > 0;
  $("failures").hidden = failures.length === 0;
  const body = $("failures").tBodies[0];
  // Keep the rows (and the focus in them) when nothing changed.
  const key = failures.map((f) => f.id).join(",");
  if (body.dataset.key === key) return;
  body.dataset.key = key;
  body.replaceChildren();
  for (const f of failures) {
    const row = document.createElement("tr");
    const cell = document.createElement("td");
    cell.append(jobButton(f.id));
    row.append(cell, text("td", f.type), text("td", f.pool),
      text("td", f.finished_at.replace("T", " ")), text("td", f.error, { class: "error" }));
    body.append(row);
  }
}

// ---------------------------------------------------------------- search

async function search(event, more) {
  if (event) event.preventDefault();
  const message = $("search-message");
  const id = $("search-id").value.trim();
  const body = $("results").tBodies[0];
  if (!more) {
    body.replaceChildren();
    nextAfter = null;
  }
  if (id) {
    const answer = await api("GET", `/jobs/${encodeURIComponent(id)}`);
    $("more").hidden = true;
    if (!answer.ok) {
      $("results").hidden = true;
      message.textContent = problemText(answer.data, answer.status);
      return;
    }
    addResults([answer.data]);
    message.textContent = "1 job found.";
    return;
  }
  const query = new URLSearchParams({ limit: "50" });
  const type = $("search-type").value.trim();
  const state = $("search-state").value;
  if (type) query.set("type", type);
  if (state) query.set("state", state);
  if (more && nextAfter !== null) query.set("after", String(nextAfter));
  const answer = await api("GET", `/jobs?${query}`);
  if (!answer.ok) {
    message.textContent = problemText(answer.data, answer.status);
    return;
  }
  addResults(answer.data.jobs);
  nextAfter = answer.data.next_after;
  $("more").hidden = nextAfter === null;
  const shown = body.rows.length;
  message.textContent = shown
    ? `${shown} job${shown === 1 ? "" : "s"} shown${nextAfter === null ? "." : "; more match."}`
    : "No job matches.";
}

function addResults(jobs) {
  const body = $("results").tBodies[0];
  for (const job of jobs) {
    const row = document.createElement("tr");
    const cell = document.createElement("td");
    cell.append(jobButton(job.id));
    row.dataset.id = job.id;
    row.append(cell, text("td", job.type), text("td", poolOf(job.priority)),
      text("td", job.state, { class: `state ${job.state}` }), text("td", job.attempts),
      text("td", (job.accepted_at || "").replace("T", " ")));
    body.append(row);
  }
  $("results").hidden = body.rows.length === 0;
}

// ---------------------------------------------------------------- detail

async function showJob(id) {
  const answer = await api("GET", `/jobs/${id}`);
  const section = $("detail");
  section.hidden = false;
  $("detail-message").textContent = "";
  if (!answer.ok) {
    shownJob = null;
    $("detail-heading").textContent = `Job ${id}`;
    $("detail-fields").replaceChildren();
    $("detail-message").textContent = problemText(answer.data, answer.status);
    $("detail-cancel").hidden = true;
    $("detail-like").hidden = true;
  } else {
    fillDetail(answer.data);
  }
  $("detail-heading").focus();
}

function fillDetail(job) {
  shownJob = job;
  $("detail-heading").textContent = `Job ${job.id}: ${job.type}, ${job.state}`;
  const fields = $("detail-fields");
  fields.replaceChildren();
  const shown = ["state", "type", "pool", "attempts", "resumed", "accepted_at",
    "run_at", "started_at", "finished_at", "error", "result"];
  for (const name of shown) {
    const value = name === "pool" ? poolOf(job.priority) : job[name];
    if (value === null || value === undefined) continue;
    fields.append(text("dt", name.replace("_", " ")));
    const dd = document.createElement("dd");
    if (name === "result") dd.append(text("pre", JSON.stringify(value, null, 2)));
    else dd.textContent = String(value);
    if (name === "state") dd.id = "detail-state";
    fields.append(dd);
  }
  $("detail-cancel").hidden = TERMINAL.has(job.state);
  $("detail-like").hidden = false;
}

async function cancelShown() {
  if (!shownJob) return;
  const id = shownJob.id;
  const answer = await api("DELETE", `/jobs/${id}`);
  if (answer.ok) {
    fillDetail(answer.data);
    $("detail-message").textContent = `Job ${id}: cancel requested.`;
  } else {
    $("detail-message").textContent = problemText(answer.data, answer.status);
  }
}

function likeShown() {
  if (!shownJob) return;
  $("bulk-state").value = shownJob.state === "scheduled" ? "scheduled" : shownJob.state;
  $("bulk-type").value = shownJob.type;
  $("bulk-action").focus();
}

// ------------------------------------------------------------ bulk actions

function rfc3339(local) {
  if (!local) return null;
  return (local.length === 16 ? `${local}:00` : local) + "Z";
}

function bulkRequest() {
  const filter = {};
  const state = $("bulk-state").value;
  const type = $("bulk-type").value.trim();
  const pool = $("bulk-pool").value;
  const since = rfc3339($("bulk-since").value);
  const until = rfc3339($("bulk-until").value);
  if (state) filter.state = state;
  if (type) filter.type = type;
  if (pool) filter.priority = Number(pool);
  if (since) filter.since = since;
  if (until) filter.until = until;
  return {
    action: $("bulk-action").value,
    filter,
    reason: $("bulk-reason").value.trim(),
  };
}

function describe(request) {
  const f = request.filter;
  const parts = [];
  if (f.state) parts.push(`in state ${f.state}`);
  if (f.type) parts.push(`of type ${f.type}`);
  if (f.priority !== undefined) {
    parts.push(`in pool ${$("bulk-pool").selectedOptions[0].textContent}`);
  }
  if (f.since) parts.push(`accepted since ${f.since}`);
  if (f.until) parts.push(`accepted before ${f.until}`);
  const which = parts.length ? parts.join(", ") : "whatever its state, type or pool";
  return `${request.action[0].toUpperCase()}${request.action.slice(1)} every job ` +
    `${which}. Reason: “${request.reason}”.`;
}

function review(event) {
  event.preventDefault();
  const request = bulkRequest();
  if (!request.reason) {
    $("bulk-message").textContent = "Give a reason: it is kept in the audit log.";
    $("bulk-reason").focus();
    return;
  }
  $("confirm-heading").textContent = `Confirm: ${request.action}`;
  $("confirm-text").textContent = describe(request);
  $("confirm-yes").textContent = `Yes, ${request.action}`;
  const dialog = $("confirm");
  dialog.returnValue = "";
  dialog.showModal();
  $("confirm-no").focus();
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "yes") run(request);
    else $("bulk-button").focus();
  }, { once: true });
}

async function run(request) {
  const message = $("bulk-message");
  message.textContent = `Starting: ${request.action}…`;
  const answer = await api("POST", "/operations", request);
  if (answer.status === 404 || answer.status === 405) {
    message.textContent = "This server has no operations endpoint (POST /operations).";
    return;
  }
  if (!answer.ok) {
    message.textContent = `Refused: ${problemText(answer.data, answer.status)}`;
    return;
  }
  const id = answer.data.id;
  message.textContent = `Operation ${id} accepted.`;
  const deadline = Date.now() + 120000;
  while (Date.now() < deadline) {
    const status = await api("GET", `/operations/${id}`);
    if (!status.ok) {
      message.textContent = `Operation ${id}: ${problemText(status.data, status.status)}`;
      return;
    }
    const op = status.data;
    const counts = `${op.done ?? 0} of ${op.matched ?? "?"} jobs`;
    message.textContent = `Operation ${id} (${request.action}): ${op.state}, ${counts}.`;
    if (!["pending", "queued", "running"].includes(op.state)) return;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

// ------------------------------------------------------------------ start

async function loadTypes() {
  const answer = await api("GET", "/job-types");
  if (!answer.ok) return;
  for (const name of Object.keys(answer.data).sort()) {
    $("job-types").append(text("option", "", { value: name }));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("search").addEventListener("submit", (event) => search(event, false));
  $("more").addEventListener("click", () => search(null, true));
  $("detail-cancel").addEventListener("click", cancelShown);
  $("detail-like").addEventListener("click", likeShown);
  $("detail-close").addEventListener("click", () => {
    $("detail").hidden = true;
    $("search-id").focus();
  });
  $("bulk").addEventListener("submit", review);
  loadTypes();
  connect();
});
