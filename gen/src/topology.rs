//! The simulated shop: which services exist, where their instances run,
//! and what each operation costs. Static data; the scenario decides what
//! goes wrong with it.

/// One running copy of a service: the unit that exports telemetry.
#[derive(Debug, Clone)]
pub struct Instance {
    pub service: &'static str,
    pub id: String,
    pub host: String,
    pub region: &'static str,
}

pub const REGIONS: [&str; 2] = ["eu-west-1", "us-east-1"];

/// Instrumented services, their instance count and deployed version.
pub const SERVICES: [(&str, usize, &str); 8] = [
    ("frontend", 3, "3.2.0"),
    ("checkout", 2, "1.12.4"),
    ("cart", 3, "1.8.3"),
    ("payment", 3, "2.3.1"),
    ("inventory", 2, "4.0.2"),
    ("shipping", 2, "0.9.7"),
    ("email", 2, "1.1.0"),
    ("recommendation", 2, "2.0.5"),
];

/// Uninstrumented dependencies, seen only through CLIENT/PRODUCER spans.
pub struct Dependency {
    pub db_system: Option<&'static str>,
    pub messaging_system: Option<&'static str>,
    pub server_address: &'static str,
    pub server_port: i64,
}

pub const REDIS: Dependency = Dependency {
    db_system: Some("redis"),
    messaging_system: None,
    server_address: "redis-cart",
    server_port: 6379,
};
pub const POSTGRES: Dependency = Dependency {
    db_system: Some("postgresql"),
    messaging_system: None,
    server_address: "postgres-inventory",
    server_port: 5432,
};
pub const KAFKA: Dependency = Dependency {
    db_system: None,
    messaging_system: Some("kafka"),
    server_address: "kafka",
    server_port: 9092,
};

/// Every instance of every service, in a fixed order (index = position).
pub fn instances() -> Vec<Instance> {
    let mut out = Vec::new();
    let mut host = 0;
    for (service, count, _) in SERVICES {
        for n in 1..=count {
            host += 1;
            out.push(Instance {
                service,
                id: format!("{service}-{n}"),
                host: format!("node-{}", (host % 7) + 1),
                region: REGIONS[(n - 1) % REGIONS.len()],
            });
        }
    }
    out
}

pub fn version_of(service: &str) -> &'static str {
    SERVICES
        .iter()
        .find(|(s, _, _)| *s == service)
        .map(|(_, _, v)| *v)
        .unwrap_or("0.0.0")
}

/// Latency of one piece of work: log-normal with this median and spread.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    pub median_ms: f64,
    pub sigma: f64,
}

pub const fn cost(median_ms: f64, sigma: f64) -> Cost {
    Cost { median_ms, sigma }
}
