//! Errors that say a dependency failed the request: it could not be
//! reached ("No instances available for payment", "Connection refused", an
//! unknown host) or it answered with a server error ("500 Internal Server
//! Error" from the call). The caller logs them and its span fails, but the
//! error did not start there: for an unreachable dependency the request
//! never got anywhere (whether the dependency's instances are gone shows in
//! its own telemetry: its spans and lines stop, its gauges), and a server
//! error started in the dependency, whose own spans carry it when it marks
//! them. Left in the caller, a service discovery that flaps now and then
//! makes whichever caller it hit the top suspect of any incident that
//! happens at the same time — the same rule as errors starting where none
//! of a span's children failed, read from the message when the trace does
//! not say it.
//!
//! So such errors are taken off the errors that start in the caller's
//! spans ([`discount`]), in both windows alike, and a template of such a
//! line that appears or rises is not the caller's log evidence
//! ([`crate::evidence::log_evidence`]).

use std::collections::HashMap;

use crate::evidence::is_warning_or_worse;
use crate::patterns::LineRow;
use crate::problem_windows::Stats;
use crate::subject::Subject;

/// Phrases of client libraries (load balancers, HTTP and gRPC clients,
/// resolvers) failing to reach the other side at all, or relaying its
/// server error, lowercase. A bare "Internal Server Error" is not one: a
/// server logs that for its own failures too.
const PHRASES: [&str; 11] = [
    "no instances available",
    "connection refused",
    "unknownhostexception",
    "unknown host",
    "no route to host",
    "connect timed out",
    "name or service not known",
    "service unavailable",
    "bad gateway",
    "httpservererrorexception",
    "server error for url",
];

/// Whether a log line (or template) says a dependency failed the request.
pub(crate) fn blames_a_dependency(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    PHRASES.iter().any(|p| text.contains(p))
}

/// Per subject (service, and the instance and operation the line carries):
/// WARN-or-worse lines of a window saying a dependency failed the request
/// — one per failed request, as a request logs its failure once.
pub(crate) fn dependency_errors(lines: &[LineRow]) -> HashMap<Subject, f64> {
    let mut out: HashMap<Subject, f64> = HashMap::new();
    for line in lines {
        let (Some(service), Some(severity), Some(body)) =
            (&line.service, &line.severity_text, &line.body)
        else {
            continue;
        };
        if !is_warning_or_worse(severity) || !blames_a_dependency(body) {
            continue;
        }
        let mut subjects = vec![Subject::Service {
            service: service.clone(),
        }];
        if let Some(instance) = line.instance.clone().filter(|i| !i.is_empty()) {
            subjects.push(Subject::Instance {
                service: service.clone(),
                instance,
            });
        }
        if let Some(operation) = line.operation.clone().filter(|o| !o.is_empty()) {
            subjects.push(Subject::Operation {
                service: service.clone(),
                operation,
            });
        }
        for s in subjects {
            *out.entry(s).or_default() += 1.0;
        }
    }
    out
}

/// Takes `errors` (from [`dependency_errors`]) off the errors that start
/// in each subject's spans; versions and regions, which lines do not name,
/// lose them in proportion to their share of their service's errors. The
/// lines are all read while the spans may be a `share` of the window's
/// traces (see [`crate::problem_windows::MAX_SPANS`]): the lines' counts
/// are scaled to it.
pub(crate) fn discount(
    subjects: &mut HashMap<Subject, Stats>,
    errors: &HashMap<Subject, f64>,
    share: f64,
) {
    let service_errors: HashMap<String, f64> = (subjects.iter())
        .filter(|(s, _)| matches!(s, Subject::Service { .. }))
        .map(|(s, st)| (s.service().to_string(), st.origin_errors))
        .collect();
    for (subject, stats) in subjects.iter_mut() {
        let taken = match subject {
            Subject::Version { .. } | Subject::Region { .. } => {
                let service = subject.whole_service();
                let total = service_errors.get(service.service()).copied();
                match (errors.get(&service), total) {
                    (Some(n), Some(total)) if total > 0.0 => n * stats.origin_errors / total,
                    _ => 0.0,
                }
            }
            _ => errors.get(subject).copied().unwrap_or(0.0),
        } * share;
        stats.origin_errors = (stats.origin_errors - taken).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem_ranking::{Signals, fold, rank};
    use crate::test_fixtures::{service, stats};

    fn line(service: &str, operation: &str, severity: &str, body: &str) -> LineRow {
        LineRow {
            service: Some(service.into()),
            severity_text: Some(severity.into()),
            body: Some(body.into()),
            operation: Some(operation.into()),
            instance: Some(format!("{service}-1")),
        }
    }

    #[test]
    fn recognises_a_dependency_that_failed_the_request() {
        for text in [
            "IllegalStateException: No instances available for ts-basic-service",
            "java.net.ConnectException: Connection refused (Connection refused)",
            "java.net.UnknownHostException: payment: Name or service not known",
            "rpc error: code = Unavailable desc = connection error: dial tcp: connect: no route to host",
            "503 Service Unavailable",
            "500 Server Error: Internal Server Error for url: http://price/api/prices",
            "HttpServerErrorException$InternalServerError: 500 Internal Server Error: \
             [{\"path\":\"/api/v1/basicservice/basic/travels\"}]",
        ] {
            assert!(blames_a_dependency(text), "{text}");
        }
        for text in [
            "NullPointerException at PriceServiceImpl.query",
            "Internal Server Error: /api/prices",
            "Order not found",
            "Read timed out",
        ] {
            assert!(!blames_a_dependency(text), "{text}");
        }
    }

    /// A caller whose load balancer found no instance of a dependency for
    /// a while fails every request it tried then; the culprit beside it
    /// only slowed down. The caller's failures are not evidence against
    /// it, so the slow service ranks first; errors of its own still count.
    #[test]
    fn a_caller_that_could_not_reach_a_dependency_is_not_the_cause() {
        let op = Subject::Operation {
            service: "travel".into(),
            operation: "/trips/left".into(),
        };
        let mut incident = HashMap::new();
        let mut baseline = HashMap::new();
        incident.insert(service("travel"), stats(100.0, 20.0, 2.0));
        incident.insert(op.clone(), stats(25.0, 17.0, 2.0));
        baseline.insert(service("travel"), stats(100.0, 0.0, 2.0));
        baseline.insert(op.clone(), stats(25.0, 0.0, 2.0));
        incident.insert(service("price"), stats(40.0, 0.0, 9.0));
        baseline.insert(service("price"), stats(40.0, 0.0, 6.0));
        let unreachable = "Request processing failed; nested exception is \
            java.lang.IllegalStateException: No instances available for basic";
        let mut lines: Vec<LineRow> = (0..17)
            .map(|_| line("travel", "/trips/left", "ERROR", unreachable))
            .collect();
        lines.push(line("travel", "/trips/left", "INFO", unreachable));
        let errors = dependency_errors(&lines);
        assert_eq!(errors[&op], 17.0, "WARN or worse lines only");
        let before = rank(&incident, &baseline);
        assert_eq!(before[0].subject.service(), "travel");

        let mut sampled = incident.clone();
        discount(&mut sampled, &errors, 0.5);
        assert_eq!(
            sampled[&op].origin_errors,
            17.0 - 8.5,
            "half the traces read"
        );
        discount(&mut incident, &errors, 1.0);
        assert_eq!(incident[&op].origin_errors, 0.0);
        assert_eq!(incident[&service("travel")].origin_errors, 3.0);
        let ranked = rank(&incident, &baseline);
        let folded = fold(ranked, &Signals::default(), &incident, &baseline);
        assert_eq!(
            folded[0].subject,
            service("price"),
            "{}",
            folded[0].explanation
        );
    }

    /// The same failure in the logs: a new ERROR template saying the
    /// caller found no instance is not the caller's evidence, while a new
    /// error of its own is.
    #[test]
    fn a_new_unreachable_error_line_is_not_the_callers_log_evidence() {
        let compared = |service: &str, template: &str, before, current| crate::patterns::Compared {
            service: service.into(),
            severity: "ERROR".into(),
            template: template.into(),
            operation: None,
            before,
            current,
            example: template.into(),
        };
        let changes = vec![
            compared("travel", "No instances available for <*>", 0, 17),
            compared("travel", "query trips <*>", 100, 100),
            compared("price", "price not found <*>", 0, 12),
            compared("price", "query price <*>", 100, 100),
        ];
        let ev = crate::evidence::log_evidence(&changes, &Default::default());
        assert!(!ev.contains_key("travel"), "{ev:?}");
        assert!(ev["price"].appeared_severe > 0.0);
    }
}
