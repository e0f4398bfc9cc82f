//! A minimal HTTP/1.0 client over `std::net::TcpStream`, enough to call a
//! local `loupe serve`: one request per connection, the server closes it
//! after the response, so the body is everything after the headers (no
//! chunked encoding with a 1.0 client). Keeps the suite free of an async
//! HTTP stack and its compile time.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The longest any one call may take (a SQL query at large scale).
const TIMEOUT: Duration = Duration::from_secs(900);
/// Responses larger than this are refused (results are small aggregates).
const MAX_RESPONSE: u64 = 256 << 20;

/// Status code and body of one request.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nAccept: application/json\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut response)
        .with_context(|| format!("{method} {path}"))?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let status_line = String::from_utf8_lossy(&response[..split]);
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    Ok((status, response[split + 4..].to_vec()))
}

/// GET returning JSON; non-2xx is an error carrying the body.
pub fn get_json(addr: &str, path: &str) -> Result<Value> {
    let (status, body) = request(addr, "GET", path, "application/json", b"")?;
    json(status, &body, path)
}

/// POST a JSON document, returning JSON; non-2xx is an error.
pub fn post_json(addr: &str, path: &str, doc: &Value) -> Result<Value> {
    let (status, body) = request(
        addr,
        "POST",
        path,
        "application/json",
        &serde_json::to_vec(doc)?,
    )?;
    json(status, &body, path)
}

fn json(status: u16, body: &[u8], path: &str) -> Result<Value> {
    if !(200..300).contains(&status) {
        bail!("{path}: HTTP {status}: {}", String::from_utf8_lossy(body));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).with_context(|| format!("{path}: not JSON"))
}

/// Percent-encodes a query-string value.
pub fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
