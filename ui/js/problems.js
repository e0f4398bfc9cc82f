// Problems (home): ranked suspects with their evidence, then new/surging
// log patterns and error groups.
import { html, useApi, useBus, Status, apiRange, qs, Link, sharedParams, setParams, fmtPct, fmtNum, fmtTime, sevClass } from "./lib.js";

function subjectText(subject) {
  return Object.entries(subject || {}).filter(([k]) => k !== "kind").map(([k, v]) => `${k}=${v}`).join(" ");
}

/// The symptom: the suspect's error rate or self time, incident vs baseline.
function Symptom({ s }) {
  const latency = s.kind === "latency";
  const key = latency ? "self_ms_per_span" : "error_rate";
  const inc = s.incident ? s.incident[key] : null, base = s.baseline ? s.baseline[key] : null;
  if (inc === null || inc === undefined) return null;
  const max = Math.max(inc || 0, base || 0) || 1;
  const fmt = latency ? (v) => fmtNum(v) + " ms" : fmtPct;
  const bar = (label, v, cls) => html`<div class="symrow"><span class="symlabel">${label}</span><span class="symbar ${cls}" style=${{ width: Math.max(2, (100 * (v || 0)) / max) + "%" }}></span><span class="symval">${fmt(v)}</span></div>`;
  return html`<div class="symptom" title=${latency ? "self time per span" : "error rate"}>
    ${bar("incident", inc, "inc")}${bar("baseline", base, "base")}
  </div>`;
}

function Suspect({ s, i, open, shared, tz }) {
  const toggle = () => setParams({ open: open ? undefined : String(i) });
  return html`<li class="suspect ${open ? "open" : ""}" data-suspect=${i}>
    <div class="suspect-head" onClick=${toggle}>
      <span class="rank">${i + 1}</span>
      <span class="badge kind-${s.kind}">${s.kind}</span>
      <div class="suspect-main">
        <div class="explanation">${s.explanation}</div>
        <div class="subject mono">${subjectText(s.subject)}</div>
      </div>
      <${Symptom} s=${s} />
      <span class="score" title="score">${fmtNum(s.score)}</span>
      <button class="evidence-btn" aria-expanded=${open}>${open ? "Hide evidence" : "Evidence"}</button>
    </div>
    ${open && html`<div class="evidence">
      <div>
        <h4>Example traces</h4>
        ${(s.example_trace_ids || []).filter(Boolean).length === 0 ? html`<div class="muted">none</div>` :
          html`<ul class="plain">${s.example_trace_ids.filter(Boolean).map((t) => html`<li><${Link} path="/traces" params=${{ ...shared, trace: t }} cls="mono trace-link">${t}<//></li>`)}</ul>`}
      </div>
      <div>
        <h4>Example log lines</h4>
        ${(s.example_logs || []).length === 0 ? html`<div class="muted">none</div>` :
          html`<ul class="plain loglines">${s.example_logs.map((l) => html`<li>
            <span class="mono muted">${fmtTime(l.time, tz)}</span> <span class="sev ${sevClass(l.severity_text)}">${l.severity_text}</span> <span class="mono">${l.body}</span>
            ${l.trace_id && html` <${Link} path="/traces" params=${{ ...shared, trace: l.trace_id }} cls="mono trace-link">trace<//>`}
          </li>`)}</ul>`}
        <${Link} path="/logs" params=${{ ...shared, q: logQuery(s) }}>Search these logs →<//>
      </div>
    </div>`}
  </li>`;
}

function logQuery(s) {
  const sub = s.subject || {};
  const parts = [];
  if (sub.service) parts.push(`service:${sub.service}`);
  parts.push("severity_number:[13 TO 24]");
  return parts.join(" ");
}

export function ProblemsPage({ params }) {
  const range = apiRange(params);
  const tz = params.tz;
  const shared = sharedParams(params);
  const problems = useApi(`/api/v1/problems?${qs(range)}`);
  const patterns = useApi(`/api/v1/logs/patterns?${qs(range)}`);
  const errors = useApi(`/api/v1/errors?${qs(range)}`);
  const suspects = problems.data ? problems.data.suspects : [];
  const open = params.open !== undefined ? Number(params.open) : -1;
  useBus("escape", () => { if (open >= 0) setParams({ open: undefined }); });
  const notable = patterns.data ? patterns.data.patterns.filter((p) => p.trend === "new" || p.trend === "surging") : [];
  notable.sort((a, b) => (sevRank(b.severity_text) - sevRank(a.severity_text)) || b.count - a.count);
  return html`<div class="page problems">
    <section class="card">
      <h2>Suspects <span class="muted small">ranked causes for the selected window against the window before it</span></h2>
      <${Status} state=${problems} what="problems" empty=${problems.data && suspects.length === 0 ? "No suspects: nothing in this window stands out against the baseline." : null}>
        <ol class="suspects">${suspects.map((s, i) => html`<${Suspect} key=${i} s=${s} i=${i} open=${open === i} shared=${shared} tz=${tz} />`)}</ol>
      <//>
    </section>
    <div class="two">
      <section class="card">
        <h2>New and surging log patterns</h2>
        <${Status} state=${patterns} what="patterns" empty=${patterns.data && notable.length === 0 ? "No new or surging patterns." : null}>
          <table class="grid patterns"><thead><tr><th>trend</th><th>service</th><th>sev</th><th>template</th><th class="num">count</th><th class="num">before</th></tr></thead>
          <tbody>${notable.slice(0, 30).map((p) => html`<tr>
            <td><span class="badge trend-${p.trend}">${p.trend}</span></td><td>${p.service}</td>
            <td><span class="sev ${sevClass(p.severity_text)}">${p.severity_text}</span></td>
            <td class="mono wrap"><${Link} path="/logs" params=${{ ...shared, q: `service:${p.service}` }} title=${p.example}>${p.template}<//></td>
            <td class="num">${p.count}</td><td class="num">${p.previous_count}</td></tr>`)}</tbody></table>
        <//>
      </section>
      <section class="card">
        <h2>Error groups</h2>
        <${Status} state=${errors} what="errors" empty=${errors.data && errors.data.groups.length === 0 ? "No errors in this window." : null}>
          <table class="grid errors"><thead><tr><th>type</th><th>message</th><th>services</th><th class="num">count</th><th>trace</th></tr></thead>
          <tbody>${(errors.data ? errors.data.groups : []).slice(0, 30).map((g) => html`<tr>
            <td class="mono">${g.type}</td>
            <td class="wrap"><div>${g.message}</div>${(g.top_frames || []).length > 0 && html`<pre class="frames">${g.top_frames.join("\n")}</pre>`}</td>
            <td>${(g.services || []).join(", ")}</td><td class="num">${g.count}</td>
            <td>${(g.example_trace_ids || []).slice(0, 1).map((t) => html`<${Link} path="/traces" params=${{ ...shared, trace: t }} cls="mono trace-link">${t.slice(0, 8)}…<//>`)}</td></tr>`)}</tbody></table>
        <//>
      </section>
    </div>
  </div>`;
}

function sevRank(s) {
  const c = sevClass(s);
  return { "sev-fatal": 4, "sev-error": 3, "sev-warn": 2, "sev-info": 1, "sev-debug": 0 }[c];
}
