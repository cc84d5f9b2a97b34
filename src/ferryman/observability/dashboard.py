"""The dashboard: one self-contained HTML page served at GET / on the admin listener.

Owns the page only: inline CSS and JavaScript, no external assets (it must work offline
and leak nothing). It reads the admin API: a Server-Sent Event stream (/api/events,
read with fetch so that the bearer token travels in a header, never in a URL) for
per-second snapshots, the cluster banner (Redis up or unreachable) and the live tail,
and the POST endpoints for drain / undrain / weight. The token, if any, is typed once
and kept in sessionStorage. Knows nothing of the server side beyond those endpoints' JSON.
"""

from __future__ import annotations

__all__ = ["DASHBOARD_HTML"]

DASHBOARD_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Ferryman</title>
<style>
:root{--bg:#0f1419;--card:#1a2129;--fg:#e6e6e6;--dim:#8a96a3;--up:#2ea043;--down:#da3633;
--drain:#d29922;--backup:#388bfd;--line:#2b3540}
*{box-sizing:border-box}body{margin:0;font:14px/1.4 system-ui,sans-serif;background:var(--bg);
color:var(--fg)}header{display:flex;gap:1em;align-items:center;padding:.6em 1em;
border-bottom:1px solid var(--line)}header h1{font-size:1.1em;margin:0}
#status{color:var(--dim)}#auth{margin-left:auto;display:flex;gap:.4em}
input,button{font:inherit;background:#0b0f13;color:var(--fg);border:1px solid var(--line);
border-radius:4px;padding:.2em .5em}button{cursor:pointer}button:hover{border-color:var(--dim)}
main{padding:1em;display:grid;gap:1em}#cards{display:grid;gap:1em;
grid-template-columns:repeat(auto-fill,minmax(740px,1fr))}
.card{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:.6em .8em;
overflow-x:auto}
.card h2{font-size:1em;margin:.1em 0 .5em}.card h2 small{color:var(--dim);font-weight:normal}
table{width:100%;border-collapse:collapse}th,td{text-align:left;padding:.2em .4em;
border-bottom:1px solid var(--line);white-space:nowrap}th{color:var(--dim);font-weight:normal}
.badge{display:inline-block;min-width:5.5em;text-align:center;border-radius:10px;
padding:0 .5em;font-size:.85em;color:#fff}.s-up{background:var(--up)}.s-down{background:var(--down)}
.s-draining{background:var(--drain)}.s-backup{background:var(--backup)}
td.num{text-align:right;font-variant-numeric:tabular-nums}.w{width:4.5em}
#tail{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:.6em .8em}
#tail tbody{font-family:ui-monospace,monospace;font-size:.85em}.st-5{color:var(--down)}
.st-4{color:var(--drain)}#error{color:var(--down)}
#cluster{padding:.4em 1em;border-bottom:1px solid var(--line);color:var(--dim)}
#cluster.down{background:var(--down);color:#fff;font-weight:bold}
</style></head>
<body>
<header><h1>Ferryman</h1><span id="status">connecting&hellip;</span><span id="error"></span>
<form id="auth"><input id="token" type="password" placeholder="admin token"
autocomplete="off"><button type="submit">Use token</button></form></header>
<div id="cluster" hidden></div>
<main><section id="cards"></section>
<section id="tail"><h2 style="font-size:1em;margin:.1em 0 .5em">Recent requests</h2>
<table><thead><tr><th>time</th><th>client</th><th>method</th><th>target</th><th>status</th>
<th>peer</th><th>ms</th></tr></thead><tbody id="requests"></tbody></table></section></main>
<script>
"use strict";
const TAIL = 50;
const state = {last: null, rates: {}, abort: null};
const $ = (id) => document.getElementById(id);
function token() { return sessionStorage.getItem("ferryman-token") || ""; }
function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  if (token()) h["Authorization"] = "Bearer " + token();
  return h;
}
function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
    '"': "&quot;", "'": "&#39;"})[c]);
}
function rates(snapshot) {
  const now = snapshot.time, out = {};
  for (const up of snapshot.upstreams) for (const p of up.peers) {
    const key = up.name + "/" + p.address, prev = state.last && state.last[key];
    out[key] = prev && now > prev.t ? (p.requests - prev.r) / (now - prev.t) : 0;
  }
  const last = {};
  for (const up of snapshot.upstreams) for (const p of up.peers)
    last[up.name + "/" + p.address] = {t: now, r: p.requests};
  state.last = last;
  return out;
}
function renderCards(snapshot) {
  const r = rates(snapshot);
  const html = snapshot.upstreams.map((up) => {
    const rows = up.peers.map((p) => {
      const key = up.name + "/" + p.address;
      const lat = p.latency_ms === null ? "&ndash;" : p.latency_ms.toFixed(1) + " ms";
      const toggle = p.draining
        ? `<button class="undrain" data-action="undrain">undrain</button>`
        : `<button class="drain" data-action="drain">drain</button>`;
      return `<tr class="peer" data-upstream="${esc(up.name)}" data-peer="${esc(p.address)}"
        data-state="${esc(p.state)}"><td>${esc(p.address)}</td>
        <td><span class="badge s-${esc(p.state)}">${esc(p.state)}</span></td>
        <td class="num">${p.weight}${p.weight !== p.configured_weight ?
          " <small>(" + p.configured_weight + ")</small>" : ""}</td>
        <td class="num active">${p.in_flight}</td><td class="num">${lat}</td>
        <td class="num rate">${r[key].toFixed(1)}</td><td class="num">${p.requests}</td>
        <td class="num">${p.fails}</td>
        <td>${toggle} <input class="w" type="number" min="1" max="1000" value="${p.weight}">
        <button class="setw" data-action="weight">set</button></td></tr>`;
    }).join("");
    return `<div class="card" data-upstream="${esc(up.name)}"><h2>${esc(up.name)}
      <small>${esc(up.balance)}</small></h2><table><thead><tr><th>peer</th><th>health</th>
      <th>weight</th><th>active</th><th>latency</th><th>req/s</th><th>served</th><th>fails</th>
      <th></th></tr></thead><tbody>${rows}</tbody></table></div>`;
  }).join("");
  const cards = $("cards");
  // Keep a weight being typed: only redraw when no input in the cards has the focus.
  if (!cards.contains(document.activeElement)) cards.innerHTML = html;
}
function addRequests(rows) {
  const body = $("requests");
  for (const q of rows) {
    const tr = document.createElement("tr");
    const t = new Date(q.time * 1000).toLocaleTimeString();
    tr.className = "req st-" + String(q.status)[0];
    tr.dataset.peer = q.peer;
    tr.innerHTML = `<td>${esc(t)}</td><td>${esc(q.client)}</td><td>${esc(q.method)}</td>
      <td>${esc(q.target)}</td><td>${q.status}</td><td>${esc(q.peer)}</td>
      <td class="num">${q.duration < 0 ? "&ndash;" : (q.duration * 1000).toFixed(1)}</td>`;
    body.insertBefore(tr, body.firstChild);
  }
  while (body.children.length > TAIL) body.removeChild(body.lastChild);
}
function renderCluster(c) {
  // The cluster's Redis as this instance's workers see it (GET /api/cluster).
  const el = $("cluster");
  el.hidden = !c;
  if (!c) return;
  const fb = Object.entries(c.fallbacks).filter(([, n]) => n > 0)
    .map(([f, n]) => f + " " + n).join(", ");
  el.className = c.up === false ? "down" : "";
  el.textContent = c.up === false
    ? "Redis unreachable: local-only state (" + c.redis + ")" +
      (fb ? "; local decisions: " + fb : "")
    : c.up === null ? "cluster: connecting to Redis " + c.redis
    : "cluster: " + c.instances + " instance" + (c.instances === 1 ? "" : "s") +
      " / Redis up (" + c.redis + ")";
}
function handle(event, data) {
  if (event === "snapshot") { renderCards(data); renderCluster(data.cluster);
    $("status").textContent =
    "live, " + new Date(data.time * 1000).toLocaleTimeString(); }
  else if (event === "requests") addRequests(data);
}
async function stream() {
  // SSE over fetch: EventSource cannot send the Authorization header.
  if (state.abort) state.abort.abort();
  const abort = state.abort = new AbortController();
  try {
    const res = await fetch("/api/events", {headers: authHeaders(), signal: abort.signal});
    if (res.status === 401) { $("status").textContent = "token required"; return; }
    $("error").textContent = "";
    const reader = res.body.getReader(), dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buf += dec.decode(value, {stream: true});
      let at;
      while ((at = buf.indexOf("\\n\\n")) >= 0) {
        const block = buf.slice(0, at); buf = buf.slice(at + 2);
        let event = "message", data = "";
        for (const line of block.split("\\n")) {
          if (line.startsWith("event: ")) event = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (data) handle(event, JSON.parse(data));
      }
    }
  } catch (e) { if (abort.signal.aborted) return; $("error").textContent = String(e); }
  $("status").textContent = "reconnecting\u2026";
  setTimeout(() => { if (state.abort === abort) stream(); }, 1000);
}
async function act(up, peer, action, body) {
  const url = "/api/upstreams/" + encodeURIComponent(up) + "/peers/" +
    encodeURIComponent(peer) + "/" + action;
  const res = await fetch(url, {method: "POST", body: body ? JSON.stringify(body) : "",
    headers: authHeaders({"Content-Type": "application/json"})});
  $("error").textContent = res.ok ? "" : action + ": " + res.status + " " + await res.text();
}
$("cards").addEventListener("click", (e) => {
  const button = e.target.closest("button");
  const row = e.target.closest("tr.peer");
  if (!button || !row) return;
  const action = button.dataset.action;
  const body = action === "weight" ? {weight: Number(row.querySelector("input.w").value)} : null;
  button.blur();
  act(row.dataset.upstream, row.dataset.peer, action, body);
});
$("auth").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("ferryman-token", $("token").value);
  $("token").value = "";
  stream();
});
stream();
</script></body></html>
"""
