//! Where a request may connect, decided after name resolution: a name on
//! the allowlist that resolves to a loopback, private or link-local
//! address is refused unless the manifest names that address by IP, and
//! the daemon's own listen address is refused always, so no plugin reaches
//! the control plane (DNS rebinding included: plain-HTTP requests are sent
//! to the address that was checked, not resolved again).

use super::allow::Allowlist;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What the daemon itself listens on (the REST API).
#[derive(Debug, Clone, Default)]
pub struct OwnAddresses(pub Vec<SocketAddr>);

impl OwnAddresses {
    /// Whether a connection to `addr` could reach the daemon's API.
    fn reaches(&self, addr: SocketAddr) -> bool {
        self.0.iter().any(|own| {
            own.port() == addr.port()
                && (canonical(own.ip()) == canonical(addr.ip())
                    || (own.ip().is_unspecified() && internal(addr.ip()).is_some()))
        })
    }
}

/// The first address among `resolved` a request may connect to, or why
/// none may.
pub fn choose(
    host: &str,
    resolved: &[SocketAddr],
    allow: &Allowlist,
    own: &OwnAddresses,
) -> Result<SocketAddr, String> {
    let mut why = None;
    for &addr in resolved {
        if own.reaches(addr) {
            why = Some(format!(
                "`{host}` resolves to {addr}, the daemon's own API, which plugins may not call"
            ));
            continue;
        }
        if let Some(range) = internal(addr.ip())
            && !allow.names_ip(canonical(addr.ip()))
        {
            why = Some(format!(
                "`{host}` resolves to {}, a {range} address; only an allowlist entry naming that address by IP grants it",
                addr.ip()
            ));
            continue;
        }
        return Ok(addr);
    }
    Err(why.unwrap_or_else(|| format!("`{host}` did not resolve to any address")))
}

/// IPv4-mapped IPv6 addresses are their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The kind of non-public range `ip` is in, if any.
fn internal(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || a == 0 {
        Some("non-routable")
    } else {
        None
    }
}

fn internal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if (first & 0xfe00) == 0xfc00 {
        Some("private")
    } else if (first & 0xffc0) == 0xfe80 {
        Some("link-local")
    } else if ip.is_unspecified() || ip.is_multicast() {
        Some("non-routable")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    fn allow(patterns: &[&str]) -> Allowlist {
        Allowlist::parse(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>())
            .unwrap_or_default()
    }

    #[test]
    fn a_name_resolving_inside_is_refused_unless_the_address_is_named() {
        let own = OwnAddresses(vec![addr("127.0.0.1:8080")]);
        let names = allow(&["localhost:*"]);
        let err = choose("localhost", &[addr("127.0.0.1:9000")], &names, &own);
        assert!(err.is_err_and(|e| e.contains("loopback")));
        let ips = allow(&["127.0.0.1:*"]);
        assert!(choose("127.0.0.1", &[addr("127.0.0.1:9000")], &ips, &own).is_ok());
        for inside in [
            "10.1.2.3:80",
            "192.168.0.1:80",
            "169.254.169.254:80",
            "[::1]:80",
            "[fe80::1]:80",
            "[::ffff:10.0.0.1]:80",
            "100.64.0.1:80",
        ] {
            assert!(
                choose("evil.example", &[addr(inside)], &names, &own).is_err(),
                "{inside}"
            );
        }
        assert!(choose("example.com", &[addr("93.184.216.34:443")], &names, &own).is_ok());
    }

    #[test]
    fn the_daemons_own_address_is_refused_even_when_named() {
        let own = OwnAddresses(vec![addr("127.0.0.1:8080")]);
        let ips = allow(&["127.0.0.1:*"]);
        let err = choose("127.0.0.1", &[addr("127.0.0.1:8080")], &ips, &own);
        assert!(err.is_err_and(|e| e.contains("daemon's own API")));
        let any = OwnAddresses(vec![addr("0.0.0.0:8080")]);
        let wide = allow(&["10.0.0.5:*"]);
        assert!(choose("10.0.0.5", &[addr("10.0.0.5:8080")], &wide, &any).is_err());
        assert!(choose("10.0.0.5", &[addr("10.0.0.5:8081")], &wide, &any).is_ok());
    }

    #[test]
    fn the_first_allowed_address_is_chosen() {
        let own = OwnAddresses::default();
        let names = allow(&["*.example.com"]);
        let chosen = choose(
            "a.example.com",
            &[addr("10.0.0.1:80"), addr("93.184.216.34:80")],
            &names,
            &own,
        );
        assert_eq!(chosen.ok(), Some(addr("93.184.216.34:80")));
    }
}
