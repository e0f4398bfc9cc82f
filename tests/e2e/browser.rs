//! A small Chrome DevTools Protocol client: starts Debian's `chromium`
//! headless with a temporary profile, opens one page and drives it over the
//! DevTools websocket (navigate, evaluate, keys, mouse, screenshots). Every
//! uncaught exception, console error, failed request and HTTP error the
//! page sees is collected in `problems`.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

pub const WIDTH: u32 = 1400;
pub const HEIGHT: u32 = 900;

pub struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    /// Errors the page reported: exceptions, console errors, failed loads.
    pub problems: Vec<String>,
    shots: PathBuf,
    _profile: tempfile::TempDir,
}

fn chromium_path() -> String {
    let bin = std::env::var("LOUPE_CHROMIUM").unwrap_or_else(|_| "chromium".to_string());
    let found = Command::new(&bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "the UI tests need Chromium, and `{bin}` was not found: install it with \
         `apt-get install -y chromium` (.ci/run does this), or point LOUPE_CHROMIUM at a Chromium binary"
    );
    bin
}

impl Browser {
    /// Starts Chromium; screenshots go to `shots`.
    pub fn start(shots: &Path) -> Browser {
        let bin = chromium_path();
        std::fs::create_dir_all(shots).unwrap();
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(bin)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--remote-debugging-port=0",
                &format!("--window-size={WIDTH},{HEIGHT}"),
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so every helper process can be ended.
            .process_group(0)
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            let mut sent = false;
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if !sent && let Some(i) = line.find("ws://") {
                    let _ = tx.send(line[i..].trim().to_string());
                    sent = true;
                }
                line.clear();
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("chromium printed no DevTools websocket URL within 60 s");
            }
        };
        let (ws, _) = tungstenite::connect(url.as_str()).expect("connect to DevTools");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
        }
        let mut browser = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            problems: Vec::new(),
            shots: shots.to_path_buf(),
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().unwrap().to_string();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        for domain in ["Page", "Runtime", "Network", "Log"] {
            browser.call(&format!("{domain}.enable"), json!({}));
        }
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": false}),
        );
        browser
    }

    /// Sends a command (to the page once attached) and waits for its answer,
    /// recording the events that arrive meanwhile.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .unwrap_or_else(|e| panic!("DevTools send {method}: {e}"));
        loop {
            let msg = self
                .ws
                .read()
                .unwrap_or_else(|e| panic!("DevTools read while waiting for {method}: {e}"));
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"].as_u64() == Some(id) {
                if let Some(err) = v.get("error") {
                    panic!("DevTools {method} failed: {err}");
                }
                return v["result"].clone();
            }
            self.event(&v);
        }
    }

    fn event(&mut self, v: &Value) {
        let p = &v["params"];
        match v["method"].as_str().unwrap_or("") {
            "Runtime.exceptionThrown" => {
                let d = &p["exceptionDetails"];
                let text = d["exception"]["description"]
                    .as_str()
                    .or(d["text"].as_str())
                    .unwrap_or("?");
                self.problems
                    .push(format!("uncaught exception: {text} ({})", d["url"]));
            }
            "Runtime.consoleAPICalled"
                if matches!(p["type"].as_str(), Some("error" | "assert")) =>
            {
                let args: Vec<String> = p["args"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|x| {
                                x["value"]
                                    .as_str()
                                    .map(str::to_string)
                                    .unwrap_or_else(|| x["description"].to_string())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                self.problems
                    .push(format!("console.error: {}", args.join(" ")));
            }
            "Log.entryAdded" if p["entry"]["level"] == "error" => {
                self.problems.push(format!(
                    "browser log error: {} {}",
                    p["entry"]["text"], p["entry"]["url"]
                ));
            }
            "Network.loadingFailed" if p["canceled"] != true => {
                self.problems.push(format!(
                    "request failed: {} ({})",
                    p["errorText"], p["type"]
                ));
            }
            "Network.responseReceived" => {
                let status = p["response"]["status"].as_u64().unwrap_or(0);
                if status >= 400 {
                    self.problems.push(format!(
                        "HTTP {status} for {}",
                        p["response"]["url"].as_str().unwrap_or("?")
                    ));
                }
            }
            _ => {}
        }
    }

    /// Fails (with a screenshot) if the page reported any error so far.
    pub fn assert_no_problems(&mut self, step: &str) {
        if !self.problems.is_empty() {
            self.screenshot(&format!("failed-{step}"));
            panic!(
                "the page reported errors during {step}:\n{}",
                self.problems.join("\n")
            );
        }
    }

    pub fn navigate(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url}));
        if let Some(e) = r["errorText"].as_str() {
            panic!("navigating to {url}: {e}");
        }
        self.wait_for(
            "document.readyState === 'complete' && document.querySelector('header nav') !== null",
            Duration::from_secs(30),
            &format!("the app shell at {url}"),
        );
    }

    /// Evaluates `expr` (awaiting a promise) and returns its JSON value.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
        );
        if let Some(d) = r.get("exceptionDetails") {
            panic!(
                "evaluating {expr}: {}",
                d["exception"]["description"].as_str().unwrap_or("?")
            );
        }
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it is truthy; fails with a screenshot after `timeout`.
    pub fn wait_for(&mut self, expr: &str, timeout: Duration, what: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(expr);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let shot = self.screenshot(&format!("timeout-{}", what.replace([' ', '/'], "_")));
                let body = self.eval("document.querySelector('main') && document.querySelector('main').innerText.slice(0, 2000)");
                panic!(
                    "timed out after {timeout:?} waiting for {what} ({expr}); screenshot {}; page errors: {:?}; page text:\n{}",
                    shot.display(),
                    self.problems,
                    body.as_str().unwrap_or("")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn click(&mut self, selector: &str) {
        let ok = self.eval(&format!(
            "(() => {{ const el = document.querySelector({s}); if (!el) return false; el.scrollIntoView({{block: 'center'}}); el.dispatchEvent(new MouseEvent('click', {{bubbles: true, cancelable: true, view: window, button: 0}})); return true; }})()",
            s = json!(selector)
        ));
        assert_eq!(ok, json!(true), "nothing to click at {selector}");
    }

    /// Focuses `selector`, empties it and types `text` into it.
    pub fn type_into(&mut self, selector: &str, text: &str) {
        let ok = self.eval(&format!(
            "(() => {{ const el = document.querySelector({s}); if (!el) return false; el.focus(); \
             Object.getOwnPropertyDescriptor(Object.getPrototypeOf(el), 'value').set.call(el, ''); \
             el.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()",
            s = json!(selector)
        ));
        assert_eq!(ok, json!(true), "no input at {selector}");
        if !text.is_empty() {
            self.call("Input.insertText", json!({"text": text}));
        }
    }

    /// A key press; `modifiers`: 2 = Ctrl, 4 = Meta, 8 = Shift.
    pub fn key(&mut self, key: &str, code: &str, key_code: u32, modifiers: u32) {
        for ty in ["rawKeyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": ty, "key": key, "code": code, "windowsVirtualKeyCode": key_code,
                       "nativeVirtualKeyCode": key_code, "modifiers": modifiers}),
            );
        }
    }

    /// A left-button drag with the real mouse, from (x1, y1) to (x2, y2).
    pub fn drag(&mut self, (x1, y1): (f64, f64), (x2, y2): (f64, f64)) {
        self.call(
            "Input.dispatchMouseEvent",
            json!({"type": "mouseMoved", "x": x1, "y": y1}),
        );
        self.call(
            "Input.dispatchMouseEvent",
            json!({"type": "mousePressed", "x": x1, "y": y1, "button": "left", "buttons": 1, "clickCount": 1}),
        );
        for i in 1..=8 {
            let f = i as f64 / 8.0;
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": "mouseMoved", "x": x1 + (x2 - x1) * f, "y": y1 + (y2 - y1) * f, "button": "left", "buttons": 1}),
            );
        }
        self.call(
            "Input.dispatchMouseEvent",
            json!({"type": "mouseReleased", "x": x2, "y": y2, "button": "left", "buttons": 0, "clickCount": 1}),
        );
    }

    /// The bounding box of `selector`: (left, top, width, height).
    pub fn rect(&mut self, selector: &str) -> (f64, f64, f64, f64) {
        let v = self.eval(&format!(
            "(() => {{ const r = document.querySelector({s}).getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; }})()",
            s = json!(selector)
        ));
        let f = |i: usize| v[i].as_f64().unwrap();
        (f(0), f(1), f(2), f(3))
    }

    /// Saves a PNG of the viewport as `<shots>/<name>.png`.
    pub fn screenshot(&mut self, name: &str) -> PathBuf {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap_or(""))
            .unwrap();
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask politely (Chromium then ends its helpers), then make sure.
        self.session.clear();
        self.next_id += 1;
        let close = json!({"id": self.next_id, "method": "Browser.close", "params": {}});
        let _ = self.ws.send(Message::text(close.to_string()));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: a plain signal to the process group we created.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
