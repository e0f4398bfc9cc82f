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

pub fn json(status: u16, body: &[u8], path: &str) -> Result<Value> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;

    #[test]
    fn reads_status_and_body_of_a_close_delimited_response() -> Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let server = std::thread::spawn(move || -> Result<String> {
            let (stream, _) = listener.accept()?;
            let mut reader = std::io::BufReader::new(stream.try_clone()?);
            let mut first = String::new();
            reader.read_line(&mut first)?;
            // Headers, then the 2-byte body the client declared.
            let mut line = String::new();
            while reader.read_line(&mut line)? > 2 {
                line.clear();
            }
            let mut body = [0u8; 2];
            reader.read_exact(&mut body)?;
            let mut stream = stream;
            stream.write_all(
                b"HTTP/1.0 201 Created\r\nContent-Type: application/json\r\n\r\n{\"ok\":true}",
            )?;
            Ok(first)
        });
        let answer = post_json(&addr, "/x?y=1", &serde_json::json!({}))?;
        assert_eq!(answer["ok"], true);
        let first = server
            .join()
            .map_err(|_| anyhow::anyhow!("server thread"))??;
        assert_eq!(first, "POST /x?y=1 HTTP/1.0\r\n");
        Ok(())
    }

    #[test]
    fn errors_carry_the_status_and_values_are_percent_encoded() {
        let err = json(503, b"busy", "/p")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("HTTP 503") && err.contains("busy"), "{err}");
        assert_eq!(encode("\"o-1\" a/b"), "%22o-1%22%20a%2Fb");
    }
}
