//! Who leads maintenance: schema migrations, the lease SQL, roles with
//! one compaction leader and its takeover, and three nodes that lose
//! nothing to a crash.

use super::*;

#[test]
fn postgres_migrations_apply_once_in_order_and_refuse_a_newer_schema() {
    use loupe_catalog::CatalogDbError;
    use loupe_catalog::pg::{PgDb, PgSchema};
    const V1: PgSchema = PgSchema {
        component: "things",
        migrations: &["CREATE TABLE things (id BIGINT PRIMARY KEY)"],
    };
    const V2: PgSchema = PgSchema {
        component: "things",
        migrations: &[
            "CREATE TABLE things (id BIGINT PRIMARY KEY)",
            "ALTER TABLE things ADD COLUMN name TEXT",
        ],
    };
    let pg = Postgres::start();
    let url = pg.url();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Nodes starting together: each step still runs exactly once.
        let opened = futures::future::join_all((0..4).map(|_| PgDb::open(&url, &[&V1]))).await;
        assert!(opened.iter().all(Result::is_ok));
        let db = PgDb::open(&url, &[&V2]).await.unwrap();
        {
            let client = db.client().await.unwrap();
            let client = client.as_ref().unwrap();
            client
                .execute("INSERT INTO things (id, name) VALUES (1, 'a')", &[])
                .await
                .unwrap();
            let version: i64 = client
                .query_one(
                    "SELECT version FROM schema_versions WHERE component = 'things'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(version, 2);
        }
        // Reopening at the same version runs nothing again.
        PgDb::open(&url, &[&V2]).await.unwrap();
        let err = PgDb::open(&url, &[&V1]).await.err().unwrap();
        assert!(
            matches!(
                err,
                CatalogDbError::TooNew {
                    found: 2,
                    known: 1,
                    ..
                }
            ),
            "{err}"
        );
    });
}

/// The lease SQL against a real PostgreSQL: one holder at a time, renewals
/// keep it, a holder that stops renewing loses it to the next contender
/// within TTL + one renewal, and every change of hands bumps the epoch.
#[test]
fn a_lease_has_one_holder_and_passes_on_when_renewals_stop() {
    use loupe_catalog::lease::{self, LEASES_SCHEMA, LeaseTiming};
    use loupe_catalog::pg::PgDb;
    use tokio::sync::watch;
    let pg = Postgres::start();
    let url = pg.url();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let db = PgDb::open(&url, &[&LEASES_SCHEMA]).await.unwrap();
        let ttl = Duration::from_secs(2);
        // The SQL alone: the first taker gets epoch 1, a contender nothing,
        // a renewal the same epoch.
        assert_eq!(lease::acquire(&db, "job", "a", ttl).await.unwrap(), Some(1));
        assert_eq!(lease::acquire(&db, "job", "b", ttl).await.unwrap(), None);
        assert_eq!(lease::acquire(&db, "job", "a", ttl).await.unwrap(), Some(1));
        assert_eq!(
            lease::holder(&db, "job").await.unwrap(),
            Some(("a".to_string(), 1))
        );
        // "a" stops renewing: "b", trying every 100 ms, gets it once it expires.
        let last_renewal = std::time::Instant::now();
        let epoch = loop {
            if let Some(epoch) = lease::acquire(&db, "job", "b", ttl).await.unwrap() {
                break epoch;
            }
            assert!(last_renewal.elapsed() < ttl + Duration::from_secs(2));
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(last_renewal.elapsed() >= ttl - Duration::from_millis(100));
        assert_eq!(epoch, 2);
        assert_eq!(lease::acquire(&db, "job", "a", ttl).await.unwrap(), None);
        // Released, it goes to the next contender at once.
        lease::release(&db, "job", "b").await.unwrap();
        assert_eq!(lease::acquire(&db, "job", "a", ttl).await.unwrap(), Some(3));

        // Two nodes competing through `hold`: exactly one leads at any
        // sample; killing the leader's task (no release, like kill -9)
        // hands the lead over within TTL + a renewal.
        let timing = LeaseTiming {
            ttl: Duration::from_secs(3),
            renew: Duration::from_millis(500),
        };
        let mut contenders = Vec::new();
        for name in ["x", "y"] {
            let db = PgDb::open(&url, &[]).await.unwrap();
            let (lead_tx, lead_rx) = watch::channel(false);
            let (stop_tx, stop_rx) = watch::channel(false);
            let task = tokio::spawn(async move {
                lease::hold(&db, "maintenance", name, timing, &lead_tx, stop_rx).await;
            });
            contenders.push((name, lead_rx, stop_tx, task));
        }
        let leaders = |c: &Vec<(&str, watch::Receiver<bool>, _, _)>| -> Vec<String> {
            c.iter()
                .filter(|(_, rx, _, _)| *rx.borrow())
                .map(|(n, _, _, _)| n.to_string())
                .collect()
        };
        let mut led = Vec::new();
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = leaders(&contenders);
            assert!(now.len() <= 1, "two leaders at once: {now:?}");
            led = now;
        }
        assert_eq!(led.len(), 1, "nobody leads");
        let first = led[0].clone();
        let (_, _, _, task) = contenders.iter().find(|(n, ..)| *n == first).unwrap();
        task.abort();
        let killed = std::time::Instant::now();
        let (_, other, _, _) = contenders.iter().find(|(n, ..)| *n != first).unwrap();
        let mut other = other.clone();
        tokio::time::timeout(timing.ttl + timing.renew * 2, other.wait_for(|l| *l))
            .await
            .expect("the other contender took over in time")
            .unwrap();
        println!(
            "lease taken over {:?} after its holder died",
            killed.elapsed()
        );
        let (holder, epoch) = lease::holder(&db, "maintenance").await.unwrap().unwrap();
        assert_ne!(holder, first);
        assert_eq!(epoch, 2, "the takeover bumped the epoch");
        for (_, _, stop, task) in contenders {
            stop.send_replace(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        // A clean stop released it.
        assert_eq!(lease::holder(&db, "maintenance").await.unwrap(), None);
    });
}

/// Roles over one bucket and catalog: two `ingest,query` nodes, a
/// `query,compact` and a `compact` one. Exactly one compact node leads;
/// it compacts the ingest nodes' files (which they then stop listing);
/// killed with -9, its lease goes to the other within seconds and ingest
/// on both ingest nodes carries on.
#[test]
fn one_maintenance_leader_among_roles_and_a_takeover_when_it_dies() {
    let pg = Postgres::start();
    let s3 = S3Server::start();
    let env = s3.env();
    let catalog = pg.url();
    let node = |role: &str| {
        Loupe::start_with_env(
            &[
                "--role",
                role,
                "--storage",
                "s3://loupe/roles",
                "--catalog",
                &catalog,
                "--flush-interval",
                "1s",
                "--compaction-interval",
                "1s",
                "--compaction-min-files",
                "2",
            ],
            &env,
        )
    };
    let a = node("ingest,query");
    let b = node("ingest,query");
    let c = node("query,compact");
    let d = node("compact");
    let id = |l: &Loupe| std::fs::read_to_string(l.data_dir().join("node_id")).unwrap();

    // Only ingest nodes listen for OTLP; a node without `query` refuses queries.
    assert_eq!((c.grpc.port(), d.grpc.port()), (0, 0));
    assert_ne!(a.grpc.port(), 0);
    let refused = d
        .client()
        .post(d.api_url("/api/v1/sql"))
        .json(&serde_json::json!({"sql": "SELECT 1"}))
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 404);
    assert!(refused.text().unwrap().contains("query"));
    assert_eq!(d.healthz(), 200);

    // Exactly one compact node leads; the others report 0.
    let one_leader = wait_until(deadline_in(Duration::from_secs(20)), || {
        leads(&c) != leads(&d)
    });
    assert!(
        one_leader,
        "no single leader; logs:\n{}\n{}",
        c.log(),
        d.log()
    );
    assert!(!leads(&a) && !leads(&b));
    let leader_is_c = leads(&c);
    let (mut leader, mut heir) = if leader_is_c { (c, d) } else { (d, c) };
    let (leader_id, heir_id) = (id(&leader), id(&heir));

    // The nodes API lists every node with its roles and the leader.
    let mut listed = Value::Null;
    let all_four = wait_until(deadline_in(Duration::from_secs(20)), || {
        listed = get(&a, "/api/v1/nodes");
        listed["nodes"].as_array().is_some_and(|n| n.len() == 4)
    });
    assert!(all_four, "{listed}");
    assert_eq!(listed["leader"]["node"], leader_id.as_str());
    let first_epoch = listed["leader"]["epoch"].as_i64().unwrap();
    let mut roles: Vec<String> = listed["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["roles"].as_str().unwrap().to_string())
        .collect();
    roles.sort();
    assert_eq!(
        roles,
        ["compact", "ingest,query", "ingest,query", "query,compact"]
    );

    // Both ingest nodes take data; the leader compacts their files, and
    // every query node still counts each record once.
    generate(&a, &["--rate", "40", "--duration", "2s", "--seed", "1"]);
    generate(&b, &["--rate", "40", "--duration", "2s", "--seed", "2"]);
    let agree = |nodes: &[&Loupe]| -> Option<u64> {
        let counts: Vec<u64> = nodes
            .iter()
            .map(|n| n.count("SELECT count(*) FROM logs") + n.count("SELECT count(*) FROM spans"))
            .collect();
        counts.windows(2).all(|w| w[0] == w[1]).then(|| counts[0])
    };
    let compacted_by = |node: &str| {
        a.splits("logs")
            .iter()
            .chain(a.splits("spans").iter())
            .any(|s| s["node"] == node)
    };
    let flushed = || {
        ["logs", "spans"]
            .iter()
            .all(|s| all_flushed(&a, s) && all_flushed(&b, s))
    };
    // c is the third query node, whether it leads or not.
    let query_c = if leader_is_c { &leader } else { &heir };
    let mut total = 0;
    let settled = wait_until(deadline_in(Duration::from_secs(40)), || {
        flushed()
            && compacted_by(&leader_id)
            && agree(&[&a, &b, query_c]).is_some_and(|n| {
                total = n;
                n > 0
            })
    });
    assert!(
        settled,
        "no compaction by the leader, or counts differ; leader's log:\n{}",
        leader.log()
    );

    // kill -9 the leader: the other compact node takes over within seconds.
    leader.kill9();
    let killed = std::time::Instant::now();
    let took_over = wait_until(deadline_in(Duration::from_secs(15)), || leads(&heir));
    assert!(took_over, "no takeover within 15 s; log:\n{}", heir.log());
    println!(
        "the other compact node leads {:?} after the leader was killed",
        killed.elapsed()
    );
    let mut after = Value::Null;
    assert!(wait_until(deadline_in(Duration::from_secs(10)), || {
        after = get(&a, "/api/v1/nodes");
        after["leader"]["node"] == heir_id.as_str()
    }));
    assert!(
        after["leader"]["epoch"].as_i64().unwrap() > first_epoch,
        "{after}"
    );

    // Ingest goes on on both ingest nodes, and the new leader compacts.
    generate(&a, &["--rate", "40", "--duration", "2s", "--seed", "3"]);
    generate(&b, &["--rate", "40", "--duration", "2s", "--seed", "4"]);
    let mut survivors = vec![&a, &b];
    if !leader_is_c {
        survivors.push(&heir);
    }
    let settled = wait_until(deadline_in(Duration::from_secs(40)), || {
        flushed() && compacted_by(&heir_id) && agree(&survivors).is_some_and(|n| n > total)
    });
    assert!(
        settled,
        "after the takeover: no compaction by the new leader, or counts differ; log:\n{}",
        heir.log()
    );

    // Restarted, the old leader does not take the lead back.
    leader.restart();
    std::thread::sleep(Duration::from_secs(3));
    assert!(!leads(&leader));
    assert!(leads(&heir));
    // Stopped cleanly, a leader releases its lease: the other takes it at
    // its next attempt (every 2 s), not after the 10 s TTL.
    heir.terminate();
    let stopped = std::time::Instant::now();
    let took_over = wait_until(deadline_in(Duration::from_secs(6)), || leads(&leader));
    assert!(
        took_over,
        "no prompt takeover after SIGTERM; log:\n{}",
        leader.log()
    );
    println!(
        "after a clean stop the lead passed on in {:?}",
        stopped.elapsed()
    );
}

/// The acceptance on one machine: PostgreSQL, S3 and three nodes
/// (two `ingest,query`, one `query,compact`), `loupe gen` writing seed 7
/// to one ingest node and seed 8 to the other while a single node on
/// local disk and SQLite takes both. Once flushed, counts, a `match_all`
/// search, a phrase, a trace lookup and `/problems` agree on every node
/// and with the single node. A kill -9 of an ingest node holding
/// acknowledged, unflushed records loses none (its WAL replays) while the
/// others keep answering; when the compaction leader dies, a replacement
/// `query,compact` node takes its lease over.
#[test]
fn three_nodes_answer_like_one_lose_nothing_to_a_crash_and_hand_the_lease_over() {
    let began = std::time::Instant::now();
    let pg = Postgres::start();
    let s3 = S3Server::start();
    let env = s3.env();
    let catalog = pg.url();
    let args = |role: &str, flush: &str| -> Vec<String> {
        [
            "--role",
            role,
            "--storage",
            "s3://loupe/three",
            "--catalog",
            &catalog,
            "--flush-interval",
            flush,
            "--compaction-interval",
            "1s",
            "--compaction-min-files",
            "2",
        ]
        .map(String::from)
        .to_vec()
    };
    let node = |role: &str| {
        let args = args(role, "1s");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Loupe::start_with_env(&args, &env)
    };
    let a = node("ingest,query");
    let b = node("ingest,query");
    let mut c = node("query,compact");
    let single = Loupe::start(&["--flush-interval", "1s"]);
    let leader_id = std::fs::read_to_string(c.data_dir().join("node_id")).unwrap();
    assert!(
        wait_until(deadline_in(Duration::from_secs(20)), || leads(&c)),
        "the compact node never led; log:\n{}",
        c.log()
    );

    // An incident (payment-2 fails 30% of charges from 6 s on), seed 7 to
    // a and 8 to b, the same two runs to the single node, all at once so
    // both copies of the data carry the same times.
    let truth = tempfile::tempdir().unwrap();
    let run = |seed: &str, name: &str| -> Vec<String> {
        let mut args: Vec<String> =
            crate::shared::incident_args("payment-errors", seed, &truth.path().join(name))
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect();
        // Half the usual rate: four runs share the machine.
        let rate = args.iter().position(|a| a == "--rate").unwrap() + 1;
        args[rate] = "60".into();
        args
    };
    let (seven, eight) = (run("7", "a.json"), run("8", "b.json"));
    let (seven_again, eight_again) = (run("7", "s7.json"), run("8", "s8.json"));
    let (r7, r8, s7, s8) = (
        strs(&seven),
        strs(&eight),
        strs(&seven_again),
        strs(&eight_again),
    );
    let reports = generate_together(&[(&a, &r7), (&b, &r8), (&single, &s7), (&single, &s8)]);
    // The same seed, the same data: nothing was dropped for lack of time.
    assert_eq!(reports[0]["spans"], reports[2]["spans"], "{reports:?}");
    assert_eq!(reports[1]["spans"], reports[3]["spans"], "{reports:?}");
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(truth.path().join("a.json")).unwrap())
            .unwrap();
    let fault = truth["fault"]["start_unix_nano"].as_i64().unwrap();
    let (start, end) = (fault, fault + crate::shared::FAULT_NS);

    let flushed = |nodes: &[&Loupe]| {
        wait_until(deadline_in(Duration::from_secs(40)), || {
            nodes.iter().all(|n| {
                ["logs", "spans", "metrics"]
                    .iter()
                    .all(|s| all_flushed(n, s))
            })
        })
    };
    assert!(flushed(&[&a, &b, &single]), "not flushed");
    let trace_id = single.sql_value(
        "SELECT trace_id FROM spans WHERE name = 'POST /checkout' AND kind = 'server' ORDER BY trace_id LIMIT 1",
    );
    let trace_id = trace_id.as_str().unwrap().to_string();
    let expected = answers(&single, &trace_id);
    let expected_problems = problems(&single, start, end);
    let top = ranking(&expected_problems);
    assert!(
        top.first().is_some_and(|s| s.contains("payment-2")),
        "{expected_problems:#}"
    );
    // Every node answers alike (the leader compacting meanwhile), and
    // like the single node.
    let mut seen = Vec::new();
    let agreed = wait_until(deadline_in(Duration::from_secs(20)), || {
        seen = [&a, &b, &c]
            .iter()
            .map(|n| (answers(n, &trace_id), problems(n, start, end)))
            .collect();
        seen.iter()
            .all(|(answers, report)| answers == &expected && ranking(report) == top)
    });
    assert!(
        agreed,
        "single node: {expected:?}\n{expected_problems:#}\nnodes: {seen:#?}"
    );
    // Same files, same report, scores included.
    assert!(seen.windows(2).all(|w| w[0].1 == w[1].1), "{seen:#?}");
    println!(
        "agreement after {:?}: {} suspects, first {}",
        began.elapsed(),
        top.len(),
        top[0]
    );

    // An ingest node holding acknowledged records it has not flushed (an
    // hour's flush interval): the other nodes count them too, read on it
    // from its memtable (once its new worker address is in their lists,
    // read every 5 s). Then kill -9 it: the others keep answering, with
    // the published records, and once restarted its WAL gives back every
    // one of them.
    let published = records(&b);
    let slow = args("ingest,query", "1h");
    let mut a = Loupe::start_in(a, &strs(&slow));
    generate(&a, &["--rate", "40", "--duration", "2s", "--seed", "9"]);
    let acknowledged = records(&a);
    assert!(acknowledged > published);
    let mut seen = Vec::new();
    let unflushed_seen = wait_until(deadline_in(Duration::from_secs(20)), || {
        seen = [&b, &c].iter().map(|n| records(n)).collect();
        seen.iter().all(|&n| n == acknowledged)
    });
    let warnings = |n: &Loupe| -> String {
        let log = n.log();
        log.lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        unflushed_seen,
        "b and c count {seen:?}: a acknowledged {acknowledged}, {published} published\nb:\n{}\nc:\n{}",
        warnings(&b),
        warnings(&c)
    );
    // …which are still not in any published file.
    let in_files: u64 = ["logs", "spans"]
        .iter()
        .flat_map(|s| b.splits(s))
        .map(|s| s["row_count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(in_files, published, "a flushed its new records");
    // The search API too: a's unflushed lines are in no index on b or c,
    // so they count them and read the newest of them on a.
    let logs = a.count("SELECT count(*) FROM logs");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let (start, end) = (now - 7_200_000_000_000, now + 60_000_000_000);
    for q in ["", "error"] {
        let search = |n: &Loupe| {
            let found = get(
                n,
                &format!("/api/v1/logs/search?q={q}&start={start}&end={end}&limit=50"),
            );
            ["total", "hits", "histogram", "partial"].map(|k| found[k].clone())
        };
        let on_a = search(&a);
        if q.is_empty() {
            assert_eq!(on_a[0], logs, "{on_a:?}");
        }
        assert!(on_a[0].as_u64() > Some(0), "{on_a:?}");
        for n in [&b, &c] {
            let there = search(n);
            assert_eq!(there[0], on_a[0], "q={q}: total");
            assert_eq!(there[1], on_a[1], "q={q}: hits");
            assert_eq!(there[2], on_a[2], "q={q}: histogram");
            assert_eq!(there[3], false, "q={q}: partial");
        }
    }
    println!(
        "a's unflushed records seen on b and c after {:?}",
        began.elapsed()
    );
    a.kill9();
    for n in [&b, &c] {
        assert_eq!(records(n), published);
        assert_eq!(answers(n, &trace_id), expected);
    }
    a.restart();
    assert_eq!(records(&a), acknowledged, "log:\n{}", a.log());
    // Stopped cleanly, it publishes them for every node.
    a.clean_restart();
    let everywhere = wait_until(deadline_in(Duration::from_secs(20)), || {
        [&a, &b, &c].iter().all(|n| records(n) == acknowledged)
    });
    assert!(everywhere, "the replayed records did not reach every node");
    println!("crash and replay after {:?}", began.elapsed());

    // kill -9 the compaction leader: a replacement query,compact node
    // takes the lease over once it expires, and answers like the others.
    let before: Value = get(&b, "/api/v1/nodes");
    assert_eq!(before["leader"]["node"], leader_id.as_str(), "{before}");
    c.kill9();
    let killed = std::time::Instant::now();
    let d = node("query,compact");
    let took_over = wait_until(deadline_in(Duration::from_secs(20)), || leads(&d));
    assert!(took_over, "no takeover; log:\n{}", d.log());
    println!("lease taken over {:?} after the kill", killed.elapsed());
    let after = get(&b, "/api/v1/nodes");
    assert!(
        after["leader"]["epoch"].as_i64() > before["leader"]["epoch"].as_i64(),
        "{after}"
    );
    assert_ne!(after["leader"]["node"], leader_id.as_str());
    assert_eq!(records(&d), acknowledged);
    assert_eq!(answers(&d, &trace_id), answers(&b, &trace_id));
    println!("done after {:?}", began.elapsed());
}
