//! The server under test: a `ws://` URL on this machine only.
//!
//! A load generator aimed at another host is a denial-of-service tool, so
//! anything outside the loopback range (127.0.0.0/8, `localhost`, `[::1]`)
//! is refused before a single socket opens. Only IP literals and
//! `localhost` are accepted: no name resolution, so no surprises.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// The Host header value, as written in the URL.
    pub host: String,
    /// Path and query, starting with `/`.
    pub target: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetError {
    Scheme,
    Host(String),
    NotLoopback(String),
    Port(String),
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::Scheme => {
                f.write_str("the URL must start with ws:// (the load generator does not speak TLS: no wss://)")
            }
            TargetError::Host(h) => write!(f, "{h:?} is not an IP address or localhost"),
            TargetError::NotLoopback(h) => {
                write!(
                    f,
                    "refusing {h}: the load generator only targets loopback (127.0.0.0/8, ::1)"
                )
            }
            TargetError::Port(p) => write!(f, "bad port {p:?}"),
        }
    }
}

impl std::error::Error for TargetError {}

impl Target {
    /// Parses `ws://HOST[:PORT][/PATH[?QUERY]]`; the port defaults to 80.
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        let rest = url.strip_prefix("ws://").ok_or(TargetError::Scheme)?;
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (ip, after) = v6
                .split_once(']')
                .ok_or_else(|| TargetError::Host(authority.to_owned()))?;
            (ip, after.strip_prefix(':'))
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            None => 80,
            Some(p) => p.parse::<u16>().map_err(|_| TargetError::Port(p.to_owned()))?,
        };
        let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse().map_err(|_| TargetError::Host(host.to_owned()))?
        };
        if !ip.is_loopback() {
            return Err(TargetError::NotLoopback(host.to_owned()));
        }
        Ok(Target {
            addr: SocketAddr::new(ip, port),
            host: authority.to_owned(),
            target,
        })
    }

    /// The same server with another path and query.
    pub fn with_target(&self, target: &str) -> Target {
        Target {
            target: target.to_owned(),
            ..self.clone()
        }
    }

    /// The URL, as `ws://host/target`.
    pub fn url(&self) -> String {
        format!("ws://{}{}", self.host, self.target)
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("/")
    }
}

/// Source addresses for outgoing connections: the kernel's choice
/// (127.0.0.1 for a loopback target) until a run needs more connections
/// than one source address serves well, then `per_address` connections each
/// from 127.0.0.1, 127.0.0.2, ... (every 127.x address reaches the loopback
/// interface), or from `first` onwards when one is given (so two bench
/// processes can use different addresses).
///
/// Why not all 28k ephemeral ports of one address: Linux's `connect` takes
/// even ports first and scans every one of them before trying odd ones, so
/// past ~14k connections from one address each new connection pays a scan.
#[derive(Clone, Copy, Debug)]
pub struct Sources {
    first: Option<Ipv4Addr>,
    per_address: usize,
}

impl Sources {
    pub fn new(total: usize, per_address: usize, first: Option<Ipv4Addr>, target: &Target) -> Sources {
        let spread = target.addr.is_ipv4() && (first.is_some() || total > per_address);
        Sources {
            first: spread.then(|| first.unwrap_or(Ipv4Addr::LOCALHOST)),
            per_address: per_address.max(1),
        }
    }

    /// The address connection `n` binds before connecting, if any.
    pub fn for_connection(&self, n: usize) -> Option<SocketAddr> {
        let first = u32::from(self.first?);
        let ip = Ipv4Addr::from(first.wrapping_add((n / self.per_address) as u32));
        Some(SocketAddr::new(IpAddr::V4(ip), 0))
    }

    pub fn addresses(&self, total: usize) -> usize {
        if self.first.is_some() {
            total.div_ceil(self.per_address)
        } else {
            1
        }
    }
}

/// Checks a source address given on the command line: it must be loopback.
pub fn parse_source(text: &str) -> Result<Ipv4Addr, TargetError> {
    let ip: Ipv4Addr = text.parse().map_err(|_| TargetError::Host(text.to_owned()))?;
    if ip.is_loopback() {
        Ok(ip)
    } else {
        Err(TargetError::NotLoopback(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loopback_urls() {
        let t = Target::parse("ws://127.0.0.1:9001/pubsub/bench").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(
            (t.host.as_str(), t.target.as_str()),
            ("127.0.0.1:9001", "/pubsub/bench")
        );
        let t = Target::parse("ws://localhost:9001").unwrap();
        assert_eq!((t.addr.port(), t.target.as_str()), (9001, "/"));
        let t = Target::parse("ws://127.3.2.1?x=1").unwrap();
        assert_eq!((t.addr.port(), t.target.as_str()), (80, "/?x=1"));
        let t = Target::parse("ws://[::1]:9001/ws?username=a").unwrap();
        assert_eq!(t.addr, SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), 9001));
        assert_eq!(t.path(), "/ws");
        assert_eq!(t.with_target("/x").target, "/x");
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(Target::parse("wss://127.0.0.1/"), Err(TargetError::Scheme));
        assert_eq!(Target::parse("http://127.0.0.1/"), Err(TargetError::Scheme));
        for host in ["10.0.0.1", "192.168.1.1", "8.8.8.8", "0.0.0.0", "[::]", "[2001:db8::1]"] {
            assert!(
                matches!(
                    Target::parse(&format!("ws://{host}:80/")),
                    Err(TargetError::NotLoopback(_))
                ),
                "{host}"
            );
        }
        assert!(matches!(Target::parse("ws://example.com/"), Err(TargetError::Host(_))));
        assert!(matches!(
            Target::parse("ws://127.0.0.1:99999/"),
            Err(TargetError::Port(_))
        ));
    }

    #[test]
    fn spreads_sources_past_the_per_address_budget() {
        let t = Target::parse("ws://127.0.0.1:9001/").unwrap();
        let few = Sources::new(100, 25_000, None, &t);
        assert_eq!(few.for_connection(99), None);
        assert_eq!(few.addresses(100), 1);
        let many = Sources::new(60_000, 25_000, None, &t);
        assert_eq!(many.addresses(60_000), 3);
        assert_eq!(many.for_connection(0), Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(many.for_connection(24_999), Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(many.for_connection(25_000), Some("127.0.0.2:0".parse().unwrap()));
        assert_eq!(many.for_connection(59_999), Some("127.0.0.3:0".parse().unwrap()));
        // A given first address is always bound, and counting carries over octets.
        let second = Sources::new(10, 255, Some(parse_source("127.0.0.255").unwrap()), &t);
        assert_eq!(second.for_connection(0), Some("127.0.0.255:0".parse().unwrap()));
        assert_eq!(second.for_connection(255), Some("127.0.1.0:0".parse().unwrap()));
        assert!(parse_source("10.0.0.1").is_err());
        assert!(parse_source("nope").is_err());
        // IPv6 targets are never spread.
        let v6 = Target::parse("ws://[::1]:9001/").unwrap();
        assert_eq!(Sources::new(60_000, 25_000, None, &v6).for_connection(0), None);
    }
}
