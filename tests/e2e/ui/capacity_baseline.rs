//! A capacity baseline fitted from a load test, in the page.

use super::*;

/// A baseline fitted from a load test on the capacity page: a dry run
/// draws the USL fit against the test's steps and stores nothing; saving
/// stores it; the stored baseline shows its fit again.
#[test]
fn ui_capacity_baseline_from_load_test() {
    let loupe = Loupe::start(&[]);
    let crate::capacity::LoadTest { start, end, steps } = crate::capacity::run_load_test(&loupe);

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
            steps
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
            steps
        ),
        WAIT,
        "the stored fit against its steps",
    );
    b.assert_no_problems("baseline from a load test");
}
