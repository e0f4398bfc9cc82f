//! Alert, capacity, outbox and token state in the PostgreSQL catalog,
//! shared by every node and carried over to a new leader.

use super::*;

/// The alert, capacity and outbox stores on a real PostgreSQL, through the
/// statements the API tests reach least: a decision's task, superseding and
/// pruning; the HPA history; an evaluation's instances, history and status;
/// a group's notification committed with it, delivered by a worker on the
/// same catalog to a receiver on 127.0.0.1.
#[test]
fn alert_capacity_and_outbox_stores_on_postgres() {
    use loupe_alerts::store::{AlertStore, Instance, Outgoing, RULES};
    use loupe_alerts::{AlertState, lifecycle::Life};
    use loupe_capacity::store::{
        AckStatus, CapacityStore, DecisionRow, Endpoint, NewTask, TaskOrigin, TaskState,
    };
    use loupe_catalog::db::Location;
    let pg = Postgres::start();
    let location = Location::Postgres(pg.url());
    let secret = loupe_notify::signing::generate_secret();
    let receiver = crate::webhook_receiver::Receiver::start(&secret, 200);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let superseded = runtime.block_on(async {
        // Capacity: decisions with tasks; a newer task supersedes the older
        // one's webhook; a failed ack puts the count back.
        let capacity = CapacityStore::open(&location).await.unwrap();
        let endpoint = Endpoint {
            url: receiver.url(),
            secret: Some(secret.clone()),
        };
        let decide = |from: u32, to: u32, at: i64| {
            let task = NewTask {
                service: "cart".into(),
                region: String::new(),
                from,
                to,
                reason: "DesiredWithinRange".into(),
                evidence: serde_json::json!({"rps": 10}),
                origin: TaskOrigin::Decision,
                hold_until_ms: None,
            };
            let capacity = &capacity;
            let endpoint = endpoint.clone();
            async move {
                let body = serde_json::json!({});
                let row = DecisionRow {
                    service: "cart",
                    region: "",
                    body: &body,
                    desired: to,
                    replicas: to,
                };
                capacity
                    .commit_decision(&row, Some((task, endpoint)), at)
                    .await
                    .unwrap()
                    .unwrap()
            }
        };
        assert_eq!(capacity.current("cart", "").await.unwrap(), None);
        let first = decide(2, 5, 1_000).await;
        let second = decide(2, 3, 2_000).await;
        assert!(second.sequence > first.sequence);
        assert_eq!(capacity.current("cart", "").await.unwrap(), Some(3));
        let state = |id: String| {
            let capacity = &capacity;
            async move { capacity.task(&id).await.unwrap().unwrap().state }
        };
        assert_eq!(state(first.id.clone()).await, TaskState::Superseded);
        assert_eq!(state(second.id.clone()).await, TaskState::Pending);
        assert_eq!(
            capacity.recommendations("cart", "", 0).await.unwrap(),
            vec![(1_000, 5), (2_000, 3)]
        );
        assert_eq!(
            capacity.scale_events("cart", "", 0).await.unwrap(),
            vec![(1_000, 3), (2_000, 1)]
        );
        assert_eq!(capacity.decisions(None, 10).await.unwrap().len(), 2);
        let superseded = capacity
            .tasks(None, Some(TaskState::Superseded), 10)
            .await
            .unwrap();
        assert_eq!(superseded.len(), 1);
        assert_eq!(superseded[0].id, first.id);
        assert_eq!(
            capacity.tasks(None, None, 1).await.unwrap()[0].id,
            second.id
        );
        capacity
            .ack_task(&second.id, AckStatus::Failed, "quota", 3_000)
            .await
            .unwrap();
        assert_eq!(capacity.current("cart", "").await.unwrap(), Some(2));
        // Eight days later a decision supersedes the last webhook and
        // prunes the old history, tasks and finished webhooks.
        let later = decide(2, 4, 8 * 24 * 3600 * 1000).await;
        let tasks = capacity.tasks(Some("cart"), None, 10).await.unwrap();
        assert_eq!(tasks.len(), 1, "{tasks:?}");
        assert_eq!(tasks[0].id, later.id);
        assert_eq!(capacity.decisions(None, 10).await.unwrap().len(), 1);

        // Alerts: an evaluation's instances and history, an error, a group
        // committed with its notification.
        let alerts = AlertStore::open(&location).await.unwrap();
        let rule: loupe_alerts::rule::RuleSpec =
            serde_json::from_value(serde_json::json!({"sql": "SELECT 1 AS n"})).unwrap();
        alerts.put(&RULES, "r", &rule, 1).await.unwrap();
        alerts.put(&RULES, "r", &rule, 2).await.unwrap();
        assert_eq!(alerts.list(&RULES).await.unwrap().len(), 1);
        assert!(alerts.get(&RULES, "r").await.unwrap().is_some());
        let instance = Instance {
            rule: "r".into(),
            fingerprint: "f1".into(),
            labels: [("service".to_string(), "cart".to_string())].into(),
            annotations: Default::default(),
            value: 2.5,
            life: Life {
                state: AlertState::Firing,
                active_at: 10,
                fired_at: Some(20),
                resolved_at: None,
                quiet_since: None,
            },
        };
        alerts
            .record_evaluation("r", std::slice::from_ref(&instance), &[&instance], 20, 1.5)
            .await
            .unwrap();
        assert_eq!(
            alerts.instances(Some("r")).await.unwrap(),
            vec![instance.clone()]
        );
        assert_eq!(alerts.instances(None).await.unwrap().len(), 1);
        assert_eq!(alerts.history(10).await.unwrap()[0]["state"], "firing");
        alerts.record_error("r", 30, 2.0, "boom").await.unwrap();
        let status = alerts.status("r").await.unwrap().unwrap();
        assert_eq!(
            (status.health, status.last_error.as_deref()),
            ("error", Some("boom"))
        );
        let message = loupe_notify::Message {
            id: "alert_1".into(),
            url: receiver.url(),
            secret: Some(secret.clone()),
            event_type: "alert".into(),
            body: r#"{"status":"firing"}"#.into(),
            supersede_key: None,
        };
        let group = loupe_alerts::grouping::GroupState {
            first_seen_ms: 20,
            ..Default::default()
        };
        alerts
            .commit_group("ops", "{}", Some(&group), Some(&Outgoing { message }), 20)
            .await
            .unwrap();
        assert_eq!(alerts.groups("ops").await.unwrap()["{}"], group);
        assert!(alerts.delete_rule("r").await.unwrap());
        assert!(alerts.instances(None).await.unwrap().is_empty());
        assert!(alerts.status("r").await.unwrap().is_none());

        // A worker on the same catalog delivers what both enqueued.
        let worker = loupe_notify::Worker::open(
            &location,
            loupe_notify::WorkerConfig {
                allow: "127.0.0.1".parse().unwrap(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let mut delivered = 0;
        for _ in 0..5 {
            delivered += worker.pass().await.unwrap();
        }
        assert_eq!(delivered, 2);
        assert_eq!(state(later.id.clone()).await, TaskState::Sent);

        // An alert event to an endpoint that answers 410 Gone: recorded,
        // the endpoint disabled, and enabled again by saving its policy.
        let gone = crate::webhook_receiver::Receiver::start(&secret, 410);
        let alert = loupe_capacity::store::Alert {
            service: "cart",
            region: "",
            kind: "fallback",
            message: "no signal",
            evidence: &serde_json::json!({}),
        };
        let gone_endpoint = Endpoint {
            url: gone.url(),
            secret: None,
        };
        capacity
            .raise_alert(&alert, &gone_endpoint, 9_000)
            .await
            .unwrap();
        assert_eq!(capacity.events(10).await.unwrap()[0].kind, "fallback");
        assert_eq!(worker.pass().await.unwrap(), 1);
        assert!(
            capacity
                .webhook_disabled(&gone.url())
                .await
                .unwrap()
                .is_some()
        );
        let policy: loupe_capacity::policy::PolicySpec =
            serde_json::from_value(serde_json::json!({"webhook_url": gone.url()})).unwrap();
        capacity.put_policy("cart", &policy, 10_000).await.unwrap();
        assert!(
            capacity
                .webhook_disabled(&gone.url())
                .await
                .unwrap()
                .is_none()
        );
        [first.id, second.id]
    });
    let seen = receiver.deliveries();
    assert!(
        seen.iter().any(|d| d.id == "alert_1" && d.signature_ok),
        "{seen:?}"
    );
    assert!(seen.iter().all(|d| !superseded.contains(&d.id)), "{seen:?}");
}

/// Alert, capacity and token state in the shared catalog: what one node's
/// API saves every query node shows the same, and when the leader is
/// killed (-9) with webhooks still undelivered (the receiver answers 503),
/// the next leader delivers them — same ids — and the alert keeps firing
/// since the same time.
#[test]
fn alert_capacity_and_token_state_is_shared_and_a_new_leader_delivers_what_the_old_one_could_not() {
    use crate::capacity::{call, ok};
    use crate::webhook_receiver::Receiver;
    use serde_json::json;
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
                "s3://loupe/state",
                "--catalog",
                &catalog,
            ],
            &env,
        )
    };
    let a = node("ingest,query");
    let b = node("query,compact");
    let c = node("query,compact");
    let one_leader = wait_until(deadline_in(Duration::from_secs(20)), || {
        leads(&b) != leads(&c)
    });
    assert!(one_leader, "no single leader");
    let secret = loupe_notify::signing::generate_secret();
    let receiver = Receiver::start(&secret, 503);

    // Saved through a, shown alike by all three.
    ok(
        &a,
        "PUT",
        "/api/v1/alerts/receivers/ops",
        Some(
            json!({"type": "webhook", "url": receiver.url(), "secret": secret,
                    "group_wait": "1s"}),
        ),
    );
    ok(
        &a,
        "PUT",
        "/api/v1/alerts/rules/always",
        Some(json!({"sql": "SELECT 1 AS n", "every": "1s",
                    "condition": {"column": "n", "op": ">", "threshold": 0},
                    "attach_suspects": false, "receivers": ["ops"]})),
    );
    let policy = ok(
        &a,
        "PUT",
        "/api/v1/capacity/policies/cart",
        Some(
            json!({"webhook_url": receiver.url(), "webhook_secret": secret,
                    "evaluation_interval": "1h"}),
        ),
    );
    let (status, task) = call(
        &b,
        "POST",
        "/api/v1/capacity/tasks",
        Some(json!({"service": "cart", "to": 4, "hold": "10m", "reason": "game day"})),
    );
    assert_eq!(status, 201, "{task}");
    let task_id = task["id"].as_str().unwrap().to_string();
    for n in [&a, &b, &c] {
        assert_eq!(
            ok(n, "GET", "/api/v1/alerts/receivers/ops", None)["url"],
            receiver.url()
        );
        assert_eq!(ok(n, "GET", "/api/v1/capacity/policies/cart", None), policy);
        let shown = ok(n, "GET", &format!("/api/v1/capacity/tasks/{task_id}"), None);
        assert_eq!(shown["spec"], task["spec"], "{shown}");
        assert_eq!(shown["hold_until"], task["hold_until"], "{shown}");
    }

    // The leader fires the rule; every node shows the same alert.
    let firing = |n: &Loupe| -> Value {
        let alerts = ok(n, "GET", "/api/v1/alerts?rule=always", None);
        alerts
            .as_array()
            .and_then(|a| a.iter().find(|a| a["state"] == "firing").cloned())
            .unwrap_or(Value::Null)
    };
    let fired = wait_until(deadline_in(Duration::from_secs(30)), || {
        !firing(&a).is_null()
    });
    assert!(fired, "the rule never fired");
    let alert = firing(&a);
    for n in [&b, &c] {
        assert_eq!(firing(n), alert);
        let rule = ok(n, "GET", "/api/v1/alerts/rules/always", None);
        assert_eq!(rule["state"], "firing", "{rule}");
        assert_eq!(rule["health"], "ok", "{rule}");
    }

    // The receiver refuses both webhooks a few times…
    let refused = receiver.wait_for("refused attempts", Duration::from_secs(30), |d| {
        d.iter().filter(|d| d.id == task_id).count() >= 2
            && d.iter().any(|d| d.body["status"] == "firing")
    });
    let alert_id = refused
        .iter()
        .find(|d| d.body["status"] == "firing")
        .unwrap()
        .id
        .clone();
    // …then the leader dies and the receiver recovers: the next leader
    // delivers both, under their ids.
    let (mut leader, heir) = if leads(&b) { (b, c) } else { (c, b) };
    leader.kill9();
    let killed_at = std::time::Instant::now();
    let killed = receiver.deliveries().len();
    receiver.set_status(200);
    let seen = receiver.wait_for("delivery by the new leader", Duration::from_secs(45), |d| {
        [&task_id, &alert_id]
            .iter()
            .all(|id| d[killed..].iter().any(|d| &d.id == *id && d.status == 200))
    });
    println!(
        "the new leader delivered both webhooks {:?} after the old one was killed",
        killed_at.elapsed()
    );
    assert!(leads(&heir));
    assert!(seen.iter().all(|d| d.signature_ok), "{seen:?}");
    let alert_notifications = seen
        .iter()
        .filter(|d| d.status == 200 && d.body["status"] == "firing")
        .count();
    assert_eq!(alert_notifications, 1, "notified again: {seen:#?}");
    let mut sent = Value::Null;
    let recorded = wait_until(deadline_in(Duration::from_secs(10)), || {
        sent = ok(
            &a,
            "GET",
            &format!("/api/v1/capacity/tasks/{task_id}"),
            None,
        );
        sent["state"] == "sent"
    });
    assert!(recorded, "{sent}");
    assert!(sent["delivery"]["attempts"].as_u64() >= Some(3), "{sent}");
    // The new leader went on evaluating the same alert.
    let after = firing(&a);
    assert_eq!(after["firing_since"], alert["firing_since"], "{after}");
    assert_eq!(
        ok(&heir, "GET", "/api/v1/alerts/rules/always", None)["health"],
        "ok"
    );

    // A token created through one node is asked for by the others within
    // a reload (2 s); revoked through another, it is gone everywhere.
    let created = ok(
        &a,
        "POST",
        "/api/v1/tokens",
        Some(json!({"scope": "admin", "name": "ops"})),
    );
    let token = created["token"].as_str().unwrap().to_string();
    let status = |n: &Loupe, token: Option<&str>| {
        let request = n.client().get(n.api_url("/api/v1/alerts"));
        let request = match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        request.send().unwrap().status().as_u16()
    };
    let asked = wait_until(deadline_in(Duration::from_secs(5)), || {
        status(&heir, None) == 401
    });
    assert!(asked, "the other node does not ask for the new token");
    assert_eq!(status(&heir, Some(&token)), 200);
    let id = created["id"].as_str().unwrap();
    let revoked = heir
        .client()
        .delete(heir.api_url(&format!("/api/v1/tokens/{id}")))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(revoked.status().as_u16(), 204);
    let open_again = wait_until(deadline_in(Duration::from_secs(5)), || {
        status(&a, None) == 200
    });
    assert!(
        open_again,
        "the revoked token is still asked for on the first node"
    );
}

/// The shared-state interface's transactions on a real PostgreSQL: one
/// dropped before its commit (an error, a cancelled request) leaves
/// nothing behind, and the next use reconnects by itself.
#[test]
fn a_dropped_postgres_transaction_rolls_back_and_the_next_use_reconnects() {
    use loupe_catalog::db::{Db, Location, Value};
    use loupe_catalog::pg::PgSchema;
    use loupe_catalog::values;
    const THINGS: PgSchema = PgSchema {
        component: "things",
        migrations: &[
            "CREATE TABLE things (id BIGINT PRIMARY KEY, name TEXT, score DOUBLE PRECISION, raw BYTEA)",
        ],
    };
    let pg = Postgres::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let db = Db::open(&Location::Postgres(pg.url()), &[], &[&THINGS])
            .await
            .unwrap();
        let insert = "INSERT INTO things (id, name, score, raw) VALUES (?1, ?2, ?3, ?4)";
        {
            let mut tx = db.begin().await.unwrap();
            tx.execute(insert, values![1i64, "dropped", 0.5, &b"x"[..]])
                .await
                .unwrap();
        }
        let mut tx = db.begin().await.unwrap();
        tx.execute(insert, values![2i64, None::<String>, 1.5, &b"\x00\xff"[..]])
            .await
            .unwrap();
        // A failing statement spoils the transaction; dropped, it is gone.
        assert!(
            tx.execute(insert, values![2i64, "again", 0.0, &b""[..]])
                .await
                .is_err()
        );
        drop(tx);
        let mut tx = db.begin().await.unwrap();
        tx.execute(insert, values![3i64, "kept", 2.5, &b"\x00\xff"[..]])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let rows = db
            .query("SELECT id, name, score, raw FROM things ORDER BY id", &[])
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].0,
            vec![
                Value::Int(3),
                Value::Text("kept".into()),
                Value::Real(2.5),
                Value::Blob(vec![0, 255])
            ]
        );
    });
}
