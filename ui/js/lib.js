// Shared helpers: components (Preact + htm), the URL as the app's state,
// the time range, API access and formatting.
import { h, render } from "/vendor/preact-10.29.8.module.js";
import { useState, useEffect, useRef, useMemo, useCallback, useLayoutEffect } from "/vendor/preact-hooks-10.29.8.module.js";
import htm from "/vendor/htm-3.1.1.module.js";

export const html = htm.bind(h);
export { h, render, useState, useEffect, useRef, useMemo, useCallback, useLayoutEffect };

// ---- tiny event bus (keyboard shortcuts → pages) ----
const listeners = {};
export function on(name, fn) {
  (listeners[name] ||= new Set()).add(fn);
  return () => listeners[name].delete(fn);
}
export function emit(name, arg) {
  for (const fn of listeners[name] || []) fn(arg);
}
export function useBus(name, fn) {
  const ref = useRef(fn);
  ref.current = fn;
  useEffect(() => on(name, (a) => ref.current(a)), [name]);
}

// ---- the URL is the state: path = page, query = everything else ----
export function currentRoute() {
  const u = new URL(location.href);
  return { path: u.pathname, params: Object.fromEntries(u.searchParams) };
}
export function hrefFor(path, params) {
  const sp = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") sp.set(k, v);
  }
  const s = sp.toString();
  return path + (s ? "?" + s : "");
}
/// Changes the URL (pushing a history entry unless `replace`) and re-renders.
export function navigate(path, params, replace = false) {
  const url = hrefFor(path, params);
  if (url === location.pathname + location.search) return;
  history[replace ? "replaceState" : "pushState"](null, "", url);
  emit("route");
}
/// Merges `changes` into the current page's params.
export function setParams(changes, replace = false) {
  const { path, params } = currentRoute();
  const next = { ...params, ...changes };
  for (const k of Object.keys(next)) if (next[k] === undefined || next[k] === null || next[k] === "") delete next[k];
  navigate(path, next, replace);
}
export function useRoute() {
  const [route, setRoute] = useState(currentRoute());
  useEffect(() => {
    const update = () => setRoute(currentRoute());
    window.addEventListener("popstate", update);
    const off = on("route", update);
    return () => { window.removeEventListener("popstate", update); off(); };
  }, []);
  return route;
}
/// Parameters carried from page to page: the time range and the time zone.
export function sharedParams(params) {
  const out = {};
  for (const k of ["range", "from", "to", "tz"]) if (params[k]) out[k] = params[k];
  return out;
}
export function Link({ path, params, children, cls, title }) {
  const href = hrefFor(path, params);
  const click = (e) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey) return;
    e.preventDefault();
    navigate(path, params);
  };
  return html`<a href=${href} class=${cls} title=${title} onClick=${click}>${children}</a>`;
}

// ---- time ----
export const RANGES = ["15m", "1h", "6h", "24h", "7d"];
const UNIT_MS = { s: 1e3, m: 6e4, h: 36e5, d: 864e5, w: 6048e5 };
export function rangeMs(r) {
  const m = /^(\d+(?:\.\d+)?)([smhdw])$/.exec(r || "");
  return m ? Number(m[1]) * UNIT_MS[m[2]] : 36e5;
}
/// The API's `start` / `end` for the page's range.
export function apiRange(params, fallback = "1h") {
  if (params.from && params.to) return { start: params.from, end: params.to };
  const r = RANGES.includes(params.range) ? params.range : fallback;
  return { start: "now-" + r, end: "now" };
}
/// The range in epoch milliseconds (relative ranges against now).
export function rangeBounds(params, fallback = "1h") {
  if (params.from && params.to) return [parseTime(params.from), parseTime(params.to)];
  const now = Date.now();
  return [now - rangeMs(RANGES.includes(params.range) ? params.range : fallback), now];
}
/// Epoch ms from an API time: RFC 3339 with up to 9 fraction digits (with or
/// without the Z), or nanoseconds since the epoch.
export function parseTime(t) {
  if (t === null || t === undefined) return NaN;
  if (typeof t === "number") return t / 1e6;
  if (/^\d{15,}$/.test(t)) return Number(t) / 1e6;
  let s = String(t).replace(/(\.\d{3})\d+/, "$1");
  if (!/(Z|[+-]\d\d:?\d\d)$/.test(s)) s += "Z";
  return Date.parse(s);
}
export function isoUtc(ms) {
  return new Date(ms).toISOString();
}
function pad(n, w = 2) { return String(n).padStart(w, "0"); }
export function fmtTime(t, tz, withDate = true) {
  const ms = typeof t === "number" ? t : parseTime(t);
  if (!isFinite(ms)) return "";
  const d = new Date(ms);
  const local = tz === "local";
  const Y = local ? d.getFullYear() : d.getUTCFullYear();
  const M = (local ? d.getMonth() : d.getUTCMonth()) + 1;
  const D = local ? d.getDate() : d.getUTCDate();
  const hh = local ? d.getHours() : d.getUTCHours();
  const mm = local ? d.getMinutes() : d.getUTCMinutes();
  const ss = local ? d.getSeconds() : d.getUTCSeconds();
  const ms3 = local ? d.getMilliseconds() : d.getUTCMilliseconds();
  const time = `${pad(hh)}:${pad(mm)}:${pad(ss)}.${pad(ms3, 3)}`;
  return withDate ? `${Y}-${pad(M)}-${pad(D)} ${time}` : time;
}
export function fmtDurNs(ns) {
  if (ns === null || ns === undefined || !isFinite(ns)) return "–";
  if (ns < 1e3) return `${Math.round(ns)} ns`;
  if (ns < 1e6) return `${(ns / 1e3).toFixed(1)} µs`;
  if (ns < 1e9) return `${(ns / 1e6).toFixed(ns < 1e7 ? 2 : 1)} ms`;
  return `${(ns / 1e9).toFixed(2)} s`;
}
export function fmtMs(ms) { return fmtDurNs(ms * 1e6); }
export function fmtNum(n, digits = 2) {
  if (n === null || n === undefined || !isFinite(n)) return "–";
  if (Math.abs(n) >= 1000) return Math.round(n).toLocaleString("en-US");
  return Number(n.toFixed(digits)).toString();
}
export function fmtPct(x) {
  if (x === null || x === undefined || !isFinite(x)) return "–";
  return (x * 100).toFixed(x < 0.01 && x > 0 ? 2 : 1) + " %";
}

// ---- API ----
export class ApiError extends Error {}

/// The server asks for a token (401): a small form that logs in through
/// POST /api/v1/login, which keeps the token in an HttpOnly cookie (this
/// script never stores it), then reloads the page.
let loginShown = false;
function showLogin() {
  if (loginShown) return;
  loginShown = true;
  const form = document.createElement("form");
  form.className = "modal login";
  form.innerHTML = `<h3>Log in to Loupe</h3>
    <p class="muted">This server asks for an access token (query or admin scope).</p>
    <input type="password" name="token" placeholder="token" autocomplete="current-password" required />
    <button type="submit" class="primary">Log in</button>
    <p class="bad" role="alert"></p>`;
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const res = await fetch("/api/v1/login", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ token: form.elements.token.value }),
    });
    if (res.ok) { location.reload(); return; }
    let msg = `${res.status} ${res.statusText}`;
    try { msg = (await res.json()).error || msg; } catch { /* not JSON */ }
    form.querySelector("[role=alert]").textContent = msg;
  });
  const bg = document.createElement("div");
  bg.className = "modal-bg";
  bg.appendChild(form);
  document.body.appendChild(bg);
  form.elements.token.focus();
}
export async function api(path, opts = {}) {
  const res = await fetch(path, opts);
  const text = await res.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = text; }
  if (res.status === 401) showLogin();
  if (!res.ok) {
    const msg = body && body.error ? body.error : `${res.status} ${res.statusText}`;
    throw new ApiError(msg);
  }
  return body;
}
export function qs(params) {
  const sp = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") sp.set(k, v);
  return sp.toString();
}
/// Fetches `url` (a string, or null to skip) whenever it changes.
export function useApi(url, opts) {
  const [state, setState] = useState({ loading: !!url, data: null, error: null });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    if (!url) { setState({ loading: false, data: null, error: null }); return; }
    let live = true;
    setState((s) => ({ ...s, loading: true, error: null }));
    const t0 = performance.now();
    api(url, opts).then(
      (data) => live && setState({ loading: false, data, error: null, ms: performance.now() - t0 }),
      (error) => live && setState({ loading: false, data: null, error: String(error.message || error) }),
    );
    return () => { live = false; };
  }, [url, tick]);
  return { ...state, reload: () => setTick((t) => t + 1) };
}

// ---- small shared components ----
/// Loading, error and empty states around a panel's content.
export function Status({ state, empty, children, what = "data" }) {
  if (state.error) return html`<div class="state error" role="alert">Could not load ${what}: ${state.error}</div>`;
  if (state.loading && !state.data) return html`<div class="state loading"><span class="spinner"></span> Loading ${what}…</div>`;
  if (empty) return html`<div class="state empty">${empty}</div>`;
  return children;
}

const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#e15759", "#86bcb6", "#8cd17d", "#a0cbe8"];
const colourCache = {};
export function serviceColour(name) {
  if (!(name in colourCache)) {
    let hsh = 0;
    for (const c of String(name)) hsh = (hsh * 31 + c.charCodeAt(0)) >>> 0;
    colourCache[name] = PALETTE[hsh % PALETTE.length];
  }
  return colourCache[name];
}
export function sevClass(sev) {
  const s = String(sev || "").toLowerCase();
  if (s.startsWith("fatal") || s.startsWith("crit")) return "sev-fatal";
  if (s.startsWith("err")) return "sev-error";
  if (s.startsWith("warn")) return "sev-warn";
  if (s.startsWith("debug") || s.startsWith("trace")) return "sev-debug";
  return "sev-info";
}

/// Renders only the rows in view: `rowHeight` px each, `render(item, i)`.
export function VirtualList({ items, rowHeight, render: renderRow, height = 500, cls = "", scrollTo }) {
  const ref = useRef(null);
  const [top, setTop] = useState(0);
  const [viewH, setViewH] = useState(height);
  useLayoutEffect(() => {
    const el = ref.current;
    if (!el) return;
    setViewH(el.clientHeight || height);
    const ro = new ResizeObserver(() => setViewH(el.clientHeight || height));
    ro.observe(el);
    return () => ro.disconnect();
  }, []);
  useEffect(() => {
    const el = ref.current;
    if (el && scrollTo !== undefined && scrollTo !== null && scrollTo >= 0) {
      const y = scrollTo * rowHeight;
      if (y < el.scrollTop || y + rowHeight > el.scrollTop + el.clientHeight) {
        el.scrollTop = Math.max(0, y - el.clientHeight / 3);
      }
    }
  }, [scrollTo]);
  // Rows prepended above (live tail) keep what is in view in place.
  const prev = useRef({ len: 0, head: undefined });
  useLayoutEffect(() => {
    const el = ref.current;
    const p = prev.current;
    if (el && p.head !== undefined && items.length > p.len) {
      const delta = items.length - p.len;
      if (items[delta] === p.head && el.scrollTop > 0) {
        el.scrollTop += delta * rowHeight;
        setTop(el.scrollTop);
      }
    }
    prev.current = { len: items.length, head: items[0] };
  }, [items]);
  const first = Math.max(0, Math.floor(top / rowHeight) - 10);
  const last = Math.min(items.length, Math.ceil((top + viewH) / rowHeight) + 10);
  const rows = [];
  for (let i = first; i < last; i++) rows.push(renderRow(items[i], i));
  return html`<div class="vlist ${cls}" ref=${ref} style=${{ height: height + "px" }} onScroll=${(e) => setTop(e.currentTarget.scrollTop)}>
    <div style=${{ height: items.length * rowHeight + "px", position: "relative" }}>
      <div style=${{ position: "absolute", top: first * rowHeight + "px", left: 0, right: 0 }}>${rows}</div>
    </div>
  </div>`;
}

export function download(name, text, type) {
  const blob = new Blob([text], { type });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}
export function toCsv(columns, rows) {
  const cell = (v) => {
    if (v === null || v === undefined) return "";
    const s = typeof v === "object" ? JSON.stringify(v) : String(v);
    return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  };
  return [columns.map(cell).join(","), ...rows.map((r) => r.map(cell).join(","))].join("\n") + "\n";
}

/// A small SVG line: `values` scaled to the box.
export function Sparkline({ values, width = 90, height = 22, colour = "var(--accent)" }) {
  const v = (values || []).filter((x) => isFinite(x));
  if (v.length < 2) return html`<svg class="spark" width=${width} height=${height}><line x1="0" x2=${width} y1=${height - 1} y2=${height - 1} stroke="var(--border)" /></svg>`;
  const max = Math.max(...v), min = Math.min(0, ...v);
  const span = max - min || 1;
  const pts = v.map((x, i) => `${(i / (v.length - 1)) * width},${height - 1 - ((x - min) / span) * (height - 2)}`).join(" ");
  return html`<svg class="spark" width=${width} height=${height}><polyline points=${pts} fill="none" stroke=${colour} stroke-width="1.5" /></svg>`;
}

export function Json({ value }) {
  return html`<pre class="json">${JSON.stringify(value, null, 2)}</pre>`;
}
