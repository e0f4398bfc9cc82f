//! Crash safety: stream requests, note which were acknowledged, SIGKILL the
//! server at a random moment (while flushes are happening), restart, and
//! check that every acknowledged record is there exactly once — with
//! flushes and compactions running when the kill comes — and still is after
//! a final clean restart. The seed is printed; `LOUPE_TEST_SEED` replays it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::harness::{Loupe, deadline_in, wait_until};
use crate::otlp_proto::logs_request;

const RECORDS_PER_REQUEST: usize = 20;
const SENDERS: usize = 3;

/// Kill and restart cycles: 5 by default; `LOUPE_CRASH_CYCLES=100` for the
/// long run README "Durability" describes.
fn cycles() -> usize {
    match std::env::var("LOUPE_CRASH_CYCLES") {
        Ok(n) => n
            .parse()
            .unwrap_or_else(|_| panic!("LOUPE_CRASH_CYCLES={n:?} is not a count")),
        Err(_) => 5,
    }
}

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

/// The seed from `LOUPE_TEST_SEED` if set (to replay a failure), else a
/// fresh one. Printed either way.
fn test_seed() -> u64 {
    let seed = match std::env::var("LOUPE_TEST_SEED") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("LOUPE_TEST_SEED={s:?} is not a u64")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    println!("crash test seed {seed} (replay with LOUPE_TEST_SEED={seed})");
    seed
}

/// Every acknowledged request is stored exactly once, and every stored one
/// (acknowledged or not) is whole: never in part, never twice.
fn check_exactly_once(loupe: &Loupe, acked: &[String], context: &str) {
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
    let whole = (RECORDS_PER_REQUEST as u64, RECORDS_PER_REQUEST as u64);
    for id in acked {
        assert_eq!(
            stored.get(id),
            Some(&whole),
            "{context}: acknowledged request {id} is not stored exactly once"
        );
    }
    for (id, counts) in &stored {
        assert_eq!(*counts, whole, "{context}: request {id}");
    }
}

#[test]
fn acknowledged_records_survive_sigkill_exactly_once() {
    let seed = test_seed();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
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

    let rounds = cycles();
    println!("{rounds} kill -9 / restart cycles");
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..SENDERS)
            .map(|s| {
                let (url, stop, acked) =
                    (loupe.otlp_http_url("/v1/logs"), stop.clone(), acked.clone());
                std::thread::spawn(move || send_until_stopped(url, round, s, stop, acked))
            })
            .collect();
        // Wait for this round's traffic to flow (a loaded CI machine can be
        // slow), then kill at a random moment.
        let before = acked.lock().unwrap().len();
        let flowing = wait_until(deadline_in(Duration::from_secs(30)), || {
            acked.lock().unwrap().len() > before
        });
        assert!(
            flowing,
            "round {round} seed {seed}: nothing was acknowledged; log:\n{}",
            loupe.log()
        );
        std::thread::sleep(Duration::from_millis(rng.random_range(0..1200)));
        loupe.kill9();
        stop.store(true, Ordering::Relaxed);
        for s in senders {
            s.join().unwrap();
        }
        loupe.restart();
        check_exactly_once(
            &loupe,
            &acked.lock().unwrap(),
            &format!("round {round} seed {seed}"),
        );
    }
    // What recovery brought back must also survive being flushed and
    // compacted: a clean stop writes it all to Parquet, then check again.
    loupe.clean_restart();
    check_exactly_once(
        &loupe,
        &acked.lock().unwrap(),
        &format!("after a clean restart, seed {seed}"),
    );
    let acked = acked.lock().unwrap().len();
    println!(
        "{acked} requests ({} records) acknowledged over {rounds} kill -9 cycles: none lost, none twice",
        acked * RECORDS_PER_REQUEST
    );
}
