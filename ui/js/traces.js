// Traces: a search form, results as a list and a duration scatter; the
// trace view (waterfall, collapsible subtrees, zoom, find, critical path,
// span details, the trace's logs).
import { html, useApi, useState, useEffect, useMemo, useRef, useBus, Status, apiRange, qs, setParams, sharedParams, Link, fmtTime, fmtDurNs, parseTime, serviceColour, sevClass, VirtualList, Json } from "./lib.js";

const FORM = ["service", "operation", "min_duration", "max_duration", "status", "attr", "tq"];

function SearchForm({ params }) {
  const [f, setF] = useState({});
  useEffect(() => setF(Object.fromEntries(FORM.map((k) => [k, params[k] || ""]))), [FORM.map((k) => params[k]).join("\u0000")]);
  const set = (k) => (e) => setF({ ...f, [k]: e.target.value });
  const submit = (e) => { e && e.preventDefault(); setParams({ ...f, trace: undefined, span: undefined }); };
  useBus("run", submit);
  const input = (k, ph, w) => html`<label>${k.replace("_", " ")}<input name=${k} value=${f[k] || ""} placeholder=${ph} style=${{ width: w }} onInput=${set(k)} /></label>`;
  return html`<form class="card searchform" onSubmit=${submit}>
    ${input("service", "checkout", "8em")}
    ${input("operation", "POST /api/checkout", "11em")}
    ${input("min_duration", "100ms", "6em")}
    ${input("max_duration", "2s", "6em")}
    <label>status<select name="status" value=${f.status || ""} onChange=${set("status")}><option value="">any</option><option value="error">error</option><option value="ok">ok</option><option value="unset">unset</option></select></label>
    ${input("attr", "http.route=/api/cart", "11em")}
    <label>log text<input name="tq" data-search value=${f.tq || ""} placeholder="timeout" style=${{ width: "9em" }} onInput=${set("tq")} /></label>
    <button class="primary" type="submit">Find traces</button>
  </form>`;
}

function Scatter({ traces, shared, tz }) {
  const W = 1000, H = 150, P = 36;
  if (!traces.length) return null;
  const xs = traces.map((t) => parseTime(t.start_time)), ys = traces.map((t) => t.duration_ns);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || x0 + 1, y1 = Math.max(...ys) || 1;
  const sx = (x) => P + ((x - x0) / (x1 - x0 || 1)) * (W - P - 8), sy = (y) => H - 16 - (y / y1) * (H - 24);
  return html`<svg class="scatter" viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" role="img" aria-label="duration over time">
    <line x1=${P} x2=${W} y1=${H - 16} y2=${H - 16} stroke="var(--border)" />
    <text x="2" y="12" class="axis">${fmtDurNs(y1)}</text><text x="2" y=${H - 18} class="axis">0</text>
    <text x=${P} y=${H - 2} class="axis">${fmtTime(x0, tz, false)}</text><text x=${W - 90} y=${H - 2} class="axis">${fmtTime(x1, tz, false)}</text>
    ${traces.map((t, i) => html`<circle cx=${sx(xs[i])} cy=${sy(ys[i])} r="3.5" class=${t.error_count ? "dot err" : "dot"} onClick=${() => setParams({ trace: t.trace_id, span: undefined, zoom: undefined, find: undefined, fold: undefined })}><title>${t.root_service} ${t.root_operation} ${fmtDurNs(t.duration_ns)}</title></circle>`)}
  </svg>`;
}

function TraceList({ params }) {
  const range = apiRange(params);
  const shared = sharedParams(params);
  const p = { ...range, service: params.service, operation: params.operation, min_duration: params.min_duration, max_duration: params.max_duration, status: params.status, q: params.tq, limit: 200 };
  if (params.attr && params.attr.includes("=")) {
    const [k, ...v] = params.attr.split("=");
    p["attr." + k.trim()] = v.join("=").trim();
  }
  const res = useApi(`/api/v1/traces?${qs(p)}`);
  const traces = res.data ? res.data.traces : [];
  return html`<section class="card">
    <${Status} state=${res} what="traces" empty=${res.data && !traces.length ? "No traces match in the selected window." : null}>
      <${Scatter} traces=${traces} shared=${shared} tz=${params.tz} />
      <table class="grid tracelist"><thead><tr><th>start</th><th>root</th><th>services</th><th class="num">spans</th><th class="num">errors</th><th class="num">duration</th></tr></thead>
      <tbody>${traces.map((t) => html`<tr class="clickable" data-trace=${t.trace_id} onClick=${() => setParams({ trace: t.trace_id, span: undefined, zoom: undefined, find: undefined, fold: undefined })}>
        <td class="mono">${fmtTime(t.start_time, params.tz)}</td>
        <td><span class="swatch" style=${{ background: serviceColour(t.root_service) }}></span>${t.root_service} <b>${t.root_operation}</b></td>
        <td>${t.services.map((s) => html`<span class="chip" style=${{ borderColor: serviceColour(s) }}>${s}</span>`)}</td>
        <td class="num">${t.span_count}</td><td class="num ${t.error_count ? "bad" : ""}">${t.error_count}</td><td class="num">${fmtDurNs(t.duration_ns)}</td>
      </tr>`)}</tbody></table>
    <//>
  </section>`;
}

function spanText(s) {
  return (s.service + " " + s.name + " " + s.span_id + " " + JSON.stringify(s.attributes || {}) + " " + (s.status_message || "")).toLowerCase();
}

function SpanDetail({ span, close, tz, trace }) {
  const kv = (obj) => html`<table class="kv">${Object.entries(obj || {}).map(([k, v]) => html`<tr><td class="mono key">${k}</td><td class="mono val">${typeof v === "object" ? JSON.stringify(v) : String(v)}</td></tr>`)}</table>`;
  const events = Array.isArray(span.events) ? span.events : [];
  const links = Array.isArray(span.links) ? span.links : [];
  return html`<div class="card spandetail" data-testid="span-detail">
    <div class="detail-head"><h3><span class="swatch" style=${{ background: serviceColour(span.service) }}></span>${span.service} · ${span.name}</h3><button class="close" title="Close (Esc)" onClick=${close}>×</button></div>
    <table class="kv">
      <tr><td class="key">span_id</td><td class="mono val">${span.span_id}</td></tr>
      <tr><td class="key">kind / status</td><td class="val">${span.kind} · <span class=${span.status_code === "error" ? "bad" : ""}>${span.status_code}</span>${span.status_message ? " — " + span.status_message : ""}</td></tr>
      <tr><td class="key">duration</td><td class="val">${fmtDurNs(span.duration_ns)} (self ${fmtDurNs(span.self_time_ns)}, on critical path ${fmtDurNs(span.critical_path_ns)})</td></tr>
      <tr><td class="key">start</td><td class="mono val">${fmtTime(span.start_time, tz)} (+${fmtDurNs(span.offset_ns)})</td></tr>
    </table>
    <h4>Attributes</h4>${kv(span.attributes)}
    ${events.length > 0 && html`<h4>Events</h4>${events.map((e) => html`<div class="event">
      <div><b>${e.name}</b> <span class="muted mono">${e.time ? fmtTime(e.time, tz) : ""}</span></div>
      ${e.attributes && e.attributes["exception.type"] && html`<div class="bad mono">${e.attributes["exception.type"]}: ${e.attributes["exception.message"]}</div>`}
      ${e.attributes && e.attributes["exception.stacktrace"] ? html`<pre class="stack">${e.attributes["exception.stacktrace"]}</pre>` : html`${kv(e.attributes)}`}
    </div>`)}`}
    ${links.length > 0 && html`<h4>Links</h4>${links.map((l) => html`<div class="mono"><${Link} path="/traces" params=${{ trace: l.trace_id }}>${l.trace_id}<//> ${l.span_id}</div>`)}`}
    <h4>Resource</h4>${kv(span.resource_attributes)}
  </div>`;
}

function TraceView({ id, params }) {
  const tz = params.tz;
  const shared = sharedParams(params);
  const res = useApi(`/api/v1/traces/${encodeURIComponent(id)}`);
  const t = res.data;
  // Collapsed subtrees are in the URL: fold=SPAN_ID,SPAN_ID.
  const collapsed = useMemo(() => new Set((params.fold || "").split(",").filter(Boolean)), [params.fold]);
  const foldParam = (set) => (set.size ? [...set].join(",") : undefined);
  const setCollapsed = (set) => setParams({ fold: foldParam(set) }, true);
  const [find, setFind] = useState(params.find || "");
  useEffect(() => setFind(params.find || ""), [params.find]);
  const [matchIdx, setMatchIdx] = useState(0);
  // The zoomed part of the time axis is in the URL: zoom=FROM,TO (fractions).
  const zoom = useMemo(() => {
    const z = (params.zoom || "").split(",").map(Number);
    return z.length === 2 && z[0] >= 0 && z[1] <= 1 && z[0] < z[1] ? z : [0, 1];
  }, [params.zoom]);
  const setZoom = ([a, b]) => setParams({ zoom: a <= 0 && b >= 1 ? undefined : `${+a.toFixed(5)},${+b.toFixed(5)}` });
  const [drag, setDrag] = useState(null);
  const ruler = useRef(null);
  const selected = params.span || null;

  const model = useMemo(() => {
    if (!t) return null;
    const byId = new Map(t.spans.map((s) => [s.span_id, s]));
    const children = new Map();
    const roots = [];
    for (const s of t.spans) {
      if (s.parent_span_id && byId.has(s.parent_span_id) && s.parent_span_id !== s.span_id) {
        if (!children.has(s.parent_span_id)) children.set(s.parent_span_id, []);
        children.get(s.parent_span_id).push(s);
      } else roots.push(s);
    }
    for (const c of children.values()) c.sort((a, b) => a.offset_ns - b.offset_ns);
    roots.sort((a, b) => a.offset_ns - b.offset_ns);
    const crit = new Map();
    for (const seg of t.critical_path || []) {
      if (!crit.has(seg.span_id)) crit.set(seg.span_id, []);
      crit.get(seg.span_id).push(seg);
    }
    const critOrder = [...crit.keys()];
    return { byId, children, roots, crit, critOrder };
  }, [t]);

  const rows = useMemo(() => {
    if (!model) return [];
    const out = [];
    const seen = new Set();
    const walk = (s, depth) => {
      if (seen.has(s.span_id)) return;
      seen.add(s.span_id);
      out.push({ s, depth });
      if (collapsed.has(s.span_id)) return;
      for (const c of model.children.get(s.span_id) || []) walk(c, depth + 1);
    };
    for (const r of model.roots) walk(r, 0);
    return out;
  }, [model, collapsed]);

  const needle = find.trim().toLowerCase();
  const matches = useMemo(() => (model && needle ? t.spans.filter((s) => spanText(s).includes(needle)).map((s) => s.span_id) : []), [model, needle]);
  const matchSet = useMemo(() => new Set(matches), [matches]);

  // Make a span visible: expand its ancestors, select it.
  const reveal = (spanId) => {
    if (!model) return;
    const open = new Set(collapsed);
    let p = model.byId.get(spanId);
    while (p && p.parent_span_id && model.byId.has(p.parent_span_id)) { open.delete(p.parent_span_id); p = model.byId.get(p.parent_span_id); }
    setParams({ fold: foldParam(open), span: spanId }, true);
  };
  const stepCrit = (d) => {
    if (!model || !model.critOrder.length) return;
    const i = model.critOrder.indexOf(selected);
    const n = model.critOrder.length;
    reveal(model.critOrder[i < 0 ? (d > 0 ? 0 : n - 1) : (i + d + n) % n]);
  };
  const stepFind = (d) => {
    if (!matches.length) return;
    const i = (matchIdx + d + matches.length) % matches.length;
    setMatchIdx(i);
    reveal(matches[i]);
  };
  useEffect(() => { setMatchIdx(0); if (matches.length) reveal(matches[0]); }, [needle, model]);
  useBus("escape", () => { if (selected) setParams({ span: undefined }, true); });
  useBus("key", (k) => { if (k === "n") stepCrit(1); if (k === "p") stepCrit(-1); });

  if (!t) return html`<section class="card"><${Status} state=${res} what=${"trace " + id} />
    ${res.error && html`<${Link} path="/traces" params=${shared}>← search traces<//>`}</section>`;
  const total = t.duration_ns || 1;
  const [z0, z1] = zoom;
  const pos = (ns) => ((ns / total - z0) / (z1 - z0)) * 100;
  const selIdx = rows.findIndex((r) => r.s.span_id === selected);
  const span = selected && model.byId.get(selected);
  const toggle = (id, e) => {
    e.stopPropagation();
    const c = new Set(collapsed);
    c.has(id) ? c.delete(id) : c.add(id);
    setCollapsed(c);
  };
  const rulerFrac = (e) => {
    const r = ruler.current.getBoundingClientRect();
    return Math.min(1, Math.max(0, (e.clientX - r.left) / r.width));
  };
  const endDrag = (e) => {
    if (!drag) return;
    const b = rulerFrac(e);
    const a = drag;
    setDrag(null);
    if (Math.abs(b - a) < 0.01) return;
    const lo = z0 + Math.min(a, b) * (z1 - z0), hi = z0 + Math.max(a, b) * (z1 - z0);
    setZoom([lo, hi]);
  };
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => ({ f, ns: (z0 + f * (z1 - z0)) * total }));
  const critIdx = model.critOrder.indexOf(selected);
  // A trace with many logs lists them one line each, only those in view.
  const logLine = (l, oneRow) => html`<div class="ctxline ${l.span_id === selected ? "hit" : ""}" title=${oneRow ? l.body : undefined} onClick=${() => l.span_id && model.byId.has(l.span_id) && reveal(l.span_id)}>
    <span class="mono muted">${fmtTime(l.time, tz, false)}</span> <span class="sev ${sevClass(l.severity_text)}">${l.severity_text}</span> <span class="svc">${l.service}</span> <span class="mono">${l.body}</span></div>`;
  return html`<div class="traceview">
    <section class="card tracehead">
      <div class="row">
        <h2><span class="swatch" style=${{ background: serviceColour(t.root_service) }}></span>${t.root_service} · ${t.root_operation}</h2>
        <span class="spacer"></span>
        <${Link} path="/traces" params=${{ ...shared, ...Object.fromEntries(FORM.map((k) => [k, params[k]])) }}>← back to results<//>
      </div>
      <div class="muted">
        <span class="mono">${id}</span> · ${fmtDurNs(t.duration_ns)} · ${t.span_count} spans · <span class=${t.error_count ? "bad" : ""}>${t.error_count} errors</span> · ${t.services.map((s) => html`<span class="chip" style=${{ borderColor: serviceColour(s) }}>${s}</span>`)}
      </div>
      <div class="row tools">
        <input class="find" data-search placeholder="Find in trace (/)" value=${find} onInput=${(e) => { setFind(e.target.value); setParams({ find: e.target.value || undefined }, true); }} onKeyDown=${(e) => { if (e.key === "Enter") stepFind(e.shiftKey ? -1 : 1); }} />
        <span class="muted small" data-testid="find-count">${needle ? (matches.length ? `${matchIdx + 1} of ${matches.length}` : "no match") : ""}</span>
        <button onClick=${() => stepFind(-1)} disabled=${!matches.length}>↑</button><button onClick=${() => stepFind(1)} disabled=${!matches.length}>↓</button>
        <span class="sep"></span>
        <span class="crit-legend">critical path${critIdx >= 0 ? ` ${critIdx + 1}/${model.critOrder.length}` : ` (${model.critOrder.length} spans)`}</span>
        <button title="previous span on the critical path (p)" onClick=${() => stepCrit(-1)}>◀ prev</button><button title="next span on the critical path (n)" onClick=${() => stepCrit(1)} data-testid="crit-next">next ▶</button>
        <span class="sep"></span>
        <button onClick=${() => setCollapsed(new Set())}>Expand all</button>
        ${(z0 > 0 || z1 < 1) && html`<button onClick=${() => setZoom([0, 1])}>Reset zoom</button>`}
      </div>
    </section>
    <div class="trace-body ${span ? "with-detail" : ""}">
      <section class="card waterfall">
        <div class="wf-head">
          <div class="wf-name">service · operation</div>
          <div class="wf-ruler" ref=${ruler} title="Drag to zoom the time axis" onMouseDown=${(e) => setDrag(rulerFrac(e))} onMouseUp=${endDrag} onMouseLeave=${() => setDrag(null)}>
            ${ticks.map((k) => html`<span class="tick" style=${{ left: k.f * 100 + "%" }}>${fmtDurNs(k.ns)}</span>`)}
          </div>
        </div>
        <${VirtualList} items=${rows} rowHeight=${24} height=${Math.min(640, Math.max(120, rows.length * 24 + 4))} scrollTo=${selIdx} cls="wf-rows" render=${({ s, depth }, i) => {
          const kids = model.children.get(s.span_id);
          const segs = model.crit.get(s.span_id) || [];
          const left = pos(s.offset_ns), width = Math.max(0.15, pos(s.offset_ns + s.duration_ns) - left);
          return html`<div key=${s.span_id} data-span=${s.span_id} class="wf-row ${s.span_id === selected ? "sel" : ""} ${matchSet.has(s.span_id) ? "match" : ""} ${segs.length ? "crit" : ""}" onClick=${() => setParams({ span: s.span_id === selected ? undefined : s.span_id }, true)}>
            <div class="wf-name" style=${{ paddingLeft: 4 + depth * 14 + "px" }}>
              ${kids ? html`<button class="twisty" onClick=${(e) => toggle(s.span_id, e)} title=${collapsed.has(s.span_id) ? "expand" : "collapse"}>${collapsed.has(s.span_id) ? "▸" : "▾"}</button>` : html`<span class="twisty"></span>`}
              <span class="swatch" style=${{ background: serviceColour(s.service) }}></span>
              <span class="svc">${s.service}</span> <span class=${s.status_code === "error" ? "bad" : ""}>${s.name}</span>
              ${collapsed.has(s.span_id) && kids ? html` <span class="muted small">(+${kids.length})</span>` : ""}
            </div>
            <div class="wf-track">
              <div class="bar ${s.status_code === "error" ? "err" : ""}" style=${{ left: left + "%", width: width + "%", background: serviceColour(s.service) }}></div>
              ${segs.map((g) => html`<div class="critseg" style=${{ left: pos(g.offset_ns) + "%", width: Math.max(0.1, pos(g.offset_ns + g.duration_ns) - pos(g.offset_ns)) + "%" }}></div>`)}
              <span class="dur" style=${{ left: Math.min(92, Math.max(0, left + width)) + "%" }}>${fmtDurNs(s.duration_ns)}</span>
            </div>
          </div>`;
        }} />
      </section>
      <div class="trace-side">
        ${span && html`<${SpanDetail} span=${span} tz=${tz} trace=${t} close=${() => setParams({ span: undefined }, true)} />`}
        <section class="card tracelogs">
          <h3>Logs of this trace <span class="muted small">${t.logs.length}</span></h3>
          ${t.logs.length === 0 ? html`<div class="state empty">This trace has no logs.</div>` :
            t.logs.length > 300 ? html`<${VirtualList} items=${t.logs} rowHeight=${22} height=${600} cls="onerow" render=${(l) => logLine(l, true)} />` : t.logs.map((l) => logLine(l, false))}
        </section>
      </div>
    </div>
  </div>`;
}

export function TracesPage({ params }) {
  return html`<div class="page traces">
    ${params.trace ? html`<${TraceView} key=${params.trace} id=${params.trace} params=${params} />` : html`<${SearchForm} params=${params} /><${TraceList} params=${params} />`}
  </div>`;
}
