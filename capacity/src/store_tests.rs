//! Tests of the capacity store: a decision's task, the service's count and
//! the webhook it sends commit together.

use super::*;

fn task(to: u32) -> (NewTask, Endpoint) {
    (
        NewTask {
            service: "cart".into(),
            region: String::new(),
            from: 2,
            to,
            reason: "DesiredWithinRange".into(),
            evidence: serde_json::json!({"rps": 10}),
            origin: TaskOrigin::Decision,
            hold_until_ms: None,
        },
        Endpoint {
            url: "http://127.0.0.1:9/hook".into(),
            secret: None,
        },
    )
}

/// Commits a decision from `from` to `to` at `at` ms, with its task.
async fn decide(store: &CapacityStore, from: u32, to: u32, at: i64) -> Task {
    let (mut new, endpoint) = task(to);
    new.from = from;
    store
        .commit_decision(
            &DecisionRow {
                service: "cart",
                region: "",
                body: &serde_json::json!({}),
                desired: to,
                replicas: to,
            },
            Some((new, endpoint)),
            at,
        )
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn decision_task_count_and_webhook_commit_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = CapacityStore::open(&Location::Sqlite(dir.path().join("catalog.sqlite")))
        .await
        .unwrap();
    assert_eq!(store.current("cart", "").await.unwrap(), None);
    let first = decide(&store, 2, 5, 1_000).await;
    assert_eq!(store.current("cart", "").await.unwrap(), Some(5));
    let second = decide(&store, 2, 3, 2_000).await;
    assert!(second.sequence > first.sequence);
    assert_eq!(
        store.task(&first.id).await.unwrap().unwrap().state,
        TaskState::Superseded
    );
    assert_eq!(
        store.task(&second.id).await.unwrap().unwrap().state,
        TaskState::Pending
    );
    let acked = store
        .ack_task(&second.id, AckStatus::Succeeded, "done", 3_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acked.state, TaskState::Acknowledged);
    assert_eq!(
        store.recommendations("cart", "", 0).await.unwrap(),
        vec![(1_000, 5), (2_000, 3)]
    );
    assert_eq!(
        store.scale_events("cart", "", 0).await.unwrap(),
        vec![(1_000, 3), (2_000, 1)]
    );
    assert_eq!(
        store
            .tasks(Some("cart"), Some(TaskState::Superseded), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.decisions(None, 10).await.unwrap().len(), 2);
    // Reopening finds everything (it is the same SQLite file).
    drop(store);
    let store = CapacityStore::open(&Location::Sqlite(dir.path().join("catalog.sqlite")))
        .await
        .unwrap();
    assert_eq!(store.current("cart", "").await.unwrap(), Some(3));
    assert_eq!(store.tasks(None, None, 10).await.unwrap().len(), 2);
    // A task the executor could not carry out leaves the count where
    // it was, so the next decision asks again.
    let third = decide(&store, 3, 7, 4_000).await;
    assert_eq!(store.current("cart", "").await.unwrap(), Some(7));
    store
        .ack_task(&third.id, AckStatus::Failed, "quota exceeded", 5_000)
        .await
        .unwrap();
    assert_eq!(store.current("cart", "").await.unwrap(), Some(3));
    assert_eq!(
        store.task(&third.id).await.unwrap().unwrap().state,
        TaskState::Failed
    );
}
