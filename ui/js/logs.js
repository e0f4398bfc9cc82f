// Logs: search bar (syntax help, history), a histogram whose drag selection
// narrows the range, newest-first rows (only the visible ones rendered), a
// fields sidebar, row details with include/exclude, context and downloads.
import { html, useApi, useState, useEffect, useRef, useMemo, useBus, Status, apiRange, rangeBounds, qs, setParams, sharedParams, Link, fmtTime, parseTime, isoUtc, sevClass, VirtualList, download, toCsv, api } from "./lib.js";
import uPlot from "/vendor/uplot-1.6.32.esm.js";

const HISTORY_KEY = "loupe.logs.history";
function history() {
  try { return JSON.parse(localStorage.getItem(HISTORY_KEY)) || []; } catch { return []; }
}
function remember(q) {
  if (!q) return;
  const h = [q, ...history().filter((x) => x !== q)].slice(0, 30);
  localStorage.setItem(HISTORY_KEY, JSON.stringify(h));
}

const SYNTAX = [
  ["timeout", "word in the body"],
  ['"connection reset"', "phrase, exact ids"],
  ["a OR b, a AND NOT b, (a OR b) c", "boolean logic"],
  ["conn*, service:pay*", "prefix"],
  ["service:cart severity_text:error", "field value"],
  ["severity_number:[17 TO 24]", "numeric range"],
  ["attributes.http.route:cart", "attributes"],
  ["-debug, -service:cart", "exclude"],
];

/// Quotes a value for the search syntax when it is not a plain word.
export function term(field, value, negate) {
  const v = String(value);
  const plain = /^[A-Za-z0-9_.\-]+$/.test(v);
  return `${negate ? "-" : ""}${field}:${plain ? v : '"' + v.replace(/"/g, '\\"') + '"'}`;
}
function addTerm(q, t) {
  return q && q.trim() ? `${q.trim()} ${t}` : t;
}

function Histogram({ data, onSelect, tz }) {
  const ref = useRef(null);
  const plot = useRef(null);
  const cb = useRef(onSelect);
  cb.current = onSelect;
  useEffect(() => {
    const el = ref.current;
    if (!el || !data) return;
    const xs = data.histogram.map((b) => parseTime(b.start) / 1000);
    const ys = data.histogram.map((b) => b.count);
    const width = el.clientWidth || 800;
    const bucket = (data.bucket_ms || 1000) / 1000;
    if (xs.length) xs.push(xs[xs.length - 1] + bucket), ys.push(null);
    const style = getComputedStyle(document.documentElement);
    const opts = {
      width, height: 110,
      legend: { show: false },
      tzDate: (ts) => tz === "local" ? new Date(ts * 1000) : uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      cursor: { drag: { x: true, y: false, setScale: false }, points: { show: false } },
      scales: { x: { time: true } },
      axes: [
        { stroke: style.getPropertyValue("--muted").trim(), grid: { show: false }, ticks: { size: 4 }, values: (u, splits) => {
          const span = (xs[xs.length - 1] - xs[0]) || 1;
          return splits.map((v) => {
            const full = fmtTime(v * 1000, tz, true);
            return span > 2 * 86400 ? full.slice(5, 16) : span < 30 ? full.slice(11, 21) : span < 300 ? full.slice(11, 19) : full.slice(11, 16);
          });
        } },
        { stroke: style.getPropertyValue("--muted").trim(), size: 60, grid: { stroke: style.getPropertyValue("--grid").trim() } },
      ],
      series: [{}, { label: "lines", fill: style.getPropertyValue("--accent").trim() + "99", stroke: style.getPropertyValue("--accent").trim(), paths: uPlot.paths.bars({ size: [0.9, 40], align: 1 }), points: { show: false } }],
      hooks: {
        setSelect: [(u) => {
          if (u.select.width < 3) return;
          const a = u.posToVal(u.select.left, "x"), b = u.posToVal(u.select.left + u.select.width, "x");
          u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
          cb.current(a * 1000, b * 1000);
        }],
      },
    };
    plot.current && plot.current.destroy();
    plot.current = new uPlot(opts, [xs, ys], el);
    const ro = new ResizeObserver(() => plot.current && plot.current.setSize({ width: el.clientWidth, height: 110 }));
    ro.observe(el);
    return () => { ro.disconnect(); plot.current && plot.current.destroy(); plot.current = null; };
  }, [data, tz]);
  return html`<div class="histogram" ref=${ref} title="Drag to zoom into a time range"></div>`;
}

function fieldStats(hits) {
  const counts = {};
  const add = (field, value) => {
    if (value === null || value === undefined || value === "") return;
    const m = (counts[field] ||= new Map());
    m.set(value, (m.get(value) || 0) + 1);
  };
  for (const h of hits) {
    add("service", h.service);
    add("severity_text", h.severity_text);
    for (const [k, v] of Object.entries(h.attributes || {})) add("attributes." + k, v);
  }
  const fields = Object.entries(counts).map(([field, m]) => ({
    field, present: [...m.values()].reduce((a, b) => a + b, 0),
    top: [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, 6),
    distinct: m.size,
  }));
  const fixed = ["service", "severity_text"];
  fields.sort((a, b) => (fixed.includes(b.field) - fixed.includes(a.field)) || b.present - a.present);
  return fields.filter((f) => fixed.includes(f.field) || f.distinct < hits.length * 0.9 || f.distinct <= 6).slice(0, 14);
}

function Fields({ hits, q }) {
  const fields = useMemo(() => fieldStats(hits), [hits]);
  return html`<aside class="fields card">
    <h3>Fields <span class="muted small">in ${hits.length} lines shown</span></h3>
    ${fields.map((f) => html`<div class="field">
      <div class="fname mono">${f.field}</div>
      ${f.top.map(([v, n]) => html`<div class="fval">
        <button class="link mono" title="include" data-include=${f.field + ":" + v} onClick=${() => setParams({ q: addTerm(q, term(f.field, v)) })}>${String(v).slice(0, 40)}</button>
        <span class="count">${n}</span>
        <button class="mini" title="exclude" onClick=${() => setParams({ q: addTerm(q, term(f.field, v, true)) })}>−</button>
      </div>`)}
    </div>`)}
  </aside>`;
}

function Context({ hit, tz }) {
  const inst = hit.resource_attributes && hit.resource_attributes["service.instance.id"];
  const ctx = useApi(`/api/v1/logs/context?${qs({ service: hit.service, time: hit.time, instance: inst, before: 15, after: 15 })}`);
  const line = (l, cls) => html`<div class="ctxline ${cls}" data-testid=${cls === "hit" ? "context-hit" : "context-line"}><span class="mono muted">${fmtTime(l.time, tz, false)}</span> <span class="sev ${sevClass(l.severity_text)}">${l.severity_text}</span> <span class="mono">${l.body}</span></div>`;
  return html`<div class="context"><${Status} state=${ctx} what="context">
    ${ctx.data && html`<div>${ctx.data.before.map((l) => line(l, ""))}${ctx.data.lines.map((l) => line(l, "hit"))}${ctx.data.after.map((l) => line(l, ""))}</div>`}
  <//></div>`;
}

function Detail({ hit, q, close, shared, tz }) {
  const row = (field, key, value, searchable) => html`<tr>
    <td class="mono key">${key}</td>
    <td class="mono val">${field === "trace_id" && value ? html`<${Link} path="/traces" params=${{ ...shared, trace: value }} cls="trace-link">${value}<//>` : String(value)}</td>
    <td class="actions">${searchable && html`<button class="mini" title=${"add " + term(field, value)} onClick=${() => setParams({ q: addTerm(q, term(field, value)) })}>+</button><button class="mini" title=${"add " + term(field, value, true)} onClick=${() => setParams({ q: addTerm(q, term(field, value, true)) })}>−</button>`}</td>
  </tr>`;
  return html`<aside class="detail card" data-testid="log-detail">
    <div class="detail-head"><h3>Log line</h3>
      ${hit.trace_id && html`<${Link} path="/traces" params=${{ ...shared, trace: hit.trace_id, span: hit.span_id || undefined }} cls="trace-link" title="Open the trace">Trace →<//>`}
      <button class="close" title="Close (Esc)" onClick=${close}>×</button></div>
    <pre class="body">${hit.body}</pre>
    <table class="kv">
      ${row("time", "time", fmtTime(hit.time, tz), false)}
      ${row("service", "service", hit.service, true)}
      ${row("severity_text", "severity_text", hit.severity_text, true)}
      ${hit.trace_id && row("trace_id", "trace_id", hit.trace_id, true)}
      ${hit.span_id && row("span_id", "span_id", hit.span_id, false)}
      ${Object.entries(hit.attributes || {}).map(([k, v]) => row("attributes." + k, "attributes." + k, v, true))}
      ${Object.entries(hit.resource_attributes || {}).map(([k, v]) => row("resource." + k, "resource." + k, v, false))}
    </table>
    <h4>Context <span class="muted small">the lines before and after it from the same instance</span></h4>
    <${Context} key=${hit.service + hit.time} hit=${hit} tz=${tz} />
  </aside>`;
}

/// How the URL names a line: SERVICE@TIME.
function lineKey(h) {
  return h.service + "@" + h.time;
}

/// The selected line's panel: the line from the results when it is there,
/// else fetched by its service and time.
function SelectedLine({ line, found, q, close, shared, tz }) {
  const at = line.lastIndexOf("@");
  const url = found ? null : `/api/v1/logs/context?${qs({ service: line.slice(0, at), time: line.slice(at + 1), before: 0, after: 0 })}`;
  const fetched = useApi(url);
  const hit = found ? found.data : fetched.data && fetched.data.lines[0];
  if (hit) return html`<${Detail} hit=${hit} q=${q} close=${close} shared=${shared} tz=${tz} />`;
  return html`<aside class="detail card" data-testid="log-detail"><div class="detail-head"><h3>Log line</h3><button class="close" title="Close (Esc)" onClick=${close}>×</button></div>
    <${Status} state=${fetched} what="the line" /></aside>`;
}

function Patterns({ range, shared }) {
  const p = useApi(`/api/v1/logs/patterns?${qs(range)}`);
  const list = p.data ? p.data.patterns : [];
  return html`<section class="card"><${Status} state=${p} what="patterns" empty=${p.data && list.length === 0 ? "No log lines in this window." : null}>
    <table class="grid"><thead><tr><th>trend</th><th>service</th><th>sev</th><th>template</th><th class="num">count</th><th class="num">before</th></tr></thead>
    <tbody>${list.slice(0, 300).map((x) => html`<tr><td><span class="badge trend-${x.trend}">${x.trend}</span></td><td>${x.service}</td><td><span class="sev ${sevClass(x.severity_text)}">${x.severity_text}</span></td><td class="mono wrap" title=${x.example}>${x.template}</td><td class="num">${x.count}</td><td class="num">${x.previous_count}</td></tr>`)}</tbody></table>
  <//></section>`;
}

export function LogsPage({ params }) {
  const q = params.q || "";
  const tz = params.tz;
  const range = apiRange(params);
  const shared = sharedParams(params);
  const tab = params.tab === "patterns" ? "patterns" : "lines";
  const [draft, setDraft] = useState(q);
  const [help, setHelp] = useState(false);
  useEffect(() => setDraft(q), [q]);
  const limit = params.limit === "10000" ? 10000 : 1000;
  const url = tab === "lines" ? `/api/v1/logs/search?${qs({ q, ...range, limit })}` : null;
  const res = useApi(url);
  useEffect(() => { if (res.data) remember(q); }, [res.data]);
  const run = () => { if (draft === q) res.reload(); else setParams({ q: draft }); };
  useBus("run", run);
  useBus("escape", () => { if (params.line) setParams({ line: undefined }); setHelp(false); });
  const live = params.live === "1";
  const [liveHits, setLiveHits] = useState([]);
  const [liveState, setLiveState] = useState("");
  useEffect(() => {
    setLiveHits([]);
    if (!live || tab !== "lines") { setLiveState(""); return; }
    const es = new EventSource(`/api/v1/logs/tail?${qs({ q })}`);
    setLiveState("connecting");
    es.addEventListener("open", () => setLiveState("live"));
    es.addEventListener("lines", (e) => {
      const lines = JSON.parse(e.data);
      if (lines.length) setLiveHits((old) => [...lines.reverse(), ...old].slice(0, 10000));
    });
    es.addEventListener("error", () => setLiveState("reconnecting"));
    return () => es.close();
  }, [live, q, tab]);
  const searched = res.data ? res.data.hits : [];
  const hits = useMemo(() => (liveHits.length ? [...liveHits, ...searched] : searched), [liveHits, searched]);
  // The selected line is in the URL as SERVICE@TIME: a link or back/forward
  // restores it, from the results or else straight from /logs/context.
  const sel = params.line ? hits.findIndex((h) => lineKey(h) === params.line) : -1;
  const setSel = (i) => setParams({ line: i >= 0 ? lineKey(hits[i]) : undefined });
  const selected = sel >= 0 ? { data: hits[sel] } : null;
  const narrow = (a, b) => {
    // Within the current range: the last bucket may reach past its end.
    const [r0, r1] = rangeBounds(params);
    a = Math.max(a, r0); b = Math.min(b, r1);
    if (b > a) setParams({ from: isoUtc(a), to: isoUtc(b), range: undefined });
  };
  const base = `loupe-logs-${new Date().toISOString().replace(/[:.]/g, "-")}`;
  const csv = () => download(base + ".csv", toCsv(["time", "service", "severity_text", "body", "trace_id", "span_id", "attributes"], hits.map((h) => [h.time, h.service, h.severity_text, h.body, h.trace_id, h.span_id, h.attributes])), "text/csv");
  const json = () => download(base + ".json", JSON.stringify(hits, null, 1), "application/json");
  return html`<div class="page logs">
    <div class="querybar">
      <input data-search class="search" placeholder="Search logs: timeout service:payment -severity_text:info   (/ to focus, Enter to run)" value=${draft} list="log-history"
        onInput=${(e) => setDraft(e.target.value)} onKeyDown=${(e) => { if (e.key === "Enter" && !e.ctrlKey && !e.metaKey) run(); }} />
      <datalist id="log-history">${history().map((h) => html`<option value=${h} />`)}</datalist>
      <button class="primary" onClick=${run} data-testid="run">Search</button>
      <button onClick=${() => setHelp(!help)} title="Search syntax">Syntax</button>
      <div class="seg tabs">
        <button class=${tab === "lines" ? "on" : ""} onClick=${() => setParams({ tab: undefined })}>Lines</button>
        <button class=${tab === "patterns" ? "on" : ""} onClick=${() => setParams({ tab: "patterns" })}>Patterns</button>
      </div>
    </div>
    ${help && html`<div class="card syntax"><table class="plain">${SYNTAX.map(([a, b]) => html`<tr><td><code>${a}</code></td><td>${b}</td></tr>`)}</table>
      <div class="muted small">Recent: ${history().slice(0, 8).map((h) => html`<button class="link mono" onClick=${() => setParams({ q: h })}>${h}</button> `)}</div></div>`}
    ${tab === "patterns" ? html`<${Patterns} range=${range} shared=${shared} />` : html`
    <section class="card">
      <div class="resultbar">
        <span data-testid="total">${res.data ? html`<b>${res.data.total.toLocaleString("en-US")}</b> lines${res.data.total > searched.length ? html`, newest ${searched.length.toLocaleString("en-US")} shown` : ""} · ${Math.round(res.data.took_ms)} ms` : res.loading ? "Searching…" : ""}</span>
        ${res.data && res.data.total > searched.length && limit < 10000 && html`<button class="link" onClick=${() => setParams({ limit: "10000" })} data-testid="more">show up to 10,000</button>`}
        ${live && html`<span class="live-badge" data-testid="live">● ${liveState}${liveHits.length ? ` · ${liveHits.length} new` : ""}</span>`}
        <span class="spacer"></span>
        <button class=${live ? "on" : ""} title="Stream new matching lines in (live tail)" onClick=${() => setParams({ live: live ? undefined : "1" })} data-testid="live-toggle">${live ? "Stop live" : "Live tail"}</button>
        <button disabled=${!hits.length} onClick=${csv}>CSV</button>
        <button disabled=${!hits.length} onClick=${json}>JSON</button>
      </div>
      ${res.data && html`<${Histogram} data=${res.data} onSelect=${narrow} tz=${tz} />`}
    </section>
    <div class="logs-body ${hits.length === 0 ? "no-fields" : params.line ? "with-detail" : ""}">
      ${hits.length > 0 && html`<${Fields} hits=${hits} q=${q} />`}
      <section class="card lines">
        <${Status} state=${res} what="logs" empty=${res.data && hits.length === 0 ? "No log lines match this search in the selected window." : null}>
          <${VirtualList} items=${hits} rowHeight=${24} height=${560} cls="logrows" scrollTo=${sel} render=${(h, i) => html`<div key=${i} class="logrow ${i === sel ? "sel" : ""} lvl-${sevClass(h.severity_text)}" onClick=${() => setSel(i === sel ? -1 : i)}>
            <span class="t mono">${fmtTime(h.time, tz)}</span>
            <span class="sev ${sevClass(h.severity_text)}">${h.severity_text || "–"}</span>
            <span class="svc">${h.service}</span>
            <span class="b mono">${h.body}</span>
          </div>`} />
        <//>
      </section>
      ${params.line && (res.data || liveHits.length > 0) ? html`<${SelectedLine} line=${params.line} found=${selected} q=${q} close=${() => setSel(-1)} shared=${shared} tz=${tz} />` : null}
    </div>`}
  </div>`;
}
