//! How every listener (OTLP/gRPC, OTLP/HTTP, API and UI) takes
//! connections, so that no client can hold the server hostage:
//!
//! - at most `max_connections` open per listener; more are closed at once;
//! - a client must finish the TLS handshake, or (plain TCP) send its first
//!   bytes, within `header_timeout`; on HTTP/1 the whole request head must
//!   arrive within it too (slowloris);
//! - HTTP/2 connections carry at most `http2_max_streams` streams and are
//!   pinged every `http2_keepalive`, closed when a ping goes unanswered;
//! - with a certificate configured, every listener speaks TLS (rustls
//!   with ring, as the rest of the process).

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::server::TlsStream;

use crate::config::ListenConfig;

/// Connection rules shared by every listener, resolved.
#[derive(Clone)]
pub struct Hardening {
    /// TLS without ALPN; each listener adds the protocols it speaks.
    tls: Option<rustls::ServerConfig>,
    header_timeout: Duration,
    max_connections: usize,
    pub http2_max_streams: u32,
    pub http2_keepalive: Duration,
}

impl Hardening {
    pub fn new(config: &ListenConfig) -> anyhow::Result<Hardening> {
        let tls = match &config.tls {
            Some((cert, key)) => Some(tls_config(cert, key)?),
            None => None,
        };
        Ok(Hardening {
            tls,
            header_timeout: config.header_timeout,
            max_connections: config.max_connections,
            http2_max_streams: config.http2_max_streams,
            http2_keepalive: config.http2_keepalive,
        })
    }

    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// A rustls server configuration from PEM files.
fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .with_context(|| format!("reading TLS certificates from {}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the TLS private key from {}", key.display()))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not go together")
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An accepted connection; it holds its place under the connection cap
/// until dropped.
pub struct Conn {
    io: Io,
    local: Option<SocketAddr>,
    remote: SocketAddr,
    _permit: OwnedSemaphorePermit,
}

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match &mut $self.get_mut().io {
            Io::Plain($s) => {
                let $s = Pin::new($s);
                $call
            }
            Io::Tls($s) => {
                let $s = Pin::new($s.as_mut());
                $call
            }
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: self.local,
            remote_addr: Some(self.remote),
        }
    }
}

/// Accepts on `listener` until `stop`, and hands over each connection
/// that completed its TLS handshake (offering `alpn`) or sent its first
/// bytes within the header timeout.
pub fn accept(
    listener: TcpListener,
    rules: &Hardening,
    alpn: &[&[u8]],
    mut stop: watch::Receiver<bool>,
) -> mpsc::Receiver<Conn> {
    let tls = rules.tls.clone().map(|mut config| {
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let slots = Arc::new(Semaphore::new(rules.max_connections));
    let deadline = rules.header_timeout;
    let local = listener.local_addr().ok();
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.wait_for(|s| *s) => break,
            };
            let (tcp, remote) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: let it pass.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::debug!(%remote, "connection limit reached; closing");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (tls, tx) = (tls.clone(), tx.clone());
            tokio::spawn(async move {
                let opened = tokio::time::timeout(deadline, async {
                    match tls {
                        Some(acceptor) => {
                            Ok::<Io, io::Error>(Io::Tls(Box::new(acceptor.accept(tcp).await?)))
                        }
                        None => {
                            // Wait for a byte without taking it (readiness
                            // alone can be spurious).
                            tcp.peek(&mut [0u8; 1]).await?;
                            Ok(Io::Plain(tcp))
                        }
                    }
                })
                .await;
                match opened {
                    Ok(Ok(io)) => {
                        let conn = Conn {
                            io,
                            local,
                            remote,
                            _permit: permit,
                        };
                        let _ = tx.send(conn).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "connection setup failed"),
                    Err(_) => tracing::debug!(%remote, "no request or handshake in time; closed"),
                }
            });
        }
    });
    rx
}

/// Serves an axum router over `listener` until `stop`, then lets open
/// requests finish.
pub async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    rules: Hardening,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut conns = accept(listener, &rules, &[b"h2", b"http/1.1"], stop.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(rules.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(rules.http2_max_streams)
        .keep_alive_interval(rules.http2_keepalive)
        .keep_alive_timeout(rules.http2_keepalive);
    let builder = Arc::new(builder);
    let mut tasks = tokio::task::JoinSet::new();
    let mut stopping = stop.clone();
    loop {
        // Stop taking connections at once, even those still in their
        // handshake (a silent client must not hold up shutdown).
        let conn = tokio::select! {
            conn = conns.recv() => match conn {
                Some(conn) => conn,
                None => break,
            },
            _ = stopping.wait_for(|s| *s) => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let mut stop = stop.clone();
        tasks.spawn(async move {
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(conn), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = stop.wait_for(|s| *s) => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
        while tasks.try_join_next().is_some() {}
    }
    drop(conns);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// The gRPC listener's connections as the stream tonic serves.
pub fn grpc_incoming(
    listener: TcpListener,
    rules: &Hardening,
    stop: watch::Receiver<bool>,
) -> impl futures::Stream<Item = io::Result<Conn>> + Send + 'static {
    let conns = accept(listener, rules, &[b"h2"], stop);
    futures::stream::unfold(conns, |mut conns| async move {
        conns.recv().await.map(|c| (Ok(c), conns))
    })
}
