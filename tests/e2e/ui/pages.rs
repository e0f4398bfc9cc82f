//! Every page of the UI in one Chromium session against `loupe serve
//! --demo`, one function per page, in the order a user meets them.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{WAIT, count, get, ms, now_ns, param_ns, since_navigation, texts, url};
use crate::browser::Browser;
use crate::harness::Loupe;
use crate::shared::FAULT_NS;

/// Logs: first load, a search, a histogram drag, a row's details, live
/// tail. Returns when the page was first opened (ns) and its first load.
pub(super) fn logs(b: &mut Browser, base: &str) -> (i64, f64) {
    let started = now_ns();
    let t0 = Instant::now();
    b.navigate(&format!("{base}/logs?range=15m"));
    b.wait_for(
        "document.querySelectorAll('.logrow').length > 0",
        WAIT,
        "log lines",
    );
    let first_load = since_navigation(b);
    // A window the demo's data fills, so a drag over its second half hits lines.
    std::thread::sleep(Duration::from_secs(8).saturating_sub(t0.elapsed()));
    let window = format!("from={}&to={}", started - 2_000_000_000, now_ns());
    b.navigate(&format!("{base}/logs?{window}"));
    b.wait_for("document.querySelectorAll('.logrow').length > 0 && document.querySelector('.histogram .u-over')", WAIT, "log lines in the window");
    b.key("/", "Slash", 191, 0);
    assert_eq!(
        b.eval("document.activeElement && document.activeElement.matches('input.search')"),
        json!(true),
        "`/` focuses the search box"
    );
    b.type_into("input.search", "service:cart");
    b.key("Enter", "Enter", 13, 0);
    b.wait_for(
        "location.search.includes('q=service%3Acart') && document.querySelectorAll('.logrow').length > 0 \
         && [...document.querySelectorAll('.logrow .svc')].every(e => e.textContent === 'cart')",
        WAIT,
        "only cart's lines",
    );
    let total_before = b.eval("document.querySelector('[data-testid=total] b').textContent");
    let (x, y, w, h) = b.rect(".histogram .u-over");
    b.drag((x + w * 0.5, y + h / 2.0), (x + w - 1.0, y + h / 2.0));
    let url = b.wait_for(
        "location.search.includes('from=') && location.search.includes('to=') && location.search",
        WAIT,
        "the dragged range in the URL",
    );
    let params: Vec<(String, String)> = url::parse(url.as_str().unwrap());
    let param = |k: &str| {
        params
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let (from, to) = (param("from"), param("to"));
    assert_eq!(param("q"), "service:cart", "the query survives the drag");
    b.wait_for(
        &format!(
            "(() => {{ const f = Date.parse({f}), t = Date.parse({t}); \
             const rows = [...document.querySelectorAll('.logrow .t')]; \
             return rows.length > 0 && rows.every(e => {{ const x = Date.parse(e.textContent.replace(' ', 'T') + 'Z'); return x >= f - 1 && x <= t + 1; }}); }})()",
            f = json!(from),
            t = json!(to)
        ),
        WAIT,
        "lines in the narrowed range",
    );
    let times = b.eval("[...document.querySelectorAll('.logrow .t')].map(e => e.textContent)");
    let (from_ms, to_ms) = (ms(&from), ms(&to));
    let (w0, w1) = (
        ms(&(started - 2_000_000_000).to_string()),
        ms(&param_ns(&window, "to")),
    );
    assert!(
        from_ms > w0 && to_ms <= w1 + 1.0 && to_ms - from_ms < (w1 - w0) * 0.7,
        "narrowed: {from} {to} within {window}"
    );
    for t in times.as_array().unwrap() {
        let t = ms(&t.as_str().unwrap().replace(' ', "T"));
        assert!(
            t >= from_ms - 1.0 && t <= to_ms + 1.0,
            "{t} outside {from}..{to}"
        );
    }
    eprintln!("logs: {total_before} lines before the drag; range now {from} .. {to}");
    // A row opens the side panel: every attribute, context lines, the trace.
    let body = b.eval("document.querySelector('.logrow .b').textContent");
    b.click(".logrow");
    let detail = b.wait_for(
        "location.search.includes('line=') && document.querySelectorAll('[data-testid=log-detail] [data-testid=context-hit]').length > 0 \
         && document.querySelector('[data-testid=log-detail]').innerText",
        WAIT,
        "the line's details with its context",
    );
    let detail = detail.as_str().unwrap().to_string();
    assert!(detail.contains("service.instance.id"), "{detail}");
    assert!(
        detail.contains(body.as_str().unwrap()),
        "{body} in {detail}"
    );
    let hit = texts(b, "[data-testid=log-detail] [data-testid=context-hit]");
    assert!(
        hit.iter().any(|h| h.contains(body.as_str().unwrap())),
        "the context's hit is the line: {hit:?}"
    );
    if detail.contains("trace_id") {
        assert!(
            count(b, "[data-testid=log-detail] a.trace-link") > 0,
            "a trace link"
        );
    }
    b.screenshot("logs");
    // The selection is in the URL (a copied link opens the same panel, below).
    let link = b.eval("location.href").as_str().unwrap().to_string();
    b.key("Escape", "Escape", 27, 0);
    b.wait_for(
        "!document.querySelector('[data-testid=log-detail]') && !location.search.includes('line=')",
        WAIT,
        "Esc closes the details",
    );
    // Back reopens it, back closes it again (the state before the click),
    // back once more restores the search before the drag.
    b.eval("history.back()");
    b.wait_for(
        "location.search.includes('line=') && document.querySelector('[data-testid=log-detail] pre.body')",
        WAIT,
        "back reopens the details",
    );
    b.eval("history.back()");
    b.wait_for(
        "!location.search.includes('line=') && !document.querySelector('[data-testid=log-detail]')",
        WAIT,
        "back to before the click",
    );
    b.eval("history.back()");
    b.wait_for(
        &format!(
            "location.search.includes('q=service') && location.search.includes({})",
            json!(window)
        ),
        WAIT,
        "back to the unnarrowed search",
    );
    b.navigate(&link);
    b.wait_for(
        &format!(
            "document.querySelector('[data-testid=log-detail] pre.body') && document.querySelector('[data-testid=log-detail] pre.body').textContent === {} \
             && document.querySelector('.logrow.sel')",
            body
        ),
        WAIT,
        "the linked line's details",
    );

    // Live tail: new lines stream in above without moving what is in view.
    b.navigate(&format!("{base}/logs?{window}&live=1"));
    b.wait_for(
        "document.querySelectorAll('.logrow').length > 30",
        WAIT,
        "the window's lines",
    );
    b.wait_for(
        "/\\d+ new/.test(document.querySelector('[data-testid=live]').textContent)",
        WAIT,
        "live lines",
    );
    b.eval("document.querySelector('.logrows').scrollTop = 240");
    let at_top = "(() => { const r = document.querySelector('.logrows').getBoundingClientRect(); \
                  const row = document.elementFromPoint(r.left + 300, r.top + 5).closest('.logrow'); return row && row.textContent; })()";
    std::thread::sleep(Duration::from_millis(300));
    let before = b.eval(at_top);
    let live_before = b.eval(
        "parseInt(document.querySelector('[data-testid=live]').textContent.match(/(\\d+) new/)[1])",
    );
    b.wait_for(
        &format!("parseInt(document.querySelector('[data-testid=live]').textContent.match(/(\\d+) new/)[1]) > {live_before}"),
        WAIT,
        "more live lines",
    );
    assert!(before.is_string(), "a line at the top of the list");
    assert_eq!(b.eval(at_top), before, "the line in view stays in view");
    b.screenshot("logs-live");
    b.click("[data-testid=live-toggle]");
    b.wait_for(
        "!document.querySelector('[data-testid=live]') && !location.search.includes('live=')",
        WAIT,
        "live tail stopped",
    );
    b.assert_no_problems("logs");
    (started, first_load)
}

/// Traces: open a trace from the results, find a span, walk the critical
/// path, zoom and fold; links reproduce the view.
pub(super) fn traces(b: &mut Browser, base: &str) -> f64 {
    b.navigate(&format!(
        "{base}/traces?range=15m&service=frontend&operation=POST%20%2Fcheckout"
    ));
    b.wait_for(
        "document.querySelectorAll('tr[data-trace]').length > 0",
        WAIT,
        "trace results",
    );
    let first_load = since_navigation(b);
    assert!(count(b, "svg.scatter .dot") > 0, "the scatter has dots");
    b.screenshot("traces");
    b.click("tr[data-trace]");
    b.wait_for(
        "location.search.includes('trace=') && document.querySelectorAll('.wf-row').length > 5",
        WAIT,
        "the waterfall",
    );
    b.type_into("input.find", "payment");
    b.wait_for(
        "/^1 of \\d+$/.test(document.querySelector('[data-testid=find-count]').textContent) && document.querySelectorAll('.wf-row.match').length > 0",
        WAIT,
        "find-in-trace matches",
    );
    b.wait_for(
        "document.querySelector('[data-testid=span-detail]')",
        WAIT,
        "the found span's details",
    );
    let found = b.eval("document.querySelector('[data-testid=span-detail]').innerText");
    assert!(
        found.as_str().unwrap().to_lowercase().contains("payment"),
        "{found}"
    );
    assert!(count(b, ".wf-row.crit") > 0, "the critical path is marked");
    b.type_into("input.find", "");
    b.click("[data-testid=crit-next]");
    let first_crit = b.wait_for(
        "new URLSearchParams(location.search).get('span')",
        WAIT,
        "a critical-path span selected",
    );
    b.click("[data-testid=crit-next]");
    b.wait_for(
        &format!("new URLSearchParams(location.search).get('span') !== {first_crit}"),
        WAIT,
        "the next critical-path span",
    );
    b.screenshot("trace-view");
    // Zoom: drag over the first half of the time axis.
    let first_tick = b.eval("document.querySelectorAll('.wf-ruler .tick')[4].textContent");
    let (x, y, w, h) = b.rect(".wf-ruler");
    b.drag((x + 2.0, y + h / 2.0), (x + w * 0.5, y + h / 2.0));
    b.wait_for(
        &format!("location.search.includes('zoom=') && document.querySelectorAll('.wf-ruler .tick')[4].textContent !== {first_tick} && [...document.querySelectorAll('.tools button')].some(b => b.textContent === 'Reset zoom')"),
        WAIT,
        "the zoomed time axis",
    );
    b.click(".tools button:last-child");
    b.wait_for(
        &format!("!location.search.includes('zoom=') && document.querySelectorAll('.wf-ruler .tick')[4].textContent === {first_tick}"),
        WAIT,
        "the zoom reset",
    );
    let collapsible = count(b, ".wf-row .twisty[title=collapse]");
    let rows = count(b, ".wf-row");
    b.click(".wf-row .twisty[title=collapse]");
    b.wait_for(
        &format!("document.querySelectorAll('.wf-row').length < {rows}"),
        WAIT,
        "a collapsed subtree",
    );
    // Zoom, collapsed subtrees, find and the span are in the URL: a link
    // shows the same waterfall.
    b.drag((x + 2.0, y + h / 2.0), (x + w * 0.5, y + h / 2.0));
    let link = b.wait_for(
        "location.search.includes('fold=') && location.search.includes('zoom=') && location.search.includes('span=') && location.href",
        WAIT,
        "the trace view's state in the URL",
    );
    let folded = count(b, ".wf-row");
    let ticks = texts(b, ".wf-ruler .tick");
    let selected = b.eval("document.querySelector('[data-testid=span-detail] h3').textContent");
    assert!(selected.is_string(), "a span's details");
    b.navigate(link.as_str().unwrap());
    b.wait_for(
        &format!(
            "document.querySelectorAll('.wf-row').length === {folded} && document.querySelector('[data-testid=span-detail] h3') \
             && document.querySelector('[data-testid=span-detail] h3').textContent === {selected}"
        ),
        WAIT,
        "the linked trace view",
    );
    assert_eq!(texts(b, ".wf-ruler .tick"), ticks, "the same zoom");
    assert!(collapsible > 0);
    assert!(
        count(b, ".tracelogs .ctxline") > 0,
        "the trace's logs beside it"
    );
    b.screenshot("trace-view");
    b.assert_no_problems("traces");
    first_load
}

/// Services: the table with sparklines, the graph, one service split by
/// operation and by instance.
pub(super) fn services(b: &mut Browser, loupe: &Loupe, base: &str, started: i64) -> f64 {
    let window = format!("from={}&to={}", started - 2_000_000_000, now_ns());
    b.navigate(&format!("{base}/services?{window}"));
    b.wait_for("document.querySelectorAll('tr[data-service]').length >= 5 && document.querySelectorAll('svg.graph .node').length >= 5", WAIT, "services and the graph");
    let first_load = since_navigation(b);
    assert!(count(b, "svg.spark polyline") > 0, "sparklines drawn");
    let services = texts(b, "tr[data-service] td:first-child");
    assert!(services.iter().any(|s| s == "checkout"), "{services:?}");
    b.click("svg.graph .node[data-node=checkout] rect");
    let info = b.wait_for("location.search.includes('node=checkout') && document.querySelector('.graphinfo').textContent.includes('checkout') && document.querySelector('.graphinfo').textContent", WAIT, "the node's numbers");
    assert!(info.as_str().unwrap().contains("called"), "{info}");
    b.screenshot("services");
    // `/` focuses the filter; the filter is in the URL.
    b.key("/", "Slash", 191, 0);
    assert_eq!(
        b.eval("document.activeElement && document.activeElement.matches('input.filter')"),
        json!(true),
        "`/` focuses the services filter"
    );
    b.type_into("input.filter", "check");
    b.wait_for("location.search.includes('filter=check') && document.querySelectorAll('tr[data-service]').length === 1", WAIT, "the filtered list");
    // checkout's page: RED over time, then per operation and per instance.
    b.click("tr[data-service=checkout]");
    b.wait_for(
        "location.search.includes('service=checkout') && document.querySelector('[data-testid=chart-rate] canvas') \
         && document.querySelector('[data-testid=chart-latency] canvas') && document.querySelectorAll('[data-testid=split] tr[data-group]').length > 0 \
         && document.querySelector('[data-testid=split-latency] canvas')",
        WAIT,
        "checkout's RED charts and its operations",
    );
    let operations = texts(b, "[data-testid=split] tr[data-group] td:first-child");
    let api: Value = get(
        loupe,
        &format!("/api/v1/services?{window}&service=checkout&by=operation")
            .replace("from=", "start=")
            .replace("to=", "end="),
        &[],
    )
    .json()
    .unwrap();
    let listed: Vec<String> = api["services"][0]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["value"].as_str().unwrap().to_string())
        .collect();
    for op in &operations {
        assert!(listed.contains(op), "{op} shown, API lists {listed:?}");
    }
    b.click("[data-testid=by] button[data-by=instance]");
    b.wait_for(
        "location.search.includes('by=instance') && document.querySelectorAll('[data-testid=split] tr[data-group]').length > 0 \
         && [...document.querySelectorAll('[data-testid=split] tr[data-group]')].every(r => r.dataset.group.startsWith('checkout'))",
        WAIT,
        "checkout's instances",
    );
    // The charts' legends name each instance's line.
    b.wait_for(
        "(() => { const l = [...document.querySelectorAll('[data-testid=split-rate] .u-legend .u-label')].map(e => e.textContent).filter(t => t !== 'Time'); \
         return l.length > 0 && l.every(t => t.startsWith('checkout')); })()",
        WAIT,
        "a line per instance",
    );
    b.screenshot("service-page");
    // Back returns to the split by operation, then to the list.
    b.eval("history.back()");
    b.wait_for(
        "!location.search.includes('by=') && document.querySelector('[data-testid=by] button.on').textContent === 'operation'",
        WAIT,
        "back to the split by operation",
    );
    b.eval("history.back()");
    b.wait_for(
        "!location.search.includes('service=') && document.querySelectorAll('tr[data-service]').length === 1",
        WAIT,
        "back to the filtered list",
    );
    b.assert_no_problems("services");
    first_load
}

/// SQL: type a query, Ctrl+Enter, sort; the sort survives a link.
pub(super) fn sql(b: &mut Browser, base: &str) -> f64 {
    b.navigate(&format!("{base}/sql"));
    b.wait_for(
        "document.querySelectorAll('.rrow').length > 0",
        WAIT,
        "the default query's result",
    );
    let first_load = since_navigation(b);
    b.type_into(
        "textarea.editor",
        "SELECT service, count(*) AS n FROM logs GROUP BY service ORDER BY service",
    );
    b.key("Enter", "Enter", 13, 2);
    b.wait_for(
        "location.search.includes('sql=') && document.querySelector('.rhead .th:last-child').textContent.startsWith('n') && document.querySelectorAll('.rrow').length >= 5",
        WAIT,
        "the typed query's result",
    );
    let names = texts(b, ".rrow .td:first-child");
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "ORDER BY service");
    b.click(".rhead .th:last-child");
    b.click(".rhead .th:last-child");
    let counts: Vec<f64> = texts(b, ".rrow .td:last-child")
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] >= w[1]),
        "sorted descending: {counts:?}"
    );
    // The sort is in the URL: the link shows the same order.
    let link = b.wait_for(
        "location.search.includes('sort=-2') && location.href",
        WAIT,
        "the sort in the URL",
    );
    b.navigate(link.as_str().unwrap());
    b.wait_for(
        "document.querySelector('.rhead .th:last-child') && document.querySelector('.rhead .th:last-child').textContent.endsWith('▼') && document.querySelectorAll('.rrow').length >= 5",
        WAIT,
        "the linked sorted result",
    );
    let again: Vec<f64> = texts(b, ".rrow .td:last-child")
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(
        again.windows(2).all(|w| w[0] >= w[1]),
        "sorted descending: {again:?}"
    );
    assert!(count(b, ".schema .col") > 5, "columns listed");
    b.screenshot("sql");
    b.assert_no_problems("sql");
    first_load
}

/// Capacity: a policy, a schedule and a baseline made and edited in the
/// page, each saved through the API; a decision with its reason.
pub(super) fn capacity(b: &mut Browser, loupe: &Loupe, base: &str) -> f64 {
    b.navigate(&format!("{base}/capacity"));
    b.wait_for(
        "document.querySelector('[data-testid=new-policy]') && !document.querySelector('.spinner')",
        WAIT,
        "the capacity page",
    );
    let first_load = since_navigation(b);
    b.click("[data-testid=new-policy]");
    b.wait_for(
        "document.querySelector('[data-testid=policy-form]')",
        WAIT,
        "the policy form",
    );
    b.type_into("form input[name=service]", "checkout");
    b.type_into("form input[name=webhook_url]", "http://127.0.0.1:9/hook");
    b.type_into("form input[name=min]", "2");
    b.type_into("form input[name=max]", "7");
    b.type_into("form input[name=evaluation_interval]", "1s");
    b.click("form button[type=submit]");
    b.wait_for("document.querySelector('[data-testid=saved]') && document.querySelector('tr[data-policy=checkout]')", WAIT, "the new policy saved and listed");
    let policy: Value = get(loupe, "/api/v1/capacity/policies/checkout", &[])
        .json()
        .unwrap();
    assert_eq!(policy["max"], 7, "{policy}");
    assert_eq!(policy["webhook_url"], "http://127.0.0.1:9/hook");
    b.click("[data-testid=edit-checkout]");
    b.wait_for("location.search.includes('edit=checkout') && document.querySelector('form input[name=max]').value === '7'", WAIT, "the edit form");
    b.type_into("form input[name=max]", "9");
    b.click("form button[type=submit]");
    b.wait_for("[...document.querySelectorAll('tr[data-policy=checkout] td')].some(td => td.textContent === '9')", WAIT, "the edited policy listed");
    let policy: Value = get(loupe, "/api/v1/capacity/policies/checkout", &[])
        .json()
        .unwrap();
    assert_eq!(policy["max"], 9, "{policy}");
    assert_eq!(policy["min"], 2);
    b.click("[data-testid=new-schedule]");
    b.wait_for(
        "document.querySelector('[data-testid=schedule-form]')",
        WAIT,
        "the schedule form",
    );
    for (name, value) in [
        ("name", "weekday-peak"),
        ("service", "checkout"),
        ("start_cron", "0 8 * * 1-5"),
        ("end_cron", "0 20 * * 1-5"),
        ("desired_instances", "4"),
    ] {
        b.type_into(
            &format!("[data-testid=schedule-form] input[name={name}]"),
            value,
        );
    }
    b.click("[data-testid=schedule-form] button[type=submit]");
    b.wait_for(
        "[...document.querySelectorAll('td')].some(td => td.textContent === 'weekday-peak')",
        WAIT,
        "the schedule listed",
    );
    let schedule: Value = get(loupe, "/api/v1/capacity/schedules/weekday-peak", &[])
        .json()
        .unwrap();
    assert_eq!(schedule["desired_instances"], 4, "{schedule}");
    assert_eq!(schedule["start_cron"], "0 8 * * 1-5");
    // A baseline by hand, then edited; each saved through the API.
    b.key("Escape", "Escape", 27, 0);
    b.wait_for("!document.querySelector('[data-testid=schedule-form]') && document.querySelector('[data-testid=new-baseline]')", WAIT, "the baselines list");
    b.click("[data-testid=new-baseline]");
    for (name, value) in [
        ("service", "checkout"),
        ("max_rps_per_instance", "50"),
        ("p99_ms", "500"),
        ("max_error_rate", "0.01"),
    ] {
        b.type_into(
            &format!("[data-testid=baseline-form] input[name={name}]"),
            value,
        );
    }
    b.click("[data-testid=baseline-form] button[type=submit]");
    b.wait_for(
        "document.querySelector('[data-testid=baseline-form] .good')",
        WAIT,
        "the baseline saved",
    );
    let baseline: Value = get(loupe, "/api/v1/capacity/baselines/checkout", &[])
        .json()
        .unwrap();
    assert_eq!(baseline["max_rps_per_instance"], 50.0, "{baseline}");
    b.key("Escape", "Escape", 27, 0);
    b.click("tr[data-baseline=checkout]");
    b.wait_for("location.search.includes('key=checkout') && document.querySelector('[data-testid=baseline-form] input[name=max_rps_per_instance]') \
         && document.querySelector('[data-testid=baseline-form] input[name=max_rps_per_instance]').value === '50'", WAIT, "the baseline's edit form");
    b.type_into(
        "[data-testid=baseline-form] input[name=max_rps_per_instance]",
        "60",
    );
    b.click("[data-testid=baseline-form] button[type=submit]");
    b.wait_for(
        "document.querySelector('[data-testid=baseline-form] .good')",
        WAIT,
        "the edited baseline saved",
    );
    let baseline: Value = get(loupe, "/api/v1/capacity/baselines/checkout", &[])
        .json()
        .unwrap();
    assert_eq!(baseline["max_rps_per_instance"], 60.0, "{baseline}");
    assert_eq!(baseline["slo"]["p99_ms"], 500.0, "{baseline}");
    b.key("Escape", "Escape", 27, 0);
    // A decision (every second now) with its reason and evidence.
    b.wait_for(
        "location.search === '' && document.querySelectorAll('tr[data-decision]').length > 0",
        WAIT,
        "a decision",
    );
    let sequence = b.eval("document.querySelector('tr[data-decision]').dataset.decision");
    let sequence = sequence.as_str().unwrap();
    let row = format!("tr[data-decision=\"{sequence}\"]");
    let reason = texts(b, &format!("{row} td:last-child"))[0].clone();
    b.click(&row);
    let shown = b.wait_for(
        "location.search.includes('decision=') && document.querySelector('[data-testid=evidence] [data-testid=reason]') && document.querySelector('[data-testid=evidence]').innerText",
        WAIT,
        "the decision's evidence",
    );
    let shown = shown.as_str().unwrap();
    assert!(shown.contains(&reason), "{reason} in {shown}");
    assert!(shown.contains("ready instances"), "{shown}");
    assert!(
        count(b, "[data-testid=signals] tbody tr") > 0,
        "the signals behind the decision"
    );
    b.screenshot("capacity-decision");
    b.screenshot("capacity");
    b.assert_no_problems("capacity");
    first_load
}

/// Alerts: a rule made in the editor, its SQL previewed, saved through
/// the API.
pub(super) fn alerts(b: &mut Browser, loupe: &Loupe, base: &str) {
    b.navigate(&format!("{base}/alerts"));
    b.wait_for(
        "document.querySelector('.state.empty, [data-testid=rules]')",
        WAIT,
        "the rules list",
    );
    b.click("[data-testid=new-rule]");
    b.wait_for(
        "location.search.includes('new=1') && document.querySelector('[data-testid=rule-form]')",
        WAIT,
        "the rule editor",
    );
    b.type_into("[data-testid=rule-name]", "error_logs");
    b.click("[data-testid=rule-preview]");
    b.wait_for(
        "document.querySelector('[data-testid=rule-preview-table] th, [data-testid=rule-form] .state.empty')",
        WAIT,
        "the SQL preview",
    );
    b.type_into("[data-testid=rule-threshold]", "1000000");
    b.click("[data-testid=rule-save]");
    b.wait_for(
        "[...document.querySelectorAll('[data-testid=rules] td')].some(td => td.textContent === 'error_logs')",
        WAIT,
        "the saved rule listed",
    );
    let rule: Value = get(loupe, "/api/v1/alerts/rules/error_logs", &[])
        .json()
        .unwrap();
    assert_eq!(
        rule["rule"]["condition"]["threshold"], 1_000_000.0,
        "{rule}"
    );
    assert_eq!(rule["rule"]["condition"]["column"], "errors", "{rule}");
    b.screenshot("alerts");
    b.assert_no_problems("alerts");
}

/// Problems: the incident's suspects, one's evidence, a trace from it,
/// back, and Esc to close.
pub(super) fn problems(b: &mut Browser, base: &str, truth_path: &Path) -> f64 {
    let truth: Value = serde_json::from_str(&std::fs::read_to_string(truth_path).unwrap()).unwrap();
    let fault = truth["fault"]["start_unix_nano"].as_i64().unwrap();
    b.navigate(&format!("{base}/?from={fault}&to={}", fault + FAULT_NS));
    b.wait_for(
        "document.querySelectorAll('.suspect').length > 0",
        WAIT,
        "suspects",
    );
    let first_load = since_navigation(b);
    // The injected fault is among the suspects (the demo's own traffic runs beside it).
    let explanations = texts(b, ".suspect .explanation");
    assert!(
        explanations.iter().any(|e| e.contains("payment-2")),
        "suspects: {explanations:?}"
    );
    b.click(".suspect .evidence-btn");
    b.wait_for("location.search.includes('open=0') && document.querySelector('.suspect.open .evidence a.trace-link')", WAIT, "the suspect's evidence");
    b.screenshot("problems");
    b.click(".suspect.open .evidence a.trace-link");
    b.wait_for(
        "location.pathname === '/traces' && document.querySelectorAll('.wf-row').length > 0",
        WAIT,
        "the evidence trace",
    );
    b.eval("history.back()");
    b.wait_for(
        "location.pathname === '/' && document.querySelector('.suspect.open .evidence')",
        WAIT,
        "back to the open evidence",
    );

    b.key("Escape", "Escape", 27, 0);
    b.wait_for(
        "!location.search.includes('open=') && !document.querySelector('.suspect.open')",
        WAIT,
        "Esc closes the evidence",
    );
    first_load
}

/// The shell: `?` lists the shortcuts, Esc closes them; the theme toggle
/// sticks across pages.
pub(super) fn shell(b: &mut Browser, base: &str) {
    b.key("?", "Slash", 191, 8);
    b.wait_for(
        "document.querySelector('.modal')",
        WAIT,
        "the shortcuts list",
    );
    b.key("Escape", "Escape", 27, 0);
    b.wait_for(
        "!document.querySelector('.modal')",
        WAIT,
        "Esc closes the shortcuts",
    );
    b.click("button.theme");
    b.wait_for(
        "document.documentElement.dataset.theme === 'light'",
        WAIT,
        "the light theme",
    );
    b.click("button.theme");
    b.wait_for(
        "document.documentElement.dataset.theme === 'dark'",
        WAIT,
        "the dark theme",
    );
    b.screenshot("problems-dark");
    b.navigate(&format!("{base}/services"));
    assert_eq!(
        b.eval("document.documentElement.dataset.theme"),
        json!("dark"),
        "the theme is remembered"
    );
    b.assert_no_problems("problems and the shell");
}
