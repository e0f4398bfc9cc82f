//! First-load times of every page (a measurement, run by hand).

use super::*;

/// First load of every page on loopback: navigation start to the page's
/// first real data on screen, the median of several loads. Prints the
/// figures; run with
/// `cargo test --test e2e ui::first_load::ui_first_load_times -- --ignored --nocapture`.
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
