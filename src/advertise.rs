//! The addresses a node publishes in the catalog's `nodes` table, which
//! other nodes dial (distributed-query workers) and `/api/v1/nodes`
//! shows. A listen address is not always one: `0.0.0.0:4317` means "every
//! interface here", and another machine that dialled it would reach
//! itself. So a node listening on all interfaces publishes its host name
//! unless `--advertise-host` names the host others reach it at.

use std::net::SocketAddr;

/// `bound`'s port on the host other nodes reach this one at: `host` when
/// given, else the listen address itself, else (listening on every
/// interface) this machine's host name.
pub fn advertised(bound: SocketAddr, host: &str) -> String {
    advertised_with(bound, host, machine_host_name)
}

fn advertised_with(bound: SocketAddr, host: &str, host_name: fn() -> Option<String>) -> String {
    let port = bound.port();
    if !host.is_empty() {
        return host_port(host, port);
    }
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    match host_name() {
        Some(name) => host_port(&name, port),
        None => {
            tracing::warn!(
                %bound,
                "listening on every interface and no host name found: set --advertise-host, or other nodes cannot reach this one"
            );
            bound.to_string()
        }
    }
}

/// `host:port`, an IPv6 literal in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The kernel's host name (Linux), the one a container orchestrator or
/// DNS usually makes resolvable.
fn machine_host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_specific_listen_address_is_published_as_it_is() {
        assert_eq!(advertised(addr("10.0.0.3:4317"), ""), "10.0.0.3:4317");
        assert_eq!(advertised(addr("[::1]:4317"), ""), "[::1]:4317");
    }

    #[test]
    fn every_interface_publishes_the_host_name_unless_one_is_given() {
        let name = || Some("loupe-b".to_string());
        assert_eq!(
            advertised_with(addr("0.0.0.0:4317"), "", name),
            "loupe-b:4317"
        );
        assert_eq!(advertised_with(addr("[::]:7080"), "", name), "loupe-b:7080");
        assert_eq!(
            advertised_with(addr("0.0.0.0:4317"), "node-7.internal", name),
            "node-7.internal:4317"
        );
        assert_eq!(
            advertised_with(addr("0.0.0.0:4317"), "fd00::7", name),
            "[fd00::7]:4317"
        );
        // No host name to be found: the bound address, with a warning.
        assert_eq!(
            advertised_with(addr("0.0.0.0:4317"), "", || None),
            "0.0.0.0:4317"
        );
    }
}
