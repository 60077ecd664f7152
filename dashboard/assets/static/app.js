// gray dashboard: reads the head's HTTP APIs and renders them. Every value
// from the pool is written with textContent, never parsed as HTML.
"use strict";

const REFRESH_MS = 2000;
let timer = null;
let logSocket = null;

// el builds an element: el("td", {class: "x"}, "text", child, ...).
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const k of kids.flat()) {
    if (k === undefined || k === null) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

function fmtBytes(n) {
  if (n === undefined || n === null || isNaN(n)) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0; n = Number(n);
  while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(n < 10 ? 2 : 1)) + " " + u[i];
}
function fmtNum(n) {
  if (n === undefined || n === null) return "–";
  return Number.isInteger(n) ? String(n) : Number(n).toFixed(2).replace(/\.?0+$/, "");
}
function fmtTime(ms) { return ms ? new Date(ms).toLocaleString() : "–"; }
function fmtDuration(start, end) {
  if (!start) return "–";
  let s = Math.max(0, Math.round(((end || Date.now()) - start) / 1000));
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  return (h ? h + "h " : "") + (h || m ? m + "m " : "") + s + "s";
}
function fmtUSD(micro) { return "$" + (Number(micro) / 1e6).toFixed(6).replace(/0{1,4}$/, ""); }
function short(id) { return id ? String(id).slice(0, 12) : "–"; }

const GOOD = new Set(["ALIVE", "RUNNING", "SUCCEEDED", "CREATED", "FINISHED", "done", "DONE", "SENT", "CONFIRMED"]);
const BAD = new Set(["DEAD", "FAILED", "STOPPED", "REMOVED", "INFEASIBLE", "ERROR"]);
function stateCell(s) {
  const cls = GOOD.has(s) ? "ok" : BAD.has(s) ? "bad" : "warn";
  return el("td", { class: "state " + cls }, s || "–");
}
function bar(used, total) {
  const pct = total > 0 ? Math.min(100, Math.max(0, 100 * used / total)) : 0;
  const b = el("span", { class: "bar" }, el("span", {}));
  b.firstChild.style.width = pct.toFixed(0) + "%";
  return b;
}

// api fetches JSON; a refused token shows the sign-in form.
class Unavailable extends Error {}
async function api(path) {
  const r = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (r.status === 401 || r.status === 403) { showLogin(); throw new Error("sign in needed"); }
  if (r.status === 404) throw new Unavailable(path + " is not served by this head");
  if (!r.ok) throw new Error(path + ": HTTP " + r.status + " " + (await r.text()).slice(0, 300));
  return r.json();
}
// stateRows unwraps the State API envelope.
async function stateRows(resource) {
  const body = await api("/api/v0/" + resource + "?limit=10000&detail=True&timeout=10");
  if (!body.result) throw new Error(body.msg || "state API error");
  return body.data.result.result || [];
}

function table(headers, rows, empty) {
  if (!rows.length) return el("p", { class: "muted" }, empty || "Nothing to show.");
  return el("div", { class: "scroll" },
    el("table", {}, el("thead", {}, el("tr", {}, headers.map(h => el("th", {}, h)))),
      el("tbody", {}, rows)));
}
function card(k, v) { return el("div", { class: "card" }, el("div", { class: "v" }, v), el("div", { class: "k" }, k)); }

// ---- views ----

function gpuSummary(n) {
  const labels = n.labels || {};
  const devs = n.gpu_devices || [];
  const out = [];
  if (labels["gray.io/gpu-verified"] === "true") {
    out.push(el("div", {}, "verified " + (labels["gray.io/gpu-model"] || "") +
      (labels["gray.io/gpu-fp32-tflops"] ? " · " + labels["gray.io/gpu-fp32-tflops"] + " TFLOP/s FP32" : "") +
      (labels["gray.io/gpu-bandwidth-gbs"] ? " · " + labels["gray.io/gpu-bandwidth-gbs"] + " GB/s" : "")));
  } else if (devs.length) {
    out.push(el("div", { class: "muted" }, "not verified"));
  }
  for (const d of devs) {
    const util = d.utilization_pct >= 0 ? d.utilization_pct + "% busy" : "utilisation unknown";
    out.push(el("div", { class: d.withdrawn ? "error" : "" },
      "#" + d.index + " " + d.name + " · " + util + " · " + fmtBytes(d.memory_used_bytes) + " / " + fmtBytes(d.memory_bytes) +
      (d.withdrawn ? " · withdrawn: " + (d.reason || "") : "")));
  }
  return out.length ? out : "–";
}

async function viewNodes() {
  const st = await api("/api/gray/status");
  const nodes = st.nodes || [];
  const alive = nodes.filter(n => n.alive);
  const sum = (k, f) => alive.reduce((a, n) => a + ((n[f] || {})[k] || 0), 0);
  const cpuT = sum("CPU", "total"), cpuA = sum("CPU", "available");
  const gpuT = sum("GPU", "total"), gpuA = sum("GPU", "available");
  const rows = nodes.map(n => {
    const t = n.total || {}, a = n.available || {};
    const res = (k, fmt) => t[k] ? [bar(t[k] - (a[k] || 0), t[k]), fmt(t[k] - (a[k] || 0)) + " / " + fmt(t[k])] : "–";
    return el("tr", { "data-node-id": n.node_id },
      el("td", { class: "mono", title: n.node_id }, short(n.node_id), n.head ? " (head)" : ""),
      el("td", {}, n.hostname ? n.hostname + " " : "", el("span", { class: "muted" }, n.address)),
      el("td", {}, n.region || "–"),
      stateCell(n.state),
      el("td", {}, res("CPU", fmtNum)),
      el("td", {}, res("GPU", fmtNum)),
      el("td", {}, res("memory", fmtBytes)),
      el("td", { class: "wrap" }, gpuSummary(n)),
      el("td", {}, n.rtt_ms ? n.rtt_ms.toFixed(1) + " ms" : "–"));
  });
  return [
    el("div", { class: "cards" },
      card("nodes alive", alive.length + " / " + nodes.length),
      card("CPUs in use", fmtNum(cpuT - cpuA) + " / " + fmtNum(cpuT)),
      card("GPUs in use", fmtNum(gpuT - gpuA) + " / " + fmtNum(gpuT)),
      card("objects", (st.objects || 0) + " · " + fmtBytes(st.object_bytes)),
      card("client sessions", (st.sessions || []).length),
      card("workers on head", (st.workers || []).length)),
    el("h2", {}, "Nodes"),
    table(["Node", "Host", "Region", "State", "CPU", "GPU", "Memory", "GPUs", "RTT"], rows, "No nodes."),
  ];
}

async function viewJobs() {
  const jobs = await api("/api/jobs/");
  const rows = jobs.map(j => {
    const id = j.submission_id || j.job_id;
    return el("tr", { "data-job-id": id },
      el("td", { class: "mono" }, el("a", { href: "#/jobs/" + encodeURIComponent(id) }, id)),
      el("td", {}, j.type), stateCell(j.status),
      el("td", { class: "wrap mono" }, j.entrypoint || ""),
      el("td", {}, fmtTime(j.start_time)),
      el("td", {}, fmtDuration(j.start_time, j.end_time)),
      el("td", { class: "wrap" }, j.message || ""));
  });
  return [el("h2", {}, "Jobs"),
    table(["Job", "Type", "Status", "Entrypoint", "Started", "Duration", "Message"], rows,
      "No jobs yet. Submit one with: ray job submit --address http://" + location.host + " -- python script.py")];
}

async function viewJob(id) {
  const j = await api("/api/jobs/" + encodeURIComponent(id));
  const pre = document.getElementById("job-logs") || el("pre", { class: "logs", id: "job-logs" });
  if (!logSocket || logSocket.jobId !== id) openLogs(id, pre);
  return [
    el("p", {}, el("a", { href: "#/jobs" }, "← all jobs")),
    el("h2", {}, "Job ", el("span", { class: "mono" }, id)),
    el("div", { class: "cards" },
      card("status", j.status), card("type", j.type), card("started", fmtTime(j.start_time)),
      card("duration", fmtDuration(j.start_time, j.end_time)),
      card("exit code", j.driver_exit_code ?? "–")),
    el("p", { class: "mono wrap" }, j.entrypoint || ""),
    j.message ? el("p", { class: j.status === "FAILED" ? "error" : "muted" }, j.message) : null,
    el("h2", {}, "Logs"), pre,
  ];
}

// openLogs follows the job's log over the Jobs API's tail WebSocket.
function openLogs(id, pre) {
  closeLogs();
  pre.textContent = "";
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(proto + "//" + location.host + "/api/jobs/" + encodeURIComponent(id) + "/logs/tail");
  ws.jobId = id;
  ws.onmessage = ev => {
    if (typeof ev.data !== "string") return;
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.append(document.createTextNode(ev.data));
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  };
  ws.onclose = ev => { pre.dataset.closed = String(ev.code); };
  logSocket = ws;
}
function closeLogs() { if (logSocket) { logSocket.onclose = null; logSocket.close(); logSocket = null; } }

async function viewActors() {
  const rows = (await stateRows("actors")).map(a => el("tr", { "data-actor-id": a.actor_id },
    el("td", { class: "mono", title: a.actor_id }, short(a.actor_id)),
    el("td", {}, a.class_name || "–"), el("td", {}, a.name || ""), stateCell(a.state),
    el("td", {}, a.ray_namespace || ""),
    el("td", { class: "mono" }, short(a.node_id)), el("td", {}, a.pid || "–"),
    el("td", {}, fmtNum(a.num_restarts ?? 0))));
  return [el("h2", {}, "Actors"), table(["Actor", "Class", "Name", "State", "Namespace", "Node", "PID", "Restarts"], rows, "No actors.")];
}

async function viewTasks() {
  const tasks = await stateRows("tasks");
  const count = {};
  for (const t of tasks) count[t.state] = (count[t.state] || 0) + 1;
  const rows = tasks.slice(-500).reverse().map(t => el("tr", { "data-task-id": t.task_id },
    el("td", { class: "mono", title: t.task_id }, short(t.task_id)),
    el("td", {}, t.name || t.func_or_class_name || "–"), stateCell(t.state), el("td", {}, t.type || ""),
    el("td", { class: "mono" }, short(t.node_id)), el("td", { class: "mono" }, short(t.job_id)),
    el("td", { class: "wrap error" }, t.error_message || "")));
  return [el("div", { class: "cards" }, Object.entries(count).map(([k, v]) => card(k, v))),
    el("h2", {}, "Tasks (newest 500)"),
    table(["Task", "Name", "State", "Type", "Node", "Job", "Error"], rows, "No tasks.")];
}

async function viewPGs() {
  const rows = (await stateRows("placement_groups")).map(p => el("tr", { "data-pg-id": p.placement_group_id },
    el("td", { class: "mono", title: p.placement_group_id }, short(p.placement_group_id)),
    el("td", {}, p.name || ""), stateCell(p.state), el("td", {}, p.strategy || ""),
    el("td", { class: "wrap mono" }, (p.bundles || []).map(b =>
      Object.entries(b.unit_resources || {}).map(([k, v]) => k + ":" + fmtNum(v)).join(" ") +
      (b.node_id ? " @" + short(b.node_id) : "")).join(" | "))));
  return [el("h2", {}, "Placement groups"), table(["Placement group", "Name", "State", "Strategy", "Bundles"], rows, "No placement groups.")];
}

async function viewBilling() {
  const b = await api("/api/gray/billing");
  if (!b.enabled) return [el("h2", {}, "Billing"), el("p", { class: "muted" }, "Billing is not enabled on this head (gray start --ledger).")];
  const bal = Object.entries(b.balances_micro_usd || {}).sort().map(([acct, v]) =>
    el("tr", { "data-account": acct }, el("td", { class: "mono" }, acct), el("td", {}, fmtUSD(v))));
  const pays = (b.payouts || []).map(p => el("tr", {},
    el("td", { class: "mono" }, p.id), el("td", { class: "mono" }, short(p.provider)),
    el("td", { class: "mono" }, p.recipient), el("td", {}, p.asset), el("td", {}, fmtNum(p.amount)), stateCell(p.state)));
  return [el("h2", {}, "Balances"), table(["Account", "Balance"], bal, "No accounts."),
    el("h2", {}, "Payouts"), table(["Payout", "Provider", "Recipient", "Asset", "Amount (base units)", "State"], pays, "No payouts yet.")];
}

// ---- routing ----

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const tab = parts[0] || "nodes";
  if (tab === "jobs" && parts[1]) return { tab, render: () => viewJob(parts[1]) };
  const views = { nodes: viewNodes, jobs: viewJobs, actors: viewActors, tasks: viewTasks,
    "placement-groups": viewPGs, billing: viewBilling };
  return { tab, render: views[tab] || viewNodes };
}

async function refresh() {
  clearTimeout(timer);
  const { tab, render } = route();
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.tab === tab);
  if (!(tab === "jobs" && location.hash.split("/").length > 2)) closeLogs();
  const view = document.getElementById("view");
  try {
    const content = await render();
    view.replaceChildren(...[content].flat().filter(Boolean));
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    if (e.message !== "sign in needed") {
      view.replaceChildren(el("p", { class: e instanceof Unavailable ? "muted" : "error" }, e.message));
    }
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

function showLogin() {
  document.getElementById("login").hidden = false;
  document.getElementById("view").replaceChildren();
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login").addEventListener("submit", async ev => {
    ev.preventDefault();
    const token = document.getElementById("token").value.trim();
    const r = await fetch("/api/authenticate", { method: "POST", credentials: "same-origin",
      headers: { Authorization: "Bearer " + token } });
    if (r.ok) { document.getElementById("login").hidden = true; refresh(); }
    else document.getElementById("login-error").textContent = "The head refused this token (HTTP " + r.status + ").";
  });
  window.addEventListener("hashchange", refresh);
  refresh();
});
