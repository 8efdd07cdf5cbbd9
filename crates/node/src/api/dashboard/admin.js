// sorcha-peer dashboard. Plain JavaScript, no dependencies: one EventSource on /admin/stream
// brings `snapshot` messages (status, counters, queue; peers every other one) and `event`
// messages (the event log). Rendering is batched into one animation frame, so a burst of
// events or a table of 1,000 peers costs one redraw. The buttons call the admin API; a node
// that is not on loopback answers 401 and the page asks for the admin token once.
"use strict";
(function () {
  const MAX_EVENTS = 2000;      // kept in memory for filtering
  const SHOWN_EVENTS = 150;     // rows drawn (filters reach the rest)
  const POINTS = 90;            // chart history, one point a snapshot
  const PAGE_ROWS = 100;        // peer rows drawn at once: a 1,000-row table costs the browser
                                // hundreds of ms of layout per update; 100 cost a tenth
  const TOKEN_KEY = "sorcha-admin-token";
  const KINDS = ["peer_connected", "peer_disconnected", "peer_verified", "peer_refused",
    "state_changed", "discovery_round", "banned", "unbanned", "tx_accepted", "tx_queued",
    "tx_flushed", "tx_dead_lettered", "bad_body", "limit_hit", "address_changed", "config_loaded"];
  const COLORS = ["#2f5fd0", "#138a4a", "#c0362c", "#b26b00", "#7a3fc0", "#0e8a8a", "#a0527a", "#555"];

  const $ = (id) => document.getElementById(id);
  const state = {
    status: null, peers: [], events: [], received: 0, drawn: 0, sort: { key: "status", desc: false }, page: 0,
    prev: null, series: { tx: [], latency: [], bw: {} }, dirty: new Set(),
    stats: { lastRenderMs: 0, maxRenderMs: 0, renders: 0 },
  };

  const esc = (v) => String(v ?? "").replace(/[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const pad = (n) => String(n).padStart(2, "0");
  function clock(ms) { const d = new Date(ms); return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`; }
  function duration(s) {
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    return d ? `${d}d ${h}h ${m}m` : h ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
  }
  function bytes(n) {
    const units = ["B", "KB", "MB", "GB"]; let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return `${n.toFixed(n < 10 && i ? 1 : 0)} ${units[i]}`;
  }
  const ago = (ms) => ms == null ? "-" : ms < 1000 ? `${ms} ms ago` : `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s ago`;

  // ---- peers table -------------------------------------------------------------------
  // Columns: [key, label, cell]. `verified` and `score` appear once the node reports them.
  function columns() {
    const first = state.peers[0] || {};
    const cols = [
      ["peer_id", "id", (p) => `<td class="id" title="${esc(p.peer_id)}">${esc(p.peer_id.slice(0, 12))}…</td>`],
      ["address", "address", (p) => `<td>${esc(p.address)}:${esc(p.port)}</td>`],
      ["protocol", "protocol", (p) => `<td>${esc(p.protocol || (p.protocols || [])[0] || "-")}</td>`],
    ];
    if ("verified" in first) cols.push(["verified", "verified", (p) => `<td>${p.verified ? "yes" : "no"}</td>`]);
    cols.push(
      ["status", "status", (p) => `<td class="st-${esc(p.status)}">${esc(p.status)}${p.active ? " ●" : ""}</td>`],
      ["last_seen_ago_ms", "last seen", (p) => `<td>${ago(p.last_seen_ago_ms)}</td>`],
      ["latency_ms", "latency", (p) => `<td>${p.latency_ms == null ? "-" : p.latency_ms + " ms"}</td>`],
      ["failure_count", "failures", (p) => `<td>${esc(p.failure_count)}</td>`]);
    if ("score" in first) cols.push(["score", "score", (p) => `<td>${esc(p.score ?? "-")}</td>`]);
    cols.push(["banned_until", "ban", (p) => `<td>${p.banned_until ? "until " + new Date(p.banned_until).toISOString().slice(0, 16).replace("T", " ") + "Z" : "-"}</td>`],
      ["", "actions", actions]);
    return cols;
  }
  function actions(p) {
    const id = esc(p.peer_id);
    const ban = p.banned_until
      ? `<button data-action="unban" data-id="${id}">unban</button>`
      : `<button data-action="ban" data-id="${id}">ban</button>`;
    return `<td><button data-action="ping" data-id="${id}">ping</button> ${ban} <button data-action="remove" data-id="${id}">remove</button></td>`;
  }
  const STATUS_ORDER = { alive: 0, suspect: 1, candidate: 2, unreachable: 3, banned: 4 };
  function compare(key) {
    return (a, b) => {
      let x = a[key], y = b[key];
      if (key === "status") { x = STATUS_ORDER[x] ?? 9; y = STATUS_ORDER[y] ?? 9; }
      if (x == null && y == null) return 0;
      if (x == null) return 1;
      if (y == null) return -1;
      return typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    };
  }
  function renderPeers() {
    const cols = columns();
    const { key, desc } = state.sort;
    $("peer-head").innerHTML = cols.map(([k, label]) =>
      `<th data-key="${k}" class="${k && k === key ? "sorted" + (desc ? " desc" : "") : ""}">${label}</th>`).join("");
    const needle = $("peer-filter").value.trim().toLowerCase();
    let rows = needle
      ? state.peers.filter((p) => `${p.peer_id} ${p.address}:${p.port} ${p.status}`.toLowerCase().includes(needle))
      : state.peers.slice();
    rows.sort(compare(key));
    if (desc) rows.reverse();
    const pages = Math.max(1, Math.ceil(rows.length / PAGE_ROWS));
    state.page = Math.min(state.page, pages - 1);
    const first = state.page * PAGE_ROWS;
    $("peer-rows").innerHTML = rows.slice(first, first + PAGE_ROWS).map((p) =>
      `<tr data-id="${esc(p.peer_id)}">${cols.map((c) => c[2](p)).join("")}</tr>`).join("");
    $("peer-shown").textContent = needle ? `${rows.length} of ${state.peers.length}` : `${state.peers.length}`;
    $("peer-pages").hidden = pages === 1;
    $("peer-page").textContent = `${first + 1}–${Math.min(first + PAGE_ROWS, rows.length)} of ${rows.length}`;
  }

  // ---- events ------------------------------------------------------------------------
  // The newest SHOWN_EVENTS matching events, newest first. A filter change redraws the table;
  // new events are added on top and the oldest rows dropped, so a busy log costs a few rows
  // per frame, not the whole table.
  function eventFilter() {
    const kind = $("event-kind").value;
    const needle = $("event-filter").value.trim().toLowerCase();
    return (e) => (!kind || e.kind === kind) &&
      (!needle || `${e.peer || ""} ${e.detail}`.toLowerCase().includes(needle));
  }
  const eventRow = (e) =>
    `<tr class="kind-${esc(e.kind)}" data-seq="${e.seq}"><td>${clock(e.time)}</td><td>${esc(e.kind)}</td>` +
    `<td class="id" title="${esc(e.peer)}">${e.peer ? esc(e.peer.slice(0, 12)) + "…" : "-"}</td>` +
    `<td class="detail">${esc(e.detail)}</td></tr>`;
  function renderEvents() {
    const keep = eventFilter();
    const shown = [];
    for (let i = state.events.length - 1; i >= 0 && shown.length < SHOWN_EVENTS; i--) {
      if (keep(state.events[i])) shown.push(state.events[i]);
    }
    $("event-rows").innerHTML = shown.map(eventRow).join("");
    state.drawn = state.received;
    $("event-shown").textContent = `${$("event-rows").rows.length} shown, ${state.received} received`;
  }
  function addEventRows() {
    const fresh = Math.min(state.received - state.drawn, state.events.length);
    const keep = eventFilter();
    const rows = state.events.slice(state.events.length - fresh).filter(keep).reverse();
    const body = $("event-rows");
    if (rows.length) body.insertAdjacentHTML("afterbegin", rows.slice(0, SHOWN_EVENTS).map(eventRow).join(""));
    while (body.rows.length > SHOWN_EVENTS) body.deleteRow(-1);
    state.drawn = state.received;
    $("event-shown").textContent = `${body.rows.length} shown, ${state.received} received`;
  }

  // ---- charts ------------------------------------------------------------------------
  function push(list, v) { list.push(v); if (list.length > POINTS) list.shift(); }
  // Canvas sizes are read once and on resize: reading them each frame would force a layout
  // of the whole page, tables included.
  const sizes = new Map();
  window.addEventListener("resize", () => { sizes.clear(); state.dirty.add("charts"); schedule(); });
  function draw(canvas, lines, format) {
    const ratio = window.devicePixelRatio || 1;
    if (!sizes.has(canvas)) {
      const size = [canvas.clientWidth || canvas.width, canvas.clientHeight || canvas.height];
      sizes.set(canvas, size);
      canvas.width = Math.round(size[0] * ratio); canvas.height = Math.round(size[1] * ratio);
    }
    const [w, h] = sizes.get(canvas);
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    let max = 0;
    for (const l of lines) for (const v of l.values) if (v != null && v > max) max = v;
    max = max > 0 ? max * 1.15 : 1;
    g.strokeStyle = "#e3e6eb"; g.lineWidth = 1;
    for (const f of [0.25, 0.5, 0.75]) { g.beginPath(); g.moveTo(0, h * f); g.lineTo(w, h * f); g.stroke(); }
    const step = w / (POINTS - 1);
    for (const l of lines) {
      g.strokeStyle = l.color; g.lineWidth = 1.5; g.beginPath();
      let pen = false;
      const offset = POINTS - l.values.length;
      l.values.forEach((v, i) => {
        if (v == null) { pen = false; return; }
        const x = (offset + i) * step, y = h - 2 - (v / max) * (h - 14);
        if (pen) g.lineTo(x, y); else g.moveTo(x, y);
        pen = true;
      });
      g.stroke();
    }
    g.fillStyle = "#667085"; g.font = "10px system-ui, sans-serif";
    g.fillText(format(max / 1.15), 4, 11);
  }
  function renderCharts() {
    const s = state.series;
    draw($("chart-tx"), [{ values: s.tx, color: COLORS[0] }], (v) => `${v.toFixed(1)}/s`);
    draw($("chart-latency"), [{ values: s.latency, color: COLORS[1] }], (v) => `${v.toFixed(0)} ms`);
    const kinds = Object.keys(s.bw).sort((a, b) => sum(s.bw[b]) - sum(s.bw[a])).slice(0, COLORS.length);
    draw($("chart-bw"), kinds.map((k, i) => ({ values: s.bw[k], color: COLORS[i] })), (v) => `${bytes(v)}/s`);
    $("bw-legend").innerHTML = kinds.map((k, i) => `<span><i style="background:${COLORS[i]}"></i>${esc(k)}</span>`).join("");
  }
  const sum = (list) => list.reduce((a, v) => a + (v || 0), 0);

  // ---- status ------------------------------------------------------------------------
  function renderStatus(snap) {
    const st = snap.status || {};
    $("node-id").textContent = st.peer_id || "-";
    const badge = $("state");
    badge.textContent = st.state || "unknown";
    badge.className = `badge ${st.state || ""}`;
    $("address").textContent = st.external_address ? `${st.external_address} (${st.address_source || "?"})` : "-";
    $("nat").textContent = st.nat || "-";
    $("uptime").textContent = duration(snap.uptime_s || 0);
    $("version").textContent = st.version || "-";
    $("security").textContent = st.security_mode || "plaintext";
    $("peer-counts").textContent = `${st.peers_active ?? "-"} active / ${st.peers_known ?? "-"} known`;
    $("queue-size").textContent = snap.queue.size;
    $("dead-letters").textContent = snap.queue.dead_letters >= 1000 ? "1000+" : snap.queue.dead_letters;
    $("tx-total").textContent = `${snap.counters.tx_accepted} accepted`;
  }

  // ---- state changes -----------------------------------------------------------------
  function applySnapshot(snap) {
    const c = snap.counters, prev = state.prev;
    if (prev) {
      const dt = Math.max((snap.time - prev.time) / 1000, 0.001);
      const rate = (c.tx_accepted - prev.counters.tx_accepted) / dt;
      push(state.series.tx, rate);
      $("tx-rate").textContent = `${rate.toFixed(1)}`;
      const n = c.latency_count - prev.counters.latency_count;
      const lat = n > 0 ? (c.latency_sum - prev.counters.latency_sum) / n * 1000 : null;
      push(state.series.latency, lat);
      if (lat != null) $("latency").textContent = `${lat.toFixed(1)} ms`;
      let total = 0;
      const kinds = new Set([...Object.keys(c.sent), ...Object.keys(c.received), ...Object.keys(state.series.bw)]);
      for (const k of kinds) {
        const now = (c.sent[k] || 0) + (c.received[k] || 0);
        const before = (prev.counters.sent[k] || 0) + (prev.counters.received[k] || 0);
        const r = Math.max(now - before, 0) / dt;
        total += r;
        push(state.series.bw[k] || (state.series.bw[k] = []), r);
      }
      $("bandwidth").textContent = `${bytes(total)}/s`;
    }
    state.prev = snap;
    if (snap.peers) { state.peers = snap.peers; state.dirty.add("peers"); }
    renderStatus(snap);
    state.dirty.add("charts");
    schedule();
  }
  function addEvent(e) {
    state.events.push(e);
    state.received++;
    if (state.events.length > MAX_EVENTS) state.events.splice(0, state.events.length - MAX_EVENTS);
    state.dirty.add("events");
    schedule();
  }
  let frame = 0;
  function schedule() { if (!frame) frame = requestAnimationFrame(renderNow); }
  function renderNow() {
    frame = 0;
    const t0 = performance.now();
    if (state.dirty.has("peers")) renderPeers();
    if (state.dirty.has("events")) addEventRows();
    if (state.dirty.has("charts")) renderCharts();
    state.dirty.clear();
    const ms = performance.now() - t0;
    state.stats.lastRenderMs = ms;
    state.stats.maxRenderMs = Math.max(state.stats.maxRenderMs, ms);
    state.stats.renders++;
  }

  // ---- actions -----------------------------------------------------------------------
  async function call(method, path) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    return fetch(path, { method, headers });
  }
  async function act(action, id) {
    const base = `/api/v1/peers/${encodeURIComponent(id)}`;
    const [method, path] = {
      ping: ["POST", `${base}/ping`], ban: ["POST", `${base}/ban`],
      unban: ["DELETE", `${base}/ban`], remove: ["DELETE", base],
    }[action];
    const out = $("action-result");
    out.textContent = `${action} ${id.slice(0, 12)}…`;
    let res = await call(method, path);
    if (res.status === 401) {
      const token = prompt("Admin token (the node's data_dir/admin.token):");
      if (!token) { out.textContent = `${action}: needs the admin token`; return; }
      sessionStorage.setItem(TOKEN_KEY, token.trim());
      res = await call(method, path);
    }
    const body = await res.json().catch(() => ({}));
    if (!res.ok) { out.textContent = `${action} failed: ${body.error || res.status}`; return; }
    out.textContent = action === "ping"
      ? (body.reachable ? `ping: ${body.rtt_ms.toFixed(1)} ms` : `ping: unreachable (${body.error})`)
      : `${action}: done`;
    const peers = await fetch("/api/v1/peers").then((r) => r.json()).catch(() => null);
    if (peers) { state.peers = peers.peers; state.dirty.add("peers"); schedule(); }
  }

  // ---- wiring ------------------------------------------------------------------------
  function connect() {
    const source = new EventSource("/admin/stream");
    const conn = $("conn");
    source.onopen = () => { conn.textContent = "live"; conn.className = "badge live"; };
    source.onerror = () => { conn.textContent = "reconnecting"; conn.className = "badge off"; };
    source.addEventListener("snapshot", (m) => applySnapshot(JSON.parse(m.data)));
    source.addEventListener("event", (m) => addEvent(JSON.parse(m.data)));
    source.addEventListener("lagged", (m) => addEvent({
      seq: 0, time: Date.now(), kind: "limit_hit", peer: null,
      detail: `dashboard fell behind: ${m.data} events missed`,
    }));
  }
  function init() {
    $("event-kind").innerHTML += KINDS.map((k) => `<option>${k}</option>`).join("");
    $("peer-head").addEventListener("click", (e) => {
      const key = e.target.closest("th")?.dataset.key;
      if (!key) return;
      state.sort = { key, desc: state.sort.key === key ? !state.sort.desc : false };
      renderPeers();
    });
    $("peer-rows").addEventListener("click", (e) => {
      const b = e.target.closest("button[data-action]");
      if (b) act(b.dataset.action, b.dataset.id);
    });
    $("peer-filter").addEventListener("input", () => { state.page = 0; renderPeers(); });
    $("peer-prev").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); renderPeers(); });
    $("peer-next").addEventListener("click", () => { state.page++; renderPeers(); });
    $("event-kind").addEventListener("change", renderEvents);
    $("event-filter").addEventListener("input", renderEvents);
    connect();
  }
  // For tests and the curious: the page's state and its render entry points.
  window.sorchaDashboard = { state, applySnapshot, addEvent, renderNow };
  init();
})();
