// SQL: editor with the tables and columns beside it, Ctrl/Cmd+Enter runs,
// sortable results (only visible rows rendered), a line chart when there
// is a time column, CSV download and "copy as curl".
import { html, useApi, useState, useEffect, useRef, useMemo, useBus, Status, setParams, api, VirtualList, download, toCsv, parseTime } from "./lib.js";
import uPlot from "/vendor/uplot-1.6.32.esm.js";

const DEFAULT_SQL = "SELECT service, count(*) AS spans,\n  avg(CASE WHEN status_code = 'error' THEN 1.0 ELSE 0 END) AS error_rate\nFROM spans\nWHERE start_time > now() - INTERVAL '15 minutes'\nGROUP BY service ORDER BY spans DESC";
const TABLES = ["logs", "spans", "metrics"];

function shortType(t) {
  if (t.startsWith("Timestamp")) return "timestamp";
  if (t.startsWith("Map(")) return "map<text, text>";
  if (t.startsWith("List(")) return "list";
  return t.toLowerCase().replace("utf8", "text");
}

function Schema({ insert }) {
  const [open, setOpen] = useState("spans");
  const [cols, setCols] = useState({});
  useEffect(() => {
    for (const t of TABLES) api("/api/v1/sql", { method: "POST", body: JSON.stringify({ sql: `DESCRIBE ${t}` }) })
      .then((r) => setCols((c) => ({ ...c, [t]: r.rows })), () => setCols((c) => ({ ...c, [t]: [] })));
  }, []);
  return html`<aside class="card schema"><h3>Tables</h3>
    ${TABLES.map((t) => html`<div class="table">
      <button class="link tname" onClick=${() => setOpen(open === t ? null : t)}>${open === t ? "▾" : "▸"} ${t}</button>
      ${open === t && html`<div class="cols">${(cols[t] || []).map(([c, ty]) => html`<div class="col" onClick=${() => insert(c)} title="insert"><span class="mono">${c}</span> <span class="muted small">${shortType(ty)}</span></div>`)}</div>`}
    </div>`)}
  </aside>`;
}

function Chart({ result }) {
  const ref = useRef(null);
  const spec = useMemo(() => {
    const ti = result.columns.findIndex((c) => /^Timestamp|^Date/.test(c.type));
    if (ti < 0 || result.rows.length < 2) return null;
    const ni = result.columns.map((c, i) => i).filter((i) => i !== ti && /Int|Float|Decimal|UInt/.test(result.columns[i].type));
    if (!ni.length) return null;
    const order = result.rows.map((r, i) => i).sort((a, b) => parseTime(result.rows[a][ti]) - parseTime(result.rows[b][ti]));
    const xs = order.map((i) => parseTime(result.rows[i][ti]) / 1000);
    return { xs, series: ni.map((i) => ({ name: result.columns[i].name, ys: order.map((j) => result.rows[j][i]) })) };
  }, [result]);
  useEffect(() => {
    if (!spec || !ref.current) return;
    const colours = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1"];
    const muted = getComputedStyle(document.documentElement).getPropertyValue("--muted").trim();
    const u = new uPlot({
      width: ref.current.clientWidth || 800, height: 180,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      axes: [{ stroke: muted, values: (u, splits) => splits.map((v) => new Date(v * 1000).toISOString().slice(11, 19)) }, { stroke: muted }],
      series: [{}, ...spec.series.map((s, i) => ({ label: s.name, stroke: colours[i % colours.length], width: 1.5 }))],
    }, [spec.xs, ...spec.series.map((s) => s.ys)], ref.current);
    return () => u.destroy();
  }, [spec]);
  return spec ? html`<div class="sqlchart" ref=${ref}></div>` : null;
}

export function SqlPage({ params }) {
  const sql = params.sql || DEFAULT_SQL;
  const [draft, setDraft] = useState(sql);
  const [state, setState] = useState({ loading: false, data: null, error: null });
  // The sort is in the URL: sort=N (column N, from 1, ascending) or -N.
  const sortN = parseInt(params.sort, 10);
  const sort = sortN ? { i: Math.abs(sortN) - 1, dir: Math.sign(sortN) } : null;
  const setSort = (x) => setParams({ sort: x ? String((x.i + 1) * x.dir) : undefined }, true);
  const [copied, setCopied] = useState("");
  const [tick, setTick] = useState(0);
  const editor = useRef(null);
  useEffect(() => setDraft(sql), [sql]);
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true, error: null }));
    api("/api/v1/sql", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ sql }) })
      .then((data) => live && setState({ loading: false, data, error: null }), (e) => live && setState({ loading: false, data: null, error: e.message }));
    return () => { live = false; };
  }, [sql, tick]);
  const run = () => { if (draft === sql) setTick((t) => t + 1); else setParams({ sql: draft, sort: undefined }); };
  useBus("run", run);
  const data = state.data;
  const rows = useMemo(() => {
    if (!data) return [];
    if (!sort) return data.rows;
    const { i, dir } = sort;
    return [...data.rows].sort((a, b) => {
      const x = a[i], y = b[i];
      if (x === y) return 0;
      if (x === null) return 1;
      if (y === null) return -1;
      return (typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y))) * dir;
    });
  }, [data, sort]);
  const curl = `curl -s ${location.origin}/api/v1/sql -H 'content-type: application/json' -d '${JSON.stringify({ sql: draft }).replace(/'/g, "'\\''")}'`;
  const copy = async () => {
    try { await navigator.clipboard.writeText(curl); setCopied("Copied"); } catch { setCopied("Select and copy:"); }
  };
  const insert = (text) => {
    const el = editor.current;
    if (!el) return;
    const a = el.selectionStart, b = el.selectionEnd;
    setDraft(draft.slice(0, a) + text + draft.slice(b));
    setTimeout(() => { el.focus(); el.selectionStart = el.selectionEnd = a + text.length; });
  };
  const widths = data ? data.columns.map(() => `minmax(90px, 1fr)`).join(" ") : "";
  return html`<div class="page sql">
    <${Schema} insert=${insert} />
    <div class="sqlmain">
      <section class="card">
        <textarea ref=${editor} class="editor mono" data-search spellcheck="false" value=${draft} rows="7" onInput=${(e) => setDraft(e.target.value)}></textarea>
        <div class="row">
          <button class="primary" onClick=${run} data-testid="run">Run <span class="small hint-on-primary">Ctrl+Enter</span></button>
          <button onClick=${copy}>Copy as curl</button>
          <button disabled=${!data} onClick=${() => download("loupe-query.csv", toCsv(data.columns.map((c) => c.name), rows), "text/csv")}>CSV</button>
          <span class="spacer"></span>
          <span class="muted small" data-testid="sql-status">${state.loading ? "Running…" : data ? `${data.rows.length.toLocaleString("en-US")} rows${data.truncated ? " (truncated)" : ""} · ${Math.round(data.elapsed_ms)} ms` : ""}</span>
        </div>
        ${copied && html`<div class="curl"><span class="muted small">${copied}</span> <input class="mono" readonly value=${curl} onFocus=${(e) => e.target.select()} /></div>`}
      </section>
      <section class="card">
        <${Status} state=${state} what="the result" empty=${data && !data.rows.length ? "The query returned no rows." : null}>
          ${data && html`<${Chart} result=${data} />
          <div class="rtable" role="table">
            <div class="rhead" style=${{ gridTemplateColumns: widths }}>${data.columns.map((c, i) => html`<div class="th" title=${c.type} onClick=${() => setSort(sort && sort.i === i ? (sort.dir > 0 ? { i, dir: -1 } : null) : { i, dir: 1 })}>${c.name}${sort && sort.i === i ? (sort.dir > 0 ? " ▲" : " ▼") : ""}</div>`)}</div>
            <${VirtualList} items=${rows} rowHeight=${24} height=${Math.min(520, rows.length * 24 + 4)} render=${(r, i) => html`<div key=${i} class="rrow" style=${{ gridTemplateColumns: widths }}>${r.map((v) => html`<div class="td ${typeof v === "number" ? "num" : ""}" title=${v === null ? "null" : typeof v === "object" ? JSON.stringify(v) : String(v)}>${v === null ? html`<span class="muted">null</span>` : typeof v === "object" ? JSON.stringify(v) : String(v)}</div>`)}</div>`} />
          </div>`}
        <//>
      </section>
    </div>
  </div>`;
}
