//! What a problem suspect is — a service, one of its instances, versions,
//! regions or operations, or a database or broker it calls — with the SQL
//! that selects its spans and logs. The serde form is the `subject` object
//! of `/api/v1/problems`: `kind` names the variant and the other keys are
//! the OpenTelemetry attribute names, so clients can match them directly.

use loupe_base::sql_literal::quote;
use serde::Serialize;

/// A suspect; the hash key of per-window stats, so the incident and the
/// baseline are compared subject by subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Subject {
    Service {
        service: String,
    },
    Instance {
        service: String,
        #[serde(rename = "service.instance.id")]
        instance: String,
    },
    Version {
        service: String,
        #[serde(rename = "service.version")]
        version: String,
    },
    Region {
        service: String,
        #[serde(rename = "cloud.region")]
        region: String,
    },
    Operation {
        service: String,
        operation: String,
    },
    /// A leaf client or producer call: the calling service, the system
    /// (postgresql, redis, kafka) and its address.
    Dependency {
        service: String,
        system: String,
        #[serde(rename = "server.address")]
        address: String,
    },
}

impl Subject {
    pub fn service(&self) -> &str {
        match self {
            Subject::Service { service }
            | Subject::Instance { service, .. }
            | Subject::Version { service, .. }
            | Subject::Region { service, .. }
            | Subject::Operation { service, .. }
            | Subject::Dependency { service, .. } => service,
        }
    }

    /// The whole service this subject is part of.
    pub fn whole_service(&self) -> Subject {
        Subject::Service {
            service: self.service().to_string(),
        }
    }

    /// Between equally good explanations, the more specific one wins: an
    /// instance that is alone in its region is named as the instance.
    pub fn specificity(&self) -> u8 {
        match self {
            Subject::Instance { .. } | Subject::Dependency { .. } => 0,
            Subject::Version { .. } => 1,
            Subject::Operation { .. } => 2,
            Subject::Region { .. } => 3,
            Subject::Service { .. } => 4,
        }
    }

    /// Attribute values (not whole services or dependencies) are compared
    /// with their service.
    pub fn is_attribute(&self) -> bool {
        !self.is_top_level()
    }

    /// Services and dependencies partition the spans: summing over them
    /// counts every span once.
    pub fn is_top_level(&self) -> bool {
        matches!(self, Subject::Service { .. } | Subject::Dependency { .. })
    }

    pub fn describe(&self) -> String {
        match self {
            Subject::Service { service } => format!("service {service}"),
            Subject::Instance { service, instance } => format!("{service} instance {instance}"),
            Subject::Version { service, version } => format!("{service} version {version}"),
            Subject::Region { service, region } => format!("{service} in region {region}"),
            Subject::Operation { service, operation } => {
                format!("{service} operation {operation}")
            }
            Subject::Dependency {
                service,
                system,
                address,
            } => format!("{system} at {address} (called by {service})"),
        }
    }

    /// The SQL condition selecting the subject's spans.
    pub fn span_condition(&self) -> String {
        let service = format!("service = {}", quote(self.service()));
        match self {
            Subject::Service { .. } => service,
            Subject::Instance { instance, .. } => {
                format!("{service} AND instance = {}", quote(instance))
            }
            Subject::Version { version, .. } => format!(
                "{service} AND resource_attributes['service.version'] = {}",
                quote(version)
            ),
            Subject::Region { region, .. } => format!(
                "{service} AND resource_attributes['cloud.region'] = {}",
                quote(region)
            ),
            Subject::Operation { operation, .. } => {
                format!("{service} AND name = {}", quote(operation))
            }
            Subject::Dependency { address, .. } => format!(
                "{service} AND kind IN ('client', 'producer') AND COALESCE(attributes['server.address'], attributes['messaging.destination.name'], attributes['peer.service']) = {}",
                quote(address)
            ),
        }
    }

    /// The SQL condition selecting the subject's log lines: its service's,
    /// narrowed to the instance or version when it is one.
    pub fn log_condition(&self) -> String {
        match self {
            Subject::Instance { .. } | Subject::Version { .. } => self.span_condition(),
            _ => format!("service = {}", quote(self.service())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_with_attribute_names() {
        let dependency = Subject::Dependency {
            service: "inventory".into(),
            system: "postgresql".into(),
            address: "postgres-inventory".into(),
        };
        assert_eq!(
            serde_json::to_value(&dependency).unwrap(),
            serde_json::json!({"kind": "dependency", "service": "inventory",
                               "system": "postgresql", "server.address": "postgres-inventory"})
        );
        let instance = Subject::Instance {
            service: "payment".into(),
            instance: "payment-2".into(),
        };
        assert_eq!(
            serde_json::to_value(&instance).unwrap(),
            serde_json::json!({"kind": "instance", "service": "payment", "service.instance.id": "payment-2"})
        );
    }
}
