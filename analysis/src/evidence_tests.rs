//! Unit tests of `evidence`: each rule on a hand-built fixture.

use super::*;

fn compared(service: &str, severity: &str, template: &str, before: u64, current: u64) -> Compared {
    Compared::fixture(service, severity, template, before, current)
}

#[test]
fn poisson_g_is_signed_and_grows_with_counts() {
    assert!(poisson_g(10.0, 10.0).abs() < 1e-9);
    assert!(poisson_g(20.0, 10.0) > 0.0);
    assert!(poisson_g(0.0, 10.0) < 0.0);
    assert!(poisson_g(200.0, 100.0) > poisson_g(20.0, 10.0));
}

/// The culprit logs a new ERROR line 5 times and stops an INFO line;
/// a big neighbour's templates drift by 20 % with the request mix.
#[test]
fn new_and_vanished_templates_beat_drift_in_a_big_service() {
    let changes = vec![
        compared("food", "INFO", "get all food", 40, 38),
        compared("food", "INFO", "train food list", 8, 0),
        compared("food", "ERROR", "food request failed <*>", 0, 5),
        compared("order", "WARN", "left ticket info is empty <*>", 1000, 800),
        compared("order", "INFO", "sold tickets <*>", 1000, 1200),
        compared("quiet", "INFO", "rare line", 1, 2),
    ];
    let ev = log_evidence(&changes, &OperationTraffic::new());
    let food = &ev["food"];
    assert!(food.appeared > 0.0 && food.vanished > 0.0, "{food:?}");
    let trends: Vec<_> = food.shifts.iter().map(TemplateShift::trend).collect();
    assert!(
        trends.contains(&"new") && trends.contains(&"vanished"),
        "{trends:?}"
    );
    let order = ev.get("order").map_or(0.0, Evidence::score);
    assert!(food.score() > 3.0 * order, "food {food:?} order {order}");
    assert!(!ev.contains_key("quiet"), "two lines are not significant");
}

fn in_operation(mut c: Compared, operation: &str) -> Compared {
    c.operation = Some(operation.into());
    c
}

/// Lesson: compare like with like. The request mix shifts: `order`'s
/// `getOrderById` is called 16 times in the baseline and once now, and
/// `seat` serves `create` only now, so their lines follow their
/// operations. `route` still serves `queryByIds` as often, but one of
/// its lines stopped: only that is evidence.
#[test]
fn a_template_is_compared_with_its_operations_traffic() {
    let changes = vec![
        in_operation(
            compared("order", "INFO", "get order by id <*>", 16, 1),
            "getOrderById",
        ),
        in_operation(
            compared("order", "INFO", "sold tickets <*>", 50, 52),
            "tickets",
        ),
        in_operation(
            compared("seat", "INFO", "distribute seat <*>", 0, 20),
            "create",
        ),
        in_operation(
            compared("seat", "INFO", "left tickets <*>", 100, 100),
            "leftTickets",
        ),
        in_operation(
            compared("route", "INFO", "query routes by ids <*>", 40, 0),
            "queryByIds",
        ),
        in_operation(
            compared("route", "INFO", "query route <*>", 40, 38),
            "queryById",
        ),
    ];
    let traffic = |b: f64, n: f64| (b, n);
    let operations: OperationTraffic = [
        (("order", "getOrderById"), traffic(16.0, 1.0)),
        (("order", "tickets"), traffic(50.0, 52.0)),
        (("seat", "create"), traffic(0.0, 20.0)),
        (("seat", "leftTickets"), traffic(100.0, 100.0)),
        (("route", "queryByIds"), traffic(40.0, 38.0)),
        (("route", "queryById"), traffic(40.0, 38.0)),
    ]
    .into_iter()
    .map(|((s, o), t)| ((s.to_string(), o.to_string()), t))
    .collect();
    let ev = log_evidence(&changes, &operations);
    assert_eq!(ev.keys().collect::<Vec<_>>(), ["route"], "{ev:?}");
    assert_eq!(ev["route"].shifts[0].trend(), "vanished");
    // Against each service's share of lines, the mix shift looks like
    // evidence for all three.
    let by_share = log_evidence(&changes, &OperationTraffic::new());
    assert!(by_share.contains_key("order") && by_share.contains_key("seat"));
}

/// Errors that stop (a burst of errors in the baseline that is over)
/// weigh less than a usual line that stops.
#[test]
fn a_stopped_error_weighs_less_than_a_stopped_usual_line() {
    let changes = vec![
        compared("travel", "ERROR", "request processing failed <*>", 12, 0),
        compared("travel", "INFO", "query trips <*>", 100, 100),
        compared("route", "INFO", "query routes by ids <*>", 12, 0),
        compared("route", "INFO", "query route <*>", 100, 100),
    ];
    let ev = log_evidence(&changes, &OperationTraffic::new());
    assert!(ev["route"].score() > 2.0 * ev["travel"].score(), "{ev:?}");
}

/// The caller's lines changed (new INFO lines, errors that stopped)
/// without it failing, because a callee it still calls as often
/// stopped part of its work: the callee's stopped lines are its own
/// evidence, so it ranks first — unless the caller's change is far
/// larger, or the callee was merely called less.
#[test]
fn a_changed_caller_of_a_callee_that_stopped_working_is_a_symptom() {
    let calls = vec![("preserve".to_string(), "contacts".to_string())];
    let kept = HashSet::from([("preserve".to_string(), "contacts".to_string())]);
    let vanished = HashMap::from([("contacts".to_string(), 0.4)]);
    let none = HashSet::new();
    let run = |preserve: f64, kept: &HashSet<(String, String)>| {
        let scores = HashMap::from([
            ("preserve".to_string(), preserve),
            ("contacts".to_string(), 0.4),
        ]);
        demote_symptoms(
            &scores,
            &HashMap::new(),
            &none,
            &none,
            &vanished,
            kept,
            &calls,
        )
    };
    let out = run(0.7, &kept);
    assert!(out["preserve"] < out["contacts"], "{out:?}");
    assert_eq!(run(0.7, &HashSet::new())["preserve"], 0.7, "called less");
    assert_eq!(run(3.0, &kept)["preserve"], 3.0, "a far larger change");
}

#[test]
fn a_vanished_call_edge_is_evidence_for_the_caller() {
    let edge = |caller: &str, callee: &str| Edge {
        caller: caller.into(),
        callee: callee.into(),
        operation: "/op".into(),
    };
    let before = HashMap::from([(edge("price", "db"), 30.0), (edge("travel", "route"), 50.0)]);
    let current = HashMap::from([(edge("travel", "route"), 45.0)]);
    let traffic = HashMap::from([
        ("price".to_string(), (100.0, 90.0)),
        ("travel".to_string(), (100.0, 95.0)),
    ]);
    let ev = edge_evidence(&before, &current, &traffic);
    assert!(ev["price"].0 > 0.0 && ev["price"].1.contains("db"));
    assert!(!ev.contains_key("travel"));
}

#[test]
fn a_contended_instance_stands_out_from_a_load_change() {
    let gauge = |i: &str, base: f64, inc: f64| GaugeRow {
        service: i.trim_end_matches(char::is_numeric).into(),
        instance: i.into(),
        name: "cpu".into(),
        base_mean: base,
        base_std: 0.0,
        inc_mean: inc,
    };
    // Everyone rises by about 1 with load; contacts1 by 70.
    let rows = vec![
        gauge("gateway1", 5.0, 6.0),
        gauge("order1", 2.0, 3.0),
        gauge("travel1", 1.0, 2.2),
        gauge("contacts1", 1.0, 72.0),
        gauge("route1", 1.0, 1.8),
    ];
    let ev = metric_evidence(&rows);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev["contacts"].instance, "contacts1");
}

#[test]
fn a_caller_is_not_ranked_above_its_anomalous_callee() {
    let scores = HashMap::from([
        ("gateway".to_string(), 1.0),
        ("travel".to_string(), 1.5),
        ("price".to_string(), 0.8),
        ("station".to_string(), 0.1),
    ]);
    let own = HashMap::from([("price".to_string(), 0.8), ("station".to_string(), 0.1)]);
    let calls = vec![
        ("gateway".to_string(), "travel".to_string()),
        ("travel".to_string(), "price".to_string()),
        ("travel".to_string(), "station".to_string()),
    ];
    let out = demote_symptoms(
        &scores,
        &own,
        &HashSet::new(),
        &HashSet::new(),
        &HashMap::new(),
        &HashSet::new(),
        &calls,
    );
    assert!(out["travel"] < out["price"], "{out:?}");
    assert_eq!(out["gateway"], 1.0, "travel's own evidence is none");
    assert_eq!(out["station"], 0.1);
}

/// Propagation needs a plausible cause: a failing caller is not
/// demoted below a callee whose own evidence is a fraction of its own.
#[test]
fn a_faint_callee_does_not_absorb_a_strong_caller() {
    let scores = HashMap::from([("basic".to_string(), 1.4), ("seat".to_string(), 0.08)]);
    let own = HashMap::from([("seat".to_string(), 0.08)]);
    let failing = HashSet::from(["basic".to_string(), "seat".to_string()]);
    let calls = vec![("basic".to_string(), "seat".to_string())];
    let kept = HashSet::from([("basic".to_string(), "seat".to_string())]);
    let out = demote_symptoms(
        &scores,
        &own,
        &failing,
        &HashSet::new(),
        &HashMap::new(),
        &kept,
        &calls,
    );
    assert_eq!(out["basic"], 1.4, "{out:?}");
}

/// The incident window often starts after the change did: the
/// baseline's newer half already shows `contacts` failing to find
/// contacts, which the older half did not. That is the change starting
/// early, not drift, so it does not discount the change; drift that
/// the incident does not continue still does.
#[test]
fn a_change_that_began_just_before_the_window_is_not_drift() {
    let now = vec![
        compared("contacts", "INFO", "find contacts", 12, 0),
        compared("contacts", "ERROR", "no contacts for id <*>", 8, 36),
        compared("contacts", "INFO", "contacts id <*>", 20, 36),
        compared("seat", "INFO", "left ticket <*>", 100, 100),
        compared("seat", "INFO", "sold tickets <*>", 50, 110),
    ];
    let halves = vec![
        compared("contacts", "INFO", "find contacts", 12, 0),
        compared("contacts", "ERROR", "no contacts for id <*>", 0, 8),
        compared("contacts", "INFO", "contacts id <*>", 10, 10),
        compared("seat", "INFO", "left ticket <*>", 50, 50),
        compared("seat", "INFO", "sold tickets <*>", 40, 10),
    ];
    let noise_of = |halves: &[Compared]| {
        let mut ev = log_evidence(&now, &OperationTraffic::new());
        discount_noise(&mut ev, &log_evidence(halves, &OperationTraffic::new()));
        ev
    };
    let raw = noise_of(&halves);
    assert!(raw["contacts"].noise > 0.0, "{raw:?}");
    let kept = without_onsets(halves.clone(), &now);
    assert_eq!(kept.len(), 3, "{kept:?}");
    let ev = noise_of(&kept);
    assert_eq!(ev["contacts"].noise, 0.0);
    assert!(ev["contacts"].score() > raw["contacts"].score());
    assert!(ev["seat"].noise > 0.0, "seat's drift went the other way");
}

/// A recovery is one change, not many. `preserve`'s requests failed
/// in the baseline and succeed now: the steps they now get far enough
/// to log are that recovery, not new behaviour, and outweigh neither
/// the errors that stopped nor `contacts`, whose lookups stopped
/// finding anything.
#[test]
fn lines_of_a_recovered_path_are_not_new_evidence() {
    let changes = vec![
        compared("preserve", "ERROR", "request processing failed <*>", 10, 0),
        compared("preserve", "INFO", "do order complete <*>", 0, 10),
        compared("preserve", "INFO", "preserve request <*>", 20, 20),
        compared("contacts", "INFO", "find contacts", 12, 0),
        compared("contacts", "INFO", "contacts request <*>", 40, 40),
    ];
    let ev = log_evidence(&changes, &OperationTraffic::new());
    assert_eq!(ev["preserve"].appeared, 0.0, "{ev:?}");
    assert!(ev["preserve"].vanished > 0.0, "the errors that stopped");
    assert!(ev["contacts"].score() > ev["preserve"].score(), "{ev:?}");
}

#[test]
fn drift_the_baseline_shows_too_is_not_evidence() {
    let now = vec![
        compared("seat", "INFO", "left ticket <*>", 100, 40),
        compared("seat", "INFO", "sold tickets <*>", 50, 110),
        compared("food", "INFO", "train food list", 8, 0),
        compared("food", "INFO", "get all food", 40, 40),
    ];
    let within_baseline = vec![
        compared("seat", "INFO", "left ticket <*>", 60, 20),
        compared("seat", "INFO", "sold tickets <*>", 50, 60),
        compared("food", "INFO", "train food list", 4, 4),
        compared("food", "INFO", "get all food", 20, 20),
    ];
    let mut ev = log_evidence(&now, &OperationTraffic::new());
    let seat_before = ev["seat"].score();
    assert!(seat_before > 0.0);
    discount_noise(
        &mut ev,
        &log_evidence(&within_baseline, &OperationTraffic::new()),
    );
    assert!(ev["seat"].score() < seat_before);
    assert!(ev["food"].score() > ev["seat"].score(), "{ev:?}");
}

/// Lesson (a): the culprit swallows an exception, so its usual lines
/// vanish while its caller logs the error. Vanished lines count
/// against the callee only if the caller still called it as often.
#[test]
fn vanished_lines_in_a_still_called_callee_outrank_the_failing_caller() {
    let scores = HashMap::from([("travel".to_string(), 3.0), ("route".to_string(), 0.6)]);
    let own = HashMap::new();
    let failing = HashSet::from(["travel".to_string()]);
    let vanished = HashMap::from([("route".to_string(), 0.6)]);
    let calls = vec![("travel".to_string(), "route".to_string())];
    let kept = HashSet::from([("travel".to_string(), "route".to_string())]);
    let out = demote_symptoms(
        &scores,
        &own,
        &failing,
        &HashSet::new(),
        &vanished,
        &kept,
        &calls,
    );
    assert!(out["travel"] < out["route"], "{out:?}");
    // Called less: route's lines vanished because travel stopped calling.
    let out = demote_symptoms(
        &scores,
        &own,
        &failing,
        &HashSet::new(),
        &vanished,
        &HashSet::new(),
        &calls,
    );
    assert_eq!(out["travel"], 3.0);
}

/// Lesson 4: an exception thrown and swallowed between two lines that a
/// code path logs once each. The operation is called a quarter as often
/// but prints more lines per request, so against its traffic the second
/// line's drop (60 → 12) is within what the mix explains; against its
/// twin, logged as often in the baseline and still going (60 → 30), it
/// is not. Lines without a twin are judged as before.
#[test]
fn a_line_that_falls_behind_its_twin_is_evidence() {
    let op = |c| in_operation(c, "queryInfo");
    let changes = vec![
        op(compared(
            "travel",
            "INFO",
            "calculate distance start <*>",
            60,
            30,
        )),
        op(compared(
            "travel",
            "INFO",
            "calculate distance done <*>",
            60,
            12,
        )),
        op(compared("travel", "INFO", "query trip response", 40, 10)),
    ];
    let traffic = OperationTraffic::from([(("travel".into(), "queryInfo".into()), (40.0, 10.0))]);
    let ev = log_evidence(&changes, &traffic);
    let travel = &ev["travel"];
    assert_eq!(
        travel.shifts[0].template, "calculate distance done <*>",
        "{travel:?}"
    );
    assert_eq!(travel.shifts[0].trend(), "dropping");
    assert!(travel.vanished > 2.0 * travel.appeared, "{travel:?}");

    // Without its twin the same drop is within the operation's drift.
    let alone = vec![changes[1].clone(), changes[2].clone()];
    assert!(!log_evidence(&alone, &traffic).contains_key("travel"));

    // Weighed as the share of passes that stopped (60 % here), it
    // outweighs a handful of lines of a quiet neighbour dropping (6 → 1).
    let mut both = changes.clone();
    both.push(in_operation(
        compared("travel2", "INFO", "calculate distance done <*>", 6, 1),
        "queryInfo",
    ));
    let mut traffic = traffic;
    traffic.insert(("travel2".into(), "queryInfo".into()), (40.0, 40.0));
    let ev = log_evidence(&both, &traffic);
    assert!(ev["travel"].score() > ev["travel2"].score(), "{ev:?}");
}

/// A service that stops failing to reach a dependency ("No instances
/// available") has not changed: its dependency recovered. Like a new
/// such line, a vanished one is not the service's evidence.
#[test]
fn a_dependency_failure_that_stops_is_not_evidence() {
    let changes = vec![
        compared(
            "travel",
            "ERROR",
            "Request processing failed; nested exception is java.lang.IllegalStateException: No instances available for <*>",
            15,
            0,
        ),
        compared("travel", "INFO", "query trips", 200, 210),
    ];
    let ev = log_evidence(&changes, &OperationTraffic::new());
    assert!(ev.get("travel").is_none_or(|e| e.score() == 0.0), "{ev:?}");
}

/// Lesson 4 along the call path: `preserve` stopped logging the last
/// steps of its flow (its only evidence, and strong: it is called four
/// times as often), and `travel`, which it kept calling, stopped a usual
/// line — a swallowed exception there ends preserve's flow early. The
/// callee is the cause; a caller that only stopped, beside a callee that
/// did not change, keeps its score, and so does one whose callee it no
/// longer calls as often.
#[test]
fn a_flow_that_stops_after_a_callee_stopped_working_is_a_symptom() {
    let scores = HashMap::from([("preserve".to_string(), 0.6), ("travel".to_string(), 0.13)]);
    let own = HashMap::from([("preserve".to_string(), 0.01)]);
    let stopped = HashSet::from(["preserve".to_string(), "travel".to_string()]);
    let calls = vec![("preserve".to_string(), "travel".to_string())];
    let kept = HashSet::from([("preserve".to_string(), "travel".to_string())]);
    let run = |vanished: &HashMap<String, f64>, kept: &HashSet<(String, String)>| {
        demote_symptoms(
            &scores,
            &own,
            &HashSet::new(),
            &stopped,
            vanished,
            kept,
            &calls,
        )
    };
    let travel_stopped = HashMap::from([("travel".to_string(), 0.13)]);
    let out = run(&travel_stopped, &kept);
    assert!(out["preserve"] < out["travel"], "{out:?}");
    assert_eq!(
        run(&HashMap::new(), &kept)["preserve"],
        0.6,
        "travel unchanged"
    );
    let travel_mostly_new = HashMap::from([("travel".to_string(), 0.02)]);
    assert_eq!(
        run(&travel_mostly_new, &kept)["preserve"],
        0.6,
        "travel's change is mostly what appeared"
    );
    assert_eq!(
        run(&travel_stopped, &HashSet::new())["preserve"],
        0.6,
        "called less"
    );
}
