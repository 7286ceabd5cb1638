// The bee status page: polls /api/v1/cluster and redraws its tables. No framework, no
// network access beyond this node.
"use strict";

const EVERY_S = 3;
let previous = null; // the last view and when it arrived, for per-second rates

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " m " + (s % 60) + " s";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " m";
  return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
}

function latency(ms) {
  if (ms === null || ms === undefined) return "–";
  return ms < 1 ? (ms * 1000).toFixed(0) + " µs" : ms.toFixed(ms < 10 ? 1 : 0) + " ms";
}

function rate(x) {
  return x >= 100 ? x.toFixed(0) : x.toFixed(1);
}

function budget(b) {
  if (!b) return "–";
  const pct = b.limit ? Math.min(100, (100 * b.used) / b.limit) : 0;
  return el("span", { title: b.used + " of " + b.limit + " bytes; " + b.rejected + " refused" },
    el("span", { class: "bar" }, el("i", { style: "width:" + pct.toFixed(1) + "%" })),
    bytes(b.used) + (b.rejected ? " (" + b.rejected + " refused)" : ""));
}

function header(view) {
  const h = view.header;
  document.getElementById("from").textContent = "seen from " + view.from;
  const parts = [
    el("span", { id: "count-up" }, h.up + " up"),
    el("span", { id: "count-suspect" }, h.suspect + " suspect"),
    el("span", { id: "count-down" }, h.down + " down"),
    el("span", { id: "config" }, "config v" + h.config_version + " (" + (h.config_hash || "no hash") + "), acked by " + h.config_acked + " of " + view.nodes.length),
    h.draining.length ? el("span", { id: "draining" }, "draining: " + h.draining.join(", ")) : null,
    h.etcd ? el("span", { id: "etcd", class: h.etcd.healthy ? "ok" : "bad", title: h.etcd.url },
      h.etcd.healthy ? "etcd healthy (" + h.etcd.members + " members, " + h.etcd.answered_ms + " ms)" : "etcd unreachable: " + h.etcd.error) : null,
    el("span", {}, "source: " + h.config_source),
    el("span", {}, "gathered in " + view.took_ms + " ms"),
  ];
  document.getElementById("summary").replaceChildren(...parts.filter((p) => p));
  const notice = document.getElementById("notice");
  if (view.not_answered.length) {
    notice.hidden = false;
    notice.textContent = "did not answer within " + view.timeout_ms + " ms: " + view.not_answered.join(", ");
  } else {
    notice.hidden = true;
  }
}

function nodes(view) {
  const rows = view.nodes.map((n) => {
    const s = n.status;
    const b = (name) => s && s.budgets.find((x) => x.name === name);
    return el("tr", { "data-node": n.name, "data-state": n.state, class: n.name === view.from ? "self" : null },
      el("td", {}, n.name),
      el("td", { title: n.error || "" }, el("span", { class: "state " + n.state }, n.state),
        s && s.draining ? " draining" : null, n.state === "up" && !s ? " (no status)" : null),
      el("td", {}, s && s.listening.length ? s.listening.join(", ") : n.address),
      el("td", { class: "num" }, s ? s.incarnation : "–"),
      el("td", {}, s ? s.version : "–"),
      el("td", {}, s ? duration(s.uptime_ms) : "–"),
      el("td", {}, s ? "v" + s.config.version + " " + s.config.hash : "–"),
      el("td", {}, s ? budget(b("inbound")) : "–"),
      el("td", {}, s ? budget(b("outbound")) : "–"),
      el("td", { class: "num" }, s ? s.connections.inbound + " / " + s.connections.outbound : "–"),
      el("td", { class: "num" }, s ? s.services.length : "–"),
      el("td", { class: "num" }, s ? bytes(s.process.rss_bytes) : "–"));
  });
  fill(document.querySelector("#nodes tbody"), rows);
}

function links(view) {
  const all = document.getElementById("all-links").checked;
  const names = view.nodes.map((n) => n.name);
  const callers = view.nodes.filter((n) => n.status && (all || n.name === view.from));
  const head = el("tr", {}, el("th", {}, "from \\ to"), ...names.map((n) => el("th", { "data-to": n }, n)));
  document.querySelector("#links thead").replaceChildren(head);
  const rows = callers.map((c) => {
    const peers = new Map(c.status.peers.map((p) => [p.node, p]));
    const cells = names.map((to) => {
      const p = peers.get(to);
      if (to === c.name) return el("td", { class: "cell none" }, "·");
      if (!p) return el("td", { class: "cell none" }, "no traffic");
      return el("td", {
        class: "cell",
        "data-link": c.name + "->" + to,
        title: p.link + "; calls " + p.calls + ", pushes " + p.pushes + ", errors " + p.errors +
          ", in flight " + p.in_flight + ", bytes out " + p.bytes_out + ", in " + p.bytes_in +
          ", queued " + p.queued_bytes + ", reconnects " + p.reconnects,
      },
      rate(p.rates.calls_per_s) + "/s · p50 " + latency(p.p50_ms) + " · p99 " + latency(p.p99_ms) +
        " · " + bytes(p.bytes_out) + " out",
      p.errors ? el("span", { class: "err" }, " · " + p.errors + " errors") : null,
      p.reconnects ? " · " + p.reconnects + " reconnects" : null,
      p.link !== "connected" ? el("span", { class: "err" }, " · " + p.link) : null);
    });
    return el("tr", { "data-from": c.name }, el("th", {}, c.name), ...cells);
  });
  fill(document.querySelector("#links tbody"), rows);
}

function services(view, dt) {
  const before = new Map();
  if (previous) {
    for (const n of previous.view.nodes) {
      if (!n.status) continue;
      for (const s of n.status.services) before.set(n.name + s.addr, s);
    }
  }
  const rows = [];
  for (const n of view.nodes) {
    if (!n.status) continue;
    for (const s of n.status.services) {
      if (s.runtime === "cluster") continue;
      const s0 = before.get(n.name + s.addr);
      const per_s = s0 !== undefined && dt > 0 ? rate(Math.max(0, s.handled - s0.handled) / dt) : "–";
      // Share of the last poll's time spent in its handler (100 %: always busy).
      const busy = s0 !== undefined && dt > 0
        ? Math.min(100, Math.max(0, s.busy_ms - s0.busy_ms) / (10 * dt)).toFixed(1) + " %" : "–";
      rows.push(el("tr", { "data-node": n.name },
        el("td", {}, n.name), el("td", {}, s.label + " " + s.addr), el("td", {}, s.names.join(", ")),
        el("td", {}, s.kind || "–"), el("td", {}, s.runtime),
        el("td", { class: "num" }, s.queued), el("td", { class: "num" }, s.handled),
        el("td", { class: "num" }, per_s),
        el("td", { class: "num", title: s.busy_ms + " ms in its handler since start" }, busy),
        el("td", {}, duration(s.uptime_ms))));
    }
  }
  fill(document.querySelector("#services tbody"), rows);
}

function shards(view) {
  const rows = [];
  for (const n of view.nodes) {
    if (!n.status) continue;
    for (const sh of n.status.shards) {
      rows.push(el("tr", { "data-node": n.name },
        el("td", {}, n.name), el("td", {}, sh.label + (sh.master ? " (master " + sh.master + ")" : "")),
        el("td", {}, sh.rule === "modulo" ? "uid % " + sh.workers.length + " (uid 0: all)" : sh.rule === "hash" ? "bee's hash" : "–"),
        el("td", {}, sh.workers.map((w) => w.index + ": " + w.handled + " / " + w.queued).join("  ·  "))));
    }
  }
  fill(document.querySelector("#shards tbody"), rows);
}

function timeline(view) {
  const rows = view.timeline.slice(0, 60).map((e) =>
    el("tr", { "data-kind": e.kind },
      el("td", {}, new Date(e.at_ms).toLocaleTimeString()),
      el("td", {}, e.node),
      el("td", { class: "kind-" + e.kind }, e.kind),
      el("td", {}, e.text)));
  fill(document.querySelector("#timeline tbody"), rows);
}

// Actions, when this node's config turns them on.
function admin(view) {
  const me = view.nodes.find((n) => n.name === view.from);
  const s = me && me.status;
  const on = !!(s && s.admin);
  document.getElementById("admin").hidden = !on;
  document.getElementById("secret-row").hidden = !(on && s.admin_needs_secret);
  document.getElementById("mode").textContent = on ? "actions on" : "read-only";
}

async function act(path, body) {
  const out = document.getElementById("admin-result");
  const headers = {};
  const secret = document.getElementById("secret").value;
  if (secret) headers["Authorization"] = "Bearer " + secret;
  out.textContent = "…";
  try {
    const r = await fetch(path, { method: "POST", headers, body });
    const text = await r.text();
    let shown = text;
    try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* not JSON */ }
    out.textContent = "HTTP " + r.status + "\n" + shown;
  } catch (e) {
    out.textContent = "no answer: " + e.message;
  }
}

document.getElementById("drain").addEventListener("click", () => {
  if (confirm("Drain this node? It stops accepting peers, answers what it accepted, and exits.")) {
    act("api/v1/admin/drain", "");
  }
});
document.getElementById("push").addEventListener("click", () => {
  const force = document.getElementById("force").checked;
  act("api/v1/admin/config" + (force ? "?force=true" : ""), document.getElementById("new-config").value);
});

function draw(view) {
  const now = Date.now();
  const dt = previous ? (now - previous.at) / 1000 : 0;
  header(view);
  admin(view);
  nodes(view);
  links(view);
  services(view, dt);
  shards(view);
  timeline(view);
  previous = { view, at: now };
  document.getElementById("updated").textContent = "updated " + new Date(now).toLocaleTimeString();
  document.body.setAttribute("data-updated", String(view.now_ms));
}

async function poll() {
  try {
    const r = await fetch("api/v1/cluster", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    draw(await r.json());
  } catch (e) {
    const notice = document.getElementById("notice");
    notice.hidden = false;
    notice.textContent = "this node did not answer: " + e.message;
  }
  setTimeout(poll, EVERY_S * 1000);
}

document.getElementById("every").textContent = EVERY_S;
const all = document.getElementById("all-links");
all.checked = location.hash.includes("links=all");
all.addEventListener("change", () => {
  location.hash = all.checked ? "links=all" : "";
  if (previous) links(previous.view);
});
poll();
