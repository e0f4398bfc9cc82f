//! TLS on every listener with the configured certificate.

use super::*;

/// A self-signed certificate for 127.0.0.1 and localhost, written as
/// `cert.pem` and `key.pem`; returns the certificate's PEM (the test CA).
fn make_certificate(dir: &std::path::Path) -> String {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let pem = cert.cert.pem();
    std::fs::write(dir.join("cert.pem"), &pem).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    pem
}

/// A tonic channel over TLS (trusting `ca_pem`) to `addr`.
async fn tls_channel(addr: SocketAddr, ca_pem: &str) -> tonic::transport::Channel {
    use tonic::codegen::{BoxFuture, Service};
    #[derive(Clone)]
    struct Connect(SocketAddr, tokio_rustls::TlsConnector);
    impl Service<tonic::codegen::http::Uri> for Connect {
        type Response =
            hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
        type Error = std::io::Error;
        type Future = BoxFuture<Self::Response, Self::Error>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: tonic::codegen::http::Uri) -> Self::Future {
            let Connect(addr, connector) = self.clone();
            Box::pin(async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                Ok(hyper_util::rt::TokioIo::new(
                    connector.connect(name, tcp).await?,
                ))
            })
        }
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(Connect(addr, connector))
        .await
        .unwrap()
}

#[test]
fn every_listener_speaks_tls_with_the_configured_certificate() {
    init_tls();
    let dir = tempfile::tempdir().unwrap();
    let ca = make_certificate(dir.path());
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let loupe = start_with_tokens(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let trusting = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // API and UI over HTTPS.
    let health = trusting
        .get(format!("https://127.0.0.1:{}/healthz", loupe.http.port()))
        .send()
        .unwrap();
    assert_eq!(health.status(), 200);
    let services = trusting
        .get(format!(
            "https://127.0.0.1:{}/api/v1/services",
            loupe.http.port()
        ))
        .bearer_auth(QUERY)
        .send()
        .unwrap();
    assert_eq!(services.status(), 200);
    // OTLP/HTTP over HTTPS.
    let export = trusting
        .post(format!(
            "https://127.0.0.1:{}/v1/logs",
            loupe.otlp_http.port()
        ))
        .header("content-type", "application/x-protobuf")
        .bearer_auth(INGEST)
        .body(logs_body())
        .send()
        .unwrap();
    assert_eq!(export.status(), 200);
    // OTLP/gRPC over TLS.
    runtime().block_on(async {
        let channel = tls_channel(loupe.grpc, &ca).await;
        let mut client = LogsServiceClient::new(channel);
        let mut request = tonic::Request::new(logs_request("tls-test", ["hi".to_string()]));
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {INGEST}").parse().unwrap());
        client.export(request).await.unwrap();
    });
    // Plain HTTP is not answered, and a client without the CA refuses the server.
    assert!(
        loupe
            .client()
            .get(loupe.api_url("/healthz"))
            .send()
            .is_err()
    );
    let untrusting = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert!(
        untrusting
            .get(format!("https://127.0.0.1:{}/healthz", loupe.http.port()))
            .send()
            .is_err()
    );
    let (_, rows) = {
        let r = trusting
            .post(format!("https://127.0.0.1:{}/api/v1/sql", loupe.http.port()))
            .bearer_auth(QUERY)
            .json(&json!({"sql": "SELECT count(*) FROM logs WHERE service IN ('auth-test', 'tls-test')"}))
            .send()
            .unwrap();
        (r.status(), r.json::<Value>().unwrap())
    };
    assert_eq!(rows["rows"][0][0], 2, "{rows}");
    // `loupe sql` over HTTPS, trusting the CA given.
    let output = Command::new(env!("CARGO_BIN_EXE_loupe"))
        .args(["sql", "--format", "csv", "--url"])
        .arg(format!("https://127.0.0.1:{}", loupe.http.port()))
        .args(["--token", QUERY, "--ca-file"])
        .arg(&cert)
        .arg("SELECT count(*) AS n FROM logs")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), "n\n2", "{stdout}");
}
