//! Scenarios: what goes wrong, when, and the ground truth that says so.
//! Time here is scenario time — seconds since the generator started — so a
//! seed fixes every value whatever the machine's speed.

use std::str::FromStr;

use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Steady,
    /// The inventory database's latency jumps ×10 from the fault time.
    DbSlow,
    /// Instance payment-2 answers 30% of requests with 5xx from the fault time.
    PaymentErrors,
    /// cart 2.0.0 replaces 1.8.3 at the fault time: slower and failing.
    BadDeploy,
    /// Load ×4 for a period starting at the fault time.
    TrafficSpike,
    /// A stepped load test against one checkout instance up to saturation.
    LoadTestRamp,
    /// `serve --demo`: cycles through the incidents every few minutes.
    Demo,
}

pub const ALL: [Scenario; 7] = [
    Scenario::Steady,
    Scenario::DbSlow,
    Scenario::PaymentErrors,
    Scenario::BadDeploy,
    Scenario::TrafficSpike,
    Scenario::LoadTestRamp,
    Scenario::Demo,
];

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::DbSlow => "db-slow",
            Scenario::PaymentErrors => "payment-errors",
            Scenario::BadDeploy => "bad-deploy",
            Scenario::TrafficSpike => "traffic-spike",
            Scenario::LoadTestRamp => "load-test-ramp",
            Scenario::Demo => "demo",
        }
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL.into_iter().find(|sc| sc.name() == s).ok_or_else(|| {
            let names: Vec<_> = ALL.iter().map(|s| s.name()).collect();
            format!("unknown scenario {s:?}; choose one of {}", names.join(", "))
        })
    }
}

pub const SLOW_DB_FACTOR: f64 = 10.0;
pub const PAYMENT_BAD_INSTANCE: &str = "payment-2";
pub const PAYMENT_ERROR_RATE: f64 = 0.30;
pub const BAD_VERSION: &str = "2.0.0";
pub const BAD_DEPLOY_SERVICE: &str = "cart";
pub const BAD_DEPLOY_LATENCY: f64 = 3.0;
pub const BAD_DEPLOY_ERROR_RATE: f64 = 0.15;
pub const SPIKE_FACTOR: f64 = 4.0;
/// Length of one demo phase in seconds.
const DEMO_PHASE_SECS: f64 = 90.0;

/// What is wrong at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    pub db_slow: bool,
    pub payment_errors: bool,
    pub bad_deploy: bool,
    pub load_factor: f64,
}

/// A scenario with its timing.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: Scenario,
    /// Seconds after start at which the fault begins.
    pub fault_at: f64,
    /// How long a traffic spike lasts.
    pub spike_secs: f64,
}

impl Plan {
    pub fn faults_at(&self, t: f64) -> Faults {
        let mut f = Faults {
            load_factor: 1.0,
            ..Faults::default()
        };
        let active = t >= self.fault_at;
        match self.scenario {
            Scenario::Steady | Scenario::LoadTestRamp => {}
            Scenario::DbSlow => f.db_slow = active,
            Scenario::PaymentErrors => f.payment_errors = active,
            Scenario::BadDeploy => f.bad_deploy = active,
            Scenario::TrafficSpike => {
                if active && t < self.fault_at + self.spike_secs {
                    f.load_factor = SPIKE_FACTOR;
                }
            }
            Scenario::Demo => {
                // steady, db-slow, steady, payment-errors, steady, bad-deploy, traffic-spike
                let phase = (t / DEMO_PHASE_SECS) as u64 % 7;
                match phase {
                    1 => f.db_slow = true,
                    3 => f.payment_errors = true,
                    5 => f.bad_deploy = true,
                    6 => f.load_factor = 2.0,
                    _ => {}
                }
            }
        }
        f
    }

    /// The ground truth, for tests and scoring: what was injected, where
    /// and when (`start_unix_nano` is the generator's start).
    pub fn truth(&self, seed: u64, start_unix_nano: i64, load_test: Option<Value>) -> Value {
        let at = |secs: f64| start_unix_nano + (secs * 1e9) as i64;
        let fault = match self.scenario {
            Scenario::Steady | Scenario::Demo => Value::Null,
            Scenario::DbSlow => json!({
                "kind": "dependency_latency",
                "start_unix_nano": at(self.fault_at),
                "cause": {"service": "inventory", "dependency": "postgres-inventory",
                          "db.system": "postgresql", "server.address": "postgres-inventory"},
                "effect": {"latency_factor": SLOW_DB_FACTOR},
                "summary": "the inventory database (postgresql at postgres-inventory) is 10x slower",
            }),
            Scenario::PaymentErrors => json!({
                "kind": "instance_errors",
                "start_unix_nano": at(self.fault_at),
                "cause": {"service": "payment", "service.instance.id": PAYMENT_BAD_INSTANCE},
                "effect": {"error_rate": PAYMENT_ERROR_RATE, "http.response.status_code": 503},
                "summary": "instance payment-2 fails 30% of charges with 503",
            }),
            Scenario::BadDeploy => json!({
                "kind": "bad_deploy",
                "start_unix_nano": at(self.fault_at),
                "cause": {"service": BAD_DEPLOY_SERVICE, "service.version": BAD_VERSION,
                          "previous_version": crate::topology::version_of(BAD_DEPLOY_SERVICE)},
                "effect": {"latency_factor": BAD_DEPLOY_LATENCY, "error_rate": BAD_DEPLOY_ERROR_RATE},
                "summary": "cart 2.0.0 is slower and fails 15% of requests",
            }),
            Scenario::TrafficSpike => json!({
                "kind": "traffic_spike",
                "start_unix_nano": at(self.fault_at),
                "end_unix_nano": at(self.fault_at + self.spike_secs),
                "cause": {"service": "frontend"},
                "effect": {"load_factor": SPIKE_FACTOR},
                "summary": "incoming traffic x4",
            }),
            Scenario::LoadTestRamp => json!({
                "kind": "load_test",
                "start_unix_nano": start_unix_nano,
                "cause": {"service": crate::load_test::TARGET_SERVICE,
                          "service.instance.id": crate::load_test::TARGET_INSTANCE},
                "load_test": load_test,
            }),
        };
        json!({
            "scenario": self.scenario.name(),
            "seed": seed,
            "start_unix_nano": start_unix_nano,
            "fault": fault,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_switch_on_at_the_fault_time() {
        let plan = Plan {
            scenario: Scenario::PaymentErrors,
            fault_at: 10.0,
            spike_secs: 5.0,
        };
        assert!(!plan.faults_at(9.9).payment_errors);
        assert!(plan.faults_at(10.0).payment_errors);
        let spike = Plan {
            scenario: Scenario::TrafficSpike,
            ..plan
        };
        assert_eq!(spike.faults_at(12.0).load_factor, SPIKE_FACTOR);
        assert_eq!(spike.faults_at(15.0).load_factor, 1.0);
        assert_eq!("db-slow".parse::<Scenario>(), Ok(Scenario::DbSlow));
        assert!("nope".parse::<Scenario>().is_err());
    }
}
