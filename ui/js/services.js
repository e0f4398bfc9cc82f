// Services: RED per service with sparklines, per-operation rows, and the
// service graph as a node-link diagram.
import { html, useApi, useState, useEffect, useBus, Status, apiRange, rangeBounds, qs, setParams, sharedParams, Link, fmtMs, fmtPct, fmtNum, Sparkline, serviceColour, api, isoUtc } from "./lib.js";

import uPlot from "/vendor/uplot-1.6.32.esm.js";
import { useRef } from "/vendor/preact-hooks-10.29.8.module.js";
import { parseTime, fmtTime } from "./lib.js";

/// One RED series of a service over the range.
function RedChart({ title, series, pick, colour, fmt, tz }) {
  const ref = useRef(null);
  useEffect(() => {
    if (!ref.current || series.length < 2) return;
    const muted = getComputedStyle(document.documentElement).getPropertyValue("--muted").trim();
    const xs = series.map((p) => parseTime(p.time) / 1000);
    const span = xs[xs.length - 1] - xs[0];
    const u = new uPlot({
      width: ref.current.clientWidth || 380, height: 140, legend: { show: false },
      axes: [{ stroke: muted, values: (u, sp) => sp.map((v) => fmtTime(v * 1000, tz, false).slice(0, span < 3600 ? 8 : 5)) }, { stroke: muted, size: 72, values: (u, sp) => sp.map((v) => fmt(v)) }],
      series: [{}, { stroke: colour, width: 1.5, fill: colour + "22" }],
    }, [xs, series.map(pick)], ref.current);
    return () => u.destroy();
  }, [series, tz]);
  return html`<div class="redchart"><div class="muted small">${title}</div>${series.length < 2 ? html`<div class="state empty">Too few points.</div>` : html`<div ref=${ref}></div>`}</div>`;
}

const DIMENSIONS = [["service.instance.id", "instance"], ["service.version", "version"], ["cloud.region", "region"]];

/// RED of one service split by instance, version and region (through the
/// SQL API), so a bad instance or deploy stands out.
function Breakdown({ service, params, svc }) {
  const [b0, b1] = rangeBounds(params);
  const secs = Math.max(1, (b1 - b0) / 1000);
  const [state, setState] = useState({ loading: true, data: null, error: null });
  const key = `${service} ${params.range || ""} ${params.from || ""} ${params.to || ""}`;
  useEffect(() => {
    let live = true;
    setState({ loading: true, data: null, error: null });
    Promise.all(DIMENSIONS.map(([attr]) => api("/api/v1/sql", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ sql: `SELECT resource_attributes['${attr}'] AS v, count(*) AS n, avg(CASE WHEN status_code = 'error' THEN 1.0 ELSE 0 END) AS err, ` +
        `approx_percentile_cont(duration_ns, 0.95) / 1e6 AS p95 FROM spans WHERE service = '${service.replace(/'/g, "''")}' AND kind IN ('server', 'consumer') ` +
        `AND start_time >= TIMESTAMP '${isoUtc(b0)}' AND start_time <= TIMESTAMP '${isoUtc(b1)}' GROUP BY 1 ORDER BY err DESC, n DESC` }),
    }))).then((data) => live && setState({ loading: false, data, error: null }), (e) => live && setState({ loading: false, data: null, error: e.message }));
    return () => { live = false; };
  }, [key]);
  const series = svc && svc.series && svc.series.length > 2 ? svc.series.slice(0, -1) : (svc && svc.series) || [];
  return html`<section class="card" data-testid="breakdown"><h2>${service}</h2>
    <div class="three">
      <${RedChart} title="requests / s" series=${series} pick=${(p) => p.rate_per_sec} colour="#2f6fdf" fmt=${(v) => fmtNum(v)} tz=${params.tz} />
      <${RedChart} title="error rate" series=${series} pick=${(p) => p.error_rate} colour="#d6333b" fmt=${fmtPct} tz=${params.tz} />
      <${RedChart} title="p95 latency" series=${series} pick=${(p) => p.p95_ms} colour="#d08700" fmt=${fmtMs} tz=${params.tz} />
    </div>
    <h3>By instance, version and region</h3>
    <${Status} state=${state} what="the breakdown">
      <div class="three">${(state.data || []).map((r, i) => html`<table class="grid"><thead><tr><th>${DIMENSIONS[i][1]}</th><th class="num">req/s</th><th class="num">errors</th><th class="num">p95</th></tr></thead>
        <tbody>${r.rows.map(([v, n, err, p95]) => html`<tr><td class="mono">${v === null ? "–" : v}</td><td class="num">${fmtNum(n / secs)}</td><td class="num ${err > 0.01 ? "bad" : ""}">${fmtPct(err)}</td><td class="num">${fmtMs(p95)}</td></tr>`)}</tbody></table>`)}</div>
    <//></section>`;
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
    <${Link} path="/traces" params=${{ ...shared, service: sel.node }}>Traces →<//></div>`;
}

export function ServicesPage({ params }) {
  const range = apiRange(params);
  const shared = sharedParams(params);
  const res = useApi(`/api/v1/services?${qs({ ...range, step: stepFor(params) })}`);
  const graph = useApi(`/api/v1/service-graph?${qs(range)}`);
  const [sel, setSel] = useState(null);
  useBus("escape", () => { setSel(null); if (params.service) setParams({ service: undefined }); });
  const services = res.data ? res.data.services : [];
  return html`<div class="page services">
    <section class="card">
      <h2>Services <span class="muted small">SERVER and CONSUMER spans; sparklines per ${stepFor(params)}</span></h2>
      <${Status} state=${res} what="services" empty=${res.data && !services.length ? "No services sent spans in this window." : null}>
        <table class="grid svc-table"><thead><tr><th>service</th><th class="num">req/s</th><th>rate</th><th class="num">errors</th><th>error rate</th><th class="num">p50</th><th class="num">p95</th><th class="num">p99</th><th>p95</th><th class="num">instances</th></tr></thead>
        <tbody>${services.map((s) => {
          const open = params.service === s.service;
          // The last bucket is still filling: leave it out of the lines.
          const series = (s.series || []).length > 2 ? s.series.slice(0, -1) : s.series || [];
          return html`
          <tr class="clickable ${open ? "sel" : ""}" data-service=${s.service} onClick=${() => setParams({ service: open ? undefined : s.service })}>
            <td><span class="swatch" style=${{ background: serviceColour(s.service) }}></span><b>${s.service}</b></td>
            <td class="num">${fmtNum(s.rate_per_sec)}</td><td><${Sparkline} values=${series.map((x) => x.rate_per_sec)} /></td>
            <td class="num ${s.error_rate > 0.01 ? "bad" : ""}">${fmtPct(s.error_rate)}</td><td><${Sparkline} values=${series.map((x) => x.error_rate)} colour="var(--bad)" /></td>
            <td class="num">${fmtMs(s.p50_ms)}</td><td class="num">${fmtMs(s.p95_ms)}</td><td class="num">${fmtMs(s.p99_ms)}</td>
            <td><${Sparkline} values=${series.map((x) => x.p95_ms)} colour="var(--warn)" /></td>
            <td class="num">${s.instances}</td>
          </tr>
          ${open && (s.operations || []).map((o) => html`<tr class="op">
            <td class="mono">  ${o.operation}</td><td class="num">${fmtNum(o.rate_per_sec)}</td><td></td>
            <td class="num ${o.error_rate > 0.01 ? "bad" : ""}">${fmtPct(o.error_rate)}</td><td></td>
            <td class="num">${fmtMs(o.p50_ms)}</td><td class="num">${fmtMs(o.p95_ms)}</td><td class="num">${fmtMs(o.p99_ms)}</td>
            <td><${Link} path="/traces" params=${{ ...shared, service: s.service, operation: o.operation }}>traces<//></td><td class="num">${o.instances}</td></tr>`)}`;
        })}</tbody></table>
      <//>
    </section>
    ${params.service && html`<${Breakdown} key=${params.service} service=${params.service} params=${params} svc=${services.find((x) => x.service === params.service)} />`}
    <section class="card">
      <h2>Service graph</h2>
      <${Status} state=${graph} what="the service graph">
        ${graph.data && html`<${Graph} data=${graph.data} sel=${sel} setSel=${setSel} /><${GraphInfo} data=${graph.data} sel=${sel} shared=${shared} />`}
      <//>
    </section>
  </div>`;
}
