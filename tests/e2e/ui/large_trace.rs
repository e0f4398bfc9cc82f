//! Large data in the UI: a 5,000-span trace and a 10,000-row result.

use super::*;

/// A 5,000-span trace and a 10,000-row result render only what is visible
/// and stay quick to open and scroll.
#[test]
fn ui_large_trace_and_result_stay_smooth() {
    let loupe = Loupe::start(&[]);
    let t0 = now_ns() - 60_000_000_000;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let spans: Vec<Value> = (0..5000u64)
        .map(|i| {
            let parent = if i == 0 { String::new() } else { format!("{:016x}", (i - 1) / 4 + 1) };
            let start = t0 + (i as i64) * 100_000;
            json!({"traceId": trace_id, "spanId": format!("{:016x}", i + 1), "parentSpanId": parent,
                   "name": format!("op-{i}"), "kind": if i == 0 { 2 } else { 1 },
                   "startTimeUnixNano": start.to_string(),
                   "endTimeUnixNano": (start + 1_000_000_000 - (i as i64) * 150_000).max(start + 1000).to_string()})
        })
        .collect();
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "bulk"}}]},
        "scopeSpans": [{"spans": spans}]}]});
    let r = loupe.post(
        "/v1/traces",
        "application/json",
        body.to_string().into_bytes(),
    );
    assert_eq!(r.status().as_u16(), 200);
    let logs: Vec<Value> = (0..10_000i64)
        .map(|i| {
            json!({"timeUnixNano": (t0 + i * 1_000_000).to_string(), "severityText": "INFO", "severityNumber": 9,
                   "body": {"stringValue": format!("bulk line {i}")}})
        })
        .collect();
    let body = json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "bulk"}}]},
        "scopeLogs": [{"logRecords": logs}]}]});
    let r = loupe.post(
        "/v1/logs",
        "application/json",
        body.to_string().into_bytes(),
    );
    assert_eq!(r.status().as_u16(), 200);

    let mut b = Browser::start(&shots_dir());
    let base = format!("http://{}", loupe.http);

    let opened = Instant::now();
    b.navigate(&format!("{base}/traces?trace={trace_id}"));
    b.wait_for(
        "document.querySelectorAll('.wf-row').length > 10",
        WAIT,
        "the big waterfall",
    );
    let open_time = opened.elapsed();
    let rendered = count(&mut b, ".wf-row");
    assert!(rendered < 150, "{rendered} rows in the DOM for 5,000 spans");
    let header = b.eval("document.querySelector('.tracehead').innerText");
    assert!(header.as_str().unwrap().contains("5000 spans"), "{header}");
    // Scroll through the whole trace, one frame per step.
    let scrolled = b.eval(
        "(async () => { const el = document.querySelector('.wf-rows'); const t = performance.now(); \
         for (let i = 1; i <= 40; i++) { el.scrollTop = el.scrollHeight * i / 40; \
           await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))); } \
         return performance.now() - t; })()",
    );
    b.wait_for(
        "(() => { const el = document.querySelector('.wf-rows'); const rows = [...el.querySelectorAll('.wf-row')]; \
         const last = rows[rows.length - 1]; return el.scrollTop > 0 && rows.length > 10 && \
         Math.abs(last.getBoundingClientRect().bottom - el.getBoundingClientRect().bottom) < 30; })()",
        WAIT,
        "the last spans after scrolling",
    );
    b.type_into("input.find", "op-2500");
    b.wait_for(
        "document.querySelector('.wf-row.sel') && document.querySelector('.wf-row.sel').textContent.includes('op-2500')",
        WAIT,
        "the found span scrolled into view",
    );
    b.screenshot("large-trace");
    eprintln!(
        "5,000-span trace: open {open_time:?}, {rendered} rows in the DOM, 40 scroll steps in {scrolled} ms"
    );
    assert!(
        scrolled.as_f64().unwrap() < 10_000.0,
        "scrolling took {scrolled} ms"
    );

    let sql = "SELECT time, body FROM logs WHERE service = 'bulk' ORDER BY time LIMIT 10000";
    let opened = Instant::now();
    b.navigate(&format!(
        "{base}/sql?sql={}",
        sql.replace(' ', "%20").replace('\'', "%27")
    ));
    b.wait_for(
        "document.querySelector('[data-testid=sql-status]').textContent.startsWith('10,000 rows')",
        WAIT,
        "10,000 rows",
    );
    let rows = count(&mut b, ".rrow");
    assert!(rows < 150, "{rows} rows in the DOM for 10,000");
    b.eval("(() => { const el = document.querySelector('.rtable .vlist'); el.scrollTop = el.scrollHeight; })()");
    b.wait_for(
        "[...document.querySelectorAll('.rrow')].some(r => r.textContent.includes('bulk line 9999'))",
        WAIT,
        "the last row after scrolling",
    );
    eprintln!(
        "10,000-row result: shown in {:?}, {rows} rows in the DOM",
        opened.elapsed()
    );

    // 10,000 log lines: all in the result, a few dozen rows in the page.
    let opened = Instant::now();
    b.navigate(&format!(
        "{base}/logs?range=15m&q=service%3Abulk&limit=10000"
    ));
    b.wait_for(
        "document.querySelector('[data-testid=total]').textContent.startsWith('10,000 lines') && document.querySelectorAll('.logrow').length > 10",
        WAIT,
        "10,000 log lines",
    );
    let shown = opened.elapsed();
    let rows = count(&mut b, ".logrow");
    assert!(rows < 150, "{rows} log rows in the DOM for 10,000");
    let newest = texts(&mut b, ".logrow .b");
    assert_eq!(newest[0], "bulk line 9999", "newest first");
    let scrolled = b.eval(
        "(async () => { const el = document.querySelector('.logrows'); const t = performance.now(); \
         for (let i = 1; i <= 40; i++) { el.scrollTop = el.scrollHeight * i / 40; \
           await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))); } \
         return performance.now() - t; })()",
    );
    b.wait_for(
        "[...document.querySelectorAll('.logrow .b')].some(e => e.textContent === 'bulk line 0')",
        WAIT,
        "the oldest line after scrolling",
    );
    // A line far down, selected: its panel and the URL follow.
    b.click(".logrow:last-child");
    b.wait_for(
        "location.search.includes('line=') && document.querySelector('[data-testid=log-detail] pre.body')",
        WAIT,
        "the selected line's details",
    );
    b.screenshot("large-logs");
    eprintln!(
        "10,000-line log result: shown in {shown:?}, {rows} rows in the DOM, 40 scroll steps in {scrolled} ms"
    );
    b.assert_no_problems("large data");
}
