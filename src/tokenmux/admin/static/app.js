// The console's pages. Each reads the admin API with the session's cookie; every change also
// sends the session's CSRF token. Text from the ledger is set as text, never as HTML.
import {barChart} from "./chart.js";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const CSRF_HEADER = document.querySelector('meta[name="csrf-header"]').content;
const page = document.getElementById("page");

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

async function api(method, path, body) {
  const headers = {"Accept": "application/json"};
  if (method !== "GET") headers[CSRF_HEADER] = CSRF;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {method, headers, credentials: "same-origin",
                                      body: body === undefined ? undefined : JSON.stringify(body)});
  if (response.status === 401) { location.href = "/ui/login"; throw new Error("logged out"); }
  const data = response.status === 204 ? null : await response.json();
  if (!response.ok) throw new Error(data?.error?.message ?? `HTTP ${response.status}`);
  return data;
}

const num = v => (v ?? 0).toLocaleString("en-US");
const usd = v => "$" + Number(v ?? 0).toLocaleString("en-US", {maximumFractionDigits: 6});
const ms = v => v === null || v === undefined ? "–" : `${Number(v).toFixed(0)} ms`;
const pct = v => `${(100 * v).toFixed(1)}%`;
const query = params => new URLSearchParams(Object.entries(params).filter(([, v]) => v)).toString();

function problem(error) { return h("p", {class: "problem", role: "alert"}, error.message); }

function table(columns, rows) {
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map(([title, , cls]) => h("th", {class: cls}, title)))),
    h("tbody", {}, rows.map(row => h("tr", {}, columns.map(([, cell, cls]) => h("td", {class: cls}, cell(row)))))));
}

// Overview

const RANGES = {"24h": [24, "hour"], "7d": [24 * 7, "hour"], "30d": [24 * 30, "day"]};

async function overview() {
  const range = sessionStorage.getItem("range") ?? "24h";
  const [hours, unit] = RANGES[range];
  const from = new Date(Date.now() - hours * 3600e3).toISOString();
  const picker = h("select", {id: "range", onchange: e => { sessionStorage.setItem("range", e.target.value); show(); }},
    Object.keys(RANGES).map(r => h("option", {value: r, selected: r === range}, `last ${r}`)));
  page.replaceChildren(h("h2", {}, "Overview ", picker));
  const [series, models, keys, errors] = await Promise.all([
    api("GET", `/admin/v1/usage/summary?${query({group_by: unit, from})}`),
    api("GET", `/admin/v1/usage/summary?${query({group_by: "model", from})}`),
    api("GET", `/admin/v1/usage/summary?${query({group_by: "key", from})}`),
    api("GET", `/admin/v1/usage/summary?${query({group_by: "error", from, status: "error"})}`),
  ]);
  const t = series.totals;
  const tile = (label, value) => h("div", {class: "tile"}, h("div", {class: "label"}, label), h("div", {class: "value"}, value));
  page.append(h("div", {class: "tiles"},
    tile("Requests", num(t.requests)),
    tile("Tokens", num(t.prompt_tokens + t.completion_tokens)),
    tile("Cost", usd(t.cost_usd)),
    tile("Error rate", t.requests ? pct(t.errors / t.requests) : "–"),
    tile("Latency p50 / p95", `${ms(t.latency_p50_ms)} / ${ms(t.latency_p95_ms)}`),
    tile("TTFT p50 / p95", `${ms(t.ttft_p50_ms)} / ${ms(t.ttft_p95_ms)}`)));
  // Every bucket of the range, the empty ones too, so the time axis is even.
  const byLabel = new Map(series.data.map(g => [g[unit], g]));
  const step = unit === "hour" ? 3600e3 : 86400e3;
  const labels = [];
  for (let at = Math.floor((Date.now() - hours * 3600e3) / step) * step; at <= Date.now(); at += step) {
    const iso = new Date(at).toISOString();
    labels.push(unit === "hour" ? `${iso.slice(0, 10)} ${iso.slice(11, 13)}:00:00` : iso.slice(0, 10));
  }
  const points = field => labels.map(label => ({label, short: unit === "hour" ? label.slice(11, 16) : label.slice(5),
                                                value: byLabel.has(label) ? Number(field(byLabel.get(label)) ?? 0) : 0}));
  page.append(h("div", {class: "charts"},
    barChart("Requests", points(g => g.requests), num),
    barChart("Tokens", points(g => g.prompt_tokens + g.completion_tokens), num),
    barChart("Cost (USD)", points(g => g.cost_usd), usd),
    barChart("Errors", points(g => g.errors), num)));
  const top = (rows, n = 8) => [...rows].sort((a, b) => b.requests - a.requests).slice(0, n);
  page.append(h("div", {class: "tables"},
    h("section", {}, h("h3", {}, "Top models"), table([
      ["Model", g => g.model ?? "–"], ["Requests", g => num(g.requests), "num"],
      ["Cost", g => usd(g.cost_usd), "num"], ["p50", g => ms(g.latency_p50_ms), "num"],
      ["p95", g => ms(g.latency_p95_ms), "num"]], top(models.data))),
    h("section", {}, h("h3", {}, "Top keys"), table([
      ["Key", g => g.key_name ?? g.key ?? "–"], ["Requests", g => num(g.requests), "num"],
      ["Tokens", g => num(g.prompt_tokens + g.completion_tokens), "num"],
      ["Cost", g => usd(g.cost_usd), "num"]], top(keys.data))),
    h("section", {}, h("h3", {}, "Errors by type"), table([
      ["Error", g => g.error ?? "–"], ["Requests", g => num(g.requests), "num"],
      ["Share of all", g => t.requests ? pct(g.requests / t.requests) : "–", "num"]], top(errors.data)))));
}

// Usage explorer

const FILTERS = ["from", "to", "key", "model", "provider", "user", "door", "status", "request_id"];
let usageState = {filters: {}, cursors: [null]};

async function usagePage() {
  const keys = (await api("GET", "/admin/v1/keys?include_revoked=true")).data;
  const f = usageState.filters;
  const input = (name, attrs = {}) => h("label", {}, name, h("input", {name, value: f[name] ?? "", ...attrs}));
  const form = h("form", {class: "filters", id: "usage-filters", onsubmit: e => {
      e.preventDefault();
      usageState = {filters: Object.fromEntries(new FormData(e.target)), cursors: [null]};
      show();
    }},
    input("from", {type: "datetime-local"}), input("to", {type: "datetime-local"}),
    h("label", {}, "key", h("select", {name: "key"}, h("option", {value: ""}, "any"),
      keys.map(k => h("option", {value: k.id, selected: f.key === k.id}, `${k.name} (${k.id})`)))),
    input("model"), input("provider"), input("user"),
    h("label", {}, "door", h("select", {name: "door"}, ["", "chat", "messages", "responses", "embeddings"]
      .map(d => h("option", {value: d, selected: (f.door ?? "") === d}, d || "any")))),
    h("label", {}, "status", h("select", {name: "status"}, ["", "ok", "error", "4xx", "5xx", "429"]
      .map(s => h("option", {value: s, selected: (f.status ?? "") === s}, s || "any")))),
    input("request_id"),
    h("button", {type: "submit", class: "primary"}, "Apply"));
  const params = {...f};
  for (const name of ["from", "to"]) if (params[name]) params[name] = new Date(params[name]).toISOString();
  const cursor = usageState.cursors[usageState.cursors.length - 1];
  const found = await api("GET", `/admin/v1/usage?${query({...params, limit: "50", cursor})}`);
  const csv = h("a", {href: `/admin/v1/usage?${query({...params, format: "csv"})}`, download: "tokenmux-usage.csv", id: "csv"}, "Download CSV");
  const pageNo = usageState.cursors.length;
  page.replaceChildren(h("h2", {}, "Usage"), form,
    table([["Time", r => r.created_at.replace("T", " ").slice(0, 19)], ["Key", r => r.key_name ?? "–"],
           ["Model", r => r.model ?? r.requested_model ?? "–"], ["Provider", r => r.provider ?? "–"],
           ["Door", r => r.door ?? "–"], ["User", r => r.end_user ?? "–"],
           ["Status", r => h("span", {class: r.status >= 400 ? "status-bad" : "status-good"}, r.status)],
           ["In", r => num(r.prompt_tokens), "num"], ["Out", r => num(r.completion_tokens), "num"],
           ["Cost", r => r.cost_usd === null ? "–" : usd(r.cost_usd), "num"],
           ["Latency", r => ms(r.latency_ms), "num"],
           ["Request", r => h("a", {href: `#requests/${encodeURIComponent(r.request_id)}`}, r.request_id)]],
          found.data),
    h("div", {class: "pager"},
      h("button", {type: "button", disabled: pageNo === 1, onclick: () => { usageState.cursors.pop(); show(); }}, "Newer"),
      h("span", {}, `page ${pageNo}`),
      h("button", {type: "button", disabled: !found.has_more, onclick: () => { usageState.cursors.push(found.next_cursor); show(); }}, "Older"),
      csv));
  page.querySelector("table").id = "usage-table";
}

// Keys

const TIERS = ["", "slow", "medium", "fast", "ludicrous"];

function keyFields(k = {}) {
  const tier = (name, value) => h("label", {}, name.replace("_", " "), h("select", {name},
    TIERS.map(t => h("option", {value: t, selected: (value ?? "") === t}, t || "default"))));
  return [
    h("label", {}, "rpm", h("input", {name: "rpm", type: "number", min: 1, value: k.rpm ?? ""})),
    h("label", {}, "tpm", h("input", {name: "tpm", type: "number", min: 1, value: k.tpm ?? ""})),
    tier("tier", k.tier), tier("max_tier", k.max_tier),
    h("label", {}, "budget USD", h("input", {name: "budget_usd", type: "number", min: 0, step: "any", value: k.budget_usd ?? ""})),
    h("label", {}, "period", h("select", {name: "budget_period"}, ["total", "day", "month"]
      .map(p => h("option", {value: p, selected: (k.budget_period ?? "total") === p}, p)))),
    // In UTC, as the list shows it; empty: never. The stored time is kept, to the second,
    // unless the field is changed.
    h("label", {}, "expires (UTC)", h("input", {name: "expires_at", type: "datetime-local",
      value: k.expires_at ? k.expires_at.slice(0, 16) : "", "data-was": k.expires_at ? k.expires_at.slice(0, 16) : ""})),
  ];
}

const when = iso => iso ? iso.slice(0, 19).replace("T", " ") : "–";

function settingsOf(form) {
  const data = Object.fromEntries(new FormData(form));
  const body = {};
  for (const name of ["rpm", "tpm"]) body[name] = data[name] ? Number(data[name]) : null;
  for (const name of ["tier", "max_tier"]) body[name] = data[name] || null;
  body.budget_usd = data.budget_usd || null;
  body.budget_period = body.budget_usd ? data.budget_period : null;
  if (data.expires_at !== form.elements.expires_at.dataset.was) body.expires_at = data.expires_at ? data.expires_at + "Z" : null;
  if (data.name !== undefined) body.name = data.name;
  if (data.is_admin !== undefined) body.is_admin = true;
  return body;
}

async function keysPage(message) {
  const keys = (await api("GET", "/admin/v1/keys")).data;
  const note = h("div", {id: "key-note"}, message ?? "");
  const create = h("form", {class: "inline", id: "create-key", onsubmit: async e => {
      e.preventDefault();
      try {
        const made = await api("POST", "/admin/v1/keys", settingsOf(e.target));
        const secret = h("code", {id: "new-secret"}, made.secret);
        const copy = h("button", {type: "button", id: "copy-secret", onclick: async () => {
          try { await navigator.clipboard.writeText(made.secret); }
          catch { getSelection().selectAllChildren(secret); document.execCommand("copy"); }
          copy.textContent = "Copied";
        }}, "Copy");
        await keysPage(h("div", {class: "secret"},
          h("p", {}, `Key ${made.name} (${made.id}) is made. Its secret is shown only now:`), secret, " ", copy));
      } catch (error) { note.replaceChildren(problem(error)); }
    }},
    h("label", {}, "name", h("input", {name: "name", required: true, maxlength: 200})),
    keyFields(), h("label", {}, "admin", h("input", {name: "is_admin", type: "checkbox"})),
    h("button", {type: "submit", class: "primary"}, "Create key"));
  const editor = h("dialog", {id: "edit-key"});
  const edit = k => {
    editor.replaceChildren(h("form", {class: "inline", onsubmit: async e => {
        e.preventDefault();
        try { await api("PATCH", `/admin/v1/keys/${k.id}`, settingsOf(e.target)); editor.close(); await keysPage(`Saved ${k.name}.`); }
        catch (error) { e.target.append(problem(error)); }
      }},
      h("label", {}, "name", h("input", {name: "name", value: k.name, required: true})), keyFields(k),
      h("button", {type: "submit", class: "primary"}, "Save"),
      h("button", {type: "button", onclick: () => editor.close()}, "Cancel")));
    editor.showModal();
  };
  const revoke = async k => {
    if (!confirm(`Revoke ${k.name} (${k.id})? Requests with it are refused from now on.`)) return;
    await api("DELETE", `/admin/v1/keys/${k.id}`);
    await keysPage(`Revoked ${k.name}.`);
  };
  page.replaceChildren(h("h2", {}, "Keys"), h("h3", {}, "New key"), create, note, h("h3", {}, "Live keys"),
    table([["Name", k => k.name], ["Id", k => k.id], ["Prefix", k => k.prefix + "…"],
           ["Admin", k => k.is_admin ? "yes" : ""], ["rpm", k => k.rpm ?? "–", "num"], ["tpm", k => k.tpm ?? "–", "num"],
           ["Tier", k => (k.tier ?? "medium") + (k.max_tier ? ` (max ${k.max_tier})` : "")],
           ["Budget (spent)", k => k.budget_usd ? `${usd(k.budget_usd)} ${k.budget_period} (${usd(k.spent_usd)})` : "–"],
           ["Created", k => when(k.created_at)],
           ["Expires", k => k.expires_at && new Date(k.expires_at) <= Date.now() ? `${when(k.expires_at)} (expired)` : when(k.expires_at)],
           ["", k => h("span", {}, h("button", {type: "button", "data-edit": k.id, onclick: () => edit(k)}, "Edit"), " ",
                                   h("button", {type: "button", class: "danger", "data-revoke": k.id, onclick: () => revoke(k)}, "Revoke"))]],
          keys), editor);
}

// Channels

let channelTimer = null;

async function channelsPage() {
  const channels = await api("GET", "/admin/v1/channels");
  page.replaceChildren(h("h2", {}, "Channels"), h("p", {}, `As seen by ${channels.instance}; latencies of the last 15 minutes from the ledger. Refreshes every 5 s.`),
    table([["Channel", c => c.channel], ["Models", c => c.models.join(", ")],
           ["Breaker", c => h("span", {class: c.breaker === "closed" ? "status-good" : "status-bad"}, c.breaker)],
           ["Cooldown", c => c.cooldown_left_s ? `${c.cooldown_left_s.toFixed(1)} s` : "–", "num"],
           ["In flight", c => c.in_flight + (c.max_concurrency ? ` / ${c.max_concurrency}` : ""), "num"],
           ["Queued", c => c.queued, "num"],
           ["Requests", c => num(c.recent.requests), "num"], ["Errors", c => num(c.recent.errors), "num"],
           ["p50", c => ms(c.recent.latency_p50_ms), "num"], ["p90", c => ms(c.recent.latency_p90_ms), "num"],
           ["TTFT p50", c => ms(c.recent.ttft_p50_ms), "num"],
           ["Last error", c => c.last_error ? `${c.last_error.code} at ${c.last_error.at.slice(11, 19)}` : "–"]],
          channels.data));
  channelTimer = setTimeout(() => location.hash === "#channels" && show(), 5000);
}

// Request log

async function requestsPage(requestId) {
  const form = h("form", {class: "inline", id: "find-request", onsubmit: e => {
      e.preventDefault();
      location.hash = `#requests/${encodeURIComponent(new FormData(e.target).get("request_id").trim())}`;
    }},
    h("label", {}, "request id", h("input", {name: "request_id", value: requestId ?? "", size: 40, required: true})),
    h("button", {type: "submit", class: "primary"}, "Find"));
  page.replaceChildren(h("h2", {}, "Request log"), form);
  if (!requestId) return;
  const found = (await api("GET", `/admin/v1/usage?${query({request_id: requestId})}`)).data;
  if (!found.length) { page.append(h("p", {id: "no-request"}, `No ledger row for ${requestId}.`)); return; }
  for (const row of found) {
    page.append(h("h3", {}, row.kind ? `${row.kind} call` : "The request"),
      h("dl", {class: "row"}, Object.entries(row).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "–")])));
  }
}

// Navigation

const PAGES = {overview, usage: usagePage, keys: keysPage, channels: channelsPage, requests: requestsPage};

async function show() {
  clearTimeout(channelTimer);
  page.dataset.ready = "";  // set again once the page is drawn: what a test waits on
  const [name, arg] = (location.hash.slice(1) || "overview").split("/");
  for (const link of document.querySelectorAll("header nav a")) link.classList.toggle("here", link.hash === `#${name}`);
  try { await (PAGES[name] ?? overview)(arg && decodeURIComponent(arg)); }
  catch (error) { page.append(problem(error)); }
  page.dataset.ready = name;
}

document.getElementById("logout").addEventListener("click", async () => {
  await api("POST", "/ui/logout");
  location.href = "/ui/login";
});
window.addEventListener("hashchange", show);
show();
