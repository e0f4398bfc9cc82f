//! The web UI: how it is served (content types, caching, gzip, SPA
//! fallback), and every page in real headless Chromium against
//! `loupe serve --demo` — load, wait for real data, do the page's main
//! interaction, assert on what is shown, fail on any page error, save a
//! screenshot (under `$CARGO_TARGET_TMPDIR/ui-screenshots`).

use std::io::Read;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::browser::Browser;
use crate::harness::Loupe;
use crate::shared::{FAULT_NS, incident_args};

const WAIT: Duration = Duration::from_secs(60);

fn get(loupe: &Loupe, path: &str, headers: &[(&str, &str)]) -> reqwest::blocking::Response {
    let mut req = loupe.client().get(loupe.api_url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().unwrap()
}

fn header(r: &reqwest::blocking::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn ui_is_served_with_types_caching_and_gzip() {
    let loupe = Loupe::start(&[]);
    let index = get(&loupe, "/", &[]);
    assert_eq!(index.status().as_u16(), 200);
    assert_eq!(header(&index, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&index, "cache-control"), "no-cache");
    let etag = header(&index, "etag");
    assert!(etag.starts_with('"'), "etag {etag:?}");
    let html = index.text().unwrap();
    assert!(html.contains("/js/main.js"), "{html}");

    let again = get(&loupe, "/", &[("if-none-match", &etag)]);
    assert_eq!(again.status().as_u16(), 304);

    // SPA fallback: UI routes get index.html; API paths and missing files 404.
    for route in ["/logs", "/traces?trace=abc", "/capacity/anything"] {
        let r = get(&loupe, route, &[]);
        assert_eq!(r.status().as_u16(), 200, "{route}");
        assert_eq!(r.text().unwrap(), html, "{route}");
    }
    let api = get(&loupe, "/api/v1/no-such-thing", &[]);
    assert_eq!(api.status().as_u16(), 404);
    assert!(api.text().unwrap().contains("\"error\""));
    assert_eq!(get(&loupe, "/js/missing.js", &[]).status().as_u16(), 404);

    // Modules as JavaScript, gzipped when asked, byte-identical to ui/.
    let on_disk = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/js/main.js")).unwrap();
    let plain = get(&loupe, "/js/main.js", &[]);
    assert_eq!(
        header(&plain, "content-type"),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(header(&plain, "content-encoding"), "");
    assert_eq!(plain.bytes().unwrap().as_ref(), on_disk.as_slice());
    let gz = get(&loupe, "/js/main.js", &[("accept-encoding", "gzip, br")]);
    assert_eq!(header(&gz, "content-encoding"), "gzip");
    assert_eq!(header(&gz, "vary"), "Accept-Encoding");
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(gz.bytes().unwrap().as_ref())
        .read_to_end(&mut inflated)
        .unwrap();
    assert_eq!(inflated, on_disk);

    let css = get(&loupe, "/app.css", &[]);
    assert_eq!(header(&css, "content-type"), "text/css; charset=utf-8");
    let vendor = get(&loupe, "/vendor/preact-10.29.8.module.js", &[]);
    assert_eq!(vendor.status().as_u16(), 200);
    assert!(header(&vendor, "cache-control").contains("immutable"));
    let licence = get(&loupe, "/vendor/preact-10.29.8.LICENSE", &[]);
    assert_eq!(licence.status().as_u16(), 200);
}

/// Milliseconds from the navigation's start to now, in the page's clock.
fn since_navigation(b: &mut Browser) -> f64 {
    b.eval("performance.now()").as_f64().unwrap()
}

fn shots_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots")
}

fn count(b: &mut Browser, selector: &str) -> u64 {
    b.eval(&format!(
        "document.querySelectorAll({}).length",
        json!(selector)
    ))
    .as_u64()
    .unwrap()
}

/// The texts of every element matching `selector`.
fn texts(b: &mut Browser, selector: &str) -> Vec<String> {
    let v = b.eval(&format!(
        "[...document.querySelectorAll({})].map(e => e.textContent.trim())",
        json!(selector)
    ));
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn ui_pages_work_in_chromium() {
    let loupe = Loupe::start(&["--demo"]);
    // An incident on top of the demo traffic, for the problems page.
    let truth_dir = tempfile::tempdir().unwrap();
    let truth_path = truth_dir.path().join("truth.json");
    let mut incident = Command::new(env!("CARGO_BIN_EXE_loupe"))
        .args(["gen", "--endpoint", &loupe.grpc_url(), "--quiet"])
        .args(incident_args("payment-errors", "4", &truth_path))
        .spawn()
        .unwrap();

    let mut b = Browser::start(&shots_dir());
    let base = format!("http://{}", loupe.http);

    // ---- Logs: first load, a search, a histogram drag, a row's details.
    let started = now_ns();
    let t0 = Instant::now();
    b.navigate(&format!("{base}/logs?range=15m"));
    b.wait_for(
        "document.querySelectorAll('.logrow').length > 0",
        WAIT,
        "log lines",
    );
    let mut first_loads = vec![("logs", since_navigation(&mut b))];
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
    let hit = texts(&mut b, "[data-testid=log-detail] [data-testid=context-hit]");
    assert!(
        hit.iter().any(|h| h.contains(body.as_str().unwrap())),
        "the context's hit is the line: {hit:?}"
    );
    if detail.contains("trace_id") {
        assert!(
            count(&mut b, "[data-testid=log-detail] a.trace-link") > 0,
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

    // ---- Traces: open a trace from the results, find a span, walk the critical path.
    b.navigate(&format!(
        "{base}/traces?range=15m&service=frontend&operation=POST%20%2Fcheckout"
    ));
    b.wait_for(
        "document.querySelectorAll('tr[data-trace]').length > 0",
        WAIT,
        "trace results",
    );
    first_loads.push(("traces", since_navigation(&mut b)));
    assert!(
        count(&mut b, "svg.scatter .dot") > 0,
        "the scatter has dots"
    );
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
    assert!(
        count(&mut b, ".wf-row.crit") > 0,
        "the critical path is marked"
    );
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
    let collapsible = count(&mut b, ".wf-row .twisty[title=collapse]");
    let rows = count(&mut b, ".wf-row");
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
    let folded = count(&mut b, ".wf-row");
    let ticks = texts(&mut b, ".wf-ruler .tick");
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
    assert_eq!(texts(&mut b, ".wf-ruler .tick"), ticks, "the same zoom");
    assert!(collapsible > 0);
    assert!(
        count(&mut b, ".tracelogs .ctxline") > 0,
        "the trace's logs beside it"
    );
    b.screenshot("trace-view");
    b.assert_no_problems("traces");

    // ---- Services: the table with sparklines and the graph.
    let window = format!("from={}&to={}", started - 2_000_000_000, now_ns());
    b.navigate(&format!("{base}/services?{window}"));
    b.wait_for("document.querySelectorAll('tr[data-service]').length >= 5 && document.querySelectorAll('svg.graph .node').length >= 5", WAIT, "services and the graph");
    first_loads.push(("services", since_navigation(&mut b)));
    assert!(count(&mut b, "svg.spark polyline") > 0, "sparklines drawn");
    let services = texts(&mut b, "tr[data-service] td:first-child");
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
    let operations = texts(&mut b, "[data-testid=split] tr[data-group] td:first-child");
    let api: Value = get(
        &loupe,
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

    // ---- SQL: type a query, Ctrl+Enter, sort.
    b.navigate(&format!("{base}/sql"));
    b.wait_for(
        "document.querySelectorAll('.rrow').length > 0",
        WAIT,
        "the default query's result",
    );
    first_loads.push(("sql", since_navigation(&mut b)));
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
    let names = texts(&mut b, ".rrow .td:first-child");
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "ORDER BY service");
    b.click(".rhead .th:last-child");
    b.click(".rhead .th:last-child");
    let counts: Vec<f64> = texts(&mut b, ".rrow .td:last-child")
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
    let again: Vec<f64> = texts(&mut b, ".rrow .td:last-child")
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(
        again.windows(2).all(|w| w[0] >= w[1]),
        "sorted descending: {again:?}"
    );
    assert!(count(&mut b, ".schema .col") > 5, "columns listed");
    b.screenshot("sql");
    b.assert_no_problems("sql");

    // ---- Capacity: create a policy, then edit it; both saved through the API.
    b.navigate(&format!("{base}/capacity"));
    b.wait_for(
        "document.querySelector('[data-testid=new-policy]') && !document.querySelector('.spinner')",
        WAIT,
        "the capacity page",
    );
    first_loads.push(("capacity", since_navigation(&mut b)));
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
    let policy: Value = get(&loupe, "/api/v1/capacity/policies/checkout", &[])
        .json()
        .unwrap();
    assert_eq!(policy["max"], 7, "{policy}");
    assert_eq!(policy["webhook_url"], "http://127.0.0.1:9/hook");
    b.click("[data-testid=edit-checkout]");
    b.wait_for("location.search.includes('edit=checkout') && document.querySelector('form input[name=max]').value === '7'", WAIT, "the edit form");
    b.type_into("form input[name=max]", "9");
    b.click("form button[type=submit]");
    b.wait_for("[...document.querySelectorAll('tr[data-policy=checkout] td')].some(td => td.textContent === '9')", WAIT, "the edited policy listed");
    let policy: Value = get(&loupe, "/api/v1/capacity/policies/checkout", &[])
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
    let schedule: Value = get(&loupe, "/api/v1/capacity/schedules/weekday-peak", &[])
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
    let baseline: Value = get(&loupe, "/api/v1/capacity/baselines/checkout", &[])
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
    let baseline: Value = get(&loupe, "/api/v1/capacity/baselines/checkout", &[])
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
    let reason = texts(&mut b, &format!("{row} td:last-child"))[0].clone();
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
        count(&mut b, "[data-testid=signals] tbody tr") > 0,
        "the signals behind the decision"
    );
    b.screenshot("capacity-decision");
    b.screenshot("capacity");
    b.assert_no_problems("capacity");

    // ---- Alerts: a rule made in the editor, its SQL previewed, saved through the API.
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
    let rule: Value = get(&loupe, "/api/v1/alerts/rules/error_logs", &[])
        .json()
        .unwrap();
    assert_eq!(
        rule["rule"]["condition"]["threshold"], 1_000_000.0,
        "{rule}"
    );
    assert_eq!(rule["rule"]["condition"]["column"], "errors", "{rule}");
    b.screenshot("alerts");
    b.assert_no_problems("alerts");

    // ---- Problems: the incident's suspects, open one's evidence, follow a trace.
    assert!(incident.wait().unwrap().success(), "loupe gen failed");
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(&truth_path).unwrap()).unwrap();
    let fault = truth["fault"]["start_unix_nano"].as_i64().unwrap();
    b.navigate(&format!("{base}/?from={fault}&to={}", fault + FAULT_NS));
    b.wait_for(
        "document.querySelectorAll('.suspect').length > 0",
        WAIT,
        "suspects",
    );
    first_loads.push(("problems", since_navigation(&mut b)));
    // The injected fault is among the suspects (the demo's own traffic runs beside it).
    let explanations = texts(&mut b, ".suspect .explanation");
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
    // ---- Shell: `?` lists the shortcuts, Esc closes; the theme toggle sticks.
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
    eprintln!("first load to data shown (ms since navigation start): {first_loads:?}");
    eprintln!("screenshots in {}", shots_dir().display());
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

fn param_ns(query: &str, key: &str) -> String {
    url::parse(&format!("?{query}"))
        .into_iter()
        .find(|(k, _)| k == key)
        .unwrap()
        .1
}

/// Epoch ms of an RFC 3339 time (UTC, `Z` optional) or nanoseconds.
fn ms(t: &str) -> f64 {
    if t.chars().all(|c| c.is_ascii_digit()) {
        return t.parse::<f64>().unwrap() / 1e6;
    }
    let t = t.trim_end_matches('Z');
    let (date, time) = t.split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let c: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    let days = days_from_civil(d[0], d[1], d[2]);
    let frac: f64 = format!("0.{frac}").parse().unwrap();
    ((days * 86_400 + c[0] * 3600 + c[1] * 60 + c[2]) as f64 + frac) * 1000.0
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

mod url {
    /// The decoded query pairs of `path?query`.
    pub fn parse(url: &str) -> Vec<(String, String)> {
        let q = url.split_once('?').map(|x| x.1).unwrap_or("");
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect()
    }
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }
}

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

/// A baseline fitted from a load test on the capacity page: a dry run
/// draws the USL fit against the test's steps and stores nothing; saving
/// stores it; the stored baseline shows its fit again.
#[test]
fn ui_capacity_baseline_from_load_test() {
    let loupe = Loupe::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let truth_path = dir.path().join("truth.json");
    let status = Command::new(env!("CARGO_BIN_EXE_loupe"))
        .args(["gen", "--endpoint", &loupe.grpc_url(), "--quiet"])
        .args(["--scenario", "load-test-ramp", "--capacity", "150"])
        .args(["--step-duration", "2s", "--truth"])
        .arg(&truth_path)
        .status()
        .unwrap();
    assert!(status.success());
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(&truth_path).unwrap()).unwrap();
    let steps = truth["fault"]["load_test"]["steps"].as_array().unwrap();
    let (start, end) = (
        steps[0]["start_unix_nano"].as_i64().unwrap(),
        steps[steps.len() - 1]["end_unix_nano"].as_i64().unwrap(),
    );

    let mut b = Browser::start(&shots_dir());
    let base = format!("http://{}", loupe.http);
    b.navigate(&format!("{base}/capacity"));
    b.wait_for(
        "document.querySelector('[data-testid=from-load-test]')",
        WAIT,
        "the capacity page",
    );
    b.click("[data-testid=from-load-test]");
    b.wait_for(
        "location.search.includes('form=loadtest') && document.querySelector('[data-testid=loadtest-form]')",
        WAIT,
        "the load-test form",
    );
    for (name, value) in [
        ("service", "checkout".to_string()),
        ("start", start.to_string()),
        ("end", end.to_string()),
        ("instance", "checkout-1".to_string()),
        ("p99_ms", "100000".to_string()),
        ("max_error_rate", "1".to_string()),
        ("load_test_id", "ramp-ui".to_string()),
    ] {
        b.type_into(
            &format!("[data-testid=loadtest-form] input[name={name}]"),
            &value,
        );
    }
    b.click("[data-testid=fit]");
    let shown = b.wait_for(
        &format!(
            "document.querySelector('[data-testid=fit-result]') && document.querySelectorAll('[data-testid=usl] circle').length === {} \
             && document.querySelector('[data-testid=fit-result]').textContent",
            steps.len()
        ),
        WAIT,
        "the dry run's fit against the steps",
    );
    assert!(shown.as_str().unwrap().starts_with("Fit: "), "{shown}");
    let absent = get(&loupe, "/api/v1/capacity/baselines/checkout", &[]);
    assert_eq!(absent.status().as_u16(), 404, "a dry run stores nothing");
    b.screenshot("capacity-load-test");

    b.click("[data-testid=fit-save]");
    let saved = b.wait_for(
        "document.querySelector('[data-testid=fit-result]').textContent.startsWith('Saved') && document.querySelector('[data-testid=fit-result]').textContent",
        WAIT,
        "the baseline saved",
    );
    let baseline: Value = get(&loupe, "/api/v1/capacity/baselines/checkout", &[])
        .json()
        .unwrap();
    assert_eq!(baseline["load_test_id"], "ramp-ui", "{baseline}");
    let max_rps = baseline["max_rps_per_instance"].as_f64().unwrap();
    let shown_rps: f64 = saved
        .as_str()
        .unwrap()
        .trim_start_matches("Saved: ")
        .split(' ')
        .next()
        .unwrap()
        .replace(',', "")
        .parse()
        .unwrap();
    assert!((shown_rps - max_rps).abs() < 0.01, "{saved} vs {baseline}");
    assert!((max_rps - 150.0).abs() / 150.0 < 0.2, "{baseline}");

    // The stored baseline is listed as fitted and shows its fit again.
    b.key("Escape", "Escape", 27, 0);
    b.wait_for(
        "document.querySelector('tr[data-baseline=checkout] .badge')",
        WAIT,
        "the fitted baseline listed",
    );
    b.click("tr[data-baseline=checkout]");
    b.wait_for(
        &format!(
            "document.querySelectorAll('[data-testid=usl] circle').length === {}",
            steps.len()
        ),
        WAIT,
        "the stored fit against its steps",
    );
    b.assert_no_problems("baseline from a load test");
}

/// First load of every page on loopback: navigation start to the page's
/// first real data on screen, the median of several loads. Prints the
/// figures; run with
/// `cargo test --test e2e ui::ui_first_load_times -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check: prints first-load times"]
fn ui_first_load_times() {
    let loupe = Loupe::start(&["--demo"]);
    let mut b = Browser::start(&shots_dir());
    let base = format!("http://{}", loupe.http);
    // The demo's data first.
    b.navigate(&format!("{base}/logs?range=15m"));
    b.wait_for(
        "document.querySelectorAll('.logrow').length > 0",
        WAIT,
        "demo data",
    );
    std::thread::sleep(Duration::from_secs(10));
    let trace = get(&loupe, "/api/v1/traces?limit=1&service=frontend", &[])
        .json::<Value>()
        .unwrap()["traces"][0]["trace_id"]
        .as_str()
        .unwrap()
        .to_string();
    let pages = [
        (
            "problems",
            "/?range=15m".to_string(),
            "document.querySelector('.suspects, main .state.empty') && document.querySelector('table.patterns, main .two .state.empty')",
        ),
        (
            "logs",
            "/logs?range=15m".to_string(),
            "document.querySelectorAll('.logrow').length > 0 && document.querySelector('.histogram canvas')",
        ),
        (
            "traces",
            "/traces?range=15m".to_string(),
            "document.querySelectorAll('tr[data-trace]').length > 0",
        ),
        (
            "trace view",
            format!("/traces?trace={trace}"),
            "document.querySelectorAll('.wf-row').length > 0",
        ),
        (
            "services",
            "/services?range=15m".to_string(),
            "document.querySelectorAll('tr[data-service]').length > 0 && document.querySelector('svg.graph .node')",
        ),
        (
            "service page",
            "/services?range=15m&service=checkout".to_string(),
            "document.querySelector('[data-testid=chart-rate] canvas') && document.querySelector('[data-testid=split] tr[data-group]')",
        ),
        (
            "sql",
            "/sql".to_string(),
            "document.querySelectorAll('.rrow').length > 0",
        ),
        (
            "alerts",
            "/alerts".to_string(),
            "document.querySelector('[data-testid=rules], main .state.empty') && !document.querySelector('.spinner')",
        ),
        (
            "capacity",
            "/capacity".to_string(),
            "document.querySelector('[data-testid=new-policy]') && !document.querySelector('.spinner')",
        ),
    ];
    const LOADS: usize = 7;
    let mut report = Vec::new();
    for (name, path, ready) in pages {
        // Watches every frame from the document's start for the data.
        let script = b.call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": format!(
                "if (location.protocol === 'http:') (function poll() {{ \
                   try {{ if ({ready}) {{ window.__loadedAt = performance.now(); return; }} }} catch (e) {{}} \
                   requestAnimationFrame(poll); }})();"
            )}),
        );
        let mut times = Vec::new();
        for _ in 0..LOADS {
            b.call("Page.navigate", json!({"url": "about:blank"}));
            b.wait_for("location.href === 'about:blank'", WAIT, "a blank page");
            b.call("Page.navigate", json!({"url": format!("{base}{path}")}));
            let t = b.wait_for(
                "location.protocol === 'http:' && window.__loadedAt",
                WAIT,
                name,
            );
            times.push(t.as_f64().unwrap());
        }
        b.call(
            "Page.removeScriptToEvaluateOnNewDocument",
            json!({"identifier": script["identifier"]}),
        );
        times.sort_by(f64::total_cmp);
        report.push(format!(
            "{name:>12}: median {:>5.0} ms (min {:.0}, max {:.0}, {LOADS} loads)",
            times[LOADS / 2],
            times[0],
            times[LOADS - 1]
        ));
    }
    eprintln!(
        "first load, navigation start to data shown:\n{}",
        report.join("\n")
    );
    b.assert_no_problems("first loads");
}
