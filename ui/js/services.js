// Services: RED per service with sparklines; a service page with RED
// charts over time, per operation and per instance, version or region;
// the service graph as a node-link diagram.
import { html, useApi, useState, useEffect, useRef, useBus, Status, apiRange, rangeBounds, qs, setParams, sharedParams, Link, fmtMs, fmtPct, fmtNum, Sparkline, serviceColour, parseTime, fmtTime } from "./lib.js";
import uPlot from "/vendor/uplot-1.6.32.esm.js";

const SERIES_COLOURS = ["#2f6fdf", "#d6333b", "#d08700", "#59a14f", "#b07aa1", "#76b7b2", "#9c755f", "#ff9da7", "#edc948", "#86bcb6"];

/// A time chart of one or more lines: `series` is [{label, values, colour}]
/// over the shared `xs` (epoch seconds).
function TimeChart({ title, xs, series, fmt, tz, testid, legend = false }) {
  const ref = useRef(null);
  useEffect(() => {
    if (!ref.current || xs.length < 2) return;
    const muted = getComputedStyle(document.documentElement).getPropertyValue("--muted").trim();
    const span = xs[xs.length - 1] - xs[0];
    const u = new uPlot({
      width: ref.current.clientWidth || 380, height: 150,
      legend: { show: legend, live: false },
      cursor: { points: { show: false } },
      axes: [{ stroke: muted, values: (u, sp) => sp.map((v) => fmtTime(v * 1000, tz, false).slice(0, span < 3600 ? 8 : 5)) }, { stroke: muted, size: 80, values: (u, sp) => sp.map((v) => fmt(v)) }],
      series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.colour, width: 1.5, spanGaps: false, value: (u, v) => (v === null ? "–" : fmt(v)) }))],
    }, [xs, ...series.map((s) => s.values)], ref.current);
    const ro = new ResizeObserver(() => ref.current && u.setSize({ width: ref.current.clientWidth, height: 150 }));
    ro.observe(ref.current);
    return () => { ro.disconnect(); u.destroy(); };
  }, [xs, series, tz]);
  return html`<div class="redchart" data-testid=${testid}><div class="muted small">${title}</div>${xs.length < 2 ? html`<div class="state empty">Too few points.</div>` : html`<div ref=${ref}></div>`}</div>`;
}

/// Series on one time axis: the union of their times, gaps as null.
/// The last bucket of a relative range is still filling: left out.
function align(lists, relative) {
  const times = [...new Set(lists.flatMap((l) => l.map((p) => parseTime(p.time) / 1000)))].sort((a, b) => a - b);
  if (relative && times.length > 2) times.pop();
  const index = new Map(times.map((t, i) => [t, i]));
  const pick = (l, f) => {
    const out = new Array(times.length).fill(null);
    for (const p of l) { const i = index.get(parseTime(p.time) / 1000); if (i !== undefined) out[i] = f(p); }
    return out;
  };
  return { xs: times, pick };
}

const BY = [["operation", "operation"], ["instance", "instance"], ["version", "version"], ["region", "region"]];
const PCTS = ["p50", "p95", "p99"];

/// One service: its RED over time, then split by operation, instance,
/// version or region — one line per group, and the groups' numbers.
function ServicePage({ service, params }) {
  const range = apiRange(params);
  const shared = sharedParams(params);
  const by = BY.some(([k]) => k === params.by) ? params.by : "operation";
  const pct = PCTS.includes(params.pct) ? params.pct : "p95";
  const step = stepFor(params);
  const res = useApi(`/api/v1/services?${qs({ ...range, step, service, by })}`);
  const svc = res.data && res.data.services.find((x) => x.service === service);
  const relative = !(params.from && params.to);
  const [charts, setCharts] = useState(null);
  useEffect(() => {
    if (!svc) { setCharts(null); return; }
    const own = align([svc.series || []], relative);
    const s = (label, values, colour) => ({ label, values, colour });
    const groups = svc.groups || [];
    const split = align(groups.map((g) => g.series || []), relative);
    const lines = (f) => groups.slice(0, SERIES_COLOURS.length).map((g, i) => s(g.value === null ? "(none)" : g.value, split.pick(g.series || [], f), SERIES_COLOURS[i]));
    setCharts({
      xs: own.xs,
      rate: [s("req/s", own.pick(svc.series, (p) => p.rate_per_sec), "#2f6fdf")],
      errors: [s("error rate", own.pick(svc.series, (p) => p.error_rate), "#d6333b")],
      latency: [s("p50", own.pick(svc.series, (p) => p.p50_ms), "#59a14f"), s("p95", own.pick(svc.series, (p) => p.p95_ms), "#d08700"), s("p99", own.pick(svc.series, (p) => p.p99_ms), "#d6333b")],
      sxs: split.xs,
      srate: lines((p) => p.rate_per_sec),
      serrors: lines((p) => p.error_rate),
      slatency: lines((p) => p[pct + "_ms"]),
    });
  }, [res.data, pct]);
  const groups = (svc && svc.groups) || [];
  const tz = params.tz;
  return html`<div class="page service" data-testid="service-page">
    <section class="card">
      <div class="row"><h2><span class="swatch" style=${{ background: serviceColour(service) }}></span>${service}</h2>
        ${svc && html`<span class="muted">${fmtNum(svc.rate_per_sec)} req/s · <span class=${svc.error_rate > 0.01 ? "bad" : ""}>${fmtPct(svc.error_rate)} errors</span> · p50 ${fmtMs(svc.p50_ms)} · p95 ${fmtMs(svc.p95_ms)} · p99 ${fmtMs(svc.p99_ms)} · ${svc.instances} instances</span>`}
        <span class="spacer"></span>
        <${Link} path="/traces" params=${{ ...shared, service }}>Traces →<//>
        <${Link} path="/logs" params=${{ ...shared, q: "service:" + service }}>Logs →<//>
        <${Link} path="/services" params=${shared}>← all services<//>
      </div>
      <${Status} state=${res} what=${service} empty=${res.data && !svc ? `${service} sent no SERVER or CONSUMER spans in this window.` : null}>
        ${charts && html`<div class="three">
          <${TimeChart} title="requests / s" xs=${charts.xs} series=${charts.rate} fmt=${(v) => fmtNum(v)} tz=${tz} testid="chart-rate" />
          <${TimeChart} title="error rate" xs=${charts.xs} series=${charts.errors} fmt=${fmtPct} tz=${tz} testid="chart-errors" />
          <${TimeChart} title="latency p50 / p95 / p99" xs=${charts.xs} series=${charts.latency} fmt=${fmtMs} tz=${tz} testid="chart-latency" legend />
        </div>`}
      <//>
    </section>
    <section class="card" data-testid="split">
      <div class="row"><h2>By ${by}</h2>
        <div class="seg tabs" data-testid="by">${BY.map(([k, label]) => html`<button class=${k === by ? "on" : ""} data-by=${k} onClick=${() => setParams({ by: k === "operation" ? undefined : k })}>${label}</button>`)}</div>
        <span class="spacer"></span>
        <span class="muted small">latency</span>
        <div class="seg">${PCTS.map((k) => html`<button class=${k === pct ? "on" : ""} onClick=${() => setParams({ pct: k === "p95" ? undefined : k })}>${k}</button>`)}</div>
      </div>
      <${Status} state=${res} what=${"the split by " + by} empty=${svc && !groups.length ? "Nothing to split in this window." : null}>
        ${charts && html`<div class="three">
          <${TimeChart} title=${"requests / s by " + by} xs=${charts.sxs} series=${charts.srate} fmt=${(v) => fmtNum(v)} tz=${tz} testid="split-rate" legend />
          <${TimeChart} title=${"error rate by " + by} xs=${charts.sxs} series=${charts.serrors} fmt=${fmtPct} tz=${tz} testid="split-errors" legend />
          <${TimeChart} title=${pct + " latency by " + by} xs=${charts.sxs} series=${charts.slatency} fmt=${fmtMs} tz=${tz} testid="split-latency" legend />
        </div>`}
        <table class="grid groups"><thead><tr><th>${by}</th><th class="num">req/s</th><th>rate</th><th class="num">errors</th><th>error rate</th><th class="num">p50</th><th class="num">p95</th><th class="num">p99</th><th>${pct}</th><th class="num">instances</th><th></th></tr></thead>
        <tbody>${groups.map((g, i) => {
          const series = relative && (g.series || []).length > 2 ? g.series.slice(0, -1) : g.series || [];
          const filter = by === "operation" ? { operation: g.value } : { attr: { instance: "service.instance.id", version: "service.version", region: "cloud.region" }[by] + "=" + g.value };
          return html`<tr data-group=${g.value === null ? "" : g.value}>
            <td class="mono"><span class="swatch" style=${{ background: i < SERIES_COLOURS.length ? SERIES_COLOURS[i] : "var(--border)" }}></span>${g.value === null ? html`<span class="muted">(none)</span>` : g.value}</td>
            <td class="num">${fmtNum(g.rate_per_sec)}</td><td><${Sparkline} values=${series.map((x) => x.rate_per_sec)} /></td>
            <td class="num ${g.error_rate > 0.01 ? "bad" : ""}">${fmtPct(g.error_rate)}</td><td><${Sparkline} values=${series.map((x) => x.error_rate)} colour="var(--bad)" /></td>
            <td class="num">${fmtMs(g.p50_ms)}</td><td class="num">${fmtMs(g.p95_ms)}</td><td class="num">${fmtMs(g.p99_ms)}</td>
            <td><${Sparkline} values=${series.map((x) => x[pct + "_ms"])} colour="var(--warn)" /></td>
            <td class="num">${g.instances}</td>
            <td>${g.value !== null && html`<${Link} path="/traces" params=${{ ...shared, service, ...filter }}>traces<//>`}</td></tr>`;
        })}</tbody></table>
      <//>
    </section>
  </div>`;
}

function stepFor(params) {
  const [a, b] = rangeBounds(params);
  const s = Math.max(1, Math.round((b - a) / 1000 / 40));
  return s + "s";
}

function health(errRate) {
  if (errRate >= 0.05) return "var(--bad)";
  if (errRate >= 0.01) return "var(--warn)";
  return "var(--good)";
}

function Graph({ data, sel, setSel }) {
  const edges = data.edges;
  const names = [...new Set(edges.flatMap((e) => [e.caller, e.callee]))];
  if (!names.length) return html`<div class="state empty">No calls between services in this window.</div>`;
  // Layers: longest path from a node nobody calls.
  const incoming = new Map(names.map((n) => [n, []]));
  for (const e of edges) if (e.caller !== e.callee) incoming.get(e.callee).push(e.caller);
  const layer = new Map();
  const depth = (n, seen = new Set()) => {
    if (layer.has(n)) return layer.get(n);
    if (seen.has(n)) return 0;
    seen.add(n);
    const d = incoming.get(n).length ? 1 + Math.max(...incoming.get(n).map((c) => depth(c, seen))) : 0;
    layer.set(n, d);
    return d;
  };
  names.forEach((n) => depth(n));
  const cols = [];
  for (const n of names) (cols[layer.get(n)] ||= []).push(n);
  cols.forEach((c) => c.sort());
  const W = 1100, colW = W / Math.max(1, cols.length), rowH = 64;
  const H = Math.max(...cols.map((c) => (c ? c.length : 0))) * rowH + 30;
  const pos = new Map();
  cols.forEach((c, i) => (c || []).forEach((n, j) => pos.set(n, { x: 40 + i * colW, y: 30 + j * rowH + (H - 30 - c.length * rowH) / 2 })));
  const err = new Map();
  for (const e of edges) {
    const x = err.get(e.callee) || { calls: 0, errors: 0 };
    x.calls += e.calls; x.errors += e.errors;
    err.set(e.callee, x);
  }
  const nodeW = Math.min(170, colW - 40);
  return html`<svg class="graph" viewBox="0 0 ${W} ${H}" width="100%" role="img" aria-label="service graph">
    <defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="9" markerHeight="9" markerUnits="userSpaceOnUse" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="var(--muted)" /></marker></defs>
    ${edges.map((e, i) => {
      const a = pos.get(e.caller), b = pos.get(e.callee);
      const x1 = a.x + nodeW, y1 = a.y + 16, x2 = b.x, y2 = b.y + 16;
      const mx = (x1 + x2) / 2;
      const on = sel && sel.edge === i;
      const rate = e.calls ? e.errors / e.calls : 0;
      return html`<g class="edge ${on ? "sel" : ""}" onClick=${() => setSel({ edge: i })}>
        <path d="M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}" stroke=${rate > 0.01 ? "var(--bad)" : "var(--muted)"} stroke-width=${1 + Math.min(5, Math.log10(1 + e.calls))} fill="none" marker-end="url(#arrow)" />
        <path d="M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}" stroke="transparent" stroke-width="12" fill="none"><title>${e.caller} → ${e.callee}: ${e.calls} calls, ${e.errors} errors, p95 ${fmtMs(e.p95_ms)}</title></path>
      </g>`;
    })}
    ${names.map((n) => {
      const p = pos.get(n), s = err.get(n);
      const rate = s && s.calls ? s.errors / s.calls : 0;
      const inferred = edges.some((e) => e.callee === n && e.inferred);
      return html`<g class="node ${sel && sel.node === n ? "sel" : ""}" data-node=${n} onClick=${() => setSel({ node: n })}>
        <rect x=${p.x} y=${p.y} width=${nodeW} height="32" rx=${inferred ? 16 : 5} fill="var(--panel)" stroke=${health(rate)} stroke-width="2.5" />
        <text x=${p.x + nodeW / 2} y=${p.y + 20} text-anchor="middle">${n.length > 24 ? n.slice(0, 23) + "…" : n}</text>
        <title>${n}${s ? `: ${s.calls} calls in, ${fmtPct(rate)} errors` : ""}</title>
      </g>`;
    })}
  </svg>`;
}

function GraphInfo({ data, sel, shared }) {
  if (!sel) return html`<div class="muted small">Click a node or an edge for its numbers. Rounded nodes are inferred (uninstrumented databases and brokers); border colour is health.</div>`;
  if (sel.edge !== undefined) {
    const e = data.edges[sel.edge];
    return html`<div class="graphinfo"><b>${e.caller} → ${e.callee}</b>${e.inferred ? " (inferred)" : ""}: ${e.calls} calls, ${e.errors} errors (${fmtPct(e.calls ? e.errors / e.calls : 0)}), p95 ${fmtMs(e.p95_ms)}</div>`;
  }
  const ins = data.edges.filter((e) => e.callee === sel.node), outs = data.edges.filter((e) => e.caller === sel.node);
  const sum = (l, k) => l.reduce((a, e) => a + e[k], 0);
  return html`<div class="graphinfo"><b>${sel.node}</b>: called ${sum(ins, "calls")} times (${sum(ins, "errors")} errors) by ${ins.map((e) => e.caller).join(", ") || "nobody"}; calls ${outs.map((e) => e.callee).join(", ") || "nothing"}.
    <${Link} path="/services" params=${{ ...shared, service: sel.node }}>Service page →<//> <${Link} path="/traces" params=${{ ...shared, service: sel.node }}>Traces →<//></div>`;
}

/// The graph selection in the URL: `node=NAME` or `edge=CALLER>CALLEE`.
function graphSelection(params, edges) {
  if (params.node) return { node: params.node };
  if (params.edge) {
    const i = edges.findIndex((e) => e.caller + ">" + e.callee === params.edge);
    if (i >= 0) return { edge: i };
  }
  return null;
}

export function ServicesPage({ params }) {
  if (params.service) return html`<${ServicePage} key=${params.service} service=${params.service} params=${params} />`;
  return html`<${ServiceList} params=${params} />`;
}

function ServiceList({ params }) {
  const range = apiRange(params);
  const shared = sharedParams(params);
  const res = useApi(`/api/v1/services?${qs({ ...range, step: stepFor(params) })}`);
  const graph = useApi(`/api/v1/service-graph?${qs(range)}`);
  const sel = graph.data ? graphSelection(params, graph.data.edges) : null;
  const setSel = (x) => {
    if (x && x.edge !== undefined) { const e = graph.data.edges[x.edge]; setParams({ edge: e.caller + ">" + e.callee, node: undefined }, true); }
    else setParams({ node: x ? x.node : undefined, edge: undefined }, true);
  };
  useBus("escape", () => setSel(null));
  const filter = (params.filter || "").toLowerCase();
  const services = res.data ? res.data.services.filter((s) => s.service.toLowerCase().includes(filter)) : [];
  return html`<div class="page services">
    <section class="card">
      <div class="row"><h2>Services <span class="muted small">SERVER and CONSUMER spans; sparklines per ${stepFor(params)}; click a service for its page</span></h2>
        <span class="spacer"></span><input class="filter" data-search placeholder="Filter services (/)" value=${params.filter || ""} onInput=${(e) => setParams({ filter: e.target.value || undefined }, true)} /></div>
      <${Status} state=${res} what="services" empty=${res.data && !services.length ? (filter ? "No service matches the filter." : "No services sent spans in this window.") : null}>
        <table class="grid svc-table"><thead><tr><th>service</th><th class="num">req/s</th><th>rate</th><th class="num">errors</th><th>error rate</th><th class="num">p50</th><th class="num">p95</th><th class="num">p99</th><th>p95</th><th class="num">operations</th><th class="num">instances</th></tr></thead>
        <tbody>${services.map((s) => {
          // The last bucket is still filling: leave it out of the lines.
          const series = (s.series || []).length > 2 ? s.series.slice(0, -1) : s.series || [];
          return html`
          <tr class="clickable" data-service=${s.service} onClick=${() => setParams({ service: s.service, node: undefined, edge: undefined })}>
            <td><span class="swatch" style=${{ background: serviceColour(s.service) }}></span><b>${s.service}</b></td>
            <td class="num">${fmtNum(s.rate_per_sec)}</td><td><${Sparkline} values=${series.map((x) => x.rate_per_sec)} /></td>
            <td class="num ${s.error_rate > 0.01 ? "bad" : ""}">${fmtPct(s.error_rate)}</td><td><${Sparkline} values=${series.map((x) => x.error_rate)} colour="var(--bad)" /></td>
            <td class="num">${fmtMs(s.p50_ms)}</td><td class="num">${fmtMs(s.p95_ms)}</td><td class="num">${fmtMs(s.p99_ms)}</td>
            <td><${Sparkline} values=${series.map((x) => x.p95_ms)} colour="var(--warn)" /></td>
            <td class="num">${(s.operations || []).length}</td>
            <td class="num">${s.instances}</td>
          </tr>`;
        })}</tbody></table>
      <//>
    </section>
    <section class="card">
      <h2>Service graph</h2>
      <${Status} state=${graph} what="the service graph">
        ${graph.data && html`<${Graph} data=${graph.data} sel=${sel} setSel=${setSel} /><${GraphInfo} data=${graph.data} sel=${sel} shared=${shared} />`}
      <//>
    </section>
  </div>`;
}
