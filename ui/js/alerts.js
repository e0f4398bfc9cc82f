// Alerts: rules with their state and health, firing and pending alerts,
// history, receivers; create or edit a rule with a preview of its SQL.
import { html, useApi, useState, useEffect, useBus, Status, api, fmtTime, parseTime, setParams } from "./lib.js";

const JSON_HEADERS = { "content-type": "application/json" };

function StateBadge({ state }) {
  const cls = { firing: "sev-error", pending: "sev-warn", resolved: "sev-info", inactive: "muted" }[state] || "muted";
  return html`<span class=${"badge " + cls}>${state}</span>`;
}

/// The rule editor: fields of the rule API, a preview of the SQL's result
/// (through the SQL API) and save (PUT, which re-checks the SQL).
function RuleForm({ rule, receivers, onSaved, close }) {
  const blank = { name: "", sql: "SELECT service, count(*) AS errors FROM logs WHERE severity_number >= 17 AND time > now() - INTERVAL '5 minutes' GROUP BY service", every: "1m", for: "0s", column: "errors", op: ">", threshold: "0", receivers: [], summary: "{{ $labels.service }}: {{ $value }}" };
  const [f, setF] = useState(blank);
  const [preview, setPreview] = useState({ loading: false, data: null, error: null });
  const [state, setState] = useState({ saving: false, error: null });
  useEffect(() => {
    if (!rule) { setF(blank); return; }
    const r = rule.rule;
    setF({ name: rule.name, sql: r.sql, every: r.every, for: r.for, column: r.condition ? r.condition.column : "", op: r.condition ? r.condition.op : ">", threshold: r.condition ? String(r.condition.threshold) : "", receivers: r.receivers || [], summary: (r.annotations || {}).summary || "" });
  }, [rule ? rule.name : null]);
  const set = (k) => (e) => setF({ ...f, [k]: e.target.value });
  const runPreview = async () => {
    setPreview({ loading: true, data: null, error: null });
    try {
      const data = await api("/api/v1/sql", { method: "POST", headers: JSON_HEADERS, body: JSON.stringify({ sql: f.sql }) });
      setPreview({ loading: false, data, error: null });
    } catch (e) { setPreview({ loading: false, data: null, error: e.message }); }
  };
  const save = async (e) => {
    e.preventDefault();
    const body = { sql: f.sql, every: f.every, for: f.for, receivers: f.receivers, labels: rule ? rule.rule.labels : {}, annotations: f.summary ? { ...(rule ? rule.rule.annotations : {}), summary: f.summary } : {} };
    if (f.column) body.condition = { column: f.column, op: f.op, threshold: Number(f.threshold) };
    setState({ saving: true, error: null });
    try {
      await api(`/api/v1/alerts/rules/${encodeURIComponent(f.name)}`, { method: "PUT", headers: JSON_HEADERS, body: JSON.stringify(body) });
      setState({ saving: false, error: null });
      onSaved(f.name);
    } catch (err) { setState({ saving: false, error: err.message }); }
  };
  const toggle = (name) => setF({ ...f, receivers: f.receivers.includes(name) ? f.receivers.filter((n) => n !== name) : [...f.receivers, name] });
  return html`<form class="card form" onSubmit=${save} data-testid="rule-form">
    <h3>${rule ? `Edit rule ${rule.name}` : "New rule"}</h3>
    <label>Name <input value=${f.name} onInput=${set("name")} disabled=${!!rule} required pattern="[A-Za-z_][A-Za-z0-9_]*" data-testid="rule-name" /></label>
    <label>SQL <textarea rows="4" value=${f.sql} onInput=${set("sql")} data-testid="rule-sql" onKeyDown=${(e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); runPreview(); } }}></textarea></label>
    <div class="row">
      <label>Every <input size="5" value=${f.every} onInput=${set("every")} /></label>
      <label>For <input size="5" value=${f.for} onInput=${set("for")} /></label>
      <label>Condition <input size="10" placeholder="column" value=${f.column} onInput=${set("column")} data-testid="rule-column" /></label>
      <select value=${f.op} onChange=${set("op")}>${[">", ">=", "<", "<=", "==", "!="].map((o) => html`<option value=${o}>${o}</option>`)}</select>
      <input size="6" value=${f.threshold} onInput=${set("threshold")} data-testid="rule-threshold" />
    </div>
    <label>Summary <input value=${f.summary} onInput=${set("summary")} /></label>
    <div class="row">Receivers: ${receivers.length === 0 ? html`<span class="muted">none yet</span>` : receivers.map((r) => html`<label class="check"><input type="checkbox" checked=${f.receivers.includes(r.name)} onChange=${() => toggle(r.name)} /> ${r.name}</label>`)}</div>
    <div class="row">
      <button type="button" onClick=${runPreview} data-testid="rule-preview">Preview</button>
      <button class="primary" type="submit" disabled=${state.saving} data-testid="rule-save">Save</button>
      <button type="button" onClick=${close}>Close</button>
    </div>
    ${state.error && html`<div class="state error" role="alert">${state.error}</div>`}
    <${Status} state=${preview} what="preview" empty=${preview.data && preview.data.rows.length === 0 ? "The SQL returns no rows: nothing would fire now." : null}>
      ${preview.data && html`<table class="grid small" data-testid="rule-preview-table"><thead><tr>${preview.data.columns.map((c) => html`<th>${c.name}</th>`)}</tr></thead>
        <tbody>${preview.data.rows.slice(0, 20).map((r) => html`<tr>${r.map((v) => html`<td>${v === null ? "" : String(v)}</td>`)}</tr>`)}</tbody></table>`}
    <//>
  </form>`;
}

function ReceiverForm({ onSaved }) {
  const [f, setF] = useState({ name: "", type: "webhook", url: "", secret: "", group_by: "service" });
  const [error, setError] = useState(null);
  const set = (k) => (e) => setF({ ...f, [k]: e.target.value });
  const save = async (e) => {
    e.preventDefault();
    const body = { type: f.type, url: f.url, group_by: f.group_by.split(",").map((s) => s.trim()).filter(Boolean) };
    if (f.secret) body.secret = f.secret;
    try {
      await api(`/api/v1/alerts/receivers/${encodeURIComponent(f.name)}`, { method: "PUT", headers: JSON_HEADERS, body: JSON.stringify(body) });
      setError(null);
      onSaved();
    } catch (err) { setError(err.message); }
  };
  return html`<form class="row form" onSubmit=${save} data-testid="receiver-form">
    <input placeholder="name" value=${f.name} onInput=${set("name")} required />
    <select value=${f.type} onChange=${set("type")}><option value="webhook">webhook</option><option value="alertmanager">alertmanager</option></select>
    <input placeholder="https://…" size="30" value=${f.url} onInput=${set("url")} required />
    <input placeholder="whsec_… (optional)" value=${f.secret} onInput=${set("secret")} />
    <input placeholder="group by" size="10" value=${f.group_by} onInput=${set("group_by")} />
    <button class="primary" type="submit">Add receiver</button>
    ${error && html`<span class="state error" role="alert">${error}</span>`}
  </form>`;
}

export function AlertsPage({ params }) {
  const rules = useApi("/api/v1/alerts/rules");
  const alerts = useApi("/api/v1/alerts");
  const history = useApi("/api/v1/alerts/history?limit=50");
  const receivers = useApi("/api/v1/alerts/receivers");
  // The open editor is in the URL: edit=RULE, or new=1.
  const editing = params.new === "1" ? { new: true } : params.edit ? (rules.data || []).find((r) => r.name === params.edit) || null : null;
  const setEditing = (r) => setParams(r === null ? { edit: undefined, new: undefined } : r.new ? { new: "1", edit: undefined } : { edit: r.name, new: undefined });
  useBus("escape", () => setEditing(null));
  const reload = () => { rules.reload(); alerts.reload(); history.reload(); receivers.reload(); };
  useEffect(() => { const t = setInterval(reload, 10000); return () => clearInterval(t); }, []);
  const active = (alerts.data || []).filter((a) => a.state !== "resolved");
  return html`<div class="page alerts">
    <section class="card">
      <h3>Rules <button class="small" onClick=${() => setEditing({ new: true })} data-testid="new-rule">New rule</button></h3>
      <${Status} state=${rules} what="rules" empty=${rules.data && rules.data.length === 0 ? "No alert rules yet." : null}>
        <table class="grid" data-testid="rules"><thead><tr><th>rule</th><th>state</th><th>health</th><th>last evaluation</th><th>alerts</th><th></th></tr></thead>
          <tbody>${(rules.data || []).map((r) => html`<tr>
            <td>${r.name}</td><td><${StateBadge} state=${r.state} /></td>
            <td>${r.health === "error" ? html`<span class="sev-error" title=${r.last_evaluation && r.last_evaluation.error}>error: ${r.last_evaluation && r.last_evaluation.error}</span>` : r.health}</td>
            <td>${r.last_evaluation ? fmtTime(parseTime(r.last_evaluation.time), params.tz) : "–"}</td>
            <td>${r.alerts}</td>
            <td><button class="small" onClick=${() => setEditing(r)}>Edit</button></td></tr>`)}</tbody></table>
      <//>
    </section>
    ${editing && html`<${RuleForm} rule=${editing.new ? null : editing} receivers=${receivers.data || []} onSaved=${() => { setEditing(null); reload(); }} close=${() => setEditing(null)} />`}
    <section class="card">
      <h3>Firing and pending</h3>
      <${Status} state=${alerts} what="alerts" empty=${alerts.data && active.length === 0 ? "Nothing is firing." : null}>
        <table class="grid" data-testid="alerts"><thead><tr><th>rule</th><th>state</th><th>labels</th><th>value</th><th>since</th><th>summary</th></tr></thead>
          <tbody>${active.map((a) => html`<tr><td>${a.rule}</td><td><${StateBadge} state=${a.state} /></td>
            <td class="mono small">${Object.entries(a.labels).filter(([k]) => k !== "alertname").map(([k, v]) => `${k}=${v}`).join(" ")}</td>
            <td>${a.value}</td><td>${fmtTime(parseTime(a.firing_since || a.active_since), params.tz)}</td><td>${a.annotations.summary || ""}</td></tr>`)}</tbody></table>
      <//>
    </section>
    <section class="card">
      <h3>Receivers</h3>
      <${Status} state=${receivers} what="receivers">
        <table class="grid"><thead><tr><th>name</th><th>type</th><th>url</th><th>group by</th><th>signed</th></tr></thead>
          <tbody>${(receivers.data || []).map((r) => html`<tr><td>${r.name}</td><td>${r.type}</td><td class="mono small">${r.url}</td><td>${(r.group_by || []).join(", ")}</td><td>${r.secret_set ? "yes" : "no"}</td></tr>`)}</tbody></table>
      <//>
      <${ReceiverForm} onSaved=${reload} />
    </section>
    <section class="card">
      <h3>History</h3>
      <${Status} state=${history} what="history" empty=${history.data && history.data.length === 0 ? "No alert has changed state yet." : null}>
        <table class="grid small"><thead><tr><th>time</th><th>rule</th><th>state</th><th>labels</th><th>value</th></tr></thead>
          <tbody>${(history.data || []).map((h) => html`<tr><td>${fmtTime(parseTime(h.time), params.tz)}</td><td>${h.rule}</td><td><${StateBadge} state=${h.state} /></td>
            <td class="mono small">${Object.entries(h.labels).filter(([k]) => k !== "alertname").map(([k, v]) => `${k}=${v}`).join(" ")}</td><td>${h.value}</td></tr>`)}</tbody></table>
      <//>
    </section>
  </div>`;
}
