//! Crash safety: stream requests, note which were acknowledged, SIGKILL the
//! server at a random moment (while flushes are happening), restart, and
//! check that every acknowledged record is there exactly once — with
//! flushes and compactions running when the kill comes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use rand::{Rng, SeedableRng};

use crate::harness::Loupe;
use crate::otlp_proto::logs_request;

const RECORDS_PER_REQUEST: usize = 20;
const SENDERS: usize = 3;
const ROUNDS: usize = 5;

fn send_until_stopped(
    url: String,
    round: usize,
    sender: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for seq in 0..5_000 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let id = format!("r{round}s{sender}q{seq}");
        let bodies = (0..RECORDS_PER_REQUEST).map(|i| format!("{id}#{i}"));
        let body = logs_request("crash", bodies).encode_to_vec();
        match client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
        {
            Ok(r) if r.status().is_success() => acked.lock().unwrap().push(id),
            // The server is gone (or refused): this request is unacknowledged.
            _ => return,
        }
    }
}

#[test]
fn acknowledged_records_survive_sigkill_exactly_once() {
    let seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("crash test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Frequent small flushes, so kills land before, during and after them.
    // Compaction runs all the time too, so kills also land mid-merge.
    let mut loupe = Loupe::start(&[
        "--flush-interval",
        "200ms",
        "--flush-size",
        "128KiB",
        "--compaction-interval",
        "300ms",
        "--compaction-min-files",
        "2",
    ]);
    let acked = Arc::new(Mutex::new(Vec::new()));

    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..SENDERS)
            .map(|s| {
                let (url, stop, acked) =
                    (loupe.otlp_http_url("/v1/logs"), stop.clone(), acked.clone());
                std::thread::spawn(move || send_until_stopped(url, round, s, stop, acked))
            })
            .collect();
        // Wait for traffic to flow (a loaded CI machine can be slow), then
        // kill at a random moment.
        let before = acked.lock().unwrap().len();
        let flowing = std::time::Instant::now() + Duration::from_secs(30);
        while acked.lock().unwrap().len() == before && std::time::Instant::now() < flowing {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..1200)));
        loupe.kill9();
        stop.store(true, Ordering::Relaxed);
        for s in senders {
            s.join().unwrap();
        }
        loupe.restart();

        let rows = loupe.sql(
            "SELECT split_part(body, '#', 1) AS request, count(*) AS n, count(DISTINCT body) AS distinct_bodies
             FROM logs GROUP BY 1",
        );
        let stored: HashMap<String, (u64, u64)> = rows
            .into_iter()
            .map(|r| {
                (
                    r[0].as_str().unwrap().to_string(),
                    (r[1].as_u64().unwrap(), r[2].as_u64().unwrap()),
                )
            })
            .collect();
        let acked = acked.lock().unwrap();
        assert!(
            !acked.is_empty(),
            "round {round}: nothing was acknowledged; log:\n{}",
            loupe.log()
        );
        for id in acked.iter() {
            assert_eq!(
                stored.get(id),
                Some(&(RECORDS_PER_REQUEST as u64, RECORDS_PER_REQUEST as u64)),
                "round {round} seed {seed}: acknowledged request {id} is not stored exactly once"
            );
        }
        // Unacknowledged requests may or may not be there, but never in part
        // and never twice.
        for (id, (n, distinct)) in &stored {
            assert_eq!(
                (*n, *distinct),
                (RECORDS_PER_REQUEST as u64, RECORDS_PER_REQUEST as u64),
                "request {id}"
            );
        }
    }
    let splits = loupe.count("SELECT count(*) FROM logs");
    assert!(splits >= acked.lock().unwrap().len() as u64 * RECORDS_PER_REQUEST as u64);
}
