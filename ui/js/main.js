// The app shell: navigation, the shared time range, theme, keyboard.
import { html, render, useState, useEffect, useRoute, Link, RANGES, navigate, setParams, sharedParams, emit, useBus, fmtTime, isoUtc, parseTime, rangeBounds } from "./lib.js";
import { ProblemsPage } from "./problems.js";
import { LogsPage } from "./logs.js";
import { TracesPage } from "./traces.js";
import { ServicesPage } from "./services.js";
import { SqlPage } from "./sql.js";
import { CapacityPage } from "./capacity.js";
import { AlertsPage } from "./alerts.js";

const PAGES = [
  { path: "/", name: "Problems", page: ProblemsPage },
  { path: "/logs", name: "Logs", page: LogsPage },
  { path: "/traces", name: "Traces", page: TracesPage },
  { path: "/services", name: "Services", page: ServicesPage },
  { path: "/sql", name: "SQL", page: SqlPage },
  { path: "/alerts", name: "Alerts", page: AlertsPage },
  { path: "/capacity", name: "Capacity", page: CapacityPage },
];

const SHORTCUTS = [
  ["/", "focus the search or query box"],
  ["Ctrl/⌘ + Enter", "run the search or query"],
  ["Esc", "close the open panel"],
  ["?", "show this list"],
  ["n / p", "next / previous span on the critical path (trace view)"],
];

function typing(e) {
  const t = e.target;
  return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
}

function toLocalInput(ms, tz) {
  // datetime-local value in the chosen zone.
  const s = fmtTime(ms, tz, true);
  return s.slice(0, 16).replace(" ", "T");
}
function fromLocalInput(v, tz) {
  if (!v) return null;
  if (tz === "local") return new Date(v).getTime();
  return Date.parse(v + ":00Z");
}

function TimePicker({ params }) {
  const [open, setOpen] = useState(false);
  const tz = params.tz === "local" ? "local" : "utc";
  const [b0, b1] = rangeBounds(params);
  const [from, setFrom] = useState("");
  const [to, setTo] = useState("");
  useEffect(() => { setFrom(toLocalInput(b0, tz)); setTo(toLocalInput(b1, tz)); }, [open, params.from, params.to, tz]);
  useBus("escape", () => setOpen(false));
  const absolute = params.from && params.to;
  const label = absolute ? `${fmtTime(parseTime(params.from), tz)} → ${fmtTime(parseTime(params.to), tz)}` : `Last ${RANGES.includes(params.range) ? params.range : "1h"}`;
  const apply = () => {
    const f = fromLocalInput(from, tz), t = fromLocalInput(to, tz);
    if (!isFinite(f) || !isFinite(t) || f >= t) return;
    setParams({ from: isoUtc(f), to: isoUtc(t), range: undefined });
    setOpen(false);
  };
  return html`<div class="timepicker">
    <div class="seg">
      ${RANGES.map((r) => html`<button class=${!absolute && (params.range || "1h") === r ? "on" : ""} onClick=${() => setParams({ range: r, from: undefined, to: undefined })}>${r}</button>`)}
      <button class=${absolute ? "on" : ""} onClick=${() => setOpen(!open)} title="Absolute range" data-testid="absolute">${absolute ? label : "Absolute…"}</button>
    </div>
    <button class="tz" title="Show times in UTC or local time" onClick=${() => { localStorage.setItem("loupe.tz", tz === "utc" ? "local" : "utc"); setParams({ tz: tz === "utc" ? "local" : "utc" }, true); }}>${tz === "utc" ? "UTC" : "Local"}</button>
    ${open && html`<div class="popover">
      <label>From <input type="datetime-local" value=${from} onInput=${(e) => setFrom(e.target.value)} /></label>
      <label>To <input type="datetime-local" value=${to} onInput=${(e) => setTo(e.target.value)} /></label>
      <div class="row"><button class="primary" onClick=${apply}>Apply</button><button onClick=${() => setOpen(false)}>Cancel</button></div>
      <div class="hint">${tz === "utc" ? "Times are UTC" : "Times are local"}</div>
    </div>`}
  </div>`;
}

function ThemeToggle() {
  const [theme, setTheme] = useState(localStorage.getItem("loupe.theme") || "auto");
  useEffect(() => {
    if (theme === "auto") { delete document.documentElement.dataset.theme; localStorage.removeItem("loupe.theme"); }
    else { document.documentElement.dataset.theme = theme; localStorage.setItem("loupe.theme", theme); }
  }, [theme]);
  const next = { auto: "light", light: "dark", dark: "auto" }[theme];
  return html`<button class="theme" title=${"Theme: " + theme + " (click for " + next + ")"} onClick=${() => setTheme(next)}>${theme === "dark" ? "☾" : theme === "light" ? "☀" : "◐"}</button>`;
}

function Help({ close }) {
  return html`<div class="modal-bg" onClick=${close}><div class="modal" onClick=${(e) => e.stopPropagation()} role="dialog" aria-label="Keyboard shortcuts">
    <h2>Keyboard shortcuts</h2>
    <table class="plain">${SHORTCUTS.map(([k, d]) => html`<tr><td><kbd>${k}</kbd></td><td>${d}</td></tr>`)}</table>
    <button onClick=${close}>Close</button>
  </div></div>`;
}

function App() {
  const route = useRoute();
  const [help, setHelp] = useState(false);
  useEffect(() => {
    const key = (e) => {
      if (e.key === "Escape") { setHelp(false); emit("escape"); return; }
      if ((e.ctrlKey || e.metaKey) && e.key === "Enter") { e.preventDefault(); emit("run"); return; }
      if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
      if (e.key === "/") {
        const el = document.querySelector("[data-search]");
        if (el) { e.preventDefault(); el.focus(); el.select && el.select(); }
      } else if (e.key === "?") setHelp((h) => !h);
      else emit("key", e.key);
    };
    window.addEventListener("keydown", key);
    return () => window.removeEventListener("keydown", key);
  }, []);
  // Default time zone: the remembered one.
  useEffect(() => {
    if (!route.params.tz && localStorage.getItem("loupe.tz") === "local") setParams({ tz: "local" }, true);
  }, []);
  const current = PAGES.find((p) => p.path === route.path) || (route.path.startsWith("/traces") ? PAGES[2] : null);
  const Page = current ? current.page : null;
  useEffect(() => { document.title = (current ? current.name + " · " : "") + "Loupe"; }, [current]);
  const shared = sharedParams(route.params);
  return html`<div class="shell">
    <header>
      <a class="logo" href="/" onClick=${(e) => { e.preventDefault(); navigate("/", shared); }}><svg width="18" height="18" viewBox="0 0 32 32" aria-hidden="true"><circle cx="13" cy="13" r="9" fill="none" stroke="var(--accent)" stroke-width="4"/><path d="M20 20l9 9" stroke="var(--accent)" stroke-width="4" stroke-linecap="round"/></svg> Loupe</a>
      <nav>${PAGES.map((p) => html`<${Link} path=${p.path} params=${shared} cls=${current === p ? "active" : ""}>${p.name}<//>`)}</nav>
      <div class="spacer"></div>
      <${TimePicker} params=${route.params} />
      <${ThemeToggle} />
      <button class="help" title="Keyboard shortcuts (?)" onClick=${() => setHelp(true)}>?</button>
    </header>
    <main>
      ${Page ? html`<${Page} params=${route.params} path=${route.path} />` : html`<div class="state empty">No page at ${route.path}. <${Link} path="/" params=${shared}>Go to Problems<//></div>`}
    </main>
    ${help && html`<${Help} close=${() => setHelp(false)} />`}
  </div>`;
}

render(html`<${App} />`, document.getElementById("app"));
