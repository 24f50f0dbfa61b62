//! `ws://` and `wss://` URLs (RFC 6455 section 3), parsed by hand.
//!
//! Only what a WebSocket client needs: host (name, IPv4 or bracketed IPv6
//! literal), port (80, or 443 for `wss://`, by default), path (`/` by default) and query. Anything
//! that could not go into a request line or a Host header as it is, is
//! refused here rather than sent: whitespace and control characters (which
//! would let a URL inject header lines), fragments (section 3 forbids them)
//! and user info (use `--header 'Authorization: ...'` instead). Non-ASCII
//! characters in the path and query are percent-encoded as UTF-8, as
//! browsers do.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// A parsed `ws://` or `wss://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsUrl {
    /// `wss://`: TLS, with `host` as the server name to verify.
    pub tls: bool,
    /// Host name or IP literal, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// Starts with `/`.
    pub path: String,
    /// Without the `?`; `Some("")` for a URL ending in `?`.
    pub query: Option<String>,
}

/// Why a URL was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlError {
    /// No `scheme://` at the start.
    MissingScheme,
    /// A scheme other than `ws` (or `wss`).
    UnsupportedScheme(String),
    EmptyHost,
    InvalidHost(String),
    InvalidPort(String),
    /// `user:password@host`.
    UserInfo,
    /// `#fragment` (section 3: "MUST NOT be used").
    Fragment,
    /// Whitespace or a control character.
    InvalidCharacter(char),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::MissingScheme => f.write_str("URL must start with ws:// or wss://"),
            UrlError::UnsupportedScheme(s) => write!(f, "unsupported scheme {s:?}; use ws:// or wss://"),
            UrlError::EmptyHost => f.write_str("URL has no host"),
            UrlError::InvalidHost(h) => write!(f, "invalid host {h:?}"),
            UrlError::InvalidPort(p) => write!(f, "invalid port {p:?}"),
            UrlError::UserInfo => f.write_str("user info in URLs is not supported; send an Authorization header"),
            UrlError::Fragment => f.write_str("WebSocket URLs cannot have a #fragment (RFC 6455 section 3)"),
            UrlError::InvalidCharacter(c) => write!(f, "URL contains {c:?}; percent-encode it"),
        }
    }
}

impl std::error::Error for UrlError {}

impl WsUrl {
    /// Parses `ws[s]://host[:port][/path][?query]`.
    pub fn parse(input: &str) -> Result<WsUrl, UrlError> {
        if let Some(c) = input.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(UrlError::InvalidCharacter(c));
        }
        let (scheme, rest) = input.split_once("://").ok_or(UrlError::MissingScheme)?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "ws" => false,
            "wss" => true,
            _ => return Err(UrlError::UnsupportedScheme(scheme.to_owned())),
        };
        if rest.contains('#') {
            return Err(UrlError::Fragment);
        }
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(authority_end);
        if authority.contains('@') {
            return Err(UrlError::UserInfo);
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = split_host_port(authority, default_port)?;
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(percent_encode_non_ascii(query))),
            None => (target, None),
        };
        let path = if path.is_empty() {
            "/".to_owned()
        } else {
            percent_encode_non_ascii(path)
        };
        Ok(WsUrl {
            tls,
            host,
            port,
            path,
            query,
        })
    }

    /// The request target: path and query (section 4.1, "resource name").
    pub fn target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }

    /// The same server with another path and query (`/runCase?case=1`).
    pub fn with_target(&self, target: &str) -> WsUrl {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q.to_owned())),
            None => (target, None),
        };
        WsUrl {
            path: path.to_owned(),
            query,
            ..self.clone()
        }
    }

    fn is_ipv6(&self) -> bool {
        self.host.contains(':')
    }

    fn scheme(&self) -> &'static str {
        if self.tls { "wss" } else { "ws" }
    }

    /// The Host header value: brackets around IPv6, port only when not the
    /// scheme's default, 80 or 443 (section 4.1, item 4).
    pub fn host_header(&self) -> String {
        let host = if self.is_ipv6() {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == if self.tls { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl FromStr for WsUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WsUrl::parse(s)
    }
}

impl fmt::Display for WsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.is_ipv6() {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{}://{host}:{}{}", self.scheme(), self.port, self.target())
    }
}

fn split_host_port(authority: &str, default_port: u16) -> Result<(String, u16), UrlError> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (literal, after) = rest
            .split_once(']')
            .ok_or_else(|| UrlError::InvalidHost(authority.to_owned()))?;
        if literal.parse::<Ipv6Addr>().is_err() {
            return Err(UrlError::InvalidHost(literal.to_owned()));
        }
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| UrlError::InvalidHost(authority.to_owned()))?,
            ),
        };
        (literal, port)
    } else if authority.matches(':').count() > 1 {
        // An IPv6 literal needs its brackets (RFC 3986 section 3.2.2).
        return Err(UrlError::InvalidHost(authority.to_owned()));
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError::EmptyHost);
    }
    let is_ipv6 = authority.starts_with('[');
    if !is_ipv6
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(UrlError::InvalidHost(host.to_owned()));
    }
    let port = match port {
        None => default_port,
        // Digits only: `u16::from_str` would also take a leading `+`.
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => match p.parse() {
            Ok(0) | Err(_) => return Err(UrlError::InvalidPort(p.to_owned())),
            Ok(port) => port,
        },
        Some(p) => return Err(UrlError::InvalidPort(p.to_owned())),
    };
    Ok((host.to_owned(), port))
}

/// Percent-encodes every non-ASCII byte (RFC 3986 section 2.1); ASCII,
/// including existing `%XX` escapes, passes through.
fn percent_encode_non_ascii(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes a query value: everything but RFC 3986 unreserved
/// characters.
pub fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> WsUrl {
        WsUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn defaults_port_80_and_path_slash() {
        let u = url("ws://example.com");
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str(), u.query.as_deref()),
            ("example.com", 80, "/", None)
        );
        assert_eq!(u.target(), "/");
        assert_eq!(u.host_header(), "example.com");
    }

    #[test]
    fn port_path_and_query_are_kept() {
        let u = url("ws://127.0.0.1:9001/rooms/lobby?token=a%20b&x=1");
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, 9001);
        assert_eq!(u.path, "/rooms/lobby");
        assert_eq!(u.query.as_deref(), Some("token=a%20b&x=1"));
        assert_eq!(u.target(), "/rooms/lobby?token=a%20b&x=1");
        assert_eq!(u.host_header(), "127.0.0.1:9001");
        // A query straight after the host gets the default path.
        assert_eq!(url("ws://h:1?x").target(), "/?x");
        assert_eq!(url("ws://h:1/?").target(), "/?");
    }

    #[test]
    fn scheme_is_case_insensitive_and_others_are_refused() {
        assert_eq!(url("WS://h/").port, 80);
        assert!(!url("ws://h/").tls);
        assert_eq!(WsUrl::parse("ftp://h/"), Err(UrlError::UnsupportedScheme("ftp".into())));
        assert_eq!(
            WsUrl::parse("http://h/"),
            Err(UrlError::UnsupportedScheme("http".into()))
        );
        assert_eq!(WsUrl::parse("h:80/"), Err(UrlError::MissingScheme));
    }

    #[test]
    fn wss_defaults_to_port_443() {
        let u = url("WSS://example.com/chat?x=1");
        assert!(u.tls);
        assert_eq!((u.host.as_str(), u.port), ("example.com", 443));
        assert_eq!(u.host_header(), "example.com");
        assert_eq!(u.to_string(), "wss://example.com:443/chat?x=1");
        let u = url("wss://127.0.0.1:9443");
        assert_eq!(u.host_header(), "127.0.0.1:9443");
        // 80 is not the default for wss:// and must be written out.
        assert_eq!(url("wss://h:80/").host_header(), "h:80");
        assert_eq!(url("ws://h:443/").host_header(), "h:443");
        // Paths relative to a wss:// base stay on TLS.
        assert!(url("wss://h/").with_target("/runCase?case=1").tls);
    }

    #[test]
    fn ipv6_literals() {
        let u = url("ws://[::1]:9001/chat");
        assert_eq!((u.host.as_str(), u.port), ("::1", 9001));
        assert_eq!(u.host_header(), "[::1]:9001");
        assert_eq!(u.to_string(), "ws://[::1]:9001/chat");
        assert_eq!(url("ws://[fe80::1]").host_header(), "[fe80::1]");
        assert!(matches!(WsUrl::parse("ws://[::1"), Err(UrlError::InvalidHost(_))));
        assert!(matches!(WsUrl::parse("ws://[nope]:1"), Err(UrlError::InvalidHost(_))));
        assert!(matches!(WsUrl::parse("ws://[::1]x"), Err(UrlError::InvalidHost(_))));
        assert!(matches!(WsUrl::parse("ws://::1/"), Err(UrlError::InvalidHost(_))));
    }

    #[test]
    fn refuses_what_cannot_be_sent_as_is() {
        assert_eq!(WsUrl::parse("ws:///path"), Err(UrlError::EmptyHost));
        assert_eq!(WsUrl::parse("ws://:80/"), Err(UrlError::EmptyHost));
        for port in ["", "0", "65536", "+80", "8o"] {
            assert_eq!(
                WsUrl::parse(&format!("ws://h:{port}/")),
                Err(UrlError::InvalidPort(port.into())),
                "{port}"
            );
        }
        assert_eq!(WsUrl::parse("ws://u:p@h/"), Err(UrlError::UserInfo));
        assert_eq!(WsUrl::parse("ws://h/#top"), Err(UrlError::Fragment));
        assert_eq!(WsUrl::parse("ws://h/a b"), Err(UrlError::InvalidCharacter(' ')));
        // No header injection through the URL.
        assert_eq!(
            WsUrl::parse("ws://h/\r\nX-Evil: 1"),
            Err(UrlError::InvalidCharacter('\r'))
        );
        assert!(matches!(WsUrl::parse("ws://h,x/"), Err(UrlError::InvalidHost(_))));
    }

    #[test]
    fn non_ascii_is_percent_encoded() {
        assert_eq!(url("ws://h/café?room=été").target(), "/caf%C3%A9?room=%C3%A9t%C3%A9");
        assert_eq!(encode_query_value("a b&c/é"), "a%20b%26c%2F%C3%A9");
    }

    #[test]
    fn with_target_replaces_path_and_query() {
        let base = url("ws://127.0.0.1:9001");
        let u = base.with_target("/runCase?case=3&agent=x");
        assert_eq!(u.target(), "/runCase?case=3&agent=x");
        assert_eq!(u.host_header(), "127.0.0.1:9001");
        assert_eq!(base.with_target("/getCaseCount").query, None);
    }
}
