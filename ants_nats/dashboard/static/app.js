// ants-nats dashboard: a snapshot, then live deltas over server-sent events (/api/events).
// Plain JavaScript, no dependencies: the page ships inside the Python package.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const STATUSES = ["pending", "claimed", "waiting_input", "done", "failed", "dead", "cancelled"];
const TERMINAL = ["done", "failed", "dead", "cancelled"];
const TASK_ROWS = 200; // the tasks table shows the most recently changed ones
// A tab keeps only the tasks it shows (the newest, the held, the unroutable); the dashboard's
// server keeps them all, counts them and answers searches (/api/tasks), however large the board.
const TASKS_KEPT = 1000;
const TRAIL_KEEP = 500;

const state = {
  tasks: new Map(), counts: { routes: {}, kinds: {}, unroutable: 0 }, agents: new Map(), ledgers: new Map(), routes: {}, queues: {},
  trail: [], kinds: new Set(), buckets: new Map(), scents: new Map(),
  window: 300, bucket: 5, skew: 0, quarantine: 0.3, changed: new Set(),
};
let view = "swarm";
let taskId = null;
let taskDetail = null;
let dirty = true;
const agentsShown = new Set(); // agents already on the page: only newcomers get the appear animation

// ------------------------------------------------------------------ helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("data-")) el.setAttribute(k, String(v));
    else if (k === "text") el.textContent = String(v);
    else el.setAttribute(k, String(v));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const now = () => Date.now() + state.skew;
const statusChip = (status) => h("span", { class: `status s-${status}`, "data-status": status }, status);
const taskLink = (id) => h("a", { href: `#task/${encodeURIComponent(id)}`, "data-task-link": id }, id);

function ago(iso) {
  if (!iso) return "";
  const secs = Math.max(0, (now() - Date.parse(iso)) / 1000);
  if (secs < 60) return `${secs.toFixed(0)}s ago`;
  if (secs < 3600) return `${(secs / 60).toFixed(0)}m ago`;
  return `${(secs / 3600).toFixed(1)}h ago`;
}

function timeOf(iso) {
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function note(task) {
  if (task.error) return task.error;
  if (task.unroutable_reason) return `unroutable: ${task.unroutable_reason}`;
  if (task.status === "done" && task.result_preview !== null) return `result: ${task.result_preview}`;
  if (task.waiting_on.length) return `waiting on ${task.waiting_on.join(", ")}`;
  return "";
}

// ------------------------------------------------------------------ the model

function applySnapshot(snap) {
  state.skew = Date.parse(snap.now) - Date.now();
  state.quarantine = snap.quarantine_below;
  state.tasks = new Map(snap.tasks.map((t) => [t.id, t]));
  state.counts = snap.counts;
  state.agents = new Map(snap.agents.map((a) => [a.id, a]));
  state.ledgers = new Map(snap.ledgers.map((l) => [l.agent, l]));
  state.routes = snap.routes;
  state.queues = snap.queues;
  state.trail = snap.trail.slice(-TRAIL_KEEP);
  state.kinds = new Set(state.trail.map((e) => e.kind));
  state.window = snap.metrics.window;
  state.bucket = snap.metrics.bucket;
  state.buckets = new Map(snap.metrics.buckets.map((b) => [b.t, b]));
  state.scents = new Map(snap.scents.map((sc) => [sc.subject, sc]));
  state.changed.clear();
}

function applyDelta(d) {
  switch (d.type) {
    case "snapshot": applySnapshot(d); break;
    case "task": applyTask(d.task, d.was); break;
    case "card":
      if (d.card) state.agents.set(d.id, d.card); else state.agents.delete(d.id);
      break;
    case "ledger":
      if (d.ledger) state.ledgers.set(d.agent, d.ledger); else state.ledgers.delete(d.agent);
      break;
    case "route": state.routes[d.route] = d.requires; break;
    case "queues": state.queues = d.queues; break;
    case "trail":
      state.trail.push(d.event);
      if (state.trail.length > TRAIL_KEEP) state.trail.splice(0, state.trail.length - TRAIL_KEEP);
      state.kinds.add(d.event.kind);
      if (taskDetail && d.event.ref === taskId && d.event.kind.startsWith("task.")) {
        taskDetail.history.push(d.event);
      }
      break;
    case "metrics": state.buckets.set(d.bucket.t, d.bucket); break;
    case "scent": state.scents.set(d.scent.subject, d.scent); break;
    default: break;
  }
  dirty = true;
}

const openUnroutable = (t) => t.unroutable !== null && !TERMINAL.includes(t.status);
const newestFirst = (a, b) => (a.updated_at < b.updated_at ? 1 : a.updated_at > b.updated_at ? -1 : b.id.localeCompare(a.id));

function count(route, status, by) {
  const statuses = (state.counts.routes[route] ||= {});
  statuses[status] = (statuses[status] || 0) + by;
}

// A task changed: `was` is what it was before (null for a new one), so the counts stay exact.
function applyTask(task, was) {
  if (was) {
    count(was.route, was.status, -1);
    state.counts.unroutable -= was.unroutable ? 1 : 0;
  } else {
    state.counts.kinds[task.kind] = (state.counts.kinds[task.kind] || 0) + 1;
  }
  count(task.route, task.status, 1);
  state.counts.unroutable += openUnroutable(task) ? 1 : 0;
  state.tasks.set(task.id, task);
  state.changed.add(task.id);
  if (task.id === taskId) loadTask(taskId);
  if (state.tasks.size > TASKS_KEPT) forgetOldTasks();
}

function forgetOldTasks() {
  const finished = [...state.tasks.values()].filter((t) => t.status !== "claimed" && !openUnroutable(t));
  finished.sort(newestFirst);
  for (const t of finished.slice(TASKS_KEPT / 2)) state.tasks.delete(t.id);
}

// ------------------------------------------------------------------ the stream

function connect() {
  const conn = document.getElementById("connection");
  const source = new EventSource("/api/events");
  source.onopen = () => { conn.dataset.state = "live"; conn.textContent = "live"; };
  source.onerror = () => {
    // EventSource reconnects by itself; the server then starts over with a snapshot.
    conn.dataset.state = source.readyState === EventSource.CLOSED ? "lost" : "connecting";
    conn.textContent = conn.dataset.state;
    if (source.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
  };
  source.onmessage = (msg) => {
    applyDelta(JSON.parse(msg.data));
    document.body.dataset.lastEvent = msg.lastEventId;
  };
}

// ------------------------------------------------------------------ views

function renderSwarm() {
  const tasks = [...state.tasks.values()];
  const byRoute = state.counts.routes;
  const byStatus = Object.fromEntries(STATUSES.map((st) => [st, 0]));
  for (const statuses of Object.values(byRoute)) {
    for (const [st, n] of Object.entries(statuses)) byStatus[st] = (byStatus[st] || 0) + n;
  }
  const total = Object.values(byStatus).reduce((a, b) => a + b, 0);
  document.getElementById("status-counts").replaceChildren(
    h("div", { class: "count", "data-count": "total" }, h("b", {}, total), h("span", {}, "tasks")),
    ...STATUSES.map((st) =>
      h("div", { class: `count s-${st}`, "data-count": st }, h("b", {}, byStatus[st]), h("span", {}, st))),
  );

  const routes = new Set([...Object.keys(state.routes), ...Object.keys(byRoute)]);
  const rows = [...routes].sort().map((route) => {
    const c = byRoute[route] || {};
    const q = state.queues[route] || { pending: 0, in_flight: 0, express_pending: 0, express_in_flight: 0 };
    return h("tr", { "data-route": route },
      h("td", {}, route),
      h("td", { class: "num" }, c.pending || 0), h("td", { class: "num" }, c.claimed || 0),
      h("td", { class: "num" }, c.done || 0),
      h("td", { class: "num" }, (c.failed || 0) + (c.dead || 0)),
      h("td", { class: "num" }, c.cancelled || 0),
      h("td", { class: "num", "data-queue": "pending" }, q.pending),
      h("td", { class: "num", "data-queue": "in_flight" }, q.in_flight),
      h("td", { class: "num" }, `${q.express_pending} / ${q.express_in_flight}`));
  });
  document.querySelector("#routes-table tbody").replaceChildren(...rows);

  const unroutable = tasks.filter(openUnroutable).sort(newestFirst).slice(0, TASK_ROWS);
  document.getElementById("unroutable-panel").hidden = unroutable.length === 0;
  document.getElementById("unroutable-more").textContent = state.counts.unroutable > unroutable.length
    ? `showing ${unroutable.length} of ${state.counts.unroutable}` : "";
  document.querySelector("#unroutable-table tbody").replaceChildren(...unroutable.map((t) =>
    h("tr", { "data-unroutable": t.id }, h("td", {}, taskLink(t.id)), h("td", {}, t.kind),
      h("td", {}, h("div", { class: "chips" }, t.unroutable.map((c) => h("span", { class: "chip" }, c)))),
      h("td", { "data-unroutable-reason": "" }, t.unroutable_reason || ""))));

  const kinds = document.getElementById("task-kind");
  const listed = new Set([...kinds.options].map((o) => o.value));
  for (const kind of Object.keys(state.counts.kinds).sort()) if (!listed.has(kind)) kinds.append(h("option", { value: kind }, kind));
  const search = taskSearch();
  const searching = search.prefix || search.status || search.kind;
  // Searching: the server's newest matches, and what changed since that also matches.
  const found = new Map(searching && taskQuery.key === JSON.stringify(search) ? taskQuery.tasks.map((t) => [t.id, t]) : []);
  for (const t of tasks) if (!searching || matches(t, search)) if (!found.has(t.id) || found.get(t.id).updated_at <= t.updated_at) found.set(t.id, t);
  const shown = [...found.values()].filter((t) => !searching || matches(t, search)).sort(newestFirst);
  const of = searching ? (taskQuery.key === JSON.stringify(search) ? taskQuery.matched : null) : total;
  document.querySelector("#tasks-table tbody").replaceChildren(...shown.slice(0, TASK_ROWS).map((t) =>
    h("tr", { "data-task": t.id, "data-status": t.status, class: state.changed.has(t.id) ? "flash" : null },
      h("td", {}, taskLink(t.id)), h("td", {}, t.kind), h("td", {}, t.route), h("td", {}, statusChip(t.status)),
      h("td", {}, t.holder || ""), h("td", { class: "num", "data-attempts": "" }, attemptsText(t)),
      h("td", {}, note(t)), h("td", { class: "meta" }, ago(t.updated_at)))));
  const more = document.getElementById("tasks-more");
  more.dataset.matched = of ?? "";
  more.textContent = of === null ? "searching…"
    : of > Math.min(shown.length, TASK_ROWS) ? `showing the ${Math.min(shown.length, TASK_ROWS)} most recently changed of ${of}${searching ? " matching" : ""}`
    : searching ? `${of} matching` : "";
  renderChart();
}

// A finished task shows how many attempts it took; an unfinished one, how many of its budget count.
function attemptsText(t) {
  const finished = ["done", "failed", "dead", "cancelled"].includes(t.status);
  return finished ? String(t.attempts) : `${t.counted_attempts}/${t.max_attempts}`;
}

function renderChart() {
  const svg = document.getElementById("chart");
  const W = 600, H = 200, left = 34, right = 40, top = 10, bottom = 22;
  const end = Math.floor(now() / 1000 / state.bucket) * state.bucket;
  const start = end - state.window;
  const n = Math.round(state.window / state.bucket) + 1;
  const buckets = [];
  for (let i = 0; i < n; i++) buckets.push(state.buckets.get(start + i * state.bucket) || { done: 0, failed: 0, latency_mean: null });
  const maxCount = Math.max(1, ...buckets.map((b) => b.done + b.failed));
  const maxLat = Math.max(0.001, ...buckets.map((b) => b.latency_mean || 0));
  const bw = (W - left - right) / n;
  const y = (v) => H - bottom - (v / maxCount) * (H - top - bottom);
  const yl = (v) => H - bottom - (v / maxLat) * (H - top - bottom);
  const parts = [
    s("line", { class: "axis", x1: left, y1: H - bottom, x2: W - right, y2: H - bottom }),
    s("text", { x: 2, y: top + 8 }, String(maxCount)),
    s("text", { x: 2, y: H - bottom }, "0"),
    s("text", { x: W - right + 4, y: top + 8, fill: "#5b4bdb" }, `${maxLat.toFixed(maxLat < 10 ? 2 : 0)}s`),
    s("text", { x: left, y: H - 6 }, `-${Math.round(state.window / 60)} min`),
    s("text", { x: W - right - 20, y: H - 6 }, "now"),
  ];
  const points = [];
  buckets.forEach((b, i) => {
    const x = left + i * bw;
    if (b.done) parts.push(s("rect", { x, y: y(b.done), width: Math.max(1, bw - 1), height: H - bottom - y(b.done), fill: "#2e9d57" }));
    if (b.failed) parts.push(s("rect", { x, y: y(b.done + b.failed), width: Math.max(1, bw - 1), height: y(b.done) - y(b.done + b.failed), fill: "#d0453b" }));
    if (b.latency_mean !== null && b.latency_mean !== undefined) points.push(`${(x + bw / 2).toFixed(1)},${yl(b.latency_mean).toFixed(1)}`);
  });
  if (points.length) parts.push(s("polyline", { points: points.join(" "), fill: "none", stroke: "#5b4bdb", "stroke-width": 2 }));
  svg.replaceChildren(...parts);
  const total = buckets.reduce((acc, b) => acc + b.done, 0);
  const legend = document.getElementById("chart-legend");
  legend.replaceChildren(
    h("span", { class: "legend-done", "data-finished": total }, `■ ${total} done`), " ",
    h("span", { class: "legend-failed" }, "■ failed"), " ",
    h("span", { class: "legend-latency" }, `— mean latency (per ${state.bucket}s)`));
}

function renderAgents() {
  const held = {};
  for (const t of state.tasks.values()) if (t.status === "claimed" && t.holder) (held[t.holder] ||= []).push(t.id);
  const cards = [...state.agents.values()].sort((a, b) => a.id.localeCompare(b.id));
  for (const id of agentsShown) if (!state.agents.has(id)) agentsShown.delete(id); // left: a return is new
  document.getElementById("no-agents").hidden = cards.length > 0;
  document.getElementById("agent-count").textContent = String(cards.length);
  document.getElementById("agents").replaceChildren(...cards.map((card) => {
    const ledger = state.ledgers.get(card.id);
    const bar = h("div", { class: "bar" }, h("div", {}));
    bar.firstChild.style.width = `${Math.min(100, (100 * card.load) / card.capacity)}%`;
    const caps = ledger ? Object.entries(ledger.capabilities) : [];
    const reputation = caps.length
      ? h("table", { class: "reputation" },
        h("thead", {}, h("tr", {}, h("th", {}, "capability"), h("th", {}, "score"), h("th", { class: "num" }, "done"),
          h("th", { class: "num" }, "failed"), h("th", { class: "num" }, "abandoned"))),
        h("tbody", {}, caps.map(([cap, v]) => {
          const score = h("div", { class: `bar score${v.score < state.quarantine ? " quarantined" : ""}` }, h("div", {}));
          score.firstChild.style.width = `${(100 * v.score).toFixed(0)}%`;
          return h("tr", { "data-capability": cap },
            h("td", {}, cap), h("td", { title: v.score.toFixed(3) }, v.score.toFixed(2), score),
            h("td", { class: "num" }, v.counts.completed || 0), h("td", { class: "num" }, v.counts.failed || 0),
            h("td", { class: "num" }, v.counts.expired || 0));
        })))
      : h("p", { class: "meta" }, "no reputation yet (the ledger service computes it from the trail)");
    const mine = held[card.id] || [];
    const fresh = !agentsShown.has(card.id);
    agentsShown.add(card.id);
    return h("div", { class: fresh ? "agent appear" : "agent", "data-agent": card.id },
      h("h3", {}, card.name), h("div", { class: "id" }, card.id),
      h("div", { class: "chips" }, card.capabilities.length
        ? card.capabilities.map((c) => h("span", { class: "chip", title: Object.keys(c.limits || {}).length ? JSON.stringify(c.limits) : null },
          c.version ? `${c.name} ${c.version}` : c.name))
        : h("span", { class: "meta" }, "no capabilities (serves tasks that require none)")),
      h("div", { class: "meta", "data-load": `${card.load}/${card.capacity}` }, `load ${card.load}/${card.capacity}`), bar,
      h("div", { class: "meta" }, `last heartbeat ${ago(card.heartbeat_at)} · ${card.software}`),
      reputation,
      h("div", { class: "meta", "data-held": mine.length }, "holds: ", mine.length ? mine.map((id, i) => [i ? ", " : "", taskLink(id)]) : "nothing"));
  }));
}

async function loadTask(id) {
  const response = await fetch(`/api/task/${encodeURIComponent(id)}`);
  const body = await response.json();
  if (id !== taskId) return; // the user moved on meanwhile
  taskDetail = response.ok ? body : { error: body.error };
  dirty = true;
}

function graph(task) {
  // Dependencies on the left, the task in the middle, its dependents on the right.
  const deps = task.depends_on, dependents = task.dependents;
  const rows = Math.max(deps.length, dependents.length, 1);
  const W = 600, rowH = 34, H = Math.max(60, rows * rowH + 10), nodeW = 170, nodeH = 24;
  const svg = s("svg", { id: "graph", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "dependencies and dependents" });
  svg.style.height = `${H}px`;
  const col = (i, n) => H / 2 + (i - (n - 1) / 2) * rowH;
  const node = (id, x, yc, main) => {
    const known = state.tasks.get(id);
    const status = known ? known.status : "pending";
    const colors = { pending: "#8a94a3", claimed: "#2f7de1", done: "#2e9d57", failed: "#d0453b", dead: "#8e2a23", cancelled: "#b08a2e", waiting_input: "#9b59b6" };
    const a = s("a", { href: `#task/${encodeURIComponent(id)}`, "data-node": id, "data-status": status },
      s("rect", { x, y: yc - nodeH / 2, width: nodeW, height: nodeH, rx: 4, fill: colors[status] || "#8a94a3", stroke: main ? "#1d232b" : "none", "stroke-width": 2 }),
      s("text", { class: "node-label", x: x + 8, y: yc + 4 }, id.length > 22 ? id.slice(0, 21) + "…" : id));
    return a;
  };
  const mid = (W - nodeW) / 2;
  deps.forEach((d, i) => svg.append(s("path", { class: "edge", d: `M${10 + nodeW},${col(i, deps.length)} C${mid - 30},${col(i, deps.length)} ${mid - 30},${H / 2} ${mid},${H / 2}` })));
  dependents.forEach((d, i) => svg.append(s("path", { class: "edge", d: `M${mid + nodeW},${H / 2} C${mid + nodeW + 30},${H / 2} ${W - nodeW - 40},${col(i, dependents.length)} ${W - nodeW - 10},${col(i, dependents.length)}` })));
  deps.forEach((d, i) => svg.append(node(d, 10, col(i, deps.length), false)));
  dependents.forEach((d, i) => svg.append(node(d, W - nodeW - 10, col(i, dependents.length), false)));
  svg.append(node(task.id, mid, H / 2, true));
  if (!deps.length) svg.append(s("text", { x: 10, y: H / 2 + 4 }, "no dependencies"));
  if (!dependents.length) svg.append(s("text", { x: W - nodeW, y: H / 2 + 4 }, "no dependents"));
  return svg;
}

function renderTask() {
  const root = document.getElementById("task-detail");
  if (!taskDetail) { root.replaceChildren(h("p", { class: "hint" }, `loading ${taskId}…`)); return; }
  if (taskDetail.error) { root.replaceChildren(h("p", { class: "hint", "data-task-error": taskId }, taskDetail.error)); return; }
  const rec = taskDetail.record, task = rec.task;
  const live = state.tasks.get(task.id) || taskDetail.summary;
  const json = (v) => h("pre", {}, JSON.stringify(v, null, 2));
  root.replaceChildren(
    h("div", { class: "panel", "data-task-detail": task.id, "data-status": rec.status },
      h("h2", {}, task.id, statusChip(rec.status)),
      h("dl", { class: "record" },
        h("dt", {}, "kind"), h("dd", {}, task.kind),
        h("dt", {}, "requires"), h("dd", {}, task.requires.length ? task.requires.join(", ") : "nothing"),
        h("dt", {}, "priority"), h("dd", {}, task.priority),
        h("dt", {}, "holder"), h("dd", {}, rec.holder || "—"),
        h("dt", {}, "attempts"), h("dd", {}, `${live.counted_attempts} counted of ${task.max_attempts}`),
        h("dt", {}, "waiting on"), h("dd", {}, rec.waiting_on.length ? rec.waiting_on.join(", ") : "—"),
        taskDetail.waiting ? [h("dt", {}, "waiting for"), h("dd", { "data-waiting": taskDetail.waiting.reason }, taskDetail.waiting.text)] : null,
        h("dt", {}, "updated"), h("dd", {}, `${rec.updated_at} (${ago(rec.updated_at)})`)),
      rec.error ? [h("h3", {}, "error"), h("pre", { "data-error": "" }, rec.error)] : null,
      rec.status === "done" ? [h("h3", {}, "result"), rec.result_ref ? json(rec.result_ref) : h("pre", { "data-result": "" }, JSON.stringify(rec.result, null, 2))] : null,
      h("h3", {}, "payload"), task.payload_ref ? json(task.payload_ref) : json(task.payload)),
    h("div", { class: "panel" }, h("h2", {}, "Dependencies and dependents"), graph({ id: task.id, depends_on: task.depends_on, dependents: rec.dependents })),
    h("div", { class: "panel" }, h("h2", {}, "Attempts"),
      rec.attempts.length
        ? h("table", {}, h("thead", {}, h("tr", {}, ["agent", "token", "started", "ended", "outcome", "error"].map((c) => h("th", {}, c)))),
          h("tbody", {}, rec.attempts.map((a) => h("tr", { "data-attempt": a.token },
            h("td", {}, a.agent), h("td", {}, a.token), h("td", {}, timeOf(a.started_at)), h("td", {}, timeOf(a.ended_at)),
            h("td", {}, a.outcome), h("td", {}, a.error || "")))))
        : h("p", { class: "hint" }, "no attempt has ended yet")),
    h("div", { class: "panel" }, h("h2", {}, "Trail history"),
      h("ol", { class: "trail", "data-history": task.id }, taskDetail.history.map(eventRow))));
}

function eventRow(e) {
  const cls = e.kind.startsWith("mark.") ? "k-mark" : `k-${e.kind.split(".").pop()}`;
  const data = e.data === null || e.data === undefined ? "" : ` ${JSON.stringify(e.data)}`;
  return h("li", { "data-seq": e.seq, "data-kind": e.kind, title: JSON.stringify(e) },
    h("span", { class: "seq" }, e.seq ?? "-"), " ", timeOf(e.at), " ",
    h("span", { class: `k ${cls}` }, e.kind), " ",
    e.kind.startsWith("task.") ? taskLink(e.ref) : e.ref,
    e.agent ? ` by ${e.agent}` : "", e.token !== null && e.token !== undefined ? ` token=${e.token}` : "", data);
}

// A task search asks the server, which knows every task; the tab holds only the newest.
let taskQuery = { key: "", tasks: [], matched: 0 };
let taskQueryTimer = null;

function taskSearch() {
  return {
    prefix: document.getElementById("task-prefix").value.trim(),
    status: document.getElementById("task-status").value,
    kind: document.getElementById("task-kind").value,
  };
}

const matches = (t, f) => t.id.startsWith(f.prefix) && (!f.status || t.status === f.status) && (!f.kind || t.kind === f.kind);

function queryTasks() {
  const f = taskSearch();
  const key = JSON.stringify(f);
  if (!f.prefix && !f.status && !f.kind) { taskQuery = { key, tasks: [], matched: 0 }; dirty = true; return; }
  fetch(`/api/tasks?${new URLSearchParams(f)}`).then((r) => r.json()).then((body) => {
    if (JSON.stringify(taskSearch()) !== key) return;
    taskQuery = body.tasks ? { key, tasks: body.tasks, matched: body.matched } : { key, tasks: [], matched: 0 };
    dirty = true;
  }).catch(() => {});
}

// A filter asks the server for the matching events of the whole trail (not only those since the
// page opened); live events that match are shown beside them.
let trailQuery = { key: "", events: [] };
let trailQueryTimer = null;

function trailFilters() {
  return {
    kind: document.getElementById("filter-kind").value,
    task: document.getElementById("filter-task").value.trim(),
    agent: document.getElementById("filter-agent").value.trim(),
  };
}

function queryTrail() {
  const f = trailFilters();
  const key = JSON.stringify(f);
  if (!f.kind && !f.task && !f.agent) { trailQuery = { key, events: [] }; dirty = true; return; }
  fetch(`/api/trail?${new URLSearchParams(f)}`).then((r) => r.json()).then((body) => {
    if (JSON.stringify(trailFilters()) === key && body.events) { trailQuery = { key, events: body.events }; dirty = true; }
  }).catch(() => {});
}

function renderTrail() {
  const select = document.getElementById("filter-kind");
  const current = new Set([...select.options].map((o) => o.value));
  for (const kind of [...state.kinds].sort()) if (!current.has(kind)) select.append(h("option", { value: kind }, kind));
  if (!document.getElementById("filter-pause").checked) {
    const { kind, task, agent } = trailFilters();
    const bySeq = new Map();
    for (const e of [...(trailQuery.key === JSON.stringify({ kind, task, agent }) ? trailQuery.events : []), ...state.trail]) bySeq.set(e.seq, e);
    const shown = [...bySeq.values()].sort((a, b) => (a.seq ?? 0) - (b.seq ?? 0)).filter((e) =>
      (!kind || e.kind === kind) && (!task || e.ref.includes(task)) && (!agent || (e.agent || "").includes(agent) || (e.by || "").includes(agent)));
    document.getElementById("trail-list").replaceChildren(...shown.slice().reverse().map(eventRow));
  }
  const t = now();
  const scents = [...state.scents.values()]
    .map((sc) => ({ ...sc, left: sc.strength * 0.5 ** (Math.max(0, t - Date.parse(sc.at)) / 1000 / sc.half_life) }))
    .sort((a, b) => b.left - a.left).slice(0, 20);
  document.querySelector("#marks-table tbody").replaceChildren(...scents.map((sc) =>
    h("tr", { "data-mark": sc.subject }, h("td", {}, sc.name), h("td", {}, sc.key), h("td", { class: "num" }, sc.left.toFixed(3)),
      h("td", { class: "num" }, sc.deposits), h("td", {}, sc.last_agent || ""))));
}

function render() {
  if (dirty) {
    dirty = false;
    document.getElementById("agent-count").textContent = String(state.agents.size);
    if (view === "swarm") renderSwarm();
    else if (view === "agents") renderAgents();
    else if (view === "trail") renderTrail();
    else if (view === "task") renderTask();
    state.changed.clear();
  }
  requestAnimationFrame(render);
}

function route() {
  const hash = decodeURIComponent(location.hash.slice(1)) || "swarm";
  const [name, ...rest] = hash.split("/");
  view = ["swarm", "agents", "trail", "task"].includes(name) ? name : "swarm";
  const tab = document.getElementById("task-tab");
  if (view === "task") {
    const id = rest.join("/") || taskId;
    if (id && id !== taskId) { taskId = id; taskDetail = null; loadTask(id); }
    tab.hidden = false;
    tab.textContent = `Task ${taskId || ""}`;
    tab.href = `#task/${encodeURIComponent(taskId || "")}`;
  }
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${view}`;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === view);
  dirty = true;
}

document.addEventListener("DOMContentLoaded", () => {
  window.addEventListener("hashchange", route);
  for (const id of ["filter-kind", "filter-task", "filter-agent", "filter-pause"]) {
    document.getElementById(id).addEventListener("input", () => { dirty = true; });
  }
  document.getElementById("task-status").append(...STATUSES.map((st) => h("option", { value: st }, st)));
  for (const id of ["task-prefix", "task-status", "task-kind"]) {
    for (const type of ["input", "change"]) { // a select may tell only of a change
      document.getElementById(id).addEventListener(type, () => {
        dirty = true;
        clearTimeout(taskQueryTimer);
        taskQueryTimer = setTimeout(queryTasks, 200);
      });
    }
  }
  for (const id of ["filter-kind", "filter-task", "filter-agent"]) {
    document.getElementById(id).addEventListener("input", () => {
      clearTimeout(trailQueryTimer);
      trailQueryTimer = setTimeout(queryTrail, 300);
    });
  }
  // Relative times ("3s ago") and the chart's time axis move on even when nothing happens.
  setInterval(() => { dirty = true; }, 1000);
  route();
  connect();
  requestAnimationFrame(render);
});
