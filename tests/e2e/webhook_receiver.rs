//! A real HTTP webhook receiver on 127.0.0.1 for the tests: it records
//! every POST (headers, body, whether the Standard Webhooks signature
//! verifies) and answers with whatever status the test sets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{deadline_in, wait_until};

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub timestamp: i64,
    pub signature_ok: bool,
    pub body: Value,
    /// What the receiver answered.
    pub status: u16,
}

pub struct Receiver {
    pub addr: SocketAddr,
    /// `http`, or `https` for a receiver started with [`Receiver::start_tls`].
    scheme: &'static str,
    secret: String,
    status: Arc<AtomicU16>,
    seen: Arc<Mutex<Vec<Delivery>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    /// Starts answering `status` to every request; signatures are checked
    /// against `secret`.
    pub fn start(secret: &str, status: u16) -> Receiver {
        Receiver::serve(secret, status, None)
    }

    /// The same over HTTPS, with the certificate chain and key given (PEM).
    pub fn start_tls(secret: &str, status: u16, cert_pem: &str, key_pem: &str) -> Receiver {
        let certs: Vec<_> = rustls::pki_types::pem::PemObject::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key = rustls::pki_types::pem::PemObject::from_pem_slice(key_pem.as_bytes()).unwrap();
        crate::harness::init_tls();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Receiver::serve(secret, status, Some(Arc::new(config)))
    }

    fn serve(secret: &str, status: u16, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let receiver = Receiver {
            addr: listener.local_addr().unwrap(),
            scheme: if tls.is_some() { "https" } else { "http" },
            secret: secret.to_string(),
            status: Arc::new(AtomicU16::new(status)),
            seen: Arc::default(),
            stop: Arc::default(),
        };
        let (status, seen, stop, secret) = (
            receiver.status.clone(),
            receiver.seen.clone(),
            receiver.stop.clone(),
            receiver.secret.clone(),
        );
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream
                            .set_nonblocking(false)
                            .and_then(|()| stream.set_read_timeout(Some(Duration::from_secs(5))));
                        let _ = match &tls {
                            Some(config) => rustls::ServerConnection::new(config.clone())
                                .map_err(std::io::Error::other)
                                .and_then(|conn| {
                                    let tls_stream = rustls::StreamOwned::new(conn, stream);
                                    handle(tls_stream, &secret, &status, &seen)
                                }),
                            None => handle(stream, &secret, &status, &seen),
                        };
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        receiver
    }

    pub fn url(&self) -> String {
        format!("{}://{}/hooks/capacity", self.scheme, self.addr)
    }

    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (bounded) until `done` holds for the deliveries so far.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Delivery]) -> bool,
    ) -> Vec<Delivery> {
        let mut seen = Vec::new();
        let arrived = wait_until(deadline_in(timeout), || {
            seen = self.deliveries();
            done(&seen)
        });
        assert!(arrived, "timed out waiting for {what}; received: {seen:#?}");
        seen
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn handle(
    mut stream: impl Read + Write,
    secret: &str,
    status: &AtomicU16,
    seen: &Mutex<Vec<Delivery>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(&mut stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end().to_string();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let length: usize = header("content-length").parse().unwrap_or(0);
    let mut body = vec![0; length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let id = header("webhook-id");
    let timestamp: i64 = header("webhook-timestamp").parse().unwrap_or(0);
    let signature_ok =
        loupe_notify::signing::verify(secret, &id, timestamp, &body, &header("webhook-signature"))
            .unwrap_or(false);
    drop(reader);
    let code = status.load(Ordering::Relaxed);
    seen.lock().unwrap().push(Delivery {
        id,
        timestamp,
        signature_ok,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        status: code,
    });
    write!(
        stream,
        "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nretry-after: 1\r\nconnection: close\r\n\r\n"
    )?;
    stream.flush()
}
