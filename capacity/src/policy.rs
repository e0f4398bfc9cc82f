//! A service's scaling policy as the API reads and writes it (HPA's spec
//! and `behavior`, plus where to send decisions), and its translation into
//! the decision engine's terms. Every field but `webhook_url` has a default.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::hpa::{self, Behavior, Limits, Rules, Select};
use loupe_base::duration as duration_text;

/// A service's scaling policy as stored and served; translated to the
/// decision engine's terms by [`PolicySpec::limits`] and
/// [`PolicySpec::behavior`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    #[serde(default = "one")]
    pub min: u32,
    #[serde(default = "hundred")]
    pub max: u32,
    /// Share of a baseline instance's capacity to plan for (headroom).
    #[serde(default = "target_utilization")]
    pub target_utilization: f64,
    #[serde(default = "tolerance")]
    pub tolerance_up: f64,
    #[serde(default = "tolerance")]
    pub tolerance_down: f64,
    #[serde(default)]
    pub scale_up: RulesSpec,
    #[serde(default)]
    pub scale_down: RulesSpec,
    #[serde(default = "default_signals")]
    pub signals: Vec<SignalSpec>,
    pub webhook_url: String,
    /// `whsec_…`; one is generated when the policy is saved without it.
    #[serde(default)]
    pub webhook_secret: Option<String>,
    #[serde(default = "fifteen_seconds", with = "duration_text")]
    pub evaluation_interval: Duration,
    /// Decide per `cloud.region` instead of for the service as a whole.
    #[serde(default)]
    pub split_by_region: bool,
    /// The window live load is averaged over.
    #[serde(default = "sixty_seconds", with = "duration_text")]
    pub load_window: Duration,
    /// An instance counts as ready if it sent telemetry this recently
    /// (two export intervals).
    #[serde(default = "thirty_seconds", with = "duration_text")]
    pub instance_window: Duration,
    /// What to do after three evaluations in a row fail.
    #[serde(default)]
    pub fallback: Fallback,
}

/// HPA's `behavior` for one direction; absent fields take that direction's
/// Kubernetes default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesSpec {
    #[serde(default, with = "loupe_base::duration::option")]
    pub stabilization_window: Option<Duration>,
    #[serde(default)]
    pub policies: Option<Vec<RatePolicySpec>>,
    #[serde(default)]
    pub select_policy: Option<SelectSpec>,
}

/// One rate policy as the API spells it (Kubernetes' field names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatePolicySpec {
    #[serde(rename = "type")]
    pub kind: RateKind,
    pub value: u32,
    #[serde(with = "duration_text")]
    pub period: Duration,
}

/// `Pods` or `Percent`, spelled as in Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RateKind {
    Pods,
    Percent,
}

/// `selectPolicy` as the API spells it (Kubernetes' names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectSpec {
    Max,
    Min,
    Disabled,
}

/// A load signal. Each yields a total over the service's ready instances
/// and a target per instance; the proposal is `ceil(total / target)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SignalSpec {
    /// Requests per second against target_utilization × the baseline's
    /// `max_rps_per_instance`.
    Rps {
        #[serde(default)]
        source: RateSource,
    },
    /// Sum of the instances' CPU utilisation (0–1 each) against `target`.
    Cpu {
        #[serde(default = "target_utilization")]
        target: f64,
        #[serde(default = "cpu_metric")]
        metric: String,
    },
    /// Requests in flight (Little's law: rate × mean latency) against
    /// `target` per instance.
    Concurrency { target: f64 },
    /// Any SQL returning one number (the total), against `target` per
    /// instance. `$service` and `$region` are replaced by quoted literals.
    Sql {
        name: String,
        sql: String,
        target: f64,
    },
}

/// A signal's kind: its `type` in the policy, and the name evidence shows
/// for it (SQL signals are shown by their own name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    Cpu,
    Rps,
    Concurrency,
    Sql,
}

impl SignalKind {
    /// The serde name.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::Cpu => "cpu",
            SignalKind::Rps => "rps",
            SignalKind::Concurrency => "concurrency",
            SignalKind::Sql => "sql",
        }
    }
}

impl SignalSpec {
    /// The signal's kind, without its parameters.
    pub fn kind(&self) -> SignalKind {
        match self {
            SignalSpec::Rps { .. } => SignalKind::Rps,
            SignalSpec::Cpu { .. } => SignalKind::Cpu,
            SignalSpec::Concurrency { .. } => SignalKind::Concurrency,
            SignalSpec::Sql { .. } => SignalKind::Sql,
        }
    }

    /// The name decisions show the signal under: its kind, or a SQL
    /// signal's own name.
    pub fn name(&self) -> String {
        match self {
            SignalSpec::Sql { name, .. } => name.clone(),
            other => other.kind().as_str().into(),
        }
    }

    /// The target per instance the policy states; `None` for `rps`, whose
    /// target comes from the baseline.
    pub fn fixed_target(&self) -> Option<f64> {
        match self {
            SignalSpec::Rps { .. } => None,
            SignalSpec::Cpu { target, .. }
            | SignalSpec::Concurrency { target }
            | SignalSpec::Sql { target, .. } => Some(*target),
        }
    }

    /// Whether the signal is computed from spans, so that no spans at all
    /// reads as 0 rather than as an error.
    pub fn from_spans(&self) -> bool {
        matches!(
            self,
            SignalSpec::Rps {
                source: RateSource::Spans
            } | SignalSpec::Concurrency { .. }
        )
    }
}

/// Where the request rate comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateSource {
    /// SERVER and CONSUMER spans.
    #[default]
    Spans,
    /// The counts of the `http.server.request.duration` histograms.
    Metrics,
}

/// What the count does when evaluations keep failing: telemetry outages
/// should not scale a service down by themselves.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fallback {
    /// Keep the current count.
    #[default]
    Keep,
    /// Go to a fixed count.
    Static { instances: u32 },
}

fn one() -> u32 {
    1
}
fn hundred() -> u32 {
    100
}
fn target_utilization() -> f64 {
    0.7
}
fn tolerance() -> f64 {
    0.1
}
fn default_signals() -> Vec<SignalSpec> {
    vec![SignalSpec::Rps {
        source: RateSource::Spans,
    }]
}
fn fifteen_seconds() -> Duration {
    Duration::from_secs(15)
}
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn sixty_seconds() -> Duration {
    Duration::from_secs(60)
}
fn cpu_metric() -> String {
    "process.cpu.utilization".into()
}

impl PolicySpec {
    /// Checks what serde cannot: ranges and relations between fields.
    pub fn validate(&self) -> Result<(), String> {
        if self.min > self.max {
            return Err(format!("min ({}) is above max ({})", self.min, self.max));
        }
        if !(self.target_utilization > 0.0 && self.target_utilization <= 1.0) {
            return Err("target_utilization must be in (0, 1]".into());
        }
        for t in [self.tolerance_up, self.tolerance_down] {
            if !(0.0..1.0).contains(&t) {
                return Err("tolerances must be in [0, 1)".into());
            }
        }
        if self.signals.is_empty() {
            return Err("signals must name at least one signal".into());
        }
        for signal in &self.signals {
            let target = signal.fixed_target().unwrap_or(1.0);
            if !(target > 0.0 && target.is_finite()) {
                return Err(format!("signal {}: target must be positive", signal.name()));
            }
        }
        if !(self.webhook_url.starts_with("http://") || self.webhook_url.starts_with("https://")) {
            return Err(format!(
                "webhook_url {:?} must be an http:// or https:// URL",
                self.webhook_url
            ));
        }
        if let Some(secret) = &self.webhook_secret {
            loupe_notify::signing::secret_key(secret).map_err(|e| e.to_string())?;
        }
        if self.evaluation_interval < Duration::from_millis(100) {
            return Err("evaluation_interval must be at least 100ms".into());
        }
        if self.load_window < Duration::from_secs(1)
            || self.instance_window < Duration::from_secs(1)
        {
            return Err("load_window and instance_window must be at least 1s".into());
        }
        for rules in [&self.scale_up, &self.scale_down] {
            for p in rules.policies.iter().flatten() {
                if p.period.is_zero() {
                    return Err("a rate policy's period must be positive".into());
                }
            }
        }
        Ok(())
    }

    /// The decision engine's bounds and tolerances.
    pub fn limits(&self) -> Limits {
        Limits {
            min: self.min,
            max: self.max,
            tolerance_up: self.tolerance_up,
            tolerance_down: self.tolerance_down,
        }
    }

    /// The HPA behaviour, each absent field filled from Kubernetes' default
    /// for its direction.
    pub fn behavior(&self) -> Behavior {
        let defaults = Behavior::default();
        Behavior {
            scale_up: self.scale_up.rules(defaults.scale_up),
            scale_down: self.scale_down.rules(defaults.scale_down),
        }
    }
}

impl RulesSpec {
    fn rules(&self, default: Rules) -> Rules {
        Rules {
            stabilization: self.stabilization_window.unwrap_or(default.stabilization),
            policies: self
                .policies
                .as_ref()
                .map(|ps| {
                    ps.iter()
                        .map(|p| match p.kind {
                            RateKind::Pods => hpa::Policy::pods(p.value, p.period),
                            RateKind::Percent => hpa::Policy::percent(p.value, p.period),
                        })
                        .collect()
                })
                .unwrap_or(default.policies),
            select: match self.select_policy {
                Some(SelectSpec::Max) => Select::Max,
                Some(SelectSpec::Min) => Select::Min,
                Some(SelectSpec::Disabled) => Select::Disabled,
                None => default.select,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_webhook_url_is_required() {
        let spec: PolicySpec =
            serde_json::from_str(r#"{"webhook_url": "http://127.0.0.1:9/hook"}"#).unwrap();
        assert_eq!((spec.min, spec.max), (1, 100));
        assert_eq!(spec.target_utilization, 0.7);
        assert_eq!(spec.evaluation_interval, Duration::from_secs(15));
        assert_eq!(spec.behavior(), Behavior::default());
        assert!(spec.validate().is_ok());
        assert!(serde_json::from_str::<PolicySpec>("{}").is_err());
    }

    #[test]
    fn partial_behavior_keeps_the_direction_defaults() {
        let spec: PolicySpec = serde_json::from_str(
            r#"{"webhook_url": "http://x/", "evaluation_interval": "1s",
                "scale_down": {"stabilization_window": "2s"},
                "scale_up": {"policies": [{"type": "Pods", "value": 2, "period": "30s"}], "select_policy": "Min"},
                "signals": [{"type": "rps"}, {"type": "cpu", "target": 0.6}, {"type": "sql", "name": "q", "sql": "SELECT 1", "target": 5}]}"#,
        )
        .unwrap();
        let b = spec.behavior();
        assert_eq!(b.scale_down.stabilization, Duration::from_secs(2));
        assert_eq!(
            b.scale_down.policies,
            Behavior::default().scale_down.policies
        );
        assert_eq!(b.scale_up.policies.len(), 1);
        assert_eq!(b.scale_up.select, Select::Min);
        assert_eq!(spec.signals.len(), 3);
        let kinds: Vec<_> = spec.signals.iter().map(SignalSpec::kind).collect();
        assert_eq!(kinds, [SignalKind::Rps, SignalKind::Cpu, SignalKind::Sql]);
        assert_eq!(spec.signals[2].name(), "q");
        let text = serde_json::to_string(&spec).unwrap();
        assert!(text.contains(r#""evaluation_interval":"1s""#), "{text}");
        assert_eq!(serde_json::from_str::<PolicySpec>(&text).unwrap(), spec);
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            r#"{"webhook_url": "http://x/", "min": 5, "max": 2}"#,
            r#"{"webhook_url": "ftp://x/"}"#,
            r#"{"webhook_url": "http://x/", "target_utilization": 0}"#,
            r#"{"webhook_url": "http://x/", "webhook_secret": "nope"}"#,
            r#"{"webhook_url": "http://x/", "signals": []}"#,
        ] {
            let spec: PolicySpec = serde_json::from_str(bad).unwrap();
            assert!(spec.validate().is_err(), "{bad}");
        }
        assert!(
            serde_json::from_str::<PolicySpec>(
                r#"{"webhook_url": "http://x/", "evaluation_interval": "soon"}"#
            )
            .is_err()
        );
    }
}
