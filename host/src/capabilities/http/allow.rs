//! Destination patterns: the manifest's `[capabilities] http` list and a
//! breaker's `hosts` list.
//!
//! A pattern is `[scheme://]host[:port]`:
//! - `host` is a name (`example.com`), `*.name` (any subdomain of `name`,
//!   at any depth, not `name` itself), an IPv4 address, `[IPv6]`, or `*`
//!   (any host);
//! - `port` is a number or `*`; without one only the scheme's default port
//!   (80 for http, 443 for https) matches;
//! - without a scheme both `http` and `https` match.
//!
//! Names compare case-insensitively. A pattern that does not parse is a
//! load error for the plugin (the operator hears about the typo at once).

/// One parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    scheme: Option<String>,
    host: HostPattern,
    port: PortPattern,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Exact(String),
    /// `*.suffix`: stored as `.suffix`.
    Subdomains(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortPattern {
    Any,
    Default,
    Exact(u16),
}

/// A request's destination, as checked against patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// `http` or `https`.
    pub scheme: String,
    /// Lower-case; IPv6 in brackets.
    pub host: String,
    pub port: u16,
}

impl Destination {
    pub fn default_port(scheme: &str) -> u16 {
        if scheme == "https" { 443 } else { 80 }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

impl Pattern {
    /// Parses a pattern; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let bad = |why: &str| Err(format!("http pattern `{text}`: {why}"));
        let trimmed = text.trim();
        let (scheme, rest) = match trimmed.split_once("://") {
            Some((s, rest)) => {
                let s = s.to_ascii_lowercase();
                if s != "http" && s != "https" {
                    return bad("the scheme must be http or https");
                }
                (Some(s), rest)
            }
            None => (None, trimmed),
        };
        if rest.contains('/') || rest.contains('@') || rest.contains('?') {
            return bad("give a host and optional port, not a URL path or user");
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let Some((addr, after)) = v6.split_once(']') else {
                return bad("an IPv6 address needs its closing `]`");
            };
            let port = match after {
                "" => None,
                p => match p.strip_prefix(':') {
                    Some(p) => Some(p),
                    None => return bad("unexpected text after the IPv6 address"),
                },
            };
            (format!("[{}]", addr.to_ascii_lowercase()), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
                None => (rest.to_ascii_lowercase(), None),
            }
        };
        let port = match port {
            None => PortPattern::Default,
            Some("*") => PortPattern::Any,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => PortPattern::Exact(n),
                _ => return bad("the port must be 1-65535 or `*`"),
            },
        };
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if !valid_name(suffix) {
                return bad("`*.` must be followed by a host name");
            }
            HostPattern::Subdomains(format!(".{suffix}"))
        } else if host.starts_with('[') || valid_name(&host) {
            HostPattern::Exact(host)
        } else {
            return bad("not a host name or address");
        };
        Ok(Pattern {
            scheme,
            host,
            port,
            text: trimmed.to_string(),
        })
    }

    /// Whether `d` is allowed by this pattern.
    pub fn matches(&self, d: &Destination) -> bool {
        if self.scheme.as_ref().is_some_and(|s| *s != d.scheme) {
            return false;
        }
        let port_ok = match self.port {
            PortPattern::Any => true,
            PortPattern::Default => d.port == Destination::default_port(&d.scheme),
            PortPattern::Exact(p) => d.port == p,
        };
        port_ok
            && match &self.host {
                HostPattern::Any => true,
                HostPattern::Exact(h) => *h == d.host,
                HostPattern::Subdomains(suffix) => {
                    d.host.ends_with(suffix.as_str()) && d.host.len() > suffix.len()
                }
            }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A parsed list of patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist(Vec<Pattern>);

impl Allowlist {
    /// Parses every pattern; the first bad one is the error.
    pub fn parse(patterns: &[String]) -> Result<Allowlist, String> {
        patterns
            .iter()
            .map(|p| Pattern::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map(Allowlist)
    }

    pub fn allows(&self, d: &Destination) -> bool {
        self.0.iter().any(|p| p.matches(d))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a pattern names `ip` literally (`127.0.0.1:*`,
    /// `[::1]:8080`): only then may a destination resolve to a loopback,
    /// private or link-local address.
    pub fn names_ip(&self, ip: std::net::IpAddr) -> bool {
        self.0.iter().any(|p| match &p.host {
            HostPattern::Exact(h) => h
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|named| named == ip),
            _ => false,
        })
    }

    /// Whether any destination this list allows is also allowed by
    /// `other` (used to bind a plugin to the breakers guarding its hosts):
    /// exact on the pattern text or a sample destination of each pattern.
    pub fn overlaps(&self, other: &Allowlist) -> bool {
        self.0.iter().any(|p| {
            other.0.iter().any(|q| {
                p.text.eq_ignore_ascii_case(&q.text)
                    || p.sample().is_some_and(|d| q.matches(&d))
                    || q.sample().is_some_and(|d| p.matches(&d))
            })
        })
    }
}

impl Pattern {
    /// A destination this pattern allows, when it names one host.
    fn sample(&self) -> Option<Destination> {
        let HostPattern::Exact(host) = &self.host else {
            return None;
        };
        let scheme = self.scheme.clone().unwrap_or_else(|| "https".into());
        let port = match self.port {
            PortPattern::Exact(p) => p,
            PortPattern::Default | PortPattern::Any => Destination::default_port(&scheme),
        };
        Some(Destination {
            scheme,
            host: host.clone(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(scheme: &str, host: &str, port: u16) -> Destination {
        Destination {
            scheme: scheme.into(),
            host: host.into(),
            port,
        }
    }

    fn allows(pattern: &str, d: &Destination) -> bool {
        Pattern::parse(pattern).is_ok_and(|p| p.matches(d))
    }

    #[test]
    fn names_subdomains_ports_and_schemes() {
        let plain = dest("https", "example.com", 443);
        assert!(allows("example.com", &plain));
        assert!(allows("EXAMPLE.com", &plain));
        assert!(allows("example.com", &dest("http", "example.com", 80)));
        assert!(!allows("example.com", &dest("http", "example.com", 8080)));
        assert!(!allows(
            "example.com",
            &dest("https", "evil-example.com", 443)
        ));
        assert!(allows("https://example.com", &plain));
        assert!(!allows(
            "https://example.com",
            &dest("http", "example.com", 80)
        ));

        assert!(allows("*.docs.rs", &dest("https", "a.b.docs.rs", 443)));
        assert!(!allows("*.docs.rs", &dest("https", "docs.rs", 443)));
        assert!(!allows("*.docs.rs", &dest("https", "xdocs.rs", 443)));

        assert!(allows("127.0.0.1:*", &dest("http", "127.0.0.1", 39999)));
        assert!(!allows("127.0.0.1:*", &dest("http", "127.0.0.2", 39999)));
        assert!(allows("127.0.0.1:8080", &dest("http", "127.0.0.1", 8080)));
        assert!(allows("[::1]:*", &dest("http", "[::1]", 1234)));
        assert!(allows("*", &plain));
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        for bad in [
            "ftp://example.com",
            "example.com/path",
            "example.com:0",
            "example.com:x",
            "*.",
            "exa mple.com",
            "[::1",
        ] {
            let err = Pattern::parse(bad).err().unwrap_or_default();
            assert!(err.contains(bad.trim()), "{bad}: {err}");
        }
    }

    #[test]
    fn overlap_binds_plugins_to_the_breakers_of_their_hosts() -> Result<(), String> {
        let breaker = Allowlist::parse(&["127.0.0.1:9000".into()])?;
        assert!(Allowlist::parse(&["127.0.0.1:*".into()])?.overlaps(&breaker));
        assert!(Allowlist::parse(&["127.0.0.1:9000".into()])?.overlaps(&breaker));
        assert!(!Allowlist::parse(&["example.com".into()])?.overlaps(&breaker));
        let openai = Allowlist::parse(&["api.openai.com".into()])?;
        assert!(Allowlist::parse(&["*.openai.com".into()])?.overlaps(&openai));
        Ok(())
    }
}
