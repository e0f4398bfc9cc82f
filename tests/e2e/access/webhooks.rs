//! Webhook receivers: the SSRF guard on their URLs, secrets never shown,
//! and manual capacity tasks kept within the policy.

use super::*;

#[test]
fn webhooks_to_internal_addresses_are_refused_unless_allowed() {
    // No allowlist at all (the harness allows 127.0.0.1; this overrides it).
    let loupe = Loupe::start(&["--webhook-allow", ""]);
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5:8080/hook",
        "http://192.168.1.1/",
        "http://localhost:9/hook",
        "http://127.0.0.1:9/hook",
        "http://[::1]:9/hook",
    ] {
        let (status, body) = api(
            &loupe,
            "PUT",
            "/api/v1/capacity/policies/cart",
            None,
            Some(json!({"webhook_url": url})),
        );
        assert_eq!(status, 400, "{url}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("--webhook-allow"),
            "{body}"
        );
        let (status, body) = api(
            &loupe,
            "PUT",
            "/api/v1/alerts/receivers/ops",
            None,
            Some(json!({"type": "webhook", "url": url})),
        );
        assert_eq!(status, 400, "{url}: {body}");
    }
    drop(loupe);

    // Allowed when saved, refused when delivered (the check runs again on
    // every delivery, on an IP literal and on the addresses a name resolves
    // to, so re-pointing a name later does not get through): the receiver
    // never hears anything, and the task's error does not say what is
    // listening where.
    let secret = loupe_notify::signing::generate_secret();
    let receiver = Receiver::start(&secret, 204);
    let loupe = Loupe::start(&["--webhook-allow", "127.0.0.1,::1"]);
    let by_name = format!("http://localhost:{}/hook", receiver.addr.port());
    for (service, url) in [("cart", receiver.url()), ("email", by_name)] {
        let (status, body) = api(
            &loupe,
            "PUT",
            &format!("/api/v1/capacity/policies/{service}"),
            None,
            Some(
                json!({"webhook_url": url, "webhook_secret": secret, "evaluation_interval": "1h"}),
            ),
        );
        assert_eq!(status, 200, "{body}");
    }
    let loupe = Loupe::start_in(loupe, &["--webhook-allow", ""]);
    for service in ["cart", "email"] {
        let (status, task) = api(
            &loupe,
            "POST",
            "/api/v1/capacity/tasks",
            None,
            Some(json!({"service": service, "to": 3})),
        );
        assert_eq!(status, 201, "{task}");
        let id = task["id"].as_str().unwrap().to_string();
        let mut seen = Value::Null;
        let failed = wait_until(deadline_in(Duration::from_secs(20)), || {
            seen = api(
                &loupe,
                "GET",
                &format!("/api/v1/capacity/tasks/{id}"),
                None,
                None,
            )
            .1;
            seen["state"] == "failed"
        });
        assert!(failed, "{service}: {seen}");
        let error = seen["delivery"]["last_error"].as_str().unwrap_or_default();
        assert!(error.contains("--webhook-allow"), "{service}: {seen}");
        assert!(!error.contains(&receiver.addr.port().to_string()), "{seen}");
    }
    assert!(receiver.deliveries().is_empty());

    // A receiver that does not answer: the error is the same whatever the
    // reason (refused, reset, timed out), so it cannot map internal ports.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!(
        "http://127.0.0.1:{}/hook",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let loupe = Loupe::start_in(loupe, &[]);
    let (status, body) = api(
        &loupe,
        "PUT",
        "/api/v1/capacity/policies/cart",
        None,
        Some(
            json!({"webhook_url": closed_url, "webhook_secret": secret, "evaluation_interval": "1h"}),
        ),
    );
    assert_eq!(status, 200, "{body}");
    let (_, task) = api(
        &loupe,
        "POST",
        "/api/v1/capacity/tasks",
        None,
        Some(json!({"service": "cart", "to": 4})),
    );
    let id = task["id"].as_str().unwrap().to_string();
    let mut seen = Value::Null;
    let attempted = wait_until(deadline_in(Duration::from_secs(20)), || {
        seen = api(
            &loupe,
            "GET",
            &format!("/api/v1/capacity/tasks/{id}"),
            None,
            None,
        )
        .1;
        seen["delivery"]["last_error"].is_string()
    });
    assert!(attempted, "{seen}");
    assert_eq!(
        seen["delivery"]["last_error"], "no HTTP response from the receiver",
        "{seen}"
    );
}

#[test]
fn secrets_are_never_shown_and_manual_tasks_keep_to_the_policy() {
    let secret = loupe_notify::signing::generate_secret();
    let receiver = Receiver::start(&secret, 204);
    let other = Receiver::start(&secret, 204);
    let loupe = Loupe::start(&[]);
    let path = "/api/v1/capacity/policies/cart";
    let (status, saved) = api(
        &loupe,
        "PUT",
        path,
        None,
        Some(
            json!({"webhook_url": receiver.url(), "webhook_secret": secret, "min": 2, "max": 10, "evaluation_interval": "1h"}),
        ),
    );
    assert_eq!(status, 200, "{saved}");
    let (_, got) = api(&loupe, "GET", path, None, None);
    let (_, list) = api(&loupe, "GET", "/api/v1/capacity/policies", None, None);
    for view in [&saved, &got, &list[0]["policy"]] {
        assert_eq!(view["webhook_secret_set"], true, "{view}");
        assert!(view.get("webhook_secret").is_none(), "{view}");
    }
    assert!(!list.to_string().contains(&secret));
    // Saving again with the same URL keeps the secret…
    let (status, _) = api(
        &loupe,
        "PUT",
        path,
        None,
        Some(
            json!({"webhook_url": receiver.url(), "min": 2, "max": 10, "evaluation_interval": "1h"}),
        ),
    );
    assert_eq!(status, 200);
    // …a new URL needs it stated again.
    let (status, body) = api(
        &loupe,
        "PUT",
        path,
        None,
        Some(json!({"webhook_url": other.url(), "min": 2, "max": 10, "evaluation_interval": "1h"})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("webhook_secret"),
        "{body}"
    );
    let (status, _) = api(
        &loupe,
        "PUT",
        path,
        None,
        Some(
            json!({"webhook_url": receiver.url(), "webhook_secret": secret, "min": 2, "max": 10, "evaluation_interval": "1h"}),
        ),
    );
    assert_eq!(status, 200);
    // A generated secret is shown once, in the answer that made it.
    let (_, fresh) = api(
        &loupe,
        "PUT",
        "/api/v1/capacity/policies/email",
        None,
        Some(json!({"webhook_url": receiver.url(), "evaluation_interval": "1h"})),
    );
    assert!(
        fresh["generated_webhook_secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_"),
        "{fresh}"
    );
    let (_, again) = api(&loupe, "GET", "/api/v1/capacity/policies/email", None, None);
    assert!(again.get("generated_webhook_secret").is_none(), "{again}");
    assert!(again.get("webhook_secret").is_none(), "{again}");

    // Alert receivers: the same rule for a changed URL.
    let rpath = "/api/v1/alerts/receivers/ops";
    let (status, _) = api(
        &loupe,
        "PUT",
        rpath,
        None,
        Some(json!({"type": "webhook", "url": receiver.url(), "secret": secret})),
    );
    assert_eq!(status, 200);
    let (status, body) = api(
        &loupe,
        "PUT",
        rpath,
        None,
        Some(json!({"type": "webhook", "url": other.url()})),
    );
    assert_eq!(status, 400, "{body}");

    // A manual task stays within [min, max] unless forced.
    let tasks = "/api/v1/capacity/tasks";
    for to in [1, 11] {
        let (status, body) = api(
            &loupe,
            "POST",
            tasks,
            None,
            Some(json!({"service": "cart", "to": to})),
        );
        assert_eq!(status, 400, "{to}: {body}");
        assert!(body["error"].as_str().unwrap().contains("force"), "{body}");
    }
    let (status, _) = api(
        &loupe,
        "POST",
        tasks,
        None,
        Some(json!({"service": "cart", "to": 10})),
    );
    assert_eq!(status, 201);
    let (status, body) = api(
        &loupe,
        "POST",
        tasks,
        None,
        Some(json!({"service": "cart", "to": 50, "force": true})),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["to"], 50, "{body}");
    assert!(!loupe.log().contains(&secret), "the secret is in the log");
}
