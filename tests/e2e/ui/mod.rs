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
use crate::shared::incident_args;

mod capacity_baseline;
mod first_load;
mod large_trace;
mod pages;

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
    let (started, logs) = pages::logs(&mut b, &base);
    let mut first_loads = vec![("logs", logs)];
    first_loads.push(("traces", pages::traces(&mut b, &base)));
    first_loads.push(("services", pages::services(&mut b, &loupe, &base, started)));
    first_loads.push(("sql", pages::sql(&mut b, &base)));
    first_loads.push(("capacity", pages::capacity(&mut b, &loupe, &base)));
    pages::alerts(&mut b, &loupe, &base);
    assert!(incident.wait().unwrap().success(), "loupe gen failed");
    first_loads.push(("problems", pages::problems(&mut b, &base, &truth_path)));
    pages::shell(&mut b, &base);
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
