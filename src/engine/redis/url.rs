//! `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]` and `rediss://` (TLS), the
//! URL form every Redis client takes. A URL is shown (logs, `/health`,
//! errors) with its password replaced by `***`.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub db: u32,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// The URL without its password.
impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "rediss" } else { "redis" };
        write!(f, "{scheme}://")?;
        match (&self.user, &self.password) {
            (Some(u), Some(_)) => write!(f, "{u}:***@")?,
            (None, Some(_)) => write!(f, ":***@")?,
            (Some(u), None) => write!(f, "{u}@")?,
            (None, None) => {}
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            write!(f, "{}", self.host)?;
        }
        write!(f, ":{}", self.port)?;
        if self.db != 0 {
            write!(f, "/{}", self.db)?;
        }
        Ok(())
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("a % without two hex digits")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "a % without two hex digits")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8 once decoded".to_string())
}

impl FromStr for RedisUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let fail = |why: &str| format!("`{}`: {why}", redact(s));
        let (tls, rest) = if let Some(rest) = s.strip_prefix("redis://") {
            (false, rest)
        } else if let Some(rest) = s.strip_prefix("rediss://") {
            (true, rest)
        } else {
            return Err(fail("expected redis://HOST[:PORT][/DB] or rediss://..."));
        };
        if rest.contains('?') || rest.contains('#') {
            return Err(fail("query strings and fragments are not supported"));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (u, p) = match info.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (info, None),
                };
                let user = (!u.is_empty())
                    .then(|| percent_decode(u))
                    .transpose()
                    .map_err(|e| fail(&e))?;
                let password = p.map(percent_decode).transpose().map_err(|e| fail(&e))?;
                (user, password)
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| fail("unclosed [ in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(fail("junk after the host")),
            };
            (host.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(fail("no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| fail("the port is not a number 1-65535"))?,
            None => 6379,
        };
        if port == 0 {
            return Err(fail("the port is not a number 1-65535"));
        }
        let db = match path {
            "" => 0,
            p => p.parse().map_err(|_| fail("the database is not a number"))?,
        };
        Ok(RedisUrl {
            tls,
            host,
            port,
            db,
            user,
            password,
        })
    }
}

/// `s` with the password of a Redis URL in it replaced by `***` (for
/// `--print-config` and error messages about URLs that did not parse).
pub fn redact(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return s.to_string();
    };
    let after = &s[scheme_end + 3..];
    let authority_end = after.find('/').unwrap_or(after.len());
    let Some(at) = after[..authority_end].rfind('@') else {
        return s.to_string();
    };
    match after[..at].find(':') {
        Some(colon) => format!("{}{}:***{}", &s[..scheme_end + 3], &after[..colon], &after[at..]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_clients_take() {
        let u: RedisUrl = "redis://127.0.0.1".parse().unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port, u.db), (false, "127.0.0.1", 6379, 0));
        let u: RedisUrl = "rediss://app:p%40ss:w@cache.example:6380/3".parse().unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port, u.db), (true, "cache.example", 6380, 3));
        assert_eq!(
            (u.user.as_deref(), u.password.as_deref()),
            (Some("app"), Some("p@ss:w"))
        );
        assert_eq!(u.to_string(), "rediss://app:***@cache.example:6380/3");
        let u: RedisUrl = "redis://:secret@[::1]:7000".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.user.as_deref(), u.password.as_deref()),
            ("::1", 7000, None, Some("secret"))
        );
        assert_eq!(u.to_string(), "redis://:***@[::1]:7000");
    }

    #[test]
    fn refuses_what_it_cannot_use_without_showing_the_password() {
        for bad in [
            "http://h",
            "redis://",
            "redis://h:0",
            "redis://h:x",
            "redis://h/db",
            "redis://h?timeout=1",
            "redis://:pw@[::1",
            "redis://u:%zz@h",
        ] {
            assert!(bad.parse::<RedisUrl>().is_err(), "{bad}");
        }
        let err = "redis://u:hunter2@h:bad".parse::<RedisUrl>().unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(redact("redis://u:hunter2@h:1/2"), "redis://u:***@h:1/2");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
