// Capacity: policies (create and edit through the API), baselines, the
// latest decision per service with its evidence, tasks and schedules.
import { html, useApi, useState, useEffect, useRef, useBus, Status, setParams, api, apiRange, fmtTime, fmtNum, fmtPct, parseTime, isoUtc, rangeBounds, Json } from "./lib.js";
import uPlot from "/vendor/uplot-1.6.32.esm.js";

/// Live load against capacity for one service over the selected range:
/// requests/s of its SERVER/CONSUMER spans and ready instances per bucket
/// (through the SQL API), against baseline × instances and × the policy's
/// target utilisation.
function LoadChart({ service, baseline, policy, params }) {
  const ref = useRef(null);
  const [b0, b1] = rangeBounds(params);
  const step = Math.max(10, Math.round((b1 - b0) / 1000 / 120));
  const sql = `SELECT date_bin(INTERVAL '${step} seconds', start_time, TIMESTAMP '1970-01-01T00:00:00Z') AS t, count(*) / ${step}.0 AS rps, ` +
    `count(DISTINCT instance) AS instances FROM spans WHERE service = '${service.replace(/'/g, "''")}' ` +
    `AND kind IN ('server', 'consumer') AND start_time >= TIMESTAMP '${isoUtc(b0)}' AND start_time <= TIMESTAMP '${isoUtc(b1)}' GROUP BY 1 ORDER BY 1`;
  const [state, setState] = useState({ loading: true, data: null, error: null });
  useEffect(() => {
    let live = true;
    setState((x) => ({ ...x, loading: true }));
    api("/api/v1/sql", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ sql }) })
      .then((data) => live && setState({ loading: false, data, error: null }), (e) => live && setState({ loading: false, data: null, error: e.message }));
    return () => { live = false; };
  }, [sql.replace(/TIMESTAMP '[^']*'/g, (m) => m.slice(0, 30))]);
  const rows = state.data ? state.data.rows.slice(0, -1) : [];
  useEffect(() => {
    if (!ref.current || rows.length < 2) return;
    const xs = rows.map((r) => parseTime(r[0]) / 1000);
    const per = baseline ? baseline.max_rps_per_instance : null;
    const util = policy ? policy.target_utilization : null;
    const cap = rows.map((r) => (per === null ? null : per * r[2]));
    const target = cap.map((c) => (c === null || util === null ? null : c * util));
    const muted = getComputedStyle(document.documentElement).getPropertyValue("--muted").trim();
    const tz = params.tz;
    const u = new uPlot({
      width: ref.current.clientWidth || 700, height: 200,
      axes: [{ stroke: muted, values: (u, sp) => sp.map((v) => fmtTime(v * 1000, tz, false).slice(0, b1 - b0 <= 3.6e6 ? 8 : 5)) }, { stroke: muted, label: "req/s" }, { side: 1, stroke: muted, scale: "n", label: "instances", grid: { show: false } }],
      scales: { n: { range: (u, lo, hi) => [0, Math.max(1, hi + 1)] } },
      series: [{ label: "time", value: (u, v) => v === null ? "–" : fmtTime(v * 1000, tz, false) }, { label: "load req/s", stroke: "#2f6fdf", width: 2 }, { label: "capacity", stroke: "#d6333b", dash: [6, 4] }, { label: "× target util.", stroke: "#d08700", dash: [2, 3] },
        { label: "ready instances", stroke: "#59a14f", scale: "n", paths: uPlot.paths.stepped({ align: 1 }) }],
    }, [xs, rows.map((r) => r[1]), cap, target, rows.map((r) => r[2])], ref.current);
    return () => u.destroy();
  }, [state.data, baseline, policy, params.tz]);
  return html`<section class="card"><h3>Load against capacity: ${service} ${baseline ? html`<span class="muted small">baseline ${fmtNum(baseline.max_rps_per_instance)} req/s per instance</span>` : html`<span class="muted small">no baseline: capacity unknown</span>`}</h3>
    <${Status} state=${state} what="load" empty=${state.data && rows.length < 2 ? `Fewer than two complete ${step} s buckets of this service's SERVER or CONSUMER spans in the selected range.` : null}>
      <div ref=${ref} class="loadchart" data-testid="load-chart"></div>
    <//></section>`;
}

const FIELDS = [
  ["min", "number", "min instances"],
  ["max", "number", "max instances"],
  ["target_utilization", "number", "target utilisation (0–1)"],
  ["webhook_url", "text", "webhook URL"],
  ["webhook_secret", "text", "webhook secret (whsec_…; needed again when the URL changes)"],
  ["evaluation_interval", "text", "evaluation interval"],
];

function PolicyForm({ service, policy, onSaved, close }) {
  const [svc, setSvc] = useState(service || "");
  const [f, setF] = useState({});
  const [state, setState] = useState({ saving: false, error: null });
  useEffect(() => {
    const p = policy || { min: 1, max: 10, target_utilization: 0.7, webhook_url: "", evaluation_interval: "15s" };
    setF(Object.fromEntries(FIELDS.map(([k]) => [k, p[k] === undefined ? "" : String(p[k])])));
    setSvc(service || "");
  }, [service, policy]);
  const save = async (e) => {
    e.preventDefault();
    const body = { ...(policy || {}) };
    for (const [k, type] of FIELDS) {
      if (f[k] === "") continue;
      body[k] = type === "number" ? Number(f[k]) : f[k];
    }
    setState({ saving: true, error: null });
    try {
      await api(`/api/v1/capacity/policies/${encodeURIComponent(svc)}`, { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      setState({ saving: false, error: null, saved: true });
      onSaved(svc);
    } catch (err) {
      setState({ saving: false, error: err.message });
    }
  };
  return html`<form class="card policyform" onSubmit=${save} data-testid="policy-form">
    <div class="detail-head"><h3>${service ? `Policy: ${service}` : "New policy"}</h3><button type="button" class="close" title="Close (Esc)" onClick=${close}>×</button></div>
    ${!service && html`<label>service<input name="service" value=${svc} onInput=${(e) => setSvc(e.target.value)} required /></label>`}
    ${FIELDS.map(([k, type, label]) => html`<label>${label}<input name=${k} type=${type === "number" ? "number" : "text"} step="any" value=${f[k] || ""} onInput=${(e) => setF({ ...f, [k]: e.target.value })} required=${k === "webhook_url"} /></label>`)}
    <div class="row"><button class="primary" type="submit" disabled=${state.saving || !svc}>${state.saving ? "Saving…" : "Save"}</button>
      ${state.saved && html`<span class="good" data-testid="saved">Saved</span>`}
      ${state.error && html`<span class="bad" role="alert">${state.error}</span>`}</div>
  </form>`;
}

/// A baseline's Universal Scalability Law fit, X(N) = λN / (1 + σ(N−1) +
/// κN(N−1)), drawn against the load test's steps (green within the SLO).
function UslChart({ service, baseline }) {
  const fit = baseline && baseline.fit;
  if (!fit || !Array.isArray(fit.steps) || !fit.steps.length) return null;
  const W = 460, H = 220, P = 40;
  const maxN = Math.max(...fit.steps.map((x) => x.concurrency)) * 1.4 || 1;
  const usl = (n) => (fit.lambda * n) / (1 + fit.sigma * (n - 1) + fit.kappa * n * (n - 1));
  const curve = Array.from({ length: 60 }, (_, i) => { const n = (maxN * (i + 1)) / 60; return [n, usl(n)]; }).filter(([, x]) => isFinite(x) && x >= 0);
  const maxX = Math.max(baseline.max_rps_per_instance, ...fit.steps.map((x) => x.throughput), ...curve.map(([, x]) => x)) * 1.1 || 1;
  const sx = (n) => P + (n / maxN) * (W - P - 10), sy = (x) => H - 24 - (x / maxX) * (H - 34);
  return html`<section class="card" data-testid="usl"><h3>${service}: USL fit <span class="muted small">σ ${fmtNum(fit.sigma, 3)} · κ ${fmtNum(fit.kappa, 4)} · λ ${fmtNum(fit.lambda)}</span></h3>
    <svg viewBox="0 0 ${W} ${H}" width="100%" style=${{ maxWidth: W + "px" }} role="img" aria-label="USL fit">
      <line x1=${P} x2=${W - 10} y1=${H - 24} y2=${H - 24} stroke="var(--border)" /><line x1=${P} x2=${P} y1="10" y2=${H - 24} stroke="var(--border)" />
      <text x="2" y="14" class="axis">${fmtNum(maxX)} req/s</text><text x=${W - 90} y=${H - 6} class="axis">concurrency ${fmtNum(maxN)}</text>
      <line x1=${P} x2=${W - 10} y1=${sy(baseline.max_rps_per_instance)} y2=${sy(baseline.max_rps_per_instance)} stroke="var(--bad)" stroke-dasharray="5 4"><title>baseline ${baseline.max_rps_per_instance} req/s</title></line>
      <polyline points=${curve.map(([n, x]) => `${sx(n)},${sy(x)}`).join(" ")} fill="none" stroke="var(--accent)" stroke-width="2" />
      ${fit.steps.map((st) => html`<circle cx=${sx(st.concurrency)} cy=${sy(st.throughput)} r="4" fill=${st.within_slo ? "var(--good)" : "var(--bad)"}><title>N ${fmtNum(st.concurrency, 3)}: ${fmtNum(st.throughput)} req/s, p99 ${fmtNum(st.p99_ms)} ms</title></circle>`)}
    </svg></section>`;
}

/// A small form that PUTs `build(values)` to `path(values)`.
function PutForm({ title, fields, initial, path, build, onSaved, close, testid }) {
  const [f, setF] = useState({});
  const [state, setState] = useState({});
  useEffect(() => setF(Object.fromEntries(fields.map(([k]) => [k, initial && initial[k] !== undefined && initial[k] !== null ? String(initial[k]) : ""]))), [JSON.stringify(initial)]);
  const save = async (e) => {
    e.preventDefault();
    setState({ saving: true });
    try {
      await api(path(f), { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify(build(f)) });
      setState({ saved: true });
      onSaved();
    } catch (err) {
      setState({ error: err.message });
    }
  };
  return html`<form class="card policyform" onSubmit=${save} data-testid=${testid}>
    <div class="detail-head"><h3>${title}</h3><button type="button" class="close" title="Close (Esc)" onClick=${close}>×</button></div>
    ${fields.map(([k, label, ph, type]) => html`<label>${label}<input name=${k} type=${type || "text"} step="any" placeholder=${ph || ""} value=${f[k] || ""} onInput=${(e) => setF({ ...f, [k]: e.target.value })} /></label>`)}
    <div class="row"><button class="primary" type="submit" disabled=${state.saving}>${state.saving ? "Saving…" : "Save"}</button>
      ${state.saved && html`<span class="good">Saved</span>`}${state.error && html`<span class="bad" role="alert">${state.error}</span>`}</div>
  </form>`;
}

const LOAD_TEST_FIELDS = [["service", "service", "checkout"], ["start", "start", "now-30m"], ["end", "end", "now"], ["instance", "instance (optional)", "checkout-1"], ["step", "step (without loadtest.concurrency)", "10s"],
  ["p99_ms", "SLO p99 (ms)", "500", "number"], ["max_error_rate", "SLO max error rate", "0.01", "number"], ["load_test_id", "load test id", "k6-2026-11-20"], ["note", "note", ""]];

/// A baseline fitted from a load test Loupe stored: a dry run draws the
/// fit against the test's steps, Save stores it.
function LoadTestForm({ params, onSaved, close }) {
  const range = apiRange(params);
  const [f, setF] = useState({ service: params.key || "", start: range.start, end: range.end, step: "10s" });
  const [state, setState] = useState({});
  const run = async (dryRun) => {
    const body = { start: f.start, end: f.end, dry_run: dryRun };
    for (const k of ["instance", "step", "load_test_id", "note"]) if (f[k]) body[k] = f[k];
    if (f.p99_ms || f.max_error_rate) body.slo = { p99_ms: num(f.p99_ms), max_error_rate: num(f.max_error_rate) };
    setState({ busy: true, result: state.result });
    try {
      const result = await api(`/api/v1/capacity/baselines/${encodeURIComponent(f.service)}/from-load-test`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      setState({ result });
      if (!dryRun) onSaved(f.service);
    } catch (err) {
      setState({ error: err.message });
    }
  };
  const r = state.result;
  return html`<div><form class="card policyform" data-testid="loadtest-form" onSubmit=${(e) => { e.preventDefault(); run(true); }}>
    <div class="detail-head"><h3>Baseline from a load test</h3><button type="button" class="close" title="Close (Esc)" onClick=${close}>×</button></div>
    <div class="muted small">The test's SERVER spans in the window, grouped by <code>loadtest.concurrency</code> or by step; the USL is fitted to them.</div>
    ${LOAD_TEST_FIELDS.map(([k, label, ph, type]) => html`<label>${label}<input name=${k} type=${type || "text"} step="any" placeholder=${ph || ""} value=${f[k] || ""} onInput=${(e) => setF({ ...f, [k]: e.target.value })} /></label>`)}
    <div class="row"><button type="submit" disabled=${state.busy || !f.service} data-testid="fit">Fit (dry run)</button>
      <button type="button" class="primary" disabled=${state.busy || !f.service} onClick=${() => run(false)} data-testid="fit-save">Fit and save</button>
      ${r && html`<span class=${r.stored ? "good" : "muted"} data-testid="fit-result">${r.stored ? "Saved: " : "Fit: "}${fmtNum(r.baseline.max_rps_per_instance)} req/s per instance</span>`}
      ${state.error && html`<span class="bad" role="alert">${state.error}</span>`}</div>
  </form>
  ${r && html`<${UslChart} service=${r.service} baseline=${{ ...r.baseline, fit: r.fit }} />`}</div>`;
}

/// The instance count a decision applies (after [min, max], rate limits
/// and stabilisation); `desired` is what the signals asked for.
const applied = (d) => (d.replicas === undefined ? d.desired : d.replicas);

/// A decision's reason and evidence: each signal's proposal, the ready
/// instances, the baseline, the schedule floor, errors, then the raw JSON.
function Evidence({ d, tz, close }) {
  const e = d.evidence || {};
  const signals = Array.isArray(e.signals) ? e.signals : [];
  const errors = Array.isArray(e.errors) ? e.errors : [];
  return html`<section class="card" data-testid="evidence"><div class="detail-head"><h3>Decision: ${d.service}${d.region ? " / " + d.region : ""} ${fmtTime(d.time, tz)}</h3><button class="close" title="Close (Esc)" onClick=${close}>×</button></div>
    <table class="kv">
      <tr><td class="key">instances</td><td class="val">${d.current} → <b>${applied(d)}</b>${d.replicas !== undefined && d.replicas !== d.desired ? html` <span class="muted">(the signals asked for ${d.desired}; the limits and stabilisation give ${d.replicas})</span>` : ""}</td></tr>
      <tr><td class="key">reason</td><td class="val" data-testid="reason">${d.reason}</td></tr>
      ${e.ready_instances !== undefined && html`<tr><td class="key">ready instances</td><td class="val">${e.ready_instances}</td></tr>`}
      ${e.window && html`<tr><td class="key">load window</td><td class="val">${e.window}</td></tr>`}
      ${e.baseline && html`<tr><td class="key">baseline</td><td class="val">${fmtNum(e.baseline.max_rps_per_instance)} req/s per instance × target utilisation ${e.baseline.target_utilization}</td></tr>`}
      ${e.schedule && (e.schedule.floor || (e.schedule.windows || []).length > 0) && html`<tr><td class="key">schedule</td><td class="val">at least ${e.schedule.floor} (${(e.schedule.windows || []).join(", ")})</td></tr>`}
      ${e.hold_until && html`<tr><td class="key">held until</td><td class="val">${fmtTime(e.hold_until, tz)}</td></tr>`}
      ${e.fallback && html`<tr><td class="key">fallback</td><td class="val mono">${JSON.stringify(e.fallback)}</td></tr>`}
    </table>
    ${signals.length > 0 && html`<h4>Signals</h4><table class="grid" data-testid="signals"><thead><tr><th>signal</th><th class="num">value</th><th class="num">target / instance</th><th class="num">ratio</th><th class="num">proposal</th></tr></thead>
      <tbody>${signals.map((x) => html`<tr><td>${x.name}</td><td class="num">${fmtNum(x.value)}</td><td class="num">${fmtNum(x.target_per_instance)}</td><td class="num">${fmtNum(x.ratio, 3)}</td><td class="num">${x.proposal}</td></tr>`)}</tbody></table>`}
    ${errors.length > 0 && html`<h4>Errors</h4>${errors.map((x) => html`<div class="bad mono small">${x.signal ? x.signal + ": " : ""}${x.error || JSON.stringify(x)}</div>`)}`}
    <details><summary class="muted small">raw evidence</summary><${Json} value=${d} /></details>
  </section>`;
}

const BASELINE_FIELDS = [["service", "service", "checkout"], ["max_rps_per_instance", "max req/s per instance", "180", "number"], ["p99_ms", "SLO p99 (ms)", "500", "number"], ["max_error_rate", "SLO max error rate", "0.01", "number"], ["note", "note", "k6 run 2026-11-20"]];
const SCHEDULE_FIELDS = [["name", "name", "black-friday"], ["service", "service", "checkout"], ["start_cron", "start (cron)", "0 8 * * 1-5"], ["end_cron", "end (cron)", "0 20 * * 1-5"], ["timezone", "time zone", "UTC"], ["desired_instances", "instances at least", "6", "number"]];
const num = (v) => (v === "" || v === undefined ? undefined : Number(v));

export function CapacityPage({ params }) {
  const policies = useApi("/api/v1/capacity/policies");
  const baselines = useApi("/api/v1/capacity/baselines");
  const decisions = useApi("/api/v1/capacity/decisions?limit=200");
  const tasks = useApi("/api/v1/capacity/tasks?limit=100");
  const schedules = useApi("/api/v1/capacity/schedules");
  // Decisions and tasks keep coming: refresh them.
  useEffect(() => { const t = setInterval(() => { decisions.reload(); tasks.reload(); }, 5000); return () => clearInterval(t); }, []);
  // The decision whose evidence is open is in the URL: decision=SEQUENCE.
  const ev = params.decision ? (decisions.data || []).find((d) => String(d.sequence) === params.decision) || null : null;
  const setEv = (d) => setParams(d ? { decision: String(d.sequence), edit: undefined, new: undefined, form: undefined, key: undefined } : { decision: undefined });
  const editing = params.new === "1" ? "" : params.edit;
  useBus("escape", () => setParams({ decision: undefined, edit: undefined, new: undefined, form: undefined, key: undefined }));
  const list = policies.data || [];
  const current = list.find((p) => p.service === editing);
  const latest = new Map();
  for (const d of decisions.data || []) {
    const k = d.service + (d.region ? "/" + d.region : "");
    if (!latest.has(k) || d.sequence > latest.get(k).sequence) latest.set(k, d);
  }
  const base = new Map((baselines.data || []).map((b) => [b.service, b.baseline]));
  const refresh = () => { policies.reload(); decisions.reload(); };
  const chartService = params.chart || (editing && list.some((p) => p.service === editing) ? editing : list.length ? list[0].service : null);
  return html`<div class="page capacity">
    <div class="two wide-left">
      <section class="card">
        <div class="row"><h2>Policies</h2><span class="spacer"></span><button class="primary" onClick=${() => setParams({ new: "1", edit: undefined })} data-testid="new-policy">New policy</button></div>
        <${Status} state=${policies} what="policies" empty=${policies.data && !list.length ? "No capacity policies yet. Create one to get scale decisions." : null}>
          <table class="grid"><thead><tr><th>service</th><th class="num">min</th><th class="num">max</th><th class="num">target util.</th><th class="num">baseline rps/inst.</th><th class="num" title="current → the count the decision applies">current → next</th><th>last reason</th><th>webhook</th><th></th></tr></thead>
          <tbody>${list.map(({ service, policy }) => {
            const d = latest.get(service);
            const b = base.get(service);
            return html`<tr data-policy=${service}>
              <td><button class="link" title="chart its load" onClick=${() => setParams({ chart: service })}><b>${service}</b></button></td><td class="num">${policy.min}</td><td class="num">${policy.max}</td><td class="num">${policy.target_utilization}</td>
              <td class="num">${b ? fmtNum(b.max_rps_per_instance) : html`<span class="muted">none</span>`}</td>
              <td class="num">${d ? `${d.current} → ${applied(d)}` : "–"}</td>
              <td>${d ? html`<button class="link" onClick=${() => setEv(d)}>${d.reason}</button>` : "–"}</td>
              <td class="mono small">${policy.webhook_url}</td>
              <td><button onClick=${() => setParams({ edit: service, new: undefined })} data-testid=${"edit-" + service}>Edit</button></td>
            </tr>`;
          })}</tbody></table>
        <//>
      </section>
      ${params.form === "baseline" ? html`<div><${PutForm} title="Baseline" testid="baseline-form" fields=${BASELINE_FIELDS}
          initial=${params.key && base.get(params.key) ? { service: params.key, ...base.get(params.key), ...(base.get(params.key).slo || {}) } : null}
          path=${(f) => `/api/v1/capacity/baselines/${encodeURIComponent(f.service)}`}
          build=${(f) => ({ ...(params.key && params.key === f.service ? base.get(params.key) : {}), max_rps_per_instance: num(f.max_rps_per_instance), slo: { p99_ms: num(f.p99_ms), max_error_rate: num(f.max_error_rate) }, note: f.note || undefined })}
          onSaved=${() => baselines.reload()} close=${() => setParams({ form: undefined, key: undefined })} />
          ${params.key && html`<${UslChart} service=${params.key} baseline=${base.get(params.key)} />`}</div>`
      : params.form === "schedule" ? html`<${PutForm} title="Schedule" testid="schedule-form" fields=${SCHEDULE_FIELDS}
          initial=${params.key ? (schedules.data || []).find((x) => x.name === params.key) : { timezone: "UTC" }}
          path=${(f) => `/api/v1/capacity/schedules/${encodeURIComponent(f.name)}`}
          build=${(f) => ({ service: f.service, start_cron: f.start_cron, end_cron: f.end_cron, timezone: f.timezone || "UTC", desired_instances: num(f.desired_instances) })}
          onSaved=${() => schedules.reload()} close=${() => setParams({ form: undefined, key: undefined })} />`
      : editing !== undefined ? html`<${PolicyForm} service=${editing} policy=${current ? current.policy : null} onSaved=${(svc) => { refresh(); if (!editing) setParams({ new: undefined, edit: svc }, true); }} close=${() => setParams({ edit: undefined, new: undefined })} />`
        : params.form === "loadtest" ? html`<${LoadTestForm} params=${params} onSaved=${() => baselines.reload()} close=${() => setParams({ form: undefined, key: undefined })} />`
        : ev ? html`<${Evidence} d=${ev} tz=${params.tz} close=${() => setEv(null)} />`
        : html`<section class="card"><div class="row"><h3>Baselines</h3><span class="spacer"></span><button onClick=${() => setParams({ form: "loadtest", key: undefined })} data-testid="from-load-test">From load test</button><button onClick=${() => setParams({ form: "baseline", key: undefined })} data-testid="new-baseline">New baseline</button></div>
          <${Status} state=${baselines} what="baselines" empty=${baselines.data && !baselines.data.length ? "No baselines: what one instance carries is fitted from a load test (see README)." : null}>
            <table class="grid"><thead><tr><th>service</th><th class="num">rps / instance</th><th>SLO</th><th>note</th></tr></thead>
            <tbody>${(baselines.data || []).map((b) => html`<tr class="clickable" title="edit" data-baseline=${b.service} onClick=${() => setParams({ form: "baseline", key: b.service })}><td>${b.service}${b.baseline.fit ? html` <span class="badge" title="fitted from a load test">USL</span>` : ""}</td><td class="num">${fmtNum(b.baseline.max_rps_per_instance)}</td><td class="small">${b.baseline.slo ? `p99 ≤ ${b.baseline.slo.p99_ms} ms, errors ≤ ${b.baseline.slo.max_error_rate}` : ""}</td><td class="small">${b.baseline.note || ""}</td></tr>`)}</tbody></table>
          <//></section>`}
    </div>
    ${chartService && html`<${LoadChart} key=${chartService} service=${chartService} baseline=${base.get(chartService)} policy=${(list.find((p) => p.service === chartService) || {}).policy} params=${params} />`}
    <div class="two">
      <section class="card">
        <h2>Decisions</h2>
        <${Status} state=${decisions} what="decisions" empty=${decisions.data && !decisions.data.length ? "No decisions yet (one per evaluation interval once a policy exists)." : null}>
          <table class="grid"><thead><tr><th>time</th><th>service</th><th class="num" title="current → the count the decision applies">current → next</th><th>reason</th></tr></thead>
          <tbody>${(decisions.data || []).slice(0, 50).map((d) => html`<tr class="clickable" data-decision=${d.sequence} onClick=${() => setEv(d)}><td class="mono">${fmtTime(d.time, params.tz)}</td><td>${d.service}${d.region ? " / " + d.region : ""}</td><td class="num">${d.current} → ${applied(d)}</td><td>${d.reason}</td></tr>`)}</tbody></table>
        <//>
      </section>
      <section class="card">
        <h2>Tasks</h2>
        <${Status} state=${tasks} what="tasks" empty=${tasks.data && !tasks.data.length ? "No scale tasks." : null}>
          <table class="grid"><thead><tr><th>created</th><th>service</th><th class="num">from → to</th><th>status</th><th>reason</th></tr></thead>
          <tbody>${(tasks.data || []).map((t) => html`<tr><td class="mono">${fmtTime(t.created_at || t.time, params.tz)}</td><td>${t.service}</td><td class="num">${t.from ?? ""} → ${t.to ?? ""}</td><td><span class="badge status-${t.status}">${t.status}</span></td><td class="small">${t.reason || ""}</td></tr>`)}</tbody></table>
        <//>
        <div class="row"><h3>Schedules</h3><span class="spacer"></span><button onClick=${() => setParams({ form: "schedule", key: undefined })} data-testid="new-schedule">New schedule</button></div>
        <${Status} state=${schedules} what="schedules" empty=${schedules.data && !schedules.data.length ? "No schedules." : null}>
          <table class="grid"><thead><tr><th>name</th><th>service</th><th>window</th><th class="num">at least</th></tr></thead><tbody>${(schedules.data || []).map((x) => html`<tr class="clickable" title="edit" onClick=${() => setParams({ form: "schedule", key: x.name })}><td>${x.name}</td><td>${x.service}</td><td class="mono small">${x.start_cron} → ${x.end_cron} ${x.timezone}</td><td class="num">${x.desired_instances}</td></tr>`)}</tbody></table>
        <//>
      </section>
    </div>
  </div>`;
}
