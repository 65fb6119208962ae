// reelflow dashboard: a single-page app over the /v1 API. Plain JavaScript, no build step, no framework.
// Every data call sends the API key the user entered (kept in localStorage) as `Authorization: Bearer`.

const KEY_STORAGE = "reelflow.apiKey";
const EXEC_STATUSES = ["queued", "running", "succeeded", "failed", "canceled"];
const JOB_STATUSES = ["waiting", "queued", "running", "succeeded", "failed", "canceled", "skipped"];
const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
const PAGE_SIZE = 25;
const LIST_REFRESH_MS = 2500;
const DELIVERY_REFRESH_MS = 2500;
const OVERVIEW_REFRESH_MS = 5000;
const BIG_OUTPUT_BYTES = 50 * 1024 * 1024;

// ------------------------------------------------------------------ small helpers

/** An element: h("a", {href, class, onclick, dataset: {...}}, children...). Text is always text, never HTML. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else if (k === "style") el.style.cssText = v; // CSSOM, which the page's CSP allows (style attributes it does not)
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

/** Replace an element's children (arrays flattened, null skipped). */
function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c) el.append(c);
  return el;
}

const DASH = "—";

function isNum(v) {
  return typeof v === "number" && Number.isFinite(v);
}

function fmtInt(v) {
  return isNum(v) ? Math.round(v).toLocaleString("en-US") : DASH;
}

function fmtPct(v) {
  // success rates arrive as a fraction 0..1
  if (!isNum(v)) return DASH;
  const pct = v <= 1 ? v * 100 : v;
  return `${pct >= 99.95 || pct === 0 ? pct.toFixed(0) : pct.toFixed(1)}%`;
}

function fmtUsd(v) {
  if (!isNum(v)) return DASH;
  if (v === 0) return "$0.00";
  if (Math.abs(v) < 0.01) return `$${v.toFixed(4)}`;
  return `$${v.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
}

function fmtSeconds(sec) {
  if (!isNum(sec)) return DASH;
  if (sec < 0) sec = 0;
  if (sec < 1) return `${Math.round(sec * 1000)} ms`;
  if (sec < 10) return `${sec.toFixed(1)} s`;
  if (sec < 60) return `${Math.round(sec)} s`;
  const m = Math.floor(sec / 60);
  if (m < 60) return `${m} min ${Math.round(sec % 60)} s`;
  const hr = Math.floor(m / 60);
  return `${hr} h ${m % 60} min`;
}

function fmtBytes(n) {
  if (!isNum(n)) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  return `${(n / 1024 ** 3).toFixed(2)} GB`;
}

function parseTime(iso) {
  if (!iso) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

function fmtAge(iso) {
  const t = parseTime(iso);
  if (t === null) return DASH;
  const sec = Math.max(0, (Date.now() - t) / 1000);
  if (sec < 5) return "just now";
  if (sec < 60) return `${Math.floor(sec)} s ago`;
  if (sec < 3600) return `${Math.floor(sec / 60)} min ago`;
  if (sec < 86400) return `${Math.floor(sec / 3600)} h ago`;
  return `${Math.floor(sec / 86400)} d ago`;
}

/** THE time format of the page: local time, `YYYY-MM-DD HH:MM:SS` (from an ISO string or epoch ms). */
function fmtDateTime(when) {
  const t = typeof when === "number" ? when : parseTime(when);
  if (t === null || !isNum(t)) return DASH;
  const d = new Date(t);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function plural(n, word) {
  return `${fmtInt(n)} ${word}${n === 1 ? "" : "s"}`;
}

/** An event's time in epoch ms: `created_at` is epoch seconds today, an ISO string once the API sends one. */
function eventMs(ev) {
  if (isNum(ev.created_at)) return ev.created_at * 1000;
  return parseTime(ev.created_at) ?? Date.now();
}

function between(startIso, endIso) {
  const a = parseTime(startIso);
  if (a === null) return null;
  const b = endIso ? parseTime(endIso) : Date.now();
  return b === null ? null : (b - a) / 1000;
}

/** A moment, everywhere the same: `YYYY-MM-DD HH:MM:SS` local, how long ago in the tooltip. */
function timeEl(when) {
  const ms = typeof when === "number" ? when : parseTime(when);
  if (ms === null || !isNum(ms)) return DASH;
  const iso = new Date(ms).toISOString();
  const el = h("time", { datetime: iso, title: fmtAge(iso) }, fmtDateTime(ms));
  el.addEventListener("mouseenter", () => { el.title = fmtAge(iso); });
  return el;
}

function badge(status, large = false) {
  return h("span", { class: large ? "badge large" : "badge", dataset: { status: status || "unknown" } },
    h("span", { class: "dot" }), status || DASH);
}

function progressBar(pct, status) {
  const v = isNum(pct) ? Math.max(0, Math.min(100, pct)) : 0;
  return h("div", { class: "bar", dataset: { status: status || "" }, role: "progressbar",
    "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(Math.round(v)) },
  h("span", { style: `width:${v}%` }));
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

function toast(message, kind = "ok") {
  const box = document.getElementById("toasts");
  const el = h("div", { class: kind === "error" ? "toast error" : "toast" }, message);
  box.append(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 4000);
}

function alertBox(message, kind = "error") {
  const el = h("div", { class: kind === "error" ? "alert" : "alert info", role: "alert" },
    h("div", {}, message),
    h("button", { type: "button", "aria-label": "Dismiss", onclick: () => el.remove() }, "×"));
  return el;
}

// ------------------------------------------------------------------ the API key and calls

function getKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

function setKey(key) {
  localStorage.setItem(KEY_STORAGE, key);
}

function keyLabel(key) {
  const m = /^(rf_[A-Za-z0-9]+)_/.exec(key);
  return m ? `${m[1]}_…` : `${key.slice(0, 6)}…`;
}

class ApiError extends Error {
  constructor(status, detail, problem) {
    super(detail);
    this.status = status;
    this.problem = problem;
  }
}

/** Calls /v1 with the key; answers the JSON body, or throws ApiError with the problem's `detail`. */
async function api(path, { method = "GET", body, signal, key } = {}) {
  const headers = { Authorization: `Bearer ${key ?? getKey()}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers, signal, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "the server cannot be reached; is it running?");
  }
  if (!res.ok) {
    let problem = null;
    try {
      problem = await res.json();
    } catch {
      /* not JSON */
    }
    let detail = problem?.detail || problem?.title || `${res.status} ${res.statusText}`;
    if (Array.isArray(problem?.errors) && problem.errors.length && !problem.detail) {
      detail = problem.errors.map((e) => `${(e.loc || []).join(".")}: ${e.msg}`).join("; ");
    }
    const error = new ApiError(res.status, detail, problem);
    if (res.status === 401 && key === undefined) {
      signOut(`The server refused the saved API key (${detail}). Enter a valid key.`);
    }
    throw error;
  }
  if (res.status === 204) return null;
  return res.json();
}

function isAbort(err) {
  return err?.name === "AbortError";
}

// ------------------------------------------------------------------ views and routing

/** What the current view owns: aborted (fetches, streams, timers, object URLs) when the route changes. */
class ViewContext {
  constructor() {
    this.controller = new AbortController();
    this.timers = [];
    this.cleanups = [];
  }
  get signal() {
    return this.controller.signal;
  }
  get alive() {
    return !this.controller.signal.aborted;
  }
  every(ms, fn) {
    const t = setInterval(() => {
      if (!document.hidden && this.alive) fn();
    }, ms);
    this.timers.push(t);
  }
  onDispose(fn) {
    this.cleanups.push(fn);
  }
  dispose() {
    this.controller.abort();
    for (const t of this.timers) clearInterval(t);
    for (const fn of this.cleanups) {
      try {
        fn();
      } catch {
        /* best effort */
      }
    }
  }
}

let current = null;
let signOutMessage = "";

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/executions";
  const [path, query] = raw.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query || "") };
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function route() {
  current?.dispose();
  current = new ViewContext();
  const view = document.getElementById("view");
  const account = document.getElementById("account");
  const key = getKey();
  document.getElementById("nav").classList.toggle("hidden", !key);
  if (!key) {
    account.classList.add("hidden");
    setNav(null);
    renderSignIn(view);
    return;
  }
  account.classList.remove("hidden");
  document.getElementById("key-id").textContent = keyLabel(key);
  const { parts, params } = parseHash();
  const ctx = current;
  fill(view);
  if (parts[0] === "executions" && parts.length === 2) {
    setNav("executions");
    showExecution(view, ctx, parts[1]);
  } else if (parts[0] === "deliveries" && parts.length === 1) {
    setNav("deliveries");
    showDeliveries(view, ctx, params);
  } else if (parts[0] === "webhooks" && parts.length === 1) {
    setNav("deliveries");
    showDeliveries(view, ctx, params);
  } else if (parts[0] === "overview" && parts.length === 1) {
    setNav("overview");
    showOverview(view, ctx);
  } else if (parts[0] === "workers" && parts.length === 1) {
    setNav("workers");
    showWorkers(view, ctx);
  } else if ((parts[0] === "executions" && parts.length === 1) || !parts.length) {
    setNav("executions");
    showExecutions(view, ctx, params);
  } else {
    setNav(null);
    showNotFound(view);
  }
}

function showNotFound(view) {
  pageTitle("Not found");
  fill(view, h("div", { class: "panel", id: "not-found" }, h("div", { class: "empty" }, h("strong", {}, "Page not found"),
    h("span", {}, "The dashboard has no page ", h("code", {}, location.hash || "#/"), ". Go to ",
      h("a", { href: "#/executions" }, "Executions"), ", ", h("a", { href: "#/deliveries" }, "Webhooks"), ", ",
      h("a", { href: "#/workers" }, "Workers and queue"), " or ", h("a", { href: "#/overview" }, "Overview"), "."))));
}

function setNav(name) {
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.route === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function signOut(message = "") {
  try {
    localStorage.removeItem(KEY_STORAGE);
  } catch {
    /* storage unavailable */
  }
  signOutMessage = message;
  route();
}

function pageTitle(text) {
  document.title = text ? `${text} · reelflow` : "reelflow";
}

// ------------------------------------------------------------------ sign in

function renderSignIn(view) {
  pageTitle("Sign in");
  const input = h("input", { type: "password", id: "api-key", name: "api-key", class: "mono", autocomplete: "off",
    spellcheck: "false", placeholder: "rf_…", required: true, "aria-describedby": "key-help" });
  const error = h("div", { class: "form-error", id: "signin-error", role: "alert" }, signOutMessage);
  signOutMessage = "";
  const button = h("button", { class: "btn primary", type: "submit" }, "Sign in");
  const form = h("form", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      const key = input.value.trim();
      if (!key) {
        error.textContent = "Enter an API key.";
        return;
      }
      button.disabled = true;
      error.textContent = "";
      try {
        await api("/v1/executions?limit=1", { key });
        setKey(key);
        route();
      } catch (err) {
        error.textContent = err.status === 401 ? `This key was refused: ${err.message}` : `Cannot sign in: ${err.message}`;
        button.disabled = false;
        input.select();
      }
    },
  },
  h("label", { for: "api-key" }, "API key"), input, button, error);
  fill(view, h("section", { class: "signin" }, h("div", { class: "panel" }, h("div", { class: "panel-body" },
    h("h1", {}, "Sign in to reelflow"),
    h("p", { id: "key-help" }, "Paste an API key. ", h("code", {}, "reelflow keys create --tenant NAME"),
      " prints one. The key stays in this browser until you sign out."),
    form))));
  input.focus();
}

// ------------------------------------------------------------------ executions list

/** The list's filters, from the hash: status and `from` go to the API; `q`, `meta` and `to` are applied here. */
function listFilters(params) {
  const date = (v) => (/^\d{4}-\d{2}-\d{2}$/.test(v || "") ? v : "");
  const meta = [];
  for (const part of (params.get("meta") || "").split(",")) {
    const eq = part.indexOf("=");
    if (eq > 0) meta.push([part.slice(0, eq).trim(), part.slice(eq + 1).trim()]);
  }
  return {
    status: EXEC_STATUSES.includes(params.get("status")) ? params.get("status") : "",
    q: (params.get("q") || "").trim(), meta, metaText: params.get("meta") || "",
    from: date(params.get("from")), to: date(params.get("to")),
  };
}

function filtersHash(f) {
  const q = new URLSearchParams();
  for (const k of ["status", "q", "from", "to"]) if (f[k]) q.set(k, f[k]);
  if (f.metaText) q.set("meta", f.metaText);
  const s = q.toString();
  return s ? `#/executions?${s}` : "#/executions";
}

/** A local calendar day's bounds in epoch ms. */
function dayStart(day) {
  const [y, m, d] = day.split("-").map(Number);
  return new Date(y, m - 1, d).getTime();
}

function matchesFilters(ex, f) {
  if (f.to && !((parseTime(ex.created_at) ?? 0) < dayStart(f.to) + 86400000)) return false;
  const md = ex.metadata && typeof ex.metadata === "object" ? ex.metadata : {};
  for (const [k, v] of f.meta) {
    if (!(k in md)) return false;
    const have = md[k];
    if (String(typeof have === "object" ? JSON.stringify(have) : have) !== v) return false;
  }
  if (f.q) {
    const needle = f.q.toLowerCase();
    const hay = [ex.id, ex.error || "", ex.retry_of || "", JSON.stringify(md)].join(" ").toLowerCase();
    if (!hay.includes(needle)) return false;
  }
  return true;
}

function showExecutions(view, ctx, params) {
  const f = listFilters(params);
  const status = f.status;
  const pageFiltered = Boolean(f.q || f.meta.length || f.to);
  pageTitle("Executions");
  let rows = [];
  let cursor = null;
  let auto = true;

  const tbody = h("tbody", {});
  const emptyBox = h("div", { class: "empty hidden" });
  const more = h("button", { class: "btn", type: "button", id: "load-more", onclick: () => loadMore() }, "Load more");
  const count = h("span", { id: "exec-count" });
  const foot = h("div", { class: "table-foot" }, count, more);
  const alerts = h("div", {});
  const refreshBtn = h("button", { class: "btn small", type: "button", onclick: () => refresh(true) }, "Refresh");
  const autoBox = h("input", { type: "checkbox", id: "auto-refresh", checked: true,
    onchange: (e) => { auto = e.target.checked; } });

  const chips = h("div", { class: "chips", role: "group", "aria-label": "Filter by status" },
    ["", ...EXEC_STATUSES].map((st) => h("button", {
      class: "chip", type: "button", "aria-pressed": String(st === status), dataset: { filter: st || "all" },
      onclick: () => go(filtersHash({ ...f, status: st })),
    }, st ? h("span", { class: "dot", dataset: { status: st } }) : null, st ? st[0].toUpperCase() + st.slice(1) : "All")));

  const field = (id, label, input) => h("label", { class: "field", for: id }, h("span", {}, label), input);
  const qIn = h("input", { type: "search", id: "f-q", class: "mono", value: f.q, placeholder: "id, error or metadata" });
  const metaIn = h("input", { type: "text", id: "f-meta", class: "mono", value: f.metaText, placeholder: "key=value, key2=value2" });
  const fromIn = h("input", { type: "date", id: "f-from", value: f.from });
  const toIn = h("input", { type: "date", id: "f-to", value: f.to });
  const search = h("form", { class: "filters", id: "exec-filters", role: "search", onsubmit: (e) => {
    e.preventDefault();
    go(filtersHash({ status, q: qIn.value.trim(), metaText: metaIn.value.trim(), from: fromIn.value, to: toIn.value }));
  } },
  field("f-q", "Search", qIn), field("f-meta", "Metadata", metaIn), field("f-from", "Created from", fromIn),
  field("f-to", "to", toIn), h("button", { class: "btn primary", type: "submit", id: "f-apply" }, "Apply"),
  pageFiltered || f.from ? h("button", { class: "btn", type: "button", id: "f-clear",
    onclick: () => go(filtersHash({ status })) }, "Clear") : null);

  view.append(
    h("div", { class: "page-head" }, h("h1", {}, "Executions"),
      h("label", { class: "toggle", for: "auto-refresh" }, autoBox, "Auto-refresh"), refreshBtn),
    alerts, search, chips,
    h("div", { class: "panel" },
      h("div", { class: "table-wrap" }, h("table", { class: "table cards", id: "executions" },
        h("thead", {}, h("tr", {}, h("th", {}, "Status"), h("th", {}, "Execution"), h("th", {}, "Progress"),
          h("th", { class: "num" }, "Cost"), h("th", {}, "Created"), h("th", { class: "num" }, "Duration"))),
        tbody)),
      emptyBox, foot));

  function row(ex) {
    const est = ex.cost?.estimated ?? null;
    const cost = TERMINAL.has(ex.status) ? ex.cost?.actual ?? null : null; // settled when it ends
    const meta = ex.metadata && typeof ex.metadata === "object" ? Object.entries(ex.metadata).slice(0, 3) : [];
    return h("tr", { class: "clickable", dataset: { id: ex.id, status: ex.status },
      onclick: (e) => { if (!e.target.closest("a")) go(`#/executions/${encodeURIComponent(ex.id)}`); } },
    h("td", { "data-label": "Status" }, badge(ex.status)),
    h("td", { class: "id-cell" },
      h("a", { href: `#/executions/${encodeURIComponent(ex.id)}` }, ex.id),
      meta.length || ex.retry_of ? h("div", { class: "sub-line" },
        ex.retry_of ? h("span", { class: "tag" }, "retry") : null,
        meta.map(([k, v]) => h("span", { class: "tag" }, `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`))) : null,
      ex.error ? h("div", { class: "sub-line error", title: ex.error }, ex.error) : null),
    h("td", { "data-label": "Progress" }, h("div", { class: "progress-cell" }, progressBar(ex.progress, ex.status),
      h("span", { class: "pct" }, isNum(ex.progress) ? `${Math.round(ex.progress)}%` : DASH))),
    h("td", { class: "num", "data-label": "Cost", title: `estimated ${fmtUsd(est)}` },
      cost !== null ? fmtUsd(cost) : h("span", { class: "muted" }, isNum(est) ? `~${fmtUsd(est)}` : DASH)),
    h("td", { class: "nowrap", "data-label": "Created" }, timeEl(ex.created_at)),
    h("td", { class: "num", "data-label": "Duration" },
      ex.started_at ? fmtSeconds(between(ex.started_at, ex.finished_at)) : DASH));
  }

  function draw() {
    const shown = pageFiltered ? rows.filter((ex) => matchesFilters(ex, f)) : rows;
    fill(tbody, ...shown.map(row));
    emptyBox.classList.toggle("hidden", shown.length > 0);
    const filtered = status || pageFiltered || f.from;
    fill(emptyBox, h("strong", {}, status ? `No ${status} executions` : filtered ? "No matching executions" : "No executions yet"),
      filtered ? `Choose another filter to see more${cursor ? ", or load more" : ""}.` : "Submit a plan with the API, the SDK or `reelflow run PLAN --server URL`.");
    more.classList.toggle("hidden", !cursor);
    const of = pageFiltered ? ` of ${rows.length} loaded` : "";
    count.textContent = rows.length ? `${shown.length} shown${of}${cursor ? "" : " · end of list"}` : "";
    foot.classList.toggle("hidden", !rows.length);
  }

  function query(limit, after) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (status) q.set("status", status);
    if (f.from) q.set("created_after", new Date(dayStart(f.from)).toISOString());
    if (after) q.set("cursor", after);
    return `/v1/executions?${q}`;
  }

  async function refresh(manual = false) {
    try {
      // the first page again, as long as what is shown (up to 200); older pages stay as they were
      const limit = Math.min(200, Math.max(PAGE_SIZE, rows.length));
      const page = await api(query(limit), { signal: ctx.signal });
      const kept = rows.length > limit ? rows.slice(limit) : [];
      rows = [...page.data, ...kept];
      if (!kept.length) cursor = page.next_cursor;
      fill(alerts);
      draw();
    } catch (err) {
      if (isAbort(err) || !ctx.alive) return;
      if (manual || !alerts.childElementCount) fill(alerts, alertBox(`Cannot load executions: ${err.message}`));
    }
  }

  async function loadMore() {
    if (!cursor) return;
    more.disabled = true;
    try {
      const page = await api(query(PAGE_SIZE, cursor), { signal: ctx.signal });
      const seen = new Set(rows.map((r) => r.id));
      rows = rows.concat(page.data.filter((r) => !seen.has(r.id)));
      cursor = page.next_cursor;
      draw();
    } catch (err) {
      if (!isAbort(err)) fill(alerts, alertBox(`Cannot load more: ${err.message}`));
    } finally {
      more.disabled = false;
    }
  }

  tbody.append(h("tr", {}, h("td", { colspan: "6" }, h("div", { class: "loading" }, h("span", { class: "spinner" }), "Loading…"))));
  refresh();
  ctx.every(LIST_REFRESH_MS, () => { if (auto) refresh(); });
}

// ------------------------------------------------------------------ DAG layout (layered, left to right)

/**
 * Layers by longest path from a root; order in each layer by barycentre sweeps to cut edge crossings. An edge
 * that spans several layers passes through a waypoint in each layer between (ordered with the nodes), so it is
 * drawn in a lane of its own, never under a node it skips.
 */
function layoutDag(jobs) {
  const ids = jobs.map((j) => j.id);
  const known = new Set(ids);
  const deps = new Map(jobs.map((j) => [j.id, (j.depends_on || []).filter((d) => known.has(d) && d !== j.id)]));

  const level = new Map();
  const visiting = new Set();
  const depth = (id) => {
    if (level.has(id)) return level.get(id);
    if (visiting.has(id)) return 0; // a cycle cannot pass validation; stay finite anyway
    visiting.add(id);
    const d = deps.get(id).reduce((m, p) => Math.max(m, depth(p) + 1), 0);
    visiting.delete(id);
    level.set(id, d);
    return d;
  };
  ids.forEach(depth);
  const layers = [];
  for (const id of ids) (layers[level.get(id)] ||= []).push(id);

  // neighbours one layer away, waypoints included; a waypoint is an object, so no job id can collide with one
  const up = new Map(ids.map((id) => [id, []]));
  const down = new Map(ids.map((id) => [id, []]));
  const waypoints = new Map(); // "from\u0000to" -> the waypoints of that edge, first layer first
  for (const [id, ds] of deps) {
    for (const d of ds) {
      let prev = d;
      const via = [];
      for (let li = level.get(d) + 1; li < level.get(id); li++) {
        const w = { edge: [d, id], layer: li };
        up.set(w, [prev]);
        down.set(w, []);
        down.get(prev).push(w);
        layers[li].push(w);
        via.push(w);
        prev = w;
      }
      down.get(prev).push(id);
      up.get(id).push(prev);
      if (via.length) waypoints.set(`${d}\u0000${id}`, via);
    }
  }

  const pos = new Map();
  layers.forEach((layer) => layer.forEach((n, i) => pos.set(n, i)));
  const bary = (n, near) => {
    const ns = near.get(n);
    return ns.length ? ns.reduce((a, m) => a + pos.get(m), 0) / ns.length : pos.get(n);
  };
  for (let sweep = 0; sweep < 4; sweep++) {
    const goingDown = sweep % 2 === 0;
    const order = goingDown ? layers.slice(1) : layers.slice(0, -1).reverse();
    for (const layer of order) {
      const score = new Map(layer.map((n) => [n, bary(n, goingDown ? up : down)]));
      layer.sort((a, b) => score.get(a) - score.get(b) || pos.get(a) - pos.get(b));
      layer.forEach((n, i) => pos.set(n, i));
    }
  }
  return { layers, deps, waypoints };
}

function kindLabel(job) {
  const t = String(job.type || "");
  return t.startsWith("generate-") ? t.slice(9) : t.length > 12 ? `${t.slice(0, 11)}…` : t;
}

function drawGraph(container, jobs, onPick) {
  const { layers, deps, waypoints } = layoutDag(jobs);
  const vertical = container.clientWidth > 0 && container.clientWidth < 560 && layers.length > 1;
  const W = 184;
  const H = 62;
  const GAP_LAYER = vertical ? 46 : 70;
  const GAP_NODE = vertical ? 16 : 18;
  const PAD = 6;
  const LANE = 10; // a waypoint's width across its layer: an edge passing by, not a node
  const sizeOf = (n) => (typeof n === "string" ? (vertical ? W : H) : LANE);
  const crossSpan = (layer) => layer.reduce((a, n) => a + sizeOf(n), 0) + (layer.length - 1) * GAP_NODE;
  const alongSize = vertical ? H : W;
  const crossMax = Math.max(...layers.map(crossSpan));
  const place = new Map(); // a job's box's corner, a waypoint's centre line
  layers.forEach((layer, li) => {
    let cross = PAD + (crossMax - crossSpan(layer)) / 2;
    const along = PAD + li * (alongSize + GAP_LAYER);
    for (const n of layer) {
      const at = typeof n === "string" ? cross : cross + LANE / 2;
      place.set(n, vertical ? { x: at, y: along } : { x: along, y: at });
      cross += sizeOf(n) + GAP_NODE;
    }
  });
  const width = vertical ? crossMax + 2 * PAD : layers.length * (W + GAP_LAYER) - GAP_LAYER + 2 * PAD;
  const height = vertical ? layers.length * (H + GAP_LAYER) - GAP_LAYER + 2 * PAD : crossMax + 2 * PAD;

  const svg = s("svg", { class: "graph", id: "dag", viewBox: `0 0 ${width} ${height}`, width, height,
    role: "img", "aria-label": `Pipeline graph of ${jobs.length} jobs` });
  const marker = (id, cls) => s("marker", { id, viewBox: "0 0 10 10", refX: "9", refY: "5",
    markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" }, s("path", { d: "M0 0 10 5 0 10z", class: cls }));
  svg.append(s("defs", {}, marker("arrow", "arrow"), marker("arrow-done", "arrow done")));
  const edges = s("g", {});
  const nodes = s("g", {});
  svg.append(edges, nodes);
  const edgeEls = [];
  // an edge leaves its job's far side, crosses each skipped layer straight along its own lane, and enters the
  // dependent's near side; between layers it bends with one cubic curve
  const curve = (a, b) => {
    if (vertical) {
      const m = (a.y + b.y) / 2;
      return ` C${a.x} ${m} ${b.x} ${m} ${b.x} ${b.y}`;
    }
    const m = (a.x + b.x) / 2;
    return ` C${m} ${a.y} ${m} ${b.y} ${b.x} ${b.y}`;
  };
  for (const j of jobs) {
    const to = place.get(j.id);
    for (const d of deps.get(j.id)) {
      const from = place.get(d);
      let at = vertical ? { x: from.x + W / 2, y: from.y + H } : { x: from.x + W, y: from.y + H / 2 };
      let path = `M${at.x} ${at.y}`;
      for (const w of waypoints.get(`${d}\u0000${j.id}`) || []) {
        const p = place.get(w);
        const leave = vertical ? { x: p.x, y: p.y + H } : { x: p.x + W, y: p.y };
        path += `${curve(at, p)} L${leave.x} ${leave.y}`;
        at = leave;
      }
      path += curve(at, vertical ? { x: to.x + W / 2, y: to.y - 2 } : { x: to.x - 2, y: to.y + H / 2 });
      const el = s("path", { d: path, class: "edge", "marker-end": "url(#arrow)", "data-from": d, "data-to": j.id });
      edges.append(el);
      edgeEls.push(el);
    }
  }
  const nodeEls = new Map();
  for (const j of jobs) {
    const { x, y } = place.get(j.id);
    const label = j.id.length > 15 ? `${j.id.slice(0, 14)}…` : j.id;
    const state = s("text", { x: x + 28, y: y + 42, class: "state" });
    const fill = s("rect", { x: x + 12, y: y + H - 9, width: 0, height: 3, rx: 1.5, class: "fill" });
    const track = s("rect", { x: x + 12, y: y + H - 9, width: W - 24, height: 3, rx: 1.5, class: "track" });
    const title = s("title", {});
    const g = s("g", { class: "node", tabindex: "0", role: "button", "data-job": j.id,
      onclick: () => onPick(j.id), onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onPick(j.id); } } },
    title,
    s("rect", { x, y, width: W, height: H, rx: 10, class: "box" }),
    s("circle", { cx: x + 18, cy: y + 21, r: 4.5, class: "dot-svg" }),
    s("text", { x: x + 28, y: y + 25, class: "title", text: label }),
    s("text", { x: x + W - 12, y: y + 25, class: "kind", "text-anchor": "end", text: kindLabel(j) }),
    state, track, fill);
    nodes.append(g);
    nodeEls.set(j.id, { g, state, fill, track, title });
  }
  fill(container, svg);
  // fit the width when that keeps the text readable (down to 60%); a bigger graph scrolls instead
  const room = container.clientWidth - 32;
  if (room > 0 && width > room && room / width >= 0.6) {
    svg.setAttribute("width", String(room));
    svg.setAttribute("height", String((height * room) / width));
  }

  return function update(jobsNow) {
    const byId = new Map(jobsNow.map((j) => [j.id, j]));
    for (const [id, el] of nodeEls) {
      const j = byId.get(id);
      if (!j) continue;
      el.g.setAttribute("data-status", j.status);
      const running = j.status === "running";
      const pct = isNum(j.progress) ? Math.max(0, Math.min(100, j.progress)) : 0;
      let text = j.status;
      if (running && pct > 0) text += ` · ${Math.round(pct)}%`;
      else if (j.attempts > 1 && !TERMINAL.has(j.status)) text += ` · try ${j.attempts}`;
      else if (j.cache_hit) text += " · cached";
      el.state.textContent = text;
      el.fill.setAttribute("width", String(running ? ((W - 24) * pct) / 100 : 0));
      el.track.style.display = running ? "" : "none";
      el.fill.style.display = running ? "" : "none";
      el.title.textContent = `${j.id} — ${j.type}${j.model ? ` (${j.model})` : ""} — ${j.status}`;
    }
    for (const e of edgeEls) {
      const done = byId.get(e.getAttribute("data-from"))?.status === "succeeded";
      e.setAttribute("data-status", done ? "succeeded" : "");
      e.setAttribute("marker-end", done ? "url(#arrow-done)" : "url(#arrow)");
    }
  };
}

// ------------------------------------------------------------------ plan, parameters, timeline

const PLAN_OPTIONS = ["on_failure", "cache", "priority", "timeout_s", "webhook_events"];

/** A job's parameters: its own `params` when the state gives them, else the plan's when the state carries it. */
function paramsOf(ex, job) {
  if (job.params && typeof job.params === "object") return job.params;
  const planned = Array.isArray(ex?.plan?.jobs) ? ex.plan.jobs.find((p) => p.id === job.id) : null;
  return planned?.params && typeof planned.params === "object" ? planned.params : null;
}

/** The plan of an execution as JSON to submit again: the state's `plan` when it has one, else rebuilt from it. */
function planOf(ex) {
  if (ex.plan && typeof ex.plan === "object" && Array.isArray(ex.plan.jobs)) return ex.plan;
  const jobs = (ex.jobs || []).map((j) => {
    const job = { id: j.id, type: j.type };
    if (j.model) job.model = j.model;
    job.params = paramsOf(ex, j) || {};
    if (j.depends_on?.length) job.depends_on = j.depends_on;
    if (isNum(j.max_attempts) && j.max_attempts !== 3) job.max_attempts = j.max_attempts;
    return job;
  });
  const plan = { jobs };
  if (ex.metadata && Object.keys(ex.metadata).length) plan.metadata = ex.metadata;
  if (ex.webhook) plan.webhook = ex.webhook;
  const options = {};
  for (const k of PLAN_OPTIONS) if (ex.options && ex.options[k] !== null && ex.options[k] !== undefined) options[k] = ex.options[k];
  if (Object.keys(options).length) plan.options = options;
  return plan;
}

function renderParams(params) {
  const entries = Object.entries(params);
  const prompt = typeof params.prompt === "string" ? params.prompt : null;
  const rest = entries.filter(([k]) => !(k === "prompt" && prompt !== null));
  return [
    prompt !== null ? h("blockquote", { class: "prompt" }, prompt) : null,
    rest.length ? h("dl", { class: "kv param-list" }, rest.map(([k, v]) => [h("dt", { class: "mono" }, k),
      h("dd", { class: "mono", dataset: { param: k } }, typeof v === "string" ? v : JSON.stringify(v))])) : null,
    !entries.length ? h("div", { class: "muted" }, "No parameters.") : null,
  ];
}

async function copyText(text, done) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = h("textarea", { class: "sr-only" });
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  toast(done);
}

/** A Gantt chart of the jobs: time in the queue (queued_at to started_at), then running (to finished_at). */
/** The seconds a job waited in its provider's queue, or null where that says nothing: jobs run in the worker
 * (ffmpeg operations, `local/*`) have no provider queue, and their 0 s would only be noise. */
function providerQueued(j) {
  if (!isNum(j.provider_queued_s)) return null;
  const local = !j.model || String(j.model).startsWith("local/");
  return local && j.provider_queued_s === 0 ? null : j.provider_queued_s;
}

/** The timeline's axis marks, in seconds from the start: round steps (1, 2 or 5 times a power of ten, or whole
 * minutes and hours), at most five of them after 0. */
const TICK_STEPS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900,
  1800, 3600, 7200, 10800, 21600, 43200, 86400];
function axisTicks(spanS) {
  const step = TICK_STEPS.find((s) => spanS / s <= 5) ?? Math.ceil(spanS / 5 / 86400) * 86400;
  const out = [];
  for (let i = 0; i * step <= spanS + 1e-9; i++) out.push(+(i * step).toFixed(3));
  return out;
}

/** An axis mark: "0", "500 ms", "2.5 s", "30 s", "2 min", "1 h 30 min" (no "2.0 s" or "2 min 0 s"). */
function fmtTick(sec) {
  if (sec === 0) return "0";
  if (sec < 1) return `${Math.round(sec * 1000)} ms`;
  if (sec < 60) return `${+sec.toFixed(1)} s`;
  if (sec < 3600) return sec % 60 === 0 ? `${sec / 60} min` : fmtSeconds(sec);
  return sec % 3600 === 0 ? `${sec / 3600} h` : fmtSeconds(sec);
}

function drawTimeline(box, ex) {
  const jobs = ex.jobs || [];
  const origin = parseTime(ex.created_at);
  if (origin === null || !jobs.length) {
    fill(box, h("div", { class: "empty" }, "Nothing to show yet."));
    return;
  }
  const now = Date.now();
  const times = jobs.flatMap((j) => [j.queued_at, j.started_at, j.finished_at].map(parseTime)).filter(isNum);
  const end = parseTime(ex.finished_at) ?? Math.max(now, ...times);
  const span = Math.max(end - origin, 1);
  const pct = (ms) => `${(100 * Math.max(0, Math.min(span, ms - origin))) / span}%`;
  const width = (a, b) => `${Math.max(0.4, (100 * Math.max(0, b - a)) / span)}%`;
  const ticks = axisTicks(span / 1000).map((sec) => h("span", { class: (1000 * sec) / span > 0.9 ? "end" : null,
    style: `left:${(100000 * sec) / span}%` }, fmtTick(sec)));
  const rows = jobs.map((j) => {
    const queued = parseTime(j.queued_at);
    const started = parseTime(j.started_at);
    const finished = parseTime(j.finished_at);
    const bars = [];
    if (queued !== null && (started === null || started >= queued)) {
      const until = started ?? (TERMINAL.has(j.status) || j.status === "skipped" ? finished ?? queued : now);
      bars.push(h("span", { class: "seg wait", style: `left:${pct(queued)};width:${width(queued, until)}`,
        title: `${j.id}: queued ${fmtSeconds((until - queued) / 1000)}` }));
    }
    if (started !== null) {
      const until = finished ?? now;
      bars.push(h("span", { class: "seg run", dataset: { status: j.status }, style: `left:${pct(started)};width:${width(started, until)}`,
        title: `${j.id}: ${j.status}, ${fmtSeconds((until - started) / 1000)}` }));
    }
    const handed = parseTime(j.provider_submitted_at);
    if (handed !== null && isNum(j.provider_queued_s) && j.provider_queued_s > 0) {
      const until = handed + j.provider_queued_s * 1000;
      bars.push(h("span", { class: "seg provider-wait", style: `left:${pct(handed)};width:${width(handed, until)}`,
        title: `${j.id}: queued at the provider ${fmtSeconds(j.provider_queued_s)}` }));
    }
    const pq = providerQueued(j);
    const startS = started !== null ? (started - origin) / 1000 : null;
    const runS = started !== null ? ((finished ?? now) - started) / 1000 : null;
    return h("div", { class: "tl-row", dataset: { job: j.id, status: j.status,
      start: startS === null ? "" : startS.toFixed(3), end: started !== null && finished !== null ? ((finished - origin) / 1000).toFixed(3) : "" } },
    h("a", { class: "tl-label mono", href: `#job-${j.id}`, onclick: (e) => {
      e.preventDefault();
      document.getElementById(`job-${j.id}`)?.scrollIntoView({ behavior: "smooth", block: "center" });
    } }, j.id),
    h("div", { class: "tl-track" }, bars),
    h("span", { class: "tl-figure", title: isNum(pq) ? `of which ${fmtSeconds(pq)} queued at the provider` : null },
      startS === null ? DASH : `+${fmtSeconds(startS)} · ${fmtSeconds(runS)}`,
      isNum(pq) ? h("span", { class: "tl-pq", dataset: { seconds: String(pq) } }, `${fmtSeconds(pq)} queued at provider`) : null));
  });
  fill(box, h("div", { class: "tl-axis" }, h("span", { class: "tl-label" }), h("div", { class: "tl-ticks" }, ticks), h("span", { class: "tl-figure" }, "start · took")), rows);
}

// ------------------------------------------------------------------ outputs (artifacts)

function outputsOf(result) {
  if (!result || typeof result !== "object") return [];
  if (Array.isArray(result.outputs) && result.outputs.length) return result.outputs.filter((o) => o && o.url);
  return result.url ? [result] : [];
}

function mediaKind(out) {
  const type = String(out.content_type || "");
  if (type.startsWith("video/")) return "video";
  if (type.startsWith("audio/")) return "audio";
  if (type.startsWith("image/")) return "image";
  return null;
}

/** An API artifact (needs the key: fetched as a blob) or any other URL (used as it is). */
function artifactPath(url) {
  try {
    const u = new URL(url, location.origin);
    if (u.pathname.startsWith("/v1/artifacts/")) return u.pathname;
  } catch {
    /* not a URL */
  }
  return null;
}

function renderOutput(out, ctx) {
  const kind = mediaKind(out);
  const box = h("div", { class: "output", dataset: { kind: kind || "file" } });
  const apiPath = artifactPath(out.url);
  const metaLine = (href) => h("div", { class: "meta" },
    h("span", {}, out.content_type || "file"),
    out.size ? h("span", {}, fmtBytes(out.size)) : null,
    isNum(out.duration) ? h("span", {}, fmtSeconds(out.duration)) : null,
    out.width && out.height ? h("span", {}, `${out.width}×${out.height}`) : null,
    href ? h("a", { href, download: (out.key || out.url).split("/").pop() || "output" }, "Download") : null,
    !apiPath ? h("a", { href: out.url, target: "_blank", rel: "noopener noreferrer" }, "Open") : null);

  const mount = (src) => {
    let el;
    if (kind === "video") {
      // a frame shows before it plays: the poster the result names, else the frame at 0.1 s (#t= and a seek)
      const poster = typeof out.thumbnail_url === "string" ? out.thumbnail_url : typeof out.poster === "string" ? out.poster : null;
      el = h("video", { controls: true, preload: "metadata", playsinline: true, src: `${src}#t=0.1`,
        poster: poster && !artifactPath(poster) ? poster : null });
      el.addEventListener("loadedmetadata", () => {
        if (el.paused && el.currentTime === 0 && el.duration > 0) el.currentTime = Math.min(0.1, el.duration / 2);
      }, { once: true });
    }
    else if (kind === "audio") el = h("audio", { controls: true, preload: "metadata", src });
    else if (kind === "image") el = h("img", { alt: `output of ${out.key || "job"}`, src, loading: "lazy" });
    if (el) {
      el.addEventListener("error", () => {
        el.replaceWith(h("div", { class: "placeholder" }, "This output cannot be played in this browser."));
      });
    }
    fill(box, el || h("div", { class: "placeholder" }, "No preview for this type"), metaLine(src));
  };

  if (!kind) {
    box.append(h("div", { class: "meta" }, h("span", {}, "Output"),
      h("a", { href: out.url, target: "_blank", rel: "noopener noreferrer", class: "mono" }, out.url)));
    return box;
  }
  if (!apiPath) {
    mount(out.url);
    return box;
  }
  const load = async () => {
    fill(box, h("div", { class: "placeholder" }, h("span", { class: "spinner" }), "Loading output…"));
    try {
      const res = await fetch(apiPath, { headers: { Authorization: `Bearer ${getKey()}` }, signal: ctx.signal });
      if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
      const blob = await res.blob();
      if (!ctx.alive) return;
      const objectUrl = URL.createObjectURL(blob);
      ctx.onDispose(() => URL.revokeObjectURL(objectUrl));
      mount(objectUrl);
    } catch (err) {
      if (isAbort(err) || !ctx.alive) return;
      fill(box, h("div", { class: "placeholder" }, `Cannot load the output: ${err.message}`,
        h("button", { class: "btn small", type: "button", onclick: load }, "Try again")));
    }
  };
  if (isNum(out.size) && out.size > BIG_OUTPUT_BYTES) {
    box.append(h("div", { class: "placeholder" },
      h("button", { class: "btn small", type: "button", onclick: load }, `Load output (${fmtBytes(out.size)})`)));
  } else {
    load();
  }
  return box;
}

// ------------------------------------------------------------------ server-sent events over fetch()

/** Reads the event stream with fetch (EventSource cannot send the key), parses SSE, reconnects with
 *  Last-Event-ID, and stops when the execution has ended or the view goes away. */
function followEvents(executionId, ctx, { onEvent, onState, isFinished }) {
  let lastId = "";
  let retryMs = 2000;
  let running = false;

  async function readOnce() {
    const headers = { Authorization: `Bearer ${getKey()}`, Accept: "text/event-stream" };
    if (lastId) headers["Last-Event-ID"] = lastId;
    const res = await fetch(`/v1/executions/${encodeURIComponent(executionId)}/events`,
      { headers, signal: ctx.signal, cache: "no-store" });
    if (!res.ok) {
      let detail = `${res.status} ${res.statusText}`;
      try {
        detail = (await res.json()).detail || detail;
      } catch {
        /* not JSON */
      }
      throw new ApiError(res.status, detail);
    }
    onState("live");
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let data = [];
    let type = "";
    let id = null;
    const dispatch = () => {
      if (id !== null) lastId = id;
      if (data.length) onEvent({ id: lastId, type: type || "message", data: data.join("\n") });
      data = [];
      type = "";
      id = null;
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        let line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") {
          dispatch();
          continue;
        }
        if (line.startsWith(":")) continue; // a comment (keep-alive)
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "data") data.push(val);
        else if (field === "event") type = val;
        else if (field === "id" && !val.includes("\0")) id = val;
        else if (field === "retry" && /^\d+$/.test(val)) retryMs = Number(val);
      }
    }
  }

  async function loop() {
    running = true;
    let failures = 0;
    try {
      while (ctx.alive) {
        onState(lastId ? "reconnecting" : "connecting");
        try {
          await readOnce();
          failures = 0;
        } catch (err) {
          if (isAbort(err) || !ctx.alive) return;
          if (err.status === 404 || err.status === 401) {
            onState("ended");
            if (err.status === 401) signOut(`The server refused the saved API key (${err.message}).`);
            return;
          }
          failures += 1;
        }
        if (isFinished()) {
          onState("ended");
          return;
        }
        await sleep(Math.min(retryMs * Math.max(1, failures), 15000), ctx.signal);
      }
    } finally {
      running = false;
    }
  }

  return {
    start() {
      if (!running && ctx.alive) loop();
    },
    get lastId() {
      return lastId;
    },
  };
}

// ------------------------------------------------------------------ one execution

const JOB_EVENT_STATUS = {
  "job.running": "running", "job.submitted": "running", "job.queued": "queued", "job.waiting": "waiting",
  "job.retrying": "queued", "job.requeued": "queued", "job.released": "queued", "job.succeeded": "succeeded",
  "job.failed": "failed", "job.canceled": "canceled", "job.skipped": "skipped",
};

function showExecution(view, ctx, executionId) {
  pageTitle(executionId);
  let state = null;
  let seenMs = null; // the newest moment the loaded state shows (ms): events up to it are in the state already
  let updateGraph = null;
  let graphKey = "";
  let refreshTimer = null;
  let lastSeq = 0;
  let received = 0;
  const cards = new Map();
  const attemptLog = new Map(); // job id -> [{attempt, start, end, outcome, error}], built from the events
  const eventItems = [];

  const alerts = h("div", { id: "exec-alerts" });
  const statusSlot = h("span", { id: "exec-status" });
  const live = h("span", { class: "live", id: "live", dataset: { state: "connecting" } }, h("span", { class: "dot" }), h("span", {}, "connecting"));
  const buttons = {
    cancel: h("button", { class: "btn danger", type: "button", id: "btn-cancel", onclick: () => act("cancel") }, "Cancel"),
    resume: h("button", { class: "btn", type: "button", id: "btn-resume", onclick: () => act("resume") }, "Resume"),
    retry: h("button", { class: "btn", type: "button", id: "btn-retry", onclick: () => act("retry") }, "Retry"),
  };
  const summary = h("div", { class: "summary", id: "exec-summary" });
  const callout = h("div", { class: "callout hidden", id: "exec-error", role: "note" });
  const details = h("dl", { class: "kv" });
  const graphBox = h("div", { class: "graph-wrap", id: "graph" });
  const jobsBox = h("div", { class: "jobs", id: "jobs" });
  const timelineBox = h("div", { class: "timeline", id: "timeline" });
  const outputsBody = h("tbody", {});
  const outputsPanel = h("section", { class: "panel hidden", id: "exec-outputs" }, h("header", {}, h("h2", {}, "Outputs"),
    h("span", { class: "muted" }, "every leaf job's output")),
  h("div", { class: "table-wrap" }, h("table", { class: "table cards" }, h("thead", {}, h("tr", {}, h("th", {}, "Job"),
    h("th", {}, "Type"), h("th", { class: "num" }, "Duration"), h("th", {}, "Link"))), outputsBody)));
  const jobEvents = new Map(); // job id -> its events, oldest first (the provider's log of that job)
  const planPre = h("pre", { class: "json", id: "plan-json" });
  const planNote = h("span", { class: "muted", id: "plan-note" });
  const planAlerts = h("div", {});
  const planBody = h("div", { class: "panel-body" }, planAlerts, planPre);
  let editing = false;
  const copyBtn = h("button", { class: "btn small", type: "button", id: "plan-copy", onclick: () => copyText(planPre.textContent, "Plan copied") }, "Copy");
  const editBtn = h("button", { class: "btn small", type: "button", id: "plan-edit-open", onclick: () => openEditor() }, "Edit and run again");
  const eventsList = h("ol", { class: "events", id: "events" });
  const eventCount = h("span", { class: "muted" });

  view.append(
    h("div", { class: "crumbs" }, h("a", { href: "#/executions" }, "Executions"), " / ", executionId),
    h("div", { class: "page-head" },
      h("div", { class: "exec-title" }, h("h1", {}, executionId), statusSlot, live),
      h("div", { class: "actions" }, buttons.cancel, buttons.resume, buttons.retry)),
    alerts,
    h("div", { class: "panel" }, summary, callout),
    h("section", { class: "panel" }, h("header", {}, h("h2", {}, "Pipeline"),
      h("span", { class: "muted", id: "job-tally" })), graphBox,
    h("div", { class: "legend graph-legend" }, JOB_STATUSES.map((st) => h("span", { dataset: { status: st } }, h("span", { class: "dot" }), st)))),
    outputsPanel,
    h("section", { class: "panel" }, h("header", {}, h("h2", {}, "Timeline"), h("span", { class: "muted" }, "grey stripes: waiting in the queue · bar: running, dark stripes on it: waiting in the provider's queue")), timelineBox),
    h("section", { class: "panel" }, h("header", {}, h("h2", {}, "Jobs")), jobsBox),
    h("section", { class: "panel", id: "plan" }, h("header", {}, h("h2", {}, "Plan"), planNote,
      h("div", { class: "actions" }, copyBtn, editBtn)), planBody),
    h("div", { class: "grid-2 events-row" },
      h("section", { class: "panel" }, h("header", {}, h("h2", {}, "Events"), eventCount), eventsList),
      h("section", { class: "panel" }, h("header", {}, h("h2", {}, "Details")), h("div", { class: "panel-body" }, details))));
  graphBox.append(h("div", { class: "loading" }, h("span", { class: "spinner" }), "Loading…"));

  function figure(label, value, extra) {
    return h("div", {}, h("div", { class: "label" }, label), h("div", { class: "value" }, value), extra || null);
  }

  function render() {
    const ex = state;
    pageTitle(`${ex.status} · ${ex.id}`);
    fill(statusSlot, badge(ex.status, true));
    statusSlot.dataset.status = ex.status;
    const jobs = ex.jobs || [];
    const done = jobs.filter((j) => j.status === "succeeded").length;
    fill(summary,
      figure("Progress", `${isNum(ex.progress) ? Math.round(ex.progress) : 0}%`, progressBar(ex.progress, ex.status)),
      figure("Jobs", `${done} of ${jobs.length} done`),
      figure("Cost", ex.cost?.actual !== null && ex.cost?.actual !== undefined ? fmtUsd(ex.cost.actual) : DASH,
        [h("div", { class: "label" }, `estimated ${fmtUsd(ex.cost?.estimated)}`),
          ex.possible_duplicates ? h("div", { class: "label warn", title: "retries that went ahead where the provider could not be asked whether it took the earlier attempt" },
            `possible duplicate charge ${fmtUsd(ex.possible_duplicate_charge)} (${ex.possible_duplicates})`) : null]),
      figure("Created", timeEl(ex.created_at)),
      figure("Duration", ex.started_at ? fmtSeconds(between(ex.started_at, ex.finished_at)) : DASH),
      figure("Finished", ex.finished_at ? timeEl(ex.finished_at) : DASH));
    callout.textContent = ex.error || "";
    callout.classList.toggle("hidden", !ex.error);
    const meta = ex.metadata && Object.keys(ex.metadata).length ? JSON.stringify(ex.metadata) : DASH;
    fill(details,
      h("dt", {}, "Created"), h("dd", {}, timeEl(ex.created_at)),
      h("dt", {}, "Started"), h("dd", {}, timeEl(ex.started_at)),
      h("dt", {}, "Finished"), h("dd", {}, timeEl(ex.finished_at)),
      h("dt", {}, "Metadata"), h("dd", { class: "mono" }, meta),
      h("dt", {}, "Webhook"), h("dd", {}, ex.webhook
        ? h("a", { href: `#/deliveries?execution_id=${encodeURIComponent(ex.id)}` }, ex.webhook) : DASH),
      h("dt", {}, "Options"), h("dd", { class: "mono" }, ex.options ? JSON.stringify(ex.options) : DASH),
      ex.retry_of ? [h("dt", {}, "Retry of"), h("dd", {}, h("a", { href: `#/executions/${encodeURIComponent(ex.retry_of)}` }, ex.retry_of))] : null);
    buttons.cancel.disabled = TERMINAL.has(ex.status);
    buttons.resume.disabled = !(ex.status === "failed" || ex.status === "canceled");
    buttons.retry.disabled = !TERMINAL.has(ex.status);
    document.getElementById("job-tally").textContent = JOB_STATUSES
      .map((st) => [st, jobs.filter((j) => j.status === st).length]).filter(([, n]) => n).map(([st, n]) => `${n} ${st}`).join(" · ");

    const key = jobs.map((j) => `${j.id}<${(j.depends_on || []).join(",")}`).join(";") + (narrow() ? "|v" : "|h");
    if (key !== graphKey) {
      graphKey = key;
      updateGraph = jobs.length ? drawGraph(graphBox, jobs, pickJob) : null;
      if (!jobs.length) fill(graphBox, h("div", { class: "empty" }, "This execution has no jobs."));
    }
    updateGraph?.(jobs);
    for (const j of jobs) renderJob(j);
    drawTimeline(timelineBox, ex);
    renderOutputsTable(ex);
    if (!editing) {
      const plan = planOf(ex);
      const text = JSON.stringify(plan, null, 2);
      if (planPre.textContent !== text) planPre.textContent = text;
      planNote.textContent = ex.plan || jobs.some((j) => j.params) ? "" : "this server's state gives no job parameters";
    }
  }

  /** The execution's `outputs` (every leaf job's output), when the state lists them. */
  function renderOutputsTable(ex) {
    const outs = Array.isArray(ex.outputs) ? ex.outputs.filter((o) => o && typeof o === "object") : [];
    outputsPanel.classList.toggle("hidden", !outs.length);
    fill(outputsBody, outs.map((o) => {
      const job = o.job_id ?? o.job ?? o.id ?? "";
      const url = typeof o.url === "string" ? o.url : "";
      const opens = url && (!artifactPath(url) || /[?&]sig=/.test(url)); // a signed link opens without the key
      return h("tr", { dataset: { job } },
        h("td", { "data-label": "Job" }, h("a", { class: "mono", href: `#job-${job}`, onclick: (e) => { e.preventDefault(); pickJob(job); } }, job || DASH)),
        h("td", { "data-label": "Type", class: "mono" }, o.type ?? o.content_type ?? DASH),
        h("td", { class: "num", "data-label": "Duration" }, isNum(o.duration) ? fmtSeconds(o.duration) : DASH),
        h("td", { "data-label": "Link", class: "out-link" }, opens ? h("a", { href: url, target: "_blank", rel: "noopener noreferrer", class: "mono" }, url.split("?")[0].split("/").pop() || url)
          : h("span", { class: "muted" }, "played in the job's card")));
    }));
  }

  function openEditor() {
    editing = true;
    const area = h("textarea", { id: "plan-edit", class: "mono", spellcheck: "false", rows: "18", "aria-label": "Plan JSON" });
    area.value = JSON.stringify(planOf(state), null, 2);
    const run = h("button", { class: "btn primary", type: "button", id: "plan-run", onclick: async () => {
      let plan;
      try {
        plan = JSON.parse(area.value);
      } catch (err) {
        fill(planAlerts, alertBox(`The plan is not valid JSON: ${err.message}`));
        return;
      }
      run.disabled = true;
      try {
        const res = await api("/v1/executions", { method: "POST", body: plan, signal: ctx.signal });
        toast(`Submitted as a new execution ${res.id}`);
        go(`#/executions/${encodeURIComponent(res.id)}`);
      } catch (err) {
        if (isAbort(err)) return;
        fill(planAlerts, alertBox(`Cannot run this plan: ${err.message}`));
        run.disabled = false;
      }
    } }, "Run");
    const close = h("button", { class: "btn", type: "button", id: "plan-edit-cancel", onclick: () => {
      editing = false;
      fill(planAlerts);
      fill(planBody, planAlerts, planPre);
      editBtn.disabled = false;
      render();
    } }, "Cancel");
    editBtn.disabled = true;
    fill(planBody, planAlerts, h("p", { class: "muted", style: "margin:0 0 8px" }, "Change the inputs, then Run submits the plan as a new execution."),
      area, h("div", { class: "actions", style: "margin-top:10px" }, run, close));
    area.focus();
  }

  function narrow() {
    return graphBox.clientWidth > 0 && graphBox.clientWidth < 560;
  }

  function pickJob(id) {
    const card = cards.get(id)?.el;
    if (!card) return;
    card.scrollIntoView({ behavior: "smooth", block: "center" });
    card.classList.add("flash");
    setTimeout(() => card.classList.remove("flash"), 1200);
  }

  function renderJob(j) {
    let card = cards.get(j.id);
    if (!card) {
      const el = h("article", { class: "job", id: `job-${j.id}`, dataset: { job: j.id } });
      card = { el, head: h("header", {}), bar: h("div", {}), kv: h("dl", { class: "kv" }), err: h("div", {}),
        attempts: h("div", {}), out: h("div", {}), raw: h("div", {}), outKey: null, params: h("div", { class: "params" }),
        paramsKey: null, log: h("details", { class: "log" }), plog: providerLogPanel(j.id) };
      append(el, [card.head, card.bar, card.params, card.kv, card.err, card.attempts, card.out, card.raw, card.plog.el, card.log]);
      cards.set(j.id, card);
      jobsBox.append(el);
    }
    card.el.dataset.status = j.status;
    fill(card.head, h("span", { class: "job-id" }, j.id), badge(j.status), h("span", { class: "muted" }, j.type));
    fill(card.bar, j.status === "running" ? progressBar(j.progress, "running") : "");
    const cost = j.cost || {};
    fill(card.kv,
      h("dt", {}, "Model"), h("dd", { class: "mono" }, j.model || "local (ffmpeg)"),
      h("dt", {}, "Attempts"), h("dd", {}, `${j.attempts ?? 0}${j.max_attempts ? ` of ${j.max_attempts}` : ""}`),
      j.depends_on?.length ? [h("dt", {}, "Depends on"), h("dd", { class: "mono" }, j.depends_on.join(", "))] : null,
      h("dt", {}, "Timing"), h("dd", {},
        j.started_at ? ["started ", timeEl(j.started_at)] : j.queued_at ? ["queued ", timeEl(j.queued_at)] : "not started",
        j.started_at ? ` · ${j.finished_at ? "took" : "running for"} ${fmtSeconds(between(j.started_at, j.finished_at))}` : ""),
      providerTiming(j),
      h("dt", {}, "Cost"), h("dd", {}, `${isNum(cost.actual) ? fmtUsd(cost.actual) : DASH} (estimated ${fmtUsd(cost.estimated)})`,
        j.cache_hit ? h("span", { class: "tag", style: "margin-left:6px" }, "cache hit") : null,
        j.possible_duplicates ? h("span", { class: "tag warn", style: "margin-left:6px", title: "a retry went ahead where the provider could not be asked whether it took the earlier attempt" },
          `possible duplicate charge ${fmtUsd(j.possible_duplicate_charge)}`) : null),
      j.provider_job_id ? [h("dt", {}, "Provider id"), h("dd", { class: "mono clip", title: j.provider_job_id }, j.provider_job_id)] : null);
    fill(card.err, j.error ? h("pre", { class: "error" }, j.error) : "");
    const params = paramsOf(state, j);
    const paramsKey = JSON.stringify(params ?? null);
    if (paramsKey !== card.paramsKey) {
      card.paramsKey = paramsKey;
      fill(card.params, params ? renderParams(params) : "");
    }
    renderAttempts(j.id);
    renderLog(j.id);
    loadProviderLog(j);
    const outs = outputsOf(j.result);
    const outKey = outs.map((o) => o.url).join("|");
    if (outKey !== card.outKey) {
      card.outKey = outKey;
      fill(card.out, ...outs.map((o) => renderOutput(o, ctx)));
      fill(card.raw, j.result ? h("details", { class: "raw" }, h("summary", {}, "Result"),
        h("pre", {}, JSON.stringify(j.result, null, 2))) : "");
    }
  }

  /** Where the job's work is at its provider: how long it waited in the provider's queue, how long it has run. */
  function providerTiming(j) {
    const seconds = providerQueued(j);
    const queued = isNum(seconds) ? fmtSeconds(seconds) : null;
    let text = null;
    if (j.status === "running" && j.provider_phase === "queued") {
      text = `queued at provider ${queued ?? DASH}${isNum(j.queue_position) ? `, position ${j.queue_position}` : ""}`;
    } else if (j.status === "running" && j.provider_started_at) {
      text = `running ${fmtSeconds(between(j.provider_started_at, null))}${queued ? ` · queued at provider ${queued}` : ""}`;
    } else if (queued) {
      text = `queued at provider ${queued}`;
    }
    return text ? [h("dt", {}, "At the provider"), h("dd", { class: "provider-timing" }, text)] : null;
  }

  /** The job's provider log panel: fetched when opened, and again while the job runs (at most every 2 s). */
  function providerLogPanel(jobId) {
    const body = h("div", { class: "plog-body" }, h("div", { class: "muted" }, "Open to load the provider's log."));
    const count = h("span", { class: "muted" });
    const el = h("details", { class: "plog", id: `plog-${jobId}` }, h("summary", {}, "Provider logs ", count), body);
    const panel = { el, body, count, fetchedAt: 0, status: null, busy: false };
    el.addEventListener("toggle", () => {
      const job = state?.jobs?.find((x) => x.id === jobId);
      if (el.open && job) loadProviderLog(job, true);
    });
    return panel;
  }

  async function loadProviderLog(j, force = false) {
    const p = cards.get(j.id)?.plog;
    if (!p || !p.el.open || p.busy) return;
    const due = force || !p.fetchedAt || p.status !== j.status || (j.status === "running" && Date.now() - p.fetchedAt > 2000);
    if (!due) return;
    p.busy = true;
    try {
      const log = await api(`/v1/executions/${encodeURIComponent(executionId)}/jobs/${encodeURIComponent(j.id)}/logs`, { signal: ctx.signal });
      p.fetchedAt = Date.now();
      p.status = log.status;
      p.count.textContent = log.text ? `· ${plural(log.text.split("\n").filter(Boolean).length, "line")}` : "";
      fill(p.body,
        log.truncated ? h("div", { class: "plog-note warn" }, `${fmtInt(log.dropped_chars)} earlier characters were left out (the last 64 KiB are kept)`) : null,
        log.text ? h("pre", { class: "plog-text" }, log.text) : h("div", { class: "muted" }, TERMINAL.has(log.status) || log.status === "skipped"
          ? "The provider logged nothing for this job." : "Nothing logged by the provider yet."),
        log.updated_at ? h("div", { class: "muted plog-meta" }, `attempt ${log.attempt} · updated `, timeEl(log.updated_at)) : null);
    } catch (err) {
      if (isAbort(err) || !ctx.alive) return;
      fill(p.body, alertBox(`Cannot load the provider's log: ${err.message}`));
    } finally {
      p.busy = false;
    }
  }

  function renderAttempts(jobId) {
    const card = cards.get(jobId);
    const log = attemptLog.get(jobId) || [];
    if (!card) return;
    if (!log.length) {
      fill(card.attempts);
      return;
    }
    fill(card.attempts, h("ol", { class: "attempts" }, log.map((a) => a.divider
      ? h("li", { class: "sep" }, a.divider)
      : h("li", { dataset: { status: a.outcome || "running" } },
        h("span", { class: "n" }, `#${a.attempt}`),
        h("span", { class: "t" }, timeEl(a.start)),
        badge(a.outcome || "running"),
        a.end ? h("span", { class: "muted" }, fmtSeconds((a.end - a.start) / 1000)) : null,
        a.retryIn ? h("span", { class: "muted" }, `retry in ${fmtSeconds(a.retryIn)}`) : null,
        a.error ? h("span", { class: "err" }, a.error) : null))));
  }

  function renderLog(jobId) {
    const card = cards.get(jobId);
    if (!card) return;
    const evs = jobEvents.get(jobId) || [];
    const summary = h("summary", {}, `Log · ${plural(evs.length, "event")}`);
    const list = h("ol", { class: "events job-log" }, evs.map((ev) => h("li", { dataset: { status: ev.type.split(".")[1], seq: String(ev.seq) } },
      h("span", { class: "t" }, timeEl(eventMs(ev))), h("span", { class: "ty" }, ev.type), h("span", { class: "d" }, describe(ev)),
      ev.data && Object.keys(ev.data).length ? h("code", { class: "data" }, JSON.stringify(ev.data)) : null)));
    fill(card.log, summary, evs.length ? list : h("div", { class: "muted" }, "No event yet."));
  }

  // A job's log is drawn once a frame, however many of its events came in it: drawn after each one, a replay redrew
  // every job's whole log once per event of it.
  const staleLogs = new Set();
  let logFrame = 0;
  function logChanged(jobId) {
    staleLogs.add(jobId);
    if (logFrame) return;
    logFrame = requestAnimationFrame(() => {
      logFrame = 0;
      for (const id of staleLogs) renderLog(id);
      staleLogs.clear();
    });
  }
  ctx.onDispose(() => cancelAnimationFrame(logFrame));

  function noteAttempt(ev) {
    const job = ev.job;
    if (!job) return;
    const log = attemptLog.get(job) || [];
    attemptLog.set(job, log);
    const at = eventMs(ev);
    const open = log.length && !log[log.length - 1].divider && !log[log.length - 1].outcome ? log[log.length - 1] : null;
    const d = ev.data || {};
    if (ev.type === "job.running") {
      log.push({ attempt: d.attempt ?? log.filter((a) => !a.divider).length + 1, start: at });
    } else if (ev.type === "job.succeeded" && open) {
      Object.assign(open, { outcome: "succeeded", end: at });
    } else if (ev.type === "job.retrying" && open) {
      Object.assign(open, { outcome: "failed", end: at, error: d.error, retryIn: d.retry_in_s });
    } else if ((ev.type === "job.failed" || ev.type === "job.canceled") && open) {
      Object.assign(open, { outcome: ev.type.slice(4), end: at, error: d.error || d.reason });
    } else if ((ev.type === "job.requeued" || ev.type === "job.released") && open) {
      Object.assign(open, { outcome: "canceled", end: at, error: d.reason });
    } else if ((ev.type === "job.queued" || ev.type === "job.waiting") && d.reason === "resume" && log.length) {
      log.push({ divider: "resumed" });
    } else {
      return;
    }
    renderAttempts(job);
  }

  function describe(ev) {
    const d = ev.data || {};
    if (ev.type === "execution.progress") return `${d.progress}%`;
    if (ev.type === "job.progress") return `${isNum(d.progress) ? `${Math.round(d.progress)}%` : ""}${d.message ? ` ${d.message}` : ""}`;
    if (d.error) return d.error;
    if (d.reason) return d.reason;
    if (ev.type === "job.running") return `attempt ${d.attempt}`;
    if (ev.type === "job.succeeded") return d.result?.url ? `output ${d.result.content_type || d.result.url}` : "done";
    if (ev.type === "job.queued" && d.after) return `after ${d.after}`;
    if (ev.type === "execution.resumed") return `re-running ${(d.jobs || []).join(", ")}`;
    if (ev.type === "execution.created") return `${d.jobs} jobs`;
    return "";
  }

  // Whether the events panel was scrolled to its end before this frame's rows came: read once a frame, then the
  // panel follows the end at the next frame. Reading the scroll position after each row forced a layout of the
  // page per event (8 of the 9.6 s the replay of a 200-job run's events took).
  let stick = null;
  function addEventRow(ev) {
    const st = ev.type.split(".")[1];
    const item = h("li", { dataset: { status: st } },
      h("span", { class: "t" }, timeEl(eventMs(ev))),
      h("span", { class: "ty" }, ev.type), h("span", { class: "j" }, ev.job || ""), h("span", { class: "d" }, describe(ev)));
    if (stick === null) {
      stick = eventsList.scrollTop + eventsList.clientHeight >= eventsList.scrollHeight - 8;
      requestAnimationFrame(() => {
        if (stick) eventsList.scrollTop = eventsList.scrollHeight;
        stick = null;
      });
    }
    eventsList.append(item);
    eventItems.push(item);
    if (eventItems.length > 300) eventItems.shift().remove();
    received += 1;
    eventCount.textContent = plural(received, "event");
  }

  function onEvent(raw) {
    let ev;
    try {
      ev = JSON.parse(raw.data);
    } catch {
      return;
    }
    if (!isNum(ev.seq) || ev.seq <= lastSeq) return;
    if (isNum(ev.created_at_unix)) ev.created_at = ev.created_at_unix; // Unix seconds below; created_at is ISO
    lastSeq = ev.seq;
    addEventRow(ev);
    if (ev.job) {
      const list = jobEvents.get(ev.job) || [];
      jobEvents.set(ev.job, list);
      list.push(ev);
      if (list.length > 500) list.shift();
      logChanged(ev.job);
    }
    noteAttempt(ev);
    if (!state) return;
    if (replayed(ev)) {
      if (!TERMINAL.has(state.status)) scheduleRefresh(); // one fresh read after the replay, in case one was missed
      return;
    }
    const d = ev.data || {};
    if (ev.job) {
      const job = state.jobs.find((j) => j.id === ev.job);
      const status = JOB_EVENT_STATUS[ev.type];
      if (job && status) {
        job.status = status;
        if (ev.type === "job.running") {
          job.attempts = d.attempt ?? job.attempts;
          job.progress = 0;
          job.started_at ||= new Date(eventMs(ev)).toISOString();
        }
        if (ev.type === "job.succeeded") {
          job.result = d.result ?? job.result;
          job.progress = 100;
        }
        if (d.error) job.error = d.error;
      }
      if (job && ev.type === "job.progress" && isNum(d.progress)) job.progress = d.progress;
    } else if (ev.type === "execution.progress" && isNum(d.progress)) {
      state.progress = d.progress;
    } else if (ev.type === "execution.resumed") {
      state.status = "running";
    } else if (ev.type.startsWith("execution.")) {
      const st = ev.type.slice("execution.".length);
      if (EXEC_STATUSES.includes(st)) state.status = st;
      if (d.error) state.error = d.error;
    }
    render();
    scheduleRefresh();
  }

  // The stream starts from the first event. Those the loaded state already shows go to the events panel and the job
  // logs only: applying them again walked every job back through queued and running to where it is, redrawing the
  // page once per event. Of an execution that had ended, that is every event up to its end (what came after, a
  // resume or a late cancellation, is news); of one still running, every event up to the newest moment its state
  // shows. Timestamps are to the millisecond: a transaction's events share its rows' times.
  function replayed(ev) {
    if (TERMINAL.has(state.status)) {
      const ended = parseTime(state.finished_at);
      return ended === null || Math.floor(eventMs(ev)) <= ended;
    }
    return seenMs !== null && Math.floor(eventMs(ev)) <= seenMs;
  }

  function newestMs(s) {
    let newest = null;
    const note = (iso) => {
      const t = parseTime(iso);
      if (t !== null && (newest === null || t > newest)) newest = t;
    };
    [s.created_at, s.started_at, s.finished_at].forEach(note);
    for (const j of s.jobs || []) {
      [j.queued_at, j.started_at, j.finished_at, j.provider_submitted_at, j.provider_started_at].forEach(note);
    }
    return newest;
  }

  function loaded(fresh) {
    state = fresh;
    seenMs = newestMs(fresh);
  }

  function scheduleRefresh() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(async () => {
      refreshTimer = null;
      await load();
    }, 400);
  }
  ctx.onDispose(() => clearTimeout(refreshTimer));

  async function load() {
    try {
      const fresh = await api(`/v1/executions/${encodeURIComponent(executionId)}`, { signal: ctx.signal });
      if (!ctx.alive) return;
      loaded(fresh);
      render();
    } catch (err) {
      if (isAbort(err) || !ctx.alive) return;
      if (err.status === 404) {
        fill(view, h("div", { class: "crumbs" }, h("a", { href: "#/executions" }, "Executions")),
          h("div", { class: "panel" }, h("div", { class: "empty" }, h("strong", {}, "Execution not found"),
            `No execution ${executionId} belongs to this key's tenant.`)));
        ctx.dispose();
        return;
      }
      fill(alerts, alertBox(`Cannot load the execution: ${err.message}`));
    }
  }

  const stream = followEvents(executionId, ctx, {
    onEvent,
    isFinished: () => state !== null && TERMINAL.has(state.status),
    onState: (st) => {
      live.dataset.state = st;
      live.lastChild.textContent = { live: "live", connecting: "connecting", reconnecting: "reconnecting…", ended: "ended" }[st] || st;
    },
  });

  async function act(what) {
    const button = buttons[what];
    const label = button.textContent;
    for (const b of Object.values(buttons)) b.disabled = true;
    fill(button, h("span", { class: "spinner" }), label);
    try {
      const res = await api(`/v1/executions/${encodeURIComponent(executionId)}/${what}`, { method: "POST", signal: ctx.signal });
      fill(alerts);
      if (what === "retry") {
        toast(`Retrying as a new execution ${res.id}`);
        go(`#/executions/${encodeURIComponent(res.id)}`);
        return;
      }
      toast(what === "cancel" ? "Cancel requested" : "Resumed: failed, canceled and skipped jobs run again");
      if (res && res.jobs) loaded(res);
      render();
      stream.start(); // the stream ended with the execution; a resumed one has more to say
    } catch (err) {
      if (isAbort(err)) return;
      fill(alerts, alertBox(`Cannot ${what} this execution: ${err.message}`));
    } finally {
      button.textContent = label;
      if (state && ctx.alive) render();
    }
  }

  const onResize = () => { if (state) render(); };
  window.addEventListener("resize", onResize);
  ctx.onDispose(() => window.removeEventListener("resize", onResize));
  // ages and running durations move on even when nothing happens
  ctx.every(5000, () => { if (state && !TERMINAL.has(state.status)) render(); });

  load().then(() => { if (ctx.alive && state) stream.start(); });
}

// ------------------------------------------------------------------ webhook deliveries

function showDeliveries(view, ctx, params) {
  const filter = params.get("execution_id") || "";
  pageTitle("Webhook deliveries");
  let rows = [];
  const open = new Set();
  const tbody = h("tbody", {});
  const emptyBox = h("div", { class: "empty hidden" });
  const alerts = h("div", {});
  const input = h("input", { type: "text", id: "delivery-filter", class: "mono", placeholder: "execution id, e.g. ex_…",
    value: filter, "aria-label": "Execution id" });
  const form = h("form", { class: "filter-form", onsubmit: (e) => {
    e.preventDefault();
    const v = input.value.trim();
    if (v && !/^[A-Za-z0-9_-]{1,100}$/.test(v)) {
      fill(alerts, alertBox("An execution id has only letters, digits, '_' and '-'."));
      return;
    }
    go(v ? `#/deliveries?execution_id=${encodeURIComponent(v)}` : "#/deliveries");
  } }, input, h("button", { class: "btn", type: "submit" }, "Filter"),
  filter ? h("button", { class: "btn", type: "button", onclick: () => go("#/deliveries") }, "Clear") : null);

  view.append(
    h("div", { class: "page-head" }, h("h1", {}, "Webhook deliveries"),
      h("button", { class: "btn small", type: "button", onclick: () => refresh(true) }, "Refresh"),
      h("div", { class: "sub" }, "Every event sent to your webhook URLs, with each attempt. Redeliver sends one again with the same webhook-id.")),
    alerts, form,
    h("div", { class: "panel" }, h("div", { class: "table-wrap" }, h("table", { class: "table cards", id: "deliveries" },
      h("thead", {}, h("tr", {}, h("th", {}, "Status"), h("th", {}, "Event and execution"), h("th", {}, "Destination"),
        h("th", { class: "num" }, "Attempts"), h("th", {}, "Last attempt"), h("th", {}, "Created"), h("th", {}, h("span", { class: "sr-only" }, "Actions")))),
      tbody)), emptyBox));

  function lastAttempt(d) {
    const a = d.attempts?.[d.attempts.length - 1];
    if (!a) return h("span", { class: "muted" }, "not sent yet");
    const code = a.status_code ? `HTTP ${a.status_code}` : "no answer";
    return h("span", { title: a.error || "" }, code, isNum(a.latency_ms) ? h("span", { class: "muted" }, ` · ${Math.round(a.latency_ms)} ms`) : null,
      a.error ? h("div", { class: "sub-line error" }, a.error) : null);
  }

  function row(d) {
    const redeliver = h("button", { class: "btn small", type: "button", dataset: { redeliver: d.id },
      onclick: async (e) => {
        e.stopPropagation();
        redeliver.disabled = true;
        try {
          const fresh = await api(`/v1/webhook-deliveries/${encodeURIComponent(d.id)}/redeliver`, { method: "POST", signal: ctx.signal });
          rows = rows.map((r) => (r.id === d.id ? fresh : r));
          draw();
          toast(`Delivery ${d.id} queued to be sent again`);
        } catch (err) {
          if (isAbort(err)) return;
          fill(alerts, alertBox(`Cannot redeliver ${d.id}: ${err.message}`));
          redeliver.disabled = false;
        }
      } }, "Redeliver");
    const tr = h("tr", { class: "clickable", dataset: { id: d.id, status: d.status },
      onclick: (e) => {
        if (e.target.closest("a, button")) return;
        if (open.has(d.id)) open.delete(d.id);
        else open.add(d.id);
        draw();
      } },
    h("td", { "data-label": "Status" }, badge(d.status)),
    h("td", { class: "event-cell", "data-label": "Event" }, h("span", { class: "mono" }, d.event_type || DASH),
      d.execution_id ? h("a", { class: "mono exec-link", href: `#/executions/${encodeURIComponent(d.execution_id)}` }, d.execution_id) : null),
    h("td", { "data-label": "Destination" }, h("span", { class: "mono dest", title: d.url }, d.url || DASH)),
    h("td", { class: "num attempts-count", "data-label": "Attempts" }, String(d.attempts?.length ?? 0)),
    h("td", { "data-label": "Last attempt" }, lastAttempt(d)),
    h("td", { class: "nowrap", "data-label": "Created" }, timeEl(d.created_at)),
    h("td", { class: "num" }, redeliver));
    if (!open.has(d.id)) return [tr];
    const requestOf = (a) => a.request_body ?? d.request_body ?? d.payload ?? d.body ?? null;
    const attempts = (d.attempts || []).map((a) => h("li", { class: "attempt", dataset: { status: a.status_code && a.status_code < 300 ? "delivered" : "failed", attempt: String(a.attempt) } },
      h("div", { class: "attempt-line" },
        h("span", { class: "n" }, `#${a.attempt}`), h("span", {}, timeEl(a.at)), badge(a.status_code ? String(a.status_code) : "no answer"),
        isNum(a.latency_ms) ? h("span", { class: "muted" }, `${Math.round(a.latency_ms)} ms`) : null,
        a.error ? h("span", { class: "err" }, a.error) : null),
      h("div", { class: "exchange" },
        h("div", { class: "request" }, h("div", { class: "label" }, `Request · POST ${d.url || ""}`),
          bodyBlock(requestOf(a), "The server keeps no copy of the body it sent.")),
        h("div", { class: "response" }, h("div", { class: "label" },
          `Response · ${a.status_code ? `HTTP ${a.status_code}` : "none"}${isNum(a.latency_ms) ? ` in ${Math.round(a.latency_ms)} ms` : ""}`),
        a.status_code ? bodyBlock(a.response_body ?? null, "The server keeps no copy of the answer's body.") : h("div", { class: "muted" }, a.error || "No answer came.")))));
    return [tr, h("tr", { class: "detail-row" }, h("td", { colspan: "7" },
      h("div", { class: "mono faint", style: "font-size:12px" }, `webhook-id ${d.id}`),
      d.next_attempt_at ? h("div", { class: "muted", style: "font-size:12px" }, "next attempt ", timeEl(d.next_attempt_at)) : null,
      d.delivered_at ? h("div", { class: "muted", style: "font-size:12px" }, "delivered ", timeEl(d.delivered_at)) : null,
      attempts.length ? h("ol", { class: "attempts" }, attempts) : h("div", { class: "muted" }, "No attempt yet.")))];
  }

  function bodyBlock(body, missing) {
    if (body === null || body === undefined) return h("div", { class: "muted body-missing" }, missing);
    let text = body;
    if (typeof body === "string") {
      try {
        text = JSON.stringify(JSON.parse(body), null, 2);
      } catch {
        /* not JSON: shown as it came */
      }
    } else {
      text = JSON.stringify(body, null, 2);
    }
    return h("pre", { class: "json body" }, text);
  }

  function draw() {
    fill(tbody, ...rows.flatMap(row));
    emptyBox.classList.toggle("hidden", rows.length > 0);
    fill(emptyBox, h("strong", {}, "No webhook deliveries"),
      filter ? `Execution ${filter} has sent no webhook.` : "Executions submitted with a webhook URL show their deliveries here.");
  }

  async function refresh(manual = false) {
    const q = new URLSearchParams({ limit: "100" });
    if (filter) q.set("execution_id", filter);
    try {
      const page = await api(`/v1/webhook-deliveries?${q}`, { signal: ctx.signal });
      rows = page.data || [];
      if (manual || alerts.querySelector(".alert")) fill(alerts);
      draw();
    } catch (err) {
      if (isAbort(err) || !ctx.alive) return;
      fill(alerts, alertBox(`Cannot load deliveries: ${err.message}`));
    }
  }

  tbody.append(h("tr", {}, h("td", { colspan: "7" }, h("div", { class: "loading" }, h("span", { class: "spinner" }), "Loading…"))));
  refresh();
  ctx.every(DELIVERY_REFRESH_MS, () => refresh());
}

// ------------------------------------------------------------------ overview (GET /v1/stats)

function showOverview(view, ctx) {
  pageTitle("Overview");
  const head = h("div", { class: "page-head" }, h("h1", {}, "Overview"), h("span", { class: "muted", id: "stats-scope" }));
  const body = h("div", { id: "overview" }, h("div", { class: "loading" }, h("span", { class: "spinner" }), "Loading…"));
  const recentBody = h("tbody", {});
  const recent = h("section", { class: "panel" }, h("header", {}, h("h2", {}, "Recent executions"), h("a", { href: "#/executions" }, "All executions →")),
    h("div", { class: "table-wrap" }, h("table", { class: "table cards", id: "recent" },
      h("thead", {}, h("tr", {}, h("th", {}, "Status"), h("th", {}, "Execution"), h("th", {}, "Progress"),
        h("th", { class: "num" }, "Cost"), h("th", { class: "num" }, "Created"))), recentBody)));
  view.append(head, body, recent);

  const get = (obj, ...path) => path.reduce((o, k) => (o && typeof o === "object" ? o[k] : undefined), obj);
  const fig = (label, value, note, id) => h("div", { class: "figure", id },
    h("div", { class: "label" }, label), h("div", { class: "value" }, value), note ? h("div", { class: "note" }, note) : null);

  function byStatus(counts, order) {
    const entries = counts && typeof counts === "object" ? Object.entries(counts).filter(([, n]) => isNum(n)) : [];
    if (!entries.length) return h("div", { class: "muted" }, DASH);
    const sorted = entries.sort((a, b) => {
      const ia = order.indexOf(a[0]), ib = order.indexOf(b[0]);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib);
    });
    const total = sorted.reduce((a, [, n]) => a + n, 0);
    return h("div", {},
      h("div", { class: "stacked" }, total ? sorted.filter(([, n]) => n > 0).map(([st, n]) =>
        h("span", { dataset: { status: st }, style: `width:${(100 * n) / total}%`, title: `${st}: ${n}` })) : null),
      h("div", { class: "legend" }, sorted.map(([st, n]) => h("span", { dataset: { status: st } }, h("span", { class: "dot" }), st, h("b", {}, fmtInt(n))))));
  }

  function render(st) {
    const ex = st.executions || {};
    const total = ex.by_status && typeof ex.by_status === "object"
      ? Object.values(ex.by_status).filter(isNum).reduce((a, b) => a + b, 0) : null;
    fill(document.getElementById("stats-scope"), st.tenant ? `tenant ${st.tenant}` : "", st.since ? [" · since ", timeEl(st.since)] : null);
    const providers = Array.isArray(st.providers) ? st.providers : [];
    const wh = st.webhooks || {};
    fill(body,
      h("div", { class: "figures" },
        fig("Executions", fmtInt(total), "in this period", "fig-executions"),
        fig("Success rate", fmtPct(ex.success_rate), "of finished executions", "fig-success"),
        fig("Duration, median", fmtSeconds(ex.p50_s), `p95 ${fmtSeconds(ex.p95_s)}`, "fig-duration"),
        fig("Queue depth", fmtInt(st.queue_depth), "jobs waiting for a worker", "fig-queue"),
        fig("Spend this month", fmtUsd(st.spend_usd_month), null, "fig-spend"),
        fig("Workers", fmtInt(get(st, "workers", "live")),
          isNum(get(st, "workers", "slots_in_use")) ? `${plural(get(st, "workers", "slots_in_use"), "slot")} in use` : `${DASH} slots in use`, "fig-workers")),
      h("div", { class: "grid-2", style: "margin-bottom:18px" },
        h("section", { class: "panel" }, h("header", {}, h("h2", {}, "Executions by status")), h("div", { class: "panel-body" }, byStatus(ex.by_status, EXEC_STATUSES))),
        h("section", { class: "panel" }, h("header", {}, h("h2", {}, "Jobs by status")), h("div", { class: "panel-body" }, byStatus(get(st, "jobs", "by_status"), JOB_STATUSES)))),
      h("div", { class: "grid-2", style: "margin-bottom:18px" },
        h("section", { class: "panel" }, h("header", {}, h("h2", {}, "Providers")),
          providers.length ? h("div", { class: "table-wrap" }, h("table", { class: "table cards", id: "providers" },
            h("thead", {}, h("tr", {}, h("th", {}, "Provider"), h("th", { class: "num" }, "Requests"), h("th", { class: "num" }, "Failed"),
              h("th", { class: "num" }, "Success"), h("th", { class: "num" }, "p50"))),
            h("tbody", {}, providers.map((p) => h("tr", {},
              h("td", { "data-label": "Provider" }, h("b", {}, p.provider ?? DASH)),
              h("td", { class: "num", "data-label": "Requests" }, fmtInt(p.requests)),
              h("td", { class: "num", "data-label": "Failed" }, fmtInt(p.failed)),
              h("td", { class: "num", "data-label": "Success" }, fmtPct(p.success_rate)),
              h("td", { class: "num", "data-label": "p50" }, fmtSeconds(p.p50_s)))))))
            : h("div", { class: "empty" }, "No provider calls in this period.")),
        h("section", { class: "panel" }, h("header", {}, h("h2", {}, "Webhooks"), h("a", { href: "#/deliveries" }, "Deliveries →")),
          h("div", { class: "panel-body" }, h("div", { class: "figures four" },
            fig("Delivered", fmtInt(wh.delivered)), fig("Failed", fmtInt(wh.failed)),
            fig("Pending", fmtInt(wh.pending)), fig("Success rate", fmtPct(wh.success_rate)))))));
  }

  let statsMissing = false;
  async function refresh() {
    if (statsMissing) return; // a server without the endpoint: asked once per visit
    try {
      const st = await api("/v1/stats", { signal: ctx.signal });
      render(st && typeof st === "object" ? st : {});
    } catch (err) {
      if (isAbort(err) || !ctx.alive) return;
      statsMissing = err.status === 404;
      fill(body, err.status === 404
        ? h("div", { class: "panel", id: "stats-unavailable" }, h("div", { class: "empty" }, h("strong", {}, "Figures not available"),
          "This server does not offer GET /v1/stats."))
        : alertBox(`Cannot load the figures: ${err.message}`));
      document.getElementById("stats-scope").textContent = "";
    }
  }

  async function refreshRecent() {
    try {
      const page = await api("/v1/executions?limit=6", { signal: ctx.signal });
      fill(recentBody, ...(page.data.length ? page.data.map((ex) => h("tr", { class: "clickable", onclick: () => go(`#/executions/${encodeURIComponent(ex.id)}`) },
        h("td", { "data-label": "Status" }, badge(ex.status)),
        h("td", { class: "id-cell" }, h("a", { href: `#/executions/${encodeURIComponent(ex.id)}` }, ex.id)),
        h("td", { "data-label": "Progress" }, h("div", { class: "progress-cell" }, progressBar(ex.progress, ex.status),
          h("span", { class: "pct" }, isNum(ex.progress) ? `${Math.round(ex.progress)}%` : DASH))),
        h("td", { class: "num", "data-label": "Cost" }, TERMINAL.has(ex.status) ? fmtUsd(ex.cost?.actual) : h("span", { class: "muted" }, `~${fmtUsd(ex.cost?.estimated)}`)),
        h("td", { class: "num nowrap", "data-label": "Created" }, timeEl(ex.created_at))))
        : [h("tr", {}, h("td", { colspan: "5" }, h("div", { class: "empty" }, "No executions yet.")))]));
    } catch (err) {
      if (isAbort(err) || !ctx.alive) return;
      fill(recentBody, h("tr", {}, h("td", { colspan: "5" }, alertBox(`Cannot load executions: ${err.message}`))));
    }
  }

  refresh();
  refreshRecent();
  ctx.every(OVERVIEW_REFRESH_MS, () => { refresh(); refreshRecent(); });
}

// ------------------------------------------------------------------ workers and queue (GET /v1/stats)

function showWorkers(view, ctx) {
  pageTitle("Workers and queue");
  const body = h("div", { id: "workers-page" }, h("div", { class: "loading" }, h("span", { class: "spinner" }), "Loading…"));
  const scope = h("span", { class: "muted", id: "workers-scope" });
  view.append(h("div", { class: "page-head" }, h("h1", {}, "Workers and queue"), scope,
    h("div", { class: "sub" }, "Live workers, the queue, the providers and their circuits, from GET /v1/stats and GET /v1/providers; refreshed every few seconds.")), body);
  const fig = (label, value, note, id) => h("div", { class: "figure", id },
    h("div", { class: "label" }, label), h("div", { class: "value" }, value), note ? h("div", { class: "note" }, note) : null);
  const table = (id, cols, rows) => h("div", { class: "table-wrap" }, h("table", { class: "table cards", id },
    h("thead", {}, h("tr", {}, cols.map(([label, num]) => h("th", { class: num ? "num" : null }, label)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c, i) => h("td", { class: cols[i][1] ? "num" : null, "data-label": cols[i][0] }, c)))))));

  function circuitRows(pv) {
    // GET /v1/providers: every provider's circuit and its models'
    const rows = [];
    for (const p of Array.isArray(pv?.data) ? pv.data : []) {
      for (const [name, c] of [[p.provider, p.circuit], ...(Array.isArray(p.models) ? p.models : []).map((m) => [m.model, m.circuit])]) {
        if (!c || typeof c !== "object") continue;
        rows.push([h("span", { class: "mono" }, name ?? DASH), h("b", { class: `circuit-${c.state}` }, c.state ?? DASH),
          fmtInt(c.consecutive_failures), fmtPct(c.success_rate), c.open_until ? timeEl(c.open_until) : DASH]);
      }
    }
    return rows;
  }

  function render(st, pv) {
    const w = st.workers && typeof st.workers === "object" ? st.workers : {};
    const byStatus = st.jobs?.by_status || {};
    fill(scope, st.tenant ? `tenant ${st.tenant}` : "", st.since ? [" · since ", timeEl(st.since)] : null);
    const list = Array.isArray(w.list) ? w.list : Array.isArray(st.worker_list) ? st.worker_list : null;
    const queues = Array.isArray(st.queues) ? st.queues : null;
    const providers = Array.isArray(st.providers) ? st.providers : [];
    fill(body,
      h("div", { class: "figures" },
        fig("Live workers", fmtInt(w.live), "seen in the last minute", "w-live"),
        fig("Slots in use", fmtInt(w.slots_in_use), "this tenant's jobs running now", "w-slots"),
        fig("Queue depth", fmtInt(st.queue_depth), "jobs queued and due now", "w-queue"),
        fig("Queued", fmtInt(byStatus.queued ?? 0), "jobs in the queue (due or not)", "w-queued"),
        fig("Waiting", fmtInt(byStatus.waiting ?? 0), "jobs waiting on dependencies", "w-waiting"),
        fig("Running", fmtInt(byStatus.running ?? 0), "jobs running", "w-running")),
      list ? h("section", { class: "panel" }, h("header", {}, h("h2", {}, "Workers")),
        table("worker-list", [["Worker"], ["Slots", true], ["Last seen"]], list.map((x) => [
          h("span", { class: "mono" }, x.id ?? x.name ?? DASH), `${fmtInt(x.slots_in_use ?? x.busy)} of ${fmtInt(x.slots ?? x.concurrency)}`,
          timeEl(x.last_seen ?? x.heartbeat_at)]))) : null,
      queues ? h("section", { class: "panel" }, h("header", {}, h("h2", {}, "Queues")),
        table("queue-list", [["Queue"], ["Depth", true]], queues.map((q) => [h("span", { class: "mono" }, q.name ?? q.provider ?? q.model ?? DASH), fmtInt(q.depth ?? q.queued)]))) : null,
      h("section", { class: "panel" }, h("header", {}, h("h2", {}, "Providers")),
        providers.length ? table("worker-providers", [["Provider"], ["Requests", true], ["Failed", true], ["Success", true], ["p50", true]],
          providers.map((p) => [h("b", {}, p.provider ?? DASH), fmtInt(p.requests), fmtInt(p.failed), fmtPct(p.success_rate), fmtSeconds(p.p50_s)]))
          : h("div", { class: "empty" }, "No provider calls in this period.")),
      pv ? h("section", { class: "panel" }, h("header", {}, h("h2", {}, "Circuits")),
        circuitRows(pv).length ? table("worker-circuits", [["Provider or model"], ["State"], ["Failures in a row", true], ["Success", true], ["Open until"]], circuitRows(pv))
          : h("div", { class: "empty" }, "No circuit yet: no paid provider has been called.")) : null);
  }

  async function refresh() {
    try {
      const [st, pv] = await Promise.all([
        api("/v1/stats", { signal: ctx.signal }),
        api("/v1/providers", { signal: ctx.signal }).catch((err) => { if (isAbort(err)) throw err; return null; }),
      ]);
      if (ctx.alive) render(st && typeof st === "object" ? st : {}, pv && typeof pv === "object" ? pv : null);
    } catch (err) {
      if (isAbort(err) || !ctx.alive) return;
      fill(body, err.status === 404
        ? h("div", { class: "panel", id: "stats-unavailable" }, h("div", { class: "empty" }, h("strong", {}, "Figures not available"),
          "This server does not offer GET /v1/stats."))
        : alertBox(`Cannot load the figures: ${err.message}`));
    }
  }
  refresh();
  ctx.every(OVERVIEW_REFRESH_MS, refresh);
}

// ------------------------------------------------------------------ start

document.getElementById("sign-out").addEventListener("click", () => signOut("Signed out. Enter a key to sign in again."));
window.addEventListener("hashchange", route);
window.addEventListener("storage", (e) => { if (e.key === KEY_STORAGE) route(); });
route();
