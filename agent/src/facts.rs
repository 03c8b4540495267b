//! Host facts reported at registration and on every connect.

use std::net::IpAddr;

use bosun_proto::agent::v1::HostFacts;

/// At most this many addresses are reported (the proto's limit).
const MAX_ADDRESSES: usize = 32;

/// Facts about this host: /etc/os-release, host name, non-loopback addresses, architecture.
pub fn collect_host_facts() -> HostFacts {
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    HostFacts {
        platform_type: "Linux".into(),
        platform_name: os_release_value(&os_release, "NAME").unwrap_or_else(|| "Linux".into()),
        platform_version: os_release_value(&os_release, "VERSION_ID").unwrap_or_default(),
        hostname: hostname(),
        ip_addresses: addresses(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        architecture: std::env::consts::ARCH.into(),
    }
}

/// A value of an os-release file (`KEY=value`, `KEY="value"` or `KEY='value'`).
pub fn os_release_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (name, value) = line.trim().split_once('=')?;
        if name != key {
            return None;
        }
        let value = value.trim();
        let unquoted = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        Some(unquoted.replace("\\\"", "\"").replace("\\\\", "\\"))
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_default()
}

fn addresses() -> Vec<String> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut found: Vec<IpAddr> = Vec::new();
    for interface in interfaces {
        let Some(address) = interface.address else {
            continue;
        };
        let ip = if let Some(v4) = address.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = address.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if !ip.is_loopback() && !ip.is_unspecified() && !found.contains(&ip) {
            found.push(ip);
        }
    }
    // IPv4 first: the first one is what the console shows as the node's address.
    found.sort_by_key(|ip| ip.is_ipv6());
    found
        .into_iter()
        .take(MAX_ADDRESSES)
        .map(|ip| ip.to_string())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test may panic
mod tests {
    use super::*;

    #[test]
    fn os_release_values_are_unquoted() {
        let text = "NAME=\"Ubuntu\"\nVERSION_ID='24.04'\nID=ubuntu\n";
        assert_eq!(os_release_value(text, "NAME").as_deref(), Some("Ubuntu"));
        assert_eq!(
            os_release_value(text, "VERSION_ID").as_deref(),
            Some("24.04")
        );
        assert_eq!(os_release_value(text, "ID").as_deref(), Some("ubuntu"));
        assert_eq!(os_release_value(text, "MISSING"), None);
    }

    #[test]
    fn facts_name_this_host() {
        let facts = collect_host_facts();
        assert_eq!(facts.platform_type, "Linux");
        assert_eq!(facts.architecture, std::env::consts::ARCH);
        assert!(
            facts
                .ip_addresses
                .iter()
                .all(|ip| ip != "127.0.0.1" && ip != "::1")
        );
    }
}
