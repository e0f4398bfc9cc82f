//! Connection hardening (slow clients, connection caps) and per-token
//! ingest rate limits.

use super::*;

/// Whether the server closed `stream` (EOF or reset) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn slow_clients_are_cut_off_and_connections_are_capped() {
    let loupe = Loupe::start(&["--header-timeout", "1s", "--max-connections", "4"]);
    // Slowloris: a request head dribbled a byte at a time is cut off
    // after the header timeout, however steadily bytes arrive.
    let mut slow = TcpStream::connect(loupe.http).unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut cut = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(100));
        if slow.write_all(b"X").is_err() || closed_within(&mut slow, Duration::from_millis(1)) {
            cut = true;
            break;
        }
    }
    assert!(cut, "a dribbling client was still connected after 4 s");
    assert!(started.elapsed() < Duration::from_secs(4));
    // A client that connects and says nothing is closed on every listener.
    for addr in [loupe.http, loupe.otlp_http, loupe.grpc] {
        let mut idle = TcpStream::connect(addr).unwrap();
        assert!(
            closed_within(&mut idle, Duration::from_secs(4)),
            "{addr} kept a silent client"
        );
    }
    // Beyond the cap, connections are closed at once; the server stays up.
    let held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(loupe.http).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(loupe.http).unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_millis(800)),
        "a fifth connection was kept"
    );
    drop(held);
    let healthy = wait_until(deadline_in(Duration::from_secs(5)), || {
        loupe
            .client()
            .get(loupe.api_url("/healthz"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    assert!(healthy);
    // Ordinary clients are unaffected (this one waits between requests on
    // a kept-alive connection).
    assert_eq!(loupe.count("SELECT count(*) FROM logs"), 0);
}

#[test]
fn ingest_over_a_tokens_rate_limit_gets_429_with_a_retry_hint() {
    let loupe = start_with_tokens(&["--ingest-rate-limit", "1"]);
    let statuses: Vec<reqwest::blocking::Response> = (0..4)
        .map(|_| {
            loupe
                .client()
                .post(loupe.otlp_http_url("/v1/logs"))
                .header("content-type", "application/x-protobuf")
                .bearer_auth(INGEST)
                .body(logs_body())
                .send()
                .unwrap()
        })
        .collect();
    assert_eq!(statuses[0].status(), 200);
    let limited = statuses
        .iter()
        .find(|r| r.status() == 429)
        .expect("no 429 for 4 requests at a limit of 1/s");
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");

    // gRPC: RESOURCE_EXHAUSTED with google.rpc.RetryInfo.
    std::thread::sleep(Duration::from_millis(1100));
    let url = loupe.grpc_url();
    let results: Vec<Result<(), tonic::Status>> =
        (0..4).map(|_| grpc_export(&url, Some(INGEST))).collect();
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let status = results
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("no RESOURCE_EXHAUSTED for 4 exports at 1/s");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    use tonic_types::StatusExt;
    let hint = status.get_details_retry_info().expect("no RetryInfo");
    assert!(
        hint.retry_delay
            .is_some_and(|d| d <= Duration::from_secs(1)),
        "{hint:?}"
    );

    // Query traffic is not limited, and the server is fine.
    for _ in 0..5 {
        assert_eq!(
            api(&loupe, "GET", "/api/v1/services", Some(QUERY), None).0,
            200
        );
    }
}
